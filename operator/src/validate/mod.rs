//! Stage 2 of a reconcile, pure: turns the object and what `dereference` read into a spec the
//! operator can act on ([`Validated`]) or the reason it will not ([`Rejected`]).

pub mod quantity;
mod rules;
mod wiring;

use std::collections::BTreeMap;

pub use rules::{
    cert_manager_available, effective_namespaces, group_change, hub, relayer, storage_plan,
    Invalid, StoragePlan,
};
pub use wiring::{mirrors, upstream};

use crate::build::Component;
use crate::crd::NodeSpec;
use crate::dereference::Dereferenced;
use crate::kind::{NodeKind, Target};
use crate::objectstore::StoreExtras;
use crate::status::{Position, Problem};

/// What the node's config file says about its peers: served namespaces, upstream, mirrors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wiring {
    pub namespaces: Vec<String>,
    /// Relayer: resolved upstream gRPC URL.
    pub upstream: Option<String>,
    /// Hub: mirrored namespace -> gRPC URL of its owner.
    pub mirrors: BTreeMap<String, String>,
}

/// A spec the operator can act on: everything `build` needs.
#[derive(Clone, Debug)]
pub struct Validated<'a> {
    pub target: Target,
    pub component: Component,
    pub replicas: i32,
    pub spec: &'a NodeSpec,
    pub wiring: Wiring,
    pub position: Position,
    pub storage: StoragePlan,
    /// Object storage: config sections, Secret mounts, recovery init containers.
    pub stores: StoreExtras,
    /// The cluster's DNS domain (names in the cert-manager Certificate).
    pub cluster_domain: String,
}

/// A spec the operator will not act on, and the topology facts known anyway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub problem: Problem,
    pub position: Position,
}

impl From<Invalid> for Problem {
    fn from(i: Invalid) -> Self {
        Problem {
            reason: i.reason.into(),
            message: i.message,
        }
    }
}

/// Spec rules first (kind-specific, then the immutable storage), then the references.
pub fn validate<'a, K: NodeKind>(
    obj: &'a K,
    target: &Target,
    deref: &Dereferenced<K::Refs>,
    cluster_domain: &str,
) -> Result<Validated<'a>, Rejected> {
    let (storage, stores) = obj
        .check_spec()
        .and_then(|_| obj.stores())
        .and_then(|stores| {
            storage_plan(&obj.node().storage, deref.existing.as_ref()).map(|p| (p, stores))
        })
        .and_then(|plan| cert_manager_available(obj.node(), deref.cert_manager).map(|_| plan))
        .and_then(|plan| match K::COMPONENT {
            Component::Hub => group_change(obj.replicas(), deref.existing.as_ref()).map(|_| plan),
            Component::Relayer => Ok(plan),
        })
        .map_err(|i| Rejected {
            problem: i.into(),
            position: obj.base_position(),
        })?;
    let (position, wiring) = obj.resolve(target, &deref.refs, cluster_domain);
    match wiring {
        Ok(wiring) => Ok(Validated {
            target: target.clone(),
            component: K::COMPONENT,
            replicas: obj.replicas(),
            spec: obj.node(),
            wiring,
            position,
            storage,
            stores,
            cluster_domain: cluster_domain.to_string(),
        }),
        Err(problem) => Err(Rejected { problem, position }),
    }
}
