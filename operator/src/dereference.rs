//! Stage 1 of a reconcile: every read from the API server, and nothing else. Reads are strongly
//! consistent GETs (not a cache), so a reconcile acts on the current state of what it references.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, ApiResource};
use kube::Client;

use crate::apply::PdbSupport;
use crate::build::names;
use crate::crd::{UnisonHub, UnisonRelayer};
use crate::kind::{NodeKind, Target};
use crate::topology::{Key, Snapshot, Upstream, MAX_DEPTH};
use crate::Error;

/// What the API server told us, as input for the pure `validate` and `build` stages.
#[derive(Clone, Debug)]
pub struct Dereferenced<R> {
    /// The node's StatefulSet as it exists now (its volume claim templates are immutable).
    pub existing: Option<StatefulSet>,
    /// The PodDisruptionBudget API the server serves, if any.
    pub pdb_api: Option<ApiResource>,
    /// The kind-specific referenced objects.
    pub refs: R,
    /// Whether the API server serves cert-manager's Certificates; asked only when the spec wants
    /// one (`spec.tls.certManager`), `None` otherwise.
    pub cert_manager: Option<bool>,
}

/// Reads everything one reconcile of `obj` needs.
pub async fn dereference<K: NodeKind>(
    client: &Client,
    pdb: &PdbSupport,
    obj: &K,
    target: &Target,
) -> Result<Dereferenced<K::Refs>, Error> {
    let existing = Api::<StatefulSet>::namespaced(client.clone(), &target.namespace)
        .get_opt(&names::statefulset(&target.name))
        .await
        .map_err(Error::Kube)?;
    let pdb_api = pdb.resource(client).await;
    let refs = obj.read_refs(client, target).await?;
    let wants_certificate = obj
        .node()
        .tls
        .as_ref()
        .is_some_and(|t| t.cert_manager.is_some());
    let cert_manager = if wants_certificate {
        Some(serves_certificates(client).await?)
    } else {
        None
    };
    Ok(Dereferenced {
        existing,
        pdb_api,
        refs,
        cert_manager,
    })
}

/// Whether `cert-manager.io/v1` serves `certificates` (its CRDs are installed). Asked at each
/// reconcile that needs it, so installing cert-manager later is picked up without a restart.
pub async fn serves_certificates(client: &Client) -> Result<bool, Error> {
    use crate::build::certificate::{GROUP, PLURAL, VERSION};
    match client
        .list_api_group_resources(&format!("{GROUP}/{VERSION}"))
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == PLURAL)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// The hubs `hub`'s mirrors reference (by `hubRef`), keyed by namespaced name; hubs that do not
/// exist are absent. A reference to `hub` itself is not read (validation refuses it).
pub async fn mirror_owners(
    client: Client,
    hub: &UnisonHub,
    me: Key,
) -> Result<HashMap<Key, UnisonHub>, Error> {
    let mut out = HashMap::new();
    for m in &hub.spec.mirrors {
        let Some(r) = &m.hub_ref else { continue };
        let key = Key::from_ref(r, &me.namespace);
        if key == me || out.contains_key(&key) {
            continue;
        }
        let api: Api<UnisonHub> = Api::namespaced(client.clone(), &key.namespace);
        if let Some(owner) = api.get_opt(&key.name).await.map_err(Error::Kube)? {
            out.insert(key, owner);
        }
    }
    Ok(out)
}

/// The objects along `rel`'s upstream chain, starting with `rel` itself, stopping at a hub, an
/// address, a missing object or a repeat.
pub async fn upstream_chain(client: Client, rel: &UnisonRelayer) -> Result<Snapshot, Error> {
    let mut snap = Snapshot::default();
    snap.add_relayer(rel);
    let mut seen: HashSet<Key> = HashSet::new();
    let mut next = Upstream::of(rel);
    for _ in 0..=MAX_DEPTH {
        match next.take() {
            None | Some(Upstream::Address(_)) => break,
            Some(Upstream::Hub(k)) => {
                let api: Api<UnisonHub> = Api::namespaced(client.clone(), &k.namespace);
                if let Some(h) = api.get_opt(&k.name).await.map_err(Error::Kube)? {
                    snap.add_hub(&h);
                }
                break;
            }
            Some(Upstream::Relayer(k)) => {
                if snap.relayers.contains_key(&k) || !seen.insert(k.clone()) {
                    break;
                }
                let api: Api<UnisonRelayer> = Api::namespaced(client.clone(), &k.namespace);
                match api.get_opt(&k.name).await.map_err(Error::Kube)? {
                    Some(r) => {
                        snap.add_relayer(&r);
                        next = Upstream::of(&r);
                    }
                    None => break,
                }
            }
        }
    }
    Ok(snap)
}
