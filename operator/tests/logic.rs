//! Topology resolution, cycle detection, validation, status computation, backoff, leader election.

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use unisondb_operator::crd::{UnisonHub, UnisonRelayer};
use unisondb_operator::dereference::Dereferenced;
use unisondb_operator::kind::Target;
use unisondb_operator::leader::can_take;
use unisondb_operator::reconcile::backoff_for;
use unisondb_operator::status::{compute, merge_patch, Observed, Position, Problem};
use unisondb_operator::topology::{downstream_of, resolve, Key, Snapshot, TopologyError, Upstream};
use unisondb_operator::validate;

fn hub(name: &str, namespaces: &str) -> UnisonHub {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{image: i, namespaces: {namespaces}}}"
    ))
    .unwrap()
}

fn relayer(name: &str, upstream: &str, namespaces: &str) -> UnisonRelayer {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonRelayer\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{image: i, upstream: {upstream}, namespaces: {namespaces}}}"
    ))
    .unwrap()
}

fn key(n: &str) -> Key {
    Key::new("ns", n)
}

fn chain() -> Snapshot {
    let mut s = Snapshot::default();
    s.add_hub(&hub("hub", "[a, b, c]"));
    s.add_relayer(&relayer("r1", "{hubRef: {name: hub}}", "[]"));
    s.add_relayer(&relayer("r2", "{relayerRef: {name: r1}}", "[a]"));
    s.add_relayer(&relayer("r3", "{relayerRef: {name: r2}}", "[]"));
    s
}

