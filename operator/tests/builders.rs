//! Builder unit tests from YAML fixtures: exact labels, ports, args, owner refs, config content,
//! and config-hash behaviour.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{ApiResource, GroupVersionKind};
use serde_yaml_ng::Value;
use unisondb_operator::build::{
    self, names, Component, NodeBuild, PdbPlan, CONFIG_HASH_ANNOTATION, DEFAULT_NODE_IMAGE,
};
use unisondb_operator::crd::{UnisonHub, UnisonRelayer};
use unisondb_operator::kind::Target;
use unisondb_operator::nodeconfig::{self, ConfigInput, Mode, RenderedConfig};
use unisondb_operator::validate::{self, Validated, Wiring};

fn hub() -> UnisonHub {
    serde_yaml_ng::from_str(include_str!("fixtures/hub.yaml")).expect("hub fixture parses")
}

fn relayer() -> UnisonRelayer {
    serde_yaml_ng::from_str(include_str!("fixtures/relayer.yaml")).expect("relayer fixture parses")
}

const HUB_URL: &str = "http://hub-a.prod.svc.cluster.local:4001";

fn hub_config(h: &UnisonHub) -> RenderedConfig {
    let mirrors: BTreeMap<String, String> = h
        .spec
        .mirrors
        .iter()
        .map(|m| (m.namespace.clone(), m.address.clone().unwrap_or_default()))
        .collect();
    nodeconfig::render(&ConfigInput {
        mode: Mode::Replicator,
        namespaces: h.spec.namespaces.clone(),
        spec: &h.spec.node,
        upstream: None,
        mirrors,
        archive: None,
        object_store: None,
        peers: None,
    })
    .expect("hub config renders")
}

fn relayer_config(r: &UnisonRelayer) -> RenderedConfig {
    nodeconfig::render(&ConfigInput {
        mode: Mode::Relayer,
        namespaces: r.spec.namespaces.clone(),
        spec: &r.spec.node,
        upstream: Some(HUB_URL.to_string()),
        mirrors: BTreeMap::new(),
        archive: None,
        object_store: None,
        peers: None,
    })
    .expect("relayer config renders")
}

/// The documented config, parsed from the YAML block in docs/CONFIG.md.
fn documented_config() -> Value {
    let doc = include_str!("../../docs/CONFIG.md");
    let start = doc.find("```yaml").expect("CONFIG.md has a yaml block") + "```yaml".len();
    let end = start + doc[start..].find("```").expect("yaml block closes");
    serde_yaml_ng::from_str(&doc[start..end]).expect("CONFIG.md yaml parses")
}

fn keys(v: &Value) -> Vec<String> {
    v.as_mapping()
        .expect("mapping")
        .keys()
        .map(|k| k.as_str().expect("string key").to_string())
        .collect()
}

#[test]
fn config_has_exactly_the_documented_sections_and_keys() {
    let documented = documented_config();
    for rendered in [hub_config(&hub()).yaml, relayer_config(&relayer()).yaml] {
        let got: Value = serde_yaml_ng::from_str(&rendered).expect("rendered yaml parses");
        assert_eq!(keys(&got), keys(&documented), "sections and their order");
        for section in keys(&documented) {
            let mut want = keys(&documented[section.as_str()]);
            let mut have = keys(&got[section.as_str()]);
            want.sort();
            have.sort();
            assert_eq!(have, want, "keys of section {section}");
            // same value types as the documented defaults
            for k in &want {
                let (d, g) = (
                    &documented[section.as_str()][k.as_str()],
                    &got[section.as_str()][k.as_str()],
                );
                assert_eq!(
                    std::mem::discriminant(d),
                    std::mem::discriminant(g),
                    "type of {section}.{k}: documented {d:?}, rendered {g:?}"
                );
            }
        }
    }
}

