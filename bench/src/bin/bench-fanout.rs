//! `bench-fanout`: replication fan-out and hop latency with real `unisondb` processes on 127.0.0.1.
//!
//! * `bench-fanout fanout --relayers 1,10,100 --rate 10000 --secs 30 --conns 8`: one hub process and N
//!   relayer processes following it. Several HTTP/1.1 keep-alive connections write 1 KiB KV values to
//!   the hub at a paced offered rate; one thread holds a ZeroMQ SUB socket on every relayer's notify
//!   PUB and timestamps each LSN as it arrives. Per LSN, lag = (arrival on the LAST relayer) − (client
//!   sent the PUT). Prints p50/p99/max lag, hub commit latency (PUT sent → response), achieved write
//!   rate and VmRSS of the relayer processes.
//! * `bench-fanout redis --samples 3000`: one write in flight. Redis primary → replica → replica of the
//!   replica with keyspace notifications on the replicas (SET on the primary → `__keyevent@0__:set` on
//!   replica 1 / replica 2) against UnisonDB hub → relayer 1 → relayer 2 (HTTP PUT on the hub →
//!   ZeroMQ notification on relayer 1 / relayer 2), measured by the same client in the same run.
//!
//! The `unisondb` binary: `--bin`, else `$UNISONDB_BIN`, else the one next to this executable (build
//! both with `--release`; see docs/BENCHMARKS.md). HTTP goes through reqwest, Redis through the `redis`
//! crate.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::{Parser, ValueEnum};
use unisondb_bench::client::{lsn_of, HttpClient};
use unisondb_bench::locate::unisondb_bin;
use unisondb_bench::process::{Fsync, Node, NodeSpec, RedisServer, RedisSpec};
use unisondb_bench::stats::summarize;

/// The namespace every node serves and the client writes to.
const NS: &str = "bench";

/// Replication fan-out and hop latency with real `unisondb` processes on 127.0.0.1.
#[derive(Parser, Debug)]
#[command(name = "bench-fanout")]
struct Args {
    /// `fanout`: one hub and N relayer processes under paced load; `redis`: hop latency against Redis.
    #[arg(value_enum)]
    mode: Mode,
    /// Relayer counts to run one after the other (fanout).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 10, 100])]
    relayers: Vec<usize>,
    /// Offered writes per second over all connections (fanout).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of load per relayer count (fanout).
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// HTTP/1.1 keep-alive connections writing to the hub (fanout).
    #[arg(long, default_value_t = 8)]
    conns: usize,
    /// Sequential samples after 100 warm-up writes (redis).
    #[arg(long, default_value_t = 3000)]
    samples: usize,
    /// `wal.fsync` of the hub (and of both relayers in `redis` mode).
    #[arg(long, value_enum, default_value_t = Fsync::Always)]
    hub_fsync: Fsync,
    /// `wal.fsync` of the relayers (fanout).
    #[arg(long, value_enum, default_value_t = Fsync::Interval)]
    relayer_fsync: Fsync,
    /// `memtable.size_bytes` of the relayers (fanout).
    #[arg(long, default_value_t = 4 << 20)]
    relayer_memtable: u64,
    /// The `unisondb` binary (default: `$UNISONDB_BIN`, else next to this executable).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Scratch directory for the nodes' data, removed at the end (default: a fresh one under $TMPDIR).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Fanout,
    Redis,
}

/// Arguments resolved to what the runs use.
struct Run {
    args: Args,
    bin: PathBuf,
    dir: PathBuf,
}

impl Run {
    fn node(&self, spec: &NodeSpec) -> Result<Node> {
        Node::spawn(&self.bin, &self.dir, spec)
    }
}

/// Node settings of a hub or relayer in these runs.
fn spec(name: &str, upstream: Option<String>, fsync: Fsync, memtable_bytes: u64) -> NodeSpec {
    NodeSpec {
        upstream,
        fsync,
        memtable_bytes,
        segment_bytes: 16 << 20,
        notify_high_water_mark: 1_000_000,
        ..NodeSpec::new(name, NS)
    }
}