#[test]
fn resolves_depth_endpoint_and_namespaces() {
    let s = chain();
    let r1 = resolve(&key("r1"), &s, "cluster.local").unwrap();
    assert_eq!(r1.depth, 1);
    assert_eq!(r1.endpoint, "http://hub.ns.svc.cluster.local:4001");
    assert_eq!(r1.upstream_ref, "UnisonHub/ns/hub");
    assert_eq!(
        r1.upstream_namespaces,
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
    let r2 = resolve(&key("r2"), &s, "cluster.local").unwrap();
    assert_eq!(r2.depth, 2);
    assert_eq!(r2.endpoint, "http://r1.ns.svc.cluster.local:4001");
    assert_eq!(
        r2.upstream_namespaces,
        Some(vec!["a".into(), "b".into(), "c".into()]),
        "r1 inherits all"
    );
    let r3 = resolve(&key("r3"), &s, "cluster.local").unwrap();
    assert_eq!(r3.depth, 3);
    assert_eq!(
        r3.upstream_namespaces,
        Some(vec!["a".into()]),
        "r2 narrowed to [a]"
    );
}

#[test]
fn address_upstream() {
    let mut s = Snapshot::default();
    s.add_relayer(&relayer("x", "{address: 'http://far:4001'}", "[a]"));
    let r = resolve(&key("x"), &s, "cluster.local").unwrap();
    assert_eq!(
        (r.endpoint.as_str(), r.depth, r.upstream_namespaces),
        ("http://far:4001", 1, None)
    );
}

#[test]
fn detects_cycles_and_missing_upstreams() {
    let mut s = Snapshot::default();
    s.add_relayer(&relayer("a", "{relayerRef: {name: b}}", "[]"));
    s.add_relayer(&relayer("b", "{relayerRef: {name: a}}", "[]"));
    let e = resolve(&key("a"), &s, "cluster.local").unwrap_err();
    assert!(
        matches!(&e, TopologyError::Cycle(p) if p == "ns/a -> ns/b -> ns/a"),
        "{e:?}"
    );
    assert_eq!(e.reason(), "UpstreamCycle");
    // self-reference
    s.add_relayer(&relayer("self", "{relayerRef: {name: self}}", "[]"));
    assert!(matches!(
        resolve(&key("self"), &s, "c").unwrap_err(),
        TopologyError::Cycle(_)
    ));
    // missing hub, missing relayer
    s.add_relayer(&relayer("m1", "{hubRef: {name: gone}}", "[]"));
    s.add_relayer(&relayer("m2", "{relayerRef: {name: m1}}", "[]"));
    let e = resolve(&key("m2"), &s, "c").unwrap_err();
    assert_eq!(e, TopologyError::NotFound("UnisonHub/ns/gone".into()));
    assert_eq!(e.reason(), "UpstreamNotFound");
    // two upstream kinds
    s.add_relayer(&relayer(
        "two",
        "{hubRef: {name: h}, address: 'http://x:1'}",
        "[]",
    ));
    assert_eq!(
        resolve(&key("two"), &s, "c").unwrap_err(),
        TopologyError::InvalidUpstream
    );
}

#[test]
fn downstream_is_transitive_and_cycle_safe() {
    let mut s = chain();
    s.add_relayer(&relayer("other", "{hubRef: {name: elsewhere}}", "[]"));
    assert_eq!(
        downstream_of(&Upstream::Hub(key("hub")), &s),
        vec![key("r1"), key("r2"), key("r3")]
    );
    assert_eq!(
        downstream_of(&Upstream::Relayer(key("r2")), &s),
        vec![key("r3")]
    );
    s.add_relayer(&relayer("c1", "{relayerRef: {name: c2}}", "[]"));
    s.add_relayer(&relayer("c2", "{relayerRef: {name: c1}}", "[]"));
    assert_eq!(
        downstream_of(&Upstream::Relayer(key("c1")), &s),
        vec![key("c1"), key("c2")]
    );
}

#[test]
fn validation_rules() {
    assert!(validate::relayer(&relayer("a", "{hubRef: {name: h}}", "[]").spec).is_ok());
    let e = validate::relayer(&relayer("a", "{}", "[]").spec).unwrap_err();
    assert_eq!(e.reason, "InvalidUpstream");
    let e =
        validate::relayer(&relayer("a", "{hubRef: {name: h}, relayerRef: {name: r}}", "[]").spec)
            .unwrap_err();
    assert_eq!(e.reason, "InvalidUpstream");
    let e = validate::relayer(&relayer("a", "{address: 'far:1'}", "[x]").spec).unwrap_err();
    assert_eq!(e.reason, "InvalidSpec");
    let e = validate::relayer(&relayer("a", "{address: 'http://far:1'}", "[]").spec).unwrap_err();
    assert!(e.message.contains("raw address"));
    let e = validate::hub(&hub("h", "[a, a]").spec).unwrap_err();
    assert!(e.message.contains("duplicate"));
    let mut h = hub("h", "[a]");
    h.spec.node.storage.size = "lots".into();
    assert!(validate::hub(&h.spec).is_err());

    assert_eq!(
        validate::effective_namespaces(&[], Some(&["a".into()])).unwrap(),
        vec!["a".to_string()]
    );
    let e = validate::effective_namespaces(&["z".into()], Some(&["a".into()])).unwrap_err();
    assert_eq!(e.reason, "NamespaceNotInUpstream");
}

#[test]
fn storage_class_is_immutable_and_volumes_only_grow() {
    let h = hub("h", "[a]");
    let sts: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "h"},
        "spec": {"selector": {}, "serviceName": "h", "template": {},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"storageClassName": "slow", "resources": {"requests": {"storage": "10Gi"}}}}]}
    }))
    .unwrap();
    let e = validate::storage_plan(&h.spec.node.storage, Some(&sts)).unwrap_err();
    assert_eq!(e.reason, "StorageClassImmutable");
    let mut s = h.spec.node.storage.clone();
    s.storage_class_name = Some("slow".into());
    s.size = "10Gi".into();
    let same = validate::storage_plan(&s, Some(&sts)).expect("unchanged");
    assert_eq!((same.template_size.as_str(), same.grow_to), ("10Gi", None));
    // the server's canonical form of the same quantity is no change
    s.size = "10240Mi".into();
    assert_eq!(
        validate::storage_plan(&s, Some(&sts)).unwrap().grow_to,
        None
    );
    // larger: the template keeps its size, the volumes grow
    s.size = "20Gi".into();
    let grow = validate::storage_plan(&s, Some(&sts)).expect("growth is allowed");
    assert_eq!(grow.template_size, "10Gi");
    assert_eq!(grow.grow_to.as_deref(), Some("20Gi"));
    // smaller: refused
    s.size = "9.5Gi".into();
    assert_eq!(
        validate::storage_plan(&s, Some(&sts)).unwrap_err().reason,
        "StorageShrinkRefused"
    );
    let fresh = validate::storage_plan(&h.spec.node.storage, None).unwrap();
    assert_eq!(fresh.template_size, h.spec.node.storage.size);
}