#[test]
fn hub_config_content() {
    let cfg: Value = serde_yaml_ng::from_str(&hub_config(&hub()).yaml).unwrap();
    assert_eq!(cfg["server"]["mode"], Value::from("replicator"));
    assert_eq!(cfg["server"]["data_dir"], Value::from("/var/lib/unisondb"));
    assert_eq!(
        cfg["server"]["namespaces"],
        serde_yaml_ng::from_str::<Value>("[orders, users]").unwrap()
    );
    assert_eq!(cfg["http"]["listen"], Value::from("0.0.0.0:4000"));
    assert_eq!(cfg["grpc"]["listen"], Value::from("0.0.0.0:4001"));
    assert_eq!(cfg["notify"]["bind"], Value::from("tcp://0.0.0.0:4002"));
    assert_eq!(cfg["wal"]["fsync"], Value::from("interval"));
    assert_eq!(cfg["wal"]["fsync_interval_ms"], Value::from(5));
    assert_eq!(cfg["wal"]["segment_size_bytes"], Value::from(33554432));
    assert_eq!(cfg["replication"]["upstream"], Value::from(""));
    assert_eq!(
        cfg["replication"]["mirrors"]["catalog"],
        Value::from("http://hub-b.other.svc.cluster.local:4001")
    );
    // extraConfig passthrough
    assert_eq!(cfg["log"]["level"], Value::from("debug"));
    assert_eq!(cfg["memtable"]["size_bytes"], Value::from(1048576));
    // no TLS configured
    assert_eq!(cfg["grpc"]["tls_cert_file"], Value::from(""));
}

#[test]
fn relayer_config_content() {
    let cfg: Value = serde_yaml_ng::from_str(&relayer_config(&relayer()).yaml).unwrap();
    assert_eq!(cfg["server"]["mode"], Value::from("relayer"));
    assert_eq!(cfg["replication"]["upstream"], Value::from(HUB_URL));
    assert_eq!(cfg["notify"]["enabled"], Value::from(false));
    assert_eq!(
        cfg["grpc"]["tls_cert_file"],
        Value::from("/etc/unisondb/tls/tls.crt")
    );
    assert_eq!(
        cfg["grpc"]["tls_ca_file"],
        Value::from("/etc/unisondb/tls/ca.crt")
    );
    assert_eq!(
        cfg["replication"]["tls_key_file"],
        Value::from("/etc/unisondb/tls/tls.key")
    );
    assert_eq!(
        cfg["http"]["auth_token_file"],
        Value::from("/etc/unisondb/auth/token")
    );
    assert_eq!(
        cfg["replication"]["mirrors"],
        serde_yaml_ng::from_str::<Value>("{}").unwrap()
    );
}

#[test]
fn extra_config_rejects_unknown_managed_and_mistyped_keys() {
    let mut h = hub();
    h.spec.node.extra_config = serde_yaml_ng::from_str("{nope: {a: 1}}").unwrap();
    assert!(matches!(
        nodeconfig::check_extra(&h.spec.node.extra_config),
        Err(nodeconfig::ConfigError::UnknownSection(_))
    ));
    h.spec.node.extra_config = serde_yaml_ng::from_str("{wal: {fsink: always}}").unwrap();
    assert!(matches!(
        nodeconfig::check_extra(&h.spec.node.extra_config),
        Err(nodeconfig::ConfigError::UnknownKey(..))
    ));
    h.spec.node.extra_config =
        serde_yaml_ng::from_str("{replication: {upstream: 'http://x:1'}}").unwrap();
    assert!(matches!(
        nodeconfig::check_extra(&h.spec.node.extra_config),
        Err(nodeconfig::ConfigError::Managed(..))
    ));
    h.spec.node.extra_config = serde_yaml_ng::from_str("{wal: {segment_size_bytes: big}}").unwrap();
    assert!(matches!(
        nodeconfig::check_extra(&h.spec.node.extra_config),
        Err(nodeconfig::ConfigError::WrongType(..))
    ));
    h.spec.node.extra_config =
        serde_yaml_ng::from_str("{replication: {max_lag_records: 5}}").unwrap();
    assert_eq!(nodeconfig::check_extra(&h.spec.node.extra_config), Ok(()));
}

fn template_hash(sts: &StatefulSet) -> String {
    sts.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[CONFIG_HASH_ANNOTATION]
        .clone()
}

#[test]
fn config_hash_changes_with_config_and_only_then() {
    let h = hub();
    let c1 = hub_config(&h);
    assert_eq!(c1, hub_config(&h), "rendering is deterministic");
    // image change: config (and hash) unchanged
    let mut h2 = h.clone();
    h2.spec.node.image = Some("unisondb:0.2.0".into());
    let c2 = hub_config(&h2);
    assert_eq!(c1.hash, c2.hash);
    // config change: hash changes, and reaches the pod template
    let mut h3 = h.clone();
    h3.spec.node.wal.fsync = unisondb_operator::crd::FsyncPolicy::Never;
    let c3 = hub_config(&h3);
    assert_ne!(c1.hash, c3.hash);
    let s1 = build::statefulset::build(&NodeBuild::of(&h, &c1).unwrap());
    let s3 = build::statefulset::build(&NodeBuild::of(&h3, &c3).unwrap());
    assert_eq!(template_hash(&s1), c1.hash);
    assert_eq!(template_hash(&s3), c3.hash);
    assert_eq!(c1.hash, nodeconfig::hash(&c1.yaml));
}

