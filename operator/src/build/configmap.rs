//! The ConfigMap holding the rendered node config.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{names, NodeBuild};
use crate::nodeconfig::CONFIG_FILE;

pub fn build(b: &NodeBuild<'_>) -> ConfigMap {
    ConfigMap {
        metadata: b.meta(names::configmap(&b.name)),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            b.config.yaml.clone(),
        )])),
        ..Default::default()
    }
}