fn sts(replicas: i32, ready: i32) -> StatefulSet {
    StatefulSet {
        metadata: ObjectMeta {
            generation: Some(2),
            ..Default::default()
        },
        spec: None,
        status: Some(StatefulSetStatus {
            replicas,
            ready_replicas: Some(ready),
            updated_replicas: Some(replicas),
            observed_generation: Some(2),
            ..Default::default()
        }),
    }
}

fn cond<'a>(
    s: &'a unisondb_operator::crd::NodeStatus,
    t: &str,
) -> &'a unisondb_operator::crd::Condition {
    s.conditions.iter().find(|c| c.type_ == t).unwrap()
}

#[test]
fn status_conditions() {
    let not_ready = sts(3, 1);
    let o = Observed {
        generation: Some(5),
        desired_replicas: 3,
        statefulset: Some(&not_ready),
        position: Position {
            upstream: Some("http://hub:4001".into()),
            depth: Some(1),
            upstream_ref: None,
        },
        ..Default::default()
    };
    let s1 = compute(None, &o, "t1");
    assert_eq!(cond(&s1, "Ready").status, "False");
    assert_eq!(cond(&s1, "Progressing").status, "True");
    assert_eq!(cond(&s1, "Degraded").status, "False");
    assert_eq!(
        (s1.replicas, s1.ready_replicas, s1.observed_generation),
        (3, 1, Some(5))
    );

    let ready = sts(3, 3);
    let o2 = Observed {
        statefulset: Some(&ready),
        ..o.clone()
    };
    let s2 = compute(Some(&s1), &o2, "t2");
    assert_eq!(cond(&s2, "Ready").status, "True");
    assert_eq!(cond(&s2, "Ready").last_transition_time, "t2");
    assert_eq!(cond(&s2, "Progressing").status, "False");
    assert_eq!(
        cond(&s2, "Degraded").last_transition_time,
        "t1",
        "unchanged status keeps its time"
    );
    // recomputing with no change is identical: no status write
    assert_eq!(compute(Some(&s2), &o2, "t3"), s2);

    // every pod ready, but a rollout of the current spec is under way: not Ready
    let mut rolling = sts(3, 3);
    rolling.status.as_mut().unwrap().updated_replicas = Some(1);
    let o_roll = Observed {
        statefulset: Some(&rolling),
        ..o.clone()
    };
    let s_roll = compute(Some(&s2), &o_roll, "t3");
    assert_eq!(cond(&s_roll, "Ready").status, "False");
    assert_eq!(cond(&s_roll, "Ready").reason, "RolloutInProgress");
    // ... nor while the StatefulSet controller has not seen the new spec yet
    let mut unseen = sts(3, 3);
    unseen.metadata.generation = Some(3);
    let o_unseen = Observed {
        statefulset: Some(&unseen),
        ..o.clone()
    };
    assert_eq!(
        cond(&compute(Some(&s2), &o_unseen, "t3"), "Ready").status,
        "False"
    );

    // a blocked reconcile keeps the last resolved upstream and depth
    let o3 = Observed {
        position: Position::default(),
        problem: Some(Problem {
            reason: "UpstreamNotFound".into(),
            message: "gone".into(),
        }),
        ..o2.clone()
    };
    let s3 = compute(Some(&s2), &o3, "t4");
    assert_eq!(cond(&s3, "Degraded").status, "True");
    assert_eq!(cond(&s3, "Degraded").reason, "UpstreamNotFound");
    assert_eq!(s3.upstream.as_deref(), Some("http://hub:4001"));
    assert_eq!(s3.depth, Some(1));
    assert_eq!(cond(&s3, "Ready").status, "True", "pods keep serving reads");
}

