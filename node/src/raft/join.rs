//! Auto-join: a member missing from its group asks the group to add it, so scaling 3 -> 5 needs no
//! operator call (the new pods' `cluster.peers` list five; the old members' may still list three).
//!
//! A member asks when its group has not named it for two maximum election timeouts since it
//! started and it has not been a member since this process started (a member removed while it
//! still runs does not add itself back; a restarted one does). It sends the `Join` RPC to the other
//! configured members' gRPC addresses in turn (their HTTP addresses may not be known yet); the
//! receiver runs the same add path as `POST /api/v1/cluster/members`, forwarding to the leader.
//! Retried every second until the group names this member.

use std::sync::Weak;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::group::Cluster;
use super::RaftHandle;

/// Watches `namespace`'s group and asks to join when this member is missing from it.
pub async fn auto_join(
    namespace: String,
    raft: RaftHandle,
    cluster: Weak<Cluster>,
    shutdown: CancellationToken,
) {
    let Some(c) = cluster.upgrade() else { return };
    let me = c.settings.node_id;
    let first_wait = Duration::from_millis(c.settings.raft.election_timeout_max * 2);
    drop(c);
    let mut rx = raft.metrics();
    let started = tokio::time::Instant::now();
    let mut was_member = false;
    let mut next_try = started + first_wait;
    loop {
        let named = rx
            .borrow_and_update()
            .membership_config
            .membership()
            .get_node(&me)
            .is_some();
        was_member |= named;
        if was_member {
            // Nothing more to do in this process (a member removed while it runs stays out).
            return;
        }
        if tokio::time::Instant::now() >= next_try {
            let Some(c) = cluster.upgrade() else { return };
            match ask(&c, &namespace).await {
                Ok(by) => {
                    tracing::info!(namespace = %namespace, via = %by, "joined the group");
                    // The leader's replication names this member soon; keep watching until then.
                    next_try = tokio::time::Instant::now() + Duration::from_secs(5);
                }
                Err(e) => {
                    tracing::info!(namespace = %namespace, error = %e,
                        "not a member of the group yet: asking to join failed, retrying");
                    next_try = tokio::time::Instant::now() + Duration::from_secs(1);
                }
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(next_try) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One round over the other configured members' gRPC addresses (known from `cluster.peers`,
/// unlike their HTTP addresses); the address of the one that added us.
async fn ask(c: &Cluster, namespace: &str) -> Result<String, String> {
    let me = c.settings.node_id;
    let Some(mine) = c.settings.members.get(&me) else {
        return Err("this member is not in cluster.peers".into());
    };
    let body = serde_json::json!({
        "id": me,
        "grpc_addr": mine.grpc,
        "http_addr": c.settings.advertise_http,
    });
    let mut errors = Vec::new();
    for (id, m) in c.settings.members.iter().filter(|(id, _)| **id != me) {
        match c
            .peers
            .join(&m.grpc, namespace, &body, Duration::from_secs(60))
            .await
        {
            Ok(outcome) => return Ok(format!("node {id} ({outcome})")),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}
