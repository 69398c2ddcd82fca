//! Pure builders of the Kubernetes objects a hub or relayer owns. No I/O: each takes a
//! [`NodeBuild`] and returns an object ready for server-side apply.

pub mod configmap;
pub mod pdb;
pub mod service;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::{NodeSpecView, UnisonHub, UnisonRelayer};
use crate::nodeconfig::{Mode, RenderedConfig};

pub const FIELD_MANAGER: &str = "unisondb-operator";
pub const CONFIG_HASH_ANNOTATION: &str = "unisondb.io/config-hash";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Which kind of node an object belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Hub,
    Relayer,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Hub => "hub",
            Component::Relayer => "relayer",
        }
    }
    pub fn mode(self) -> Mode {
        match self {
            Component::Hub => Mode::Replicator,
            Component::Relayer => Mode::Relayer,
        }
    }
}

/// Everything the builders need, extracted once from the custom resource.
#[derive(Clone, Debug)]
pub struct NodeBuild<'a> {
    pub name: String,
    pub namespace: String,
    pub component: Component,
    pub replicas: i32,
    pub owner: OwnerReference,
    pub spec: NodeSpecView<'a>,
    pub config: &'a RenderedConfig,
}

impl<'a> NodeBuild<'a> {
    pub fn for_hub(hub: &'a UnisonHub, config: &'a RenderedConfig) -> Option<Self> {
        Some(NodeBuild {
            name: hub.name_any(),
            namespace: hub.namespace()?,
            component: Component::Hub,
            replicas: 1,
            owner: hub.controller_owner_ref(&())?,
            spec: hub.spec.view(),
            config,
        })
    }

    pub fn for_relayer(rel: &'a UnisonRelayer, config: &'a RenderedConfig) -> Option<Self> {
        Some(NodeBuild {
            name: rel.name_any(),
            namespace: rel.namespace()?,
            component: Component::Relayer,
            replicas: rel.spec.replicas,
            owner: rel.controller_owner_ref(&())?,
            spec: rel.spec.view(),
            config,
        })
    }

    /// Metadata for an owned object: name, namespace, labels, controller owner reference.
    pub fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.name, self.component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..Default::default()
        }
    }
}

/// Recommended `app.kubernetes.io/*` labels.
pub fn labels(instance: &str, component: Component) -> BTreeMap<String, String> {
    let mut l = selector_labels(instance, component);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "unisondb-operator".into(),
    );
    l.insert("app.kubernetes.io/part-of".into(), "unisondb".into());
    l
}

/// The stable subset of [`labels`] used in selectors (immutable on a StatefulSet).
pub fn selector_labels(instance: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "unisondb".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.as_str().to_string(),
        ),
    ])
}

/// `k=v,k=v` form of the selector, for `.status.selector`.
pub fn selector_string(instance: &str, component: Component) -> String {
    selector_labels(instance, component)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Object names, in one place so the topology resolver and the builders agree.
pub mod names {
    pub fn statefulset(instance: &str) -> String {
        instance.to_string()
    }
    pub fn client_service(instance: &str) -> String {
        instance.to_string()
    }
    pub fn headless_service(instance: &str) -> String {
        format!("{instance}-headless")
    }
    pub fn configmap(instance: &str) -> String {
        format!("{instance}-config")
    }
    pub fn pdb(instance: &str) -> String {
        instance.to_string()
    }
    /// The gRPC URL downstream nodes replicate from: the client Service's DNS name.
    pub fn grpc_endpoint(
        instance: &str,
        namespace: &str,
        cluster_domain: &str,
        tls: bool,
    ) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!(
            "{scheme}://{}.{namespace}.svc.{cluster_domain}:{}",
            client_service(instance),
            crate::nodeconfig::GRPC_PORT
        )
    }
}
