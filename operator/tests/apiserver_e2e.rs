//! End-to-end test against a real kube-apiserver + kube-controller-manager v1.20.2 (no kubelet):
//! the real operator binary, driven with the real kubectl.
//!
//! Needs the binaries built by `e2e/k8s/install-deps.sh` (cached under
//! ~/.cache/unisondb-e2e/k8s-1.20.2/bin, or `K8S_BIN`). Fails, never skips, when they are missing.

use serde::Deserialize;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use serde_yaml_ng as yaml;
use unisondb_testkit::{free_port, wait_for, ControlPlane, ControlPlaneOptions};

const NS: &str = "default";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One operator process; killed on drop (its log tail printed first if the test is failing).
struct Operator {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Operator {
    fn start(cp: &ControlPlane, identity: &str) -> Result<Self> {
        Self::start_with(cp, identity, &[])
    }

    fn start_with(cp: &ControlPlane, identity: &str, extra: &[&str]) -> Result<Self> {
        let port = free_port();
        let log_path = cp.run_dir.join(format!("operator-{identity}.log"));
        let log = fs::File::create(&log_path)?;
        let child = Command::new(env!("CARGO_BIN_EXE_unisondb-operator"))
            .args([
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--identity",
                identity,
            ])
            .args([
                "--lease-namespace",
                NS,
                "--lease-duration-secs",
                "6",
                "--lease-renew-secs",
                "1",
            ])
            .args(extra)
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "info,unisondb_operator=debug")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning unisondb-operator")?;
        Ok(Operator {
            child,
            port,
            log: log_path,
        })
    }

    fn metrics(&self) -> Result<String> {
        http_get(self.port, "/metrics")
    }

    /// Sum of `unisondb_operator_reconcile_runs_total` over kinds.
    fn reconcile_runs(&self) -> Result<f64> {
        Ok(metric_sum(
            &self.metrics()?,
            "unisondb_operator_reconcile_runs_total",
        ))
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(25);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            if let Ok(s) = fs::read_to_string(&self.log) {
                let name = self.log.file_name().unwrap_or_default().to_string_lossy();
                let tail: Vec<&str> = s.lines().rev().take(40).collect();
                eprintln!("--- {name} (last 40 lines) ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_string())
}

/// What the steps share: the control plane, the two operator replicas (a leads until the
/// failover step) and what one step leaves for a later one. Operators are dropped before the
/// control plane (field order), so their logs are printed while it still exists.
struct Ctx {
    op_a: Option<Operator>,
    op_b: Option<Operator>,
    cp: ControlPlane,
    t0: Instant,
    /// r1's config hash after the config-change step; hub deletion must leave it untouched.
    r1_hash: String,
}

impl Ctx {
    /// Prints a step line with the time since the start.
    fn step(&self, name: &str) {
        eprintln!("[{:>6.1}s] {name}", self.t0.elapsed().as_secs_f64());
    }

    fn op_a(&self) -> Result<&Operator> {
        self.op_a.as_ref().context("operator a not started")
    }

    fn op_b(&self) -> Result<&Operator> {
        self.op_b.as_ref().context("operator b not started")
    }

    /// kubectl with an optional manifest on stdin; stdout, or an error with stderr.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        Ok(match stdin {
            Some(input) => self.cp.kubectl_stdin(args, input)?,
            None => self.cp.kubectl(args)?,
        })
    }

    fn apply(&self, yaml: &str) -> Result<String> {
        self.run(&["apply", "-f", "-"], Some(yaml))
    }

    fn get_in(&self, ns: &str, kind: &str, name: &str) -> Result<Option<Value>> {
        match self.run(
            &[
                "get",
                kind,
                name,
                "-n",
                ns,
                "-o",
                "json",
                "--ignore-not-found",
            ],
            None,
        )? {
            s if s.trim().is_empty() => Ok(None),
            s => Ok(Some(serde_json::from_str(&s)?)),
        }
    }

    fn get(&self, kind: &str, name: &str) -> Result<Option<Value>> {
        self.get_in(NS, kind, name)
    }

    fn must_get(&self, kind: &str, name: &str) -> Result<Value> {
        self.get(kind, name)?
            .with_context(|| format!("{kind}/{name} not found"))
    }
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn cond_is(obj: &Value, type_: &str, status: &str, reason: Option<&str>) -> bool {
    condition(obj, type_)
        .is_some_and(|c| c["status"] == status && reason.is_none_or(|r| c["reason"] == r))
}

fn template_hash(sts: &Value) -> String {
    sts["spec"]["template"]["metadata"]["annotations"]["unisondb.io/config-hash"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn hub_yaml(name: &str, fsync: &str) -> String {
    format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: {name}, namespace: {NS}}}\n\
         spec: {{image: 'unisondb:e2e', imagePullPolicy: Never, namespaces: [orders, users], wal: {{fsync: {fsync}}}}}\n"
    )
}

fn relayer_yaml(name: &str, upstream: &str, extra: &str) -> String {
    format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonRelayer\nmetadata: {{name: {name}, namespace: {NS}}}\n\
         spec: {{image: 'unisondb:e2e', upstream: {upstream}{extra}}}\n"
    )
}

/// Marks a pod Running and Ready (there is no kubelet to do it).
fn make_pod_ready(cx: &Ctx, pod: &str) -> Result<()> {
    let now = "2026-01-01T00:00:00Z";
    let patch = serde_json::json!({"status": {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}
        ],
        "containerStatuses": [{"name": "unisondb", "ready": true, "restartCount": 0, "image": "unisondb:e2e",
            "imageID": "", "started": true, "state": {"running": {"startedAt": now}}}]
    }});
    cx.run(
        &[
            "patch",
            "pod",
            pod,
            "-n",
            NS,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    )?;
    Ok(())
}

fn owner_is(obj: &Value, kind: &str, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|o| {
            o.iter()
                .any(|r| r["kind"] == kind && r["uid"] == uid && r["controller"] == true)
        })
}

fn yaml_of(cm: &Value) -> Result<yaml::Value> {
    Ok(yaml::from_str(
        cm["data"]["config.yaml"].as_str().context("config.yaml")?,
    )?)
}

#[test]
fn operator_against_real_apiserver() -> Result<()> {
    let mut cx = control_plane_up()?;
    crds_established(&cx)?;
    two_operators_a_leads(&mut cx)?;
    hub_objects_with_owner_refs(&cx)?;
    relayer_chain_wired(&cx)?;
    scale_to_five_with_pdb(&cx)?;
    ready_pods_make_the_relayer_ready(&cx)?;
    config_change_gives_a_new_hash(&mut cx)?;
    cycle_and_missing_upstream_degrade(&cx)?;
    steady_state_writes_nothing(&cx)?;
    only_the_leader_reconciles(&cx)?;
    hub_deletion_collects_and_degrades(&cx)?;
    failover_to_the_standby(&mut cx)?;
    multi_hub_mirrors(&cx)?;
    cert_manager_certificates(&cx)?;
    backup_specs_render_and_validate(&cx)?;
    backup_kinds_phases_and_schedule(&cx)?;
    auth_hub_backup_runs_as_a_job(&cx)?;
    every_example_reconciles(&cx)?;
    single_operator_without_election_leads(&mut cx)?;
    Ok(())
}

