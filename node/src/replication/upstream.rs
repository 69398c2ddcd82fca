//! Which member of a hub group a follower streams from, when `replication.upstream` lists several.
//!
//! Before each session the follower asks every listed address for `LatestLsn` (its answer names the
//! member's Raft role) and ranks them: followers first (to keep streaming load off the leader), then
//! nodes outside any group, then the leader, then candidates/learners; the highest LSN first within
//! a rank; unreachable addresses last. While streaming, the follower probes again every
//! [`RECHECK`] and moves when its member stops keeping up (partitioned, or stuck behind) while another
//! does, or when it streams from the leader and a follower keeps up. Every member serves committed
//! records only, so moving never needs a snapshot: the next session's history check continues where
//! this one stopped (and truncates an uncommitted tail, should one exist).

use std::time::Duration;

use super::proto::LatestLsnRequest;
use super::relayer::FollowConfig;

/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a streaming follower looks for a better member.
pub const RECHECK: Duration = Duration::from_secs(5);

/// A member's role as its `LatestLsn` answer states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A Raft follower: the preferred source.
    Follower,
    /// A node that is in no Raft group (a single hub or a relayer).
    Standalone,
    /// The Raft leader: used when no follower answers.
    Leader,
    /// A candidate or learner: in the middle of an election or of joining.
    Other,
    /// Did not answer.
    Unreachable,
}

impl Role {
    /// From `LatestLsnResponse.raft_role` (empty outside cluster mode).
    pub fn parse(s: &str) -> Role {
        match s {
            "" => Role::Standalone,
            "follower" => Role::Follower,
            "leader" => Role::Leader,
            _ => Role::Other,
        }
    }
}

/// One member's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub addr: String,
    pub role: Role,
    pub lsn: u64,
}

/// Orders probes best first: by role, then by LSN (highest first), then as listed.
pub fn rank(probes: &mut [Probe]) {
    probes.sort_by(|a, b| a.role.cmp(&b.role).then(b.lsn.cmp(&a.lsn)));
}

/// Whether a streaming follower should leave `current` for a member of `now` (probes of this round,
/// any order), given the highest LSN any member had in the previous round (`prev_max`). A member
/// keeps up if it reached `prev_max`. Returns the address to move to.
pub fn better(current: &str, now: &[Probe], prev_max: u64) -> Option<String> {
    let keeps_up = |p: &Probe| p.role != Role::Unreachable && p.lsn >= prev_max;
    let mut candidates: Vec<Probe> = now
        .iter()
        .filter(|p| p.addr != current && keeps_up(p))
        .cloned()
        .collect();
    rank(&mut candidates);
    let best = candidates.first()?;
    let cur = now.iter().find(|p| p.addr == current);
    let move_away = match cur {
        None => true,
        Some(c) if !keeps_up(c) => true,
        Some(c) => c.role == Role::Leader && best.role == Role::Follower,
    };
    move_away.then(|| best.addr.clone())
}

/// Asks one address for its latest LSN and role in `namespace`.
pub async fn probe(cfg: &FollowConfig, addr: &str, namespace: &str) -> Probe {
    let one = FollowConfig {
        upstream: addr.to_string(),
        candidates: Vec::new(),
        connect_timeout: PROBE_TIMEOUT,
        ..cfg.clone()
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut client = one.connect().await.ok()?;
        client
            .latest_lsn(LatestLsnRequest {
                namespace: namespace.to_string(),
            })
            .await
            .ok()
            .map(|r| r.into_inner())
    })
    .await
    .ok()
    .flatten();
    match answer {
        Some(a) => Probe {
            addr: addr.to_string(),
            role: Role::parse(&a.raft_role),
            lsn: a.lsn,
        },
        None => Probe {
            addr: addr.to_string(),
            role: Role::Unreachable,
            lsn: 0,
        },
    }
}

/// Probes every candidate of `cfg` at once; the answers in listed order.
pub async fn probe_all(cfg: &FollowConfig, namespace: &str) -> Vec<Probe> {
    futures::future::join_all(cfg.candidates.iter().map(|a| probe(cfg, a, namespace))).await
}

/// The candidates of `cfg`, best first.
pub async fn choose(cfg: &FollowConfig, namespace: &str) -> Vec<Probe> {
    let mut probes = probe_all(cfg, namespace).await;
    rank(&mut probes);
    probes
}

/// The best reachable candidate, if any answers.
pub async fn pick(cfg: &FollowConfig, namespace: &str) -> Option<String> {
    let ranked = choose(cfg, namespace).await;
    let best = ranked.first().filter(|p| p.role != Role::Unreachable)?;
    tracing::debug!(namespace, chosen = %best.addr, probes = ?ranked, "picked a member of the hub group");
    Some(best.addr.clone())
}

