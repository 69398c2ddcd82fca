//! Hub groups (`UnisonHub.spec.replicas` 3 or 5): the part of a reconcile only a Raft group has.
//!
//! - **Routing**: the operator labels each member pod `unisondb.io/role: leader|follower` from the
//!   `unisondb_raft_is_leader` gauge on its `/metrics`; the client Service selects the leader (as
//!   CloudNativePG's `-rw` Service does), `<name>-followers` the others, `<name>-ro` every member.
//!   Each namespace is its own Raft group, so "the leader pod" is the one leading the most
//!   namespaces (ties: the lowest ordinal); followers proxy the other namespaces' writes.
//! - **Rolling updates** (`updateStrategy: OnDelete`): one pod at a time, followers first, the
//!   leader last after asking it to step down ([`plan::rollout_step`]).
//! - **Scale-down**: the members with the highest ids leave the Raft groups before the StatefulSet
//!   shrinks ([`members_for_build`]).
//! - **Status**: leader, members, term, the `QuorumLost` condition.
//!
//! Deciding is pure ([`view`], [`plan`]); this module does the I/O.

pub mod admin;
pub mod plan;
pub mod view;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use parking_lot::Mutex;
use serde_json::json;

use crate::build::{names, statefulset::read};
use crate::connectivity::Connectivity;
use crate::kind::Target;
use crate::nodeconfig::HTTP_PORT;
use crate::reconcile::Context;
use crate::Error;
use plan::{MemberPod, RolloutStep};
use view::GroupView;

/// Pod label the client and followers Services select on.
pub const ROLE_LABEL: &str = "unisondb.io/role";
pub const ROLE_LEADER: &str = "leader";
pub const ROLE_FOLLOWER: &str = "follower";

/// Requeue period of hub groups: how fast the leader label follows a failover (pod events
/// trigger a reconcile too, but a new leader is elected seconds after the old pod went away).
pub const GROUP_RESYNC: Duration = Duration::from_secs(3);

/// A namespace without a leader for this long is reported as `QuorumLost` (a failover takes
/// 3-4 election timeouts, 1 s each by default).
pub const QUORUM_LOST_AFTER: Duration = Duration::from_secs(10);

/// Condition type: True while some namespace has had no leader for [`QUORUM_LOST_AFTER`].
pub const QUORUM_LOST: &str = "QuorumLost";

/// How long a leader asked to step down may keep leading before it is restarted anyway.
pub const STEP_DOWN_GRACE: Duration = Duration::from_secs(15);

/// What one reconcile learned and did about a group, for the status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupReport {
    /// The members' view; `None` when no member could be read.
    pub view: Option<GroupView>,
    /// Namespaces without a leader for longer than [`QUORUM_LOST_AFTER`], and for how long.
    pub quorum_lost: Vec<(String, Duration)>,
    /// Rolling update and scale-down progress, for the status message.
    pub notes: Vec<String>,
}

/// What the operator remembers between reconciles (in memory: a restarted operator starts over,
/// which only delays a `QuorumLost` report or a forced leader restart).
#[derive(Default)]
pub struct Memory {
    /// `object/namespace` -> since when no member reports a leader.
    leaderless: Mutex<HashMap<String, Instant>>,
    /// `object/pod` -> when the pod was asked to step down.
    step_downs: Mutex<HashMap<String, Instant>>,
}

impl Memory {
    /// Namespaces of `object` leaderless for longer than [`QUORUM_LOST_AFTER`] as of `now`. A group
    /// that never had a term (still forming) is not reported.
    pub fn quorum_lost(
        &self,
        object: &str,
        view: &GroupView,
        now: Instant,
    ) -> Vec<(String, Duration)> {
        let mut since = self.leaderless.lock();
        let prefix = format!("{object}/");
        let leaderless = view.leaderless();
        since.retain(|k, _| {
            !k.starts_with(&prefix) || leaderless.iter().any(|ns| *k == format!("{prefix}{ns}"))
        });
        let mut out = Vec::new();
        for ns in leaderless {
            let t = *since.entry(format!("{prefix}{ns}")).or_insert(now);
            let d = now.saturating_duration_since(t);
            if d >= QUORUM_LOST_AFTER && view.term.unwrap_or(0) > 0 {
                out.push((ns, d));
            }
        }
        out
    }

