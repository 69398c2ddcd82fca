//! Reconcilers: shared context, the apply sequence both kinds use, events and backoff.

pub mod hub;
pub mod relayer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Service};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;

use crate::apply::{self, PdbSupport};
use crate::build::{self, names, NodeBuild};
use crate::metrics::SharedMetrics;
use crate::Error;

/// Requeue period in steady state (a safety net; watches drive normal operation).
pub const RESYNC: Duration = Duration::from_secs(300);
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    pub metrics: SharedMetrics,
    pub recorder: Recorder,
    pub cluster_domain: String,
    pub pdb: PdbSupport,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: SharedMetrics,
        cluster_domain: String,
        instance: String,
    ) -> Self {
        let reporter = Reporter {
            controller: "unisondb-operator".into(),
            instance: Some(instance),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            cluster_domain,
            pdb: PdbSupport::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Exponential per-object backoff: 2s, 4s, 8s, ... capped at 5 min.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock();
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_for(*n)
    }

    /// A successful reconcile resets the object's backoff.
    pub fn reset_backoff(&self, key: &str) {
        self.failures.lock().remove(key);
    }

    /// Best-effort event on the object; failures are only logged.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let reference: ObjectReference = obj.object_ref(&());
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::debug!(error = %e, "could not publish event");
        }
    }
}

/// Pure backoff schedule for the n-th consecutive failure (n >= 1).
pub fn backoff_for(n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_MAX)
}

pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Applies ConfigMap, Services, PDB, then the StatefulSet (last, so pods start with their config
/// and Services in place). Returns the applied StatefulSet and non-fatal notes.
pub async fn apply_all(
    ctx: &Context,
    b: &NodeBuild<'_>,
) -> Result<(StatefulSet, Vec<String>), Error> {
    let c = ctx.client.clone();
    let ns = b.namespace.as_str();
    let mut notes = Vec::new();

    let cm = build::configmap::build(b);
    apply::apply(
        &Api::<ConfigMap>::namespaced(c.clone(), ns),
        &names::configmap(&b.name),
        &cm,
    )
    .await?;

    let svcs: Api<Service> = Api::namespaced(c.clone(), ns);
    apply::apply(
        &svcs,
        &names::headless_service(&b.name),
        &build::service::headless(b),
    )
    .await?;
    apply::apply(
        &svcs,
        &names::client_service(&b.name),
        &build::service::client(b),
    )
    .await?;

    if b.replicas > 1 {
        match ctx.pdb.resource(&c).await {
            Some(ar) => {
                let version = ar.api_version.clone();
                if let Some(pdb) = build::pdb::build(b, &version) {
                    // A PDB is protection, not function: never fail the reconcile over it.
                    if let Err(e) =
                        apply::apply_dynamic(&c, &ar, ns, &names::pdb(&b.name), &pdb).await
                    {
                        tracing::warn!(error = %e, "PodDisruptionBudget apply failed");
                        notes.push(format!("PodDisruptionBudget not applied: {e}"));
                    }
                }
            }
            None => notes.push(
                "PodDisruptionBudget skipped: the API server serves no policy/v1 or policy/v1beta1"
                    .into(),
            ),
        }
    } else if let Some(ar) = ctx.pdb.resource(&c).await {
        if let Err(e) = apply::delete_dynamic(&c, &ar, ns, &names::pdb(&b.name)).await {
            tracing::warn!(error = %e, "PodDisruptionBudget delete failed");
        }
    }

    let sts = build::statefulset::build(b);
    let applied = apply::apply(
        &Api::<StatefulSet>::namespaced(c, ns),
        &names::statefulset(&b.name),
        &sts,
    )
    .await?;
    Ok((applied, notes))
}

/// Shared error policy: metrics, a warning event is emitted by the reconciler; backoff here.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = object_key(obj.as_ref());
    let kind = K::kind(&()).to_string();
    ctx.metrics.error(&kind, err.reason());
    let delay = ctx.next_backoff(&key);
    tracing::warn!(object = %key, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}
