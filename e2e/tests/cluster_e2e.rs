//! Full stack on a REAL single-node Kubernetes v1.20.2 cluster (e2e/cluster/up.sh): our image built
//! from the Dockerfile by buildah (e2e/image/build.sh) and imported into containerd, the operator installed in-cluster
//! by the real Helm SDK (the previous chart release first, upgraded to this chart with the CRs in
//! place: no node pod restarts; then `helm test`), then docs/KUBERNETES.md's commands: hub and
//! relayers (two hops), data through
//! the hub read back everywhere, ZeroMQ and SSE change streams, `kubectl scale`, pod deletions, a WAL
//! config change rolling the hub, Prometheus scraping everything, and uninstall.
//!
//! Needs root and `bash e2e/cluster/install-deps.sh` (./test.sh runs it). Timings are printed as
//! `[timing] ...` lines.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use unisondb_e2e::cluster::{
    archive_member, build_image, image_contents, wait_until, Cluster, CLUSTER_INSTALLER,
};
use unisondb_e2e::dockerfile;
use unisondb_e2e::*;
use unisondb_testkit::free_port;

#[path = "cluster_e2e/hub_group.rs"]
mod hub_group;

const LOCAL_IMAGE: &str = "localhost/unisondb:e2e";
const NS: &str = "default";
const OP_NS: &str = "unisondb-system";
const HOP2: &str = "edge-hop2";

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// The image the Dockerfile built has the Dockerfile's runtime facts, and stripped binaries.

fn image_matches_the_dockerfile(tar: &Path, revision: &str) {
    let df = dockerfile::parse(
        &std::fs::read_to_string(repo_root().join("Dockerfile")).expect("read Dockerfile"),
    );
    let facts = df.runtime_facts();
    let (cfg, listing) = image_contents(tar);

    assert_eq!(cfg["User"], facts.user.as_str(), "USER");
    assert_eq!(cfg["WorkingDir"], facts.workdir.as_str(), "WORKDIR");
    let env: BTreeMap<String, String> = cfg["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(|e| {
            e.as_str()?
                .split_once('=')
                .map(|(k, v)| (k.into(), v.into()))
        })
        .collect();
    for (k, v) in &facts.env {
        assert_eq!(env.get(k), Some(v), "ENV {k} differs (image Env {env:?})");
    }
    for k in env.keys() {
        assert!(
            k == "PATH" || facts.env.contains_key(k),
            "image sets ENV {k}, the Dockerfile does not"
        );
    }
    assert!(
        env["PATH"].split(':').any(|p| p == "/usr/local/bin"),
        "PATH must hold /usr/local/bin (both binaries live there)"
    );
    let mut ports: Vec<u16> = cfg["ExposedPorts"]
        .as_object()
        .expect("ExposedPorts")
        .keys()
        .map(|p| p.trim_end_matches("/tcp").parse().expect("port"))
        .collect();
    ports.sort();
    let mut expose = facts.expose.clone();
    expose.sort();
    assert_eq!(ports, expose, "EXPOSE");
    let vols: Vec<&String> = cfg["Volumes"]
        .as_object()
        .expect("Volumes")
        .keys()
        .collect();
    assert_eq!(vols, facts.volumes.iter().collect::<Vec<_>>(), "VOLUME");
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("string").to_string())
            .collect()
    };
    assert_eq!(strs(&cfg["Entrypoint"]), facts.entrypoint, "ENTRYPOINT");
    assert_eq!(strs(&cfg["Cmd"]), facts.cmd, "CMD");
    // LABELs, with the runtime stage's ARG defaults substituted
    let args: BTreeMap<String, String> = df
        .runtime()
        .instructions
        .iter()
        .filter(|i| i.op == "ARG")
        .filter_map(|i| {
            i.args
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    // e2e/image/build.sh passes the commit as REVISION, as a release build would.
    let mut args = args;
    args.insert("REVISION".into(), revision.to_string());
    for (k, v) in &facts.labels {
        let mut want = v.clone();
        for (a, d) in &args {
            want = want.replace(&format!("${{{a}}}"), d);
        }
        assert_eq!(cfg["Labels"][k], want.as_str(), "LABEL {k}");
    }
    // the builder stamps its own version (`io.buildah.version`); every other label is ours
    let ours = cfg["Labels"]
        .as_object()
        .map(|m| m.keys().filter(|k| !k.starts_with("io.buildah.")).count());
    assert_eq!(
        ours,
        Some(facts.labels.len()),
        "the image has labels the Dockerfile does not: {}",
        cfg["Labels"]
    );
    // the files the runtime stage COPYs, the entrypoint's programs, the data dir owned by the user
    // Debian's merged /usr: /bin, /sbin and /lib are links into /usr
    let has = |path: &str, prefix: &str| {
        let p = path.trim_start_matches('/');
        let merged = ["bin/", "sbin/", "lib/"]
            .iter()
            .any(|d| p.starts_with(d))
            .then(|| format!("usr/{p}"));
        listing.iter().any(|l| {
            l.starts_with(prefix)
                && (l.ends_with(&format!(" {p}"))
                    || merged
                        .as_ref()
                        .is_some_and(|m| l.ends_with(&format!(" {m}"))))
        })
    };
    for (_, dst) in &facts.copies {
        assert!(
            has(dst, "-rwxr-xr-x 0/0"),
            "{dst} missing or not 0755 root in the image: {listing:?}"
        );
    }
    assert!(
        has(&facts.entrypoint[0], "-rwx"),
        "{} (ENTRYPOINT) missing",
        facts.entrypoint[0]
    );
    let uid_gid = facts.user.replace(':', "/");
    for v in &facts.volumes {
        assert!(
            has(v, &format!("drwxr-xr-x {uid_gid}")),
            "{v} must be a directory owned by {uid_gid}: {listing:?}"
        );
    }
    assert!(has("/etc/unisondb", "d"), "/etc/unisondb missing");
    assert!(
        has("/bin/sh", "l"),
        "/bin/sh (docker-entrypoint.sh's shell) missing"
    );
    let passwd = listing.iter().any(|l| l.ends_with(" etc/passwd"));
    assert!(passwd, "/etc/passwd missing");
    binaries_are_stripped(tar);
}

/// The release binaries in the image carry no symbol table and no debug sections (the host's
/// release profile keeps line tables for profiling; the Dockerfile strips them).
fn binaries_are_stripped(tar: &Path) {
    let manifest: Value =
        serde_json::from_slice(&archive_member(tar, "manifest.json")).expect("manifest.json");
    let dir = tar.with_extension("bins");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for layer in manifest[0]["Layers"].as_array().expect("Layers") {
        let layer_tar = dir.join("layer.tar");
        std::fs::write(
            &layer_tar,
            archive_member(tar, layer.as_str().expect("layer")),
        )
        .unwrap();
        // members missing from a layer are not an error here
        let _ = Command::new("tar")
            .arg("-xf")
            .arg(&layer_tar)
            .arg("-C")
            .arg(&dir)
            .args(["usr/local/bin/unisondb", "usr/local/bin/unisondb-operator"])
            .output();
    }
    for b in ["unisondb", "unisondb-operator"] {
        let path = dir.join("usr/local/bin").join(b);
        let size = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{b} not in the image: {e}"))
            .len();
        let o = Command::new("readelf")
            .arg("-S")
            .arg(&path)
            .output()
            .expect("readelf (binutils)");
        let sections = stdout(&o);
        assert!(o.status.success(), "readelf {b}: {}", stderr(&o));
        for s in [".symtab", ".debug_line", ".debug_info"] {
            assert!(
                !sections.contains(s),
                "{b} in the image has {s}: not stripped"
            );
        }
        eprintln!("[cluster] image binary {b}: {size} bytes, stripped");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// HTTP through curl (the e2e crate has no HTTP client; curl is what a user types anyway)

fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "15", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl missing ({e}): run `bash {CLUSTER_INSTALLER}`"));
    let out = o.stdout;
    let split = out.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&out[split..])
        .trim()
        .parse()
        .unwrap_or(0);
    (code, out[..split].to_vec())
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn put_kv(ip: &str, key: &str, value: &[u8]) -> Result<u64, String> {
    let body = format!("{{\"value\":\"{}\"}}", b64(value));
    let (code, out) = curl(&[
        "-X",
        "PUT",
        &format!("http://{ip}:4000/api/v1/{NS}/kv/{key}"),
        "-H",
        "content-type: application/json",
        "-d",
        &body,
    ]);
    if code != 200 {
        return Err(format!(
            "PUT kv/{key} on {ip}: {code} {}",
            String::from_utf8_lossy(&out)
        ));
    }
    let v: Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
    v["lsn"].as_u64().ok_or_else(|| format!("no lsn in {v}"))
}

fn get_json(url: &str) -> Result<Value, String> {
    let (code, out) = curl(&[url]);
    if code != 200 {
        return Err(format!(
            "GET {url}: {code} {}",
            String::from_utf8_lossy(&out)
        ));
    }
    serde_json::from_slice(&out).map_err(|e| format!("GET {url}: {e}"))
}

/// KV, row and LOB contents of a pod, for comparison across pods.
fn snapshot(ip: &str, lob: &str) -> Result<(Value, Value, Vec<u8>), String> {
    let kv = get_json(&format!("http://{ip}:4000/api/v1/{NS}/kv?limit=1000"))?;
    let rows = get_json(&format!("http://{ip}:4000/api/v1/{NS}/row?limit=1000"))?;
    let (code, data) = curl(&[&format!("http://{ip}:4000/api/v1/{NS}/lob/{lob}")]);
    if code != 200 {
        return Err(format!("GET lob/{lob} on {ip}: {code}"));
    }
    Ok((kv["items"].clone(), rows["rows"].clone(), data))
}

/// Sum of a metric's series on a pod's /metrics.
fn metric_sum(ip: &str, name: &str) -> Result<f64, String> {
    let (code, out) = curl(&[&format!("http://{ip}:4000/metrics")]);
    if code != 200 {
        return Err(format!("GET {ip}/metrics: {code}"));
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let vals: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    if vals.is_empty() {
        return Err(format!("no {name} on {ip}"));
    }
    Ok(vals.iter().sum())
}

fn kv_keys(ip: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("http://{ip}:4000/api/v1/{NS}/kv?limit=1000");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let v = get_json(&url)?;
        for it in v["items"].as_array().cloned().unwrap_or_default() {
            keys.push(it["key"].as_str().unwrap_or("").to_string());
        }
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return Ok(keys),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cluster helpers

fn pod_ip(c: &Cluster, pod: &str) -> String {
    c.kubectl(&[
        "get",
        "pod",
        pod,
        "-n",
        NS,
        "-o",
        "jsonpath={.status.podIP}",
    ])
    .trim()
    .to_string()
}

fn pods_of(c: &Cluster, instance: &str) -> Vec<String> {
    let out = c.kubectl(&[
        "get",
        "pods",
        "-n",
        NS,
        "-l",
        &format!("app.kubernetes.io/instance={instance}"),
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let mut v: Vec<String> = out.split_whitespace().map(String::from).collect();
    v.sort();
    v
}

fn pod_ready(c: &Cluster, pod: &str) -> Result<(String, String), String> {
    let v: Value =
        serde_json::from_str(&c.try_kubectl(&["get", "pod", pod, "-n", NS, "-o", "json"])?)
            .map_err(|e| e.to_string())?;
    let ready = v["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .unwrap_or(false);
    if !ready || v["metadata"]["deletionTimestamp"].is_string() {
        return Err(format!("{pod} not Ready: phase {}", v["status"]["phase"]));
    }
    Ok((
        v["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        v["status"]["podIP"].as_str().unwrap_or("").to_string(),
    ))
}

fn status(c: &Cluster, kind: &str, name: &str) -> Value {
    c.json(&["get", kind, name, "-n", NS])["status"].clone()
}

fn kwait(c: &Cluster, what: &str, timeout: &str) {
    c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        what,
        "-n",
        NS,
        &format!("--timeout={timeout}"),
    ]);
}

/// Every pod of a relayer set has the hub's data (when replication exists).
fn assert_replicated(c: &Cluster, hub_ip: &str, lob: &str, instances: &[&str], timeout: Duration) {
    let want = snapshot(hub_ip, lob).expect("hub snapshot");
    for inst in instances {
        for pod in pods_of(c, inst) {
            let ip = pod_ip(c, &pod);
            wait_until(
                &format!("{pod} ({ip}) to hold the hub's data"),
                timeout,
                || {
                    let got = snapshot(&ip, lob)?;
                    if got == want {
                        Ok(())
                    } else {
                        Err(format!(
                            "kv {} vs hub {}, rows {} vs {}, lob {} vs {} bytes",
                            got.0.as_array().map_or(0, |a| a.len()),
                            want.0.as_array().map_or(0, |a| a.len()),
                            got.1.as_array().map_or(0, |a| a.len()),
                            want.1.as_array().map_or(0, |a| a.len()),
                            got.2.len(),
                            want.2.len()
                        ))
                    }
                },
            );
        }
    }
}

/// A background writer: PUTs `w-<tag>-<n>` to the hub (pod IP re-read on failure), records acks.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(kubeconfig: PathBuf, tag: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a, tag) = (stop.clone(), acked.clone(), tag.to_string());
        let handle = std::thread::spawn(move || {
            let ip_of_hub = || {
                Command::new("kubectl")
                    .arg(format!("--kubeconfig={}", kubeconfig.display()))
                    .args([
                        "get",
                        "pod",
                        "hub-0",
                        "-n",
                        NS,
                        "-o",
                        "jsonpath={.status.podIP}",
                    ])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .unwrap_or_default()
            };
            let mut ip = ip_of_hub();
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                let key = format!("w-{tag}-{n:06}");
                match put_kv(&ip, &key, format!("value {n}").as_bytes()) {
                    Ok(_) => {
                        a.lock().unwrap().push(key);
                        n += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(300));
                        ip = ip_of_hub();
                    }
                }
            }
        });
        Writer {
            stop,
            acked,
            handle: Some(handle),
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread");
        }
        self.acked.lock().unwrap().clone()
    }
}

/// Seconds since the Unix epoch of an RFC 3339 timestamp (GNU `date`, as a user would check it).
fn epoch_secs(ts: &str) -> Result<i64, String> {
    let o = Command::new("date")
        .args(["-u", "-d", ts, "+%s"])
        .output()
        .map_err(|e| format!("date: {e}"))?;
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("date -d {ts}: {e}"))
}

/// A background reader: GETs one key through a Service's cluster IP every 50 ms, counting
/// answers that are not 200 (what a client of the edge replicas would see).
struct Reader {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<(u64, Vec<String>)>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    fn start(url: String) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new((0u64, Vec::new())));
        let (s, t) = (stop.clone(), tally.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let (code, body) = curl(&[&url]);
                let mut t = t.lock().unwrap();
                t.0 += 1;
                if code != 200 {
                    t.1.push(format!("{code} {}", String::from_utf8_lossy(&body)));
                }
                drop(t);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Reader {
            stop,
            tally,
            handle: Some(handle),
        }
    }

    /// Stops the reader; returns (reads, failures).
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("reader thread");
        }
        self.tally.lock().unwrap().clone()
    }
}

