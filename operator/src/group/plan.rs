//! What the operator does next to a hub group's pods, pure: role labels, the next pod of a
//! rolling update, the members a scale-down removes first.

use k8s_openapi::api::core::v1::Pod;

use super::view::{ordinal, GroupView};
use super::{ROLE_FOLLOWER, ROLE_LABEL, ROLE_LEADER};

/// The label the StatefulSet controller stamps with a pod's revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// One pod of the group, as far as the plans need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberPod {
    pub name: String,
    pub ordinal: i32,
    /// Ready condition True.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// `controller-revision-hash`.
    pub revision: Option<String>,
    /// `unisondb.io/role` as labelled now.
    pub role: Option<String>,
    pub ip: Option<String>,
}

impl MemberPod {
    /// `None` for a pod whose name has no ordinal (not a StatefulSet pod).
    pub fn of(pod: &Pod) -> Option<Self> {
        let name = pod.metadata.name.clone()?;
        let labels = pod.metadata.labels.as_ref();
        let status = pod.status.as_ref();
        Some(MemberPod {
            ordinal: ordinal(&name)?,
            name,
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            revision: labels.and_then(|l| l.get(REVISION_LABEL)).cloned(),
            role: labels.and_then(|l| l.get(ROLE_LABEL)).cloned(),
            ip: status.and_then(|s| s.pod_ip.clone()),
        })
    }
}

/// Pods whose role label must change, and to what: the leader pod `leader`, every other live
/// pod follower. With no leader known, nothing changes (a stale leader label still works:
/// followers proxy writes).
pub fn role_changes(pods: &[MemberPod], leader: Option<&str>) -> Vec<(String, &'static str)> {
    let Some(leader) = leader else {
        return Vec::new();
    };
    pods.iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| {
            let want = if p.name == leader {
                ROLE_LEADER
            } else {
                ROLE_FOLLOWER
            };
            (p.role.as_deref() != Some(want)).then(|| (p.name.clone(), want))
        })
        .collect()
}

/// The next move of a rolling update (the StatefulSet's `updateStrategy` is `OnDelete`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutStep {
    /// Every pod runs the current revision.
    Done,
    /// Not safe to restart a pod now (why).
    Wait(String),
    /// Delete this follower; the StatefulSet recreates it at the current revision.
    Replace(String),
    /// Only leaders are left: ask this one to hand leadership over, then delete it.
    StepDownAndReplace(String),
}

/// One pod at a time: only when every pod is ready, every namespace has a leader and every
/// member is caught up; followers first (highest ordinal first), the leader pod last.
pub fn rollout_step(
    pods: &[MemberPod],
    replicas: i32,
    update_revision: Option<&str>,
    view: Option<&GroupView>,
) -> RolloutStep {
    let Some(rev) = update_revision else {
        return RolloutStep::Wait("the StatefulSet reports no update revision yet".into());
    };
    let mut outdated: Vec<&MemberPod> = pods
        .iter()
        .filter(|p| p.revision.as_deref() != Some(rev))
        .collect();
    if outdated.is_empty() {
        return RolloutStep::Done;
    }
    let live = pods.iter().filter(|p| p.ready && !p.terminating).count();
    if live < replicas as usize {
        return RolloutStep::Wait(format!("{live}/{replicas} members ready"));
    }
    let Some(view) = view else {
        return RolloutStep::Wait("no member's metrics readable".into());
    };
    let leaderless = view.leaderless();
    if !leaderless.is_empty() {
        // A single hub becoming a group: its pod still runs the single hub (no Raft state) and
        // the new members wait for it. Restarted, it converts its data into the group's log.
        if let Some(hub) = outdated
            .iter()
            .find(|p| p.ordinal == 0 && view.singles.contains(&p.name))
        {
            return RolloutStep::Replace(hub.name.clone());
        }
        return RolloutStep::Wait(format!("no leader for {}", leaderless.join(", ")));
    }
    if let Some(p) = pods.iter().find(|p| !view.caught_up(&p.name)) {
        return RolloutStep::Wait(format!("{} is catching up", p.name));
    }
    outdated.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
    match outdated.iter().find(|p| !view.leads(&p.name)) {
        Some(follower) => RolloutStep::Replace(follower.name.clone()),
        None => RolloutStep::StepDownAndReplace(outdated[0].name.clone()),
    }
}

