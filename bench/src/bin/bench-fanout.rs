//! `bench-fanout`: replication fan-out and hop latency with real `unisondb` processes on 127.0.0.1.
//!
//! * `bench-fanout fanout --relayers 1,10,100 --rate 1000 --secs 20 --conns 8`: for each replica
//!   count, one UnisonDB hub with N relayer processes, then (the anchor, `--systems`) one Redis primary
//!   with N replica processes (keyspace events on). The same paced writers (1 KiB values; HTTP PUT on
//!   the hub, SET on Redis) and the same lag definition: write sent → change event received from the
//!   LAST replica (ZeroMQ from every relayer; `__keyevent@0__:set` from every Redis replica). Prints
//!   lag p50/p99/max, commit latency, achieved rate, and CPU time from `/proc/PID/stat` of every server
//!   process: idle (`--idle-secs` with nothing written, as % of one core), per write on the primary
//!   and per record on each replica during the load. `--tree K`: replicas beyond the first K follow
//!   one of those K (two levels).
//! * `bench-fanout redis --samples 3000`: one write in flight. Redis primary → replica → replica of the
//!   replica with keyspace notifications on the replicas (SET on the primary → `__keyevent@0__:set` on
//!   replica 1 / replica 2) against UnisonDB hub → relayer 1 → relayer 2 (HTTP PUT on the hub →
//!   ZeroMQ notification on relayer 1 / relayer 2), measured by the same client in the same run.
//!
//! The `unisondb` binary: `--bin`, else `$UNISONDB_BIN`, else the one next to this executable (build
//! both with `--release`; see docs/BENCHMARKS.md). HTTP goes through reqwest, Redis through the `redis`
//! crate.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
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
    /// Systems to run at each replica count (fanout): UnisonDB relayers and/or Redis replicas.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [System::Unisondb, System::Redis])]
    systems: Vec<System>,
    /// Two-level tree (fanout): the first K replicas follow the primary, the rest follow them.
    #[arg(long, default_value_t = 0)]
    tree: usize,
    /// Seconds of idleness measured before the load (fanout).
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum System {
    Unisondb,
    Redis,
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

/// Arrivals per write index, filled by any number of subscriber threads.
struct Arrivals {
    count: Vec<AtomicU16>,
    last_ns: Vec<AtomicU64>,
    /// Writes seen on every replica.
    complete: AtomicU64,
    /// Subscribers that have received anything (warm-up ends when all have).
    seen: AtomicUsize,
    want: u16,
}

impl Arrivals {
    fn new(cap: usize, want: usize) -> Arrivals {
        Arrivals {
            count: (0..cap).map(|_| AtomicU16::new(0)).collect(),
            last_ns: (0..cap).map(|_| AtomicU64::new(0)).collect(),
            complete: AtomicU64::new(0),
            seen: AtomicUsize::new(0),
            want: want as u16,
        }
    }

    /// One replica reported write `k` at `at` ns (the latest arrival is stored before the count
    /// completes, so a complete write's time is final).
    fn record(&self, k: usize, at: u64) {
        let Some(last) = self.last_ns.get(k) else {
            return;
        };
        last.fetch_max(at, Ordering::Relaxed);
        if self.count[k].fetch_add(1, Ordering::AcqRel) + 1 == self.want {
            self.complete.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The replicated system under test: a UnisonDB hub with relayer processes, or a Redis primary
/// with replica processes (keyspace events on), driven by the same load and measured the same way.
enum Topology {
    Unison {
        hub: Node,
        relayers: Vec<Node>,
    },
    Redis {
        primary: RedisServer,
        replicas: Vec<RedisServer>,
    },
}

impl Topology {
    fn start(run: &Run, system: System, n: usize) -> Result<Topology> {
        let a = &run.args;
        // Level 1 follows the primary; with --tree K, replica i >= K follows replica i % K.
        let parent = |i: usize| (a.tree > 0 && i >= a.tree).then(|| i % a.tree);
        match system {
            System::Unisondb => {
                let hub = run.node(&spec(&format!("n{n}-hub"), None, a.hub_fsync, 64 << 20))?;
                hub.wait_ready(Duration::from_secs(60))?;
                let mut relayers: Vec<Node> = Vec::with_capacity(n);
                for i in 0..n {
                    let up = match parent(i) {
                        Some(p) => relayers[p].grpc_url(),
                        None => hub.grpc_url(),
                    };
                    let r = run.node(&spec(
                        &format!("n{n}-r{i}"),
                        Some(up),
                        a.relayer_fsync,
                        a.relayer_memtable,
                    ))?;
                    if a.tree > 0 && i < a.tree {
                        r.wait_ready(Duration::from_secs(180))?;
                    }
                    relayers.push(r);
                }
                for r in &relayers {
                    r.wait_ready(Duration::from_secs(300))?;
                }
                Ok(Topology::Unison { hub, relayers })
            }
            System::Redis => {
                let spec = |replica_of| RedisSpec {
                    replica_of,
                    keyspace_events: true,
                };
                let primary = RedisServer::spawn(&run.dir, &format!("n{n}-redis-p"), &spec(None))?;
                let mut replicas: Vec<RedisServer> = Vec::with_capacity(n);
                for i in 0..n {
                    let up = match parent(i) {
                        Some(p) => replicas[p].port,
                        None => primary.port,
                    };
                    let r =
                        RedisServer::spawn(&run.dir, &format!("n{n}-redis-r{i}"), &spec(Some(up)))?;
                    replicas.push(r);
                }
                for r in &replicas {
                    wait_linked(r)?;
                }
                Ok(Topology::Redis { primary, replicas })
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Topology::Unison { .. } => "unisondb",
            Topology::Redis { .. } => "redis",
        }
    }

    /// CPU µs so far of (primary, each replica).
    fn cpu(&self) -> (u64, Vec<u64>) {
        match self {
            Topology::Unison { hub, relayers } => {
                (hub.cpu_us(), relayers.iter().map(Node::cpu_us).collect())
            }
            Topology::Redis { primary, replicas } => (
                primary.cpu_us(),
                replicas.iter().map(RedisServer::cpu_us).collect(),
            ),
        }
    }

    /// (VmRSS, RssAnon) KiB of each replica.
    fn replica_rss(&self) -> Vec<(u64, u64)> {
        match self {
            Topology::Unison { relayers, .. } => relayers.iter().map(Node::rss_kib).collect(),
            Topology::Redis { replicas, .. } => {
                replicas.iter().map(|r| r.child.rss_kib()).collect()
            }
        }
    }

    /// Starts the subscriber threads: every replica's change events → `arr`, by write index
    /// (UnisonDB: LSN − base; Redis: the sequence number in the key).
    fn subscribe(
        &self,
        arr: Arc<Arrivals>,
        base: Arc<AtomicU64>,
        t0: Instant,
        stop: Arc<AtomicBool>,
    ) -> Result<Vec<std::thread::JoinHandle<Result<()>>>> {
        match self {
            Topology::Unison { relayers, .. } => {
                let endpoints: Vec<String> = relayers
                    .iter()
                    .map(|r| format!("tcp://127.0.0.1:{}", r.zmq))
                    .collect();
                Ok(vec![std::thread::spawn(move || {
                    zmq_collect(&endpoints, &arr, &base, t0, &stop)
                })])
            }
            Topology::Redis { replicas, .. } => replicas
                .iter()
                .map(|r| {
                    let mut con = redis_conn(&r.url())?;
                    con.set_read_timeout(Some(Duration::from_millis(200)))?;
                    let (arr, stop) = (arr.clone(), stop.clone());
                    Ok(std::thread::spawn(move || -> Result<()> {
                        let mut ps = con.as_pubsub();
                        ps.subscribe("__keyevent@0__:set")?;
                        let mut first = true;
                        while !stop.load(Ordering::Relaxed) {
                            let Ok(msg) = ps.get_message() else {
                                continue;
                            };
                            let at = t0.elapsed().as_nanos() as u64;
                            if first {
                                first = false;
                                arr.seen.fetch_add(1, Ordering::Relaxed);
                            }
                            let key = msg.get_payload_bytes();
                            if let Some(k) = key
                                .strip_prefix(b"s")
                                .and_then(|d| std::str::from_utf8(d).ok())
                                .and_then(|d| d.parse::<usize>().ok())
                            {
                                arr.record(k, at);
                            }
                        }
                        Ok(())
                    }))
                })
                .collect(),
        }
    }
}

/// One ZeroMQ SUB socket per relayer, polled by one thread.
fn zmq_collect(
    endpoints: &[String],
    arr: &Arrivals,
    base: &AtomicU64,
    t0: Instant,
    stop: &AtomicBool,
) -> Result<()> {
    let ctx = zmq::Context::new();
    let mut socks = Vec::new();
    for ep in endpoints {
        let s = ctx.socket(zmq::SUB)?;
        s.set_rcvhwm(0)?;
        s.set_subscribe(b"bench.")?;
        s.connect(ep)?;
        socks.push(s);
    }
    let mut got_any = vec![false; socks.len()];
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
                    arr.seen.fetch_add(1, Ordering::Relaxed);
                }
                let Some(lsn) = parts.get(1).and_then(|p| lsn_of(p)) else {
                    continue;
                };
                let b = base.load(Ordering::Relaxed);
                if lsn >= b {
                    arr.record((lsn - b) as usize, at);
                }
            }
        }
    }
    Ok(())
}

/// A writer's connection to the primary: returns the write index of each write.
enum Writer {
    Unison(HttpClient, Arc<AtomicU64>),
    Redis(redis::Connection, Arc<AtomicU64>),
}

impl Writer {
    fn connect(t: &Topology, base: &Arc<AtomicU64>, seq: &Arc<AtomicU64>) -> Result<Writer> {
        Ok(match t {
            Topology::Unison { hub, .. } => {
                Writer::Unison(HttpClient::new(hub.http)?, base.clone())
            }
            Topology::Redis { primary, .. } => {
                Writer::Redis(redis_conn(&primary.url())?, seq.clone())
            }
        })
    }

    /// Writes one 1 KiB value; `counted` writes get an index, warm-up writes do not.
    fn write(&mut self, tag: &str, counted: bool) -> Result<Option<usize>> {
        match self {
            Writer::Unison(c, base) => {
                let lsn = c.put_kv(NS, tag, &value_body())?;
                let b = base.load(Ordering::Relaxed);
                Ok((counted && lsn >= b).then(|| (lsn - b) as usize))
            }
            Writer::Redis(c, seq) => {
                let key = if counted {
                    let k = seq.fetch_add(1, Ordering::Relaxed);
                    (format!("s{k}"), Some(k as usize))
                } else {
                    (format!("w{tag}"), None)
                };
                redis::cmd("SET")
                    .arg(&key.0)
                    .arg(&[0xA5u8; 1024][..])
                    .query::<()>(c)?;
                Ok(key.1)
            }
        }
    }
}

fn fanout(run: &Run, system: System, n: usize) -> Result<()> {
    let a = &run.args;
    let topo = Topology::start(run, system, n)?;
    let t0 = Instant::now();
    let base = Arc::new(AtomicU64::new(u64::MAX));
    let seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cap = (a.rate * a.secs * 2 + 1000) as usize;
    let arr = Arc::new(Arrivals::new(cap, n));
    let subs = topo.subscribe(arr.clone(), base.clone(), t0, stop.clone())?;

    // Warm up until every subscriber has received something (subscriptions propagated).
    let mut w = Writer::connect(&topo, &base, &seq)?;
    let warm = Instant::now();
    let mut i = 0;
    while arr.seen.load(Ordering::Relaxed) < n {
        w.write(&format!("warm{i}"), false)?;
        i += 1;
        if warm.elapsed() > Duration::from_secs(180) {
            bail!(
                "only {} of {n} subscribers saw a message",
                arr.seen.load(Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Topology::Unison { hub, .. } = &topo {
        let last = HttpClient::new(hub.http)?.put_kv(NS, "warm-last", &value_body())?;
        base.store(last + 1, Ordering::Relaxed);
    }
    // Idle: nothing written for idle_secs (after the warm-up's records settled).
    std::thread::sleep(Duration::from_secs(2));
    let (ip0, ir0) = topo.cpu();
    std::thread::sleep(Duration::from_secs(a.idle_secs));
    let (ip1, ir1) = topo.cpu();
    let idle_core = |d: u64| d as f64 / (a.idle_secs as f64 * 1e6) * 100.0;
    let idle_replicas: u64 = ir1.iter().zip(&ir0).map(|(x, y)| x - y).sum();

    // Load: `conns` threads, each paced at rate / conns.
    let (p0, r0) = topo.cpu();
    let per_conn = Duration::from_secs_f64(a.conns as f64 / a.rate as f64);
    let load = Duration::from_secs(a.secs);
    let start = Instant::now();
    let mut writes = Vec::new();
    std::thread::scope(|sc| -> Result<()> {
        let workers: Vec<_> = (0..a.conns)
            .map(|ci| {
                let mut w = Writer::connect(&topo, &base, &seq);
                sc.spawn(move || -> Result<Vec<(usize, u64, u64)>> {
                    let w = w.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
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
                        if let Some(idx) = w.write(&format!("c{ci}-{k}"), true)? {
                            out.push((idx, sent, t0.elapsed().as_nanos() as u64));
                        }
                        k += 1;
                    }
                })
            })
            .collect();
        for wk in workers {
            writes.extend(
                wk.join()
                    .map_err(|_| anyhow::anyhow!("writer panicked"))??,
            );
        }
        Ok(())
    })?;
    let load_secs = start.elapsed().as_secs_f64();
    let drain = Instant::now();
    while arr.complete.load(Ordering::Relaxed) < writes.len() as u64
        && drain.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let drain_secs = drain.elapsed().as_secs_f64();
    let (p1, r1) = topo.cpu();
    let rss = topo.replica_rss();
    stop.store(true, Ordering::Relaxed);
    for s in subs {
        s.join()
            .map_err(|_| anyhow::anyhow!("subscriber panicked"))??;
    }

    let mut lag = Vec::new();
    let mut commit = Vec::new();
    let mut missing = 0;
    for &(k, sent, acked) in &writes {
        commit.push((acked - sent) / 1000);
        if k < cap && arr.count[k].load(Ordering::Relaxed) as usize == n {
            lag.push(arr.last_ns[k].load(Ordering::Relaxed).saturating_sub(sent) / 1000);
        } else {
            missing += 1;
        }
    }
    let c = summarize(commit);
    let l = summarize(lag);
    let recs = writes.len().max(1) as f64;
    let replica_us: Vec<u64> = r1.iter().zip(&r0).map(|(x, y)| x - y).collect();
    let replica_mean = replica_us.iter().sum::<u64>() as f64 / n.max(1) as f64;
    let rss_mean = rss.iter().map(|r| r.0).sum::<u64>() as f64 / n.max(1) as f64 / 1024.0;
    println!(
        "| {} | {n} | {} | {:.0} | {} | {} / {} | {} | {} | {} | {missing} | {:.1} | {:.2} | {:.2} | {:.0} | {:.1} | {:.2} | {rss_mean:.1} |",
        topo.name(),
        a.rate,
        writes.len() as f64 / load_secs,
        writes.len(),
        ms(c.p50),
        ms(c.p99),
        ms(l.p50),
        ms(l.p99),
        ms(l.max),
        drain_secs,
        idle_core(ip1 - ip0),
        idle_core(idle_replicas),
        (p1 - p0) as f64 / recs,
        replica_mean / recs,
        (p1 - p0 + replica_us.iter().sum::<u64>()) as f64 / 1e6,
    );
    stop.store(true, Ordering::Relaxed);
    drop(topo);
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
    if args.relayers.iter().sum::<usize>() > 250 {
        // Three ports per relayer, more than one process's block of 1000.
        unisondb_testkit::use_whole_port_range();
    }
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
            if a.tree > 0 {
                println!("two-level tree: the first {} replicas follow the primary, replica i follows replica i % {}\n", a.tree, a.tree);
            }
            println!("| system | replicas | offered w/s | achieved w/s | writes | commit p50 / p99 ms | lag p50 ms | lag p99 ms | lag max ms | not on all | drain s | idle primary % core | idle replicas % core (sum) | primary CPU µs / write | CPU µs / record / replica | server CPU s (load + drain) | replica VmRSS mean MiB |");
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            a.relayers
                .iter()
                .try_for_each(|&n| a.systems.iter().try_for_each(|&s| fanout(&run, s, n)))
        }
        Mode::Redis => redis_compare(&run),
    };
    let _ = std::fs::remove_dir_all(&run.dir);
    res
}
