//! Who leads a hub group, from what its members report on `/metrics` (`unisondb_raft_*`). Pure.
//!
//! Each owned namespace is its own Raft group, so leaders may differ per namespace. "The leader
//! pod" is the one leading the most namespaces (ties: the lowest ordinal): the client Service
//! routes there, and followers proxy the other namespaces' writes to their leaders.

use std::collections::BTreeMap;

use crate::connectivity::Connectivity;

/// How far (records) a member's commit index may trail the leader's and still count as caught up
/// before the operator restarts the next member of a rolling update.
pub const CAUGHT_UP_SLACK: u64 = 100;

/// A hub group as its members reported it in one probe.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupView {
    /// Each owned namespace and the pod leading it, when one says so.
    pub leaders: BTreeMap<String, Option<String>>,
    /// The pod leading the most namespaces (ties: the lowest ordinal).
    pub leader_pod: Option<String>,
    /// Pods that report Raft state, in ordinal order.
    pub members: Vec<String>,
    /// Pods that answered but report no Raft state: a single hub's pod (before it converts).
    pub singles: Vec<String>,
    /// The highest term any member reports.
    pub term: Option<u64>,
    /// Pod -> namespace -> last committed LSN applied there.
    pub commits: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The trailing number of a StatefulSet pod's name (`hub-2` -> 2).
pub fn ordinal(pod: &str) -> Option<i32> {
    let digits = pod.rsplit_once('-')?.1;
    digits.parse().ok()
}

fn by_ordinal(a: &str, b: &str) -> std::cmp::Ordering {
    ordinal(a)
        .unwrap_or(i32::MAX)
        .cmp(&ordinal(b).unwrap_or(i32::MAX))
        .then_with(|| a.cmp(b))
}

/// The group as `report` shows it for the owned `namespaces`; `None` when no pod could be read
/// (nothing to judge by).
pub fn view(report: &Connectivity, namespaces: &[String]) -> Option<GroupView> {
    let Connectivity::Observed(pods) = report else {
        return None;
    };
    let mut v = GroupView::default();
    // namespace -> (term, pod) of the best leader claim so far
    let mut claims: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    let mut readable = false;
    for p in pods {
        let Ok(links) = &p.links else { continue };
        readable = true;
        let mut member = false;
        for ns in namespaces {
            let Some(raft) = links.get(ns).and_then(|l| l.raft.as_ref()) else {
                continue;
            };
            member = true;
            v.term = v.term.max(Some(raft.term));
            v.commits
                .entry(p.pod.clone())
                .or_default()
                .insert(ns.clone(), raft.commit_index);
            if raft.leader {
                // Two claims (an old leader cut off from the rest): the higher term wins, then
                // the lower ordinal.
                let better = match claims.get(ns.as_str()) {
                    None => true,
                    Some((term, pod)) => {
                        raft.term > *term || (raft.term == *term && by_ordinal(&p.pod, pod).is_lt())
                    }
                };
                if better {
                    claims.insert(ns.as_str(), (raft.term, p.pod.as_str()));
                }
            }
        }
        if member {
            v.members.push(p.pod.clone());
        } else {
            v.singles.push(p.pod.clone());
        }
    }
    if !readable {
        return None;
    }
    v.members.sort_by(|a, b| by_ordinal(a, b));
    let mut led: BTreeMap<&str, usize> = BTreeMap::new();
    for ns in namespaces {
        let leader = claims.get(ns.as_str()).map(|(_, pod)| *pod);
        if let Some(pod) = leader {
            *led.entry(pod).or_default() += 1;
        }
        v.leaders.insert(ns.clone(), leader.map(str::to_string));
    }
    v.leader_pod = led
        .iter()
        .max_by(|(a, na), (b, nb)| na.cmp(nb).then_with(|| by_ordinal(b, a)))
        .map(|(pod, _)| pod.to_string());
    Some(v)
}

impl GroupView {
    /// Namespaces no member reports a leader for.
    pub fn leaderless(&self) -> Vec<String> {
        self.leaders
            .iter()
            .filter(|(_, l)| l.is_none())
            .map(|(ns, _)| ns.clone())
            .collect()
    }

    /// Whether `pod` leads any namespace.
    pub fn leads(&self, pod: &str) -> bool {
        self.leaders.values().any(|l| l.as_deref() == Some(pod))
    }

