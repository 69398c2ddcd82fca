//! Hub groups (`spec.replicas` 3 or 5), pure stages from a YAML fixture: validation, the rendered
//! `cluster` section, Services, PDB, StatefulSet, and what a single hub keeps exactly as before.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{ApiResource, GroupVersionKind};
use serde_yaml_ng::Value;
use unisondb_operator::build::{self, PdbPlan, DEFAULT_NODE_IMAGE};
use unisondb_operator::crd::UnisonHub;
use unisondb_operator::dereference::Dereferenced;
use unisondb_operator::kind::Target;
use unisondb_operator::validate::{self, Rejected, Validated};

fn group() -> UnisonHub {
    serde_yaml_ng::from_str(include_str!("fixtures/hub-group.yaml")).expect("fixture parses")
}

fn single() -> UnisonHub {
    let mut h = group();
    h.spec.replicas = 1;
    h.spec.node.extra_config.clear();
    h
}

fn deref(
    existing: Option<StatefulSet>,
) -> Dereferenced<HashMap<unisondb_operator::topology::Key, UnisonHub>> {
    Dereferenced {
        existing,
        pdb_api: Some(pdb_v1()),
        refs: HashMap::new(),
        cert_manager: None,
    }
}

fn pdb_v1() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy", "v1", "PodDisruptionBudget"),
        "poddisruptionbudgets",
    )
}

fn validated<'a>(
    h: &'a UnisonHub,
    existing: Option<StatefulSet>,
) -> Result<Validated<'a>, Rejected> {
    let target = Target::of(h).expect("fixture has namespace and uid");
    validate::validate(h, &target, &deref(existing), "cluster.local")
}

fn built(h: &UnisonHub) -> build::Resources {
    let v = validated(h, None).expect("valid");
    build::build(&v, Some(&pdb_v1()), DEFAULT_NODE_IMAGE).expect("builds")
}

fn config(res: &build::Resources) -> Value {
    serde_yaml_ng::from_str(&res.config_map.data.as_ref().unwrap()["config.yaml"]).unwrap()
}

fn selector(svc: &k8s_openapi::api::core::v1::Service) -> BTreeMap<String, String> {
    svc.spec.as_ref().unwrap().selector.clone().unwrap()
}

#[test]
fn replicas_must_be_one_three_or_five() {
    for n in [0, 2, 4, 6, -1] {
        let mut h = group();
        h.spec.replicas = n;
        let r = validated(&h, None).expect_err("refused");
        assert_eq!(r.problem.reason, "InvalidReplicas", "{n}");
        assert!(
            r.problem
                .message
                .contains(&format!("replicas: {n} is not 1")),
            "{}",
            r.problem.message
        );
    }
    for n in [1, 3, 5] {
        let mut h = group();
        h.spec.replicas = n;
        if n == 1 {
            h.spec.node.extra_config.clear();
        }
        assert!(validated(&h, None).is_ok(), "{n}");
    }
}

#[test]
fn a_group_refuses_what_it_cannot_run_yet() {
    let mut h = group();
    h.spec.node.tls =
        Some(serde_json::from_value(serde_json::json!({"secretName": "t", "http": true})).unwrap());
    let r = validated(&h, None).expect_err("tls.http refused");
    assert_eq!(r.problem.reason, "UnsupportedInGroup");
    assert!(
        r.problem.message.contains("tls.http"),
        "{}",
        r.problem.message
    );
    // extraConfig.cluster means nothing to a single hub
    let mut h = group();
    h.spec.replicas = 1;
    let r = validated(&h, None).expect_err("cluster section on a single hub");
    assert_eq!(r.problem.reason, "InvalidConfig");
    // the operator manages the peers
    let mut h = group();
    h.spec
        .node
        .extra_config
        .get_mut("cluster")
        .unwrap()
        .insert("peers".into(), serde_json::json!(["x:1"]));
    let r = validated(&h, None).expect_err("managed key");
    assert!(
        r.problem.message.contains("cluster.peers is managed"),
        "{}",
        r.problem.message
    );
}

#[test]
fn a_single_hub_may_become_a_group_but_not_back() {
    let single_sts = built(&single()).stateful_set;
    let group_sts = built(&group()).stateful_set;
    assert!(
        validated(&group(), Some(single_sts.clone())).is_ok(),
        "1 -> 3 converts the hub"
    );
    // The pod management policy differs and Kubernetes never lets it change: the operator
    // recreates the StatefulSet around the running pod (apply.rs).
    let change =
        unisondb_operator::build::statefulset::read::immutable_change(&single_sts, &group_sts);
    assert_eq!(
        change.as_deref(),
        Some("podManagementPolicy OrderedReady -> Parallel")
    );
    assert_eq!(
        unisondb_operator::build::statefulset::read::immutable_change(&group_sts, &group_sts),
        None
    );
    let r = validated(&single(), Some(group_sts.clone())).expect_err("3 -> 1 refused");
    assert_eq!(r.problem.reason, "GroupChangeRefused");
    assert!(
        r.problem.message.contains("3 -> 1"),
        "{}",
        r.problem.message
    );
    let mut five = group();
    five.spec.replicas = 5;
    assert!(
        validated(&five, Some(group_sts)).is_ok(),
        "3 -> 5 is a membership change"
    );
}

