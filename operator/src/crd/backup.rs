//! Backups: where a hub archives its WAL and base backups (`spec.backup`), where a new hub restores
//! from (`spec.bootstrap.recovery`), and the `UnisonBackup` / `UnisonScheduledBackup` kinds.
// kube-derive repeats `type_ = ...` across printcolumn(...) groups; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, ObjectRef};

/// A key of a Secret in the object's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key inside the Secret.
    #[serde(default = "default_credentials_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

fn default_credentials_key() -> String {
    "credentials".to_string()
}

/// A CA bundle in a Secret of the object's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key inside the Secret (a PEM bundle).
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".to_string()
}

/// An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreSpec {
    /// `http(s)://host[:port]` of an S3-compatible server; omit for AWS S3 in `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Bucket name.
    #[schemars(length(min = 1))]
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Region of the bucket.
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted servers need.
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// Secret holding an AWS shared-credentials file (profile `default`), mounted read-only.
    pub credentials_secret: SecretKeyRef,
    /// Secret holding a PEM CA bundle to trust for an `https` endpoint (default: system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<CaSecretRef>,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

fn default_true() -> bool {
    true
}

/// Continuous WAL archiving into the store.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalArchivingSpec {
    /// Archive the WAL into the store; `false` pauses WAL archiving while base backups
    /// (UnisonBackup) still go to the bucket.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Upper bound, in seconds, on how long an acknowledged record waits before it is in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_delay_seconds: Option<u64>,
}

impl Default for WalArchivingSpec {
    fn default() -> Self {
        WalArchivingSpec {
            enabled: true,
            max_delay_seconds: None,
        }
    }
}

/// What the store keeps.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Base backups kept per namespace (older ones, and WAL only they need, are deleted by the
    /// node); 0 keeps all. Default: the node's (7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub base_backups: Option<u32>,
}

/// `UnisonHub.spec.backup`: archive the WAL and base backups into an object store.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The bucket the WAL and base backups go to.
    pub object_store: ObjectStoreSpec,
    /// Continuous WAL archiving.
    #[serde(default)]
    pub wal_archiving: WalArchivingSpec,
    /// Retention in the store.
    #[serde(default)]
    pub retention: RetentionSpec,
}

/// `UnisonHub.spec.bootstrap`: how a new hub's data starts.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Restore every owned namespace from an object store before the node starts (only into an
    /// empty data directory: a pod restart never restores again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySpec>,
}

/// A restore from base backups and archived WAL, optionally to a point in time.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.targetLsn) && has(self.targetTime))").message("at most one of targetLsn or targetTime may be set"))]
pub struct RecoverySpec {
    /// The bucket holding the backups (usually another hub's `backup.objectStore`).
    pub object_store: ObjectStoreSpec,
    /// Base backup to start from (`status.backups[].id` of a UnisonBackup); default: the latest
    /// one that can reach the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub backup_id: Option<String>,
    /// Replay the archived WAL up to this LSN (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub target_lsn: Option<u64>,
    /// Replay the archived WAL up to this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub target_time: Option<String>,
}

/// Backup lifecycle phase.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    #[default]
    Pending,
    Running,
    Completed,
    Failed,
}

impl BackupPhase {
    /// Completed and Failed backups are never taken again.
    pub fn is_final(self) -> bool {
        matches!(self, BackupPhase::Completed | BackupPhase::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BackupPhase::Pending => "Pending",
            BackupPhase::Running => "Running",
            BackupPhase::Completed => "Completed",
            BackupPhase::Failed => "Failed",
        }
    }
}

/// Desired state of a UnisonBackup: one base backup of a hub's namespaces into its store.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "unisondb.io",
    version = "v1alpha1",
    kind = "UnisonBackup",
    namespaced,
    status = "UnisonBackupStatus",
    shortname = "ubak",
    category = "unisondb",
    doc = "One base backup of a UnisonHub's namespaces into the hub's object store",
    printcolumn(name = "Hub", type_ = "string", json_path = ".spec.hubRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.totalBytes"),
    printcolumn(
        name = "Last-LSN",
        type_ = "integer",
        json_path = ".status.backups[0].lastLsn",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct UnisonBackupSpec {
    /// The hub to back up (its `spec.backup` says where to).
    pub hub_ref: ObjectRef,
    /// Namespaces to back up; default: every namespace the hub owns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// One namespace's backup, as the hub reported it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceBackup {
    /// Namespace backed up.
    pub namespace: String,
    /// Backup id (`bootstrap.recovery.backupId`).
    pub id: String,
    /// Where it is, `s3://bucket/prefix/namespace/base/id/`.
    pub location: String,
    /// LSN of the B+Tree snapshot.
    pub snapshot_lsn: u64,
    /// Last LSN the backup holds.
    pub last_lsn: u64,
    /// Snapshot plus WAL bytes.
    pub size_bytes: u64,
}

/// Observed state of a UnisonBackup.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct UnisonBackupStatus {
    /// `Pending`, `Running`, `Completed` or `Failed`; Completed and Failed are final.
    pub phase: BackupPhase,
    /// When the first namespace backup was asked for (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub started_at: Option<String>,
    /// When the phase became Completed or Failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub completed_at: Option<String>,
    /// Namespaces to back up (resolved from the spec and the hub).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// One entry per namespace backed up, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<NamespaceBackup>,
    /// Sum of `backups[].sizeBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// `Completed` and `Failed` conditions (for `kubectl wait`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Why the backup waits or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Job backing up the current namespace, for hubs the operator cannot call itself
    /// (`httpAuth` or `tls.http`): `kubectl describe job <job>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// Desired state of a UnisonScheduledBackup: UnisonBackups of a hub on a cron schedule.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "unisondb.io",
    version = "v1alpha1",
    kind = "UnisonScheduledBackup",
    namespaced,
    status = "UnisonScheduledBackupStatus",
    shortname = "usbak",
    category = "unisondb",
    doc = "UnisonBackups of a UnisonHub taken on a cron schedule",
    printcolumn(name = "Hub", type_ = "string", json_path = ".spec.hubRef.name"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastScheduleTime"),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextScheduleTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct UnisonScheduledBackupSpec {
    /// Cron schedule in UTC, 5 fields (`minute hour day month weekday`) or 6 with seconds first.
    #[schemars(length(min = 1))]
    pub schedule: String,
    /// The hub to back up.
    pub hub_ref: ObjectRef,
    /// Namespaces to back up; default: every namespace the hub owns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Take no new backups while true.
    #[serde(default)]
    pub suspend: bool,
    /// Completed UnisonBackups kept (older ones are deleted; their data stays in the store,
    /// whose retention is the hub's `backup.retention`).
    #[serde(default = "default_history")]
    #[schemars(range(min = 1))]
    pub successful_backups_history_limit: u32,
}

fn default_history() -> u32 {
    3
}

/// Observed state of a UnisonScheduledBackup.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct UnisonScheduledBackupStatus {
    /// The scheduled time of the last UnisonBackup created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_schedule_time: Option<String>,
    /// The next scheduled time (RFC 3339); absent while suspended or invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub next_schedule_time: Option<String>,
    /// Name of the last UnisonBackup created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// `Degraded` (an invalid schedule) condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