#[test]
fn backoff_grows_and_caps() {
    let secs: Vec<u64> = (1..=10).map(|n| backoff_for(n).as_secs()).collect();
    assert_eq!(secs, vec![2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
}

#[test]
fn lease_takeover_rules() {
    let now = Timestamp::now();
    let spec = |holder: Option<&str>, age: i64| LeaseSpec {
        holder_identity: holder.map(String::from),
        lease_duration_seconds: Some(15),
        renew_time: Some(MicroTime(now - SignedDuration::from_secs(age))),
        ..Default::default()
    };
    assert!(can_take(&spec(None, 0), "me", now));
    assert!(can_take(&spec(Some("me"), 1), "me", now));
    assert!(!can_take(&spec(Some("other"), 5), "me", now));
    assert!(can_take(&spec(Some("other"), 60), "me", now));
}

#[test]
fn hub_mirrors_resolve_against_their_owners() {
    let me = key("h");
    let mut h = hub("h", "[a]");
    h.spec.mirrors = serde_yaml_ng::from_str(
        "[{namespace: x, hubRef: {name: other}}, {namespace: y, address: 'http://far:1'}]",
    )
    .unwrap();
    let mut owners = HashMap::new();
    let e = validate::mirrors(&h.spec, &me, &owners, "cluster.local").unwrap_err();
    assert_eq!(e.reason, "UpstreamNotFound");
    owners.insert(key("other"), hub("other", "[z]"));
    let e = validate::mirrors(&h.spec, &me, &owners, "cluster.local").unwrap_err();
    assert_eq!(e.reason, "NamespaceNotInUpstream");
    owners.insert(key("other"), hub("other", "[x]"));
    let m = validate::mirrors(&h.spec, &me, &owners, "cluster.local").unwrap();
    assert_eq!(m["x"], "http://other.ns.svc.cluster.local:4001");
    assert_eq!(m["y"], "http://far:1");

    h.spec.mirrors = serde_yaml_ng::from_str("[{namespace: x, hubRef: {name: h}}]").unwrap();
    let e = validate::mirrors(&h.spec, &me, &owners, "cluster.local").unwrap_err();
    assert_eq!(e.reason, "UpstreamCycle");
}

fn target(name: &str) -> Target {
    Target {
        name: name.into(),
        namespace: "ns".into(),
        owner: Default::default(),
    }
}

fn dereferenced<R>(refs: R) -> Dereferenced<R> {
    Dereferenced {
        existing: None,
        pdb_api: None,
        cert_manager: None,
        refs,
    }
}

#[test]
fn validate_stage_wires_a_relayer_or_says_why_not() {
    let s = chain();
    // r3 follows r2 (which narrows to [a]): it inherits [a]
    let r3 = relayer("r3", "{relayerRef: {name: r2}}", "[]");
    let v = validate::validate(
        &r3,
        &target("r3"),
        &dereferenced(s.clone()),
        "cluster.local",
    )
    .unwrap();
    assert_eq!(v.wiring.namespaces, vec!["a".to_string()]);
    assert_eq!(
        v.wiring.upstream.as_deref(),
        Some("http://r2.ns.svc.cluster.local:4001")
    );
    assert_eq!(v.position.depth, Some(3));
    assert_eq!(v.replicas, 1);

    // asking for a namespace the upstream does not serve: refused, position still known
    let mut s2 = s.clone();
    let r4 = relayer("r4", "{relayerRef: {name: r2}}", "[b]");
    s2.add_relayer(&r4);
    let r = validate::validate(&r4, &target("r4"), &dereferenced(s2), "cluster.local").unwrap_err();
    assert_eq!(r.problem.reason, "NamespaceNotInUpstream");
    assert_eq!(r.position.depth, Some(3));

    // a spec rule fails first: nothing resolved
    let bad = relayer("r5", "{}", "[]");
    let r = validate::validate(&bad, &target("r5"), &dereferenced(s), "cluster.local").unwrap_err();
    assert_eq!(r.problem.reason, "InvalidUpstream");
    assert_eq!(r.position, Position::default());

    // a hub is at depth 0 even when refused
    let h = hub("h", "[a, a]");
    let r = validate::validate(
        &h,
        &target("h"),
        &dereferenced(HashMap::new()),
        "cluster.local",
    )
    .unwrap_err();
    assert_eq!(r.problem.reason, "InvalidSpec");
    assert_eq!(r.position.depth, Some(0));
}

#[test]
fn status_patch_deletes_fields_the_new_status_no_longer_has() {
    // A merge patch keeps absent keys: a field that went away must be sent as null.
    let old = unisondb_operator::crd::NodeStatus {
        certificate: Some("hub".into()),
        max_lag_seconds: Some(3),
        selector: "a=b".into(),
        ..Default::default()
    };
    let new = unisondb_operator::crd::NodeStatus {
        selector: "a=b".into(),
        ..Default::default()
    };
    let patch = merge_patch(Some(&old), &new);
    assert_eq!(patch["certificate"], serde_json::Value::Null);
    assert!(patch.as_object().unwrap().contains_key("certificate"));
    assert!(patch.as_object().unwrap().contains_key("maxLagSeconds"));
    assert_eq!(patch["selector"], "a=b");
    // nothing before: nothing to delete
    let first = merge_patch(None, &old);
    assert_eq!(first["certificate"], "hub");
}
