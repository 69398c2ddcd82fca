//! One reconcile for both kinds, in five stages:
//!
//! 1. [`dereference`](crate::dereference): every read from the API (the object's StatefulSet, the
//!    PDB API, the referenced hubs and relayers);
//! 2. [`validate`](crate::validate): pure, a [`Validated`](crate::validate::Validated) spec or a
//!    [`Rejected`](crate::validate::Rejected) one with its problem;
//! 3. [`build`](crate::build::build): pure, every owned object as one
//!    [`Resources`](crate::build::Resources);
//! 4. [`apply`](crate::apply::apply_all): server-side apply, StatefulSet last;
//! 5. status: computed purely ([`status::compute`]) and patched only when it changed.
//!
//! A rejected spec skips 3 and 4: a broken reference must not tear down what serves reads. What
//! differs between hubs and relayers sits behind [`NodeKind`].

mod context;

pub use context::{backoff_for, object_key, Context};

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::build::{self, names, selector_string, statefulset::read, Component};
use crate::kind::{NodeKind, Target};
use crate::metrics::KindLabel;
use crate::status::{self, Observed};
use crate::{apply, changes, connectivity, dereference, group, validate, volumes, Error};

/// Requeue period in steady state (a safety net; watches drive normal operation).
pub const RESYNC: Duration = Duration::from_secs(300);

/// Requeue period of nodes that follow an upstream: how often the `Connected` condition is
/// refreshed (no watch event tells the operator that a stream broke).
pub const CONNECTIVITY_RESYNC: Duration = Duration::from_secs(30);

/// Requeue period while volumes are being grown (`VolumesResized` is not True yet).
pub const RESIZE_RESYNC: Duration = Duration::from_secs(10);

/// The controller's reconcile function for either kind: times the run, resets the backoff on
/// success, and reports a failure as a warning event (the retry is [`error_policy`]'s).
pub async fn reconcile<K: NodeKind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let kind = K::kind(&());
    let started = Instant::now();
    let result = run(obj.as_ref(), &ctx).await;
    ctx.metrics.observe(&kind, started.elapsed());
    match &result {
        Ok(_) => ctx.reset_backoff(&object_key(obj.as_ref())),
        Err(e) => {
            ctx.event(obj.as_ref(), EventType::Warning, e.reason(), e.to_string())
                .await
        }
    }
    result
}

