//! `UnisonRelayer`: read-only replicas following an upstream hub, relayer or address.
// kube-derive repeats `type_ = ...` across printcolumn(...) groups; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::backup::ObjectStoreSpec;
use super::common::*;
use schemars::JsonSchema;

/// Where a relayer replicates from: at most one of hubRef, relayerRef or address (gRPC), and/or
/// objectStore (the WAL archived in a bucket, followed first or alone).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.hubRef) ? 1 : 0) + (has(self.relayerRef) ? 1 : 0) + (has(self.address) ? 1 : 0) + (has(self.objectStore) ? 0 : 1) == 1 || ((has(self.hubRef) ? 1 : 0) + (has(self.relayerRef) ? 1 : 0) + (has(self.address) ? 1 : 0) == 1 && has(self.objectStore))").message("set one of hubRef, relayerRef or address, and/or objectStore"))]
pub struct UpstreamSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_ref: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relayer_ref: Option<ObjectRef>,
    /// Raw gRPC address, e.g. `http://hub.example:4001`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Follow the WAL a hub archives in an object store (bootstrap from its latest base backup),
    /// alone or before switching to the gRPC upstream above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<UpstreamObjectStoreSpec>,
}

/// A bucket a relayer follows, and how often it lists it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamObjectStoreSpec {
    /// The bucket (usually the hub's `backup.objectStore`).
    #[serde(flatten)]
    pub store: ObjectStoreSpec,
    /// How often to list the store for new WAL objects, in milliseconds (default: the node's, 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub poll_interval_ms: Option<u64>,
}

/// Desired state of a UnisonRelayer.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "unisondb.io",
    version = "v1alpha1",
    kind = "UnisonRelayer",
    namespaced,
    status = "NodeStatus",
    shortname = "urel",
    category = "unisondb",
    doc = "Read-only UnisonDB replicas following an upstream hub or relayer",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(name = "Upstream", type_ = "string", json_path = ".status.upstream"),
    printcolumn(name = "Depth", type_ = "integer", json_path = ".status.depth"),
    printcolumn(
        name = "Lag-Seconds",
        type_ = "integer",
        json_path = ".status.maxLagSeconds",
        priority = 1
    ),
    printcolumn(
        name = "Lag-Records",
        type_ = "integer",
        json_path = ".status.maxLagRecords",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct UnisonRelayerSpec {
    pub upstream: UpstreamSpec,
    /// Namespaces to replicate; a subset of the upstream's. Empty = all of the upstream's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Read replicas (pods); `kubectl scale` changes it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Image, storage, WAL, TLS, Service and scheduling settings (shared with hubs).
    #[serde(flatten)]
    pub node: NodeSpec,
}

fn default_replicas() -> i32 {
    1
}
