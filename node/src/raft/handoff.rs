//! Leadership handoff for a planned restart (SIGTERM on the leader, `POST
//! /api/v1/cluster/step-down`). openraft 0.9 has no `transfer_leader`, but its vote handling allows
//! one: a leader's own lease dates from its election and is never renewed, so once it has led for
//! `election_timeout_max` it grants the vote of a candidate whose log is as long as its own.
//!
//! So the leader (1) refuses new proposals, (2) waits until the most caught-up voter holds its
//! whole log, (3) stops its heartbeats (the other followers' leases then run out) and stays out of
//! elections (`prevote.rs`), and (4) asks that voter (`Elect` RPC) to campaign at once. In a group of three the
//! candidate wins with the old leader's vote in one round trip; in larger groups (or right after an
//! election) it wins once the followers' leases ran out. Leadership moved when the metrics name
//! another leader.

use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;

use super::group::Cluster;
use super::RaftHandle;

/// How long the old leader stays out of elections after handing off (its pod is about to stop).
const NO_ELECT_AFTER: Duration = Duration::from_secs(10);

/// Moves the leadership of `ns`'s group away from this member (to `to`, or the most caught-up
/// voter). `Ok(Some(id))`: the new leader; `Ok(None)`: this member did not lead.
pub async fn step_down(
    cluster: &Cluster,
    ns: &str,
    raft: &RaftHandle,
    to: Option<u64>,
    deadline: Instant,
) -> Result<Option<u64>, String> {
    let me = cluster.settings.node_id;
    let m = raft.metrics().borrow().clone();
    if m.state != ServerState::Leader {
        return Ok(None);
    }
    let voters: Vec<u64> = m
        .membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != me)
        .collect();
    if voters.is_empty() {
        return Err("no other voter to hand the leadership to".into());
    }
    if let Some(t) = to {
        if !voters.contains(&t) {
            return Err(format!("node {t} is not a voter of the group"));
        }
    }
    let started = std::time::Instant::now();
    cluster.pause_writes(ns, true);
    let result = hand_off(cluster, ns, raft, me, to, &voters, deadline).await;
    cluster.pause_writes(ns, false);
    raft.runtime_config().heartbeat(true);
    match &result {
        Ok(Some(new)) => {
            tracing::info!(
                namespace = ns,
                new_leader = new,
                ms = started.elapsed().as_millis() as u64,
                "leadership handed off"
            );
            // Stay out of elections for a while: this member is about to stop.
            cluster.election_pauses.pause(ns, NO_ELECT_AFTER);
        }
        _ => cluster.election_pauses.resume(ns),
    }
    result
}

async fn hand_off(
    cluster: &Cluster,
    ns: &str,
    raft: &RaftHandle,
    me: u64,
    to: Option<u64>,
    voters: &[u64],
    deadline: Instant,
) -> Result<Option<u64>, String> {
    let mut rx = raft.metrics();
    // (2) The target holds the whole log (proposals are paused, so the log stops growing).
    let target = loop {
        let (target, caught_up) = {
            let m = rx.borrow_and_update();
            if m.state != ServerState::Leader {
                return Ok(m.current_leader.filter(|l| *l != me));
            }
            let last = m.last_log_index;
            let matched = |id: u64| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index)
            };
            let target = to.unwrap_or_else(|| {
                *voters
                    .iter()
                    .max_by_key(|v| (matched(**v), std::cmp::Reverse(**v)))
                    .unwrap_or(&voters[0])
            });
            (target, matched(target) == last)
        };
        if caught_up {
            break target;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "node {target} did not catch up with the leader's log in time"
            ));
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), rx.changed()).await;
    };
    // (3) + (4)
    cluster.election_pauses.pause(ns, NO_ELECT_AFTER);
    raft.runtime_config().heartbeat(false);
    let addr = {
        let m = rx.borrow();
        m.membership_config
            .membership()
            .get_node(&target)
            .map(|n| n.grpc.clone())
    }
    .ok_or_else(|| format!("node {target} has no address"))?;
    let retry = Duration::from_millis(cluster.settings.raft.election_timeout_min.max(50));
    let mut next_ask = Instant::now();
    loop {
        if Instant::now() >= next_ask {
            if let Err(e) = cluster.peers.elect(&addr, ns).await {
                tracing::warn!(namespace = ns, node = target, error = %e, "asking a member to campaign failed");
            }
            next_ask = Instant::now() + retry;
        }
        {
            let m = rx.borrow_and_update();
            if let Some(l) = m.current_leader.filter(|l| *l != me) {
                if m.state != ServerState::Leader {
                    return Ok(Some(l));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "node {target} did not take over the leadership in time"
            ));
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), rx.changed()).await;
    }
}