/// One replica without a Lease (the chart's default) reconciles and reports itself leader, so the
/// chart's `NoLeader` alert (`sum(unisondb_operator_leader) < 1`) stays quiet.
fn single_operator_without_election_leads(cx: &mut Ctx) -> Result<()> {
    if let Some(b) = cx.op_b.as_mut() {
        b.terminate();
    }
    let op = Operator::start_with(&cx.cp, "solo", &["--no-leader-elect"])?;
    wait_for(
        "the solo operator to report leader=1 and reconcile",
        Duration::from_secs(30),
        || {
            let m = op.metrics()?;
            Ok::<_, anyhow::Error>(
                (metric_sum(&m, "unisondb_operator_leader") == 1.0
                    && metric_sum(&m, "unisondb_operator_reconcile_runs_total") > 0.0)
                    .then_some(()),
            )
        },
    )?;
    cx.step("no election: the single operator leads (leader gauge 1)");
    Ok(())
}

/// etcd + apiserver + controller-manager (no kubelet), AlwaysAllow.
fn control_plane_up() -> Result<Ctx> {
    let t0 = Instant::now();
    let cp = ControlPlane::start(ControlPlaneOptions {
        controller_manager: true,
        rbac: false,
    })?;
    let cx = Ctx {
        op_a: None,
        op_b: None,
        cp,
        t0,
        r1_hash: String::new(),
    };
    cx.step("control plane up");
    Ok(cx)
}

/// CRDs (--validate=false: kubectl's client-side schema of a 1.20 server does not know
/// x-kubernetes-validations; the server drops them).
fn crds_established(cx: &Ctx) -> Result<()> {
    cx.run(
        &[
            "apply",
            "--validate=false",
            "-f",
            repo()
                .join("crds/unisondb.io_crds.yaml")
                .to_str()
                .context("path")?,
        ],
        None,
    )?;
    cx.run(
        &[
            "wait",
            "--for=condition=Established",
            "crd/unisonhubs.unisondb.io",
            "crd/unisonrelayers.unisondb.io",
            "crd/unisonbackups.unisondb.io",
            "crd/unisonscheduledbackups.unisondb.io",
            "--timeout=60s",
        ],
        None,
    )?;
    cx.step("CRDs established");
    Ok(())
}

/// Two operator replicas: only the Lease holder reconciles.
fn two_operators_a_leads(cx: &mut Ctx) -> Result<()> {
    cx.op_a = Some(Operator::start(&cx.cp, "a")?);
    wait_for(
        "operator a to hold the lease",
        Duration::from_secs(30),
        || {
            Ok::<_, anyhow::Error>(
                cx.get("lease", "unisondb-operator")?
                    .filter(|l| l["spec"]["holderIdentity"] == "a")
                    .map(|_| ()),
            )
        },
    )?;
    let op_b = Operator::start(&cx.cp, "b")?;
    wait_for("operator b healthy", Duration::from_secs(30), || {
        Ok::<_, anyhow::Error>(http_get(op_b.port, "/healthz").ok())
    })?;
    cx.op_b = Some(op_b);
    cx.step("two operators running, a leads");
    Ok(())
}

/// Hub → owned objects.
fn hub_objects_with_owner_refs(cx: &Ctx) -> Result<()> {
    cx.apply(&hub_yaml("hub", "always"))?;
    let hub = wait_for("hub StatefulSet", Duration::from_secs(30), || {
        cx.get("statefulset", "hub")
    })?;
    let hub_uid = cx.must_get("unisonhub", "hub")?["metadata"]["uid"]
        .as_str()
        .context("uid")?
        .to_string();
    assert!(
        owner_is(&hub, "UnisonHub", &hub_uid),
        "StatefulSet owner ref: {}",
        hub["metadata"]
    );
    for (kind, name) in [
        ("service", "hub"),
        ("service", "hub-headless"),
        ("configmap", "hub-config"),
    ] {
        let o = wait_for(&format!("{kind}/{name}"), Duration::from_secs(10), || {
            cx.get(kind, name)
        })?;
        assert!(
            owner_is(&o, "UnisonHub", &hub_uid),
            "{kind}/{name} owner ref"
        );
    }
    let svc = cx.must_get("service", "hub")?;
    let ports: Vec<(String, i64, String)> = svc["spec"]["ports"]
        .as_array()
        .context("ports")?
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").into(),
                p["port"].as_i64().unwrap_or(0),
                p["protocol"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        vec![
            ("http".into(), 4000, "TCP".into()),
            ("grpc".into(), 4001, "TCP".into()),
            ("zmq".into(), 4002, "TCP".into()),
            ("metrics".into(), 9090, "TCP".into())
        ]
    );
    let args = &hub["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(
        args,
        &serde_json::json!([
            "server",
            "--mode",
            "replicator",
            "--config",
            "/etc/unisondb/config.yaml"
        ])
    );
    cx.step("hub objects applied with owner refs");
    Ok(())
}

/// Relayer on the hub, relayer on that relayer.
fn relayer_chain_wired(cx: &Ctx) -> Result<()> {
    cx.apply(&relayer_yaml("r1", "{hubRef: {name: hub}}", ""))?;
    cx.apply(&relayer_yaml(
        "r2",
        "{relayerRef: {name: r1}}",
        ", namespaces: [orders]",
    ))?;
    let r1 = wait_for("r1 resolved", Duration::from_secs(30), || {
        Ok::<_, anyhow::Error>(
            cx.get("unisonrelayer", "r1")?
                .filter(|o| o["status"]["depth"] == 1),
        )
    })?;
    assert_eq!(
        r1["status"]["upstream"],
        "http://hub.default.svc.cluster.local:4001"
    );
    let r2 = wait_for("r2 resolved", Duration::from_secs(30), || {
        Ok::<_, anyhow::Error>(
            cx.get("unisonrelayer", "r2")?
                .filter(|o| o["status"]["depth"] == 2),
        )
    })?;
    assert_eq!(
        r2["status"]["upstream"],
        "http://r1.default.svc.cluster.local:4001"
    );
    let r2cfg = yaml_of(&cx.must_get("configmap", "r2-config")?)?;
    assert_eq!(r2cfg["server"]["mode"], yaml::Value::from("relayer"));
    assert_eq!(
        r2cfg["replication"]["upstream"],
        yaml::Value::from("http://r1.default.svc.cluster.local:4001")
    );
    assert_eq!(
        r2cfg["server"]["namespaces"],
        yaml::from_str::<yaml::Value>("[orders]")?
    );
    let r1cfg = yaml_of(&cx.must_get("configmap", "r1-config")?)?;
    assert_eq!(
        r1cfg["server"]["namespaces"],
        yaml::from_str::<yaml::Value>("[orders, users]")?
    );
    cx.step("relayer chain wired: depths 1 and 2");
    Ok(())
}

