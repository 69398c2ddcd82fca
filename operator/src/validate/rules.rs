//! Spec rules, pure. The same rules the CRD states in OpenAPI/CEL, checked again here because API
//! servers older than 1.25 drop CEL rules; failures become a `Degraded` condition.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;

use super::quantity;
use crate::build::statefulset::read;
use crate::crd::{ExtraConfig, NodeSpec, StorageSpec, UnisonHubSpec, UnisonRelayerSpec};
use crate::nodeconfig;

/// A spec the operator refuses to act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// Condition reason (CamelCase).
    pub reason: &'static str,
    pub message: String,
}

fn invalid(reason: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        reason,
        message: message.into(),
    }
}

fn check_namespaces(field: &str, ns: &[String]) -> Result<(), Invalid> {
    let mut seen = BTreeSet::new();
    for n in ns {
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(invalid(
                "InvalidSpec",
                format!("{field}: invalid namespace name {n:?}"),
            ));
        }
        if !seen.insert(n) {
            return Err(invalid(
                "InvalidSpec",
                format!("{field}: duplicate namespace {n:?}"),
            ));
        }
    }
    Ok(())
}

fn check_address(field: &str, a: &str) -> Result<(), Invalid> {
    let rest = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("https://"));
    match rest {
        Some(hostport) if !hostport.is_empty() => Ok(()),
        _ => Err(invalid(
            "InvalidSpec",
            format!("{field}: {a:?} must be an http:// or https:// URL"),
        )),
    }
}

/// Accepts Kubernetes quantities such as `10Gi`, `500M`, `1e9`.
fn check_size(s: &StorageSpec) -> Result<(), Invalid> {
    match quantity::parse(&s.size) {
        Some(n) if n > 0 => Ok(()),
        _ => Err(invalid(
            "InvalidSpec",
            format!("storage.size: {:?} is not a positive quantity", s.size),
        )),
    }
}

fn check_extra(extra: &ExtraConfig) -> Result<(), Invalid> {
    nodeconfig::check_extra(extra).map_err(|e| invalid("InvalidConfig", e.to_string()))
}

/// What to do about storage: a StatefulSet's volume claim templates are immutable, so an existing
/// template keeps its size and a larger `storage.size` grows the volumes themselves (their PVCs);
/// the storage class cannot change and volumes never shrink. Sizes compare as quantities.
pub fn storage_plan(
    desired: &StorageSpec,
    existing: Option<&StatefulSet>,
) -> Result<StoragePlan, Invalid> {
    let fresh = StoragePlan {
        template_size: desired.size.clone(),
        grow_to: None,
    };
    let Some((existing, tpl)) = existing.and_then(|s| Some((s, read::claim(s)?))) else {
        return Ok(fresh);
    };
    if tpl.storage_class_name != desired.storage_class_name {
        return Err(invalid(
            "StorageClassImmutable",
            format!(
                "storage.storageClassName is immutable (was {:?}, now {:?})",
                tpl.storage_class_name, desired.storage_class_name
            ),
        ));
    }
    let Some(current) = read::claim_size(existing) else {
        return Ok(fresh);
    };
    match (quantity::parse(current), quantity::parse(&desired.size)) {
        (Some(was), Some(now)) if now < was => Err(invalid(
            "StorageShrinkRefused",
            format!(
                "storage.size cannot shrink (volumes are {}, spec asks {}): volumes only grow",
                current, desired.size
            ),
        )),
        (Some(was), Some(now)) => Ok(StoragePlan {
            template_size: current.to_string(),
            grow_to: (now > was).then(|| desired.size.clone()),
        }),
        _ => Err(invalid(
            "InvalidSpec",
            format!(
                "storage.size: cannot compare {:?} with {:?}",
                desired.size, current
            ),
        )),
    }
}

/// Storage decisions for the build and apply stages (see [`storage_plan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoragePlan {
    /// Size in the StatefulSet's volume claim template (the existing one's, once created).
    pub template_size: String,
    /// Grow every volume (PVC) to this size: the spec asks for more than the template has.
    pub grow_to: Option<String>,
}

/// Shared rule checked first: an image, when given, is not empty (absent = the operator's default).
fn check_image(node: &NodeSpec) -> Result<(), Invalid> {
    if node.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
        return Err(invalid(
            "InvalidSpec",
            "image must not be empty (omit it to use the operator's default node image)",
        ));
    }
    Ok(())
}

/// Shared rule: `tls` names exactly one certificate source.
fn check_tls(node: &NodeSpec) -> Result<(), Invalid> {
    match &node.tls {
        Some(t) if t.secret_name.is_some() == t.cert_manager.is_some() => Err(invalid(
            "InvalidTls",
            "tls: set exactly one of secretName (your own Secret) or certManager (a cert-manager Certificate)",
        )),
        _ => Ok(()),
    }
}

/// The spec asks cert-manager for a certificate: `serves` is whether the API server serves
/// `certificates.cert-manager.io` (`None`: not asked).
pub fn cert_manager_available(node: &NodeSpec, serves: Option<bool>) -> Result<(), Invalid> {
    let wants = node.tls.as_ref().is_some_and(|t| t.cert_manager.is_some());
    if wants && serves == Some(false) {
        return Err(invalid(
            "CertManagerMissing",
            "tls.certManager is set but the API server serves no certificates.cert-manager.io/v1: \
             install cert-manager (its CRDs), or use tls.secretName with your own Secret",
        ));
    }
    Ok(())
}

/// Shared rules checked last: storage size and extra config.
fn check_storage_and_extra(node: &NodeSpec) -> Result<(), Invalid> {
    check_size(&node.storage)?;
    check_extra(&node.extra_config)
}

