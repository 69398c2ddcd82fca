//! Object storage in the built objects, from YAML fixtures through the real validate and build
//! stages: the `archive` and `replication.object_store` config sections, the Secret mounts, the
//! recovery init containers' command lines, and the Degraded reasons of a bad store spec.

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_yaml_ng::Value;
use unisondb_operator::build::{self, Resources, DEFAULT_NODE_IMAGE};
use unisondb_operator::crd::{UnisonHub, UnisonRelayer};
use unisondb_operator::dereference::Dereferenced;
use unisondb_operator::kind::{NodeKind, Target};
use unisondb_operator::topology::Snapshot;
use unisondb_operator::validate::{self, Rejected};

fn hub_from(yaml: &str) -> UnisonHub {
    serde_yaml_ng::from_str(yaml).expect("hub parses")
}

fn backup_hub() -> UnisonHub {
    hub_from(include_str!("fixtures/hub-backup.yaml"))
}

fn plain_hub() -> UnisonHub {
    hub_from(include_str!("fixtures/hub.yaml"))
}

fn store_relayer() -> UnisonRelayer {
    serde_yaml_ng::from_str(include_str!("fixtures/relayer-objectstore.yaml"))
        .expect("relayer parses")
}

fn deref<R>(refs: R) -> Dereferenced<R> {
    Dereferenced {
        existing: None,
        pdb_api: None,
        refs,
        cert_manager: None,
    }
}

/// validate → build for a hub (no mirror hubs referenced by hubRef in these fixtures).
fn build_hub(h: &UnisonHub) -> Result<Resources, Rejected> {
    let target = Target::of(h).expect("fixture has namespace and uid");
    let d = deref(HashMap::new());
    let v = validate::validate(h, &target, &d, "cluster.local")?;
    Ok(build::build(&v, None, DEFAULT_NODE_IMAGE).expect("builds"))
}

fn build_relayer(r: &UnisonRelayer) -> Result<Resources, Rejected> {
    let target = Target::of(r).expect("fixture has namespace and uid");
    let mut snap = Snapshot::default();
    snap.add_relayer(r);
    let d = deref(snap);
    let v = validate::validate(r, &target, &d, "cluster.local")?;
    Ok(build::build(&v, None, DEFAULT_NODE_IMAGE).expect("builds"))
}

fn config(res: &Resources) -> Value {
    let yaml = &res.config_map.data.as_ref().expect("data")["config.yaml"];
    serde_yaml_ng::from_str(yaml).expect("config parses")
}

fn pod(sts: &StatefulSet) -> &PodSpec {
    sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn node_container(sts: &StatefulSet) -> &Container {
    &pod(sts).containers[0]
}

/// (volume name, mount path, read-only) of a container's mounts.
fn mounts(c: &Container) -> Vec<(String, String, bool)> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            (
                m.name.clone(),
                m.mount_path.clone(),
                m.read_only == Some(true),
            )
        })
        .collect()
}

/// Secret name of the pod volume `name`.
fn volume_secret(sts: &StatefulSet, name: &str) -> Option<String> {
    pod(sts)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)?
        .secret
        .as_ref()?
        .secret_name
        .clone()
}

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_hub_without_backup_renders_no_archive_mount_or_init_container() {
    let res = build_hub(&plain_hub()).expect("valid");
    let yaml = &res.config_map.data.as_ref().unwrap()["config.yaml"];
    assert!(!yaml.contains("archive"), "{yaml}");
    assert!(!yaml.contains("object_store"), "{yaml}");
    let sts = &res.stateful_set;
    assert!(pod(sts).init_containers.is_none());
    assert!(
        !mounts(node_container(sts))
            .iter()
            .any(|(n, _, _)| n.contains("store")),
        "{:?}",
        mounts(node_container(sts))
    );
}

