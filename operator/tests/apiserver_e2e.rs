//! End-to-end test against a real kube-apiserver + kube-controller-manager v1.20.2 (no kubelet):
//! the real operator binary, driven with the real kubectl.
//!
//! Needs the binaries built by `e2e/k8s/install-deps.sh` (cached under
//! ~/.cache/unisondb-e2e/k8s-1.20.2/bin, or `K8S_BIN`). Fails, never skips, when they are missing.

use serde::Deserialize;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

const KUBECTL: &str = "/usr/bin/kubectl";
const NS: &str = "default";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn k8s_bin() -> PathBuf {
    std::env::var_os("K8S_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/root".into());
            home.join(".cache/unisondb-e2e/k8s-1.20.2/bin")
        })
}

/// etcd + apiserver + controller-manager; stopped on drop, also when the test fails.
struct ControlPlane {
    run_dir: PathBuf,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    fn start() -> Result<Self> {
        let bin = k8s_bin();
        for b in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            if !bin.join(b).exists() {
                bail!(
                    "{} is missing: run `e2e/k8s/install-deps.sh` (builds kube-apiserver/controller-manager v1.20.2 \
                     and takes etcd from Debian, ~5 min) or point K8S_BIN at the binaries",
                    bin.join(b).display()
                );
            }
        }
        if !Path::new(KUBECTL).exists() {
            bail!("{KUBECTL} is missing: apt-get install kubectl (or run e2e/k8s/install-deps.sh)");
        }
        let run_dir = std::env::temp_dir().join(format!("unisondb-op-e2e-{}", std::process::id()));
        let _ = fs::remove_dir_all(&run_dir);
        fs::create_dir_all(&run_dir)?;
        let cp = ControlPlane {
            kubeconfig: run_dir.join("kubeconfig"),
            run_dir,
        };
        let out = Command::new("bash")
            .arg(repo().join("e2e/k8s/start-k8s120.sh"))
            .env("RUN_DIR", &cp.run_dir)
            .env("K8S_BIN", &bin)
            .env("ETCD_PORT", free_port().to_string())
            .env("PEER_PORT", free_port().to_string())
            .env("API_PORT", free_port().to_string())
            .env("WITH_KCM", "1")
            .output()
            .context("running start-k8s120.sh")?;
        if !out.status.success() {
            bail!(
                "start-k8s120.sh failed: {}\n{}\napiserver log: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                cp.run_dir.join("apiserver.log").display()
            );
        }
        Ok(cp)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("e2e/k8s/stop-k8s120.sh"))
            .env("RUN_DIR", &self.run_dir)
            .status();
        if std::thread::panicking() {
            eprintln!("e2e failed; logs kept in {}", self.run_dir.display());
            for f in ["operator-a.log", "operator-b.log"] {
                if let Ok(s) = fs::read_to_string(self.run_dir.join(f)) {
                    let tail: Vec<&str> = s.lines().rev().take(40).collect();
                    eprintln!("--- {f} (last 40 lines) ---");
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        } else {
            let _ = fs::remove_dir_all(&self.run_dir);
        }
    }
}

/// One operator process; killed on drop.
struct Operator {
    child: Child,
    port: u16,
}

impl Operator {
    fn start(cp: &ControlPlane, identity: &str) -> Result<Self> {
        let port = free_port();
        let log = fs::File::create(cp.run_dir.join(format!("operator-{identity}.log")))?;
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
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "info,unisondb_operator=debug")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning unisondb-operator")?;
        Ok(Operator { child, port })
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

struct Kubectl<'a> {
    cp: &'a ControlPlane,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = Command::new(KUBECTL);
        cmd.arg("--kubeconfig").arg(&self.cp.kubeconfig).args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawning kubectl")?;
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .context("kubectl stdin")?
                .write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn apply(&self, yaml: &str) -> Result<String> {
        self.run(&["apply", "-f", "-"], Some(yaml))
    }

