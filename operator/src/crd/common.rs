//! Spec and status types shared by `UnisonHub` and `UnisonRelayer`.
//!
//! Both kinds run the same node binary, so storage, resources, scheduling, TLS and WAL settings are
//! one set of types; only the topology fields differ.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Reference to another UnisonDB custom resource, by name (and optionally namespace).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Name of the referenced resource.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Namespace of the referenced resource; defaults to this resource's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Container image pull policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Schema for `Option<PullPolicy>`: a plain string enum. The derived one lists `null` among the
/// enum values, which older API servers and kubectl reject.
pub fn pull_policy_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["Always", "IfNotPresent", "Never"],
        "description": "Container image pull policy."
    })
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Persistent storage for `/var/lib/unisondb` (one PVC per pod).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size of each pod's data volume, e.g. `10Gi`. May grow after creation (the PVCs are
    /// expanded in place when the StorageClass allows it), never shrink.
    #[serde(default = "default_storage_size")]
    #[schemars(length(min = 1))]
    pub size: String,
    /// StorageClass of the data volumes. Immutable: volume claim templates cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storageClassName is immutable"))]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> String {
    "10Gi".to_string()
}

/// WAL fsync policy (`wal.fsync` in the node config).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    #[default]
    Always,
    Interval,
    Never,
}

impl FsyncPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Interval => "interval",
            FsyncPolicy::Never => "never",
        }
    }
}

/// Write-ahead-log settings; unset fields keep the node's defaults.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalSpec {
    /// `always` (fsync before ack), `interval`, or `never`.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Fsync period when `fsync: interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub fsync_interval_ms: Option<u64>,
    /// Size at which a WAL segment is rolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub segment_size_bytes: Option<u64>,
    /// Flushed segments are kept up to this total size ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub retention_max_bytes: Option<u64>,
    /// ... and this age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub retention_max_age_secs: Option<u64>,
}

/// ZeroMQ change notifications.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationsSpec {
    /// Publish change notifications on ZeroMQ (PUB socket on `port`).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// ZeroMQ PUB port.
    #[serde(default = "default_zmq_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for NotificationsSpec {
    fn default() -> Self {
        NotificationsSpec {
            enabled: true,
            port: default_zmq_port(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_zmq_port() -> i32 {
    4002
}

/// Certificates for gRPC mTLS (server side, and client side towards the upstream): either a Secret
/// you manage (`secretName`) or one cert-manager issues and renews (`certManager`). Exactly one.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.certManager)").message("exactly one of tls.secretName or tls.certManager must be set"))]
pub struct TlsSpec {
    /// Secret in the object's namespace holding `tls.crt`, `tls.key` and `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub secret_name: Option<String>,
    /// Have cert-manager issue the certificate: the operator creates a `cert-manager.io/v1`
    /// Certificate named after this object, whose Secret (`<name>-tls`) the pods mount. Needs
    /// cert-manager's CRDs in the cluster (else `Degraded`, reason `CertManagerMissing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerSpec>,
    /// Also serve the HTTP API (port 4000) over TLS with the same certificate. Off by default so
    /// existing HTTP clients keep working; probes, the Prometheus scrape annotations
    /// (`prometheus.io/scheme: https`) and the operator's pod reads follow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http: bool,
}

impl TlsSpec {
    /// The Secret the pods mount: `secretName`, or the one cert-manager fills (`<instance>-tls`).
    /// `None` when the spec sets neither or both (validation refuses it).
    pub fn secret_for(&self, instance: &str) -> Option<String> {
        match (&self.secret_name, &self.cert_manager) {
            (Some(s), None) => Some(s.clone()),
            (None, Some(_)) => Some(crate::build::names::tls_secret(instance)),
            _ => None,
        }
    }
}

/// A cert-manager Certificate request: the issuer, and optionally the lifetime.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerSpec {
    /// The Issuer (this namespace) or ClusterIssuer that signs the certificate. With a CA issuer,
    /// cert-manager also writes the CA as `ca.crt`, which the nodes use to verify their peers.
    pub issuer_ref: IssuerRef,
    /// Requested lifetime, a Go duration such as `2160h` (cert-manager's default: 90 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub duration: Option<String>,
    /// How long before expiry cert-manager renews, e.g. `360h` (default: a third of the lifetime).
    /// Nodes pick up the renewed Secret without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub renew_before: Option<String>,
}

/// Reference to a cert-manager issuer.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the issuer.
    #[schemars(length(min = 1))]
    pub name: String,
    /// `Issuer` (namespaced, in this object's namespace) or `ClusterIssuer`.
    #[serde(default)]
    pub kind: IssuerKind,
    /// API group of the issuer; defaults to `cert-manager.io` (set it for external issuers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub group: Option<String>,
}

/// Kind of a cert-manager issuer.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}

impl IssuerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Issuer => "Issuer",
            IssuerKind::ClusterIssuer => "ClusterIssuer",
        }
    }
}

/// Secret holding the bearer token that guards the HTTP API.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpAuthSpec {
    /// Secret in the object's namespace.
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// Key inside the Secret.
    #[serde(default = "default_token_key")]
    pub key: String,
}

fn default_token_key() -> String {
    "token".to_string()
}