fn expected_labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "unisondb".into()),
        ("app.kubernetes.io/instance".into(), instance.into()),
        ("app.kubernetes.io/component".into(), component.into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "unisondb-operator".into(),
        ),
        ("app.kubernetes.io/part-of".into(), "unisondb".into()),
    ])
}

#[test]
fn hub_statefulset() {
    let h = hub();
    let cfg = hub_config(&h);
    let b = NodeBuild::of(&h, &cfg).unwrap();
    let sts = build::statefulset::build(&b);
    let m = &sts.metadata;
    assert_eq!(m.name.as_deref(), Some("hub-a"));
    assert_eq!(m.namespace.as_deref(), Some("prod"));
    assert_eq!(m.labels.as_ref().unwrap(), &expected_labels("hub-a", "hub"));
    let owner = &m.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "UnisonHub");
    assert_eq!(owner.api_version, "unisondb.io/v1alpha1");
    assert_eq!(owner.name, "hub-a");
    assert_eq!(owner.uid, "11111111-2222-3333-4444-555555555555");
    assert_eq!(owner.controller, Some(true));

    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.service_name.as_deref(), Some("hub-a-headless"));
    let sel = spec.selector.match_labels.as_ref().unwrap();
    assert_eq!(sel.len(), 3);
    assert_eq!(sel["app.kubernetes.io/component"], "hub");
    let tpl = &spec.template;
    let ann = tpl.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "4000");
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    let pod = tpl.spec.as_ref().unwrap();
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.fs_group),
        (Some(65532), Some(65532), Some(65532))
    );
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
    let anti = pod
        .affinity
        .as_ref()
        .unwrap()
        .pod_anti_affinity
        .as_ref()
        .unwrap();
    assert_eq!(
        anti.preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()[0]
            .weight,
        100
    );
    assert!(anti
        .required_during_scheduling_ignored_during_execution
        .is_none());

    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("unisondb:0.1.0"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(c.command.as_ref().unwrap(), &vec!["unisondb".to_string()]);
    assert_eq!(
        c.args.as_ref().unwrap(),
        &[
            "server",
            "--mode",
            "replicator",
            "--config",
            "/etc/unisondb/config.yaml"
        ]
        .map(String::from)
        .to_vec()
    );
    let ports: Vec<(String, i32)> = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        vec![
            ("http".into(), 4000),
            ("grpc".into(), 4001),
            ("zmq".into(), 4002)
        ]
    );
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    let mounts: Vec<(&str, &str)> = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert_eq!(
        mounts,
        vec![("data", "/var/lib/unisondb"), ("config", "/etc/unisondb")]
    );

    let vct = &spec.volume_claim_templates.as_ref().unwrap()[0];
    let vspec = vct.spec.as_ref().unwrap();
    assert_eq!(vspec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        vspec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "20Gi"
    );

    // Only fields a 1.20 API server knows.
    let json = serde_json::to_string(&sts).unwrap();
    for newer in [
        "minReadySeconds",
        "persistentVolumeClaimRetentionPolicy",
        "ordinals",
        "hostUsers",
    ] {
        assert!(!json.contains(newer), "{newer} must not be emitted");
    }
}