/// The address listed after `current` (wrapping): the next to try when none answers a probe.
pub fn after(list: &[String], current: &str) -> String {
    let i = list.iter().position(|a| a == current).map_or(0, |i| i + 1);
    list.get(i % list.len().max(1)).cloned().unwrap_or_default()
}

/// [`watch`] from `cfg.upstream` when `cfg` lists a group; never returns for a single upstream.
pub async fn watch_if_group(cfg: &FollowConfig, namespace: &str) -> String {
    if cfg.candidates.is_empty() {
        return std::future::pending().await;
    }
    watch(cfg, namespace, &cfg.upstream).await
}

/// Returns (with the address to move to) once a better member than `current` appears; never
/// returns otherwise.
pub async fn watch(cfg: &FollowConfig, namespace: &str, current: &str) -> String {
    let mut prev_max: Option<u64> = None;
    loop {
        tokio::time::sleep(RECHECK).await;
        let now = probe_all(cfg, namespace).await;
        let max = now
            .iter()
            .filter(|p| p.role != Role::Unreachable)
            .map(|p| p.lsn)
            .max();
        if let (Some(prev), Some(_)) = (prev_max, max) {
            if let Some(to) = better(current, &now, prev) {
                tracing::info!(namespace, from = current, to = %to, probes = ?now,
                    "moving to a better member of the hub group");
                return to;
            }
        }
        if max.is_some() {
            prev_max = max;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(addr: &str, role: Role, lsn: u64) -> Probe {
        Probe {
            addr: addr.into(),
            role,
            lsn,
        }
    }

    #[test]
    fn followers_first_then_standalone_then_leader_highest_lsn_first() {
        let mut v = vec![
            p("down", Role::Unreachable, 0),
            p("leader", Role::Leader, 100),
            p("f-behind", Role::Follower, 90),
            p("cand", Role::Other, 100),
            p("f-ahead", Role::Follower, 99),
            p("single", Role::Standalone, 100),
        ];
        rank(&mut v);
        let order: Vec<&str> = v.iter().map(|p| p.addr.as_str()).collect();
        assert_eq!(
            order,
            ["f-ahead", "f-behind", "single", "leader", "cand", "down"]
        );
        assert_eq!(Role::parse(""), Role::Standalone);
        assert_eq!(Role::parse("learner"), Role::Other);
    }

    #[test]
    fn moves_off_a_stuck_member_or_the_leader_only_to_one_that_keeps_up() {
        // Idle group: everyone keeps up, a follower stays.
        let idle = [
            p("a", Role::Follower, 10),
            p("b", Role::Leader, 10),
            p("c", Role::Follower, 10),
        ];
        assert_eq!(better("a", &idle, 10), None);
        // On the leader while a follower keeps up: move to it.
        assert_eq!(better("b", &idle, 10).as_deref(), Some("a"));
        // On the leader, followers lag behind last round's position: stay.
        let lagging = [
            p("a", Role::Follower, 5),
            p("b", Role::Leader, 20),
            p("c", Role::Follower, 8),
        ];
        assert_eq!(better("b", &lagging, 10), None);
        // A follower cut off (stuck below what others had last round) moves, to a follower first.
        let cut = [
            p("a", Role::Follower, 10),
            p("b", Role::Leader, 30),
            p("c", Role::Follower, 29),
        ];
        assert_eq!(better("a", &cut, 25).as_deref(), Some("c"));
        // An old leader cut off from the majority still says leader: it is stuck, so move.
        let old = [
            p("a", Role::Leader, 10),
            p("b", Role::Leader, 30),
            p("c", Role::Follower, 30),
        ];
        assert_eq!(better("a", &old, 25).as_deref(), Some("c"));
        // The current member does not answer: move to whoever keeps up.
        let gone = [
            p("a", Role::Unreachable, 0),
            p("b", Role::Leader, 30),
            p("c", Role::Other, 30),
        ];
        assert_eq!(better("a", &gone, 30).as_deref(), Some("b"));
        // Nobody else keeps up: stay.
        assert_eq!(better("a", &[p("a", Role::Unreachable, 0)], 30), None);
        let list = vec!["x".to_string(), "y".to_string(), "z".to_string()];
        assert_eq!(
            (after(&list, "x"), after(&list, "z"), after(&list, "?")),
            ("y".to_string(), "x".to_string(), "x".to_string())
        );
    }
}