/// Scale subresource.
fn scale_to_five_with_pdb(cx: &Ctx) -> Result<()> {
    cx.run(
        &["scale", "unisonrelayer/r1", "-n", NS, "--replicas=5"],
        None,
    )?;
    wait_for(
        "r1 StatefulSet at 5 replicas",
        Duration::from_secs(30),
        || {
            Ok::<_, anyhow::Error>(
                cx.get("statefulset", "r1")?
                    .filter(|s| s["spec"]["replicas"] == 5),
            )
        },
    )?;
    let pdb = wait_for("r1 PodDisruptionBudget", Duration::from_secs(20), || {
        cx.get("poddisruptionbudget", "r1")
    })?;
    assert_eq!(
        pdb["apiVersion"], "policy/v1beta1",
        "1.20 serves only policy/v1beta1"
    );
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(
        cx.get("poddisruptionbudget", "r2")?.is_none(),
        "no PDB for a single replica"
    );
    cx.step("kubectl scale → 5 replicas, PDB v1beta1");
    Ok(())
}

/// Pods are created by the controller-manager; mark them ready.
fn ready_pods_make_the_relayer_ready(cx: &Ctx) -> Result<()> {
    let pods: Vec<String> = (0..5).map(|i| format!("r1-{i}")).collect();
    for p in &pods {
        wait_for(&format!("pod {p}"), Duration::from_secs(60), || {
            cx.get("pod", p)
        })?;
        make_pod_ready(cx, p)?;
    }
    let r1 =
        wait_for(
            "r1 Ready with 5 ready replicas",
            Duration::from_secs(60),
            || {
                Ok::<_, anyhow::Error>(cx.get("unisonrelayer", "r1")?.filter(|o| {
                    o["status"]["readyReplicas"] == 5 && cond_is(o, "Ready", "True", None)
                }))
            },
        )?;
    assert_eq!(r1["status"]["replicas"], 5);
    assert!(r1["status"]["selector"]
        .as_str()
        .unwrap_or("")
        .contains("app.kubernetes.io/instance=r1"));
    cx.run(
        &[
            "wait",
            "--for=condition=Ready",
            "unisonrelayer/r1",
            "-n",
            NS,
            "--timeout=30s",
        ],
        None,
    )?;
    let scaled = cx.run(
        &[
            "get",
            "--raw",
            "/apis/unisondb.io/v1alpha1/namespaces/default/unisonrelayers/r1/scale",
        ],
        None,
    )?;
    let scaled: Value = serde_json::from_str(&scaled)?;
    assert_eq!(scaled["status"]["replicas"], 5);
    cx.step("pods ready → readyReplicas 5, Ready=True, kubectl wait ok");
    Ok(())
}

/// Config change rolls the pods (config hash on the template).
fn config_change_gives_a_new_hash(cx: &mut Ctx) -> Result<()> {
    let before = template_hash(&cx.must_get("statefulset", "hub")?);
    assert!(!before.is_empty());
    cx.run(
        &[
            "patch",
            "unisonhub",
            "hub",
            "-n",
            NS,
            "--type=merge",
            "-p",
            r#"{"spec":{"wal":{"fsync":"never"}}}"#,
        ],
        None,
    )?;
    let after = wait_for("hub config hash change", Duration::from_secs(30), || {
        let h = template_hash(&cx.must_get("statefulset", "hub")?);
        Ok::<_, anyhow::Error>((h != before).then_some(h))
    })?;
    let cm = cx.must_get("configmap", "hub-config")?;
    assert!(cm["data"]["config.yaml"]
        .as_str()
        .unwrap_or("")
        .contains("fsync: never"));
    wait_for("hub status.configHash", Duration::from_secs(20), || {
        Ok::<_, anyhow::Error>(
            cx.get("unisonhub", "hub")?
                .filter(|h| h["status"]["configHash"] == after.as_str()),
        )
    })?;
    // scaling a relayer does not touch its config hash
    cx.r1_hash = template_hash(&cx.must_get("statefulset", "r1")?);
    cx.step("config change → new config hash");
    Ok(())
}

/// Cycle and missing upstream → Degraded, nothing created.
fn cycle_and_missing_upstream_degrade(cx: &Ctx) -> Result<()> {
    cx.apply(&relayer_yaml("ca", "{relayerRef: {name: cb}}", ""))?;
    cx.apply(&relayer_yaml("cb", "{relayerRef: {name: ca}}", ""))?;
    cx.apply(&relayer_yaml("lost", "{hubRef: {name: nope}}", ""))?;
    for (name, reason) in [
        ("ca", "UpstreamCycle"),
        ("cb", "UpstreamCycle"),
        ("lost", "UpstreamNotFound"),
    ] {
        wait_for(
            &format!("{name} Degraded/{reason}"),
            Duration::from_secs(30),
            || {
                Ok::<_, anyhow::Error>(
                    cx.get("unisonrelayer", name)?
                        .filter(|o| cond_is(o, "Degraded", "True", Some(reason))),
                )
            },
        )?;
        assert!(
            cx.get("statefulset", name)?.is_none(),
            "{name} must not get a StatefulSet"
        );
    }
    let ev = cx.run(
        &[
            "get",
            "events",
            "-n",
            NS,
            "--field-selector",
            "involvedObject.name=lost",
            "-o",
            "json",
        ],
        None,
    )?;
    assert!(
        ev.contains("UpstreamNotFound"),
        "warning event on the object: {ev}"
    );
    cx.step("cycle and missing upstream → Degraded + event");
    Ok(())
}