/// Pod settings: the hub fixture's defaults (startup probe from the default timeout, grace 30 s,
/// zone spread, own ServiceAccount without token, no service links), then every override.
#[test]
fn pod_settings_defaults_and_overrides() {
    let h = hub();
    let cfg = hub_config(&h);
    let sts = build::statefulset::build(&NodeBuild::of(&h, &cfg).unwrap());
    let pod = sts.spec.as_ref().unwrap().template.spec.clone().unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    assert_eq!(pod.enable_service_links, Some(false));
    assert_eq!(pod.service_account_name.as_deref(), Some("hub-a"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.priority_class_name, None);
    let spread = pod
        .topology_spread_constraints
        .as_ref()
        .expect("default spread");
    assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
    assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
    let c = &pod.containers[0];
    let startup = c.startup_probe.as_ref().expect("startup probe");
    assert_eq!(
        startup.http_get.as_ref().unwrap().path.as_deref(),
        Some("/healthz")
    );
    // 30 minutes of recovery before liveness may kill the pod
    assert_eq!(
        startup.period_seconds.unwrap() * startup.failure_threshold.unwrap(),
        1800
    );
    let sa = build::serviceaccount::build(&NodeBuild::of(&h, &cfg).unwrap());
    assert_eq!(sa.metadata.name.as_deref(), Some("hub-a"));
    assert_eq!(sa.automount_service_account_token, Some(false));
    assert_eq!(
        sa.metadata.owner_references.as_ref().unwrap()[0].name,
        "hub-a"
    );

    let mut h2 = h.clone();
    let over: serde_json::Value = serde_json::json!({
        "labels": {"team": "edge", "app.kubernetes.io/name": "mine"},
        "annotations": {"example.com/a": "1", "prometheus.io/port": "1"},
        "terminationGracePeriodSeconds": 90,
        "startupTimeoutSeconds": 60
    });
    h2.spec.node.pod = serde_json::from_value(over).expect("pod settings parse");
    h2.spec.node.scheduling.priority_class_name = Some("critical".into());
    h2.spec.node.scheduling.topology_spread_constraints = Some(Vec::new());
    let cfg2 = hub_config(&h2);
    let sts = build::statefulset::build(&NodeBuild::of(&h2, &cfg2).unwrap());
    let tpl = &sts.spec.as_ref().unwrap().template;
    let meta = tpl.metadata.as_ref().unwrap();
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(labels["team"], "edge");
    assert_eq!(
        labels["app.kubernetes.io/name"], "unisondb",
        "the operator's labels win"
    );
    let ann = meta.annotations.as_ref().unwrap();
    assert_eq!(ann["example.com/a"], "1");
    assert_eq!(
        ann["prometheus.io/port"], "4000",
        "the operator's annotations win"
    );
    let pod = tpl.spec.as_ref().unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(90));
    assert_eq!(pod.priority_class_name.as_deref(), Some("critical"));
    assert_eq!(
        pod.topology_spread_constraints, None,
        "[] turns the default off"
    );
    let startup = pod.containers[0].startup_probe.as_ref().unwrap();
    assert_eq!(
        startup.period_seconds.unwrap() * startup.failure_threshold.unwrap(),
        60
    );
    // the selector is untouched by user labels
    assert_eq!(
        sts.spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn relayer_statefulset_mounts_tls_and_auth() {
    let r = relayer();
    let cfg = relayer_config(&r);
    let b = NodeBuild::of(&r, &cfg).unwrap();
    let sts = build::statefulset::build(&b);
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let pod = spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.args.as_ref().unwrap()[2], "relayer");
    let ports: Vec<&str> = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.name.as_deref().unwrap())
        .collect();
    assert_eq!(
        ports,
        vec!["http", "grpc"],
        "notifications disabled: no zmq port"
    );
    let vols: BTreeMap<&str, Option<&str>> = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
            )
        })
        .collect();
    assert_eq!(vols["tls"], Some("edge-tls"));
    assert_eq!(vols["auth"], Some("edge-auth"));
    assert_eq!(
        sts.metadata.owner_references.as_ref().unwrap()[0].kind,
        "UnisonRelayer"
    );
    assert_eq!(
        sts.metadata.labels.as_ref().unwrap(),
        &expected_labels("edge", "relayer")
    );
}

#[test]
fn services_set_tcp_and_expected_ports() {
    let h = hub();
    let cfg = hub_config(&h);
    let b = NodeBuild::of(&h, &cfg).unwrap();
    let headless = build::service::headless(&b);
    let client = build::service::client(&b);
    assert_eq!(headless.metadata.name.as_deref(), Some("hub-a-headless"));
    assert_eq!(client.metadata.name.as_deref(), Some("hub-a"));
    let hs = headless.spec.as_ref().unwrap();
    assert_eq!(hs.cluster_ip.as_deref(), Some("None"));
    assert_eq!(hs.publish_not_ready_addresses, Some(true));
    let cs = client.spec.as_ref().unwrap();
    assert_eq!(cs.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        client.metadata.annotations.as_ref().unwrap()["example.com/lb"],
        "internal"
    );
    let ports: Vec<(String, i32, String)> = cs
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap(),
                p.port,
                p.protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        vec![
            ("http".into(), 4000, "TCP".into()),
            ("grpc".into(), 4001, "TCP".into()),
            ("zmq".into(), 4002, "TCP".into()),
            ("metrics".into(), 9090, "TCP".into()),
        ]
    );
    for p in hs.ports.as_ref().unwrap() {
        assert_eq!(p.protocol.as_deref(), Some("TCP"));
    }
    assert_eq!(
        cs.selector.as_ref().unwrap(),
        &build::selector_labels("hub-a", Component::Hub)
    );
}

