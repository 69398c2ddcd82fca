//! Growing a node's volumes in place (as CloudNativePG's `resizeInUseVolumes`): a StatefulSet's
//! volume claim templates are immutable, so a larger `storage.size` is applied to each PVC, and the
//! storage class's provisioner expands the volume. Progress is the `VolumesResized` condition.
//! The decisions are pure; [`grow`] is the I/O edge (list the PVCs, patch the small ones).

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::json;

use crate::validate::quantity;

/// Condition type present while `storage.size` is above the StatefulSet's template.
pub const VOLUMES_RESIZED: &str = "VolumesResized";

/// One PVC as the operator saw it after asking it to grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    /// `status.capacity.storage`, when the volume is bound.
    pub capacity: Option<String>,
    /// The API server refused the resize (e.g. the storage class does not allow expansion).
    pub refused: Option<String>,
}

/// Every volume of a node measured against the wanted size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeReport {
    pub size: String,
    pub volumes: Vec<Volume>,
}

/// A PVC's requested storage, when it is below `size` (it must be patched).
pub fn needs_growth(pvc: &PersistentVolumeClaim, size: &str) -> bool {
    let requested = pvc
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| quantity::parse(&q.0));
    match (requested, quantity::parse(size)) {
        (Some(have), Some(want)) => have < want,
        _ => false,
    }
}

fn capacity(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone())
}

/// The `VolumesResized` condition: (status, reason, message).
pub fn verdict(r: &VolumeReport) -> (&'static str, &'static str, String) {
    let want = quantity::parse(&r.size);
    let refused: Vec<String> = r
        .volumes
        .iter()
        .filter_map(|v| v.refused.as_ref().map(|e| format!("{}: {e}", v.name)))
        .collect();
    if !refused.is_empty() {
        return (
            "False",
            "ResizeRefused",
            format!("cannot grow to {}: {}", r.size, refused.join("; ")),
        );
    }
    let done = r
        .volumes
        .iter()
        .filter(|v| v.capacity.as_deref().and_then(quantity::parse) >= want)
        .count();
    if done == r.volumes.len() {
        (
            "True",
            "Resized",
            format!(
                "{done}/{} volumes at {} or more (new replicas start at the template's size and are grown next)",
                r.volumes.len(),
                r.size
            ),
        )
    } else {
        let waiting: Vec<String> = r
            .volumes
            .iter()
            .filter(|v| v.capacity.as_deref().and_then(quantity::parse) < want)
            .map(|v| format!("{} at {}", v.name, v.capacity.as_deref().unwrap_or("?")))
            .collect();
        (
            "False",
            "Resizing",
            format!(
                "{done}/{} volumes at {}; waiting for {}",
                r.volumes.len(),
                r.size,
                waiting.join(", ")
            ),
        )
    }
}

/// Asks every PVC of the node (by its selector labels) below `size` to grow, and reports where
/// each stands. A refused patch is reported, not fatal: the rest of the node still reconciles.
pub async fn grow(
    client: &Client,
    ns: &str,
    selector: &str,
    size: &str,
) -> Result<VolumeReport, kube::Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvcs = api.list(&ListParams::default().labels(selector)).await?;
    let mut volumes = Vec::new();
    for pvc in pvcs.items {
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let mut refused = None;
        if needs_growth(&pvc, size) {
            let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::info!(pvc = %name, %size, "asked the volume to grow"),
                Err(kube::Error::Api(e)) => refused = Some(e.message),
                Err(e) => return Err(e),
            }
        }
        volumes.push(Volume {
            capacity: capacity(&pvc),
            name,
            refused,
        });
    }
    Ok(VolumeReport {
        size: size.to_string(),
        volumes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvc(requested: &str, capacity: Option<&str>) -> PersistentVolumeClaim {
        let mut v = json!({"metadata": {"name": "data-hub-0"},
            "spec": {"resources": {"requests": {"storage": requested}}}});
        if let Some(c) = capacity {
            v["status"] = json!({"capacity": {"storage": c}});
        }
        serde_json::from_value(v).expect("pvc")
    }

    fn vol(name: &str, cap: Option<&str>) -> Volume {
        Volume {
            name: name.into(),
            capacity: cap.map(Into::into),
            refused: None,
        }
    }

    #[test]
    fn only_smaller_requests_are_patched() {
        assert!(needs_growth(&pvc("1Gi", None), "2Gi"));
        assert!(!needs_growth(&pvc("2048Mi", None), "2Gi"), "same quantity");
        assert!(!needs_growth(&pvc("3Gi", None), "2Gi"), "never shrink");
    }

    #[test]
    fn progress_then_done_then_refused() {
        let mut r = VolumeReport {
            size: "2Gi".into(),
            volumes: vec![vol("data-e-0", Some("2Gi")), vol("data-e-1", Some("1Gi"))],
        };
        let (s, reason, msg) = verdict(&r);
        assert_eq!((s, reason), ("False", "Resizing"));
        assert!(
            msg.contains("1/2") && msg.contains("data-e-1 at 1Gi"),
            "{msg}"
        );
        r.volumes[1].capacity = Some("2048Mi".into());
        assert_eq!(verdict(&r).0, "True");
        r.volumes[0].refused = Some("storageclass does not allow expansion".into());
        let (s, reason, msg) = verdict(&r);
        assert_eq!((s, reason), ("False", "ResizeRefused"));
        assert!(msg.contains("data-e-0: storageclass"), "{msg}");
    }
}
