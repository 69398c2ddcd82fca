//! Server-side apply of owned objects (field manager `unisondb-operator`, forced). Applying
//! identical content is a no-op on the server, so steady state causes no writes.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::build::FIELD_MANAGER;
use crate::Error;

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

/// Deletes an untyped object, treating "not found" as done.
pub async fn delete_dynamic(
    client: &Client,
    ar: &ApiResource,
    ns: &str,
    name: &str,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Which PodDisruptionBudget API the server serves, discovered once.
#[derive(Default)]
pub struct PdbSupport {
    cell: OnceCell<Option<ApiResource>>,
}

impl PdbSupport {
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
