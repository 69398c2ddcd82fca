//! Pre-vote (Raft thesis §9.6) in front of openraft 0.9, which has none, and which therefore
//! decides when a member campaigns.
//!
//! openraft's own timer elections are off (`enable_elect: false`). Without pre-vote they cost
//! failovers: a follower campaigns after `election_timeout_max + election_timeout`, the first to
//! time out is often the one with the shorter log, its rejected campaign still raises the term,
//! and a follower cut off from the group raises it again and again and deposes the healthy leader
//! when it comes back. Here a member campaigns only when (1) it has not heard a leader for one
//! lease (`election_timeout_max`, the span openraft's voters refuse other candidates after the last
//! heartbeat), and (2) a majority of voters (itself included) answer a `PreVote` saying they have
//! not heard one either, so they would vote, and that its log is at least as long as theirs. Among
//! equal logs the lower node id goes first, and a member defers to any other that could campaign
//! and ranks higher, so one candidate campaigns and wins in one round trip. A pre-vote never
//! changes a term or a vote; the `trigger().elect()` it leads to is openraft's normal election.

use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::ServerState;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::group::Cluster;
use super::RaftHandle;
use crate::engine::Namespace;

/// The log position a member holds: (term, LSN) of its last appended entry.
pub type LogPos = Option<(u64, u64)>;

/// "Would you vote for me?", sent before campaigning.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ask {
    pub candidate: u64,
    pub last_log: LogPos,
}

/// The answer; it changes nothing on the member that gives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub id: u64,
    pub granted: bool,
    pub last_log: LogPos,
    /// This member would campaign itself now (a voter that has not heard a leader either).
    pub could_campaign: bool,
}

/// Whether member `a` (log `a_log`) goes before member `b`: longer log first, then lower id.
pub fn outranks(a_log: LogPos, a: u64, b_log: LogPos, b: u64) -> bool {
    a_log > b_log || (a_log == b_log && a < b)
}

/// The member's last appended entry.
pub fn last_log(ns: &Namespace) -> LogPos {
    let lsn = ns.last_appended_lsn();
    (lsn > 0).then(|| (ns.epoch_at(lsn), lsn))
}

/// What openraft's state says of the leader: the role and how long since the vote was last
/// confirmed (by a heartbeat, or set), and whether that vote is a committed leader's.
struct Local {
    state: ServerState,
    quiet: Option<Duration>,
    committed: bool,
}

async fn local(raft: &RaftHandle) -> Option<Local> {
    raft.with_raft_state(|st| {
        let now = Instant::now();
        Local {
            state: st.server_state,
            quiet: st
                .vote_last_modified()
                .map(|t| now.saturating_duration_since(t)),
            committed: st.vote_ref().is_committed(),
        }
    })
    .await
    .ok()
}

impl Local {
    /// openraft's vote handling grants other candidates only once this has passed (`lease`).
    fn lease_over(&self, lease: Duration) -> bool {
        !self.committed || self.quiet.is_none_or(|q| q > lease)
    }
}

/// Answers `ask` for the group of `ns` on this member.
pub async fn answer(cluster: &Cluster, ns: &Namespace, raft: &RaftHandle, ask: &Ask) -> Answer {
    let me = cluster.settings.node_id;
    let lease = Duration::from_millis(cluster.settings.raft.election_timeout_max);
    let mine = last_log(ns);
    let voter = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == me);
    let Some(l) = local(raft).await else {
        return Answer {
            id: me,
            granted: false,
            last_log: mine,
            could_campaign: false,
        };
    };
    let leading = l.state == ServerState::Leader;
    // A member that started blank votes in no election yet (`Cluster::blank_starts`).
    let free = !leading && l.lease_over(lease) && !cluster.blank_starts.paused(ns.name());
    let could_campaign = free && voter && !cluster.elections_paused(ns.name());
    let granted = free
        && (ask.last_log > mine
            || (ask.last_log == mine && (ask.candidate < me || !could_campaign)));
    Answer {
        id: me,
        granted,
        last_log: mine,
        could_campaign,
    }
}

