//! Membership changes of one namespace group, run on its leader: add a member (as a learner,
//! promoted to voter once it caught up) and remove one. Both are idempotent and retried while
//! another change is in progress, until a deadline; the HTTP layer forwards them to the leader.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tokio::time::Instant;

use super::{Member, RaftHandle};

/// How far (in entries) a learner may trail the leader's log and still be promoted.
const CAUGHT_UP: u64 = 64;

/// What a change did (or found already done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Added as a learner, caught up and promoted to voter.
    Added,
    /// Already a voter: nothing to do.
    AlreadyVoter,
    /// Removed from the group.
    Removed,
    /// Not in the group: nothing to do.
    NotMember,
}

/// Why a change did not finish here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MemberError {
    /// This member does not lead the group (the caller forwards to `leader`).
    #[error("this member is not the leader")]
    NotLeader { leader: Option<u64> },
    /// The deadline passed with the change still pending (says what is pending).
    #[error("{0}")]
    Pending(String),
    /// The group refused the change (not retried).
    #[error("{0}")]
    Refused(String),
}

/// Sorts an openraft error into a retry (`None`), not-leader, or refusal.
fn classify(e: RaftError<u64, ClientWriteError<u64, Member>>) -> Option<MemberError> {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Some(MemberError::NotLeader {
            leader: f.leader_id,
        }),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => None,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Some(MemberError::Refused(e.to_string()))
        }
        RaftError::Fatal(e) => Some(MemberError::Refused(format!("Raft stopped: {e}"))),
    }
}

fn leader_check(raft: &RaftHandle, me: u64) -> Result<(), MemberError> {
    let m = raft.metrics().borrow().clone();
    if m.state == ServerState::Leader && m.current_leader == Some(me) {
        Ok(())
    } else {
        Err(MemberError::NotLeader {
            leader: m.current_leader.filter(|l| *l != me),
        })
    }
}