#[test]
fn group_config_lists_every_member_by_stable_dns_name() {
    let res = built(&group());
    let cfg = config(&res);
    let cluster = &cfg["cluster"];
    let peers: Vec<&str> = cluster["peers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        peers,
        [
            "ledger-0.ledger-headless.prod.svc.cluster.local:4001",
            "ledger-1.ledger-headless.prod.svc.cluster.local:4001",
            "ledger-2.ledger-headless.prod.svc.cluster.local:4001",
        ]
    );
    assert!(
        cluster.get("node_id").is_none(),
        "the hostname's ordinal gives the id"
    );
    assert_eq!(cluster["advertise_http"].as_str(), Some(""));
    assert_eq!(
        cluster["election_timeout_ms"].as_u64(),
        Some(500),
        "extraConfig applies"
    );
    assert_eq!(cluster["heartbeat_ms"].as_u64(), Some(100));
    // the real node parser accepts it
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("group.yaml");
    std::fs::write(&path, &res.config_map.data.as_ref().unwrap()["config.yaml"]).unwrap();
    let loaded = unisondb::config::Config::parse_file(&path).expect("node parses the group config");
    loaded.validate().expect("node finds it valid");
    let members = loaded
        .cluster
        .as_ref()
        .expect("cluster section")
        .members()
        .expect("peers");
    assert_eq!(members.len(), 3);
    assert_eq!(members[0].0, 1, "ledger-0 is member 1");
    // a single hub has no cluster section at all
    assert!(config(&built(&single())).get("cluster").is_none());
}

#[test]
fn scaling_changes_only_the_peers_and_not_the_restart_hash() {
    let three = built(&group());
    let mut h = group();
    h.spec.replicas = 5;
    let five = built(&h);
    assert_ne!(
        config(&three)["cluster"]["peers"],
        config(&five)["cluster"]["peers"]
    );
    assert_eq!(
        three.config_hash, five.config_hash,
        "scaling must not roll every member"
    );
    let mut h = group();
    h.spec
        .node
        .extra_config
        .get_mut("cluster")
        .unwrap()
        .insert("heartbeat_ms".into(), serde_json::json!(120));
    assert_ne!(
        built(&h).config_hash,
        three.config_hash,
        "other cluster keys do roll"
    );
}

#[test]
fn services_route_writes_to_the_leader_and_reads_to_every_member() {
    let res = built(&group());
    let client = selector(&res.client_service);
    assert_eq!(
        res.client_service.metadata.name.as_deref(),
        Some("ledger"),
        "the name clients use stays"
    );
    assert_eq!(
        client.get("unisondb.io/role").map(String::as_str),
        Some("leader")
    );
    let names: Vec<&str> = res
        .group_services
        .iter()
        .map(|s| s.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["ledger-ro", "ledger-followers"]);
    assert!(!selector(&res.group_services[0]).contains_key("unisondb.io/role"));
    assert_eq!(
        selector(&res.group_services[1])
            .get("unisondb.io/role")
            .map(String::as_str),
        Some("follower")
    );
    let headless = res.headless_service.spec.as_ref().unwrap();
    assert_eq!(
        headless.publish_not_ready_addresses,
        Some(true),
        "elections before readiness"
    );
    // a single hub: the client Service selects the pod as before, no extra Services
    let one = built(&single());
    assert!(!selector(&one.client_service).contains_key("unisondb.io/role"));
    assert!(one.group_services.is_empty());
}

#[test]
fn a_group_gets_a_pdb_spreading_parallel_start_and_operator_driven_rollouts() {
    let res = built(&group());
    match &res.pdb {
        PdbPlan::Apply { object, .. } => assert_eq!(object["spec"]["maxUnavailable"], 1),
        other => panic!("a group wants a PDB: {other:?}"),
    }
    let spec = res.stateful_set.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        spec.update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref()),
        Some("OnDelete")
    );
    let anti = spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .affinity
        .as_ref()
        .unwrap();
    let preferred = anti
        .pod_anti_affinity
        .as_ref()
        .unwrap()
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap();
    assert_eq!(
        preferred[0].pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    // a single hub: exactly as before
    let one = built(&single());
    let spec = one.stateful_set.spec.as_ref().unwrap();
    assert!(matches!(one.pdb, PdbPlan::Delete { .. }));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("OrderedReady"));
    assert!(spec.update_strategy.is_none());
}

#[test]
fn relayers_of_a_group_prefer_its_followers_then_its_read_service() {
    use unisondb_operator::topology::{resolve, Key, Snapshot};
    let mut rel: unisondb_operator::crd::UnisonRelayer = serde_yaml_ng::from_str(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonRelayer\nmetadata:\n  name: edge\n  namespace: prod\nspec:\n  upstream:\n    hubRef:\n      name: ledger\n",
    )
    .unwrap();
    let mut snap = Snapshot::default();
    snap.add_hub(&group());
    snap.add_relayer(&rel);
    let r = resolve(&Key::new("prod", "edge"), &snap, "cluster.local").expect("resolves");
    assert_eq!(
        r.endpoint,
        "http://ledger-followers.prod.svc.cluster.local:4001,http://ledger-ro.prod.svc.cluster.local:4001",
        "followers first, the read Service as the fallback"
    );
    let mut snap = Snapshot::default();
    snap.add_hub(&single());
    rel.spec.replicas = 2;
    snap.add_relayer(&rel);
    let r = resolve(&Key::new("prod", "edge"), &snap, "cluster.local").expect("resolves");
    assert_eq!(
        r.endpoint, "http://ledger.prod.svc.cluster.local:4001",
        "single hub unchanged"
    );
}
