//! The StatefulSet running the node. Only fields a Kubernetes 1.20 API server knows are emitted
//! (server-side apply rejects unknown fields there); newer ones appear only if the user sets them in
//! a passthrough field such as `affinity`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction,
    LocalObjectReference, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretVolumeSource, SecurityContext, TopologySpreadConstraint, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{labels, names, selector_labels, Component, NodeBuild, CONFIG_HASH_ANNOTATION};
use crate::nodeconfig::{
    AUTH_DIR, CONFIG_DIR, CONFIG_FILE, DATA_DIR, GRPC_PORT, HTTP_PORT, TLS_DIR,
};
use crate::objectstore::SecretMount;

/// Non-root uid/gid (the image's `nonroot` user).
pub const RUN_AS: i64 = 65532;
pub const CONTAINER_NAME: &str = "unisondb";
pub const DATA_VOLUME: &str = "data";
/// Name prefix of the recovery init containers (`restore-0`, `restore-1`, ... in namespace order).
pub const RESTORE_CONTAINER: &str = "restore";

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

/// `HTTPS` when `spec.tls.http` puts the API behind TLS (the kubelet does not verify it).
fn http_scheme(b: &NodeBuild<'_>) -> &'static str {
    if b.spec.tls.as_ref().is_some_and(|t| t.http) {
        "HTTPS"
    } else {
        "HTTP"
    }
}

fn http_probe(scheme: &str, path: &str, initial: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".into()),
            scheme: Some(scheme.into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Spread replicas across hosts when possible, never require it.
fn default_affinity(b: &NodeBuild<'_>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".to_string(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(&b.name, b.component)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Spread replicas across zones when the cluster has them; never block scheduling for it.
fn default_spread(b: &NodeBuild<'_>) -> Vec<TopologySpreadConstraint> {
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "topology.kubernetes.io/zone".into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(&b.name, b.component)),
            ..Default::default()
        }),
        ..Default::default()
    }]
}

/// Holds liveness off until the node answers once: recovery of a large WAL may take long.
fn startup_probe(scheme: &str, timeout_seconds: i32) -> Probe {
    const PERIOD: i32 = 5;
    let mut p = http_probe(
        scheme,
        "/healthz",
        0,
        PERIOD,
        (timeout_seconds / PERIOD).max(1),
    );
    p.initial_delay_seconds = None;
    p
}

