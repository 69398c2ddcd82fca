//! `UnisonHub`: a writable UnisonDB server (StatefulSet of one pod).
// kube-derive repeats `type_ = ...` across printcolumn(...) groups; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;

/// A namespace owned by another hub and mirrored read-only here (multi-hub).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.hubRef) != has(self.address)").message("exactly one of hubRef or address must be set"))]
pub struct MirrorSpec {
    /// Namespace to mirror.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// The hub that owns the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_ref: Option<ObjectRef>,
    /// Raw gRPC address of the owning node, e.g. `http://hub-b.other:4001`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "unisondb.io",
    version = "v1alpha1",
    kind = "UnisonHub",
    namespaced,
    status = "NodeStatus",
    shortname = "uhub",
    category = "unisondb",
    doc = "A writable UnisonDB server owning a set of namespaces",
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
pub struct UnisonHubSpec {
    /// Node image, e.g. `ghcr.io/unisondb/unisondb:0.1.0`.
    #[schemars(length(min = 1))]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pull_policy_schema")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Names of image pull Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,
    /// Namespaces this hub owns (writes).
    #[serde(default = "default_namespaces")]
    #[schemars(length(min = 1))]
    pub namespaces: Vec<String>,
    /// Namespaces owned by other hubs that this hub mirrors read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorSpec>,
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
    /// Extra node config, `section -> key -> value` (see docs/CONFIG.md).
    #[serde(default, skip_serializing_if = "ExtraConfig::is_empty")]
    pub extra_config: ExtraConfig,
}

pub(crate) fn default_namespaces() -> Vec<String> {
    vec!["default".to_string()]
}

impl UnisonHubSpec {
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

    /// Every namespace this hub serves: owned, then mirrored.
    pub fn served_namespaces(&self) -> Vec<String> {
        let mut all = self.namespaces.clone();
        for m in &self.mirrors {
            if !all.contains(&m.namespace) {
                all.push(m.namespace.clone());
            }
        }
        all
    }
}