/// Steady state: no writes.
fn steady_state_writes_nothing(cx: &Ctx) -> Result<()> {
    let snapshot = || -> Result<String> {
        cx.run(
            &[
                "get",
                "statefulsets,services,configmaps,unisonhubs,unisonrelayers,poddisruptionbudgets",
                "-n",
                NS,
                "-o",
                "custom-columns=K:.kind,N:.metadata.name,RV:.metadata.resourceVersion",
                "--no-headers",
            ],
            None,
        )
    };
    let status_writes = |op: &Operator| -> Result<f64> {
        Ok(metric_sum(
            &op.metrics()?,
            "unisondb_operator_status_writes_total",
        ))
    };
    let op_a = cx.op_a()?;
    std::thread::sleep(Duration::from_secs(2));
    let (rv1, w1) = (snapshot()?, status_writes(op_a)?);
    std::thread::sleep(Duration::from_secs(6));
    let (rv2, w2) = (snapshot()?, status_writes(op_a)?);
    assert_eq!(rv1, rv2, "resourceVersions changed in steady state");
    assert_eq!(w1, w2, "status writes in steady state");
    cx.step("steady state: 0 writes over 6 s");
    Ok(())
}

/// Only the lease holder reconciled.
fn only_the_leader_reconciles(cx: &Ctx) -> Result<()> {
    let (op_a, op_b) = (cx.op_a()?, cx.op_b()?);
    assert!(op_a.reconcile_runs()? > 0.0);
    assert_eq!(op_b.reconcile_runs()?, 0.0, "standby must not reconcile");
    assert_eq!(
        metric_sum(&op_b.metrics()?, "unisondb_operator_leader"),
        0.0
    );
    assert_eq!(
        metric_sum(&op_a.metrics()?, "unisondb_operator_leader"),
        1.0
    );
    Ok(())
}

/// Delete the hub: owned objects are garbage collected, relayers keep running but go Degraded.
fn hub_deletion_collects_and_degrades(cx: &Ctx) -> Result<()> {
    cx.run(
        &["delete", "unisonhub", "hub", "-n", NS, "--wait=false"],
        None,
    )?;
    for (kind, name) in [
        ("statefulset", "hub"),
        ("service", "hub"),
        ("service", "hub-headless"),
        ("configmap", "hub-config"),
    ] {
        wait_for(
            &format!("GC of {kind}/{name}"),
            Duration::from_secs(120),
            || Ok::<_, anyhow::Error>(cx.get(kind, name)?.is_none().then_some(())),
        )?;
    }
    for name in ["r1", "r2"] {
        let o = wait_for(
            &format!("{name} Degraded after hub deletion"),
            Duration::from_secs(30),
            || {
                Ok::<_, anyhow::Error>(
                    cx.get("unisonrelayer", name)?
                        .filter(|o| cond_is(o, "Degraded", "True", Some("UpstreamNotFound"))),
                )
            },
        )?;
        assert!(o["status"]["upstream"].is_string(), "last upstream kept");
    }
    let r1_sts = cx.must_get("statefulset", "r1")?;
    assert_eq!(r1_sts["spec"]["replicas"], 5, "relayer left serving reads");
    assert_eq!(
        template_hash(&r1_sts),
        cx.r1_hash,
        "relayer config untouched"
    );
    cx.step("hub deleted → GC'd, relayers Degraded and still running");
    Ok(())
}

/// Failover: the leader stops (releasing the Lease), the standby takes over and reconciles.
fn failover_to_the_standby(cx: &mut Ctx) -> Result<()> {
    cx.op_a.as_mut().context("operator a")?.terminate();
    wait_for(
        "operator b to take the lease",
        Duration::from_secs(30),
        || {
            Ok::<_, anyhow::Error>(
                cx.get("lease", "unisondb-operator")?
                    .filter(|l| l["spec"]["holderIdentity"] == "b")
                    .map(|_| ()),
            )
        },
    )?;
    cx.apply(&hub_yaml("hub", "always"))?;
    wait_for(
        "r1 healthy again via operator b",
        Duration::from_secs(60),
        || {
            Ok::<_, anyhow::Error>(
                cx.get("unisonrelayer", "r1")?
                    .filter(|o| cond_is(o, "Degraded", "False", None)),
            )
        },
    )?;
    wait_for("hub StatefulSet recreated", Duration::from_secs(30), || {
        cx.get("statefulset", "hub")
    })?;
    assert!(cx.op_b()?.reconcile_runs()? > 0.0);
    cx.step("failover: b leads and reconciles");
    Ok(())
}

/// Multi-hub: a hub mirroring a namespace owned by `hub`; and one mirroring from a missing hub.
fn multi_hub_mirrors(cx: &Ctx) -> Result<()> {
    cx.apply(&format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: hubm, namespace: {NS}}}\n\
         spec: {{image: 'unisondb:e2e', namespaces: [inventory], mirrors: [{{namespace: orders, hubRef: {{name: hub}}}}]}}\n"
    ))?;
    let cm = wait_for("hubm config", Duration::from_secs(30), || {
        cx.get("configmap", "hubm-config")
    })?;
    let cfg = yaml_of(&cm)?;
    assert_eq!(
        cfg["replication"]["mirrors"]["orders"],
        yaml::Value::from("http://hub.default.svc.cluster.local:4001")
    );
    assert_eq!(cfg["server"]["mode"], yaml::Value::from("replicator"));
    cx.apply(&format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: hubx, namespace: {NS}}}\n\
         spec: {{image: 'unisondb:e2e', namespaces: [xs], mirrors: [{{namespace: ghost, hubRef: {{name: absent}}}}]}}\n"
    ))?;
    wait_for(
        "hubx Degraded/UpstreamNotFound",
        Duration::from_secs(30),
        || {
            Ok::<_, anyhow::Error>(
                cx.get("unisonhub", "hubx")?
                    .filter(|o| cond_is(o, "Degraded", "True", Some("UpstreamNotFound"))),
            )
        },
    )?;
    assert!(cx.get("statefulset", "hubx")?.is_none());
    cx.step("multi-hub mirrors wired; missing mirror hub → Degraded");
    Ok(())
}

/// Every shipped example (deploy/examples), each in its own namespace: the operator builds a
/// StatefulSet and a config ConfigMap for every hub and relayer in it, and none is Degraded.
fn every_example_reconciles(cx: &Ctx) -> Result<()> {
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/examples"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 6, "expected the six example topologies");
    for file in &examples {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .context("example name")?;
        let ns = format!("ex-{stem}");
        cx.run(&["create", "namespace", &ns], None)?;
        let text = std::fs::read_to_string(file)?;
        cx.run(
            &["apply", "--validate=false", "-n", &ns, "-f", "-"],
            Some(&text),
        )?;
        let mut objects = Vec::new();
        for doc in yaml::Deserializer::from_str(&text) {
            let v = yaml::Value::deserialize(doc)?;
            let kind = v["kind"].as_str().unwrap_or_default().to_string();
            if kind == "UnisonHub" || kind == "UnisonRelayer" {
                let name = v["metadata"]["name"].as_str().context("name")?.to_string();
                objects.push((kind, name));
            }
        }
        assert!(
            !objects.is_empty(),
            "{stem}: no UnisonHub/UnisonRelayer in the example"
        );
        for (kind, name) in &objects {
            let sts = wait_for(
                &format!("{stem}: statefulset {name}"),
                Duration::from_secs(60),
                || cx.get_in(&ns, "statefulset", name),
            )?;
            if !text.contains("image:") {
                // a spec without image runs the operator's default node image
                assert_eq!(
                    sts["spec"]["template"]["spec"]["containers"][0]["image"],
                    unisondb_operator::build::DEFAULT_NODE_IMAGE,
                    "{stem}: {name}"
                );
            }
            cx.get_in(&ns, "configmap", &format!("{name}-config"))?
                .with_context(|| format!("{stem}: configmap {name}-config missing"))?;
            let cr = cx
                .get_in(&ns, &kind.to_lowercase(), name)?
                .context("custom resource")?;
            assert!(
                !cond_is(&cr, "Degraded", "True", None),
                "{stem}: {kind}/{name} is Degraded: {}",
                cr["status"]
            );
        }
        cx.step(&format!(
            "example {stem}: {} objects reconciled",
            objects.len()
        ));
    }
    Ok(())
}

