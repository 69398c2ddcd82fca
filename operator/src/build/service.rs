//! The headless Service (stable pod DNS for the StatefulSet; hub groups' peers find each other
//! through it) and the client Service (HTTP API, gRPC replication, ZeroMQ notifications, metrics);
//! for hub groups also the read and followers Services. Every port sets `protocol: TCP` explicitly:
//! server-side apply on older API servers rejects ports without it.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{names, selector_labels, NodeBuild};
use crate::group::{ROLE_FOLLOWER, ROLE_LABEL, ROLE_LEADER};
use crate::nodeconfig::{GRPC_PORT, HTTP_PORT};

/// Port the client Service exposes metrics on (targets the node's HTTP port, which serves `/metrics`).
pub const METRICS_PORT: i32 = 9090;

fn port(name: &str, port: i32, target: IntOrString) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(target),
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

fn node_ports(b: &NodeBuild<'_>) -> Vec<ServicePort> {
    let mut ports = vec![
        port("http", HTTP_PORT, IntOrString::String("http".into())),
        port("grpc", GRPC_PORT, IntOrString::String("grpc".into())),
    ];
    if b.spec.notifications.enabled {
        let p = b.spec.notifications.port;
        ports.push(port("zmq", p, IntOrString::String("zmq".into())));
    }
    ports
}

/// Headless Service governing the StatefulSet; publishes not-ready pods so peers can find them.
pub fn headless(b: &NodeBuild<'_>) -> Service {
    Service {
        metadata: b.meta(names::headless_service(&b.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&b.name, b.component)),
            ports: Some(node_ports(b)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod selector of a Service, narrowed to pods labelled `role` (hub groups).
fn selector_for(
    b: &NodeBuild<'_>,
    role: Option<&str>,
) -> std::collections::BTreeMap<String, String> {
    let mut s = selector_labels(&b.name, b.component);
    if let Some(role) = role {
        s.insert(ROLE_LABEL.to_string(), role.to_string());
    }
    s
}

/// Client Service: what applications and downstream relayers connect to. For a hub group it
/// routes to the pod the operator labels leader (the name stays, so clients need no change).
pub fn client(b: &NodeBuild<'_>) -> Service {
    let mut meta = b.meta(names::client_service(&b.name));
    if !b.spec.service.annotations.is_empty() {
        meta.annotations = Some(b.spec.service.annotations.clone());
    }
    let mut ports = node_ports(b);
    ports.push(port(
        "metrics",
        METRICS_PORT,
        IntOrString::String("http".into()),
    ));
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(b.spec.service.type_.as_str().to_string()),
            selector: Some(selector_for(b, b.group.then_some(ROLE_LEADER))),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Hub groups: `<name>-ro` over every member (reads; relayers' fallback) and `<name>-followers`
/// over the members that do not lead (what relayers follow first); nothing for a single hub or a relayer.
pub fn group(b: &NodeBuild<'_>) -> Vec<Service> {
    if !b.group {
        return Vec::new();
    }
    let mut ports = node_ports(b);
    ports.push(port(
        "metrics",
        METRICS_PORT,
        IntOrString::String("http".into()),
    ));
    [
        (names::read_service(&b.name), None),
        (names::followers_service(&b.name), Some(ROLE_FOLLOWER)),
    ]
    .into_iter()
    .map(|(name, role)| Service {
        metadata: b.meta(name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_for(b, role)),
            ports: Some(ports.clone()),
            ..Default::default()
        }),
        ..Default::default()
    })
    .collect()
}