/// Hub groups: 1, 3 or 5 members, and only what a group supports.
fn check_group(spec: &UnisonHubSpec) -> Result<(), Invalid> {
    if ![1, 3, 5].contains(&spec.replicas) {
        return Err(invalid(
            "InvalidReplicas",
            format!(
                "replicas: {} is not 1 (a single hub), 3 or 5 (a Raft group that survives the loss \
                 of 1 or 2 members; an even count adds no fault tolerance)",
                spec.replicas
            ),
        ));
    }
    if !spec.is_group() {
        return Ok(());
    }
    let unsupported = if spec.node.tls.as_ref().is_some_and(|t| t.http) {
        Some("tls.http (followers proxy writes to the leader over plain HTTP)")
    } else if spec.backup.is_some() {
        Some("backup (every member would archive its WAL to the same prefix)")
    } else if spec.bootstrap.is_some() {
        Some("bootstrap (a group starts on empty namespaces)")
    } else {
        None
    };
    match unsupported {
        Some(what) => Err(invalid(
            "UnsupportedInGroup",
            format!(
                "replicas: {}: {what} is not supported for hub groups yet",
                spec.replicas
            ),
        )),
        None => Ok(()),
    }
}

/// A single hub may become a group (1 -> 3/5: its pod converts its data into the group's log,
/// docs/OPERATIONS.md "Converting a single hub into a group"), a group not back into one hub: that
/// would drop the quorum guarantees its clients rely on. 3 <-> 5 is a membership change.
pub fn group_change(desired: i32, existing: Option<&StatefulSet>) -> Result<(), Invalid> {
    let Some(running) = existing.map(read::replicas) else {
        return Ok(());
    };
    if running > 1 && desired <= 1 {
        return Err(invalid(
            "GroupChangeRefused",
            format!(
                "replicas: {running} -> {desired} is refused: a hub group does not turn back into a \
                 single hub in place; scale it to 3, or create a new UnisonHub and move the data \
                 (docs/OPERATIONS.md)"
            ),
        ));
    }
    Ok(())
}

/// Rules for a hub spec.
pub fn hub(spec: &UnisonHubSpec) -> Result<(), Invalid> {
    check_image(&spec.node)?;
    check_tls(&spec.node)?;
    check_group(spec)?;
    if spec.namespaces.is_empty() {
        return Err(invalid(
            "InvalidSpec",
            "namespaces must list at least one namespace",
        ));
    }
    check_namespaces("namespaces", &spec.namespaces)?;
    let mirrored: Vec<String> = spec.mirrors.iter().map(|m| m.namespace.clone()).collect();
    check_namespaces("mirrors", &mirrored)?;
    for m in &spec.mirrors {
        if spec.namespaces.contains(&m.namespace) {
            return Err(invalid(
                "InvalidSpec",
                format!(
                    "mirrors: namespace {:?} is owned by this hub and cannot be mirrored",
                    m.namespace
                ),
            ));
        }
        match (&m.hub_ref, &m.address) {
            (Some(_), None) => {}
            (None, Some(a)) => check_address("mirrors.address", a)?,
            _ => {
                return Err(invalid(
                    "InvalidSpec",
                    format!(
                        "mirrors[{}]: exactly one of hubRef or address must be set",
                        m.namespace
                    ),
                ))
            }
        }
    }
    check_size(&spec.node.storage)?;
    nodeconfig::check_extra_for(&spec.node.extra_config, spec.is_group())
        .map_err(|e| invalid("InvalidConfig", e.to_string()))
}

/// Rules for a relayer spec.
pub fn relayer(spec: &UnisonRelayerSpec) -> Result<(), Invalid> {
    check_image(&spec.node)?;
    check_tls(&spec.node)?;
    let u = &spec.upstream;
    let set = [
        u.hub_ref.is_some(),
        u.relayer_ref.is_some(),
        u.address.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set > 1 || (set == 0 && u.object_store.is_none()) {
        return Err(invalid(
            "InvalidUpstream",
            "exactly one of upstream.hubRef, upstream.relayerRef or upstream.address must be set \
             (or upstream.objectStore alone)",
        ));
    }
    if set == 0 && spec.namespaces.is_empty() {
        return Err(invalid(
            "InvalidSpec",
            "namespaces must be listed when the upstream is only an object store",
        ));
    }
    if let Some(a) = &u.address {
        check_address("upstream.address", a)?;
        if spec.namespaces.is_empty() {
            return Err(invalid(
                "InvalidSpec",
                "namespaces must be listed when upstream is a raw address",
            ));
        }
    }
    if spec.replicas < 0 {
        return Err(invalid("InvalidSpec", "replicas must be >= 0"));
    }
    check_namespaces("namespaces", &spec.namespaces)?;
    check_storage_and_extra(&spec.node)
}

/// The namespaces a relayer will replicate: its request (which must be a subset of what the
/// upstream serves) or, when empty, everything the upstream serves.
pub fn effective_namespaces(
    requested: &[String],
    upstream: Option<&[String]>,
) -> Result<Vec<String>, Invalid> {
    match upstream {
        None => Ok(requested.to_vec()),
        Some(up) if requested.is_empty() => Ok(up.to_vec()),
        Some(up) => {
            let missing: Vec<&String> = requested.iter().filter(|n| !up.contains(n)).collect();
            if missing.is_empty() {
                Ok(requested.to_vec())
            } else {
                Err(invalid(
                    "NamespaceNotInUpstream",
                    format!(
                        "namespaces {missing:?} are not served by the upstream (serves {up:?})"
                    ),
                ))
            }
        }
    }
}