/// The five stages.
async fn run<K: NodeKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    let target = Target::of(obj)?;
    let deref = dereference::dereference(&ctx.client, &ctx.pdb, obj, &target).await?;
    let mut verdict = validate::validate(obj, &target, &deref, &ctx.cluster_domain);
    let http_auth = obj.node().http_auth.is_some();
    let mut group_notes = Vec::new();
    if let Ok(valid) = verdict.as_mut() {
        if K::COMPONENT == Component::Hub && valid.replicas > 1 {
            // A scale-down holds the StatefulSet until the leaving members left the Raft groups.
            let (members, note) = group::members_for_build(
                ctx,
                &target,
                deref.existing.as_ref(),
                valid.replicas,
                &obj.owned_namespaces(),
                http_auth,
            )
            .await;
            valid.replicas = members;
            group_notes.extend(note);
        }
    }

    let mut observed = Observed {
        generation: obj.meta().generation,
        desired_replicas: obj.replicas(),
        selector: selector_string(&target.name, K::COMPONENT),
        grpc_endpoint: Some(if K::COMPONENT == Component::Hub && obj.replicas() > 1 {
            names::group_grpc_endpoint(
                &target.name,
                &target.namespace,
                &ctx.cluster_domain,
                obj.node().tls.is_some(),
            )
        } else {
            names::grpc_endpoint(
                &target.name,
                &target.namespace,
                &ctx.cluster_domain,
                obj.node().tls.is_some(),
            )
        }),
        ..Default::default()
    };
    let mut changed = Vec::new();
    let stateful_set = match &verdict {
        Ok(valid) => {
            let resources = build::build(valid, deref.pdb_api.as_ref(), &ctx.node_image)?;
            let applied = match apply::apply_all(
                &ctx.client,
                &target.namespace,
                &resources,
                deref.existing.as_ref(),
            )
            .await
            {
                Ok(a) => a,
                Err(e) => {
                    // A refused apply (webhook, quota, RBAC, validation) is a condition too, not
                    // only an event: `kubectl get` shows why the spec is not running.
                    observed.position = valid.position.clone();
                    observed.problem = Some(apply_problem(&e));
                    observed.statefulset = deref.existing.as_ref();
                    update_status(obj, &target, &observed, ctx, false).await?;
                    return Err(e);
                }
            };
            changed = changes::changes(deref.existing.as_ref(), &applied.stateful_set);
            observed.certificate = Some(match &resources.certificate {
                Some(cert) => cert["metadata"]["name"].as_str().map(String::from),
                None => forget_certificate(obj, &target, ctx).await,
            });
            observed.position = valid.position.clone();
            observed.config_hash = Some(resources.config_hash);
            observed.notes = applied.notes;
            observed.volumes = applied.volumes;
            Some(applied.stateful_set)
        }
        Err(rejected) => {
            observed.position = rejected.position.clone();
            observed.problem = Some(rejected.problem.clone());
            // Apply what is still valid to the running StatefulSet (image, resources, pods), keep
            // what the problem touches (config, storage) as it runs.
            let fallback = deref
                .existing
                .as_ref()
                .and_then(|existing| build::fallback_statefulset(obj, existing, &ctx.node_image));
            match fallback {
                Some(sts) => {
                    let applied = apply::apply(
                        &kube::Api::namespaced(ctx.client.clone(), &target.namespace),
                        &names::statefulset(&target.name),
                        &sts,
                    )
                    .await?;
                    changed = changes::changes(deref.existing.as_ref(), &applied);
                    Some(applied)
                }
                None => deref.existing,
            }
        }
    };
    observed.statefulset = stateful_set.as_ref();
    observed.follows = obj.follows();
    observed.role = K::COMPONENT.as_str();
    if stateful_set.is_some() {
        observed.connectivity = Some(
            ctx.probe
                .observe(&target.namespace, &observed.selector)
                .await,
        );
    }
    // A group is what runs, not what the spec asks (a refused spec keeps the running group).
    let is_group = K::COMPONENT == Component::Hub
        && stateful_set.as_ref().is_some_and(|s| read::replicas(s) > 1);
    if let (true, Some(sts), Some(report)) = (
        is_group,
        stateful_set.as_ref(),
        observed.connectivity.as_ref(),
    ) {
        match group::after_apply(
            ctx,
            &target,
            &observed.selector,
            sts,
            report,
            &obj.owned_namespaces(),
            http_auth,
        )
        .await
        {
            Ok(g) => {
                group_notes.extend(g.notes.iter().cloned());
                observed.group = Some(g);
            }
            Err(e) => {
                tracing::warn!(error = %e, "hub group step failed");
                group_notes.push(format!("hub group: {e}"));
            }
        }
    }
    observed.notes.extend(group_notes);

    update_status(obj, &target, &observed, ctx, true).await?;
    for c in changed {
        ctx.event(obj, EventType::Normal, c.reason, c.message).await;
    }
    if let Some(g) = &observed.group {
        group_events(obj, g, ctx).await;
    }
    // Volumes being grown report progress only when looked at again (PVCs are not watched).
    let resizing = observed
        .volumes
        .as_ref()
        .is_some_and(|v| volumes::verdict(v).0 != "True");
    Ok(Action::requeue(if is_group {
        group::GROUP_RESYNC
    } else if resizing {
        RESIZE_RESYNC
    } else if obj.follows() {
        CONNECTIVITY_RESYNC
    } else {
        RESYNC
    }))
}

