//! What an apply changed in a node's StatefulSet, as Normal events (`Created`, `Scaled`,
//! `RollingUpdate`): `kubectl describe` then tells the story of a node without reading the
//! operator's log. Pure: compares the StatefulSet before the apply with the one applied.

use k8s_openapi::api::apps::v1::StatefulSet;

use crate::build::statefulset::read::{config_hash, image, replicas};

/// One Normal event: reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub reason: &'static str,
    pub message: String,
}

/// The changes from `before` (absent: not created yet) to `applied`.
pub fn changes(before: Option<&StatefulSet>, applied: &StatefulSet) -> Vec<Change> {
    let name = applied.metadata.name.as_deref().unwrap_or_default();
    let Some(before) = before else {
        return vec![Change {
            reason: "Created",
            message: format!(
                "StatefulSet {name} created with {} replica(s)",
                replicas(applied)
            ),
        }];
    };
    let mut out = Vec::new();
    let (was, now) = (replicas(before), replicas(applied));
    if was != now {
        out.push(Change {
            reason: "Scaled",
            message: format!("StatefulSet {name}: replicas {was} → {now}"),
        });
    }
    let mut why = Vec::new();
    if image(before) != image(applied) {
        why.push(format!(
            "image {} → {}",
            image(before).unwrap_or("(none)"),
            image(applied).unwrap_or("(none)")
        ));
    }
    if config_hash(before) != config_hash(applied) {
        why.push("node config changed".to_string());
    }
    if !why.is_empty() {
        out.push(Change {
            reason: "RollingUpdate",
            message: format!("StatefulSet {name}: pods roll ({})", why.join("; ")),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::CONFIG_HASH_ANNOTATION;
    use serde_json::json;

    fn sts(replicas: i32, image: &str, hash: &str) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "edge"},
            "spec": {"replicas": replicas, "selector": {}, "serviceName": "edge-headless",
                     "template": {"metadata": {"annotations": {CONFIG_HASH_ANNOTATION: hash}},
                                  "spec": {"containers": [{"name": "unisondb", "image": image}]}}}
        }))
        .expect("sts")
    }

    #[test]
    fn created_scaled_rolled_or_nothing() {
        let a = sts(3, "u:1", "h1");
        assert_eq!(changes(None, &a)[0].reason, "Created");
        assert!(changes(Some(&a), &a).is_empty(), "no change, no event");
        let scaled = changes(Some(&a), &sts(5, "u:1", "h1"));
        assert_eq!(scaled.len(), 1);
        assert_eq!(scaled[0].message, "StatefulSet edge: replicas 3 → 5");
        let rolled = changes(Some(&a), &sts(3, "u:2", "h2"));
        assert_eq!(rolled[0].reason, "RollingUpdate");
        assert!(
            rolled[0].message.contains("image u:1 → u:2") && rolled[0].message.contains("config"),
            "{}",
            rolled[0].message
        );
    }
}
