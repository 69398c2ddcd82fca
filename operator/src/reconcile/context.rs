//! What every reconcile shares: the client, metrics, the event recorder, settings, and the
//! per-object failure counts behind the retry backoff.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;

use std::sync::Arc;

use crate::apply::PdbSupport;
use crate::backup::trigger::{BackupTrigger, HttpBackupTrigger};
use crate::connectivity::{PodMetricsProbe, ReplicationProbe};
use crate::group::admin::{GroupAdmin, HttpGroupAdmin};
use crate::group::Memory;
use crate::metrics::SharedMetrics;

const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Shared by every reconcile of both kinds.
pub struct Context {
    pub client: Client,
    pub metrics: SharedMetrics,
    pub recorder: Recorder,
    pub cluster_domain: String,
    pub pdb: PdbSupport,
    /// Image of nodes whose spec sets none.
    pub node_image: String,
    /// Reads whether following pods are connected upstream (the `Connected` condition).
    pub probe: Arc<dyn ReplicationProbe>,
    /// Asks hubs for base backups (UnisonBackup).
    pub backups: Arc<dyn BackupTrigger>,
    /// Asks hub group members to step down or drop members.
    pub group_admin: Arc<dyn GroupAdmin>,
    /// Hub groups: leaderless time and step-down requests between reconciles.
    pub group: Memory,
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
            probe: Arc::new(PodMetricsProbe::new(client.clone())),
            backups: Arc::new(HttpBackupTrigger::new()),
            group_admin: Arc::new(HttpGroupAdmin::new()),
            group: Memory::default(),
            client,
            metrics,
            cluster_domain,
            pdb: PdbSupport::default(),
            node_image: crate::build::DEFAULT_NODE_IMAGE.to_string(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces PodDisruptionBudget API discovery (e.g. with [`PdbSupport::known`] in tests).
    pub fn with_pdb(mut self, pdb: PdbSupport) -> Self {
        self.pdb = pdb;
        self
    }

    /// Sets the image of nodes whose spec sets none.
    pub fn with_node_image(mut self, image: String) -> Self {
        self.node_image = image;
        self
    }

    /// Replaces the pod metrics probe (tests script what the pods report).
    pub fn with_probe(mut self, probe: Arc<dyn ReplicationProbe>) -> Self {
        self.probe = probe;
        self
    }

    /// Replaces the backup trigger (tests answer for the hub).
    pub fn with_backup_trigger(mut self, trigger: Arc<dyn BackupTrigger>) -> Self {
        self.backups = trigger;
        self
    }

    /// Replaces the hub group admin (tests answer for the members).
    pub fn with_group_admin(mut self, admin: Arc<dyn GroupAdmin>) -> Self {
        self.group_admin = admin;
        self
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