    /// When `pod` was first asked to step down (recorded now if never).
    fn step_down_asked(&self, key: &str, now: Instant) -> (Instant, bool) {
        let mut m = self.step_downs.lock();
        match m.get(key) {
            Some(t) => (*t, false),
            None => {
                m.insert(key.to_string(), now);
                (now, true)
            }
        }
    }

    fn forget_step_down(&self, key: &str) {
        self.step_downs.lock().remove(key);
    }
}

/// The members as the API server lists them.
async fn member_pods(ctx: &Context, ns: &str, selector: &str) -> Result<Vec<MemberPod>, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let pods = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(Error::Kube)?;
    let mut out: Vec<MemberPod> = pods.items.iter().filter_map(MemberPod::of).collect();
    out.sort_by_key(|p| p.ordinal);
    Ok(out)
}

fn pod_base(p: &MemberPod) -> Option<String> {
    p.ip.as_ref().map(|ip| format!("http://{ip}:{HTTP_PORT}"))
}

/// After the apply: label the leader, move a rolling update one step, remember leaderless time.
pub async fn after_apply(
    ctx: &Context,
    target: &Target,
    selector: &str,
    sts: &StatefulSet,
    report: &Connectivity,
    namespaces: &[String],
    http_auth: bool,
) -> Result<GroupReport, Error> {
    let view = view::view(report, namespaces);
    let pods = member_pods(ctx, &target.namespace, selector).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let leader = view.as_ref().and_then(|v| v.leader_pod.as_deref());
    for (pod, role) in plan::role_changes(&pods, leader) {
        let patch = json!({ "metadata": { "labels": { ROLE_LABEL: role } } });
        match api
            .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(pod = %pod, role, "hub group role labelled"),
            // Gone since the list: the next reconcile sees the new pod.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    let object = format!("{}/{}", target.namespace, target.name);
    let mut out = GroupReport {
        quorum_lost: view
            .as_ref()
            .map(|v| ctx.group.quorum_lost(&object, v, Instant::now()))
            .unwrap_or_default(),
        ..Default::default()
    };
    let status = sts.status.as_ref();
    let observed = status.and_then(|s| s.observed_generation) >= sts.metadata.generation;
    let update_revision = status
        .and_then(|s| s.update_revision.as_deref())
        .filter(|_| observed);
    let step = plan::rollout_step(&pods, read::replicas(sts), update_revision, view.as_ref());
    match step {
        RolloutStep::Done => {}
        RolloutStep::Wait(why) => out.notes.push(format!("rolling update waits: {why}")),
        RolloutStep::Replace(pod) => {
            replace(&api, &pod).await?;
            ctx.group.forget_step_down(&format!("{object}/{pod}"));
            out.notes
                .push(format!("rolling update: restarting follower {pod}"));
        }
        RolloutStep::StepDownAndReplace(pod) => {
            let key = format!("{object}/{pod}");
            let (asked, first) = ctx.group.step_down_asked(&key, Instant::now());
            let member = pods.iter().find(|p| p.name == pod);
            if http_auth {
                // The operator holds no API token: the leader restarts without a handoff (a
                // failover of a few election timeouts; docs/OPERATIONS.md).
                replace(&api, &pod).await?;
                ctx.group.forget_step_down(&key);
                out.notes.push(format!(
                    "rolling update: restarting leader {pod} (httpAuth: no step-down)"
                ));
            } else if first {
                match member.and_then(pod_base) {
                    Some(base) => match ctx.group_admin.step_down(&base).await {
                        Ok(()) => tracing::info!(pod = %pod, "leader asked to step down"),
                        Err(e) => tracing::warn!(pod = %pod, error = %e, "step-down failed"),
                    },
                    None => tracing::warn!(pod = %pod, "leader has no IP: no step-down"),
                }
                out.notes
                    .push(format!("rolling update: leader {pod} asked to step down"));
            } else if asked.elapsed() >= STEP_DOWN_GRACE {
                replace(&api, &pod).await?;
                ctx.group.forget_step_down(&key);
                out.notes.push(format!(
                    "rolling update: restarting leader {pod} (still leading {}s after step-down)",
                    STEP_DOWN_GRACE.as_secs()
                ));
            } else {
                out.notes
                    .push(format!("rolling update: waiting for {pod} to hand over"));
            }
        }
    }
    out.view = view;
    Ok(out)
}

async fn replace(api: &Api<Pod>, pod: &str) -> Result<(), Error> {
    tracing::info!(pod = %pod, "hub group rolling update: deleting the pod");
    match api.delete(pod, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// The member count to build the StatefulSet with. A scale-down first removes the members with
/// the highest ids from every namespace's group (one per reconcile, through the leader behind the
/// client Service) and holds the StatefulSet at its running size until the leader's
/// `/status/peers` no longer lists them; then the StatefulSet shrinks. The note says what it
/// waits for. With `httpAuth` the operator holds no token: it waits for `unisondb cluster remove`.
pub async fn members_for_build(
    ctx: &Context,
    target: &Target,
    existing: Option<&StatefulSet>,
    desired: i32,
    namespaces: &[String],
    http_auth: bool,
) -> (i32, Option<String>) {
    let running = existing.map(read::replicas).unwrap_or(desired);
    let leaving = plan::leaving(running, desired);
    if leaving.is_empty() {
        return (desired, None);
    }
    let base = format!(
        "http://{}.{}.svc.{}:{HTTP_PORT}",
        names::client_service(&target.name),
        target.namespace,
        ctx.cluster_domain
    );
    let mut still: Vec<u64> = Vec::new();
    for ns in namespaces {
        match ctx.group_admin.member_ids(&base, ns).await {
            Ok(ids) => still.extend(ids.into_iter().filter(|id| leaving.contains(id))),
            Err(e) => {
                return (
                    running,
                    Some(format!(
                        "scale-down {running} -> {desired} waits: members unknown ({e})"
                    )),
                )
            }
        }
    }
    still.sort_unstable();
    still.dedup();
    let Some(&next) = still.last() else {
        tracing::info!(
            running,
            desired,
            "members removed: shrinking the StatefulSet"
        );
        return (desired, None);
    };
    if http_auth {
        return (
            running,
            Some(format!(
                "scale-down {running} -> {desired} waits for members {still:?} to be removed: \
                 run `unisondb cluster remove` (httpAuth: the operator holds no token)"
            )),
        );
    }
    let note = match ctx.group_admin.remove_member(&base, next).await {
        Ok(()) => format!("scale-down {running} -> {desired}: member {next} removed"),
        Err(e) => format!("scale-down {running} -> {desired}: removing member {next}: {e}"),
    };
    tracing::info!(%note, "hub group scale-down");
    (running, Some(note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn quorum_lost_after_the_delay_and_not_while_forming() {
        let m = Memory::default();
        let t0 = Instant::now();
        let mut v = GroupView {
            leaders: BTreeMap::from([
                ("a".to_string(), None),
                ("b".to_string(), Some("hub-0".into())),
            ]),
            term: Some(3),
            ..Default::default()
        };
        assert!(m.quorum_lost("ns/hub", &v, t0).is_empty());
        let later = t0 + QUORUM_LOST_AFTER + Duration::from_secs(1);
        let lost = m.quorum_lost("ns/hub", &v, later);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0, "a");
        // a leader again: forgotten, and the clock starts over next time
        v.leaders.insert("a".into(), Some("hub-1".into()));
        assert!(m.quorum_lost("ns/hub", &v, later).is_empty());
        v.leaders.insert("a".into(), None);
        assert!(m.quorum_lost("ns/hub", &v, later).is_empty());
        // still forming (no term yet): never reported
        let forming = GroupView {
            leaders: BTreeMap::from([("a".to_string(), None)]),
            ..Default::default()
        };
        m.quorum_lost("ns/new", &forming, t0);
        assert!(m.quorum_lost("ns/new", &forming, later).is_empty());
    }
}