/// `spec.tls.certManager`: without cert-manager's CRD the hub is `Degraded` (`CertManagerMissing`)
/// and nothing is created; with it (a stand-in CRD: cert-manager cannot run here), the operator
/// creates an owned Certificate for the Services and pods, and the pods mount its Secret.
fn cert_manager_certificates(cx: &Ctx) -> Result<()> {
    let hub = format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: tlshub, namespace: {NS}}}\n\
         spec: {{image: 'unisondb:e2e', namespaces: [secure], tls: {{certManager: {{issuerRef: {{name: ca, kind: ClusterIssuer}}, renewBefore: 360h}}}}}}\n"
    );
    cx.apply(&hub)?;
    let degraded = wait_for(
        "tlshub Degraded CertManagerMissing",
        Duration::from_secs(30),
        || {
            Ok::<_, anyhow::Error>(
                cx.get("unisonhub", "tlshub")?
                    .filter(|h| cond_is(h, "Degraded", "True", Some("CertManagerMissing"))),
            )
        },
    )?;
    let msg = condition(&degraded, "Degraded").context("Degraded")?["message"].to_string();
    assert!(msg.contains("cert-manager"), "{msg}");
    assert!(
        cx.get("statefulset", "tlshub")?.is_none(),
        "nothing is applied while cert-manager is missing"
    );
    cx.step("certManager without cert-manager: Degraded CertManagerMissing, nothing applied");

    let crd = repo().join("operator/tests/fixtures/cert-manager-certificate-crd.yaml");
    cx.run(&["apply", "-f", crd.to_str().context("path")?], None)?;
    cx.run(
        &[
            "wait",
            "--for=condition=Established",
            "crd/certificates.cert-manager.io",
            "--timeout=60s",
        ],
        None,
    )?;
    // any change re-reconciles (the CRD's arrival itself is not watched)
    cx.run(
        &["annotate", "unisonhub", "tlshub", "-n", NS, "touch=1"],
        None,
    )?;
    let cert = wait_for("Certificate tlshub", Duration::from_secs(30), || {
        cx.get("certificates.cert-manager.io", "tlshub")
    })?;
    let uid = cx.must_get("unisonhub", "tlshub")?["metadata"]["uid"]
        .as_str()
        .context("uid")?
        .to_string();
    assert!(owner_is(&cert, "UnisonHub", &uid), "{}", cert["metadata"]);
    assert_eq!(cert["spec"]["secretName"], "tlshub-tls");
    assert_eq!(cert["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    let dns: Vec<String> = serde_json::from_value(cert["spec"]["dnsNames"].clone())?;
    for want in [
        "tlshub.default.svc",
        "tlshub.default.svc.cluster.local",
        "tlshub-headless.default.svc.cluster.local",
        "*.tlshub-headless.default.svc",
        "*.tlshub-headless.default.svc.cluster.local",
    ] {
        assert!(dns.iter().any(|d| d == want), "{want} not in {dns:?}");
    }
    let usages = cert["spec"]["usages"].to_string();
    assert!(
        usages.contains("server auth") && usages.contains("client auth"),
        "{usages}"
    );
    let sts = wait_for("tlshub StatefulSet", Duration::from_secs(30), || {
        cx.get("statefulset", "tlshub")
    })?;
    let vols = &sts["spec"]["template"]["spec"]["volumes"];
    assert!(
        vols.as_array()
            .is_some_and(|v| v.iter().any(|v| v["secret"]["secretName"] == "tlshub-tls")),
        "{vols}"
    );
    wait_for("tlshub no longer Degraded", Duration::from_secs(30), || {
        Ok::<_, anyhow::Error>(
            cx.get("unisonhub", "tlshub")?
                .filter(|h| cond_is(h, "Degraded", "False", None)),
        )
    })?;
    let hub = cx.must_get("unisonhub", "tlshub")?;
    assert_eq!(hub["status"]["certificate"], "tlshub", "{}", hub["status"]);
    cx.step("certManager with the Certificate CRD: owned Certificate for Services and pods");

    // Back to a user Secret: the operator's Certificate goes (it would renew for nobody); a
    // Certificate the user made under another name stays.
    cx.run(
        &["apply", "-n", NS, "-f", "-"],
        Some(
            "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: users-own}\n\
             spec: {secretName: users-own, issuerRef: {name: ca}, dnsNames: [x.example]}\n",
        ),
    )?;
    cx.run(
        &[
            "patch",
            "unisonhub",
            "tlshub",
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"tls":{"certManager":null,"secretName":"tlshub-user"}}}"#,
        ],
        None,
    )?;
    wait_for(
        "Certificate tlshub deleted",
        Duration::from_secs(30),
        || {
            Ok::<_, anyhow::Error>(
                cx.get("certificates.cert-manager.io", "tlshub")?
                    .is_none()
                    .then_some(()),
            )
        },
    )?;
    let hub = cx.must_get("unisonhub", "tlshub")?;
    assert!(hub["status"]["certificate"].is_null(), "{}", hub["status"]);
    assert!(
        cx.get("certificates.cert-manager.io", "users-own")?
            .is_some(),
        "a Certificate the operator did not make is left alone"
    );
    cx.run(&["delete", "unisonhub", "tlshub", "-n", NS], None)?;
    cx.run(
        &[
            "delete",
            "certificates.cert-manager.io",
            "users-own",
            "-n",
            NS,
        ],
        None,
    )?;
    cx.step("certManager -> secretName: the operator's Certificate is deleted, others stay");
    Ok(())
}

const STORE: &str = "{endpoint: 'http://minio.storage.svc:9000', bucket: unisondb-backups, prefix: e2e, credentialsSecret: {name: s3-creds}}";