#[test]
fn configmap_holds_rendered_config() {
    let h = hub();
    let cfg = hub_config(&h);
    let cm = build::configmap::build(&NodeBuild::of(&h, &cfg).unwrap());
    assert_eq!(cm.metadata.name.as_deref(), Some("hub-a-config"));
    assert_eq!(cm.data.as_ref().unwrap()["config.yaml"], cfg.yaml);
    assert_eq!(
        cm.metadata.owner_references.as_ref().unwrap()[0].controller,
        Some(true)
    );
}

#[test]
fn pdb_only_above_one_replica() {
    let mut r = relayer();
    let cfg = relayer_config(&r);
    let pdb = build::pdb::build(&NodeBuild::of(&r, &cfg).unwrap(), "policy/v1beta1")
        .expect("3 replicas get a PDB");
    assert_eq!(pdb["apiVersion"], "policy/v1beta1");
    assert_eq!(pdb["kind"], "PodDisruptionBudget");
    assert_eq!(pdb["metadata"]["name"], "edge");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        "edge"
    );
    assert_eq!(pdb["metadata"]["ownerReferences"][0]["controller"], true);
    r.spec.replicas = 1;
    assert!(build::pdb::build(&NodeBuild::of(&r, &cfg).unwrap(), "policy/v1").is_none());
}

#[test]
fn names_and_selector() {
    assert_eq!(
        names::grpc_endpoint("hub-a", "prod", "cluster.local", false),
        HUB_URL
    );
    assert_eq!(
        names::grpc_endpoint("r", "ns", "example.org", true),
        "https://r.ns.svc.example.org:4001"
    );
    assert_eq!(
        build::selector_string("edge", Component::Relayer),
        "app.kubernetes.io/component=relayer,app.kubernetes.io/instance=edge,app.kubernetes.io/name=unisondb"
    );
}

#[test]
fn crds_in_repo_match_generated() {
    let generated = unisondb_operator::crd::crds_yaml().unwrap();
    let committed = include_str!("../../crds/unisondb.io_crds.yaml");
    assert!(
        generated == committed,
        "crds/ drifted from the Rust types: run `unisondb-operator crd > crds/unisondb.io_crds.yaml`"
    );
    // scale subresource and CEL rules are present
    assert!(generated.contains("specReplicasPath: .spec.replicas"));
    assert!(generated.contains("labelSelectorPath: .status.selector"));
    assert!(generated.contains("x-kubernetes-validations"));
}

#[test]
fn rendered_configs_are_accepted_by_the_real_node_parser() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, rendered) in [
        ("hub", hub_config(&hub())),
        ("relayer", relayer_config(&relayer())),
    ] {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, &rendered.yaml).expect("write config");
        let cfg = unisondb::config::Config::parse_file(&path)
            .unwrap_or_else(|e| panic!("node rejects the {name} config: {e}\n{}", rendered.yaml));
        cfg.validate()
            .unwrap_or_else(|e| panic!("node finds the {name} config invalid: {e}"));
        let want_mode = if name == "hub" {
            "replicator"
        } else {
            "relayer"
        };
        assert!(
            cfg.to_yaml().contains(&format!("mode: {want_mode}")),
            "{name}: mode lost in parsing"
        );
    }
}

/// The build stage's input for the relayer fixture, as `validate` would produce it.
fn validated_relayer(r: &UnisonRelayer) -> Validated<'_> {
    Validated {
        target: Target::of(r).expect("fixture has namespace and uid"),
        component: Component::Relayer,
        replicas: r.spec.replicas,
        spec: &r.spec.node,
        wiring: Wiring {
            namespaces: r.spec.namespaces.clone(),
            upstream: Some(HUB_URL.to_string()),
            mirrors: BTreeMap::new(),
        },
        position: Default::default(),
        storage: validate::storage_plan(&r.spec.node.storage, None).expect("fixture size"),
        stores: Default::default(),
        cluster_domain: "cluster.local".into(),
    }
}

