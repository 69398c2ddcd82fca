//! Custom resource definitions (group `unisondb.io`, version `v1alpha1`).

pub mod common;
pub mod hub;
pub mod relayer;

pub use common::*;
pub use hub::{MirrorSpec, UnisonHub, UnisonHubSpec};
pub use relayer::{UnisonRelayer, UnisonRelayerSpec, UpstreamSpec};

use kube::CustomResourceExt;

/// All CRDs as one multi-document YAML stream, as committed under `crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in [UnisonHub::crd(), UnisonRelayer::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