    /// Whether `pod` reports every namespace within [`CAUGHT_UP_SLACK`] of its leader's commit
    /// index (a namespace without a leader counts as not caught up).
    pub fn caught_up(&self, pod: &str) -> bool {
        let Some(mine) = self.commits.get(pod) else {
            return false;
        };
        self.leaders.iter().all(|(ns, leader)| {
            let Some(leader) = leader else { return false };
            let theirs = self
                .commits
                .get(leader)
                .and_then(|c| c.get(ns))
                .copied()
                .unwrap_or(0);
            mine.get(ns)
                .is_some_and(|m| m.saturating_add(CAUGHT_UP_SLACK) >= theirs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectivity::{parse_metrics, PodReport};

    fn pod(name: &str, text: &str) -> PodReport {
        PodReport {
            pod: name.into(),
            links: Ok(parse_metrics(text)),
        }
    }

    fn member(ns: &str, leader: bool, term: u64, commit: u64) -> String {
        format!(
            "unisondb_raft_is_leader{{namespace=\"{ns}\"}} {}\nunisondb_raft_term{{namespace=\"{ns}\"}} {term}\nunisondb_raft_commit_index{{namespace=\"{ns}\"}} {commit}\n",
            u8::from(leader)
        )
    }

    fn nss() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn the_leader_pod_leads_the_most_namespaces() {
        let report = Connectivity::Observed(vec![
            pod(
                "hub-0",
                &(member("a", false, 2, 9) + &member("b", true, 2, 9) + &member("c", false, 2, 9)),
            ),
            pod(
                "hub-1",
                &(member("a", true, 3, 9) + &member("b", false, 2, 9) + &member("c", true, 2, 9)),
            ),
            pod(
                "hub-2",
                &(member("a", false, 3, 9) + &member("b", false, 2, 9) + &member("c", false, 2, 9)),
            ),
        ]);
        let v = view(&report, &nss()).expect("observed");
        assert_eq!(v.leader_pod.as_deref(), Some("hub-1"));
        assert_eq!(v.leaders["b"].as_deref(), Some("hub-0"));
        assert_eq!(v.members, vec!["hub-0", "hub-1", "hub-2"]);
        assert_eq!(v.term, Some(3));
        assert!(v.leads("hub-0") && !v.leads("hub-2"));
        assert!(v.leaderless().is_empty());
    }

    #[test]
    fn ties_go_to_the_lowest_ordinal_and_stale_claims_lose() {
        let report = Connectivity::Observed(vec![
            pod(
                "hub-10",
                &(member("a", true, 4, 1) + &member("b", false, 4, 1)),
            ),
            pod(
                "hub-2",
                &(member("a", true, 3, 1) + &member("b", true, 4, 1)),
            ),
        ]);
        let v = view(&report, &["a".into(), "b".into()]).unwrap();
        assert_eq!(
            v.leaders["a"].as_deref(),
            Some("hub-10"),
            "term 4 beats term 3"
        );
        assert_eq!(
            v.leader_pod.as_deref(),
            Some("hub-2"),
            "1 each: lowest ordinal"
        );
    }

    #[test]
    fn leaderless_namespaces_and_catching_up() {
        let report = Connectivity::Observed(vec![
            pod(
                "hub-0",
                &(member("a", true, 2, 500) + &member("b", false, 2, 7)),
            ),
            pod(
                "hub-1",
                &(member("a", false, 2, 450) + &member("b", false, 2, 7)),
            ),
            pod("hub-2", &member("a", false, 2, 300)),
            PodReport {
                pod: "hub-3".into(),
                links: Err("refused".into()),
            },
        ]);
        let v = view(&report, &["a".into(), "b".into()]).unwrap();
        assert_eq!(v.leaderless(), vec!["b".to_string()]);
        assert!(!v.caught_up("hub-1"), "b has no leader");
        let only_a = view(&report, &["a".into()]).unwrap();
        assert!(only_a.caught_up("hub-1"), "50 behind is within the slack");
        assert!(!only_a.caught_up("hub-2"), "200 behind is not");
        assert!(!only_a.caught_up("hub-3"), "unreadable");
    }

    #[test]
    fn nothing_readable_is_no_view() {
        assert_eq!(view(&Connectivity::Unknown("x".into()), &nss()), None);
        let v = view(&Connectivity::Observed(vec![pod("hub-0", "")]), &nss()).unwrap();
        assert_eq!(v.leader_pod, None);
        assert_eq!(v.leaderless().len(), 3);
        assert!(v.members.is_empty());
    }
}
