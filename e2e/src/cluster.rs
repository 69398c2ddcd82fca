//! A real single-node Kubernetes v1.20.2 cluster (e2e/cluster/up.sh: containerd, kubelet, scheduler,
//! kube-proxy, CNI bridge, DNS, hostPath PV provisioner) for the full-stack test, torn down by a Drop
//! guard (e2e/cluster/down.sh) also when the test fails. One cluster per machine at a time: a lock
//! file serializes runs (the node uses fixed paths, a bridge, iptables and the kubelet's ports).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use unisondb_testkit::{free_port, free_port_pair, Wait};

use crate::{cache_dir, repo_root, stderr, stdout};

pub const CLUSTER_INSTALLER: &str = "e2e/cluster/install-deps.sh";

/// Where the cluster keeps its state (fixed: down.sh of a crashed earlier run must find it).
pub const STATE_DIR: &str = "/tmp/unisondb-cluster";

pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub node_dir: PathBuf,
    pub run_dir: PathBuf,
    /// Artifacts of this run (image tarball, logs of helper processes).
    pub work: PathBuf,
    env: Vec<(String, String)>,
    /// Helper processes (Prometheus, SSE/ZeroMQ clients): killed before teardown.
    pub children: Vec<Child>,
    lock: Option<Child>,
}

