//! `UnisonHub`: a writable UnisonDB server: a StatefulSet of one pod, or a Raft group of 3 or 5
//! (`spec.replicas`, docs/OPERATOR.md "Hub groups").
// kube-derive repeats `type_ = ...` across printcolumn(...) groups; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::backup::{BackupSpec, BootstrapSpec};
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

/// Desired state of a UnisonHub.
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
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
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
pub struct UnisonHubSpec {
    /// Namespaces this hub owns (writes).
    #[serde(default = "default_namespaces")]
    #[schemars(length(min = 1))]
    pub namespaces: Vec<String>,
    /// Members: 1 (a single pod, no Raft), or 3 or 5 (a Raft group per namespace that commits each
    /// write on a quorum and elects a new leader by itself). 1 <-> 3/5 cannot change once running.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: i32,
    /// Namespaces owned by other hubs that this hub mirrors read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorSpec>,
    /// Archive the WAL and base backups into an object store (UnisonBackups need it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// How a new hub's data starts (e.g. restored from an object store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSpec>,
    /// Image, storage, WAL, TLS, Service and scheduling settings (shared with relayers).
    #[serde(flatten)]
    pub node: NodeSpec,
}

fn default_replicas() -> i32 {
    1
}

pub(crate) fn default_namespaces() -> Vec<String> {
    vec!["default".to_string()]
}

impl UnisonHubSpec {
    /// A Raft group (more than one member) rather than a single hub.
    pub fn is_group(&self) -> bool {
        self.replicas > 1
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
