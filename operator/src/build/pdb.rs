//! PodDisruptionBudget for relayers with more than one replica (`maxUnavailable: 1`).
//!
//! Built as JSON so the same object can be applied as `policy/v1` or, on API servers older than
//! 1.21, `policy/v1beta1` (the fields used here are identical in both).

use serde_json::{json, Value};

use super::{names, selector_labels, NodeBuild};

/// API versions a PDB can be applied with, newest first.
pub const PDB_VERSIONS: &[&str] = &["policy/v1", "policy/v1beta1"];

/// Whether a PDB is wanted: a single replica cannot tolerate a disruption budget without blocking
/// node drains.
pub fn wanted(b: &NodeBuild<'_>) -> bool {
    b.replicas > 1
}

/// Returns `None` when no PDB is [`wanted`].
pub fn build(b: &NodeBuild<'_>, api_version: &str) -> Option<Value> {
    if !wanted(b) {
        return None;
    }
    let meta = b.meta(names::pdb(&b.name));
    Some(json!({
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": {
            "maxUnavailable": 1,
            "selector": { "matchLabels": selector_labels(&b.name, b.component) },
        },
    }))
}