#[test]
fn spec_backup_renders_the_archive_section_and_mounts_its_secrets() {
    let res = build_hub(&backup_hub()).expect("valid");
    let cfg = config(&res);
    let a = &cfg["archive"];
    assert_eq!(a["enabled"], Value::from(true));
    assert_eq!(a["endpoint"], Value::from("http://minio.storage.svc:9000"));
    assert_eq!(a["bucket"], Value::from("unisondb-backups"));
    assert_eq!(a["prefix"], Value::from("prod/hub-b"));
    assert_eq!(a["region"], Value::from("us-east-1"), "default region");
    assert_eq!(a["path_style"], Value::from(true), "default path style");
    assert_eq!(
        a["credentials_file"],
        Value::from("/etc/unisondb/object-store/credentials"),
        "default key `credentials`"
    );
    assert_eq!(
        a["ca_file"],
        Value::from("/etc/unisondb/object-store-ca/ca.crt")
    );
    assert_eq!(a["max_delay_seconds"], Value::from(5));
    assert_eq!(a["retain_base_backups"], Value::from(3));

    let sts = &res.stateful_set;
    let m = mounts(node_container(sts));
    for want in [
        ("object-store", "/etc/unisondb/object-store"),
        ("object-store-ca", "/etc/unisondb/object-store-ca"),
    ] {
        assert!(
            m.contains(&(want.0.into(), want.1.into(), true)),
            "{want:?} read-only in {m:?}"
        );
    }
    assert!(
        !m.iter().any(|(n, _, _)| n == "recovery-store"),
        "the node does not see the recovery credentials"
    );
    assert_eq!(
        volume_secret(sts, "object-store").as_deref(),
        Some("s3-creds")
    );
    assert_eq!(
        volume_secret(sts, "object-store-ca").as_deref(),
        Some("s3-ca")
    );
    assert_eq!(
        volume_secret(sts, "recovery-store").as_deref(),
        Some("old-creds")
    );

    // the rendered file is one the real node accepts
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hub.yaml");
    std::fs::write(&path, &res.config_map.data.as_ref().unwrap()["config.yaml"]).unwrap();
    let parsed = unisondb::config::Config::parse_file(&path).expect("node parses the config");
    assert!(parsed.archive.enabled);
    assert_eq!(parsed.archive.bucket, "unisondb-backups");
}

#[test]
fn a_paused_archive_renders_nothing_but_the_hash_differs_from_an_active_one() {
    let mut h = backup_hub();
    let active = build_hub(&h).expect("valid").config_hash;
    h.spec.backup.as_mut().unwrap().wal_archiving.enabled = false;
    let res = build_hub(&h).expect("valid");
    // paused: no archiver, but the bucket (and its credentials) stay for base backups
    let archive = config(&res)["archive"].clone();
    assert_eq!(archive["enabled"], Value::from(false), "{archive:?}");
    assert_eq!(
        archive["bucket"],
        Value::from("unisondb-backups"),
        "{archive:?}"
    );
    assert_ne!(res.config_hash, active);
}