fn container(b: &NodeBuild<'_>) -> Container {
    let mut ports = vec![
        container_port("http", HTTP_PORT),
        container_port("grpc", GRPC_PORT),
    ];
    if b.spec.notifications.enabled {
        ports.push(container_port("zmq", b.spec.notifications.port));
    }
    let mut mounts = vec![
        VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: DATA_DIR.into(),
            ..Default::default()
        },
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    if b.tls_secret.is_some() {
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if b.spec.http_auth.is_some() {
        mounts.push(VolumeMount {
            name: "auth".into(),
            mount_path: AUTH_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    mounts.extend(b.stores.mounts.iter().map(secret_mount));
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(b.image.clone()),
        image_pull_policy: b.spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: Some(vec!["unisondb".into()]),
        args: Some(vec![
            "server".into(),
            "--mode".into(),
            b.component.mode().as_str().into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        ]),
        ports: Some(ports),
        startup_probe: Some(startup_probe(
            http_scheme(b),
            b.spec.pod.startup_timeout_seconds,
        )),
        liveness_probe: Some(http_probe(http_scheme(b), "/healthz", 0, 10, 6)),
        readiness_probe: Some(http_probe(http_scheme(b), "/readyz", 2, 5, 3)),
        resources: b.spec.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(container_security()),
        ..Default::default()
    }
}

/// No privileges, read-only root: the node, the restore steps and backup Jobs alike.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secret_mount(m: &SecretMount) -> VolumeMount {
    VolumeMount {
        name: m.volume.clone(),
        mount_path: m.path.clone(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// `spec.bootstrap.recovery`: one init container per owned namespace, each restoring it into the
/// data volume unless it already holds data (`--if-empty`), so a restarted pod never restores again.
fn restore_containers(b: &NodeBuild<'_>) -> Option<Vec<Container>> {
    if b.stores.restore.is_empty() {
        return None;
    }
    let mut mounts = vec![VolumeMount {
        name: DATA_VOLUME.into(),
        mount_path: DATA_DIR.into(),
        ..Default::default()
    }];
    mounts.extend(b.stores.restore_mounts.iter().map(secret_mount));
    Some(
        b.stores
            .restore
            .iter()
            .enumerate()
            .map(|(i, step)| Container {
                name: format!("{RESTORE_CONTAINER}-{i}"),
                image: Some(b.image.clone()),
                image_pull_policy: b.spec.image_pull_policy.map(|p| p.as_str().to_string()),
                command: Some(vec!["unisondb".into()]),
                args: Some(step.args.clone()),
                resources: b.spec.resources.clone(),
                volume_mounts: Some(mounts.clone()),
                security_context: Some(container_security()),
                ..Default::default()
            })
            .collect(),
    )
}

fn volumes(b: &NodeBuild<'_>) -> Vec<Volume> {
    let mut v = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names::configmap(&b.name),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if let Some(secret) = &b.tls_secret {
        v.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(auth) = &b.spec.http_auth {
        v.push(Volume {
            name: "auth".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(auth.secret_name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    for m in b.stores.mounts.iter().chain(&b.stores.restore_mounts) {
        v.push(Volume {
            name: m.volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(m.secret.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    v
}

/// The data volume claim template (immutable once the StatefulSet exists).
pub fn volume_claim_template(b: &NodeBuild<'_>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(selector_labels(&b.name, b.component)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: b.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(b.storage_size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Read back from a StatefulSet (as built here, or as the server returns it): the node container's
/// image, the config hash on the pod template, and the data claim template.
pub mod read {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::PersistentVolumeClaimSpec;

    use crate::build::CONFIG_HASH_ANNOTATION;

    /// Desired replicas (1 when unset, as Kubernetes defaults it).
    pub fn replicas(s: &StatefulSet) -> i32 {
        s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    /// Why `desired` cannot be applied over `existing` (a field Kubernetes never lets change,
    /// e.g. `podManagementPolicy` when a single hub becomes a group), if it cannot: the
    /// StatefulSet must then be recreated, keeping its pods and volumes.
    pub fn immutable_change(existing: &StatefulSet, desired: &StatefulSet) -> Option<String> {
        // The API server fills every one of these in; a field it did not return is not compared.
        let (e, d) = (existing.spec.as_ref()?, desired.spec.as_ref()?);
        if let (Some(from), Some(to)) = (&e.pod_management_policy, &d.pod_management_policy) {
            if from != to {
                return Some(format!("podManagementPolicy {from} -> {to}"));
            }
        }
        if e.service_name.is_some() && e.service_name != d.service_name {
            return Some("serviceName changed".into());
        }
        if e.selector.match_labels.is_some() && e.selector.match_labels != d.selector.match_labels {
            return Some("selector changed".into());
        }
        None
    }

    pub fn image(s: &StatefulSet) -> Option<&str> {
        s.spec
            .as_ref()?
            .template
            .spec
            .as_ref()?
            .containers
            .first()?
            .image
            .as_deref()
    }

    pub fn config_hash(s: &StatefulSet) -> Option<&str> {
        s.spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(CONFIG_HASH_ANNOTATION)
            .map(String::as_str)
    }

    /// The Secret mounted as the `tls` volume, if any.
    pub fn tls_secret(s: &StatefulSet) -> Option<&str> {
        s.spec
            .as_ref()?
            .template
            .spec
            .as_ref()?
            .volumes
            .as_ref()?
            .iter()
            .find(|v| v.name == "tls")?
            .secret
            .as_ref()?
            .secret_name
            .as_deref()
    }

    pub fn claim(s: &StatefulSet) -> Option<&PersistentVolumeClaimSpec> {
        s.spec
            .as_ref()?
            .volume_claim_templates
            .as_ref()?
            .first()?
            .spec
            .as_ref()
    }

    /// The storage the data claim template requests.
    pub fn claim_size(s: &StatefulSet) -> Option<&str> {
        claim(s)?
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("storage")
            .map(|q| q.0.as_str())
    }
}

pub fn build(b: &NodeBuild<'_>) -> StatefulSet {
    let mut pod_annotations = b.spec.pod.annotations.clone();
    pod_annotations.extend([
        (CONFIG_HASH_ANNOTATION.to_string(), b.config.hash.clone()),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), HTTP_PORT.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    if http_scheme(b) == "HTTPS" {
        pod_annotations.insert("prometheus.io/scheme".into(), "https".into());
    }
    let mut pod_labels = b.spec.pod.labels.clone();
    pod_labels.extend(labels(&b.name, b.component));
    let scheduling = &b.spec.scheduling;
    let pull_secrets: Vec<LocalObjectReference> = b
        .spec
        .image_pull_secrets
        .iter()
        .map(|s| LocalObjectReference { name: s.clone() })
        .collect();
    let pod = PodSpec {
        containers: vec![container(b)],
        init_containers: restore_containers(b),
        volumes: Some(volumes(b)),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        affinity: Some(
            scheduling
                .affinity
                .clone()
                .unwrap_or_else(|| default_affinity(b)),
        ),
        node_selector: (!scheduling.node_selector.is_empty())
            .then(|| scheduling.node_selector.clone()),
        tolerations: (!scheduling.tolerations.is_empty()).then(|| scheduling.tolerations.clone()),
        topology_spread_constraints: Some(
            scheduling
                .topology_spread_constraints
                .clone()
                .unwrap_or_else(|| default_spread(b)),
        )
        .filter(|c| !c.is_empty()),
        priority_class_name: scheduling.priority_class_name.clone(),
        image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
        termination_grace_period_seconds: Some(b.spec.pod.termination_grace_period_seconds),
        // Kubernetes injects one env var per Service of the namespace otherwise, and a Service named
        // `unisondb...` produces `UNISONDB_*` variables the node would read as configuration.
        enable_service_links: Some(false),
        service_account_name: Some(names::service_account(&b.name)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    StatefulSet {
        metadata: b.meta(names::statefulset(&b.name)),
        spec: Some(StatefulSetSpec {
            replicas: Some(b.replicas),
            service_name: Some(names::headless_service(&b.name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&b.name, b.component)),
                ..Default::default()
            },
            // Relayers are interchangeable: start and stop them in parallel. A single hub is one
            // pod; a hub group's members must all start for the first election (a quorum), so in
            // parallel too (the policy is immutable, and 1 <-> 3 members is refused).
            pod_management_policy: Some(
                match b.component {
                    Component::Hub if !b.group => "OrderedReady",
                    Component::Hub | Component::Relayer => "Parallel",
                }
                .into(),
            ),
            // Hub groups: the operator replaces outdated pods itself, followers first and the
            // leader last after a step-down (group::rollout), instead of the StatefulSet
            // controller's highest-ordinal-first order, which may restart the leader first.
            update_strategy: b.group.then(|| StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![volume_claim_template(b)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
