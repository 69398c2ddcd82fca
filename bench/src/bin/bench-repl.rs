//! `bench-repl`: replication and notification latency on loopback, real engine and real gRPC/ZeroMQ.
//!
//! 1. write on the hub → visible on a relayer, 1 hop and 2 hops (hub → r1 → r2), 1 KiB values;
//! 2. commit returned → ZeroMQ subscriber received the notification, against raw PUB → SUB with the
//!    same `zmq` crate, same transport and a payload of the same size.
//!
//! Usage: `bench-repl [--samples N] [--fsync always|never] [--dir PATH]` (`--help`). Prints a Markdown table.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use unisondb::db::Database;
use unisondb::engine::{EngineOptions, FsyncPolicy, Namespace};
use unisondb::notify::{self, NotifyConfig};
use unisondb::replication::relayer::{follow, FollowConfig};
use unisondb::replication::run::serve_on;
use unisondb::replication::{AckRegistry, ReplicationState};
use unisondb::storage::batch::WriteBatch;
use unisondb::storage::keys;
use unisondb_bench::stats::summarize;

/// Replication and notification latency on loopback (prints a Markdown table).
#[derive(Parser, Debug)]
#[command(name = "bench-repl")]
struct Args {
    /// Sequential samples per measurement.
    #[arg(long, default_value_t = 3000)]
    samples: usize,
    /// fsync policy of all three namespaces.
    #[arg(long, value_enum, default_value_t = Fsync::Always)]
    fsync: Fsync,
    /// Where the namespaces live (default: a fresh dir under $TMPDIR, removed after).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// The fsync policies this bench compares.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Fsync {
    Always,
    Never,
}

impl From<Fsync> for FsyncPolicy {
    fn from(f: Fsync) -> FsyncPolicy {
        match f {
            Fsync::Always => FsyncPolicy::Always,
            Fsync::Never => FsyncPolicy::Never,
        }
    }
}

fn row(name: &str, v: Vec<Duration>) {
    let n = v.len();
    let s = summarize(v);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "| {name} | {n} | {:.0} | {:.0} | {:.0} |",
        us(s.p50),
        us(s.p99),
        us(s.max)
    );
}

async fn wait_lsn(rx: &mut watch::Receiver<u64>, lsn: u64) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v >= lsn))
        .await
        .context("replica did not catch up in 10 s")?
        .context("namespace closed")?;
    Ok(())
}