/// Adds `id` to the group led here: learner first, promoted to voter once within [`CAUGHT_UP`]
/// entries of the leader's log. An existing entry for `id` keeps its address.
pub async fn add(
    raft: &RaftHandle,
    me: u64,
    id: u64,
    member: Member,
    deadline: Instant,
) -> Result<Outcome, MemberError> {
    let mut added = false;
    loop {
        leader_check(raft, me)?;
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let joint = membership.get_joint_config().len() > 1;
        let voter = membership.voter_ids().any(|v| v == id);
        let known = membership.get_node(&id).is_some();
        let wait_why;
        if voter && !joint {
            return Ok(if added {
                Outcome::Added
            } else {
                Outcome::AlreadyVoter
            });
        } else if !known {
            tracing::info!(node = id, %member, "adding a member as a learner");
            match raft.add_learner(id, member.clone(), false).await {
                Ok(_) => {
                    added = true;
                    continue;
                }
                Err(e) => {
                    if let Some(e) = classify(e) {
                        return Err(e);
                    }
                    wait_why = "another membership change is in progress".to_string();
                }
            }
        } else if voter {
            wait_why = "the group is in a joint configuration".to_string();
            // A joint config left by a leader change: finish it by proposing the same voters.
            let voters: BTreeSet<u64> = membership.voter_ids().collect();
            if let Err(e) = raft.change_membership(voters, false).await {
                if let Some(e) = classify(e) {
                    return Err(e);
                }
            }
        } else {
            // A learner: promote once caught up.
            added = true;
            let last = m.last_log_index.unwrap_or(0);
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|l| l.index);
            if matched.is_some_and(|i| i + CAUGHT_UP >= last) {
                tracing::info!(node = id, "learner caught up: promoting it to voter");
                match raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                {
                    Ok(_) => continue,
                    Err(e) => {
                        if let Some(e) = classify(e) {
                            return Err(e);
                        }
                        wait_why = "another membership change is in progress".to_string();
                    }
                }
            } else {
                wait_why = format!(
                    "node {id} is a learner at LSN {} of {}",
                    matched.map(|i| i + 1).unwrap_or(0),
                    last + 1
                );
            }
        }
        if Instant::now() >= deadline {
            return Err(MemberError::Pending(wait_why));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes `id` (voter or learner) from the group led here. The leader does not remove itself:
/// the caller hands leadership off first (`Err(NotLeader)` then names no leader).
pub async fn remove(
    raft: &RaftHandle,
    me: u64,
    id: u64,
    deadline: Instant,
) -> Result<Outcome, MemberError> {
    let mut removed = false;
    loop {
        leader_check(raft, me)?;
        let membership = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        let joint = membership.get_joint_config().len() > 1;
        if membership.get_node(&id).is_none() && !joint {
            return Ok(if removed {
                Outcome::Removed
            } else {
                Outcome::NotMember
            });
        }
        if id == me {
            return Err(MemberError::Refused(
                "the leader cannot remove itself: step down first".into(),
            ));
        }
        let voters: BTreeSet<u64> = membership.voter_ids().filter(|v| *v != id).collect();
        if voters.is_empty() {
            return Err(MemberError::Refused(format!(
                "node {id} is the last voter; a group cannot be empty"
            )));
        }
        let change = if membership.voter_ids().any(|v| v == id) || joint {
            tracing::info!(node = id, "removing a voter");
            ChangeMembers::ReplaceAllVoters(voters)
        } else {
            tracing::info!(node = id, "removing a learner");
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        match raft.change_membership(change, false).await {
            Ok(_) => {
                removed = true;
                continue;
            }
            Err(e) => {
                if let Some(e) = classify(e) {
                    return Err(e);
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(MemberError::Pending(format!(
                "node {id} is still a member (another membership change is in progress)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A change asked of the whole cluster (every group, or the named ones).
#[derive(Debug, Clone)]
pub enum Change {
    Add { id: u64, member: Member },
    Remove { id: u64 },
}

impl Change {
    fn id(&self) -> u64 {
        match self {
            Change::Add { id, .. } | Change::Remove { id } => *id,
        }
    }
}

/// Header naming the member that forwarded a change to the leader (the leader never forwards it on).
pub const FORWARDED: &str = "x-unisondb-forwarded-by";

/// What happened in each group: done (with its outcome), pending (why) or refused (why).
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub done: std::collections::BTreeMap<String, Outcome>,
    pub pending: std::collections::BTreeMap<String, String>,
    pub refused: std::collections::BTreeMap<String, String>,
    /// Groups this member does not lead (forwarded requests only: the caller retries elsewhere).
    pub not_leader: std::collections::BTreeMap<String, Option<u64>>,
}

/// Runs `change` on every group in `namespaces`: here where this member leads, else forwarded to
/// the group's leader over HTTP (`forwarded`: this is already a forwarded request, so only here),
/// retrying through leader changes until `deadline`.
pub async fn run(
    cluster: &super::group::Cluster,
    namespaces: Vec<String>,
    change: Change,
    deadline: Instant,
    forwarded: bool,
) -> Report {
    let tasks = namespaces.into_iter().map(|ns| {
        let change = change.clone();
        async move {
            let r = run_one(cluster, &ns, &change, deadline, forwarded).await;
            (ns, r)
        }
    });
    let mut report = Report::default();
    for (ns, r) in futures::future::join_all(tasks).await {
        match r {
            Ok(o) => {
                report.done.insert(ns, o);
            }
            Err(MemberError::Pending(why)) => {
                report.pending.insert(ns, why);
            }
            Err(MemberError::Refused(why)) => {
                report.refused.insert(ns, why);
            }
            Err(MemberError::NotLeader { leader }) => {
                report.not_leader.insert(ns, leader);
            }
        }
    }
    report
}

async fn run_one(
    cluster: &super::group::Cluster,
    ns: &str,
    change: &Change,
    deadline: Instant,
    forwarded: bool,
) -> Result<Outcome, MemberError> {
    let me = cluster.settings.node_id;
    let Some(raft) = cluster.groups.get(ns) else {
        return Err(MemberError::Refused(format!(
            "no Raft group for namespace {ns:?} runs here"
        )));
    };
    if let Change::Add { id, member } = change {
        cluster.directory.insert(*id, member.http.clone());
    }
    let mut last_why = String::from("no leader (election in progress)");
    loop {
        let local = match change {
            Change::Add { id, member } => add(&raft, me, *id, member.clone(), deadline).await,
            Change::Remove { id } if *id == me && leader_check(&raft, me).is_ok() => {
                // The leader leaves: hand the leadership off, then the new leader removes it.
                match super::handoff::step_down(cluster, ns, &raft, None, deadline).await {
                    Ok(_) => Err(MemberError::NotLeader { leader: None }),
                    Err(e) => Err(MemberError::Pending(format!(
                        "handing off the leadership: {e}"
                    ))),
                }
            }
            Change::Remove { id } => remove(&raft, me, *id, deadline).await,
        };
        let leader = match local {
            Err(MemberError::NotLeader { leader }) if !forwarded => leader,
            other => return other,
        };
        if let Some(l) = leader {
            match forward(cluster, ns, change, l, deadline).await {
                Forwarded::Done(o) => return Ok(o),
                Forwarded::Final(e) => return Err(e),
                Forwarded::Retry(why) => last_why = why,
            }
        }
        if Instant::now() >= deadline {
            return Err(MemberError::Pending(last_why));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

enum Forwarded {
    Done(Outcome),
    Final(MemberError),
    Retry(String),
}

/// Sends `change` for `ns` to the leader `leader`'s HTTP API.
async fn forward(
    cluster: &super::group::Cluster,
    ns: &str,
    change: &Change,
    leader: u64,
    deadline: Instant,
) -> Forwarded {
    let Some(http) = cluster.http_of(leader) else {
        return Forwarded::Retry(format!("leader {leader}'s address is unknown"));
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let q = format!("namespace={ns}&timeout_ms={}", left.as_millis());
    let client = cluster.http_client();
    let req = match change {
        Change::Add { id, member } => client
            .post(format!("http://{http}/api/v1/cluster/members?{q}"))
            .json(
                &serde_json::json!({"id": id, "grpc_addr": member.grpc, "http_addr": member.http}),
            ),
        Change::Remove { id } => {
            client.delete(format!("http://{http}/api/v1/cluster/members/{id}?{q}"))
        }
    };
    let mut req = req
        .header(FORWARDED, cluster.settings.node_id.to_string())
        .timeout(left + Duration::from_secs(5));
    if let Some(t) = &cluster.auth_token {
        req = req.bearer_auth(t);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Forwarded::Retry(format!("leader {leader} at {http}: {e}")),
    };
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    let outcome = v["namespaces"][ns].clone();
    if status.is_success() {
        if let Ok(o) = serde_json::from_value::<Outcome>(outcome) {
            return Forwarded::Done(o);
        }
    }
    let why = v["error"].as_str().unwrap_or_default().to_string();
    match status.as_u16() {
        // The leader moved (or is handing off): ask again.
        503 => Forwarded::Retry(format!("leader {leader}: {why}")),
        504 => Forwarded::Final(MemberError::Pending(why)),
        _ => Forwarded::Final(MemberError::Refused(format!(
            "leader {leader} answered {status}: {why} (change of node {})",
            change.id()
        ))),
    }
}
