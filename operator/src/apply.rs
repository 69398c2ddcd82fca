//! Stage 4 of a reconcile: server-side apply of the built [`Resources`] (field manager
//! `unisondb-operator`, forced). Applying identical content is a no-op on the server, so steady
//! state causes no writes.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    Preconditions,
};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::build::{PdbPlan, Resources, FIELD_MANAGER};
use crate::volumes::{self, VolumeReport};
use crate::Error;

/// What applying produced.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The StatefulSet as the server returned it (with its current status).
    pub stateful_set: StatefulSet,
    /// Non-fatal notes (PDB skipped or failed), reported in the `Degraded=False` message.
    pub notes: Vec<String>,
    /// Where the volumes stand when they were asked to grow.
    pub volumes: Option<VolumeReport>,
}

/// Applies the ConfigMap, the Services, the PDB, the cert-manager Certificate, then the StatefulSet (last, so pods start with
/// their config and Services in place).
///
/// `existing` is the StatefulSet as the dereference stage read it: when `r` changes a field
/// Kubernetes never lets change, the StatefulSet is recreated around its pods first.
pub async fn apply_all(
    client: &Client,
    ns: &str,
    r: &Resources,
    existing: Option<&StatefulSet>,
) -> Result<Applied, Error> {
    let mut notes = Vec::new();
    apply_named(
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        &r.config_map,
    )
    .await?;
    apply_named(
        &Api::<ServiceAccount>::namespaced(client.clone(), ns),
        &r.service_account,
    )
    .await?;
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    apply_named(&svcs, &r.headless_service).await?;
    apply_named(&svcs, &r.client_service).await?;
    for svc in &r.group_services {
        apply_named(&svcs, svc).await?;
    }
    match &r.pdb {
        PdbPlan::Apply { api, name, object } => {
            // A PDB is protection, not function: never fail the reconcile over it.
            if let Err(e) = apply_dynamic(client, api, ns, name, object).await {
                tracing::warn!(error = %e, "PodDisruptionBudget apply failed");
                notes.push(format!("PodDisruptionBudget not applied: {e}"));
            }
        }
        PdbPlan::Delete {
            api,
            name,
            owner_uid,
        } => {
            if let Err(e) = delete_owned_dynamic(client, api, ns, name, owner_uid).await {
                tracing::warn!(error = %e, "PodDisruptionBudget delete failed");
            }
        }
        PdbPlan::Unsupported => notes.push(
            "PodDisruptionBudget skipped: the API server serves no policy/v1 or policy/v1beta1"
                .into(),
        ),
        PdbPlan::Nothing => {}
    }
    if let Some(cert) = &r.certificate {
        // Before the StatefulSet: cert-manager fills the Secret the pods mount.
        let name = cert["metadata"]["name"].as_str().unwrap_or_default();
        apply_dynamic(
            client,
            &crate::build::certificate::api_resource(),
            ns,
            name,
            cert,
        )
        .await?;
    }
    let sts_api = Api::<StatefulSet>::namespaced(client.clone(), ns);
    if let Some(why) = recreate_if_immutable(&sts_api, existing, &r.stateful_set).await? {
        notes.push(why);
    }
    let stateful_set = apply_named(&sts_api, &r.stateful_set).await?;
    let volumes = match &r.grow_volumes {
        Some(g) => Some(
            volumes::grow(client, ns, &g.selector, &g.size)
                .await
                .map_err(Error::Kube)?,
        ),
        None => None,
    };
    Ok(Applied {
        stateful_set,
        notes,
        volumes,
    })
}

