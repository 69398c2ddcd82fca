//! Benchmark (not a test) against a local kube-apiserver 1.20.2 started with e2e/k8s scripts:
//! apply→StatefulSet latency over 50 hubs (p50/p99), time for 100 relayers to reach their desired
//! objects, API writes per reconcile of unchanged objects (target 0), operator RSS.
//!
//! `cargo run --release -p unisondb-operator --bin operator-bench` (needs e2e/k8s/install-deps.sh).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::Client;
use serde_json::json;
use unisondb_operator::crd::{UnisonHub, UnisonRelayer};

const NS: &str = "default";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Guard {
    run_dir: PathBuf,
    operator: Option<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.operator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("bash")
            .arg(repo().join("e2e/k8s/stop-k8s120.sh"))
            .env("RUN_DIR", &self.run_dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn resource_versions(client: &Client) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=unisondb-operator");
    for s in Api::<StatefulSet>::namespaced(client.clone(), NS)
        .list(&lp)
        .await?
    {
        out.push((
            format!("sts/{}", s.metadata.name.unwrap_or_default()),
            s.metadata.resource_version.unwrap_or_default(),
        ));
    }
    for s in Api::<Service>::namespaced(client.clone(), NS)
        .list(&lp)
        .await?
    {
        out.push((
            format!("svc/{}", s.metadata.name.unwrap_or_default()),
            s.metadata.resource_version.unwrap_or_default(),
        ));
    }
    for s in Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&lp)
        .await?
    {
        out.push((
            format!("cm/{}", s.metadata.name.unwrap_or_default()),
            s.metadata.resource_version.unwrap_or_default(),
        ));
    }
    out.sort();
    Ok(out)
}

