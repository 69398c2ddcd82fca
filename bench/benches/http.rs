//! HTTP benchmark of the real `unisondb` binary (not a timed test): 1 KB values, 10 connections,
//! PUT (fsync `interval`), GET, and a 50/50 mix; then Redis from the same machine when installed
//! (`redis-benchmark -d 1000 -c 10 -t set,get`), with the ratio printed.
//!
//! Run: `cargo build --release -p unisondb-node --bin unisondb && cargo bench -p unisondb-bench --bench http`
//! (BENCH_SECS=N per phase, default 5; `UNISONDB_BIN` names another `unisondb` binary).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine as _;
use unisondb_bench::locate::unisondb_bin;
use unisondb_bench::process::{on_path, Fsync, Node, NodeSpec, RedisServer, RedisSpec};
use unisondb_bench::stats::percentile;

const CONNS: usize = 10;
const VALUE: usize = 1000;
const KEYS: u64 = 100_000;

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Put,
    Get,
    Mix,
}

struct PhaseResult {
    name: &'static str,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run_phase(base: Arc<String>, phase: Phase, name: &'static str, secs: u64) -> PhaseResult {
    let value = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; VALUE]);
    let body = Arc::new(format!("{{\"value\":\"{value}\"}}"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for conn in 0..CONNS {
        let base = base.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut lat = Vec::with_capacity(100_000);
            let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ conn as u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = x % KEYS;
                let put = match phase {
                    Phase::Put => true,
                    Phase::Get => false,
                    Phase::Mix => i.is_multiple_of(2),
                };
                i += 1;
                let url = format!("{base}/kv/key{key}");
                let t = Instant::now();
                let r = if put {
                    client
                        .put(&url)
                        .header("content-type", "application/json")
                        .body(body.as_str().to_owned())
                        .send()
                        .await
                } else {
                    client.get(&url).send().await
                };
                match r {
                    Ok(r) => {
                        let ok = r.status().is_success() || r.status() == 404;
                        let _ = r.bytes().await;
                        if ok {
                            lat.push(t.elapsed().as_micros() as u32);
                        }
                    }
                    Err(e) => eprintln!("request failed: {e}"),
                }
            }
            lat
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = start.elapsed().as_secs_f64().max(secs as f64);
    all.sort_unstable();
    let pct = |p: f64| percentile(&all, p).map_or(0.0, |us| us as f64 / 1000.0);
    PhaseResult {
        name,
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

/// Runs redis-benchmark against a fresh redis-server (no persistence); returns (test, rps, p50, p99).
/// `None` when Redis is not installed or does not start.
fn redis(root: &std::path::Path, n: u64) -> Option<Vec<(String, f64, f64, f64)>> {
    if !on_path("redis-server") || !on_path("redis-benchmark") {
        return None;
    }
    let srv = RedisServer::spawn(root, "redis", &RedisSpec::default()).ok()?;
    let out = Command::new("redis-benchmark")
        .args(["-p", &srv.port.to_string()])
        .args([
            "-d",
            "1000",
            "-c",
            "10",
            "-t",
            "set,get",
            "-n",
            &n.to_string(),
            "--csv",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<String> = line
            .split(',')
            .map(|s| s.trim_matches('"').to_string())
            .collect();
        if f.len() >= 7 {
            rows.push((
                f[0].clone(),
                f[1].parse().unwrap_or(0.0),
                f[4].parse().unwrap_or(0.0),
                f[6].parse().unwrap_or(0.0),
            ));
        }
    }
    Some(rows)
}

fn main() -> Result<()> {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful: skip quietly then.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().context("tempdir")?;
    let spec = NodeSpec {
        fsync: Fsync::Interval,
        ..NodeSpec::new("node", "default")
    };
    let node = Node::spawn(&unisondb_bin()?, dir.path(), &spec)?;
    node.wait_ready(Duration::from_secs(10))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let base = Arc::new(format!("http://127.0.0.1:{}/api/v1/default", node.http));
    let results = rt.block_on(async {
        vec![
            run_phase(base.clone(), Phase::Put, "PUT (fsync interval 10ms)", secs).await,
            run_phase(base.clone(), Phase::Get, "GET", secs).await,
            run_phase(base.clone(), Phase::Mix, "50/50 PUT/GET", secs).await,
        ]
    });
    println!("unisondb HTTP, 1 KB values, {CONNS} connections, {secs} s per phase");
    println!(
        "{:<28} {:>12} {:>10} {:>10}",
        "phase", "req/s", "p50 ms", "p99 ms"
    );
    for r in &results {
        println!(
            "{:<28} {:>12.0} {:>10.3} {:>10.3}",
            r.name, r.rps, r.p50_ms, r.p99_ms
        );
    }
    match redis(dir.path(), 200_000) {
        Some(rows) if !rows.is_empty() => {
            println!("\nredis-benchmark -d 1000 -c 10 -t set,get (no persistence)");
            for (name, rps, p50, p99) in &rows {
                println!("{name:<28} {rps:>12.0} {p50:>10.3} {p99:>10.3}");
            }
            let find = |n: &str| rows.iter().find(|r| r.0 == n).map(|r| r.1);
            if let (Some(set), Some(get)) = (find("SET"), find("GET")) {
                println!(
                    "\nratio unisondb/redis: PUT/SET {:.3}, GET/GET {:.3}",
                    results[0].rps / set,
                    results[1].rps / get
                );
            }
        }
        _ => println!("\nredis-server/redis-benchmark not installed: no Redis comparison"),
    }
    drop(node);
    Ok(())
}