fn value_body() -> Vec<u8> {
    format!(r#"{{"value":"{}"}}"#, B64.encode([0xA5u8; 1024])).into_bytes()
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

// ---------------------------------------------------------------------------------------------
// Fan-out.

/// Per-LSN arrival state, owned by the subscriber thread.
struct Arrivals {
    count: Vec<u16>,
    last_ns: Vec<u64>,
}

fn fanout(run: &Run, n: usize) -> Result<()> {
    let a = &run.args;
    let hub = run.node(&spec(&format!("n{n}-hub"), None, a.hub_fsync, 64 << 20))?;
    hub.wait_ready(Duration::from_secs(60))?;
    let mut relayers = Vec::with_capacity(n);
    for i in 0..n {
        relayers.push(run.node(&spec(
            &format!("n{n}-r{i}"),
            Some(hub.grpc_url()),
            a.relayer_fsync,
            a.relayer_memtable,
        ))?);
    }
    for r in &relayers {
        r.wait_ready(Duration::from_secs(180))?;
    }

    let t0 = Instant::now();
    let base = Arc::new(AtomicU64::new(u64::MAX));
    let seen = Arc::new(AtomicUsize::new(0));
    let complete = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let endpoints: Vec<String> = relayers
        .iter()
        .map(|r| format!("tcp://127.0.0.1:{}", r.zmq))
        .collect();
    let cap = (a.rate * a.secs * 2 + 1000) as usize;
    let sub = {
        let (base, seen, complete, stop) =
            (base.clone(), seen.clone(), complete.clone(), stop.clone());
        std::thread::spawn(move || -> Result<Arrivals> {
            let ctx = zmq::Context::new();
            let mut socks = Vec::new();
            for ep in &endpoints {
                let s = ctx.socket(zmq::SUB)?;
                s.set_rcvhwm(0)?;
                s.set_subscribe(b"bench.")?;
                s.connect(ep)?;
                socks.push(s);
            }
            let mut got_any = vec![false; socks.len()];
            let mut arr = Arrivals {
                count: vec![0; cap],
                last_ns: vec![0; cap],
            };
            let want = socks.len() as u16;
            while !stop.load(Ordering::Relaxed) {
                let mut items: Vec<zmq::PollItem> =
                    socks.iter().map(|s| s.as_poll_item(zmq::POLLIN)).collect();
                zmq::poll(&mut items, 50)?;
                let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
                drop(items);
                for (i, s) in socks.iter().enumerate() {
                    if !ready[i] {
                        continue;
                    }
                    while let Ok(parts) = s.recv_multipart(zmq::DONTWAIT) {
                        let at = t0.elapsed().as_nanos() as u64;
                        if !got_any[i] {
                            got_any[i] = true;
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                        let Some(lsn) = parts.get(1).and_then(|p| lsn_of(p)) else {
                            continue;
                        };
                        let b = base.load(Ordering::Relaxed);
                        if lsn < b || (lsn - b) as usize >= cap {
                            continue;
                        }
                        let k = (lsn - b) as usize;
                        arr.count[k] += 1;
                        arr.last_ns[k] = arr.last_ns[k].max(at);
                        if arr.count[k] == want {
                            complete.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Ok(arr)
        })
    };

    // Warm up until every SUB socket has received something (subscriptions propagated).
    let body = value_body();
    let c = HttpClient::new(hub.http)?;
    let mut w = 0;
    let warm = Instant::now();
    while seen.load(Ordering::Relaxed) < n {
        c.put_kv(NS, &format!("warm{w}"), &body)?;
        w += 1;
        if warm.elapsed() > Duration::from_secs(120) {
            bail!(
                "only {} of {n} subscribers saw a message",
                seen.load(Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let last_warm = c.put_kv(NS, "warm-last", &body)?;
    base.store(last_warm + 1, Ordering::Relaxed);

    // Load: `conns` threads, each paced at rate / conns.
    let per_conn = Duration::from_secs_f64(a.conns as f64 / a.rate as f64);
    let load = Duration::from_secs(a.secs);
    let start = Instant::now();
    let workers: Vec<_> = (0..a.conns)
        .map(|ci| {
            let body = body.clone();
            let port = hub.http;
            std::thread::spawn(move || -> Result<Vec<(u64, u64, u64)>> {
                let c = HttpClient::new(port)?;
                let mut out = Vec::new();
                let mut k = 0u64;
                loop {
                    let due = start + per_conn.mul_f64(k as f64);
                    // Stop at the deadline even when behind schedule (offered > sustainable).
                    if due.duration_since(start) >= load || start.elapsed() >= load {
                        return Ok(out);
                    }
                    if let Some(d) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    let sent = t0.elapsed().as_nanos() as u64;
                    let lsn = c.put_kv(NS, &format!("c{ci}-{k}"), &body)?;
                    out.push((lsn, sent, t0.elapsed().as_nanos() as u64));
                    k += 1;
                }
            })
        })
        .collect();
    let mut writes = Vec::new();
    for wk in workers {
        writes.extend(
            wk.join()
                .map_err(|_| anyhow::anyhow!("writer panicked"))??,
        );
    }
    let load_secs = start.elapsed().as_secs_f64();
    let drain = Instant::now();
    while complete.load(Ordering::Relaxed) < writes.len() as u64
        && drain.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let drain_secs = drain.elapsed().as_secs_f64();
    let rss: Vec<(u64, u64)> = relayers.iter().map(|r| r.rss_kib()).collect();
    let hub_rss = hub.rss_kib();
    stop.store(true, Ordering::Relaxed);
    let arr = sub
        .join()
        .map_err(|_| anyhow::anyhow!("subscriber panicked"))??;

    let b = base.load(Ordering::Relaxed);
    let mut lag = Vec::new();
    let mut commit = Vec::new();
    let mut missing = 0;
    for &(lsn, sent, acked) in &writes {
        commit.push((acked - sent) / 1000);
        let k = (lsn - b) as usize;
        if k < cap && arr.count[k] as usize == n {
            lag.push(arr.last_ns[k].saturating_sub(sent) / 1000);
        } else {
            missing += 1;
        }
    }
    let c = summarize(commit);
    let l = summarize(lag);
    let mib = |v: &[u64]| {
        (
            v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0,
            *v.iter().max().unwrap_or(&0) as f64 / 1024.0,
        )
    };
    let (rss_mean, rss_max) = mib(&rss.iter().map(|r| r.0).collect::<Vec<_>>());
    let (anon_mean, anon_max) = mib(&rss.iter().map(|r| r.1).collect::<Vec<_>>());
    println!(
        "| {n} | {} | {:.0} | {} | {} / {} | {} | {} | {} | {missing} | {:.1} | {rss_mean:.1} / {rss_max:.1} | {anon_mean:.1} / {anon_max:.1} | {:.1} |",
        a.rate,
        writes.len() as f64 / load_secs,
        writes.len(),
        ms(c.p50),
        ms(c.p99),
        ms(l.p50),
        ms(l.p99),
        ms(l.max),
        drain_secs,
        hub_rss.0 as f64 / 1024.0,
    );
    drop(relayers);
    drop(hub);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Redis comparison.

/// A plain-TCP Redis connection with TCP_NODELAY (the `redis` crate's default is Nagle on).
fn redis_conn(url: &str) -> Result<redis::Connection> {
    use redis::IntoConnectionInfo;
    let info = url
        .into_connection_info()?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    Ok(redis::Client::open(info)?.get_connection()?)
}

/// Waits until a replica reports `master_link_status:up`.
fn wait_linked(r: &RedisServer) -> Result<()> {
    let t = Instant::now();
    loop {
        let mut c = redis_conn(&r.url())?;
        let info: String = redis::cmd("INFO").arg("replication").query(&mut c)?;
        if info.contains("master_link_status:up") {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("redis replica {} never linked\n{}", r.name, r.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Subscriber thread: `__keyevent@0__:set` on a Redis replica → (key, arrival). Returns once the
/// subscription is in place.
fn redis_sub(url: &str) -> Result<mpsc::Receiver<(Vec<u8>, Instant)>> {
    let mut con = redis_conn(url)?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ps = con.as_pubsub();
        let subscribed = ps.subscribe("__keyevent@0__:set");
        let ok = subscribed.is_ok();
        let _ = ready_tx.send(subscribed);
        if !ok {
            return;
        }
        // Ends when the server goes away (the connection errors) or the receiver is dropped.
        while let Ok(msg) = ps.get_message() {
            let at = Instant::now();
            if tx.send((msg.get_payload_bytes().to_vec(), at)).is_err() {
                return;
            }
        }
    });
    ready_rx
        .recv()
        .context("subscriber thread ended")?
        .context("SUBSCRIBE")?;
    Ok(rx)
}

/// Subscriber thread: a relayer's ZeroMQ notifications → (LSN, arrival).
fn zmq_sub(port: u16) -> mpsc::Receiver<(u64, Instant)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || -> Result<()> {
        let ctx = zmq::Context::new();
        let s = ctx.socket(zmq::SUB)?;
        s.set_subscribe(b"bench.")?;
        s.set_rcvtimeo(30_000)?;
        s.connect(&format!("tcp://127.0.0.1:{port}"))?;
        loop {
            let parts = s.recv_multipart(0)?;
            let at = Instant::now();
            if let Some(lsn) = parts.get(1).and_then(|p| lsn_of(p)) {
                if tx.send((lsn, at)).is_err() {
                    return Ok(());
                }
            }
        }
    });
    rx
}

fn wait_for<K: PartialEq>(rx: &mpsc::Receiver<(K, Instant)>, want: &K) -> Result<Instant> {
    loop {
        let (k, at) = rx
            .recv_timeout(Duration::from_secs(10))
            .context("event lost")?;
        if &k == want {
            return Ok(at);
        }
    }
}

fn row(name: &str, v: &[u64], base: Option<u64>) {
    let s = summarize(v.to_vec());
    let ratio = base.map_or(String::from("1.00"), |b| {
        format!("{:.2}", s.p50 as f64 / b.max(1) as f64)
    });
    println!(
        "| {name} | {} | {} | {} | {} | {ratio} |",
        v.len(),
        s.p50,
        s.p99,
        s.max
    );
}

fn redis_compare(run: &Run) -> Result<()> {
    let a = &run.args;
    let value = [0xA5u8; 1024];
    // Redis: primary → r1 → r2.
    let notify = |replica_of| RedisSpec {
        replica_of,
        keyspace_events: true,
    };
    let p = RedisServer::spawn(&run.dir, "redis-p", &notify(None))?;
    let r1 = RedisServer::spawn(&run.dir, "redis-r1", &notify(Some(p.port)))?;
    let r2 = RedisServer::spawn(&run.dir, "redis-r2", &notify(Some(r1.port)))?;
    wait_linked(&r1)?;
    wait_linked(&r2)?;
    let (e1, e2) = (redis_sub(&r1.url())?, redis_sub(&r2.url())?);
    let mut pc = redis_conn(&p.url())?;
    let (mut rd1, mut rd2) = (Vec::new(), Vec::new());
    for i in 0..(a.samples + 100) {
        let key = format!("k{i:08}").into_bytes();
        let t = Instant::now();
        redis::cmd("SET")
            .arg(&key)
            .arg(&value[..])
            .query::<()>(&mut pc)?;
        let a1 = wait_for(&e1, &key)?;
        let a2 = wait_for(&e2, &key)?;
        if i >= 100 {
            rd1.push((a1 - t).as_micros() as u64);
            rd2.push((a2 - t).as_micros() as u64);
        }
    }
    drop((p, r1, r2));

    // UnisonDB: hub → relayer 1 → relayer 2, relayers with the same settings as the hub.
    let hub = run.node(&spec("u-hub", None, a.hub_fsync, 64 << 20))?;
    hub.wait_ready(Duration::from_secs(60))?;
    let u1 = run.node(&spec("u-r1", Some(hub.grpc_url()), a.hub_fsync, 64 << 20))?;
    u1.wait_ready(Duration::from_secs(60))?;
    let u2 = run.node(&spec("u-r2", Some(u1.grpc_url()), a.hub_fsync, 64 << 20))?;
    u2.wait_ready(Duration::from_secs(60))?;
    let (z1, z2) = (zmq_sub(u1.zmq), zmq_sub(u2.zmq));
    let body = value_body();
    let hc = HttpClient::new(hub.http)?;
    // Warm up until both subscriptions deliver.
    let mut w = 0;
    loop {
        let lsn = hc.put_kv(NS, &format!("warm{w}"), &body)?;
        w += 1;
        let ok1 = z1.recv_timeout(Duration::from_millis(200)).is_ok();
        let ok2 = z2.recv_timeout(Duration::from_millis(200)).is_ok();
        if ok1 && ok2 {
            let _ = (wait_for(&z1, &lsn), wait_for(&z2, &lsn));
            break;
        }
        if w > 300 {
            bail!("no notifications from the relayers");
        }
    }
    while z1.try_recv().is_ok() || z2.try_recv().is_ok() {}
    let (mut u_1, mut u_2) = (Vec::new(), Vec::new());
    for i in 0..(a.samples + 100) {
        let t = Instant::now();
        let lsn = hc.put_kv(NS, &format!("k{i:08}"), &body)?;
        let a1 = wait_for(&z1, &lsn)?;
        let a2 = wait_for(&z2, &lsn)?;
        if i >= 100 {
            u_1.push((a1 - t).as_micros() as u64);
            u_2.push((a2 - t).as_micros() as u64);
        }
    }
    println!(
        "\n1 KiB values, one write in flight, {} samples (after 100 warm-up), UnisonDB wal.fsync = {} on all 3 nodes, Redis without persistence\n",
        a.samples, a.hub_fsync
    );
    println!("| path | samples | p50 µs | p99 µs | max µs | p50 ÷ Redis p50 |");
    println!("|---|---|---|---|---|---|");
    let (b1, b2) = (summarize(rd1.clone()).p50, summarize(rd2.clone()).p50);
    row("Redis SET → keyspace event on replica (1 hop)", &rd1, None);
    row(
        "Redis SET → keyspace event on replica of replica (2 hops)",
        &rd2,
        None,
    );
    row(
        "UnisonDB PUT → ZeroMQ event on relayer (1 hop)",
        &u_1,
        Some(b1),
    );
    row(
        "UnisonDB PUT → ZeroMQ event on relayer of relayer (2 hops)",
        &u_2,
        Some(b2),
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => unisondb_bin()?,
    };
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("bench-fanout-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    let run = Run { args, bin, dir };
    let a = &run.args;
    let res = match a.mode {
        Mode::Fanout => {
            println!(
                "\nhub wal.fsync = {}, relayers wal.fsync = {}, relayer memtable = {} B, {} connections, {} s, 1 KiB values\n",
                a.hub_fsync, a.relayer_fsync, a.relayer_memtable, a.conns, a.secs
            );
            println!("| relayers | offered w/s | achieved w/s | writes | hub commit p50 / p99 ms | lag p50 ms | lag p99 ms | lag max ms | not on all | drain s | relayer VmRSS mean / max MiB | relayer RssAnon mean / max MiB | hub VmRSS MiB |");
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            a.relayers.iter().try_for_each(|&n| fanout(&run, n))
        }
        Mode::Redis => redis_compare(&run),
    };
    let _ = std::fs::remove_dir_all(&run.dir);
    res
}