fn assert_has_keys(ip: &str, who: &str, keys: &[String], timeout: Duration) {
    wait_until(
        &format!(
            "{who} ({ip}) to hold all {} acknowledged writes",
            keys.len()
        ),
        timeout,
        || {
            let have: std::collections::BTreeSet<String> = kv_keys(ip)?.into_iter().collect();
            let missing: Vec<&String> = keys.iter().filter(|k| !have.contains(*k)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} missing, e.g. {:?}",
                    missing.len(),
                    &missing[..missing.len().min(5)]
                ))
            }
        },
    );
}

/// A child whose stdout lines are collected in the background.
fn spawn_collect(c: &mut Cluster, mut cmd: Command) -> Arc<Mutex<Vec<String>>> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = child.stdout.take().expect("stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l2.lock().unwrap().push(line);
        }
    });
    c.children.push(child);
    lines
}

/// `kubectl port-forward svc/NAME LOCAL:REMOTE` (docs steps 4-6; a free local port instead of the
/// docs' fixed one, which another process on the machine may hold). Returns the local port.
fn port_forward(c: &mut Cluster, svc: &str, remote: u16) -> u16 {
    let local = free_port();
    let cmd = c.kubectl_cmd(&[
        "port-forward",
        &format!("svc/{svc}"),
        &format!("{local}:{remote}"),
    ]);
    let lines = spawn_collect(c, cmd);
    wait_until(
        &format!("kubectl port-forward svc/{svc} {local}:{remote}"),
        Duration::from_secs(30),
        || {
            if lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with("Forwarding from"))
            {
                Ok(())
            } else {
                Err(format!("output: {:?}", lines.lock().unwrap()))
            }
        },
    );
    local
}

