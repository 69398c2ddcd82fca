//! Benchmark (not a test) against a local kube-apiserver 1.20.2 started with e2e/k8s scripts:
//! apply→StatefulSet latency over 50 hubs (p50/p99), time for 100 relayers to reach their desired
//! objects, API writes per reconcile of unchanged objects (target 0), operator RSS.
//!
//! `cargo build --release -p unisondb-operator && cargo run --release -p unisondb-bench --bin operator-bench`
//! (needs e2e/k8s/install-deps.sh; the operator binary is found like `unisondb`, see `locate`).

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::Client;
use serde_json::json;
use unisondb_bench::locate;
use unisondb_bench::process::{rss_kib, ChildGuard};
use unisondb_bench::stats::percentile;
use unisondb_operator::crd::{UnisonHub, UnisonRelayer};
use unisondb_testkit::{free_port, repo_root, ControlPlane, ControlPlaneOptions};

const NS: &str = "default";

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

/// Sum of the samples of metric `name` on the operator's `/metrics`.
async fn metric(http: &reqwest::Client, port: u16, name: &str) -> Result<f64> {
    let body = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The p-quantile of sorted latencies.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    percentile(sorted, p).unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<()> {
    let cp = ControlPlane::start(ControlPlaneOptions::default())?;
    std::env::set_var("KUBECONFIG", &cp.kubeconfig);
    let crds = repo_root().join("crds/unisondb.io_crds.yaml");
    cp.kubectl(&[
        "apply",
        "--validate=false",
        "-f",
        crds.to_str().context("path")?,
    ])?;
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/unisonhubs.unisondb.io",
        "crd/unisonrelayers.unisondb.io",
    ])?;

    let op_bin = locate::binary(
        "unisondb-operator",
        "UNISONDB_OPERATOR_BIN",
        "unisondb-operator",
    )?;
    let port = free_port();
    let log = std::fs::File::create(cp.run_dir.join("operator.log"))?;
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
    let operator = ChildGuard(child);
    let pid = operator.0.id();
    let http = reqwest::Client::new();
    let client = Client::try_default().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid).0;

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
    let rss_loaded = rss_kib(pid).0;

    // 3. Steady state: force a reconcile of every object with no spec change (an annotation on the
    //    CR) and count the writes the operator makes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rv_before = resource_versions(&client).await?;
    let runs_before = metric(&http, port, "unisondb_operator_reconcile_runs_total").await?;
    let status_before = metric(&http, port, "unisondb_operator_status_writes_total").await?;
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
    let runs = metric(&http, port, "unisondb_operator_reconcile_runs_total").await? - runs_before;
    let status_writes =
        metric(&http, port, "unisondb_operator_status_writes_total").await? - status_before;
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
        rss_loaded.max(rss_kib(pid).0) / 1024
    );
    Ok(())
}