/// A minimal spec (no image) runs the operator's default node image; a spec image wins.
#[test]
fn image_defaults_to_the_operators_node_image() {
    let mut r = relayer();
    r.spec.node.image = None;
    let image = |res: &build::Resources| {
        res.stateful_set
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
    };
    let res = build::build(
        &validated_relayer(&r),
        None,
        "registry.local/unisondb:9.9.9",
    )
    .expect("builds");
    assert_eq!(
        image(&res).as_deref(),
        Some("registry.local/unisondb:9.9.9")
    );
    assert!(
        DEFAULT_NODE_IMAGE.ends_with(env!("CARGO_PKG_VERSION")),
        "{DEFAULT_NODE_IMAGE}"
    );
    r.spec.node.image = Some("mine:1".into());
    let res = build::build(
        &validated_relayer(&r),
        None,
        "registry.local/unisondb:9.9.9",
    )
    .expect("builds");
    assert_eq!(image(&res).as_deref(), Some("mine:1"));
    // a minimal hub parses and validates without an image
    let minimal: UnisonHub = serde_yaml_ng::from_str(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {name: h, namespace: ns}\nspec: {namespaces: [default]}",
    )
    .expect("minimal hub parses");
    assert_eq!(minimal.spec.node.image, None);
    unisondb_operator::validate::hub(&minimal.spec).expect("a minimal hub is valid");
}

#[test]
fn build_stage_returns_every_object_and_the_pdb_plan() {
    let mut r = relayer();
    let policy_v1 = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy", "v1", "PodDisruptionBudget"),
        "poddisruptionbudgets",
    );
    let res =
        build::build(&validated_relayer(&r), Some(&policy_v1), DEFAULT_NODE_IMAGE).expect("builds");
    // the same objects the individual builders make, from the same rendered config
    let cfg = relayer_config(&r);
    assert_eq!(res.config_hash, cfg.hash);
    let b = NodeBuild::of(&r, &cfg).unwrap();
    assert_eq!(res.config_map, build::configmap::build(&b));
    assert_eq!(res.headless_service, build::service::headless(&b));
    assert_eq!(res.client_service, build::service::client(&b));
    assert_eq!(res.stateful_set, build::statefulset::build(&b));
    match &res.pdb {
        PdbPlan::Apply { api, name, object } => {
            assert_eq!(api.api_version, "policy/v1");
            assert_eq!(name, "edge");
            assert_eq!(object["apiVersion"], "policy/v1");
        }
        other => panic!("3 replicas apply a PDB, got {other:?}"),
    }
    let res = build::build(&validated_relayer(&r), None, DEFAULT_NODE_IMAGE).expect("builds");
    assert!(matches!(res.pdb, PdbPlan::Unsupported), "{:?}", res.pdb);

    r.spec.replicas = 1;
    let res =
        build::build(&validated_relayer(&r), Some(&policy_v1), DEFAULT_NODE_IMAGE).expect("builds");
    assert!(
        matches!(&res.pdb, PdbPlan::Delete { name, .. } if name == "edge"),
        "{:?}",
        res.pdb
    );
    let res = build::build(&validated_relayer(&r), None, DEFAULT_NODE_IMAGE).expect("builds");
    assert!(matches!(res.pdb, PdbPlan::Nothing), "{:?}", res.pdb);
    assert_eq!(res.grow_volumes, None);
}

/// A larger size on an existing StatefulSet: the template keeps its size (immutable), the PVCs
/// of the node's pods are to grow.
#[test]
fn larger_storage_keeps_the_template_and_grows_the_volumes() {
    let r = relayer();
    let mut v = validated_relayer(&r);
    v.storage = validate::StoragePlan {
        template_size: "1Gi".into(),
        grow_to: Some("2Gi".into()),
    };
    let res = build::build(&v, None, DEFAULT_NODE_IMAGE).expect("builds");
    let tpl = &res
        .stateful_set
        .spec
        .as_ref()
        .unwrap()
        .volume_claim_templates
        .as_ref()
        .unwrap()[0];
    let req = &tpl
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["storage"];
    assert_eq!(req.0, "1Gi");
    let g = res.grow_volumes.expect("growth planned");
    assert_eq!(g.size, "2Gi");
    assert_eq!(
        g.selector,
        build::selector_string("edge", Component::Relayer)
    );
}

