//! Resolving references into a node's wiring, pure: a hub's mirrors to their owners' endpoints, a
//! relayer's upstream chain to an endpoint, a depth and a namespace list.

use std::collections::{BTreeMap, HashMap};

use super::{effective_namespaces, Wiring};
use crate::build::names;
use crate::crd::{UnisonHub, UnisonHubSpec, UnisonRelayerSpec};
use crate::status::{Position, Problem};
use crate::topology::{self, Key, Snapshot};

fn problem(reason: &str, message: String) -> Problem {
    Problem {
        reason: reason.into(),
        message,
    }
}

/// A hub's `mirrors` as `namespace -> gRPC URL`, given the owner hubs that exist (`owners`).
pub fn mirrors(
    spec: &UnisonHubSpec,
    me: &Key,
    owners: &HashMap<Key, UnisonHub>,
    cluster_domain: &str,
) -> Result<BTreeMap<String, String>, Problem> {
    let mut out = BTreeMap::new();
    for m in &spec.mirrors {
        if let Some(addr) = &m.address {
            out.insert(m.namespace.clone(), addr.clone());
            continue;
        }
        let Some(r) = &m.hub_ref else { continue };
        let key = Key::from_ref(r, &me.namespace);
        if &key == me {
            return Err(problem(
                "UpstreamCycle",
                format!("mirror {:?} references this hub itself", m.namespace),
            ));
        }
        match owners.get(&key) {
            None => {
                return Err(problem(
                    "UpstreamNotFound",
                    format!("mirror {:?}: UnisonHub {key} not found", m.namespace),
                ))
            }
            Some(owner) if !owner.spec.namespaces.contains(&m.namespace) => {
                return Err(problem(
                    "NamespaceNotInUpstream",
                    format!("mirror {:?}: UnisonHub {key} does not own it", m.namespace),
                ))
            }
            Some(owner) => {
                let endpoint = if owner.spec.is_group() {
                    names::group_upstream
                } else {
                    names::grpc_endpoint
                };
                let url = endpoint(
                    &key.name,
                    &key.namespace,
                    cluster_domain,
                    owner.spec.node.tls.is_some(),
                );
                out.insert(m.namespace.clone(), url);
            }
        }
    }
    Ok(out)
}

/// A relayer's upstream, resolved against the chain `dereference` read. The position is known as
/// soon as the chain resolves, even if the requested namespaces are then refused.
pub fn upstream(
    spec: &UnisonRelayerSpec,
    me: &Key,
    chain: &Snapshot,
    cluster_domain: &str,
) -> (Position, Result<Wiring, Problem>) {
    let grpc = spec.upstream.hub_ref.is_some()
        || spec.upstream.relayer_ref.is_some()
        || spec.upstream.address.is_some();
    if let (Some(o), false) = (&spec.upstream.object_store, grpc) {
        // Only the bucket: one hop from the hub that archives into it.
        let url = crate::objectstore::url(&o.store);
        let position = Position {
            depth: Some(1),
            upstream: Some(url),
            upstream_ref: Some("objectStore".into()),
        };
        let wiring = Wiring {
            namespaces: spec.namespaces.clone(),
            upstream: None,
            mirrors: BTreeMap::new(),
        };
        return (position, Ok(wiring));
    }
    let resolved = match topology::resolve(me, chain, cluster_domain) {
        Ok(r) => r,
        Err(e) => return (Position::default(), Err(problem(e.reason(), e.to_string()))),
    };
    let position = Position {
        depth: Some(resolved.depth),
        upstream: Some(resolved.endpoint.clone()),
        upstream_ref: Some(resolved.upstream_ref.clone()),
    };
    let wiring = effective_namespaces(&spec.namespaces, resolved.upstream_namespaces.as_deref())
        .map(|namespaces| Wiring {
            namespaces,
            upstream: Some(resolved.endpoint),
            mirrors: BTreeMap::new(),
        })
        .map_err(Problem::from);
    (position, wiring)
}