#[test]
fn recovery_runs_one_restore_init_container_per_owned_namespace() {
    let res = build_hub(&backup_hub()).expect("valid");
    let sts = &res.stateful_set;
    let init = pod(sts).init_containers.as_ref().expect("init containers");
    assert_eq!(
        init.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["restore-0", "restore-1"]
    );
    let args = |i: usize| init[i].args.clone().unwrap_or_default().join(" ");
    assert_eq!(
        args(0),
        "restore -d /var/lib/unisondb -n orders --from-object-store s3://unisondb-backups/prod/hub-a \
         --endpoint http://minio.storage.svc:9000 --region eu-west-1 --path-style \
         --credentials-file /etc/unisondb/recovery-store/aws --backup-id 20260101T000000Z-7 \
         --to-time 2026-01-02T03:04:05Z --if-empty --force"
    );
    assert!(args(1).contains("-n users "), "{}", args(1));
    for c in init {
        assert_eq!(c.command.as_deref(), Some(&owned(&["unisondb"])[..]));
        assert_eq!(c.image.as_deref(), Some("unisondb:0.1.0"));
        assert_eq!(
            mounts(c),
            vec![
                ("data".into(), "/var/lib/unisondb".into(), false),
                (
                    "recovery-store".into(),
                    "/etc/unisondb/recovery-store".into(),
                    true
                ),
            ]
        );
        let sc = c.security_context.as_ref().expect("security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
    }
    // by LSN, no backup id, AWS (no endpoint), virtual-hosted
    let mut h = backup_hub();
    let r = h
        .spec
        .bootstrap
        .as_mut()
        .unwrap()
        .recovery
        .as_mut()
        .unwrap();
    r.backup_id = None;
    r.target_time = None;
    r.target_lsn = Some(4242);
    r.object_store.endpoint = None;
    r.object_store.path_style = false;
    r.object_store.prefix = String::new();
    let res = build_hub(&h).expect("valid");
    let init = pod(&res.stateful_set).init_containers.clone().unwrap();
    assert_eq!(
        init[0].args.clone().unwrap().join(" "),
        "restore -d /var/lib/unisondb -n orders --from-object-store s3://unisondb-backups \
         --region eu-west-1 --credentials-file /etc/unisondb/recovery-store/aws --to-lsn 4242 \
         --if-empty --force"
    );
}

fn rejected_hub(mutate: impl FnOnce(&mut serde_yaml_ng::Value)) -> Rejected {
    let mut v: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(include_str!("fixtures/hub-backup.yaml")).unwrap();
    mutate(&mut v);
    let h: UnisonHub = serde_yaml_ng::from_value(v).expect("still parses");
    build_hub(&h).expect_err("refused")
}

#[test]
fn bad_store_specs_are_degraded_with_a_reason_naming_the_field() {
    let r = rejected_hub(|v| v["spec"]["backup"]["objectStore"]["bucket"] = "".into());
    assert_eq!(r.problem.reason, "InvalidObjectStore");
    assert!(
        r.problem
            .message
            .contains("backup.objectStore.bucket must be set"),
        "{}",
        r.problem.message
    );
    let r = rejected_hub(|v| v["spec"]["backup"]["objectStore"]["endpoint"] = "minio:9000".into());
    assert_eq!(r.problem.reason, "InvalidObjectStore");
    assert!(
        r.problem.message.contains("backup.objectStore.endpoint"),
        "{}",
        r.problem.message
    );
    let r = rejected_hub(|v| {
        v["spec"]["bootstrap"]["recovery"]["targetLsn"] = 10.into();
    });
    assert_eq!(r.problem.reason, "InvalidRecovery");
    assert!(
        r.problem.message.contains("targetLsn or targetTime"),
        "{}",
        r.problem.message
    );
    let r = rejected_hub(|v| v["spec"]["bootstrap"]["recovery"]["targetTime"] = "yesterday".into());
    assert_eq!(r.problem.reason, "InvalidRecovery");
    let r = rejected_hub(|v| {
        v["spec"]["bootstrap"]["recovery"]["objectStore"]["bucket"] = "UPPER".into()
    });
    assert!(
        r.problem
            .message
            .contains("bootstrap.recovery.objectStore.bucket"),
        "{}",
        r.problem.message
    );
}

#[test]
fn archive_keys_cannot_be_overridden_through_extra_config() {
    let r = rejected_hub(|v| {
        v["spec"]["extraConfig"] = serde_yaml_ng::from_str("{archive: {bucket: other}}").unwrap()
    });
    assert_eq!(r.problem.reason, "InvalidConfig");
    assert!(
        r.problem.message.contains("managed by the operator"),
        "{}",
        r.problem.message
    );
}

#[test]
fn an_object_store_relayer_renders_replication_object_store_and_no_grpc_upstream() {
    let r = store_relayer();
    let res = build_relayer(&r).expect("valid");
    let cfg = config(&res);
    let o = &cfg["replication"]["object_store"];
    assert_eq!(o["endpoint"], Value::from("https://s3.example.com"));
    assert_eq!(o["bucket"], Value::from("unisondb-backups"));
    assert_eq!(o["prefix"], Value::from("prod/hub-b"));
    assert_eq!(o["path_style"], Value::from(false));
    assert_eq!(o["poll_interval_ms"], Value::from(250));
    assert_eq!(
        o["credentials_file"],
        Value::from("/etc/unisondb/object-store/credentials")
    );
    assert_eq!(o["ca_file"], Value::from(""));
    assert_eq!(cfg["replication"]["upstream"], Value::from(""));
    assert_eq!(
        cfg["server"]["namespaces"],
        serde_yaml_ng::from_str::<Value>("[orders]").unwrap()
    );
    assert!(cfg.get("archive").is_none());
    let sts = &res.stateful_set;
    assert!(mounts(node_container(sts)).contains(&(
        "object-store".into(),
        "/etc/unisondb/object-store".into(),
        true
    )));
    assert_eq!(
        volume_secret(sts, "object-store").as_deref(),
        Some("s3-read")
    );
    // position: one hop from the hub that archives into the bucket
    let target = Target::of(&r).unwrap();
    let mut snap = Snapshot::default();
    snap.add_relayer(&r);
    let (pos, _) = r.resolve(&target, &snap, "cluster.local");
    assert_eq!(
        pos.upstream.as_deref(),
        Some("s3://unisondb-backups/prod/hub-b")
    );
    assert_eq!(pos.upstream_ref.as_deref(), Some("objectStore"));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relayer.yaml");
    std::fs::write(&path, &res.config_map.data.as_ref().unwrap()["config.yaml"]).unwrap();
    let parsed = unisondb::config::Config::parse_file(&path).expect("node parses the config");
    assert_eq!(
        parsed.replication.object_store.map(|o| o.poll_interval_ms),
        Some(250)
    );
}

#[test]
fn an_object_store_relayer_may_also_follow_grpc_and_must_list_namespaces_alone() {
    let mut r = store_relayer();
    r.spec.upstream.address = Some("http://hub-b.prod.svc.cluster.local:4001".into());
    let res = build_relayer(&r).expect("valid with an address too");
    let cfg = config(&res);
    assert_eq!(
        cfg["replication"]["upstream"],
        Value::from("http://hub-b.prod.svc.cluster.local:4001")
    );
    assert_eq!(
        cfg["replication"]["object_store"]["bucket"],
        Value::from("unisondb-backups")
    );

    let mut r = store_relayer();
    r.spec.namespaces.clear();
    let e = build_relayer(&r).expect_err("no namespaces");
    assert!(
        e.problem.message.contains("namespaces must be listed"),
        "{}",
        e.problem.message
    );

    let mut r = store_relayer();
    r.spec.upstream.object_store = None;
    let e = build_relayer(&r).expect_err("no upstream at all");
    assert_eq!(e.problem.reason, "InvalidUpstream");
}

/// A recovery store behind a private CA: its Secret is mounted in the restore init containers only,
/// and the restore is told to trust it.
#[test]
fn recovery_from_an_https_store_trusts_its_ca_secret() {
    let mut h = backup_hub();
    let r = h
        .spec
        .bootstrap
        .as_mut()
        .unwrap()
        .recovery
        .as_mut()
        .unwrap();
    r.object_store.ca_secret = Some(serde_yaml_ng::from_str("{name: store-ca}").unwrap());
    let res = build_hub(&h).expect("a recovery CA is valid");
    let init = pod(&res.stateful_set).init_containers.clone().unwrap();
    let args = init[0].args.clone().unwrap().join(" ");
    assert!(
        args.contains("--ca-file /etc/unisondb/recovery-store-ca/ca.crt"),
        "{args}"
    );
    assert!(mounts(&init[0]).contains(&(
        "recovery-store-ca".into(),
        "/etc/unisondb/recovery-store-ca".into(),
        true
    )));
    let main = &pod(&res.stateful_set).containers[0];
    assert!(
        !mounts(main).iter().any(|m| m.0 == "recovery-store-ca"),
        "the node itself does not mount the recovery store's Secrets"
    );
    let vols = pod(&res.stateful_set).volumes.clone().unwrap_or_default();
    assert!(vols.iter().any(|v| v.name == "recovery-store-ca"
        && v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("store-ca")));
}

/// A hub with `httpAuth` and `tls.http`: its backups run as Jobs in its own image. The token
/// reaches the container only as a Secret reference (never in the args or as a value), only
/// `ca.crt` of the TLS Secret is mounted, and the result is the termination message.
#[test]
fn a_backup_job_of_an_auth_guarded_https_hub() {
    use unisondb_operator::backup::{self, job};
    use unisondb_operator::crd::UnisonBackupSpec;

    let hub = hub_from(include_str!("fixtures/hub-auth-backup.yaml"));
    assert!(job::needs_job(&hub));
    assert!(
        !job::needs_job(&backup_hub()),
        "a plain hub is asked directly"
    );
    let key = unisondb_operator::topology::Key::new("prod", "hub-s");
    let spec = UnisonBackupSpec {
        hub_ref: unisondb_operator::crd::ObjectRef {
            name: "hub-s".into(),
            namespace: None,
        },
        namespaces: vec![],
    };
    let backup::Admission::Go {
        endpoint,
        namespaces,
        job: true,
    } = backup::admit(&spec, &key, Some(&hub), "cluster.local")
    else {
        panic!("a Job backup")
    };
    assert_eq!(endpoint, "https://hub-s.prod.svc.cluster.local:4000");
    assert_eq!(namespaces, owned(&["orders", "users"]));
    let plan = job::JobPlan::of(&hub, endpoint, DEFAULT_NODE_IMAGE);
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "unisondb.io/v1alpha1".into(),
        kind: "UnisonBackup".into(),
        name: "nightly-1".into(),
        uid: "uid-b".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let j = job::build("nightly-1", "prod", owner, "hub-s", "orders", &plan);
    let v = serde_json::to_value(&j).expect("serializes");
    assert_eq!(v["metadata"]["name"], "nightly-1-orders");
    assert_eq!(v["metadata"]["namespace"], "prod");
    assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "UnisonBackup");
    assert_eq!(v["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        v["metadata"]["annotations"]["unisondb.io/namespace"],
        "orders"
    );
    assert_eq!(
        v["metadata"]["labels"]["app.kubernetes.io/component"],
        "backup"
    );
    let js = &v["spec"];
    assert_eq!(js["backoffLimit"], job::BACKOFF_LIMIT);
    assert_eq!(js["activeDeadlineSeconds"], job::ACTIVE_DEADLINE_SECONDS);
    assert_eq!(
        js["ttlSecondsAfterFinished"],
        job::TTL_SECONDS_AFTER_FINISHED
    );
    let pod = &js["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.local/unisondb:0.2.0");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["command"], serde_json::json!(["unisondb"]));
    assert_eq!(
        c["args"],
        serde_json::json!([
            "backup",
            "--object-store",
            "--url",
            "https://hub-s.prod.svc.cluster.local:4000",
            "--namespace",
            "orders",
            "--result-file",
            "/dev/termination-log",
            "--ca-file",
            "/etc/unisondb/ca/ca.crt"
        ])
    );
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        c["env"],
        serde_json::json!([{"name": "UNISONDB_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "hub-s-token", "key": "bearer", "optional": false}}}])
    );
    assert_eq!(
        c["volumeMounts"],
        serde_json::json!([{"name": "ca", "mountPath": "/etc/unisondb/ca", "readOnly": true}])
    );
    assert_eq!(
        pod["volumes"],
        serde_json::json!([{"name": "ca", "secret": {"secretName": "hub-s-certs",
            "items": [{"key": "ca.crt", "path": "ca.crt"}]}}])
    );
    let text = serde_json::to_string(&v).expect("json");
    assert!(!text.contains("--token"), "{text}");

    // httpAuth without tls.http: plain http, no CA volume; the default image when none is set
    let mut plain = hub.clone();
    plain.spec.node.tls = None;
    plain.spec.node.image = None;
    let plan = job::JobPlan::of(&plain, "http://hub-s.prod.svc:4000".into(), "img:1");
    let j = job::build(
        "b",
        "prod",
        j.metadata.owner_references.unwrap()[0].clone(),
        "hub-s",
        "users",
        &plan,
    );
    let v = serde_json::to_value(&j).expect("serializes");
    let c = &v["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "img:1");
    assert!(c.get("volumeMounts").is_none(), "{c}");
    assert!(!c["args"].to_string().contains("--ca-file"), "{c}");
    assert!(v["spec"]["template"]["spec"].get("volumes").is_none());
}