/// Campaigns for `ns`'s group on this member when a pre-vote says it would win (module docs).
pub async fn run(
    cluster: Weak<Cluster>,
    ns: Namespace,
    raft: RaftHandle,
    shutdown: CancellationToken,
) {
    let name = ns.name().to_string();
    let cfg = raft.config().clone();
    let lease = Duration::from_millis(cfg.election_timeout_max);
    let tick = Duration::from_millis((cfg.heartbeat_interval / 2).max(10));
    let ask_timeout = Duration::from_millis((cfg.election_timeout_min / 2).max(50));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let me = cluster.settings.node_id;
        let (voters, others) = {
            let m = raft.metrics();
            let m = m.borrow();
            if !matches!(m.state, ServerState::Follower | ServerState::Candidate) {
                continue;
            }
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            let others: Vec<(u64, String)> = voters
                .iter()
                .filter(|v| **v != me)
                .filter_map(|v| {
                    let n = m.membership_config.membership().get_node(v)?;
                    Some((*v, n.grpc.clone()))
                })
                .collect();
            (voters, others)
        };
        if !voters.contains(&me) || cluster.elections_paused(&name) {
            continue;
        }
        let Some(l) = local(&raft).await else {
            return;
        };
        // Past a leader's lease (plus a little, so members do not all ask at once); after an
        // election of its own that has not ended, one randomized election timeout.
        let wait = if l.committed {
            lease + Duration::from_millis(rand::thread_rng().gen_range(0..=cfg.heartbeat_interval))
        } else {
            Duration::from_millis(
                rand::thread_rng().gen_range(cfg.election_timeout_min..cfg.election_timeout_max),
            )
        };
        if l.quiet.is_some_and(|q| q <= wait) {
            continue;
        }
        let mine = last_log(&ns);
        let ask = Ask {
            candidate: me,
            last_log: mine,
        };
        let asks = others.iter().map(|(id, addr)| {
            let peers = cluster.peers.clone();
            let (ask, name) = (ask.clone(), name.clone());
            async move {
                match peers.pre_vote(addr, &name, &ask, ask_timeout).await {
                    Ok(a) => Some(a),
                    Err(e) => {
                        tracing::debug!(namespace = %name, node = id, error = %e, "pre-vote unanswered");
                        None
                    }
                }
            }
        });
        let answers: Vec<Answer> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let granted = 1 + answers.iter().filter(|a| a.granted).count();
        let better = answers
            .iter()
            .find(|a| a.could_campaign && outranks(a.last_log, a.id, mine, me));
        if granted * 2 <= voters.len() {
            tracing::debug!(namespace = %name, granted, voters = voters.len(), "pre-vote lost");
            continue;
        }
        if let Some(b) = better {
            tracing::debug!(namespace = %name, defer_to = b.id, "pre-vote won, deferring to a member with a longer log or lower id");
            continue;
        }
        // The state may have moved while asking (a leader's heartbeat arrived).
        if cluster.elections_paused(&name)
            || !matches!(
                raft.metrics().borrow().state,
                ServerState::Follower | ServerState::Candidate
            )
        {
            continue;
        }
        tracing::info!(namespace = %name, granted, voters = voters.len(), last_log = ?mine,
            "pre-vote won: campaigning");
        if raft.trigger().elect().await.is_err() {
            return;
        }
    }
}

/// Elections this member stays out of, by namespace (a leader handing off, until its pod stops).
#[derive(Default)]
pub struct Pauses(parking_lot::Mutex<std::collections::HashMap<String, Instant>>);

impl Pauses {
    pub fn pause(&self, ns: &str, for_: Duration) {
        self.0.lock().insert(ns.to_string(), Instant::now() + for_);
    }

    pub fn resume(&self, ns: &str) {
        self.0.lock().remove(ns);
    }

    pub fn paused(&self, ns: &str) -> bool {
        self.0.lock().get(ns).is_some_and(|t| *t > Instant::now())
    }
}

/// The namespaces whose pre-votes this member answers.
#[derive(Default, Clone)]
pub struct Targets(Arc<parking_lot::RwLock<std::collections::HashMap<String, Namespace>>>);

impl Targets {
    pub fn insert(&self, ns: &Namespace) {
        self.0.write().insert(ns.name().to_string(), ns.clone());
    }

    pub fn get(&self, name: &str) -> Option<Namespace> {
        self.0.read().get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longer_log_goes_first_then_the_lower_id() {
        assert!(outranks(Some((2, 10)), 3, Some((2, 9)), 1));
        assert!(
            outranks(Some((3, 5)), 3, Some((2, 9)), 1),
            "a later term wins"
        );
        assert!(outranks(Some((2, 9)), 1, Some((2, 9)), 2));
        assert!(!outranks(Some((2, 9)), 2, Some((2, 9)), 1));
        assert!(!outranks(None, 1, Some((1, 1)), 2));
        assert!(
            !outranks(Some((2, 9)), 1, Some((2, 9)), 1),
            "not ahead of itself"
        );
    }

    #[test]
    fn pauses_end_by_themselves() {
        let p = Pauses::default();
        p.pause("a", Duration::from_secs(60));
        p.pause("b", Duration::ZERO);
        assert!(p.paused("a"));
        assert!(!p.paused("b"));
        assert!(!p.paused("c"));
        p.resume("a");
        assert!(!p.paused("a"));
    }
}