fn volume_secret(sts: &Value, volume: &str) -> Option<String> {
    sts["spec"]["template"]["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == volume)?["secret"]["secretName"]
        .as_str()
        .map(str::to_string)
}

/// `spec.backup` (archive section, Secret mounts), `spec.bootstrap.recovery` (restore init
/// containers), `upstream.objectStore` (replication.object_store) through the real API server, and
/// the bad specs the 1.20 server lets through (no CEL) refused by the operator as Degraded.
fn backup_specs_render_and_validate(cx: &Ctx) -> Result<()> {
    cx.apply(&format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: bkhub, namespace: {NS}}}\n\
         spec: {{image: 'unisondb:e2e', namespaces: [orders, users], backup: {{objectStore: {STORE}, walArchiving: {{maxDelaySeconds: 3}}}}}}\n"
    ))?;
    let cm = wait_for("bkhub-config", Duration::from_secs(30), || {
        cx.get("configmap", "bkhub-config")
    })?;
    let cfg = yaml_of(&cm)?;
    assert_eq!(cfg["archive"]["enabled"], yaml::Value::from(true));
    assert_eq!(
        cfg["archive"]["bucket"],
        yaml::Value::from("unisondb-backups")
    );
    assert_eq!(cfg["archive"]["max_delay_seconds"], yaml::Value::from(3));
    assert_eq!(
        cfg["archive"]["credentials_file"],
        yaml::Value::from("/etc/unisondb/object-store/credentials")
    );
    let sts = wait_for("bkhub StatefulSet", Duration::from_secs(30), || {
        cx.get("statefulset", "bkhub")
    })?;
    assert_eq!(
        volume_secret(&sts, "object-store").as_deref(),
        Some("s3-creds")
    );
    let mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].to_string();
    assert!(mounts.contains("/etc/unisondb/object-store"), "{mounts}");
    cx.step("spec.backup: archive section rendered, credentials Secret mounted read-only");

    // recovery: one restore init container per namespace, with the CLI of docs/KUBERNETES.md
    cx.apply(&format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: rechub, namespace: {NS}}}\n\
         spec: {{image: 'unisondb:e2e', namespaces: [orders, users], bootstrap: {{recovery: {{objectStore: {STORE}, targetLsn: 77}}}}}}\n"
    ))?;
    let sts = wait_for("rechub StatefulSet", Duration::from_secs(30), || {
        cx.get("statefulset", "rechub")
    })?;
    let init = sts["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .context("init containers")?;
    assert_eq!(init.len(), 2);
    let args: Vec<String> = serde_json::from_value(init[1]["args"].clone())?;
    assert_eq!(
        args.join(" "),
        "restore -d /var/lib/unisondb -n users --from-object-store s3://unisondb-backups/e2e \
         --endpoint http://minio.storage.svc:9000 --region us-east-1 --path-style \
         --credentials-file /etc/unisondb/recovery-store/credentials --to-lsn 77 --if-empty --force"
    );
    assert_eq!(
        volume_secret(&sts, "recovery-store").as_deref(),
        Some("s3-creds")
    );
    cx.step("bootstrap.recovery: restore-0/1 init containers with the restore command line");

    // refused specs: Degraded, named reason, nothing created
    for (name, spec, reason, says) in [
        (
            "badstore",
            "backup: {objectStore: {endpoint: 'minio:9000', bucket: b12, credentialsSecret: {name: s}}}",
            "InvalidObjectStore",
            "backup.objectStore.endpoint",
        ),
        (
            "badbucket",
            "backup: {objectStore: {bucket: Bad_Bucket, credentialsSecret: {name: s}}}",
            "InvalidObjectStore",
            "backup.objectStore.bucket",
        ),
        (
            "twotargets",
            "bootstrap: {recovery: {objectStore: {bucket: b12, credentialsSecret: {name: s}}, targetLsn: 5, targetTime: '2026-01-01T00:00:00Z'}}",
            "InvalidRecovery",
            "targetLsn or targetTime",
        ),
    ] {
        cx.run(
            &["apply", "--validate=false", "-f", "-"],
            Some(&format!(
                "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: {name}, namespace: {NS}}}\n\
                 spec: {{image: 'unisondb:e2e', namespaces: [orders], {spec}}}\n"
            )),
        )?;
        let h = wait_for(&format!("{name} Degraded {reason}"), Duration::from_secs(30), || {
            Ok::<_, anyhow::Error>(
                cx.get("unisonhub", name)?
                    .filter(|h| cond_is(h, "Degraded", "True", Some(reason))),
            )
        })?;
        let msg = condition(&h, "Degraded").context("Degraded")?["message"].to_string();
        assert!(msg.contains(says), "{name}: {msg}");
        assert!(cx.get("statefulset", name)?.is_none(), "{name}: nothing applied");
        cx.run(&["delete", "unisonhub", name, "-n", NS], None)?;
    }
    // an empty bucket is refused by the API server itself (schema minLength)
    let empty = cx.run(
        &["apply", "--validate=false", "-f", "-"],
        Some(&format!(
            "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: nobucket, namespace: {NS}}}\n\
             spec: {{image: 'unisondb:e2e', namespaces: [orders], backup: {{objectStore: {{bucket: '', credentialsSecret: {{name: s}}}}}}}}\n"
        )),
    );
    let err = empty
        .expect_err("an empty bucket is refused by the schema")
        .to_string();
    assert!(err.contains("spec.backup.objectStore.bucket"), "{err}");
    cx.step("bad store / two recovery targets → Degraded InvalidObjectStore / InvalidRecovery; empty bucket refused by the schema");

    // a relayer following only the bucket
    cx.apply(&relayer_yaml(
        "bucketfan",
        &format!("{{objectStore: {STORE}}}"),
        ", namespaces: [orders], replicas: 2",
    ))?;
    let cm = wait_for("bucketfan-config", Duration::from_secs(30), || {
        cx.get("configmap", "bucketfan-config")
    })?;
    let cfg = yaml_of(&cm)?;
    assert_eq!(
        cfg["replication"]["object_store"]["bucket"],
        yaml::Value::from("unisondb-backups")
    );
    assert_eq!(cfg["replication"]["upstream"], yaml::Value::from(""));
    let r = wait_for("bucketfan status", Duration::from_secs(30), || {
        Ok::<_, anyhow::Error>(
            cx.get("unisonrelayer", "bucketfan")?
                .filter(|r| r["status"]["upstream"].is_string()),
        )
    })?;
    assert_eq!(r["status"]["upstream"], "s3://unisondb-backups/e2e");
    assert_eq!(r["status"]["upstreamRef"], "objectStore");
    assert!(!cond_is(&r, "Degraded", "True", None), "{}", r["status"]);
    // no upstream at all is refused by the operator (the CEL rule is dropped by 1.20)
    cx.run(
        &["apply", "--validate=false", "-f", "-"],
        Some(&relayer_yaml("noupstream", "{}", ", namespaces: [orders]")),
    )?;
    wait_for("noupstream Degraded", Duration::from_secs(30), || {
        Ok::<_, anyhow::Error>(
            cx.get("unisonrelayer", "noupstream")?
                .filter(|r| cond_is(r, "Degraded", "True", Some("InvalidUpstream"))),
        )
    })?;
    for (kind, name) in [
        ("unisonrelayer", "noupstream"),
        ("unisonrelayer", "bucketfan"),
        ("unisonhub", "rechub"),
    ] {
        cx.run(&["delete", kind, name, "-n", NS], None)?;
    }
    cx.step(
        "upstream.objectStore alone: replication.object_store, upstream s3://...; none → Degraded",
    );
    Ok(())
}

