//! Custom resource definitions (group `unisondb.io`, version `v1alpha1`).

pub mod backup;
pub mod common;
pub mod hub;
pub mod relayer;

pub use backup::{
    BackupPhase, BackupSpec, BootstrapSpec, CaSecretRef, NamespaceBackup, ObjectStoreSpec,
    RecoverySpec, SecretKeyRef, UnisonBackup, UnisonBackupSpec, UnisonBackupStatus,
    UnisonScheduledBackup, UnisonScheduledBackupSpec, UnisonScheduledBackupStatus,
};
pub use common::*;
pub use hub::{MirrorSpec, UnisonHub, UnisonHubSpec};
pub use relayer::{UnisonRelayer, UnisonRelayerSpec, UpstreamObjectStoreSpec, UpstreamSpec};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// Every CRD. Defaults under `.status` are stripped: only the operator writes status, and a 1.20
/// API server rejects the empty-string default serde derives for `status.selector`. Unsigned
/// integer formats become the signed ones Kubernetes knows (it warns about `uint64`).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut out = vec![
        UnisonHub::crd(),
        UnisonRelayer::crd(),
        UnisonBackup::crd(),
        UnisonScheduledBackup::crd(),
    ];
    for crd in &mut out {
        for v in &mut crd.spec.versions {
            if let Some(schema) = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                kubernetes_formats(schema);
            }
            let status = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
                .and_then(|s| s.properties.as_mut())
                .and_then(|p| p.get_mut("status"))
                .and_then(|s| s.properties.as_mut());
            if let Some(props) = status {
                for p in props.values_mut() {
                    p.default = None;
                }
            }
        }
    }
    out
}

/// Rewrites `format: uint*` (schemars' names for Rust's unsigned integers) to `int64`/`int32`.
fn kubernetes_formats(schema: &mut JSONSchemaProps) {
    if let Some(f) = schema.format.as_mut() {
        match f.as_str() {
            "uint64" => *f = "int64".into(),
            "uint32" | "uint16" | "uint8" | "uint" => *f = "int32".into(),
            _ => {}
        }
    }
    for p in schema.properties.iter_mut().flat_map(|m| m.values_mut()) {
        kubernetes_formats(p);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        kubernetes_formats(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        kubernetes_formats(extra);
    }
    for s in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of]
        .into_iter()
        .flatten()
        .flatten()
    {
        kubernetes_formats(s);
    }
}

/// All CRDs as one multi-document YAML stream, as committed under `crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}