/// `kubectl explain` has something to say about every field we define (embedded core types bring
/// their own descriptions), no `format: uint*` (the API server warns about it), and conditions
/// are a map list keyed by `type` with the standard formats.
#[test]
fn crd_schema_is_described_and_kubernetes_shaped() {
    fn walk(
        s: &serde_json::Value,
        path: &str,
        missing: &mut Vec<String>,
        formats: &mut Vec<String>,
    ) {
        if let Some(f) = s.get("format").and_then(|f| f.as_str()) {
            if f.starts_with("uint") {
                formats.push(format!("{path}: {f}"));
            }
        }
        if let Some(props) = s.get("properties").and_then(|p| p.as_object()) {
            for (k, v) in props {
                let p = format!("{path}.{k}");
                if v.get("description").is_none() {
                    missing.push(p.clone());
                }
                walk(v, &p, missing, formats);
            }
        }
        if let Some(items) = s.get("items") {
            walk(items, &format!("{path}[]"), missing, formats);
        }
        if let Some(extra) = s.get("additionalProperties").filter(|a| a.is_object()) {
            walk(extra, &format!("{path}{{}}"), missing, formats);
        }
    }
    for crd in unisondb_operator::crd::crds() {
        let kind = crd.spec.names.kind.clone();
        let v = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let root = &v["openAPIV3Schema"]["properties"];
        let (mut missing, mut formats) = (Vec::new(), Vec::new());
        walk(&root["spec"], "spec", &mut missing, &mut formats);
        walk(&root["status"], "status", &mut missing, &mut formats);
        assert!(
            missing.is_empty(),
            "{kind}: fields without description: {missing:?}"
        );
        assert!(formats.is_empty(), "{kind}: unsigned formats: {formats:?}");
        let conds = &root["status"]["properties"]["conditions"];
        assert_eq!(conds["x-kubernetes-list-type"], "map", "{kind}");
        assert_eq!(conds["x-kubernetes-list-map-keys"][0], "type", "{kind}");
        let c = &conds["items"]["properties"];
        assert_eq!(c["lastTransitionTime"]["format"], "date-time", "{kind}");
        assert_eq!(
            c["status"]["enum"],
            serde_json::json!(["True", "False", "Unknown"])
        );
    }
}

/// `tls.certManager`: a Certificate for every name the node answers to, for server and client
/// auth, whose Secret (`<name>-tls`) the pods mount; none with a user Secret.
#[test]
fn cert_manager_certificate_covers_services_and_pods() {
    let mut r = relayer();
    r.spec.node.tls = Some(
        serde_yaml_ng::from_str(
            "certManager: {issuerRef: {name: ca, kind: Issuer}, duration: 2160h, renewBefore: 360h}",
        )
        .expect("tls parses"),
    );
    let res = build::build(&validated_relayer(&r), None, DEFAULT_NODE_IMAGE).expect("builds");
    let cert = res.certificate.expect("a Certificate is built");
    let name = r.metadata.name.clone().unwrap();
    let ns = r.metadata.namespace.clone().unwrap();
    assert_eq!(cert["apiVersion"], "cert-manager.io/v1");
    assert_eq!(cert["kind"], "Certificate");
    assert_eq!(cert["metadata"]["name"], name.as_str());
    assert_eq!(cert["metadata"]["namespace"], ns.as_str());
    assert_eq!(
        cert["metadata"]["ownerReferences"][0]["kind"],
        "UnisonRelayer"
    );
    assert_eq!(
        cert["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "unisondb-operator"
    );
    assert_eq!(cert["spec"]["secretName"], format!("{name}-tls"));
    let dns: Vec<String> = serde_json::from_value(cert["spec"]["dnsNames"].clone()).unwrap();
    let h = names::headless_service(&name);
    let want = vec![
        name.clone(),
        format!("{name}.{ns}"),
        format!("{name}.{ns}.svc"),
        format!("{name}.{ns}.svc.cluster.local"),
        h.clone(),
        format!("{h}.{ns}"),
        format!("{h}.{ns}.svc"),
        format!("{h}.{ns}.svc.cluster.local"),
        format!("*.{h}.{ns}.svc"),
        format!("*.{h}.{ns}.svc.cluster.local"),
    ];
    assert_eq!(dns, want);
    // the gRPC endpoint downstream relayers dial is among them
    let endpoint = names::grpc_endpoint(&name, &ns, "cluster.local", true);
    let host = endpoint
        .trim_start_matches("https://")
        .rsplit_once(':')
        .unwrap()
        .0;
    assert!(dns.iter().any(|d| d == host), "{host}");
    let usages: Vec<String> = serde_json::from_value(cert["spec"]["usages"].clone()).unwrap();
    assert!(
        usages.contains(&"server auth".to_string()) && usages.contains(&"client auth".to_string())
    );
    assert_eq!(
        cert["spec"]["issuerRef"],
        serde_json::json!({"name": "ca", "kind": "Issuer", "group": "cert-manager.io"})
    );
    assert_eq!(cert["spec"]["duration"], "2160h");
    assert_eq!(cert["spec"]["renewBefore"], "360h");
    let pod = res.stateful_set.spec.unwrap().template.spec.unwrap();
    let tls = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "tls")
        .expect("tls volume");
    assert_eq!(
        tls.secret.unwrap().secret_name.as_deref(),
        Some(format!("{name}-tls").as_str())
    );

    // a user Secret: mounted as is, no Certificate
    r.spec.node.tls = Some(serde_yaml_ng::from_str("secretName: mine").unwrap());
    let res = build::build(&validated_relayer(&r), None, DEFAULT_NODE_IMAGE).expect("builds");
    assert!(res.certificate.is_none());
    let pod = res.stateful_set.spec.unwrap().template.spec.unwrap();
    assert!(pod
        .volumes
        .unwrap()
        .iter()
        .any(|v| v.name == "tls"
            && v.secret.as_ref().unwrap().secret_name.as_deref() == Some("mine")));
    // no TLS: neither
    r.spec.node.tls = None;
    let res = build::build(&validated_relayer(&r), None, DEFAULT_NODE_IMAGE).expect("builds");
    assert!(res.certificate.is_none());
}

