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
//! The `unisondb` binary defaults to the one next to this executable (build both with `--release`).
//! HTTP and RESP are spoken by hand over `std::net::TcpStream` (reqwest is only a dev-dependency).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

struct Args {
    mode: String,
    relayers: Vec<usize>,
    rate: u64,
    secs: u64,
    conns: usize,
    samples: usize,
    hub_fsync: String,
    relayer_fsync: String,
    relayer_memtable: u64,
    bin: PathBuf,
    dir: PathBuf,
}

fn args() -> Result<Args> {
    let exe = std::env::current_exe()?;
    let mut a = Args {
        mode: String::new(),
        relayers: vec![1, 10, 100],
        rate: 10_000,
        secs: 30,
        conns: 8,
        samples: 3000,
        hub_fsync: "always".into(),
        relayer_fsync: "interval".into(),
        relayer_memtable: 4 << 20,
        bin: exe.with_file_name("unisondb"),
        dir: std::env::temp_dir().join(format!("bench-fanout-{}", std::process::id())),
    };
    let mut it = std::env::args().skip(1);
    a.mode = it
        .next()
        .context("usage: bench-fanout fanout|redis [flags]")?;
    while let Some(flag) = it.next() {
        let val = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--relayers" => {
                a.relayers = val
                    .split(',')
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()?
            }
            "--rate" => a.rate = val.parse()?,
            "--secs" => a.secs = val.parse()?,
            "--conns" => a.conns = val.parse()?,
            "--samples" => a.samples = val.parse()?,
            "--hub-fsync" => a.hub_fsync = val,
            "--relayer-fsync" => a.relayer_fsync = val,
            "--relayer-memtable" => a.relayer_memtable = val.parse()?,
            "--bin" => a.bin = val.into(),
            "--dir" => a.dir = val.into(),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// A port below the ephemeral range (32768+): with ~100 processes connecting to each other, a port
/// found free by binding :0 can be taken by an outgoing connection before the child binds it.
fn free_port() -> Result<u16> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 12_000 + (std::process::id() as usize % 20) * 1000;
    loop {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        if i >= 1000 {
            bail!("no free port left in {base}..{}", base + 1000);
        }
        let p = (base + i) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
}

/// A child process (unisondb or redis-server), SIGKILLed on drop.
struct Proc {
    name: String,
    dir: PathBuf,
    http: u16,
    grpc: u16,
    zmq: u16,
    child: Child,
}

impl Proc {
    /// (VmRSS, RssAnon) in KiB. VmRSS includes the mmap'd WAL/B+Tree pages touched (RssFile).
    fn rss_kib(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("RssAnon:"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(
    a: &Args,
    name: &str,
    upstream: Option<&str>,
    fsync: &str,
    memtable: u64,
) -> Result<Proc> {
    let dir = a.dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let (http, grpc, zmq) = (free_port()?, free_port()?, free_port()?);
    let mode = if upstream.is_some() {
        "relayer"
    } else {
        "replicator"
    };
    let mut yaml = format!(
        "server:\n  mode: {mode}\n  data_dir: {}\n  namespaces: [bench]\n\
         http:\n  listen: 127.0.0.1:{http}\ngrpc:\n  listen: 127.0.0.1:{grpc}\n\
         notify:\n  bind: tcp://127.0.0.1:{zmq}\n  high_water_mark: 1000000\n\
         wal:\n  fsync: {fsync}\n  segment_size_bytes: 16777216\n\
         memtable:\n  size_bytes: {memtable}\nlog:\n  level: warn\n",
        dir.join("data").display()
    );
    if let Some(up) = upstream {
        yaml.push_str(&format!(
            "replication:\n  upstream: {up}\n  max_lag_records: 100000000\n"
        ));
    }
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, yaml)?;
    let log = std::fs::File::create(dir.join("server.log"))?;
    let child = Command::new(&a.bin)
        .args(["server", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawn {}", a.bin.display()))?;
    Ok(Proc {
        name: name.into(),
        dir,
        http,
        grpc,
        zmq,
        child,
    })
}

// ---------------------------------------------------------------------------------------------
// Minimal HTTP/1.1 keep-alive client.

struct HttpConn {
    port: u16,
    r: BufReader<TcpStream>,
}

impl HttpConn {
    fn connect(port: u16) -> Result<HttpConn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(HttpConn {
            port,
            r: BufReader::new(s),
        })
    }

    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            self.port,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.r.get_mut().write_all(&req)?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut len = None;
        loop {
            line.clear();
            if self.r.read_line(&mut line)? == 0 {
                bail!("connection closed in headers");
            }
            if line == "\r\n" {
                break;
            }
            let l = line.to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("content-length:") {
                len = Some(v.trim().parse::<usize>()?);
            }
        }
        let mut body = vec![0; len.context("response without content-length")?];
        self.r.read_exact(&mut body)?;
        Ok((status, body))
    }

    /// PUT one KV value on namespace `bench`; returns the commit LSN.
    fn put(&mut self, key: &str, body: &[u8]) -> Result<u64> {
        let (status, resp) = self.request("PUT", &format!("/api/v1/bench/kv/{key}"), body)?;
        if status != 200 {
            bail!("PUT {key}: {status} {}", String::from_utf8_lossy(&resp));
        }
        find_lsn(&resp).context("no lsn in PUT response")
    }
}

fn get_status(port: u16, path: &str) -> Option<u16> {
    HttpConn::connect(port)
        .and_then(|mut c| c.request("GET", path, b""))
        .ok()
        .map(|(s, _)| s)
}

fn wait_ready(p: &Proc, timeout: Duration) -> Result<()> {
    let t = Instant::now();
    while get_status(p.http, "/readyz") != Some(200) {
        if t.elapsed() > timeout {
            bail!("{} not ready after {timeout:?}\n{}", p.name, p.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `"lsn":N` in a JSON body (PUT response or notification payload).
fn find_lsn(b: &[u8]) -> Option<u64> {
    let pat = b"\"lsn\":";
    let at = b.windows(pat.len()).position(|w| w == pat)? + pat.len();
    let digits: Vec<u8> = b[at..]
        .iter()
        .copied()
        .skip_while(|c| *c == b' ')
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn value_body() -> Vec<u8> {
    format!(r#"{{"value":"{}"}}"#, B64.encode([0xA5u8; 1024])).into_bytes()
}

/// (p50, p99, max) of microsecond samples.
fn pct(mut v: Vec<u64>) -> (u64, u64, u64) {
    if v.is_empty() {
        return (0, 0, 0);
    }
    v.sort_unstable();
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (q(0.5), q(0.99), q(1.0))
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

fn fanout(a: &Args, n: usize) -> Result<()> {
    let hub = spawn_node(a, &format!("n{n}-hub"), None, &a.hub_fsync, 64 << 20)?;
    wait_ready(&hub, Duration::from_secs(60))?;
    let up = format!("http://127.0.0.1:{}", hub.grpc);
    let mut relayers = Vec::with_capacity(n);
    for i in 0..n {
        relayers.push(spawn_node(
            a,
            &format!("n{n}-r{i}"),
            Some(&up),
            &a.relayer_fsync,
            a.relayer_memtable,
        )?);
    }
    for r in &relayers {
        wait_ready(r, Duration::from_secs(180))?;
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
                        let Some(lsn) = parts.get(1).and_then(|p| find_lsn(p)) else {
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
    let mut c = HttpConn::connect(hub.http)?;
    let mut w = 0;
    let warm = Instant::now();
    while seen.load(Ordering::Relaxed) < n {
        c.put(&format!("warm{w}"), &body)?;
        w += 1;
        if warm.elapsed() > Duration::from_secs(120) {
            bail!(
                "only {} of {n} subscribers saw a message",
                seen.load(Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let last_warm = c.put("warm-last", &body)?;
    base.store(last_warm + 1, Ordering::Relaxed);

    // Load: `conns` threads, each paced at rate / conns.
    let per_conn = Duration::from_secs_f64(a.conns as f64 / a.rate as f64);
    let run = Duration::from_secs(a.secs);
    let start = Instant::now();
    let workers: Vec<_> = (0..a.conns)
        .map(|ci| {
            let body = body.clone();
            let port = hub.http;
            std::thread::spawn(move || -> Result<Vec<(u64, u64, u64)>> {
                let mut c = HttpConn::connect(port)?;
                let mut out = Vec::new();
                let mut k = 0u64;
                loop {
                    let due = start + per_conn.mul_f64(k as f64);
                    // Stop at the deadline even when behind schedule (offered > sustainable).
                    if due.duration_since(start) >= run || start.elapsed() >= run {
                        return Ok(out);
                    }
                    if let Some(d) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    let sent = t0.elapsed().as_nanos() as u64;
                    let lsn = c.put(&format!("c{ci}-{k}"), &body)?;
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
    let (c50, c99, _) = pct(commit);
    let (l50, l99, lmax) = pct(lag);
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
        ms(c50),
        ms(c99),
        ms(l50),
        ms(l99),
        ms(lmax),
        drain_secs,
        hub_rss.0 as f64 / 1024.0,
    );
    drop(relayers);
    drop(hub);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Redis comparison (RESP by hand).

fn resp_write(s: &mut TcpStream, args: &[&[u8]]) -> Result<()> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    s.write_all(&out)?;
    Ok(())
}

#[derive(Debug)]
enum Resp {
    Str(Vec<u8>),
    Int,
    Nil,
    Arr(Vec<Resp>),
}

fn resp_read(r: &mut BufReader<TcpStream>) -> Result<Resp> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 {
        bail!("connection closed");
    }
    let rest = &line[1..line.len() - 2];
    let num = || -> Result<i64> { Ok(std::str::from_utf8(rest)?.parse()?) };
    Ok(match line[0] {
        b'+' => Resp::Str(rest.to_vec()),
        b'-' => bail!("redis error: {}", String::from_utf8_lossy(rest)),
        b':' => {
            num()?;
            Resp::Int
        }
        b'$' => {
            let n = num()?;
            if n < 0 {
                Resp::Nil
            } else {
                let mut b = vec![0; n as usize + 2];
                r.read_exact(&mut b)?;
                b.truncate(n as usize);
                Resp::Str(b)
            }
        }
        b'*' => {
            let n = num()?;
            let mut v = Vec::new();
            for _ in 0..n.max(0) {
                v.push(resp_read(r)?);
            }
            Resp::Arr(v)
        }
        other => bail!("bad RESP type {other}"),
    })
}

fn redis_cmd(r: &mut BufReader<TcpStream>, args: &[&[u8]]) -> Result<Resp> {
    resp_write(r.get_mut(), args)?;
    resp_read(r)
}

fn redis_conn(port: u16) -> Result<BufReader<TcpStream>> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    Ok(BufReader::new(s))
}

fn spawn_redis(a: &Args, name: &str, replica_of: Option<u16>) -> Result<Proc> {
    let dir = a.dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ])
    .args(["--appendonly", "no", "--notify-keyspace-events", "KEA"])
    .arg("--dir")
    .arg(&dir);
    if let Some(p) = replica_of {
        cmd.args(["--replicaof", "127.0.0.1", &p.to_string()]);
    }
    let log = std::fs::File::create(dir.join("server.log"))?;
    let child = cmd
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawn redis-server (apt-get install -y redis-server)")?;
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("redis {name} did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Proc {
        name: name.into(),
        dir,
        http: port,
        grpc: 0,
        zmq: 0,
        child,
    })
}

/// Subscriber thread: `__keyevent@0__:set` on a Redis replica → (key, arrival).
fn redis_sub(port: u16) -> Result<mpsc::Receiver<(Vec<u8>, Instant)>> {
    let mut r = redis_conn(port)?;
    redis_cmd(&mut r, &[b"SUBSCRIBE", b"__keyevent@0__:set"])?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(Resp::Arr(v)) = resp_read(&mut r) {
            let at = Instant::now();
            if let Some(Resp::Str(key)) = v.get(2) {
                if tx.send((key.clone(), at)).is_err() {
                    return;
                }
            }
        }
    });
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
            if let Some(lsn) = parts.get(1).and_then(|p| find_lsn(p)) {
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
    let (p50, p99, max) = pct(v.to_vec());
    let ratio = base.map_or(String::from("1.00"), |b| {
        format!("{:.2}", p50 as f64 / b.max(1) as f64)
    });
    println!("| {name} | {} | {p50} | {p99} | {max} | {ratio} |", v.len());
}

fn redis_compare(a: &Args) -> Result<()> {
    let value = [0xA5u8; 1024];
    // Redis: primary → r1 → r2.
    let p = spawn_redis(a, "redis-p", None)?;
    let r1 = spawn_redis(a, "redis-r1", Some(p.http))?;
    let r2 = spawn_redis(a, "redis-r2", Some(r1.http))?;
    for r in [&r1, &r2] {
        let t = Instant::now();
        loop {
            let mut c = redis_conn(r.http)?;
            if let Resp::Str(info) = redis_cmd(&mut c, &[b"INFO", b"replication"])? {
                if String::from_utf8_lossy(&info).contains("master_link_status:up") {
                    break;
                }
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("redis replica {} never linked\n{}", r.name, r.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (e1, e2) = (redis_sub(r1.http)?, redis_sub(r2.http)?);
    let mut pc = redis_conn(p.http)?;
    let (mut rd1, mut rd2) = (Vec::new(), Vec::new());
    for i in 0..(a.samples + 100) {
        let key = format!("k{i:08}").into_bytes();
        let t = Instant::now();
        redis_cmd(&mut pc, &[b"SET", &key, &value])?;
        let a1 = wait_for(&e1, &key)?;
        let a2 = wait_for(&e2, &key)?;
        if i >= 100 {
            rd1.push((a1 - t).as_micros() as u64);
            rd2.push((a2 - t).as_micros() as u64);
        }
    }
    drop((p, r1, r2));

    // UnisonDB: hub → relayer 1 → relayer 2, relayers with the same settings as the hub.
    let hub = spawn_node(a, "u-hub", None, &a.hub_fsync, 64 << 20)?;
    wait_ready(&hub, Duration::from_secs(60))?;
    let u1 = spawn_node(
        a,
        "u-r1",
        Some(&format!("http://127.0.0.1:{}", hub.grpc)),
        &a.hub_fsync,
        64 << 20,
    )?;
    wait_ready(&u1, Duration::from_secs(60))?;
    let u2 = spawn_node(
        a,
        "u-r2",
        Some(&format!("http://127.0.0.1:{}", u1.grpc)),
        &a.hub_fsync,
        64 << 20,
    )?;
    wait_ready(&u2, Duration::from_secs(60))?;
    let (z1, z2) = (zmq_sub(u1.zmq), zmq_sub(u2.zmq));
    let body = value_body();
    let mut hc = HttpConn::connect(hub.http)?;
    // Warm up until both subscriptions deliver.
    let mut w = 0;
    loop {
        let lsn = hc.put(&format!("warm{w}"), &body)?;
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
        let lsn = hc.put(&format!("k{i:08}"), &body)?;
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
    let (b1, b2) = (pct(rd1.clone()).0, pct(rd2.clone()).0);
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
    let a = args()?;
    std::fs::create_dir_all(&a.dir)?;
    let res = match a.mode.as_str() {
        "fanout" => {
            println!(
                "\nhub wal.fsync = {}, relayers wal.fsync = {}, relayer memtable = {} B, {} connections, {} s, 1 KiB values\n",
                a.hub_fsync, a.relayer_fsync, a.relayer_memtable, a.conns, a.secs
            );
            println!("| relayers | offered w/s | achieved w/s | writes | hub commit p50 / p99 ms | lag p50 ms | lag p99 ms | lag max ms | not on all | drain s | relayer VmRSS mean / max MiB | relayer RssAnon mean / max MiB | hub VmRSS MiB |");
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
            a.relayers.iter().try_for_each(|&n| fanout(&a, n))
        }
        "redis" => redis_compare(&a),
        other => Err(anyhow::anyhow!("unknown mode {other} (fanout|redis)")),
    };
    let _ = std::fs::remove_dir_all(&a.dir);
    res
}