/// Type of the client Service.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The client Service.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations on the client Service (e.g. for a cloud load balancer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Pod placement.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels the pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Pod tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Replaces the default (preferred pod anti-affinity across hosts) when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Replaces the default (spread replicas across zones when possible) when set; `[]` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// PriorityClass of the pods (e.g. keep the hub above batch work under node pressure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Pod settings beyond placement.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// Extra labels on the pods (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the pods (the operator's config hash and scrape hints win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Time a pod gets to drain and flush on shutdown before it is killed.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 1, max = 3600))]
    pub termination_grace_period_seconds: i64,
    /// How long recovery (WAL replay) may take at start before liveness checks begin.
    #[serde(default = "default_startup")]
    #[schemars(range(min = 10, max = 86400))]
    pub startup_timeout_seconds: i32,
}

impl Default for PodSettings {
    fn default() -> Self {
        PodSettings {
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            termination_grace_period_seconds: default_grace(),
            startup_timeout_seconds: default_startup(),
        }
    }
}

fn default_grace() -> i64 {
    30
}

fn default_startup() -> i32 {
    1800
}

/// Extra node-config keys, `section -> key -> value`, merged into the rendered config file. Only keys
/// documented in docs/CONFIG.md are accepted, and keys the operator manages cannot be overridden.
pub type ExtraConfig = BTreeMap<String, BTreeMap<String, serde_json::Value>>;

/// The node settings both kinds share (both run the same binary). Embedded in each spec with
/// `#[serde(flatten)]`, so users still write these keys directly under `spec:`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// Node image, e.g. `ghcr.io/unisondb/unisondb:0.1.0`. Defaults to the node image of the
    /// operator's own version (its `--node-image`), so upgrading the operator rolls the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pull_policy_schema")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Names of image pull Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,
    #[serde(default)]
    pub storage: StorageSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub wal: WalSpec,
    #[serde(default)]
    pub notifications: NotificationsSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_auth: Option<HttpAuthSpec>,
    #[serde(default)]
    pub service: ServiceSpec,
    #[serde(default)]
    pub scheduling: SchedulingSpec,
    /// Pod labels, annotations, termination grace period and startup timeout.
    #[serde(default)]
    pub pod: PodSettings,
    /// Extra node config, `section -> key -> value` (see docs/CONFIG.md).
    #[serde(default, skip_serializing_if = "ExtraConfig::is_empty")]
    pub extra_config: ExtraConfig,
}

/// One condition, in the shape `kubectl wait --for=condition=X` understands.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// Machine-readable reason (CamelCase).
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The object's generation when the condition was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Status of a hub or relayer.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeStatus {
    /// The object's `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods the StatefulSet runs.
    pub replicas: i32,
    /// Pods ready.
    pub ready_replicas: i32,
    /// Label selector of the pods (string form), for the scale subresource and HPAs.
    pub selector: String,
    /// Standard conditions (`Ready`, `Progressing`, `Degraded`; `Connected` and `VolumesResized` where
    /// they apply), one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// gRPC endpoint downstream relayers replicate from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_endpoint: Option<String>,
    /// Hops from the hub: 0 for a hub, 1 for a relayer of a hub, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<i32>,
    /// The resolved upstream endpoint (relayers) this node follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The resolved upstream resource, `Kind/namespace/name`, or `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ref: Option<String>,
    /// Hash of the rendered node config currently applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// The cert-manager Certificate the operator made for `spec.tls.certManager`, remembered so
    /// switching to `secretName` (or dropping TLS) deletes it instead of leaving it renewing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// History divergences the running pods repaired since they started (WAL truncated or
    /// re-bootstrapped after their upstream's history changed); reasons are in each pod's
    /// `/api/v1/{ns}/stats`. Counters restart with the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_divergences: Option<u64>,
    /// Each running pod as it reported itself (refreshed every 30 s for nodes that follow an
    /// upstream): what `kubectl get -o yaml` shows without Prometheus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodState>,
    /// Largest replication lag of any pod and namespace, in whole seconds (`-o wide`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_seconds: Option<i64>,
    /// Largest replication lag of any pod and namespace, in records (`-o wide`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_records: Option<i64>,
    /// Hub groups: the leader pod, the one leading the most namespaces (ties: the lowest ordinal).
    /// Each namespace has its own Raft group, so leaders may differ per namespace (`pods[].namespaces[].leader`);
    /// the client Service routes to this pod, and followers proxy writes for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Hub groups: the pods that report Raft state, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Hub groups: the highest Raft term any member reports (over all namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<i64>,
}

/// One pod's state, from its `/metrics`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    /// Pod name.
    pub name: String,
    /// `hub` (owns its namespaces) or `relayer` (follows an upstream).
    pub role: String,
    /// Why the pod could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Per namespace: position and, where followed, replication state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<NamespaceState>,
}

/// One namespace on one pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceState {
    /// Namespace name.
    pub name: String,
    /// Last visible LSN.
    pub lsn: i64,
    /// The WAL stream to the upstream is open (followed namespaces only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// Records behind the upstream (followed namespaces only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_records: Option<i64>,
    /// Seconds behind the upstream, rounded up (followed namespaces only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
    /// Hub groups: this pod leads the namespace's Raft group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<bool>,
    /// Hub groups: the namespace's Raft term as this pod knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<i64>,
}