/// Exactly one TLS source: both or neither is refused with `InvalidTls`.
#[test]
fn tls_needs_exactly_one_source() {
    let mut r = relayer();
    for (tls, ok) in [
        ("secretName: mine", true),
        ("certManager: {issuerRef: {name: ca}}", true),
        (
            "{secretName: mine, certManager: {issuerRef: {name: ca}}}",
            false,
        ),
        ("{}", false),
    ] {
        r.spec.node.tls = Some(serde_yaml_ng::from_str(tls).unwrap());
        let got = validate::relayer(&r.spec);
        match ok {
            true => assert!(got.is_ok(), "{tls}: {got:?}"),
            false => assert_eq!(got.unwrap_err().reason, "InvalidTls", "{tls}"),
        }
    }
    // cert-manager absent: CertManagerMissing; present or not asked: fine
    r.spec.node.tls =
        Some(serde_yaml_ng::from_str("certManager: {issuerRef: {name: ca}}").unwrap());
    assert_eq!(
        validate::cert_manager_available(&r.spec.node, Some(false))
            .unwrap_err()
            .reason,
        "CertManagerMissing"
    );
    assert!(validate::cert_manager_available(&r.spec.node, Some(true)).is_ok());
    r.spec.node.tls = Some(serde_yaml_ng::from_str("secretName: mine").unwrap());
    assert!(validate::cert_manager_available(&r.spec.node, Some(false)).is_ok());
}

/// `tls.http`: the HTTP API behind the same certificate; probes and scrape annotations follow.
/// Without it (the relayer fixture has TLS for gRPC only) HTTP stays plain.
#[test]
fn tls_http_serves_the_api_over_https() {
    let plain = relayer();
    let cfg: Value = serde_yaml_ng::from_str(&relayer_config(&plain).yaml).unwrap();
    assert_eq!(cfg["http"]["tls_cert_file"], Value::from(""));
    let mut r = relayer();
    r.spec.node.tls.as_mut().expect("fixture has tls").http = true;
    let cfg_out = relayer_config(&r);
    let cfg: Value = serde_yaml_ng::from_str(&cfg_out.yaml).unwrap();
    assert_eq!(
        cfg["http"]["tls_cert_file"],
        Value::from("/etc/unisondb/tls/tls.crt")
    );
    assert_eq!(
        cfg["http"]["tls_key_file"],
        Value::from("/etc/unisondb/tls/tls.key")
    );
    let b = NodeBuild::of(&r, &cfg_out).unwrap();
    let sts = build::statefulset::build(&b);
    let tpl = &sts.spec.as_ref().unwrap().template;
    let c = &tpl.spec.as_ref().unwrap().containers[0];
    for (what, p) in [
        ("liveness", &c.liveness_probe),
        ("readiness", &c.readiness_probe),
        ("startup", &c.startup_probe),
    ] {
        let get = p.as_ref().and_then(|p| p.http_get.as_ref()).expect(what);
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"), "{what} probe");
    }
    let ann = tpl.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
    assert_eq!(
        ann.get("prometheus.io/scheme").map(String::as_str),
        Some("https")
    );
    // and plain HTTP without it
    let pcfg = relayer_config(&plain);
    let pb = NodeBuild::of(&plain, &pcfg).unwrap();
    let psts = build::statefulset::build(&pb);
    let ptpl = &psts.spec.as_ref().unwrap().template;
    let pc = &ptpl.spec.as_ref().unwrap().containers[0];
    let scheme = pc
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap()
        .scheme
        .clone();
    assert_eq!(scheme.as_deref(), Some("HTTP"));
    assert!(!ptpl
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()
        .contains_key("prometheus.io/scheme"));
}