/// Hub groups: a new leader pod, and a namespace newly without a leader, are reported as events.
async fn group_events<K: NodeKind>(obj: &K, g: &group::GroupReport, ctx: &Context) {
    let prev = obj.node_status();
    let before = prev.and_then(|s| s.leader.clone());
    let now = g.view.as_ref().and_then(|v| v.leader_pod.clone());
    if let Some(leader) = now.as_ref().filter(|n| Some(*n) != before.as_ref()) {
        let term = g.view.as_ref().and_then(|v| v.term).unwrap_or(0);
        let note = match &before {
            Some(b) => format!("leader pod {b} -> {leader} (term {term})"),
            None => format!("leader pod {leader} (term {term})"),
        };
        ctx.event(obj, EventType::Normal, "LeaderChanged", note)
            .await;
    }
    let was_lost = prev.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == group::QUORUM_LOST && c.status == "True")
    });
    if !g.quorum_lost.is_empty() && !was_lost {
        let what: Vec<String> = g
            .quorum_lost
            .iter()
            .map(|(ns, d)| format!("{ns} ({}s)", d.as_secs()))
            .collect();
        ctx.event(
            obj,
            EventType::Warning,
            group::QUORUM_LOST,
            format!("no leader for {}", what.join(", ")),
        )
        .await;
    }
}

/// The Degraded reason and message for an apply the API server refused.
fn apply_problem(e: &Error) -> status::Problem {
    let reason = match e {
        Error::Kube(kube::Error::Api(a)) if a.code == 403 => "ApplyForbidden",
        Error::Kube(kube::Error::Api(a)) if a.code == 422 || a.code == 400 => "ApplyRejected",
        Error::Kube(kube::Error::Api(a)) if a.code == 409 => "ApplyConflict",
        _ => "ApplyFailed",
    };
    status::Problem {
        reason: reason.to_string(),
        message: e.to_string(),
    }
}

/// Patches the status when it changed; a change while blocked is also reported as an event
/// (unless `announce` is false: the caller reports the problem itself).
/// Deletes the Certificate a previous reconcile made (status `certificate`) once the spec no
/// longer asks cert-manager for one; only if this object owns it. Returns what is left: `None`
/// when gone, the name when the delete failed (tried again next reconcile).
async fn forget_certificate<K: NodeKind>(
    obj: &K,
    target: &Target,
    ctx: &Context,
) -> Option<String> {
    let name = obj.node_status()?.certificate.clone()?;
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let ar = build::certificate::api_resource();
    match apply::delete_owned_dynamic(&ctx.client, &ar, &target.namespace, &name, &uid).await {
        Ok(()) => {
            tracing::info!(certificate = %name, "spec.tls.certManager removed: Certificate deleted");
            None
        }
        Err(e) => {
            tracing::warn!(certificate = %name, error = %e, "could not delete the old Certificate");
            Some(name)
        }
    }
}

async fn update_status<K: NodeKind>(
    obj: &K,
    target: &Target,
    observed: &Observed<'_>,
    ctx: &Context,
    announce: bool,
) -> Result<(), Error> {
    let new = status::compute(obj.node_status(), observed, &status::now());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &target.namespace);
    if status::patch_if_changed(&api, &target.name, obj.node_status(), &new).await? {
        ctx.metrics
            .status_writes
            .get_or_create(&KindLabel {
                kind: K::kind(&()).into(),
            })
            .inc();
        if let Some(p) = observed.problem.as_ref().filter(|_| announce) {
            ctx.event(obj, EventType::Warning, &p.reason, p.message.clone())
                .await;
        }
        let before = obj
            .node_status()
            .and_then(|s| s.replication_divergences)
            .unwrap_or(0);
        if new.replication_divergences.unwrap_or(0) > before {
            if let Some((n, pods)) = observed
                .connectivity
                .as_ref()
                .and_then(connectivity::divergences)
            {
                let note = format!(
                    "{n} history divergence(s) repaired since the pods started: {}",
                    pods.join(", ")
                );
                ctx.event(obj, EventType::Warning, "HistoryDiverged", note)
                    .await;
            }
        }
    }
    Ok(())
}

/// Shared error policy: counts the error and requeues with per-object exponential backoff (the
/// warning event is emitted by [`reconcile`]).
pub fn error_policy<K: NodeKind>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(obj.as_ref());
    let kind = K::kind(&()).to_string();
    ctx.metrics.error(&kind, err.reason());
    let delay = ctx.next_backoff(&key);
    tracing::warn!(object = %key, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}