/// Raft ids of the members a scale-down from `running` to `desired` pods removes, highest first
/// (member id = ordinal + 1, so the StatefulSet's highest ordinals).
pub fn leaving(running: i32, desired: i32) -> Vec<u64> {
    ((desired.max(0) + 1)..=running)
        .rev()
        .map(|id| id as u64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(name: &str, rev: &str, role: Option<&str>) -> MemberPod {
        MemberPod {
            name: name.into(),
            ordinal: ordinal(name).unwrap(),
            ready: true,
            terminating: false,
            revision: Some(rev.into()),
            role: role.map(String::from),
            ip: Some("10.0.0.1".into()),
        }
    }

    fn view(leader: &str, commits: &[(&str, u64)]) -> GroupView {
        GroupView {
            leaders: BTreeMap::from([("default".to_string(), Some(leader.to_string()))]),
            leader_pod: Some(leader.into()),
            members: commits.iter().map(|(p, _)| p.to_string()).collect(),
            singles: Vec::new(),
            term: Some(2),
            commits: commits
                .iter()
                .map(|(p, c)| (p.to_string(), BTreeMap::from([("default".to_string(), *c)])))
                .collect(),
        }
    }

    #[test]
    fn labels_follow_the_leader_and_unknown_changes_nothing() {
        let pods = vec![
            pod("hub-0", "r1", Some(ROLE_LEADER)),
            pod("hub-1", "r1", None),
            pod("hub-2", "r1", Some(ROLE_FOLLOWER)),
        ];
        assert_eq!(
            role_changes(&pods, Some("hub-1")),
            vec![
                ("hub-0".to_string(), ROLE_FOLLOWER),
                ("hub-1".to_string(), ROLE_LEADER)
            ]
        );
        assert!(role_changes(&pods, None).is_empty());
        let mut gone = pods.clone();
        gone[0].terminating = true;
        assert_eq!(
            role_changes(&gone, Some("hub-1")),
            vec![("hub-1".to_string(), ROLE_LEADER)],
            "a terminating pod is left alone"
        );
    }

    #[test]
    fn followers_roll_first_highest_ordinal_first_then_the_leader() {
        let v = view("hub-1", &[("hub-0", 10), ("hub-1", 10), ("hub-2", 10)]);
        let mut pods = vec![
            pod("hub-0", "old", None),
            pod("hub-1", "old", None),
            pod("hub-2", "old", None),
        ];
        assert_eq!(
            rollout_step(&pods, 3, Some("new"), Some(&v)),
            RolloutStep::Replace("hub-2".into())
        );
        pods[2].revision = Some("new".into());
        assert_eq!(
            rollout_step(&pods, 3, Some("new"), Some(&v)),
            RolloutStep::Replace("hub-0".into())
        );
        pods[0].revision = Some("new".into());
        assert_eq!(
            rollout_step(&pods, 3, Some("new"), Some(&v)),
            RolloutStep::StepDownAndReplace("hub-1".into())
        );
        pods[1].revision = Some("new".into());
        assert_eq!(
            rollout_step(&pods, 3, Some("new"), Some(&v)),
            RolloutStep::Done
        );
    }

    #[test]
    fn a_rollout_waits_for_ready_leaders_and_catch_up() {
        let pods = vec![
            pod("hub-0", "old", None),
            pod("hub-1", "new", None),
            pod("hub-2", "new", None),
        ];
        let v = view(
            "hub-0",
            &[("hub-0", 1000), ("hub-1", 1000), ("hub-2", 1000)],
        );
        let mut not_ready = pods.clone();
        not_ready[2].ready = false;
        assert!(matches!(
            rollout_step(&not_ready, 3, Some("new"), Some(&v)),
            RolloutStep::Wait(w) if w == "2/3 members ready"
        ));
        assert!(matches!(
            rollout_step(&pods[..2], 3, Some("new"), Some(&v)),
            RolloutStep::Wait(_)
        ));
        assert!(matches!(
            rollout_step(&pods, 3, None, Some(&v)),
            RolloutStep::Wait(_)
        ));
        assert!(matches!(
            rollout_step(&pods, 3, Some("new"), None),
            RolloutStep::Wait(_)
        ));
        let lagging = view("hub-0", &[("hub-0", 1000), ("hub-1", 10), ("hub-2", 1000)]);
        assert!(matches!(
            rollout_step(&pods, 3, Some("new"), Some(&lagging)),
            RolloutStep::Wait(w) if w == "hub-1 is catching up"
        ));
        let mut leaderless = v.clone();
        leaderless.leaders.insert("default".into(), None);
        assert!(matches!(
            rollout_step(&pods, 3, Some("new"), Some(&leaderless)),
            RolloutStep::Wait(w) if w.starts_with("no leader")
        ));
        assert_eq!(
            rollout_step(&pods, 3, Some("new"), Some(&v)),
            RolloutStep::StepDownAndReplace("hub-0".into())
        );
    }

    #[test]
    fn a_single_hub_becoming_a_group_restarts_its_pod_first() {
        // The StatefulSet grew from 1 to 3: hub-0 still runs the single hub (old revision, no
        // Raft state), hub-1 and hub-2 are new empty members waiting for a leader.
        let pods = vec![
            pod("hub-0", "old", None),
            pod("hub-1", "new", None),
            pod("hub-2", "new", None),
        ];
        let mut v = view("hub-1", &[("hub-1", 0), ("hub-2", 0)]);
        v.leaders.insert("default".into(), None);
        v.leader_pod = None;
        v.singles = vec!["hub-0".into()];
        assert_eq!(
            rollout_step(&pods, 3, Some("new"), Some(&v)),
            RolloutStep::Replace("hub-0".into())
        );
        // Not while hub-0 reports Raft state (a group member whose group lost its leader), nor
        // before every member is ready.
        let mut member = v.clone();
        member.singles.clear();
        member.members.insert(0, "hub-0".into());
        assert!(matches!(
            rollout_step(&pods, 3, Some("new"), Some(&member)),
            RolloutStep::Wait(w) if w.starts_with("no leader")
        ));
        let mut starting = pods.clone();
        starting[2].ready = false;
        assert!(matches!(
            rollout_step(&starting, 3, Some("new"), Some(&v)),
            RolloutStep::Wait(_)
        ));
    }

    #[test]
    fn scale_down_removes_the_highest_ids_first() {
        assert_eq!(leaving(5, 3), vec![5, 4]);
        assert!(leaving(3, 3).is_empty());
        assert!(leaving(3, 5).is_empty());
    }
}
