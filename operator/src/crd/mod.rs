//! Custom resource definitions (group `unisondb.io`, version `v1alpha1`).

pub mod common;
pub mod hub;
pub mod relayer;

pub use common::*;
pub use hub::{MirrorSpec, UnisonHub, UnisonHubSpec};
pub use relayer::{UnisonRelayer, UnisonRelayerSpec, UpstreamSpec};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Both CRDs. Defaults under `.status` are stripped: only the operator writes status, and a 1.20
/// API server rejects the empty-string default serde derives for `status.selector`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut out = vec![UnisonHub::crd(), UnisonRelayer::crd()];
    for crd in &mut out {
        for v in &mut crd.spec.versions {
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

/// All CRDs as one multi-document YAML stream, as committed under `crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}