fn prometheus_query(port: u16, q: &str) -> Result<Vec<Value>, String> {
    let (code, out) = curl(&[
        "-G",
        &format!("http://127.0.0.1:{port}/api/v1/query"),
        "--data-urlencode",
        &format!("query={q}"),
    ]);
    if code != 200 {
        return Err(format!(
            "query {q}: {code} {}",
            String::from_utf8_lossy(&out)
        ));
    }
    let v: Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// The scenario: one function per step, sharing a `Ctx`.

/// Lines a background client (SSE, ZeroMQ) printed so far.
type Lines = Arc<Mutex<Vec<String>>>;

/// What the steps share: the cluster, the clock and timings, and what one step learns for the next.
struct Ctx {
    c: Cluster,
    t_all: Instant,
    timings: Vec<(String, Duration)>,
    /// The release binaries the image is assembled from.
    /// The venv's Python (pyzmq) for the ZeroMQ subscribers.
    py: PathBuf,
    /// `--kubeconfig` for helm.
    kc: String,
    /// The release image tag the docs' example manifests name.
    release_image: String,
    op_pod: String,
    /// The hub pod's IP; re-read by the steps that recreate the hub pod.
    hub_ip: String,
    first_relayer_ip: String,
    lob: Vec<u8>,
    sse_hub: Lines,
    sse_relayer: Lines,
    zmq: Vec<Lines>,
    hub_fwd: u16,
    relayer_fwd: u16,
}

impl Ctx {
    fn record(&mut self, what: &str, d: Duration) {
        eprintln!("[timing] {what}: {}", secs(d));
        self.timings.push((what.to_string(), d));
    }
}

#[test]
fn full_stack_on_a_real_single_node_cluster() {
    let mut cx = cluster_up();
    image_imported(&mut cx);
    // By hand, while working on hub groups: `CLUSTER_E2E_ONLY=hub-group` installs the current
    // chart and runs only that step (CI runs everything).
    if std::env::var("CLUSTER_E2E_ONLY").as_deref() == Ok("hub-group") {
        current_chart_installed(&mut cx);
        hub_group::hub_group_fails_over_under_writes(&mut cx);
        finish(cx);
        return;
    }
    operator_installed_by_helm(&mut cx);
    hub_and_two_hop_relayers_ready(&mut cx);
    upgraded_from_the_previous_chart(&mut cx);
    helm_test_passes(&mut cx);
    change_subscribers_started(&mut cx);
    data_written_through_the_hub(&mut cx);
    data_and_changes_reach_every_relayer(&mut cx);
    relayers_scaled_to_five(&mut cx);
    relayer_pod_deleted_during_writes(&mut cx);
    hub_pod_deleted_during_writes(&mut cx);
    wal_change_rolls_the_hub(&mut cx);
    hub_volume_grows_in_place(&mut cx);
    prometheus_scrapes_everything(&mut cx);
    certificate_rotated_during_replication(&mut cx);
    backups_scheduled_and_restored(&mut cx);
    hub_group::hub_group_fails_over_under_writes(&mut cx);
    uninstalled(&mut cx);
    finish(cx);
}

/// Preflight (release binaries, venv, prometheus), then the cluster up to a Ready node.
fn cluster_up() -> Ctx {
    let t_all = Instant::now();
    let py = unisondb_testkit::venv_python()
        .unwrap_or_else(|e| panic!("{e} (the cluster's installer: {CLUSTER_INSTALLER})"));
    unisondb_e2e::cluster::require_tool("prometheus");

    let t_up = Instant::now();
    let c = Cluster::up();
    let kc = c.kubeconfig.display().to_string();
    let mut cx = Ctx {
        c,
        t_all,
        timings: Vec::new(),
        py,
        kc,
        release_image: format!("ghcr.io/unisondb/unisondb:{}", workspace_version()),
        op_pod: String::new(),
        hub_ip: String::new(),
        first_relayer_ip: String::new(),
        lob: Vec::new(),
        sse_hub: Lines::default(),
        sse_relayer: Lines::default(),
        zmq: Vec::new(),
        hub_fwd: 0,
        relayer_fwd: 0,
    };
    cx.record("cluster up (node Ready)", t_up.elapsed());
    cx
}

/// The image: the Dockerfile built with buildah (e2e/image/build.sh), checked against the
/// Dockerfile's runtime facts, imported into containerd. Also tagged as the release image the docs'
/// example manifests name, so they run as written (IfNotPresent finds it).
fn image_imported(cx: &mut Ctx) {
    let t = Instant::now();
    let tar = cx.c.work.join("unisondb-image.tar");
    let summary = build_image(&tar, LOCAL_IMAGE);
    eprintln!("[cluster] {summary}");
    cx.record("image built from the Dockerfile (buildah)", t.elapsed());
    let revision = summary
        .split_whitespace()
        .skip_while(|w| *w != "revision")
        .nth(1)
        .unwrap_or_else(|| panic!("no revision in build.sh's summary: {summary}"));
    image_matches_the_dockerfile(&tar, revision);
    let o = run(cx.c.ctr().args(["image", "import"]).arg(&tar));
    assert!(o.status.success(), "ctr image import: {}", stderr(&o));
    let o = run(cx
        .c
        .ctr()
        .args(["image", "tag", "--force", LOCAL_IMAGE, &cx.release_image]));
    assert!(o.status.success(), "ctr image tag: {}", stderr(&o));
}

/// The `--set` values of every install and upgrade here: no registry, the local image, pullPolicy
/// Never; the `helm test` node check pointed at the hub.
const CHART_SETS: &[&str] = &[
    "--set",
    "image.repository=localhost/unisondb",
    "--set",
    "image.tag=e2e",
    "--set",
    "image.pullPolicy=Never",
];

/// (1) The operator, installed by Helm (docs step 1), in-cluster under the chart's SA and RBAC —
/// from the PREVIOUS chart release (e2e/helm/fixtures), upgraded to this one once CRs run
/// ([`upgraded_from_the_previous_chart`]). 1.20: `--old-apiserver` (no CEL in the CRD schema).
fn operator_installed_by_helm(cx: &mut Ctx) {
    let t = Instant::now();
    let previous = previous_chart();
    eprintln!(
        "[cluster] installing the previous chart {}",
        previous.display()
    );
    run_ok(&mut helm(&[
        "install",
        "unisondb-operator",
        previous.to_str().unwrap(),
        "-n",
        OP_NS,
        "--create-namespace",
        "--kubeconfig",
        &cx.kc,
        "--old-apiserver",
        CHART_SETS[0],
        CHART_SETS[1],
        CHART_SETS[2],
        CHART_SETS[3],
        CHART_SETS[4],
        CHART_SETS[5],
    ]));
    cx.c.kubectl(&[
        "-n",
        OP_NS,
        "rollout",
        "status",
        "deploy/unisondb-operator",
        "--timeout=300s",
    ]);
    cx.record("helm install → operator rolled out", t.elapsed());
    cx.op_pod =
        cx.c.kubectl(&[
            "get",
            "pods",
            "-n",
            OP_NS,
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .trim()
        .to_string();
    let op_spec = cx.c.json(&["get", "pod", &cx.op_pod, "-n", OP_NS]);
    assert_eq!(op_spec["spec"]["serviceAccountName"], "unisondb-operator");
    assert_eq!(op_spec["spec"]["containers"][0]["image"], LOCAL_IMAGE);
}

/// `CLUSTER_E2E_ONLY` runs: this chart installed directly (no previous release to upgrade from).
fn current_chart_installed(cx: &mut Ctx) {
    let t = Instant::now();
    let mut args = vec![
        "install",
        "unisondb-operator",
        "charts/unisondb-operator",
        "-n",
        OP_NS,
        "--create-namespace",
        "--kubeconfig",
        &cx.kc,
        "--old-apiserver",
    ];
    args.extend_from_slice(CHART_SETS);
    run_ok(&mut helm(&args));
    cx.c.kubectl(&[
        "-n",
        OP_NS,
        "rollout",
        "status",
        "deploy/unisondb-operator",
        "--timeout=300s",
    ]);
    cx.record(
        "helm install (current chart) → operator rolled out",
        t.elapsed(),
    );
}

/// (2) Hub and relayers (docs step 2, as written), plus a second hop on the relayers.
fn hub_and_two_hop_relayers_ready(cx: &mut Ctx) {
    let t0 = Instant::now();
    cx.c.kubectl(&["apply", "-f", "deploy/examples/primary-relayers.yaml"]);
    let hop2 = format!(
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonRelayer\nmetadata:\n  name: {HOP2}\nspec:\n  image: {}\n  upstream:\n    relayerRef:\n      name: edge-relayers\n  replicas: 2\n  storage:\n    size: 1Gi\n",
        cx.release_image
    );
    cx.c.kubectl_stdin(&["apply", "-f", "-"], &hop2);
    kwait(&cx.c, "unisonhub/hub", "5m");
    let t_hub = t0.elapsed();
    cx.record(
        "apply → first Ready hub (kubectl wait unisonhub/hub)",
        t_hub,
    );
    kwait(&cx.c, "unisonrelayer/edge-relayers", "5m");
    kwait(&cx.c, &format!("unisonrelayer/{HOP2}"), "5m");
    let t_topo = t0.elapsed();
    cx.record(
        "apply → fully Ready 2-hop topology (hub + 3 + 2 pods)",
        t_topo,
    );
    let c = &cx.c;
    eprintln!("{}", c.kubectl(&["get", "unisonhubs,unisonrelayers"]));
    // The example sets no image: the operator's default (the chart's own image) runs the nodes;
    // the second hop pins one.
    let hub_pod = c.json(&["get", "pod", "hub-0", "-n", NS]);
    assert_eq!(hub_pod["spec"]["containers"][0]["image"], LOCAL_IMAGE);
    let hop2_pod = c.json(&["get", "pod", &format!("{HOP2}-0"), "-n", NS]);
    assert_eq!(
        hop2_pod["spec"]["containers"][0]["image"].as_str(),
        Some(cx.release_image.as_str())
    );
    let hub_st = status(c, "unisonhub", "hub");
    assert_eq!(hub_st["depth"], 0, "hub status {hub_st}");
    let r1 = status(c, "unisonrelayer", "edge-relayers");
    let r2 = status(c, "unisonrelayer", HOP2);
    assert_eq!(r1["depth"], 1, "edge-relayers status {r1}");
    assert_eq!(r2["depth"], 2, "{HOP2} status {r2}");
    assert_eq!(
        r1["upstream"], "http://hub.default.svc.cluster.local:4001",
        "{r1}"
    );
    assert_eq!(
        r2["upstream"], "http://edge-relayers.default.svc.cluster.local:4001",
        "{r2}"
    );
    assert_eq!(r1["readyReplicas"], 3, "{r1}");
    assert_eq!(r2["readyReplicas"], 2, "{r2}");
    // the PVCs were bound by the hostPath provisioner behind the default StorageClass
    let pvcs = c.json(&["get", "pvc", "-n", NS]);
    let pvcs = pvcs["items"].as_array().expect("pvc items");
    assert_eq!(pvcs.len(), 6, "one PVC per pod");
    assert!(
        pvcs.iter().all(|p| p["status"]["phase"] == "Bound"),
        "PVCs not Bound"
    );
}

/// Every node pod: name -> (uid, restart count), and every StatefulSet's generation.
fn node_fingerprint(c: &Cluster) -> (BTreeMap<String, (String, i64)>, BTreeMap<String, i64>) {
    let pods = c.json(&["get", "pods", "-n", NS]);
    let pods = pods["items"]
        .as_array()
        .expect("pod items")
        .iter()
        .map(|p| {
            let restarts = p["status"]["containerStatuses"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0);
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                (
                    p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                    restarts,
                ),
            )
        })
        .collect();
    let sts = c.json(&["get", "statefulsets", "-n", NS]);
    let sts = sts["items"]
        .as_array()
        .expect("sts items")
        .iter()
        .map(|s| {
            (
                s["metadata"]["name"].as_str().unwrap_or("").to_string(),
                s["metadata"]["generation"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    (pods, sts)
}

/// The operator pod that is not being deleted, once it is Ready: (name, IP).
fn ready_operator_pod(c: &Cluster) -> Result<(String, String), String> {
    let v: Value =
        serde_json::from_str(&c.try_kubectl(&["get", "pods", "-n", OP_NS, "-o", "json"])?)
            .map_err(|e| e.to_string())?;
    let live: Vec<&Value> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["labels"]["app.kubernetes.io/component"] == "operator")
        .collect();
    match live.as_slice() {
        [p] if !p["metadata"]["deletionTimestamp"].is_string()
            && p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            }) =>
        {
            Ok((
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["status"]["podIP"].as_str().unwrap_or("").to_string(),
            ))
        }
        other => Err(format!("{} operator pod(s), not one Ready", other.len())),
    }
}

/// (2b) Upgrade from the previous chart release to this one with the CRs in place: the operator is
/// replaced (the chart version is on its pod template), the CRDs are upgraded, every CR stays
/// Ready, and no node pod restarts (same UIDs and restart counts, same StatefulSet generations)
/// because the node image did not change.
fn upgraded_from_the_previous_chart(cx: &mut Ctx) {
    let t = Instant::now();
    let (pods_before, sts_before) = node_fingerprint(&cx.c);
    assert_eq!(pods_before.len(), 6, "{pods_before:?}");
    let mut args = vec![
        "upgrade",
        "unisondb-operator",
        "charts/unisondb-operator",
        "-n",
        OP_NS,
        "--kubeconfig",
        &cx.kc,
        "--old-apiserver",
    ];
    args.extend_from_slice(CHART_SETS);
    let node_check = format!("tests.nodeService=hub.{NS}");
    args.extend(["--set", node_check.as_str()]);
    let out = run_ok(&mut helm(&args));
    assert!(out.contains("revision=2"), "{out}");
    let old_op = cx.op_pod.clone();
    let (op_pod, op_ip) = wait_until(
        "the upgraded operator pod to replace the previous one",
        Duration::from_secs(180),
        || match ready_operator_pod(&cx.c)? {
            (name, _) if name == old_op => Err(format!("{name} still the operator")),
            found => Ok(found),
        },
    );
    let chart = cx.c.json(&["get", "pod", &op_pod, "-n", OP_NS]);
    assert_eq!(
        chart["metadata"]["annotations"]["unisondb.io/chart-version"].as_str(),
        Some(chart_version().as_str())
    );
    // the new CRD schema is served (a field the previous chart's CRDs lacked)
    let crd =
        cx.c.kubectl(&["get", "crd", "unisonhubs.unisondb.io", "-o", "json"]);
    assert!(crd.contains("certManager"), "CRDs not upgraded");
    // the new operator has reconciled every CR (3) before the pods are compared
    wait_until(
        "the upgraded operator to reconcile every CR",
        Duration::from_secs(90),
        || {
            let (code, body) = curl(&[&format!("http://{op_ip}:8080/metrics")]);
            let text = String::from_utf8_lossy(&body);
            let runs: f64 = text
                .lines()
                .filter(|l| l.starts_with("unisondb_operator_reconcile_runs_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if code == 200 && runs >= 3.0 {
                Ok(())
            } else {
                Err(format!("HTTP {code}, {runs} reconciles"))
            }
        },
    );
    for what in [
        "unisonhub/hub".to_string(),
        "unisonrelayer/edge-relayers".to_string(),
        format!("unisonrelayer/{HOP2}"),
    ] {
        kwait(&cx.c, &what, "2m");
    }
    let (pods_after, sts_after) = node_fingerprint(&cx.c);
    assert_eq!(
        pods_after, pods_before,
        "node pods were replaced or restarted by a chart upgrade that kept the node image"
    );
    assert_eq!(sts_after, sts_before, "StatefulSets changed on the upgrade");
    cx.op_pod = op_pod;
    cx.record(
        "helm upgrade previous → current chart (CRs Ready, no node restart)",
        t.elapsed(),
    );
}

/// (2c) `helm test`: the chart's test pods (node image, `unisondb probe`) reach the operator and
/// the hub's `/readyz` through their Services.
fn helm_test_passes(cx: &mut Ctx) {
    let t = Instant::now();
    let out = run_ok(&mut helm(&[
        "test",
        "unisondb-operator",
        "-n",
        OP_NS,
        "--kubeconfig",
        &cx.kc,
        "--timeout",
        "180",
    ]));
    eprintln!("[cluster] helm test:\n{out}");
    assert!(out.contains("test ok"), "{out}");
    // the SDK returns the test containers' logs (when it collects them): each probe saw a 200
    if out.contains("probe:") {
        assert!(!out.contains("failed"), "{out}");
        assert!(out.contains("-> 200 (ok)"), "{out}");
    }
    // passing test pods are removed (hook-succeeded), so `helm uninstall` later leaves nothing
    let c = &cx.c;
    wait_until(
        "passing helm test pods removed",
        Duration::from_secs(60),
        || {
            let left = c.try_kubectl(&[
                "get",
                "pods",
                "-n",
                OP_NS,
                "-l",
                "app.kubernetes.io/component=test",
                "-o",
                "name",
            ])?;
            if left.trim().is_empty() {
                Ok(())
            } else {
                Err(left)
            }
        },
    );
    cx.record("helm test (operator and hub answer)", t.elapsed());
}

/// (3a) SSE (hub and second-hop relayer) and ZeroMQ subscribers, started before any write.
fn change_subscribers_started(cx: &mut Ctx) {
    cx.hub_ip = pod_ip(&cx.c, "hub-0");
    cx.first_relayer_ip = pod_ip(&cx.c, "edge-relayers-0");
    let mut sse_cmd = Command::new("curl");
    sse_cmd.args([
        "-sN",
        &format!("http://{}:4000/api/v1/{NS}/watch", cx.hub_ip),
    ]);
    cx.sse_hub = spawn_collect(&mut cx.c, sse_cmd);
    let mut cmd = Command::new("curl");
    let hop2_ip = pod_ip(&cx.c, &format!("{HOP2}-0"));
    cmd.args(["-sN", &format!("http://{hop2_ip}:4000/api/v1/{NS}/watch")]);
    cx.sse_relayer = spawn_collect(&mut cx.c, cmd);
    // ZeroMQ: docs step 5 (port-forward svc/edge-relayers 4002) and a relayer pod's IP directly
    let zmq_fwd = port_forward(&mut cx.c, "edge-relayers", 4002);
    for addr in [
        format!("tcp://127.0.0.1:{zmq_fwd}"),
        format!("tcp://{}:4002", cx.first_relayer_ip),
    ] {
        let mut cmd = Command::new(&cx.py);
        cmd.arg(repo_root().join("e2e/loopback/zmq_sub.py"))
            .arg(addr)
            .arg("0")
            .arg(format!("{NS}."));
        let lines = spawn_collect(&mut cx.c, cmd);
        cx.zmq.push(lines);
    }
    std::thread::sleep(Duration::from_secs(2)); // SSE and ZeroMQ subscriptions established
}

/// (3b) Data through the hub: docs step 4 as written (local ports picked free), 20 kv, a row, a LOB.
fn data_written_through_the_hub(cx: &mut Ctx) {
    cx.hub_fwd = port_forward(&mut cx.c, "hub", 4000);
    cx.relayer_fwd = port_forward(&mut cx.c, "edge-relayers", 4000);
    let (hub_ip, hub_fwd, relayer_fwd) = (cx.hub_ip.clone(), cx.hub_fwd, cx.relayer_fwd);
    let (code, out) = curl(&[
        "-X",
        "PUT",
        &format!("localhost:{hub_fwd}/api/v1/default/kv/greeting"),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"value":"aGVsbG8="}"#,
    ]);
    assert_eq!(code, 200, "docs PUT: {}", String::from_utf8_lossy(&out));
    for i in 0..20 {
        put_kv(&hub_ip, &format!("k{i:03}"), format!("v{i}").as_bytes()).expect("PUT kv");
    }
    let (code, out) = curl(&[
        "-X",
        "PUT",
        &format!("http://{hub_ip}:4000/api/v1/{NS}/row/user:1"),
        "-H",
        "content-type: application/json",
        "-d",
        &format!(
            "{{\"columns\":{{\"name\":\"{}\",\"city\":\"{}\"}}}}",
            b64(b"Ada"),
            b64(b"London")
        ),
    ]);
    assert_eq!(code, 200, "PUT row: {}", String::from_utf8_lossy(&out));
    let lob: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let lob_file = cx.c.work.join("lob.bin");
    std::fs::write(&lob_file, &lob).expect("write LOB file");
    let (code, out) = curl(&[
        "-X",
        "PUT",
        &format!("http://{hub_ip}:4000/api/v1/{NS}/lob/blob-1"),
        "--data-binary",
        &format!("@{}", lob_file.display()),
    ]);
    assert_eq!(code, 200, "PUT lob: {}", String::from_utf8_lossy(&out));
    let (code, got) = curl(&[&format!("http://{hub_ip}:4000/api/v1/{NS}/lob/blob-1")]);
    assert!(
        code == 200 && got == lob,
        "LOB read back from the hub differs"
    );
    cx.lob = lob;
    let greeting = get_json(&format!("http://{hub_ip}:4000/api/v1/default/kv/greeting")).unwrap();
    assert_eq!(greeting["value"], "aGVsbG8=");
    // docs step 6: `curl -s localhost:4000/metrics | grep unisondb_` through the port-forward
    let (code, metrics) = curl(&["-s", &format!("localhost:{hub_fwd}/metrics")]);
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    assert!(
        code == 200 && metrics.lines().any(|l| l.starts_with("unisondb_")),
        "hub /metrics: {code}"
    );
    // `curl localhost:5000/api/v1/default/kv/greeting` on the relayers' port-forward
    let (code, _) = curl(&[&format!(
        "localhost:{relayer_fwd}/api/v1/default/kv/greeting"
    )]);
    assert!(code == 200, "relayer GET greeting: {code}");
    wait_until(
        "the greeting on the relayers' port-forward",
        Duration::from_secs(60),
        || {
            let v = get_json(&format!(
                "http://localhost:{relayer_fwd}/api/v1/default/kv/greeting"
            ))?;
            if v["value"] == "aGVsbG8=" {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
    );
}

/// SSE: the same 23 changes (greeting, 20 kv, 1 row, 1 lob), in order.
fn expect_models(lines: &[String]) -> Result<(), String> {
    let events: Vec<Value> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect();
    let count = |m: &str| events.iter().filter(|e| e["model"] == m).count();
    if count("kv") >= 21 && count("row") >= 1 && count("lob") >= 1 {
        Ok(())
    } else {
        Err(format!(
            "{} events: {:?}",
            events.len(),
            events
                .iter()
                .map(|e| e["model"].clone())
                .collect::<Vec<_>>()
        ))
    }
}

/// (3c) The changes arrive over SSE (hub and second hop) and ZeroMQ; every relayer pod of both
/// hops holds the hub's data.
fn data_and_changes_reach_every_relayer(cx: &mut Ctx) {
    wait_until(
        "SSE (hub) to deliver the 23 changes",
        Duration::from_secs(30),
        || expect_models(&cx.sse_hub.lock().unwrap()),
    );
    let t = Instant::now();
    assert_replicated(
        &cx.c,
        &cx.hub_ip,
        "blob-1",
        &["edge-relayers", HOP2],
        Duration::from_secs(120),
    );
    cx.record("data on every relayer pod of both hops", t.elapsed());
    wait_until(
        "SSE (second-hop relayer) to deliver the changes",
        Duration::from_secs(60),
        || expect_models(&cx.sse_relayer.lock().unwrap()),
    );
    for z in &cx.zmq {
        wait_until(
            "ZeroMQ notifications from edge-relayers-0:4002",
            Duration::from_secs(60),
            || {
                let lines = z.lock().unwrap().clone();
                let topics: Vec<String> = lines
                    .iter()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter_map(|v| v["topic"].as_str().map(String::from))
                    .collect();
                let n = |t: &str| topics.iter().filter(|x| *x == t).count();
                if n("default.kv") >= 21 && n("default.row") >= 1 && n("default.lob") >= 1 {
                    Ok(())
                } else {
                    Err(format!("topics so far: {topics:?}"))
                }
            },
        );
    }
}

/// (4) Scale (docs step 3, as written).
fn relayers_scaled_to_five(cx: &mut Ctx) {
    let c = &cx.c;
    let t = Instant::now();
    c.kubectl(&["scale", "unisonrelayer/edge-relayers", "--replicas=5"]);
    wait_until(
        "edge-relayers to report 5 ready replicas",
        Duration::from_secs(300),
        || {
            let s = status(c, "unisonrelayer", "edge-relayers");
            if s["readyReplicas"] == 5 && s["replicas"] == 5 {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    kwait(c, "unisonrelayer/edge-relayers", "5m");
    cx.record("kubectl scale 3 → 5: all Ready", t.elapsed());
    let c = &cx.c;
    assert_eq!(pods_of(c, "edge-relayers").len(), 5);
    assert_replicated(
        c,
        &cx.hub_ip,
        "blob-1",
        &["edge-relayers"],
        Duration::from_secs(120),
    );
}

/// (5a) Delete a relayer pod during writes: recreated, resumes from its volume.
fn relayer_pod_deleted_during_writes(cx: &mut Ctx) {
    let c = &cx.c;
    let pv_before = c.kubectl(&[
        "get",
        "pvc",
        "data-edge-relayers-1",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.volumeName}",
    ]);
    let (old_uid, _) = wait_until("edge-relayers-1 Ready", Duration::from_secs(180), || {
        pod_ready(c, "edge-relayers-1")
    });
    let writer = Writer::start(c.kubeconfig.clone(), "relayer-kill");
    wait_until("writes to start", Duration::from_secs(30), || {
        if writer.count() >= 10 {
            Ok(())
        } else {
            Err(format!("{} acked", writer.count()))
        }
    });
    let t = Instant::now();
    c.kubectl(&["delete", "pod", "edge-relayers-1", "-n", NS, "--wait=false"]);
    // Graceful termination: the node drains and exits on SIGTERM at once (a node waiting out the
    // 30 s grace period was seen before). Measured from the pod itself: the container's finishedAt
    // against the deletion request (deletionTimestamp − deletionGracePeriodSeconds); how long the
    // kubelet then takes to remove the pod object is not the node's doing.
    let exit_after = wait_until(
        "the old edge-relayers-1's container to stop",
        Duration::from_secs(60),
        || {
            let Ok(text) =
                c.try_kubectl(&["get", "pod", "edge-relayers-1", "-n", NS, "-o", "json"])
            else {
                return Ok(None); // gone already
            };
            let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if v["metadata"]["uid"].as_str() != Some(old_uid.as_str()) {
                return Ok(None); // replaced already
            }
            let status = &v["status"]["containerStatuses"][0];
            let Some(finished) = status["state"]["terminated"]["finishedAt"].as_str() else {
                if status["lastState"]["terminated"].is_object() {
                    // The kubelet lost track of the stopped container (1.20 reports
                    // ContainerStatusUnknown with no times): it stopped, but cannot be timed.
                    return Ok(None);
                }
                return Err("container still running".to_string());
            };
            if finished.starts_with("0001-") {
                return Ok(None);
            }
            let deleted = v["metadata"]["deletionTimestamp"]
                .as_str()
                .ok_or("no deletionTimestamp")?;
            let grace = v["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .ok_or("no deletionGracePeriodSeconds")?;
            Ok(Some(epoch_secs(finished)? - (epoch_secs(deleted)? - grace)))
        },
    );
    if let Some(secs) = exit_after {
        eprintln!("[cluster] relayer container exited {secs}s after the pod's deletion");
        assert!(
            secs < 10,
            "the relayer exited {secs}s after SIGTERM: it does not shut down promptly"
        );
    }
    cx.record("relayer pod deleted → container stopped", t.elapsed());
    let c = &cx.c;
    let new_ip = wait_until(
        "edge-relayers-1 to be recreated and Ready",
        Duration::from_secs(180),
        || {
            let (uid, ip) = pod_ready(c, "edge-relayers-1")?;
            if uid == old_uid {
                Err("still the old pod".into())
            } else {
                Ok(ip)
            }
        },
    );
    cx.record("relayer pod deleted → recreated Ready", t.elapsed());
    let c = &cx.c;
    std::thread::sleep(Duration::from_secs(2));
    let acked = writer.finish();
    let pv_after = c.kubectl(&[
        "get",
        "pvc",
        "data-edge-relayers-1",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.volumeName}",
    ]);
    assert_eq!(
        pv_before, pv_after,
        "the recreated pod must reuse its volume"
    );
    assert_has_keys(&cx.hub_ip, "hub", &acked, Duration::from_secs(30));
    assert_has_keys(
        &new_ip,
        "recreated edge-relayers-1",
        &acked,
        Duration::from_secs(120),
    );
    // resumed from its volume: it applied only what it missed, not the whole log again
    let applied =
        metric_sum(&new_ip, "unisondb_replication_records_applied_total").expect("applied");
    let hub_lsn = metric_sum(&cx.hub_ip, "unisondb_lsn").expect("hub lsn");
    assert!(
        applied < hub_lsn,
        "recreated relayer re-applied {applied} records of the hub's {hub_lsn}: it did not resume from its volume"
    );
    eprintln!("[cluster] recreated relayer applied {applied} of the hub's {hub_lsn} records (resumed from its volume)");
}

/// (5b) Delete the hub pod during writes while a client reads from the relayers' Service: no
/// acknowledged write lost, relayers reconnect, and not one read fails (relayers stay Ready while
/// their upstream is away, so they stay in their Service).
fn hub_pod_deleted_during_writes(cx: &mut Ctx) {
    let c = &cx.c;
    let (old_hub_uid, _) = wait_until("hub-0 Ready", Duration::from_secs(180), || {
        pod_ready(c, "hub-0")
    });
    let writer = Writer::start(c.kubeconfig.clone(), "hub-kill");
    wait_until("writes to start", Duration::from_secs(30), || {
        if writer.count() >= 10 {
            Ok(())
        } else {
            Err(format!("{} acked", writer.count()))
        }
    });
    let edge_ip = c.kubectl(&[
        "get",
        "svc",
        "edge-relayers",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let first = writer.acked.lock().unwrap()[0].clone();
    let read_url = format!("http://{}:4000/api/v1/{NS}/kv/{first}", edge_ip.trim());
    wait_until(
        "the relayers' Service to serve a fresh write",
        Duration::from_secs(60),
        || match curl(&[&read_url]) {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code} {}", String::from_utf8_lossy(&body))),
        },
    );
    let reader = Reader::start(read_url);
    let t = Instant::now();
    c.kubectl(&["delete", "pod", "hub-0", "-n", NS, "--wait=false"]);
    let hub_ip = wait_until(
        "hub-0 to be recreated and Ready",
        Duration::from_secs(180),
        || {
            let (uid, ip) = pod_ready(c, "hub-0")?;
            if uid == old_hub_uid {
                Err("still the old pod".into())
            } else {
                Ok(ip)
            }
        },
    );
    cx.record("hub pod deleted → recreated Ready", t.elapsed());
    cx.hub_ip = hub_ip;
    let c = &cx.c;
    let n = writer.count();
    wait_until(
        "writes to resume on the new hub",
        Duration::from_secs(60),
        || {
            if writer.count() >= n + 10 {
                Ok(())
            } else {
                Err(format!("{} acked", writer.count()))
            }
        },
    );
    let acked = writer.finish();
    let (reads, failed) = reader.finish();
    eprintln!(
        "[cluster] {reads} reads through svc/edge-relayers while the hub pod was replaced, {} failed",
        failed.len()
    );
    assert!(reads >= 20, "only {reads} reads were made");
    assert!(
        failed.is_empty(),
        "{} of {reads} reads from the relayers failed while the hub was away, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_has_keys(&cx.hub_ip, "recreated hub", &acked, Duration::from_secs(30));
    kwait(c, "unisonrelayer/edge-relayers", "5m");
    kwait(c, &format!("unisonrelayer/{HOP2}"), "5m");
    // The operator reads each relayer pod's /metrics: once the hub is back, Connected=True, and
    // the status lists every pod with its LSN and lag (what `kubectl get -o wide` shows).
    for inst in ["edge-relayers", HOP2] {
        c.kubectl(&[
            "wait",
            "--for=condition=Connected",
            &format!("unisonrelayer/{inst}"),
            "-n",
            NS,
            "--timeout=3m",
        ]);
        let want = pods_of(c, inst).len();
        wait_until(
            &format!("{inst} status to list its {want} pods, connected, with LSNs"),
            Duration::from_secs(90),
            || {
                let st = status(c, "unisonrelayer", inst);
                let pods = st["pods"].as_array().cloned().unwrap_or_default();
                let good = pods
                    .iter()
                    .filter(|p| {
                        p["namespaces"].as_array().is_some_and(|ns| {
                            ns.iter().any(|n| {
                                n["name"] == NS
                                    && n["connected"] == true
                                    && n["lsn"].as_i64() > Some(0)
                            })
                        })
                    })
                    .count();
                if good == want && st["maxLagRecords"].is_i64() {
                    Ok(())
                } else {
                    Err(format!("{good}/{want} pods reported: {st}"))
                }
            },
        );
    }
    let wide = c.kubectl(&["get", "unisonrelayers", "-n", NS, "-o", "wide"]);
    eprintln!("{wide}");
    assert!(
        wide.contains("LAG-SECONDS") && wide.contains("LAG-RECORDS"),
        "{wide}"
    );
    for inst in ["edge-relayers", HOP2] {
        for pod in pods_of(c, inst) {
            assert_has_keys(&pod_ip(c, &pod), &pod, &acked, Duration::from_secs(120));
        }
    }
}

/// (6) WAL settings change → new config hash → the hub pod rolls, data intact.
/// (6b) `storage.size` 10Gi → 10240Mi (the same quantity: no change) → 11Gi: the operator grows the
/// hub's PVC in place (the StatefulSet's claim template is immutable), the cluster's provisioner
/// resizes it, `VolumesResized` becomes True, and the hub pod is not restarted.
fn hub_volume_grows_in_place(cx: &mut Ctx) {
    let c = &cx.c;
    let (hub_uid, _) = wait_until("hub-0 Ready", Duration::from_secs(180), || {
        pod_ready(c, "hub-0")
    });
    let size = hub_pvc_size;
    let resize = |to: &str| patch_hub_size(&cx.c, to);
    assert_eq!(size(c), "10Gi");
    // The same quantity in another unit is no change: not Degraded, nothing resized.
    resize("10240Mi");
    std::thread::sleep(Duration::from_secs(3));
    let st = status(c, "unisonhub", "hub");
    assert!(
        !st["conditions"]
            .to_string()
            .contains("StorageShrinkRefused")
            && !st["conditions"].to_string().contains("VolumesResized"),
        "10240Mi is 10Gi: {st}"
    );
    let t = Instant::now();
    resize("11Gi");
    c.kubectl(&[
        "wait",
        "--for=condition=VolumesResized",
        "unisonhub/hub",
        "-n",
        NS,
        "--timeout=2m",
    ]);
    let took = t.elapsed();
    assert_eq!(size(c), "11Gi");
    let (uid, _) = pod_ready(c, "hub-0").expect("hub-0 Ready");
    assert_eq!(uid, hub_uid, "growing the volume restarted the hub pod");
    // Shrinking is refused and said so; the volume stays.
    resize("5Gi");
    wait_until("StorageShrinkRefused", Duration::from_secs(60), || {
        let st = status(c, "unisonhub", "hub");
        if st["conditions"]
            .to_string()
            .contains("StorageShrinkRefused")
        {
            Ok(())
        } else {
            Err(format!("{st}"))
        }
    });
    resize("11Gi");
    kwait(c, "unisonhub/hub", "2m");
    cx.record("storage.size 10Gi → 11Gi: PVC grown, VolumesResized", took);
}

/// The capacity of the hub's data volume as its PVC reports it.
fn hub_pvc_size(c: &Cluster) -> String {
    c.kubectl(&[
        "get",
        "pvc",
        "data-hub-0",
        "-n",
        NS,
        "-o",
        "jsonpath={.status.capacity.storage}",
    ])
    .trim()
    .to_string()
}

/// `kubectl patch unisonhub hub --type=merge -p '{"spec": SPEC}'`.
fn patch_hub_spec(c: &Cluster, spec: &str) {
    c.kubectl(&[
        "patch",
        "unisonhub",
        "hub",
        "-n",
        NS,
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{spec}}}"#),
    ]);
}

/// A new `spec.storage.size` for the hub.
fn patch_hub_size(c: &Cluster, to: &str) {
    patch_hub_spec(c, &format!(r#"{{"storage":{{"size":"{to}"}}}}"#));
}

fn wal_change_rolls_the_hub(cx: &mut Ctx) {
    let c = &cx.c;
    let hash_before = status(c, "unisonhub", "hub")["configHash"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!hash_before.is_empty(), "hub status has no configHash");
    let (old_hub_uid, _) = wait_until("hub-0 Ready", Duration::from_secs(180), || {
        pod_ready(c, "hub-0")
    });
    let keys_before = kv_keys(&cx.hub_ip).expect("hub keys");
    let t = Instant::now();
    patch_hub_spec(
        c,
        r#"{"wal":{"fsync":"always","segmentSizeBytes":2097152}}"#,
    );
    let hash_after = wait_until(
        "a new configHash in the hub's status",
        Duration::from_secs(60),
        || {
            let h = status(c, "unisonhub", "hub")["configHash"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if h != hash_before && !h.is_empty() {
                Ok(h)
            } else {
                Err(format!("configHash {h}"))
            }
        },
    );
    let hub_ip = wait_until(
        "hub-0 to roll with the new config hash",
        Duration::from_secs(240),
        || {
            let (uid, ip) = pod_ready(c, "hub-0")?;
            let ann = c.try_kubectl(&[
                "get",
                "pod",
                "hub-0",
                "-n",
                NS,
                "-o",
                "jsonpath={.metadata.annotations.unisondb\\.io/config-hash}",
            ])?;
            if uid != old_hub_uid && ann.trim() == hash_after {
                Ok(ip)
            } else {
                Err(format!("pod hash {ann}"))
            }
        },
    );
    kwait(c, "unisonhub/hub", "5m");
    cx.record("WAL config change → hub pod rolled, Ready", t.elapsed());
    cx.hub_ip = hub_ip;
    let c = &cx.c;
    let cm = c.kubectl(&[
        "get",
        "configmap",
        "hub-config",
        "-n",
        NS,
        "-o",
        "jsonpath={.data.config\\.yaml}",
    ]);
    assert!(
        cm.contains("2097152"),
        "the rendered config has the new segment size:\n{cm}"
    );
    assert_eq!(
        kv_keys(&cx.hub_ip).expect("hub keys"),
        keys_before,
        "data changed across the roll"
    );
    let (code, got) = curl(&[&format!("http://{}:4000/api/v1/{NS}/lob/blob-1", cx.hub_ip)]);
    assert!(code == 200 && got == cx.lob, "LOB differs after the roll");
}

/// (7) Prometheus scrapes hub, relayers and the operator.
fn prometheus_scrapes_everything(cx: &mut Ctx) {
    let c = &cx.c;
    let mut targets: Vec<(String, String)> = Vec::new(); // (pod, ip:port)
    for inst in ["hub", "edge-relayers", HOP2] {
        for pod in pods_of(c, inst) {
            let (_, ip) = wait_until(
                "pod Ready before scraping",
                Duration::from_secs(180),
                || pod_ready(c, &pod),
            );
            targets.push((pod, format!("{ip}:4000")));
        }
    }
    let op_ip = c
        .kubectl(&[
            "get",
            "pod",
            &cx.op_pod,
            "-n",
            OP_NS,
            "-o",
            "jsonpath={.status.podIP}",
        ])
        .trim()
        .to_string();
    targets.push((cx.op_pod.clone(), format!("{op_ip}:8080")));
    let prom_port = free_port();
    let mut cfg =
        String::from("global: {scrape_interval: 2s, scrape_timeout: 2s}\nscrape_configs:\n");
    for (pod, addr) in &targets {
        let job = if pod.starts_with("unisondb-operator") {
            "operator"
        } else {
            "unisondb"
        };
        cfg.push_str(&format!(
            "  - job_name: {pod}\n    static_configs: [{{targets: ['{addr}'], labels: {{pod: {pod}, kind: {job}}}}}]\n"
        ));
    }
    let prom_dir = c.work.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    std::fs::write(prom_dir.join("prometheus.yml"), &cfg).unwrap();
    let prom_log = std::fs::File::create(prom_dir.join("prometheus.log")).unwrap();
    let prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            prom_dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(prom_log)
        .spawn()
        .unwrap_or_else(|e| panic!("prometheus missing ({e}): run `bash {CLUSTER_INSTALLER}`"));
    cx.c.children.push(prom);
    let t = Instant::now();
    wait_until(
        "Prometheus: up == 1 for every target",
        Duration::from_secs(90),
        || {
            let r = prometheus_query(prom_port, "up")?;
            let up: BTreeMap<String, String> = r
                .iter()
                .map(|s| {
                    (
                        s["metric"]["job"].as_str().unwrap_or("").to_string(),
                        s["value"][1].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            let all = targets
                .iter()
                .all(|(pod, _)| up.get(pod).map(String::as_str) == Some("1"));
            if all {
                Ok(())
            } else {
                Err(format!("up: {up:?}"))
            }
        },
    );
    cx.record("Prometheus: every target up", t.elapsed());
    let series = prometheus_query(prom_port, "count by (job) (unisondb_lsn)").expect("query");
    assert!(!series.is_empty(), "no unisondb_lsn series scraped");
    let op = prometheus_query(prom_port, "unisondb_operator_reconcile_runs_total").expect("query");
    assert!(!op.is_empty(), "no operator reconcile metrics scraped");
    wait_until(
        "relayer lag metrics present and ~0 when idle",
        Duration::from_secs(60),
        || {
            let r = prometheus_query(prom_port, "unisondb_replication_lag_records")?;
            let relayer_jobs: Vec<&String> = targets
                .iter()
                .map(|(p, _)| p)
                .filter(|p| p.starts_with("edge-"))
                .collect();
            let jobs: BTreeMap<String, f64> = r
                .iter()
                .map(|s| {
                    (
                        s["metric"]["job"].as_str().unwrap_or("").to_string(),
                        s["value"][1]
                            .as_str()
                            .unwrap_or("NaN")
                            .parse()
                            .unwrap_or(f64::NAN),
                    )
                })
                .collect();
            let ok = relayer_jobs
                .iter()
                .all(|j| jobs.get(*j).is_some_and(|v| *v <= 1.0));
            if ok {
                Ok(())
            } else {
                Err(format!("lag by job: {jobs:?}"))
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// TLS: a certificate rotated on the cluster while a hub replicates to a relayer

const TLS_NS: &str = "secure";

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl missing ({e}): run `bash {CLUSTER_INSTALLER}`"));
    assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
}

/// A leaf `NAME.crt`/`NAME.key` signed by `ca.crt`, for every name the TLS hub and relayer answer to.
fn tls_leaf(dir: &Path, name: &str) {
    let sans: Vec<String> = ["tls-hub", "tls-edge"]
        .iter()
        .flat_map(|i| {
            [
                format!("DNS:{i}"),
                format!("DNS:{i}.{TLS_NS}.svc"),
                format!("DNS:{i}.{TLS_NS}.svc.cluster.local"),
                format!("DNS:*.{i}-headless.{TLS_NS}.svc.cluster.local"),
            ]
        })
        .collect();
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
            sans.join(",")
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// The Secret `tls-certs` (tls.crt, tls.key, ca.crt) holding leaf `name`, applied.
fn tls_secret_apply(c: &Cluster, dir: &Path, name: &str) {
    let cert = dir.join(format!("{name}.crt")).display().to_string();
    let key = dir.join(format!("{name}.key")).display().to_string();
    let ca = dir.join("ca.crt").display().to_string();
    let yaml = c.kubectl(&[
        "create",
        "secret",
        "generic",
        "tls-certs",
        "-n",
        TLS_NS,
        "--dry-run=client",
        "-o",
        "yaml",
        &format!("--from-file=tls.crt={cert}"),
        &format!("--from-file=tls.key={key}"),
        &format!("--from-file=ca.crt={ca}"),
    ]);
    c.kubectl_stdin(&["apply", "-f", "-"], &yaml);
}

/// The serial of the certificate `ip:port` presents (SNI `host`).
fn served_serial(ip: &str, port: u16, host: &str) -> Result<String, String> {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {ip}:{port} -servername {host} </dev/null 2>/dev/null \
             | openssl x509 -noout -serial"
        ))
        .output()
        .map_err(|e| e.to_string())?;
    let out = stdout(&o);
    out.trim()
        .strip_prefix("serial=")
        .map(str::to_string)
        .ok_or_else(|| format!("no certificate from {ip}:{port}: {out}"))
}

fn file_serial(path: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(path)
        .output()
        .expect("openssl");
    stdout(&o).trim().trim_start_matches("serial=").to_string()
}

/// curl over HTTPS to a pod IP, verifying the certificate against `ca` under the Service name.
fn curl_tls(ca: &Path, host: &str, ip: &str, args: &[&str], path: &str) -> (u16, Vec<u8>) {
    let resolve = format!("{host}:4000:{ip}");
    let url = format!("https://{host}:4000{path}");
    let mut all = vec!["--cacert", ca.to_str().unwrap(), "--resolve", &resolve];
    all.extend_from_slice(args);
    all.push(&url);
    curl(&all)
}

fn tls_metric(ca: &Path, host: &str, ip: &str, name: &str) -> Result<f64, String> {
    let (code, out) = curl_tls(ca, host, ip, &[], "/metrics");
    if code != 200 {
        return Err(format!("GET https {ip}/metrics: {code}"));
    }
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Waits until `kind/name` in `ns` is Ready, then returns the IP of its first pod (`name-0`).
fn ready_first_pod(c: &Cluster, ns: &str, kind: &str, name: &str) -> String {
    let what = format!("{kind}/{name}");
    let o = c.kubectl_output(&[
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        &what,
        "--timeout=5m",
    ]);
    assert!(o.status.success(), "{what} not Ready: {}", stderr(&o));
    let pod = format!("{name}-0");
    c.kubectl(&[
        "get",
        "pod",
        &pod,
        "-n",
        ns,
        "-o",
        "jsonpath={.status.podIP}",
    ])
    .trim()
    .to_string()
}

/// A hub and a relayer with `spec.tls` (user Secret, HTTP API over TLS too) replicate under a
/// write load while the Secret's certificate is replaced: every port of both pods presents the new
/// certificate (the kubelet's Secret update, then the nodes' reload), no pod restarts, the relayer's
/// WAL stream is never reconnected, and every acknowledged write reaches the relayer.
fn certificate_rotated_during_replication(cx: &mut Ctx) {
    let t = Instant::now();
    let c = &cx.c;
    let dir = c.work.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=unisondb-e2e-ca",
        ],
    );
    tls_leaf(&dir, "first");
    tls_leaf(&dir, "second");
    let ca = dir.join("ca.crt");
    c.kubectl(&["create", "namespace", TLS_NS]);
    tls_secret_apply(c, &dir, "first");
    let tls = "tls: {secretName: tls-certs, http: true}";
    c.kubectl_stdin(
        &["apply", "-n", TLS_NS, "-f", "-"],
        &format!(
            "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: tls-hub}}\n\
             spec: {{namespaces: [{NS}], storage: {{size: 1Gi}}, {tls}}}\n---\n\
             apiVersion: unisondb.io/v1alpha1\nkind: UnisonRelayer\nmetadata: {{name: tls-edge}}\n\
             spec: {{upstream: {{hubRef: {{name: tls-hub}}}}, replicas: 1, storage: {{size: 1Gi}}, {tls}}}\n"
        ),
    );
    let hub_ip = ready_first_pod(c, TLS_NS, "unisonhub", "tls-hub");
    let edge_ip = ready_first_pod(c, TLS_NS, "unisonrelayer", "tls-edge");
    let hub_host = format!("tls-hub.{TLS_NS}.svc.cluster.local");
    let edge_host = format!("tls-edge.{TLS_NS}.svc.cluster.local");
    let endpoints = [
        (hub_ip.as_str(), 4000, hub_host.as_str()),
        (hub_ip.as_str(), 4001, hub_host.as_str()),
        (edge_ip.as_str(), 4000, edge_host.as_str()),
        (edge_ip.as_str(), 4001, edge_host.as_str()),
    ];
    let first = file_serial(&dir.join("first.crt"));
    let second = file_serial(&dir.join("second.crt"));
    for (ip, port, host) in endpoints {
        assert_eq!(
            served_serial(ip, port, host).as_deref(),
            Ok(first.as_str()),
            "{ip}:{port}"
        );
    }
    let uids = |c: &Cluster| {
        let pods = c.json(&["get", "pods", "-n", TLS_NS]);
        pods["items"]
            .as_array()
            .expect("pods")
            .iter()
            .map(|p| {
                (
                    p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                    p["status"]["containerStatuses"][0]["restartCount"]
                        .as_i64()
                        .unwrap_or(-1),
                )
            })
            .collect::<Vec<_>>()
    };
    let before = uids(c);
    // the relayer has streamed once (a first write replicated) before the reconnect count is taken
    let put = |key: &str| -> Result<(), String> {
        let body = format!("{{\"value\":\"{}\"}}", b64(key.as_bytes()));
        let (code, out) = curl_tls(
            &ca,
            &hub_host,
            &hub_ip,
            &[
                "-X",
                "PUT",
                "-H",
                "content-type: application/json",
                "-d",
                &body,
            ],
            &format!("/api/v1/{NS}/kv/{key}"),
        );
        if code == 200 {
            Ok(())
        } else {
            Err(format!(
                "PUT {key}: {code} {}",
                String::from_utf8_lossy(&out)
            ))
        }
    };
    put("tls-0").expect("a write over HTTPS");
    wait_until("tls-0 on the relayer", Duration::from_secs(60), || {
        let (code, _) = curl_tls(
            &ca,
            &edge_host,
            &edge_ip,
            &[],
            &format!("/api/v1/{NS}/kv/tls-0"),
        );
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{code}"))
        }
    });
    let reconnects = tls_metric(
        &ca,
        &edge_host,
        &edge_ip,
        "unisondb_replication_reconnects_total",
    )
    .expect("relayer metrics over HTTPS");

    // writes go on while the Secret changes
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(vec!["tls-0".to_string()]));
    let writer = {
        let (stop, acked, ca, hub_host, hub_ip) = (
            stop.clone(),
            acked.clone(),
            ca.clone(),
            hub_host.clone(),
            hub_ip.clone(),
        );
        std::thread::spawn(move || {
            let mut i = 1;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("tls-{i}");
                let body = format!("{{\"value\":\"{}\"}}", b64(key.as_bytes()));
                let (code, _) = curl_tls(
                    &ca,
                    &hub_host,
                    &hub_ip,
                    &[
                        "-X",
                        "PUT",
                        "-H",
                        "content-type: application/json",
                        "-d",
                        &body,
                    ],
                    &format!("/api/v1/{NS}/kv/{key}"),
                );
                if code == 200 {
                    acked.lock().unwrap().push(key);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let t_rotate = Instant::now();
    tls_secret_apply(c, &dir, "second");
    wait_until(
        "every port of both pods to present the new certificate",
        Duration::from_secs(180),
        || {
            for (ip, port, host) in endpoints {
                let s = served_serial(ip, port, host)?;
                if s != second {
                    return Err(format!("{ip}:{port} still serves {s}"));
                }
            }
            Ok(())
        },
    );
    let rotated_in = t_rotate.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "writes went on during the rotation: {}",
        acked.len()
    );
    wait_until(
        "every acknowledged write on the relayer",
        Duration::from_secs(60),
        || {
            let (code, out) = curl_tls(
                &ca,
                &edge_host,
                &edge_ip,
                &[],
                &format!("/api/v1/{NS}/kv?limit=1000"),
            );
            if code != 200 {
                return Err(format!("scan {code}"));
            }
            let v: Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
            let have: std::collections::BTreeSet<String> = v["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|i| i["key"].as_str().map(String::from))
                .collect();
            let missing: Vec<&String> = acked.iter().filter(|k| !have.contains(*k)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?}"))
            }
        },
    );
    let after = tls_metric(
        &ca,
        &edge_host,
        &edge_ip,
        "unisondb_replication_reconnects_total",
    )
    .expect("relayer metrics");
    assert_eq!(
        after, reconnects,
        "the relayer's WAL stream was reconnected by the rotation"
    );
    assert_eq!(
        uids(c),
        before,
        "a pod was restarted or replaced by the rotation"
    );
    eprintln!(
        "[cluster] certificate rotated: {} writes acknowledged during it, all replicated; new certificate on every port {} after the Secret update",
        acked.len(),
        secs(rotated_in)
    );
    c.kubectl(&["delete", "namespace", TLS_NS, "--wait=false"]);
    cx.record(
        "TLS hub + relayer: certificate rotated under replication",
        t.elapsed(),
    );
}

// ---------------------------------------------------------------------------------------------
// Backups: a schedule backs a hub up into S3, a new hub bootstraps from it

const BK_NS: &str = "backup";
const BUCKET: &str = "unisondb-e2e";

/// The S3 server (moto from the venv) on the host, reachable from pods through the bridge's
/// gateway; a bucket made. Killed with the cluster's other helper processes.
fn s3_on_the_host(cx: &mut Ctx) -> String {
    let moto = cx.py.with_file_name("moto_server");
    assert!(
        moto.exists(),
        "{} missing: run `bash scripts/install-deps.sh`",
        moto.display()
    );
    let port = free_port();
    let log = std::fs::File::create(cx.c.work.join("moto.log")).expect("moto log");
    let child = Command::new(&moto)
        .args(["-H", "0.0.0.0", "-p", &port.to_string()])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start moto_server");
    cx.c.children.push(child);
    wait_until(
        "moto_server and its bucket",
        Duration::from_secs(30),
        || {
            let (code, out) = curl(&["-X", "PUT", &format!("http://127.0.0.1:{port}/{BUCKET}")]);
            if code == 200 {
                Ok(())
            } else {
                Err(format!("{code} {}", String::from_utf8_lossy(&out)))
            }
        },
    );
    // the pods' default gateway: the host end of the CNI bridge
    format!("http://10.244.0.1:{port}")
}

fn bk_json(c: &Cluster, kind: &str, name: &str) -> Value {
    c.json(&["get", kind, name, "-n", BK_NS])
}

/// `spec.backup` on a hub (WAL archiving every 2 s), a `UnisonScheduledBackup` every minute, writes
/// before and after its first backup; then a new hub with `spec.bootstrap.recovery` from the bucket
/// starts with exactly the source's data (base backup + archived WAL replayed to the end).
fn backups_scheduled_and_restored(cx: &mut Ctx) {
    let t = Instant::now();
    let endpoint = s3_on_the_host(cx);
    let c = &cx.c;
    c.kubectl(&["create", "namespace", BK_NS]);
    let store = format!(
        "{{endpoint: '{endpoint}', bucket: {BUCKET}, prefix: e2e/bk-hub, credentialsSecret: {{name: s3-credentials}}}}"
    );
    c.kubectl_stdin(
        &["apply", "-n", BK_NS, "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: s3-credentials}}\nstringData:\n  credentials: |\n    \
             [default]\n    aws_access_key_id = e2e\n    aws_secret_access_key = e2e-secret\n---\n\
             apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: bk-hub}}\n\
             spec: {{namespaces: [{NS}], storage: {{size: 1Gi}}, backup: {{objectStore: {store}, \
             walArchiving: {{maxDelaySeconds: 2}}}}}}\n"
        ),
    );
    let ip = ready_first_pod(c, BK_NS, "unisonhub", "bk-hub");
    for i in 0..40 {
        put_kv(&ip, &format!("before-{i:02}"), format!("v{i}").as_bytes()).expect("write");
    }
    c.kubectl_stdin(
        &["apply", "-n", BK_NS, "-f", "-"],
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonScheduledBackup\nmetadata: {name: bk-every-minute}\n\
         spec: {schedule: '* * * * *', hubRef: {name: bk-hub}}\n",
    );
    let backup = wait_until(
        "a scheduled UnisonBackup Completed",
        Duration::from_secs(180),
        || {
            let list = c.json(&["get", "unisonbackups", "-n", BK_NS]);
            let items = list["items"].as_array().cloned().unwrap_or_default();
            if let Some(f) = items.iter().find(|b| b["status"]["phase"] == "Failed") {
                panic!("a scheduled backup failed: {}", f["status"]);
            }
            items
                .into_iter()
                .find(|b| b["status"]["phase"] == "Completed")
                .ok_or_else(|| {
                    format!(
                        "{} backups, none Completed",
                        list["items"].as_array().map_or(0, Vec::len)
                    )
                })
        },
    );
    let name = backup["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let owner = &backup["metadata"]["ownerReferences"][0];
    assert_eq!(
        owner["kind"], "UnisonScheduledBackup",
        "{}",
        backup["metadata"]
    );
    let sched = bk_json(c, "unisonscheduledbackup", "bk-every-minute");
    assert!(
        sched["status"]["lastScheduleTime"].is_string(),
        "{}",
        sched["status"]
    );
    eprintln!("[cluster] scheduled backup {name}: {}", backup["status"]);
    // writes after the base backup reach the bucket only through WAL archiving
    let mut last = 0;
    for i in 0..20 {
        last = put_kv(&ip, &format!("after-{i:02}"), format!("w{i}").as_bytes()).expect("write");
    }
    wait_until("the last write archived", Duration::from_secs(60), || {
        let archived = metric_sum(&ip, "unisondb_archive_archived_lsn")?;
        if archived as u64 >= last {
            Ok(())
        } else {
            Err(format!("archived {archived} < {last}"))
        }
    });
    c.kubectl_stdin(
        &["apply", "-n", BK_NS, "-f", "-"],
        &format!(
            "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: bk-restored}}\n\
             spec: {{namespaces: [{NS}], storage: {{size: 1Gi}}, bootstrap: {{recovery: {{objectStore: {store}}}}}}}\n"
        ),
    );
    let rip = ready_first_pod(c, BK_NS, "unisonhub", "bk-restored");
    let items = |ip: &str| {
        get_json(&format!("http://{ip}:4000/api/v1/{NS}/kv?limit=1000")).map(|v| v["items"].clone())
    };
    let source = items(&ip).expect("source kv");
    let restored = items(&rip).expect("restored kv");
    assert_eq!(source.as_array().map(Vec::len), Some(60), "{source}");
    assert_eq!(restored, source, "the restored hub differs from the source");
    let logs = c.kubectl(&["logs", "bk-restored-0", "-n", BK_NS, "-c", "restore-0"]);
    eprintln!(
        "[cluster] restore init container: {}",
        logs.lines().last().unwrap_or("")
    );
    cx.record(
        "scheduled backup into S3 → new hub bootstrapped from it",
        t.elapsed(),
    );
    auth_hub_backed_up_by_a_job(cx, &store);
    cx.c.kubectl(&["delete", "namespace", BK_NS, "--wait=false"]);
}

/// A hub whose API needs a token: the operator never reads the Secret, so its UnisonBackup runs as
/// a Job in the hub's image that does, and reports through its termination message.
fn auth_hub_backed_up_by_a_job(cx: &mut Ctx, store: &str) {
    let t = Instant::now();
    let c = &cx.c;
    let store = store.replace("e2e/bk-hub", "e2e/bk-auth");
    c.kubectl_stdin(
        &["apply", "-n", BK_NS, "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: bk-auth-token}}\nstringData: {{token: e2e-token}}\n---\n\
             apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: bk-auth}}\n\
             spec: {{namespaces: [{NS}], storage: {{size: 1Gi}}, httpAuth: {{secretName: bk-auth-token}}, \
             backup: {{objectStore: {store}}}}}\n"
        ),
    );
    let ip = ready_first_pod(c, BK_NS, "unisonhub", "bk-auth");
    let put = |key: &str, token: Option<&str>| {
        let auth = format!("authorization: Bearer {}", token.unwrap_or(""));
        let mut args = vec![
            "-X",
            "PUT",
            "-H",
            "content-type: application/json",
            "-d",
            "{\"value\":\"YXV0aA==\"}",
        ];
        if token.is_some() {
            args.extend(["-H", auth.as_str()]);
        }
        let url = format!("http://{ip}:4000/api/v1/{NS}/kv/{key}");
        args.push(&url);
        curl(&args)
    };
    let (code, _) = put("no-token", None);
    assert_eq!(code, 401, "a write without the token must be refused");
    let mut last = 0;
    for i in 0..10 {
        let (code, out) = put(&format!("auth-{i}"), Some("e2e-token"));
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&out));
        let v: Value = serde_json::from_slice(&out).expect("write answer");
        last = v["lsn"].as_u64().expect("lsn");
    }
    c.kubectl_stdin(
        &["apply", "-n", BK_NS, "-f", "-"],
        "apiVersion: unisondb.io/v1alpha1\nkind: UnisonBackup\nmetadata: {name: bk-auth-once}\n\
         spec: {hubRef: {name: bk-auth}}\n",
    );
    let status = wait_until(
        "the auth hub's UnisonBackup Completed",
        Duration::from_secs(240),
        || {
            let b = bk_json(c, "unisonbackup", "bk-auth-once");
            match b["status"]["phase"].as_str() {
                Some("Completed") => Ok(b["status"].clone()),
                Some("Failed") => panic!("the Job backup failed: {}", b["status"]),
                p => Err(format!("phase {p:?}: {}", b["status"])),
            }
        },
    );
    let nb = &status["backups"][0];
    assert_eq!(nb["namespace"], NS, "{status}");
    assert!(
        nb["lastLsn"].as_u64().unwrap_or(0) >= last,
        "the backup holds every acknowledged write (last LSN {last}): {status}"
    );
    // The Job stays (until its TTL) owned by the backup, succeeded; status.job is cleared once the
    // backup completes.
    let jobs = c.json(&[
        "get",
        "jobs",
        "-n",
        BK_NS,
        "-l",
        "app.kubernetes.io/managed-by=unisondb-operator",
    ]);
    let items = jobs["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "one Job for one namespace: {jobs}");
    let job = &items[0];
    assert_eq!(
        job["metadata"]["ownerReferences"][0]["name"], "bk-auth-once",
        "{}",
        job["metadata"]
    );
    assert_eq!(job["status"]["succeeded"], 1, "{}", job["status"]);
    let spec = job["spec"]["template"]["spec"].to_string();
    assert!(
        !spec.contains("e2e-token"),
        "the token must reach the Job only through the Secret: {spec}"
    );
    eprintln!("[cluster] auth hub backup by Job: {status}");
    cx.record("auth-guarded hub: UnisonBackup run as a Job", t.elapsed());
}

/// (8) Uninstall: CRs deleted → owned objects garbage-collected; helm uninstall.
fn uninstalled(cx: &mut Ctx) {
    let c = &cx.c;
    let t = Instant::now();
    c.kubectl(&["delete", "unisonrelayer", HOP2, "-n", NS]);
    c.kubectl(&["delete", "-f", "deploy/examples/primary-relayers.yaml"]);
    wait_until(
        "owned objects to be garbage-collected",
        Duration::from_secs(180),
        || {
            let left = c.try_kubectl(&[
                "get",
                "statefulsets,services,configmaps,pods,poddisruptionbudgets",
                "-n",
                NS,
                "-l",
                "app.kubernetes.io/managed-by=unisondb-operator",
                "-o",
                "name",
            ])?;
            let pods = c.try_kubectl(&["get", "pods", "-n", NS, "-o", "name"])?;
            if left.trim().is_empty() && pods.trim().is_empty() {
                Ok(())
            } else {
                Err(format!("{left}{pods}"))
            }
        },
    );
    cx.record("CRs deleted → owned objects garbage-collected", t.elapsed());
    let t = Instant::now();
    run_ok(&mut helm(&[
        "uninstall",
        "unisondb-operator",
        "-n",
        OP_NS,
        "--kubeconfig",
        &cx.kc,
    ]));
    let c = &cx.c;
    wait_until(
        "the operator to be removed",
        Duration::from_secs(120),
        || {
            let left = c.try_kubectl(&[
                "get",
                "deploy,pods,serviceaccounts",
                "-n",
                OP_NS,
                "-o",
                "name",
            ])?;
            let left: Vec<&str> = left.lines().filter(|l| !l.ends_with("/default")).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join(" "))
            }
        },
    );
    cx.record("helm uninstall → operator gone", t.elapsed());
}

/// Timings printed and written; the cluster torn down.
fn finish(cx: Ctx) {
    let t_all = cx.t_all;
    eprintln!(
        "[timing] whole scenario (incl. cluster up): {}",
        secs(t_all.elapsed())
    );
    write_timings(&cx.c.work, &cx.timings);
    drop(cx);
    eprintln!("[timing] total incl. teardown: {}", secs(t_all.elapsed()));
}

fn write_timings(dir: &Path, t: &[(String, Duration)]) {
    let text: String = t
        .iter()
        .map(|(k, d)| format!("{k}\t{:.1}\n", d.as_secs_f64()))
        .collect();
    let _ = std::fs::write(dir.join("timings.tsv"), &text);
    if let Ok(p) = std::env::var("CLUSTER_E2E_TIMINGS") {
        let _ = std::fs::write(p, text);
    }
}
