//! Topology wiring: which endpoint a relayer follows, its hop depth from the hub, which namespaces
//! its upstream serves, reference cycles, and who is downstream of a changed object. Pure functions
//! over a [`Snapshot`]; loading the snapshot is the reconciler's job.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use kube::ResourceExt;

use crate::build::names;
use crate::crd::{ObjectRef, UnisonHub, UnisonRelayer};

/// Longest chain followed before giving up (guards against runaway chains).
pub const MAX_DEPTH: usize = 32;

/// Namespaced name of a custom resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Key {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
    /// Resolves a reference relative to the referring object's namespace.
    pub fn from_ref(r: &ObjectRef, default_ns: &str) -> Self {
        Key::new(
            r.namespace
                .clone()
                .unwrap_or_else(|| default_ns.to_string()),
            r.name.clone(),
        )
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A relayer's upstream, after checking exactly one kind is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    Hub(Key),
    Relayer(Key),
    Address(String),
}

impl Upstream {
    /// `None` when zero or several upstream kinds are set.
    pub fn of(rel: &UnisonRelayer) -> Option<Self> {
        let ns = rel.namespace().unwrap_or_default();
        let u = &rel.spec.upstream;
        match (&u.hub_ref, &u.relayer_ref, &u.address) {
            (Some(h), None, None) => Some(Upstream::Hub(Key::from_ref(h, &ns))),
            (None, Some(r), None) => Some(Upstream::Relayer(Key::from_ref(r, &ns))),
            (None, None, Some(a)) => Some(Upstream::Address(a.clone())),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubNode {
    pub namespaces: Vec<String>,
    pub tls: bool,
    /// A hub group: downstream nodes follow its read Service, not the leader's client Service.
    pub group: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayerNode {
    /// `None` if the spec names zero or several upstream kinds.
    pub upstream: Option<Upstream>,
    /// Requested namespaces; empty = all of the upstream's.
    pub namespaces: Vec<String>,
    pub tls: bool,
}

/// The part of the cluster a resolution looks at.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub hubs: HashMap<Key, HubNode>,
    pub relayers: HashMap<Key, RelayerNode>,
}

impl Snapshot {
    pub fn add_hub(&mut self, hub: &UnisonHub) {
        let key = Key::new(hub.namespace().unwrap_or_default(), hub.name_any());
        let node = HubNode {
            namespaces: hub.spec.served_namespaces(),
            tls: hub.spec.node.tls.is_some(),
            group: hub.spec.is_group(),
        };
        self.hubs.insert(key, node);
    }
    pub fn add_relayer(&mut self, rel: &UnisonRelayer) {
        let key = Key::new(rel.namespace().unwrap_or_default(), rel.name_any());
        let node = RelayerNode {
            upstream: Upstream::of(rel),
            namespaces: rel.spec.namespaces.clone(),
            tls: rel.spec.node.tls.is_some(),
        };
        self.relayers.insert(key, node);
    }
}

/// Where a relayer replicates from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// gRPC URL of the direct upstream.
    pub endpoint: String,
    /// Hops from the hub (or from the raw address).
    pub depth: i32,
    /// `UnisonHub/ns/name`, `UnisonRelayer/ns/name` or `address`.
    pub upstream_ref: String,
    /// Namespaces the direct upstream serves; `None` for a raw address (unknown).
    pub upstream_namespaces: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("exactly one of upstream.hubRef, upstream.relayerRef or upstream.address must be set")]
    InvalidUpstream,
    #[error("upstream {0} not found")]
    NotFound(String),
    #[error("upstream chain forms a cycle: {0}")]
    Cycle(String),
    #[error("upstream chain longer than {MAX_DEPTH} hops")]
    TooDeep,
}

impl TopologyError {
    /// Condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            TopologyError::InvalidUpstream => "InvalidUpstream",
            TopologyError::NotFound(_) => "UpstreamNotFound",
            TopologyError::Cycle(_) => "UpstreamCycle",
            TopologyError::TooDeep => "UpstreamTooDeep",
        }
    }
}

/// Resolves the relayer `start` against `snap`.
pub fn resolve(
    start: &Key,
    snap: &Snapshot,
    cluster_domain: &str,
) -> Result<Resolved, TopologyError> {
    let first = snap
        .relayers
        .get(start)
        .ok_or_else(|| TopologyError::NotFound(format!("UnisonRelayer/{start}")))?;
    let direct = first
        .upstream
        .clone()
        .ok_or(TopologyError::InvalidUpstream)?;
    let mut visited: Vec<Key> = vec![start.clone()];
    // Requested namespaces of each relayer after `start`, in chain order.
    let mut chain_ns: Vec<&Vec<String>> = Vec::new();
    let mut current = direct.clone();
    let mut hops: i32 = 0;
    let terminal_ns: Option<Vec<String>> = loop {
        hops += 1;
        if hops as usize > MAX_DEPTH {
            return Err(TopologyError::TooDeep);
        }
        match &current {
            Upstream::Address(_) => break None,
            Upstream::Hub(k) => {
                let hub = snap
                    .hubs
                    .get(k)
                    .ok_or_else(|| TopologyError::NotFound(format!("UnisonHub/{k}")))?;
                break Some(hub.namespaces.clone());
            }
            Upstream::Relayer(k) => {
                if visited.contains(k) {
                    let mut path: Vec<String> = visited.iter().map(|k| k.to_string()).collect();
                    path.push(k.to_string());
                    return Err(TopologyError::Cycle(path.join(" -> ")));
                }
                let rel = snap
                    .relayers
                    .get(k)
                    .ok_or_else(|| TopologyError::NotFound(format!("UnisonRelayer/{k}")))?;
                visited.push(k.clone());
                chain_ns.push(&rel.namespaces);
                current = rel.upstream.clone().ok_or(TopologyError::InvalidUpstream)?;
            }
        }
    };
    // What the direct upstream serves: the first explicit namespace list down the chain.
    let upstream_namespaces = chain_ns
        .iter()
        .find(|n| !n.is_empty())
        .map(|n| (*n).clone())
        .or(terminal_ns);
    let (endpoint, upstream_ref) = match &direct {
        Upstream::Address(a) => (a.clone(), "address".to_string()),
        Upstream::Hub(k) => {
            let hub = snap.hubs.get(k);
            let tls = hub.is_some_and(|h| h.tls);
            let endpoint = if hub.is_some_and(|h| h.group) {
                names::group_upstream(&k.name, &k.namespace, cluster_domain, tls)
            } else {
                names::grpc_endpoint(&k.name, &k.namespace, cluster_domain, tls)
            };
            (endpoint, format!("UnisonHub/{k}"))
        }
        Upstream::Relayer(k) => {
            let tls = snap.relayers.get(k).is_some_and(|r| r.tls);
            (
                names::grpc_endpoint(&k.name, &k.namespace, cluster_domain, tls),
                format!("UnisonRelayer/{k}"),
            )
        }
    };
    Ok(Resolved {
        endpoint,
        depth: hops,
        upstream_ref,
        upstream_namespaces,
    })
}

/// Every relayer downstream (directly or transitively) of `changed`; cycle-safe.
pub fn downstream_of(changed: &Upstream, snap: &Snapshot) -> Vec<Key> {
    let mut out: BTreeSet<Key> = BTreeSet::new();
    let mut frontier = vec![changed.clone()];
    while let Some(node) = frontier.pop() {
        for (key, rel) in &snap.relayers {
            if rel.upstream.as_ref() == Some(&node) && out.insert(key.clone()) {
                frontier.push(Upstream::Relayer(key.clone()));
            }
        }
    }
    out.into_iter().collect()
}
