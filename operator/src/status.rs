//! Status computation (pure) and the status patch (only when something changed, so an unchanged
//! object causes no writes and no watch event loops).

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, Patch, PatchParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::connectivity::{self, Connectivity};
use crate::crd::{Condition, NodeStatus};
use crate::volumes::{self, VolumeReport};
use crate::Error;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Why the operator could not (fully) act on the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: String,
    pub message: String,
}

/// Where the node sits in the topology, as reported in its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Hops from the hub: 0 for a hub.
    pub depth: Option<i32>,
    /// gRPC URL of the upstream (relayers).
    pub upstream: Option<String>,
    /// `Kind/namespace/name` of the upstream, or `address`.
    pub upstream_ref: Option<String>,
}

/// What a reconcile learned, as input for [`compute`].
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    pub generation: Option<i64>,
    pub desired_replicas: i32,
    pub statefulset: Option<&'a StatefulSet>,
    pub selector: String,
    pub grpc_endpoint: Option<String>,
    pub position: Position,
    pub config_hash: Option<String>,
    /// Blocking problem (invalid spec, broken topology): nothing was applied.
    pub problem: Option<Problem>,
    /// Non-blocking notes (e.g. PDB skipped), appended to the Degraded=False message.
    pub notes: Vec<String>,
    /// What the running pods reported (`None` before the StatefulSet exists).
    pub connectivity: Option<Connectivity>,
    /// The node follows an upstream: it gets a `Connected` condition.
    pub follows: bool,
    /// `hub` or `relayer`, for the per-pod state.
    pub role: &'static str,
    /// Where the volumes stand while `storage.size` is above the template's (`VolumesResized`).
    pub volumes: Option<VolumeReport>,
    /// The owned Certificate after this reconcile: `Some(name)` applied, `Some(None)` none (or
    /// deleted); `None` when this reconcile did not get that far (the previous value stands).
    pub certificate: Option<Option<String>>,
    /// Hub groups: leadership as the members report it (`None` for a single hub or a relayer).
    pub group: Option<crate::group::GroupReport>,
}

fn condition(
    prev: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    gen: Option<i64>,
    now: &str,
) -> Condition {
    let status = if status { "True" } else { "False" };
    tri_condition(prev, type_, status, reason, message, gen, now)
}

/// A condition whose status may also be `Unknown`.
fn tri_condition(
    prev: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    gen: Option<i64>,
    now: &str,
) -> Condition {
    let status = status.to_string();
    // Keep the transition time unless the status flipped.
    let last = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_string());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        last_transition_time: last,
        observed_generation: gen,
    }
}

