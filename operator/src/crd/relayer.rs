//! `UnisonRelayer`: read-only replicas following an upstream hub, relayer or address.
// kube-derive repeats `type_ = ...` across printcolumn(...) groups; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;

/// Where a relayer replicates from: exactly one of the three.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.hubRef) ? 1 : 0) + (has(self.relayerRef) ? 1 : 0) + (has(self.address) ? 1 : 0) == 1").message("exactly one of hubRef, relayerRef or address must be set"))]
pub struct UpstreamSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_ref: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relayer_ref: Option<ObjectRef>,
    /// Raw gRPC address, e.g. `http://hub.example:4001`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
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
