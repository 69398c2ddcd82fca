//! What differs between `UnisonHub` and `UnisonRelayer`, behind one trait, so the reconcile
//! pipeline ([`crate::reconcile`]) is written once. Everything else (storage, image, WAL, TLS,
//! Services, scheduling) lives in the shared [`NodeSpec`].

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::build::Component;
use crate::crd::{NodeSpec, NodeStatus, UnisonHub, UnisonRelayer};
use crate::objectstore::{self, StoreExtras};
use crate::status::{Position, Problem};
use crate::topology::{Key, Snapshot};
use crate::validate::{self, Invalid, Wiring};
use crate::{dereference, Error};

/// The object being reconciled, reduced to what owned objects need: where they go and who owns them.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub name: String,
    pub namespace: String,
    /// Controller owner reference stamped on every owned object.
    pub owner: OwnerReference,
}

impl Target {
    /// Fails only for objects the API server never hands out (no namespace or no uid).
    pub fn of<K: NodeKind>(obj: &K) -> Result<Self, Error> {
        Ok(Target {
            name: obj.name_any(),
            namespace: obj.namespace().ok_or(Error::MissingNamespace)?,
            owner: obj.controller_owner_ref(&()).ok_or(Error::MissingUid)?,
        })
    }

    /// The object's key in the topology.
    pub fn key(&self) -> Key {
        Key::new(&self.namespace, &self.name)
    }
}

/// A UnisonDB node resource: the kind-specific bits of the pipeline.
pub trait NodeKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// Which node this kind runs (labels, server mode, pod management).
    const COMPONENT: Component;

    /// The referenced objects [`NodeKind::read_refs`] returns and [`NodeKind::resolve`] consumes.
    type Refs: Send + Sync;

    /// The shared node settings.
    fn node(&self) -> &NodeSpec;

    /// Desired pod count.
    fn replicas(&self) -> i32;

    /// Namespaces the node writes (a hub group runs one Raft group for each); none for relayers.
    fn owned_namespaces(&self) -> Vec<String> {
        Vec::new()
    }

    /// The status the object carries now.
    fn node_status(&self) -> Option<&NodeStatus>;

    /// Whether the node follows an upstream (and so gets a `Connected` condition).
    fn follows(&self) -> bool;

    /// Kind-specific spec rules (pure).
    fn check_spec(&self) -> Result<(), Invalid>;

    /// What object storage adds to the pods (archive, followed store, recovery), validated (pure).
    fn stores(&self) -> Result<StoreExtras, Invalid>;

    /// Reads the objects this one references (API reads; part of `dereference`).
    fn read_refs(
        &self,
        client: &Client,
        target: &Target,
    ) -> impl Future<Output = Result<Self::Refs, Error>> + Send;

    /// Topology facts known without following references.
    fn base_position(&self) -> Position {
        Position::default()
    }

    /// Resolves the references into the node's wiring (pure; part of `validate`). The position is
    /// reported even when the wiring is refused.
    fn resolve(
        &self,
        target: &Target,
        refs: &Self::Refs,
        cluster_domain: &str,
    ) -> (Position, Result<Wiring, Problem>);
}

impl NodeKind for UnisonHub {
    const COMPONENT: Component = Component::Hub;
    /// Hubs owning the mirrored namespaces, by key; a missing key was not found.
    type Refs = HashMap<Key, UnisonHub>;

    fn node(&self) -> &NodeSpec {
        &self.spec.node
    }

    fn replicas(&self) -> i32 {
        self.spec.replicas
    }

    fn owned_namespaces(&self) -> Vec<String> {
        self.spec.namespaces.clone()
    }

    fn node_status(&self) -> Option<&NodeStatus> {
        self.status.as_ref()
    }

    fn follows(&self) -> bool {
        !self.spec.mirrors.is_empty()
    }

    fn check_spec(&self) -> Result<(), Invalid> {
        validate::hub(&self.spec)
    }

    fn stores(&self) -> Result<StoreExtras, Invalid> {
        objectstore::hub(&self.spec)
    }

    fn read_refs(
        &self,
        client: &Client,
        target: &Target,
    ) -> impl Future<Output = Result<Self::Refs, Error>> + Send {
        dereference::mirror_owners(client.clone(), self, target.key())
    }

    fn base_position(&self) -> Position {
        Position {
            depth: Some(0),
            ..Default::default()
        }
    }

    fn resolve(
        &self,
        target: &Target,
        refs: &Self::Refs,
        cluster_domain: &str,
    ) -> (Position, Result<Wiring, Problem>) {
        let wiring =
            validate::mirrors(&self.spec, &target.key(), refs, cluster_domain).map(|mirrors| {
                Wiring {
                    namespaces: self.spec.namespaces.clone(),
                    upstream: None,
                    mirrors,
                }
            });
        (self.base_position(), wiring)
    }
}

impl NodeKind for UnisonRelayer {
    const COMPONENT: Component = Component::Relayer;
    /// This relayer and the objects along its upstream chain.
    type Refs = Snapshot;

    fn node(&self) -> &NodeSpec {
        &self.spec.node
    }

    fn replicas(&self) -> i32 {
        self.spec.replicas
    }

    fn node_status(&self) -> Option<&NodeStatus> {
        self.status.as_ref()
    }

    fn follows(&self) -> bool {
        true
    }

    fn check_spec(&self) -> Result<(), Invalid> {
        validate::relayer(&self.spec)
    }

    fn stores(&self) -> Result<StoreExtras, Invalid> {
        objectstore::relayer(&self.spec)
    }

    fn read_refs(
        &self,
        client: &Client,
        _target: &Target,
    ) -> impl Future<Output = Result<Self::Refs, Error>> + Send {
        dereference::upstream_chain(client.clone(), self)
    }

    fn resolve(
        &self,
        target: &Target,
        refs: &Self::Refs,
        cluster_domain: &str,
    ) -> (Position, Result<Wiring, Problem>) {
        validate::upstream(&self.spec, &target.key(), refs, cluster_domain)
    }
}