/// Builds the new status. Fields a blocked reconcile cannot know (upstream, depth, hash) keep
/// their previous values so a broken reference does not erase what is still running.
pub fn compute(prev: Option<&NodeStatus>, o: &Observed<'_>, now: &str) -> NodeStatus {
    let prev_conds: &[Condition] = prev.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let sts_status = o.statefulset.and_then(|s| s.status.as_ref());
    let replicas = sts_status.map(|s| s.replicas).unwrap_or(0);
    let ready = sts_status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let updated = sts_status.and_then(|s| s.updated_replicas).unwrap_or(0);
    let sts_gen = o.statefulset.and_then(|s| s.metadata.generation);
    let sts_observed = sts_status.and_then(|s| s.observed_generation);
    let rolled_out = o.statefulset.is_some()
        && sts_gen.is_some()
        && sts_observed >= sts_gen
        && updated >= o.desired_replicas
        && replicas == o.desired_replicas;

    // Ready means the current spec runs everywhere: every replica ready *and* at the StatefulSet's
    // current revision (a rollout in progress is not Ready, even while old pods still serve).
    let all_ready =
        o.statefulset.is_some() && ready >= o.desired_replicas && replicas == o.desired_replicas;
    let is_ready = all_ready && rolled_out;
    let ready_cond = condition(
        prev_conds,
        READY,
        is_ready,
        if is_ready {
            "AllReplicasReady"
        } else if all_ready {
            "RolloutInProgress"
        } else {
            "ReplicasNotReady"
        },
        if all_ready && !is_ready {
            format!(
                "{ready}/{} replicas ready, {updated} at the current revision",
                o.desired_replicas
            )
        } else {
            format!("{ready}/{} replicas ready", o.desired_replicas)
        },
        o.generation,
        now,
    );
    let progressing = o.problem.is_none() && !(rolled_out && is_ready);
    let prog_cond = condition(
        prev_conds,
        PROGRESSING,
        progressing,
        if o.problem.is_some() {
            "Blocked"
        } else if progressing {
            "RollingOut"
        } else {
            "Stable"
        },
        if progressing {
            format!(
                "{updated}/{} replicas updated, {ready} ready",
                o.desired_replicas
            )
        } else if let Some(p) = &o.problem {
            format!("blocked: {}", p.message)
        } else {
            "all replicas updated and ready".to_string()
        },
        o.generation,
        now,
    );
    let degraded_cond = match &o.problem {
        Some(p) => condition(
            prev_conds,
            DEGRADED,
            true,
            &p.reason,
            p.message.clone(),
            o.generation,
            now,
        ),
        None => {
            let msg = if o.notes.is_empty() {
                "reconciled".to_string()
            } else {
                o.notes.join("; ")
            };
            condition(
                prev_conds,
                DEGRADED,
                false,
                "AsExpected",
                msg,
                o.generation,
                now,
            )
        }
    };
    let (pods, max_lag_seconds, max_lag_records) = o
        .connectivity
        .as_ref()
        .and_then(|c| connectivity::pod_states(c, o.role))
        .unwrap_or_default();
    let group_view = o.group.as_ref().and_then(|g| g.view.as_ref());
    let keep = |new: &Option<String>, old: Option<&Option<String>>| {
        if o.problem.is_some() {
            old.cloned().flatten().or_else(|| new.clone())
        } else {
            new.clone()
        }
    };
    NodeStatus {
        observed_generation: o.generation,
        replicas,
        ready_replicas: ready,
        selector: o.selector.clone(),
        conditions: {
            let mut c = vec![ready_cond, prog_cond, degraded_cond];
            if let Some(report) = o.connectivity.as_ref().filter(|_| o.follows) {
                let v = connectivity::verdict(report);
                c.push(tri_condition(
                    prev_conds,
                    connectivity::CONNECTED,
                    v.status,
                    v.reason,
                    v.message,
                    o.generation,
                    now,
                ));
            }
            if let Some(g) = &o.group {
                let lost = !g.quorum_lost.is_empty();
                let message = if lost {
                    let what: Vec<String> = g
                        .quorum_lost
                        .iter()
                        .map(|(ns, d)| format!("{ns} ({}s)", d.as_secs()))
                        .collect();
                    format!("no member reports a leader for {}", what.join(", "))
                } else {
                    match g.view.as_ref().map(|v| v.leaderless()) {
                        None => "no member readable".to_string(),
                        Some(l) if l.is_empty() => "every namespace has a leader".to_string(),
                        Some(l) => format!("electing a leader for {}", l.join(", ")),
                    }
                };
                c.push(condition(
                    prev_conds,
                    crate::group::QUORUM_LOST,
                    lost,
                    if lost { "NoLeader" } else { "LeaderElected" },
                    message,
                    o.generation,
                    now,
                ));
            }
            if let Some(report) = &o.volumes {
                let (status, reason, message) = volumes::verdict(report);
                c.push(tri_condition(
                    prev_conds,
                    volumes::VOLUMES_RESIZED,
                    status,
                    reason,
                    message,
                    o.generation,
                    now,
                ));
            }
            c
        },
        grpc_endpoint: o.grpc_endpoint.clone(),
        depth: if o.problem.is_some() {
            prev.and_then(|p| p.depth).or(o.position.depth)
        } else {
            o.position.depth
        },
        upstream: keep(&o.position.upstream, prev.map(|p| &p.upstream)),
        upstream_ref: keep(&o.position.upstream_ref, prev.map(|p| &p.upstream_ref)),
        config_hash: keep(&o.config_hash, prev.map(|p| &p.config_hash)),
        certificate: match &o.certificate {
            Some(now) => now.clone(),
            None => prev.and_then(|p| p.certificate.clone()),
        },
        replication_divergences: o
            .connectivity
            .as_ref()
            .and_then(connectivity::divergences)
            .map(|(n, _)| n)
            .filter(|_| o.follows)
            .or_else(|| prev.and_then(|p| p.replication_divergences)),
        pods,
        max_lag_seconds,
        max_lag_records,
        leader: group_view.and_then(|v| v.leader_pod.clone()),
        members: group_view.map(|v| v.members.clone()).unwrap_or_default(),
        term: group_view
            .and_then(|v| v.term)
            .map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
    }
}

/// Patches `.status` only when it differs from what the object already has.
pub async fn patch_if_changed<K>(
    api: &Api<K>,
    name: &str,
    current: Option<&NodeStatus>,
    new: &NodeStatus,
) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if current == Some(new) {
        return Ok(false);
    }
    let patch = json!({ "status": merge_patch(current, new) });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::Kube)?;
    Ok(true)
}

/// `new` as a JSON merge patch over `current`: a field `new` no longer has (a `None` skipped when
/// serializing) is sent as `null`, which deletes it; absent would keep the old value.
pub fn merge_patch(current: Option<&NodeStatus>, new: &NodeStatus) -> serde_json::Value {
    let mut patch = serde_json::to_value(new).unwrap_or_default();
    let old = current
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or_default();
    if let (Some(p), Some(o)) = (patch.as_object_mut(), old.as_object()) {
        for key in o.keys() {
            p.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    patch
}

/// RFC 3339 timestamp for conditions.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