fn put(ns: &Namespace, i: usize, value: &[u8]) -> Result<u64> {
    let mut b = WriteBatch::new();
    b.put(
        keys::kv_key(format!("bench{i:08}").as_bytes()),
        value.to_vec(),
    );
    Ok(ns.write(b)?.lsn)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = Args::parse();
    let fsync = FsyncPolicy::from(a.fsync);
    let scratch = std::env::temp_dir().join(format!("bench-repl-{}", std::process::id()));
    let base = a.dir.clone().unwrap_or_else(|| scratch.clone());
    let opts = EngineOptions {
        fsync,
        ..EngineOptions::default()
    };
    let names = ["bench".to_string()];
    let dbs: Vec<Database> = (0..3)
        .map(|i| Database::open(&base.join(format!("node{i}")), &names, &opts))
        .collect::<Result<_, _>>()?;
    let nss: Vec<Namespace> = dbs
        .iter()
        .map(|d| d.get("bench").cloned())
        .collect::<Option<_>>()
        .context("namespace")?;
    let stop = CancellationToken::new();
    let stop_rx = stop.clone();
    // Chain: node0 (hub) → node1 → node2.
    for hop in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(serve_on(
            listener,
            dbs[hop].clone(),
            AckRegistry::new(),
            None,
            stop_rx.clone(),
        ));
        tokio::spawn(follow(
            nss[hop + 1].clone(),
            FollowConfig::new(format!("http://{addr}"), format!("bench-r{}", hop + 1)),
            ReplicationState::new(),
            stop_rx.clone(),
        ));
    }
    let value = vec![0xA5u8; 1024];
    // Warm up the connections.
    for i in 0..50 {
        let lsn = put(&nss[0], i, &value)?;
        wait_lsn(&mut nss[2].subscribe(), lsn).await?;
    }

    let (mut commit, mut hop1, mut hop2) = (Vec::new(), Vec::new(), Vec::new());
    let (mut r1, mut r2) = (nss[1].subscribe(), nss[2].subscribe());
    for i in 0..a.samples {
        let t0 = Instant::now();
        let hub = nss[0].clone();
        let v = value.clone();
        let lsn = tokio::task::spawn_blocking(move || put(&hub, 100 + i, &v)).await??;
        commit.push(t0.elapsed());
        wait_lsn(&mut r1, lsn).await?;
        hop1.push(t0.elapsed());
        wait_lsn(&mut r2, lsn).await?;
        hop2.push(t0.elapsed());
    }
    println!(
        "\nfsync = {:?}, {} samples, 1 KiB values, loopback, 2 tokio workers\n",
        fsync, a.samples
    );
    println!("| path | samples | p50 µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|");
    row("hub write committed (for reference)", commit);
    row("hub write → visible on relayer (1 hop)", hop1);
    row("hub write → visible on relayer (2 hops)", hop2);

    // Notifications: commit → SUB receive.
    let cfg = NotifyConfig {
        bind: "tcp://127.0.0.1:0".into(),
        high_water_mark: 100_000,
        namespaces: Vec::new(),
    };
    let publisher = notify::start(&dbs[0], &cfg, stop_rx.clone())?;
    let endpoint = publisher.endpoint().to_string();
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    let sub_thread = std::thread::spawn(move || -> Result<()> {
        let ctx = zmq::Context::new();
        let sub = ctx.socket(zmq::SUB)?;
        sub.set_subscribe(b"bench.")?;
        sub.set_rcvtimeo(10_000)?;
        sub.connect(&endpoint)?;
        loop {
            let parts = match sub.recv_multipart(0) {
                Ok(p) => p,
                Err(zmq::Error::EAGAIN) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let at = Instant::now();
            let v: serde_json::Value = serde_json::from_slice(&parts[1])?;
            if tx.send((v["lsn"].as_u64().unwrap_or(0), at)).is_err() {
                return Ok(());
            }
        }
    });
    // Wait for the subscription to reach the publisher.
    let mut i = 1_000_000;
    loop {
        let hub = nss[0].clone();
        let v = value.clone();
        let lsn = tokio::task::spawn_blocking(move || put(&hub, i, &v)).await??;
        i += 1;
        if let Ok((got, _)) = rx.recv_timeout(Duration::from_millis(200)) {
            if got >= lsn {
                break;
            }
        }
    }
    while rx.try_recv().is_ok() {}
    let mut notify_lat = Vec::new();
    for n in 0..a.samples {
        let hub = nss[0].clone();
        let v = value.clone();
        let (lsn, committed) = tokio::task::spawn_blocking(move || {
            put(&hub, 2_000_000 + n, &v).map(|l| (l, Instant::now()))
        })
        .await??;
        loop {
            let (got, at) = rx
                .recv_timeout(Duration::from_secs(10))
                .context("notification lost")?;
            if got == lsn {
                notify_lat.push(at.saturating_duration_since(committed));
                break;
            }
        }
    }
    drop(rx);

    // Raw PUB → SUB with the same crate and a same-sized payload.
    let raw = tokio::task::spawn_blocking(move || -> Result<Vec<Duration>> {
        let ctx = zmq::Context::new();
        let publ = ctx.socket(zmq::PUB)?;
        publ.bind("tcp://127.0.0.1:0")?;
        let ep = publ.get_last_endpoint()?.map_err(|_| anyhow::anyhow!("endpoint"))?;
        let sub = ctx.socket(zmq::SUB)?;
        sub.set_subscribe(b"bench.")?;
        sub.set_rcvtimeo(1000)?;
        sub.connect(&ep)?;
        let payload = br#"{"namespace":"bench","model":"kv","op":"put","key":"YmVuY2gwMDAwMDAwMQ==","lsn":123456,"hlc":117382904823431168}"#;
        loop {
            publ.send_multipart([&b"bench.kv"[..], payload], 0)?;
            if sub.recv_multipart(0).is_ok() {
                break;
            }
        }
        let mut out = Vec::new();
        for _ in 0..a.samples {
            let t = Instant::now();
            publ.send_multipart([&b"bench.kv"[..], payload], 0)?;
            sub.recv_multipart(0)?;
            out.push(t.elapsed());
        }
        Ok(out)
    })
    .await??;
    row(
        "commit returned → ZeroMQ SUB received (UnisonDB notify)",
        notify_lat,
    );
    row("raw PUB send → SUB received (same zmq crate)", raw);

    stop.cancel();
    let _ = sub_thread.join();
    tokio::task::spawn_blocking(move || publisher.join()).await?;
    drop((nss, dbs));
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(())
}
