//! The cert-manager `Certificate` (`cert-manager.io/v1`) for `spec.tls.certManager`: one per hub
//! or relayer, valid for every name a peer or client may dial (the client Service, the headless
//! Service and each pod behind it), for server and client auth (the same certificate serves both
//! ends of mTLS). Untyped (no cert-manager crate): a JSON object for server-side apply.

use kube::api::{ApiResource, GroupVersionKind};
use serde_json::{json, Value};

use super::{names, NodeBuild};

/// API group and version of cert-manager's Certificate.
pub const GROUP: &str = "cert-manager.io";
pub const VERSION: &str = "v1";
pub const KIND: &str = "Certificate";
pub const PLURAL: &str = "certificates";

/// The Certificate's API resource, for `Api<DynamicObject>`.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// Every DNS name the node answers to: the client Service (short, namespaced, `.svc` and fully
/// qualified forms), the headless Service, and each pod (`<pod>.<name>-headless...`, a wildcard).
pub fn dns_names(instance: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    let client = names::client_service(instance);
    let headless = names::headless_service(instance);
    vec![
        client.clone(),
        format!("{client}.{namespace}"),
        format!("{client}.{namespace}.svc"),
        format!("{client}.{namespace}.svc.{cluster_domain}"),
        headless.clone(),
        format!("{headless}.{namespace}"),
        format!("{headless}.{namespace}.svc"),
        format!("{headless}.{namespace}.svc.{cluster_domain}"),
        format!("*.{headless}.{namespace}.svc"),
        format!("*.{headless}.{namespace}.svc.{cluster_domain}"),
    ]
}

/// Hub groups: the read and followers Services, in the same four forms.
pub fn group_dns_names(instance: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    [
        names::read_service(instance),
        names::followers_service(instance),
    ]
    .into_iter()
    .flat_map(|svc| {
        [
            svc.clone(),
            format!("{svc}.{namespace}"),
            format!("{svc}.{namespace}.svc"),
            format!("{svc}.{namespace}.svc.{cluster_domain}"),
        ]
    })
    .collect()
}

/// The Certificate, or `None` when the spec does not ask cert-manager for one.
pub fn build(b: &NodeBuild<'_>, cluster_domain: &str) -> Option<Value> {
    let tls = b.spec.tls.as_ref()?;
    let cm = tls.cert_manager.as_ref()?;
    let meta = b.meta(names::certificate(&b.name));
    let mut issuer = json!({ "name": cm.issuer_ref.name, "kind": cm.issuer_ref.kind.as_str() });
    issuer["group"] = json!(cm.issuer_ref.group.as_deref().unwrap_or(GROUP));
    let mut dns = dns_names(&b.name, &b.namespace, cluster_domain);
    if b.group {
        dns.extend(group_dns_names(&b.name, &b.namespace, cluster_domain));
    }
    let mut spec = json!({
        "secretName": names::tls_secret(&b.name),
        "dnsNames": dns,
        "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
        "privateKey": { "algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Always" },
        "issuerRef": issuer,
        "secretTemplate": { "labels": meta.labels },
    });
    if let Some(d) = &cm.duration {
        spec["duration"] = json!(d);
    }
    if let Some(r) = &cm.renew_before {
        spec["renewBefore"] = json!(r);
    }
    Some(json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": meta,
        "spec": spec,
    }))
}