    fn get(&self, kind: &str, name: &str) -> Result<Option<Value>> {
        match self.run(
            &[
                "get",
                kind,
                name,
                "-n",
                NS,
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

    fn must_get(&self, kind: &str, name: &str) -> Result<Value> {
        self.get(kind, name)?
            .with_context(|| format!("{kind}/{name} not found"))
    }
}

/// Polls `f` until it returns `Some`, or fails with `what` and the last observation.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last})");
        }
        std::thread::sleep(Duration::from_millis(250));
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
fn make_pod_ready(k: &Kubectl<'_>, pod: &str) -> Result<()> {
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
    k.run(
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

#[test]
fn operator_against_real_apiserver() -> Result<()> {
    let t0 = Instant::now();
    let cp = ControlPlane::start()?;
    let k = Kubectl { cp: &cp };
    let step = |name: &str| eprintln!("[{:>6.1}s] {name}", t0.elapsed().as_secs_f64());
    step("control plane up");

    // CRDs (--validate=false: kubectl's client-side schema of a 1.20 server does not know
    // x-kubernetes-validations; the server drops them).
    k.run(
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
    k.run(
        &[
            "wait",
            "--for=condition=Established",
            "crd/unisonhubs.unisondb.io",
            "crd/unisonrelayers.unisondb.io",
            "--timeout=60s",
        ],
        None,
    )?;
    step("CRDs established");

    // Two operator replicas: only the Lease holder reconciles.
    let mut op_a = Operator::start(&cp, "a")?;
    wait_for(
        "operator a to hold the lease",
        Duration::from_secs(30),
        || {
            Ok(k.get("lease", "unisondb-operator")?
                .filter(|l| l["spec"]["holderIdentity"] == "a")
                .map(|_| ()))
        },
    )?;
    let op_b = Operator::start(&cp, "b")?;
    wait_for("operator b healthy", Duration::from_secs(30), || {
        Ok(http_get(op_b.port, "/healthz").ok())
    })?;
    step("two operators running, a leads");

    // Hub → owned objects.
    k.apply(&hub_yaml("hub", "always"))?;
    let hub = wait_for("hub StatefulSet", Duration::from_secs(30), || {
        k.get("statefulset", "hub")
    })?;
    let hub_uid = k.must_get("unisonhub", "hub")?["metadata"]["uid"]
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
            k.get(kind, name)
        })?;
        assert!(
            owner_is(&o, "UnisonHub", &hub_uid),
            "{kind}/{name} owner ref"
        );
    }
    let svc = k.must_get("service", "hub")?;
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
    step("hub objects applied with owner refs");

    // Relayer on the hub, relayer on that relayer.
    k.apply(&relayer_yaml("r1", "{hubRef: {name: hub}}", ""))?;
    k.apply(&relayer_yaml(
        "r2",
        "{relayerRef: {name: r1}}",
        ", namespaces: [orders]",
    ))?;
    let r1 = wait_for("r1 resolved", Duration::from_secs(30), || {
        Ok(k.get("unisonrelayer", "r1")?
            .filter(|o| o["status"]["depth"] == 1))
    })?;
    assert_eq!(
        r1["status"]["upstream"],
        "http://hub.default.svc.cluster.local:4001"
    );
    let r2 = wait_for("r2 resolved", Duration::from_secs(30), || {
        Ok(k.get("unisonrelayer", "r2")?
            .filter(|o| o["status"]["depth"] == 2))
    })?;
    assert_eq!(
        r2["status"]["upstream"],
        "http://r1.default.svc.cluster.local:4001"
    );
    let r2cfg: serde_yaml::Value = serde_yaml::from_str(
        k.must_get("configmap", "r2-config")?["data"]["config.yaml"]
            .as_str()
            .context("config.yaml")?,
    )?;
    assert_eq!(r2cfg["server"]["mode"], serde_yaml::Value::from("relayer"));
    assert_eq!(
        r2cfg["replication"]["upstream"],
        serde_yaml::Value::from("http://r1.default.svc.cluster.local:4001")
    );
    assert_eq!(
        r2cfg["server"]["namespaces"],
        serde_yaml::from_str::<serde_yaml::Value>("[orders]")?
    );
    let r1cfg: serde_yaml::Value = serde_yaml::from_str(
        k.must_get("configmap", "r1-config")?["data"]["config.yaml"]
            .as_str()
            .context("cfg")?,
    )?;
    assert_eq!(
        r1cfg["server"]["namespaces"],
        serde_yaml::from_str::<serde_yaml::Value>("[orders, users]")?
    );
    step("relayer chain wired: depths 1 and 2");

    // Scale subresource.
    k.run(
        &["scale", "unisonrelayer/r1", "-n", NS, "--replicas=5"],
        None,
    )?;
    wait_for(
        "r1 StatefulSet at 5 replicas",
        Duration::from_secs(30),
        || {
            Ok(k.get("statefulset", "r1")?
                .filter(|s| s["spec"]["replicas"] == 5))
        },
    )?;
    let pdb = wait_for("r1 PodDisruptionBudget", Duration::from_secs(20), || {
        k.get("poddisruptionbudget", "r1")
    })?;
    assert_eq!(
        pdb["apiVersion"], "policy/v1beta1",
        "1.20 serves only policy/v1beta1"
    );
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(
        k.get("poddisruptionbudget", "r2")?.is_none(),
        "no PDB for a single replica"
    );
    step("kubectl scale → 5 replicas, PDB v1beta1");

    // Pods are created by the controller-manager; mark them ready.
    let pods: Vec<String> = (0..5).map(|i| format!("r1-{i}")).collect();
    for p in &pods {
        wait_for(&format!("pod {p}"), Duration::from_secs(60), || {
            k.get("pod", p)
        })?;
        make_pod_ready(&k, p)?;
    }
    let r1 = wait_for(
        "r1 Ready with 5 ready replicas",
        Duration::from_secs(60),
        || {
            Ok(k.get("unisonrelayer", "r1")?
                .filter(|o| o["status"]["readyReplicas"] == 5 && cond_is(o, "Ready", "True", None)))
        },
    )?;
    assert_eq!(r1["status"]["replicas"], 5);
    assert!(r1["status"]["selector"]
        .as_str()
        .unwrap_or("")
        .contains("app.kubernetes.io/instance=r1"));
    k.run(
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
    let scaled = k.run(
        &[
            "get",
            "--raw",
            "/apis/unisondb.io/v1alpha1/namespaces/default/unisonrelayers/r1/scale",
        ],
        None,
    )?;
    let scaled: Value = serde_json::from_str(&scaled)?;
    assert_eq!(scaled["status"]["replicas"], 5);
    step("pods ready → readyReplicas 5, Ready=True, kubectl wait ok");

    // Config change rolls the pods (config hash on the template).
    let before = template_hash(&k.must_get("statefulset", "hub")?);
    assert!(!before.is_empty());
    k.run(
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
        let h = template_hash(&k.must_get("statefulset", "hub")?);
        Ok((h != before).then_some(h))
    })?;
    let cm = k.must_get("configmap", "hub-config")?;
    assert!(cm["data"]["config.yaml"]
        .as_str()
        .unwrap_or("")
        .contains("fsync: never"));
    wait_for("hub status.configHash", Duration::from_secs(20), || {
        Ok(k.get("unisonhub", "hub")?
            .filter(|h| h["status"]["configHash"] == after.as_str()))
    })?;
    // scaling a relayer does not touch its config hash
    let r1_hash = template_hash(&k.must_get("statefulset", "r1")?);
    step("config change → new config hash");

    // Cycle and missing upstream → Degraded, nothing created.
    k.apply(&relayer_yaml("ca", "{relayerRef: {name: cb}}", ""))?;
    k.apply(&relayer_yaml("cb", "{relayerRef: {name: ca}}", ""))?;
    k.apply(&relayer_yaml("lost", "{hubRef: {name: nope}}", ""))?;
    for (name, reason) in [
        ("ca", "UpstreamCycle"),
        ("cb", "UpstreamCycle"),
        ("lost", "UpstreamNotFound"),
    ] {
        wait_for(
            &format!("{name} Degraded/{reason}"),
            Duration::from_secs(30),
            || {
                Ok(k.get("unisonrelayer", name)?
                    .filter(|o| cond_is(o, "Degraded", "True", Some(reason))))
            },
        )?;
        assert!(
            k.get("statefulset", name)?.is_none(),
            "{name} must not get a StatefulSet"
        );
    }
    let ev = k.run(
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
    step("cycle and missing upstream → Degraded + event");

    // Steady state: no writes.
    let snapshot = |k: &Kubectl<'_>| -> Result<String> {
        k.run(
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
    std::thread::sleep(Duration::from_secs(2));
    let (rv1, w1) = (snapshot(&k)?, status_writes(&op_a)?);
    std::thread::sleep(Duration::from_secs(6));
    let (rv2, w2) = (snapshot(&k)?, status_writes(&op_a)?);
    assert_eq!(rv1, rv2, "resourceVersions changed in steady state");
    assert_eq!(w1, w2, "status writes in steady state");
    step("steady state: 0 writes over 6 s");

    // Only the lease holder reconciled.
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

    // Delete the hub: owned objects are garbage collected, relayers keep running but go Degraded.
    k.run(
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
            || Ok(k.get(kind, name)?.is_none().then_some(())),
        )?;
    }
    for name in ["r1", "r2"] {
        let o = wait_for(
            &format!("{name} Degraded after hub deletion"),
            Duration::from_secs(30),
            || {
                Ok(k.get("unisonrelayer", name)?
                    .filter(|o| cond_is(o, "Degraded", "True", Some("UpstreamNotFound"))))
            },
        )?;
        assert!(o["status"]["upstream"].is_string(), "last upstream kept");
    }
    let r1_sts = k.must_get("statefulset", "r1")?;
    assert_eq!(r1_sts["spec"]["replicas"], 5, "relayer left serving reads");
    assert_eq!(template_hash(&r1_sts), r1_hash, "relayer config untouched");
    step("hub deleted → GC'd, relayers Degraded and still running");

    // Failover: the leader stops (releasing the Lease), the standby takes over and reconciles.
    op_a.terminate();
    wait_for(
        "operator b to take the lease",
        Duration::from_secs(30),
        || {
            Ok(k.get("lease", "unisondb-operator")?
                .filter(|l| l["spec"]["holderIdentity"] == "b")
                .map(|_| ()))
        },
    )?;
    k.apply(&hub_yaml("hub", "always"))?;
    wait_for(
        "r1 healthy again via operator b",
        Duration::from_secs(60),
        || {
            Ok(k.get("unisonrelayer", "r1")?
                .filter(|o| cond_is(o, "Degraded", "False", None)))
        },
    )?;
    wait_for("hub StatefulSet recreated", Duration::from_secs(30), || {
        k.get("statefulset", "hub")
    })?;
    assert!(op_b.reconcile_runs()? > 0.0);
    step("failover: b leads and reconciles");

    // Multi-hub: a hub mirroring a namespace owned by `hub`; and one mirroring from a missing hub.
    k.apply(&format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: hubm, namespace: {NS}}}\n\
         spec: {{image: 'unisondb:e2e', namespaces: [inventory], mirrors: [{{namespace: orders, hubRef: {{name: hub}}}}]}}\n"
    ))?;
    let cm = wait_for("hubm config", Duration::from_secs(30), || {
        k.get("configmap", "hubm-config")
    })?;
    let cfg: serde_yaml::Value =
        serde_yaml::from_str(cm["data"]["config.yaml"].as_str().context("cfg")?)?;
    assert_eq!(
        cfg["replication"]["mirrors"]["orders"],
        serde_yaml::Value::from("http://hub.default.svc.cluster.local:4001")
    );
    assert_eq!(cfg["server"]["mode"], serde_yaml::Value::from("replicator"));
    k.apply(&format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: hubx, namespace: {NS}}}\n\
         spec: {{image: 'unisondb:e2e', namespaces: [xs], mirrors: [{{namespace: ghost, hubRef: {{name: absent}}}}]}}\n"
    ))?;
    wait_for(
        "hubx Degraded/UpstreamNotFound",
        Duration::from_secs(30),
        || {
            Ok(k.get("unisonhub", "hubx")?
                .filter(|o| cond_is(o, "Degraded", "True", Some("UpstreamNotFound"))))
        },
    )?;
    assert!(k.get("statefulset", "hubx")?.is_none());
    step("multi-hub mirrors wired; missing mirror hub → Degraded");

    // Every shipped example (deploy/examples), each in its own namespace: the operator builds a
    // StatefulSet and a config ConfigMap for every hub and relayer in it, and none is Degraded.
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
        k.run(&["create", "namespace", &ns], None)?;
        let text = std::fs::read_to_string(file)?;
        k.run(
            &["apply", "--validate=false", "-n", &ns, "-f", "-"],
            Some(&text),
        )?;
        let mut objects = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(doc)?;
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
            let get = |what: &str, n: &str| -> Result<Option<Value>> {
                let out = k.run(
                    &[
                        "get",
                        what,
                        n,
                        "-n",
                        &ns,
                        "-o",
                        "json",
                        "--ignore-not-found",
                    ],
                    None,
                )?;
                Ok(if out.trim().is_empty() {
                    None
                } else {
                    Some(serde_json::from_str(&out)?)
                })
            };
            wait_for(
                &format!("{stem}: statefulset {name}"),
                Duration::from_secs(60),
                || get("statefulset", name),
            )?;
            get("configmap", &format!("{name}-config"))?
                .with_context(|| format!("{stem}: configmap {name}-config missing"))?;
            let cr = get(&kind.to_lowercase(), name)?.context("custom resource")?;
            assert!(
                !cond_is(&cr, "Degraded", "True", None),
                "{stem}: {kind}/{name} is Degraded: {}",
                cr["status"]
            );
        }
        step(&format!(
            "example {stem}: {} objects reconciled",
            objects.len()
        ));
    }
    Ok(())
}