/// Asserts that a host tool exists, naming the installer otherwise.
pub fn require_tool(cmd: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{cmd}` not found: run `bash {CLUSTER_INSTALLER}` (./test.sh runs it)"
    );
}

/// Polls `f` every 500 ms until it returns Ok or `timeout` passes; panics with the last error
/// (`Err` is the state seen so far). The polling itself is `unisondb_testkit::Wait`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    Wait::new(what, timeout)
        .every(Duration::from_millis(500))
        .until(|| f().map(Some))
        .unwrap_or_else(|e| panic!("{e}"))
}

impl Cluster {
    /// Takes the machine-wide lock, cleans up any leftover cluster, starts a fresh one.
    pub fn up() -> Cluster {
        for t in [
            "containerd",
            "runc",
            "ctr",
            "iptables",
            "conntrack",
            "dnsmasq",
            "socat",
            "busybox",
            "gcc",
            "kubectl",
            "flock",
            "curl",
        ] {
            require_tool(t);
        }
        let bin = cache_dir().join("k8s-1.20.2/bin");
        for b in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
        ] {
            assert!(
                bin.join(b).exists(),
                "{} missing: run `bash {CLUSTER_INSTALLER}` (builds Kubernetes 1.20.2 once, ~6 min)",
                bin.join(b).display()
            );
        }
        // The lock is held by a child that exits with this process (tail --pid), so a killed test
        // never leaves it held.
        let mut lock = Command::new("flock")
            .args(["-x", "-w", "1800", "/tmp/unisondb-cluster.lock", "sh", "-c"])
            .arg(format!(
                "echo locked; exec tail --pid={} -f /dev/null",
                std::process::id()
            ))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn flock");
        {
            use std::io::Read;
            let mut buf = [0u8; 7];
            let mut out = lock.stdout.take().expect("flock stdout");
            out.read_exact(&mut buf)
                .expect("could not take /tmp/unisondb-cluster.lock within 30 min");
        }
        let node_dir = PathBuf::from(STATE_DIR).join("node");
        let run_dir = PathBuf::from(STATE_DIR).join("cp");
        let work =
            std::env::temp_dir().join(format!("unisondb-cluster-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&work).expect("create work dir");
        let api = free_port_pair();
        let env = vec![
            ("P".to_string(), node_dir.display().to_string()),
            ("RUN_DIR".to_string(), run_dir.display().to_string()),
            ("API_PORT".to_string(), api.to_string()),
            ("ETCD_PORT".to_string(), free_port().to_string()),
            ("PEER_PORT".to_string(), free_port().to_string()),
            (
                "K8S_CACHE".to_string(),
                cache_dir().join("k8s-1.20.2").display().to_string(),
            ),
        ];
        let c = Cluster {
            kubeconfig: run_dir.join("kubeconfig"),
            node_dir,
            run_dir,
            work,
            env,
            children: Vec::new(),
            lock: Some(lock),
        };
        // a previous run that was SIGKILLed may have left a cluster behind
        c.down();
        let t = Instant::now();
        let o = c.script("up.sh");
        if !o.status.success() {
            let logs = c.node_logs();
            panic!(
                "e2e/cluster/up.sh failed ({}):\n{}\n{}\n{logs}",
                o.status,
                stdout(&o),
                stderr(&o)
            );
        }
        eprintln!("[cluster] node Ready in {:.1}s", t.elapsed().as_secs_f64());
        c
    }

    fn script(&self, name: &str) -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("e2e/cluster").join(name));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("could not run e2e/cluster/{name}: {e}"))
    }

    fn down(&self) {
        let o = self.script("down.sh");
        if !o.status.success() {
            eprintln!("[cluster] down.sh: {} {}", stdout(&o), stderr(&o));
        }
    }

    pub fn env(&self, key: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// `ctr` against the node's containerd, k8s.io namespace.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a")
            .arg(self.node_dir.join("ctd/containerd.sock"))
            .args(["-n", "k8s.io"]);
        c
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        c.args(args);
        c.current_dir(repo_root());
        c
    }

    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("kubectl missing ({e}): run `bash {CLUSTER_INSTALLER}`"))
    }

    /// kubectl, asserting success; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let o = self.kubectl_output(args);
        assert!(
            o.status.success(),
            "kubectl {} failed ({}):\n{}\n{}",
            args.join(" "),
            o.status,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// kubectl, Ok(stdout) or Err(stderr): for polling.
    pub fn try_kubectl(&self, args: &[&str]) -> Result<String, String> {
        let o = self.kubectl_output(args);
        if o.status.success() {
            Ok(stdout(&o))
        } else {
            Err(format!("kubectl {}: {}", args.join(" "), stderr(&o).trim()))
        }
    }

    /// kubectl with a manifest on stdin, asserting success.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> String {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        // kubectl may exit early on an error: a broken pipe is then reported through its stderr
        let _ = child
            .stdin
            .take()
            .expect("kubectl stdin")
            .write_all(input.as_bytes());
        let o = child.wait_with_output().expect("kubectl output");
        assert!(
            o.status.success(),
            "kubectl {} failed:\n{}\n{}",
            args.join(" "),
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl {args:?} -o json: {e}: {out}"))
    }

    fn node_logs(&self) -> String {
        let mut s = String::new();
        for f in [
            "kubelet",
            "containerd",
            "scheduler",
            "kube-proxy",
            "pv-provisioner",
            "dns-sync",
        ] {
            let p = self.node_dir.join("logs").join(format!("{f}.log"));
            if let Ok(t) = std::fs::read_to_string(&p) {
                let lines: Vec<&str> = t.lines().collect();
                let tail = lines[lines.len().saturating_sub(25)..].join("\n");
                s.push_str(&format!("--- {} (last 25 lines)\n{tail}\n", p.display()));
            }
        }
        for f in ["apiserver.log", "kcm.log"] {
            let p = self.run_dir.join(f);
            if let Ok(t) = std::fs::read_to_string(&p) {
                let lines: Vec<&str> = t.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                s.push_str(&format!("--- {} (last 15 lines)\n{tail}\n", p.display()));
            }
        }
        s
    }

    /// Everything useful after a failure: objects, failing pods described, pod logs, node logs.
    pub fn dump(&self) {
        let run = |args: &[&str]| -> String {
            match self.kubectl_cmd(args).arg("--request-timeout=10s").output() {
                Ok(o) => format!("{}{}", stdout(&o), stderr(&o)),
                Err(e) => e.to_string(),
            }
        };
        eprintln!(
            "===== kubectl get all,pvc,pv -A -o wide\n{}",
            run(&["get", "all,pvc,pv", "-A", "-o", "wide"])
        );
        eprintln!(
            "===== unisonhubs, unisonrelayers\n{}",
            run(&["get", "unisonhubs,unisonrelayers", "-A", "-o", "yaml"])
        );
        eprintln!(
            "===== events\n{}",
            run(&["get", "events", "-A", "--sort-by=.lastTimestamp"])
        );
        let pods = run(&[
            "get",
            "pods",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.metadata.namespace}{\" \"}{.metadata.name}{\" \"}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ]);
        for line in pods.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 2 {
                continue;
            }
            let (ns, pod) = (parts[0], parts[1]);
            if parts.get(2) != Some(&"True") {
                eprintln!(
                    "===== describe {ns}/{pod}\n{}",
                    run(&["describe", "pod", "-n", ns, pod])
                );
            }
            eprintln!(
                "===== logs {ns}/{pod}\n{}",
                run(&["logs", "-n", ns, pod, "--all-containers", "--tail=60"])
            );
            let prev = run(&[
                "logs",
                "-n",
                ns,
                pod,
                "--all-containers",
                "--previous",
                "--tail=30",
            ]);
            if !prev.contains("previous terminated container") && !prev.trim().is_empty() {
                eprintln!("===== previous logs {ns}/{pod}\n{prev}");
            }
        }
        eprintln!("===== node logs\n{}", self.node_logs());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            self.dump();
        }
        let t = Instant::now();
        self.down();
        eprintln!("[cluster] torn down in {:.1}s", t.elapsed().as_secs_f64());
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.work);
        } else {
            eprintln!("[cluster] artifacts kept in {}", self.work.display());
        }
        if let Some(mut l) = self.lock.take() {
            let _ = l.kill();
            let _ = l.wait();
        }
    }
}

/// Builds the Dockerfile with buildah (e2e/image/build.sh: bases from Debian's packages, the host's
/// Rust toolchain in the builder) and writes it as a docker-archive tagged `tag`. Returns the
/// script's summary line (`image TAG size N archive M bytes`). Build output goes to stderr.
pub fn build_image(out: &Path, tag: &str) -> String {
    let o = Command::new("bash")
        .arg(repo_root().join("e2e/image/build.sh"))
        .arg(out)
        .arg(tag)
        .env(
            "CARGO_BUILD_JOBS",
            std::env::var("CARGO_BUILD_JOBS").unwrap_or("2".into()),
        )
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("bash missing ({e})"));
    assert!(
        o.status.success(),
        "e2e/image/build.sh failed (its output is above; installer: {CLUSTER_INSTALLER}):\n{}",
        stdout(&o)
    );
    stdout(&o).lines().last().unwrap_or_default().to_string()
}

/// The image config (`config` object) and the merged listing of every layer (`mode uid/gid path`
/// lines; a later layer's entry replaces an earlier one) of a docker-archive.
pub fn image_contents(archive: &Path) -> (serde_json::Value, Vec<String>) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&archive_member(archive, "manifest.json")).expect("manifest.json");
    let cfg_name = manifest[0]["Config"].as_str().expect("manifest Config");
    let cfg: serde_json::Value =
        serde_json::from_slice(&archive_member(archive, cfg_name)).expect("config JSON");
    let mut merged: BTreeMap<String, String> = BTreeMap::new();
    for layer in manifest[0]["Layers"].as_array().expect("manifest Layers") {
        let layer = layer.as_str().expect("layer name");
        let tmp = std::env::temp_dir().join(format!("unisondb-layer-{}.tar", std::process::id()));
        std::fs::write(&tmp, archive_member(archive, layer)).expect("write layer");
        let o = Command::new("tar")
            .args(["-tv", "--numeric-owner", "-f"])
            .arg(&tmp)
            .output()
            .expect("tar");
        let _ = std::fs::remove_file(&tmp);
        assert!(o.status.success(), "tar -t {layer}: {}", stderr(&o));
        for l in stdout(&o).lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            // drwxr-xr-x 65532/65532 0 1970-01-01 00:00 var/lib/unisondb
            // (symlinks end in `-> target`, directories in `/`)
            if f.len() < 6 {
                continue;
            }
            let path = f[5]
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            merged.insert(path.clone(), format!("{} {} {} {path}", f[0], f[1], f[2]));
        }
    }
    (cfg["config"].clone(), merged.into_values().collect())
}

/// One member of a tar archive, read whole.
pub fn archive_member(archive: &Path, member: &str) -> Vec<u8> {
    let o = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()
        .expect("tar");
    assert!(o.status.success(), "tar -xOf {member}: {}", stderr(&o));
    o.stdout
}