fn phase(o: &Value) -> &str {
    o["status"]["phase"].as_str().unwrap_or("")
}

fn backups_of(cx: &Ctx, schedule: &str) -> Result<Vec<Value>> {
    let out = cx.run(
        &[
            "get",
            "unisonbackups",
            "-n",
            NS,
            "-l",
            &format!("unisondb.io/scheduled-backup={schedule}"),
            "-o",
            "json",
        ],
        None,
    )?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

/// A hub with httpAuth and tls.http: the UnisonBackup creates one Job (owned by it) in the hub's
/// image, the token as a secretKeyRef env and nowhere in the spec's text, the CA's `ca.crt`
/// mounted; the Job controller makes its pod (no kubelet runs it here: the cluster test does);
/// the backup shows Running with `status.job`; deleting the backup collects the Job.
fn auth_hub_backup_runs_as_a_job(cx: &Ctx) -> Result<()> {
    cx.apply(&format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: authhub, namespace: {NS}}}\n\
         spec: {{image: 'unisondb:e2e', namespaces: [orders], httpAuth: {{secretName: authhub-token}}, \
         tls: {{secretName: authhub-certs, http: true}}, backup: {{objectStore: {STORE}}}}}\n"
    ))?;
    cx.apply(&format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonBackup\nmetadata: {{name: authbk, namespace: {NS}}}\n\
         spec: {{hubRef: {{name: authhub}}}}\n"
    ))?;
    let job = wait_for("the backup Job", Duration::from_secs(30), || {
        cx.get("job", "authbk-orders")
    })?;
    let uid = cx.must_get("unisonbackup", "authbk")?["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(owner_is(&job, "UnisonBackup", &uid), "{}", job["metadata"]);
    let pod = &job["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "unisondb:e2e");
    assert_eq!(
        c["env"][0]["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "authhub-token", "key": "token", "optional": false})
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        args.windows(2)
            .any(|w| w == ["--url", "https://authhub.default.svc.cluster.local:4000"]),
        "{args:?}"
    );
    assert!(
        args.windows(2)
            .any(|w| w == ["--ca-file", "/etc/unisondb/ca/ca.crt"]),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a.contains("token")), "{args:?}");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "authhub-certs");
    assert_eq!(job["spec"]["backoffLimit"], 2);
    // the real Job controller makes the pod (Pending: no kubelet)
    let pods = wait_for("the Job's pod", Duration::from_secs(30), || {
        let out = cx.run(
            &[
                "get",
                "pods",
                "-n",
                NS,
                "-l",
                "job-name=authbk-orders",
                "-o",
                "json",
            ],
            None,
        )?;
        let v: Value = serde_json::from_str(&out)?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        Ok::<_, anyhow::Error>((!items.is_empty()).then_some(items))
    })?;
    assert_eq!(pods.len(), 1, "one pod: the Job is created once");
    let b = wait_for(
        "authbk Running with its Job",
        Duration::from_secs(30),
        || {
            Ok::<_, anyhow::Error>(
                cx.get("unisonbackup", "authbk")?
                    .filter(|b| phase(b) == "Running" && b["status"]["job"] == "authbk-orders"),
            )
        },
    )?;
    assert!(
        b["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("authbk-orders"),
        "{}",
        b["status"]
    );
    // a later reconcile finds the Job again instead of making a second one
    std::thread::sleep(Duration::from_secs(2));
    let all = cx.run(&["get", "jobs", "-n", NS, "-o", "name"], None)?;
    assert_eq!(
        all.lines().filter(|l| l.contains("authbk")).count(),
        1,
        "{all}"
    );
    cx.run(&["delete", "unisonbackup", "authbk", "-n", NS], None)?;
    wait_for("GC of the backup Job", Duration::from_secs(120), || {
        Ok::<_, anyhow::Error>(cx.get("job", "authbk-orders")?.is_none().then_some(()))
    })?;
    cx.run(&["delete", "unisonhub", "authhub", "-n", NS], None)?;
    cx.step("UnisonBackup of an httpAuth + tls.http hub: one owned Job, token by secretKeyRef only, collected with the backup");
    Ok(())
}

/// UnisonBackup: a hub without spec.backup fails it for good; a configured hub that cannot be
/// reached keeps it Running with the reason. UnisonScheduledBackup: owned UnisonBackups on
/// schedule, status times, suspend, history pruning, an invalid schedule Degraded.
fn backup_kinds_phases_and_schedule(cx: &Ctx) -> Result<()> {
    cx.apply(&format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: plainhub, namespace: {NS}}}\n\
         spec: {{image: 'unisondb:e2e', namespaces: [orders]}}\n"
    ))?;
    let backup = |name: &str, hub: &str| {
        format!(
            "apiVersion: unisondb.io/v1alpha1\nkind: UnisonBackup\nmetadata: {{name: {name}, namespace: {NS}}}\n\
             spec: {{hubRef: {{name: {hub}}}}}\n"
        )
    };
    cx.apply(&backup("nobackup", "plainhub"))?;
    let b = wait_for("nobackup Failed", Duration::from_secs(30), || {
        Ok::<_, anyhow::Error>(
            cx.get("unisonbackup", "nobackup")?
                .filter(|b| phase(b) == "Failed"),
        )
    })?;
    assert!(
        cond_is(&b, "Failed", "True", Some("BackupNotConfigured")),
        "{}",
        b["status"]
    );
    assert!(b["status"]["completedAt"].is_string(), "{}", b["status"]);
    assert!(
        b["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no spec.backup"),
        "{}",
        b["status"]
    );
    let events = cx.run(
        &[
            "get",
            "events.events.k8s.io",
            "-n",
            NS,
            "--field-selector",
            "regarding.name=nobackup",
            "-o",
            "json",
        ],
        None,
    )?;
    assert!(events.contains("BackupNotConfigured"), "{events}");
    // the printer columns
    let table = cx.run(&["get", "unisonbackup", "nobackup", "-n", NS], None)?;
    for col in ["HUB", "PHASE", "SIZE", "AGE", "plainhub", "Failed"] {
        assert!(table.contains(col), "{col} missing in {table}");
    }
    cx.step("UnisonBackup of a hub without spec.backup: Failed BackupNotConfigured (+ event)");

    // bkhub has spec.backup, but no pod answers here (no kubelet): Running, retried, reason shown
    cx.apply(&backup("tohub", "bkhub"))?;
    let b = wait_for(
        "tohub Running with a retry message",
        Duration::from_secs(60),
        || {
            Ok::<_, anyhow::Error>(cx.get("unisonbackup", "tohub")?.filter(|b| {
                phase(b) == "Running"
                    && b["status"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("will retry")
            }))
        },
    )?;
    assert!(b["status"]["startedAt"].is_string(), "{}", b["status"]);
    assert_eq!(
        b["status"]["namespaces"],
        serde_json::json!(["orders", "users"])
    );
    let msg = b["status"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("http://bkhub.default.svc.cluster.local:4000/api/v1/orders/backups"),
        "{msg}"
    );
    cx.run(&["delete", "unisonbackup", "tohub", "-n", NS], None)?;
    cx.step("UnisonBackup of an unreachable hub: Running, retried, the POST named in the message");

    // a schedule every 2 seconds against plainhub: each backup Fails at once (final, untouched)
    cx.apply(&format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonScheduledBackup\nmetadata: {{name: often, namespace: {NS}}}\n\
         spec: {{schedule: '*/2 * * * * *', hubRef: {{name: plainhub}}, successfulBackupsHistoryLimit: 1}}\n"
    ))?;
    let uid = wait_for("often uid", Duration::from_secs(10), || {
        Ok::<_, anyhow::Error>(
            cx.get("unisonscheduledbackup", "often")?
                .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string)),
        )
    })?;
    let made = wait_for("three scheduled backups", Duration::from_secs(60), || {
        let l = backups_of(cx, "often")?;
        Ok::<_, anyhow::Error>((l.len() >= 3).then_some(l))
    })?;
    for b in &made {
        assert!(
            owner_is(b, "UnisonScheduledBackup", &uid),
            "{}",
            b["metadata"]
        );
        let name = b["metadata"]["name"].as_str().unwrap_or("");
        let secs: i64 = name
            .trim_start_matches("often-")
            .parse()
            .context("unix time suffix")?;
        assert_eq!(secs % 2, 0, "{name}: a scheduled (even) second");
    }
    let s = cx.must_get("unisonscheduledbackup", "often")?;
    for f in ["lastScheduleTime", "nextScheduleTime", "lastBackup"] {
        assert!(s["status"][f].is_string(), "{f}: {}", s["status"]);
    }
    // suspend: no new backups, no next time
    cx.run(
        &[
            "patch",
            "unisonscheduledbackup",
            "often",
            "-n",
            NS,
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ],
        None,
    )?;
    wait_for(
        "often suspended (no nextScheduleTime)",
        Duration::from_secs(30),
        || {
            Ok::<_, anyhow::Error>(
                cx.get("unisonscheduledbackup", "often")?
                    .filter(|o| o["status"]["nextScheduleTime"].is_null()),
            )
        },
    )?;
    // every backup final (Failed: plainhub has no spec.backup), then three marked Completed by hand
    let all = wait_for(
        "every scheduled backup Failed",
        Duration::from_secs(30),
        || {
            let l = backups_of(cx, "often")?;
            Ok::<_, anyhow::Error>(l.iter().all(|b| phase(b) == "Failed").then_some(l))
        },
    )?;
    let mut names: Vec<String> = all
        .iter()
        .filter_map(|b| b["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort_by_key(|n| n.trim_start_matches("often-").parse::<i64>().unwrap_or(0));
    let count_before = names.len();
    let completed: Vec<String> = names.iter().rev().take(3).cloned().collect();
    for n in &completed {
        cx.run(
            &[
                "patch",
                "unisonbackup",
                n,
                "-n",
                NS,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Completed"}}"#,
            ],
            None,
        )?;
    }
    // history limit 1: the two older Completed ones are deleted, the newest kept, Failed ones kept
    let left = wait_for(
        "Completed history pruned to 1",
        Duration::from_secs(30),
        || {
            let l = backups_of(cx, "often")?;
            let done = l.iter().filter(|b| phase(b) == "Completed").count();
            Ok::<_, anyhow::Error>((done == 1).then_some(l))
        },
    )?;
    let kept = left
        .iter()
        .find(|b| phase(b) == "Completed")
        .and_then(|b| b["metadata"]["name"].as_str())
        .unwrap_or("");
    assert_eq!(kept, completed[0], "the newest Completed one is kept");
    assert_eq!(
        left.len(),
        count_before - 2,
        "only Completed ones beyond the limit go"
    );
    cx.step(&format!(
        "UnisonScheduledBackup: {count_before} owned backups on schedule, suspend, history pruned to 1"
    ));

    // an invalid schedule
    cx.run(
        &["apply", "--validate=false", "-f", "-"],
        Some(&format!(
            "apiVersion: unisondb.io/v1alpha1\nkind: UnisonScheduledBackup\nmetadata: {{name: badcron, namespace: {NS}}}\n\
             spec: {{schedule: 'every night', hubRef: {{name: plainhub}}}}\n"
        )),
    )?;
    wait_for(
        "badcron Degraded InvalidSchedule",
        Duration::from_secs(30),
        || {
            Ok::<_, anyhow::Error>(
                cx.get("unisonscheduledbackup", "badcron")?
                    .filter(|o| cond_is(o, "Degraded", "True", Some("InvalidSchedule"))),
            )
        },
    )?;
    assert!(backups_of(cx, "badcron")?.is_empty());
    // deleting the schedule collects its backups (owner references)
    cx.run(
        &[
            "delete",
            "unisonscheduledbackup",
            "often",
            "badcron",
            "-n",
            NS,
        ],
        None,
    )?;
    wait_for("GC of often's backups", Duration::from_secs(120), || {
        Ok::<_, anyhow::Error>(backups_of(cx, "often")?.is_empty().then_some(()))
    })?;
    for (kind, name) in [
        ("unisonbackup", "nobackup"),
        ("unisonhub", "plainhub"),
        ("unisonhub", "bkhub"),
    ] {
        cx.run(&["delete", kind, name, "-n", NS], None)?;
    }
    cx.step("invalid schedule → Degraded InvalidSchedule; schedule deletion collects its backups");
    Ok(())
}
