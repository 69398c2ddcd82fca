//! `UnisonRelayer`: read-only replicas following an upstream hub, relayer or address.
// kube-derive repeats `type_ = ...` across printcolumn(...) groups; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::ResourceRequirements;
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
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    #[schemars(length(min = 1))]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pull_policy_schema")]
    pub image_pull_policy: Option<PullPolicy>,
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
    #[serde(default, skip_serializing_if = "ExtraConfig::is_empty")]
    pub extra_config: ExtraConfig,
}

fn default_replicas() -> i32 {
    1
}

impl UnisonRelayerSpec {
    pub fn view(&self) -> NodeSpecView<'_> {
        NodeSpecView {
            image: &self.image,
            image_pull_policy: self.image_pull_policy,
            image_pull_secrets: &self.image_pull_secrets,
            storage: &self.storage,
            resources: self.resources.as_ref(),
            wal: &self.wal,
            notifications: &self.notifications,
            tls: self.tls.as_ref(),
            http_auth: self.http_auth.as_ref(),
            service: &self.service,
            scheduling: &self.scheduling,
            extra_config: &self.extra_config,
        }
    }
}