async fn metric(port: u16, name: &str) -> Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[tokio::main]
async fn main() -> Result<()> {
    let bin = std::env::var_os("K8S_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/unisondb-e2e/k8s-1.20.2/bin")
        });
    if !bin.join("kube-apiserver").exists() {
        bail!("{} missing: run e2e/k8s/install-deps.sh", bin.display());
    }
    let run_dir = std::env::temp_dir().join(format!("unisondb-op-bench-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let mut guard = Guard {
        run_dir: run_dir.clone(),
        operator: None,
    };
    let st = Command::new("bash")
        .arg(repo().join("e2e/k8s/start-k8s120.sh"))
        .env("RUN_DIR", &run_dir)
        .env("K8S_BIN", &bin)
        .env("ETCD_PORT", free_port()?.to_string())
        .env("PEER_PORT", free_port()?.to_string())
        .env("API_PORT", free_port()?.to_string())
        .env("WITH_KCM", "0")
        .status()?;
    if !st.success() {
        bail!("start-k8s120.sh failed");
    }
    let kubeconfig = run_dir.join("kubeconfig");
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let kubectl = |args: &[&str]| -> Result<()> {
        let ok = Command::new("/usr/bin/kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .status()?
            .success();
        if !ok {
            bail!("kubectl {args:?} failed");
        }
        Ok(())
    };
    kubectl(&[
        "apply",
        "--validate=false",
        "-f",
        repo()
            .join("crds/unisondb.io_crds.yaml")
            .to_str()
            .context("path")?,
    ])?;
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/unisonhubs.unisondb.io",
        "crd/unisonrelayers.unisondb.io",
    ])?;

    let op_bin = std::env::current_exe()?.with_file_name("unisondb-operator");
    let port = free_port()?;
    let log = std::fs::File::create(run_dir.join("operator.log"))?;
    let child = Command::new(&op_bin)
        .args([
            "run",
            "--no-leader-elect",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawning {}", op_bin.display()))?;
    let pid = child.id();
    guard.operator = Some(child);
    let client = Client::try_default().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);

    let hubs: Api<UnisonHub> = Api::namespaced(client.clone(), NS);
    let rels: Api<UnisonRelayer> = Api::namespaced(client.clone(), NS);
    let ssa = PatchParams::apply("bench");

    // 1. apply → StatefulSet latency, one hub at a time.
    let mut sts_events = watcher::watcher(
        Api::<StatefulSet>::namespaced(client.clone(), NS),
        Default::default(),
    )
    .boxed();
    let mut latencies = Vec::new();
    for i in 0..50 {
        let name = format!("hub-{i}");
        let obj = json!({"apiVersion": "unisondb.io/v1alpha1", "kind": "UnisonHub",
            "metadata": {"name": name}, "spec": {"image": "unisondb:bench", "namespaces": ["a"]}});
        let t = Instant::now();
        hubs.patch(&name, &ssa, &Patch::Apply(&obj)).await?;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), sts_events.next())
                .await?
                .context("watch ended")??;
            let seen = match &ev {
                Event::Apply(s) | Event::InitApply(s) => {
                    s.metadata.name.as_deref() == Some(name.as_str())
                }
                _ => false,
            };
            if seen {
                break;
            }
        }
        latencies.push(t.elapsed());
    }
    latencies.sort();
    println!(
        "apply UnisonHub -> StatefulSet exists (n=50): p50 {:?}  p99 {:?}  max {:?}",
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );

    // 2. 100 relayers on hub-0: time until every StatefulSet exists and every status has its upstream.
    let t = Instant::now();
    for i in 0..100 {
        let name = format!("rel-{i}");
        let obj = json!({"apiVersion": "unisondb.io/v1alpha1", "kind": "UnisonRelayer",
            "metadata": {"name": name}, "spec": {"image": "unisondb:bench", "upstream": {"hubRef": {"name": "hub-0"}}, "replicas": 2}});
        rels.patch(&name, &ssa, &Patch::Apply(&obj)).await?;
    }
    let applied = t.elapsed();
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    loop {
        let have: HashSet<String> = sts_api
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        let resolved = rels
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter(|r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.upstream.as_ref())
                    .is_some()
            })
            .count();
        if (0..100).all(|i| have.contains(&format!("rel-{i}"))) && resolved == 100 {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("100 relayers not reconciled within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "100 UnisonRelayers -> StatefulSets + resolved status: {:?} (applies took {:?})",
        t.elapsed(),
        applied
    );
    let rss_loaded = rss_kib(pid);

    // 3. Steady state: force a reconcile of every object with no spec change (an annotation on the
    //    CR) and count the writes the operator makes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rv_before = resource_versions(&client).await?;
    let runs_before = metric(port, "unisondb_operator_reconcile_runs_total").await?;
    let status_before = metric(port, "unisondb_operator_status_writes_total").await?;
    let poke = PatchParams::default();
    for i in 0..50 {
        hubs.patch(
            &format!("hub-{i}"),
            &poke,
            &Patch::Merge(json!({"metadata": {"annotations": {"bench/poke": "1"}}})),
        )
        .await?;
    }
    for i in 0..100 {
        rels.patch(
            &format!("rel-{i}"),
            &poke,
            &Patch::Merge(json!({"metadata": {"annotations": {"bench/poke": "1"}}})),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let rv_after = resource_versions(&client).await?;
    let runs = metric(port, "unisondb_operator_reconcile_runs_total").await? - runs_before;
    let status_writes =
        metric(port, "unisondb_operator_status_writes_total").await? - status_before;
    let object_writes = rv_before
        .iter()
        .zip(&rv_after)
        .filter(|(a, b)| a != b)
        .count()
        + rv_after.len().abs_diff(rv_before.len());
    let mut changed_kinds = std::collections::BTreeMap::<String, usize>::new();
    for (a, b) in rv_before.iter().zip(&rv_after) {
        if a != b {
            *changed_kinds
                .entry(a.0.split('/').next().unwrap_or("").to_string())
                .or_default() += 1;
        }
    }
    println!("changed owned objects by kind: {changed_kinds:?}");
    println!(
        "steady state: {runs} reconciles of unchanged objects -> {object_writes} owned-object writes, {status_writes} status writes ({:.3} writes/reconcile)",
        (object_writes as f64 + status_writes) / runs.max(1.0)
    );
    println!(
        "operator RSS: idle {} MiB, with 150 CRs {} MiB",
        rss_idle / 1024,
        rss_loaded.max(rss_kib(pid)) / 1024
    );
    Ok(())
}