/// Deletes the StatefulSet, leaving its pods and volumes (`propagationPolicy: Orphan`), when
/// `desired` changes a field Kubernetes never lets change, and waits until it is gone; the apply
/// that follows creates it again and it adopts the same pods. Returns what was done.
async fn recreate_if_immutable(
    api: &Api<StatefulSet>,
    existing: Option<&StatefulSet>,
    desired: &StatefulSet,
) -> Result<Option<String>, Error> {
    let name = desired.name_any();
    let Some(existing) = existing else {
        return Ok(None);
    };
    let Some(why) = crate::build::statefulset::read::immutable_change(existing, desired) else {
        return Ok(None);
    };
    tracing::info!(statefulset = %name, change = %why, "recreating the StatefulSet (pods kept)");
    let orphan = DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        preconditions: existing.uid().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    api.delete(&name, &orphan).await.map_err(Error::Kube)?;
    for _ in 0..150 {
        if api.get_opt(&name).await.map_err(Error::Kube)?.is_none() {
            return Ok(Some(format!(
                "StatefulSet {name} recreated, its pods and volumes kept ({why})"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(Some(format!(
        "StatefulSet {name} is being recreated ({why}); not gone after 30 s"
    )))
}

/// Applies an object under its own `metadata.name`.
async fn apply_named<K>(api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    apply(api, &obj.name_any(), obj).await
}

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies one typed object by name in `api`.
pub async fn apply<K>(api: &Api<K>, name: &str, obj: &K) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    // kube fills in apiVersion/kind on typed objects only via serde of the k8s-openapi type.
    api.patch(name, &params(), &Patch::Apply(obj))
        .await
        .map_err(Error::Kube)
}

/// Applies an untyped object (used for the PDB, whose API version depends on the server).
pub async fn apply_dynamic(
    client: &Client,
    ar: &ApiResource,
    ns: &str,
    name: &str,
    obj: &serde_json::Value,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    api.patch(name, &params(), &Patch::Apply(obj))
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

/// Deletes an untyped object if `owner_uid` owns it (a same-named object someone else made is
/// left alone), treating "not found" as done. The delete is conditional on the object's uid, so
/// one replaced in between is not deleted either.
pub async fn delete_owned_dynamic(
    client: &Client,
    ar: &ApiResource,
    ns: &str,
    name: &str,
    owner_uid: &str,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let Some(obj) = api.get_opt(name).await.map_err(Error::Kube)? else {
        return Ok(());
    };
    let owned = obj
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == owner_uid);
    if !owned {
        tracing::info!(kind = %ar.kind, %name, "not owned by this node: left alone");
        return Ok(());
    }
    let dp = DeleteParams {
        preconditions: obj.metadata.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Which PodDisruptionBudget API the server serves, discovered once.
#[derive(Default)]
pub struct PdbSupport {
    cell: OnceCell<Option<ApiResource>>,
}

impl PdbSupport {
    /// Support already known (tests, or a server whose API set is fixed).
    pub fn known(resource: Option<ApiResource>) -> Self {
        PdbSupport {
            cell: OnceCell::new_with(Some(resource)),
        }
    }

    /// `policy/v1` if served, else `policy/v1beta1` (Kubernetes < 1.21), else `None`.
    pub async fn resource(&self, client: &Client) -> Option<ApiResource> {
        self.cell
            .get_or_init(|| async {
                for gv in crate::build::pdb::PDB_VERSIONS {
                    let served = match client.list_api_group_resources(gv).await {
                        Ok(list) => list
                            .resources
                            .iter()
                            .any(|r| r.name == "poddisruptionbudgets"),
                        Err(e) => {
                            tracing::debug!(%gv, error = %e, "PDB API version not served");
                            false
                        }
                    };
                    if served {
                        let (group, version) = gv.split_once('/').unwrap_or(("policy", gv));
                        let gvk = GroupVersionKind::gvk(group, version, "PodDisruptionBudget");
                        tracing::info!(%gv, "using PodDisruptionBudget API");
                        return Some(ApiResource::from_gvk_with_plural(
                            &gvk,
                            "poddisruptionbudgets",
                        ));
                    }
                }
                tracing::warn!("no PodDisruptionBudget API served; PDBs will be skipped");
                None
            })
            .await
            .clone()
    }
}
