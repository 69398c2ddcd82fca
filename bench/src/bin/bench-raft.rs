//! `bench-raft`: quorum writes of a 3-member hub group on loopback, against etcd (3 members on
//! loopback, its default fsync) and our single-node durable commit (`wal.fsync: always`), all in the
//! same run; then failover time (SIGKILL the leader → first acknowledged write) over `--kills` kills.
//!
//! Every system is driven by the same client: reqwest over HTTP/1.1 keep-alive, one connection per
//! writer thread, JSON bodies (`PUT /api/v1/bench/kv/{key}` for us, etcd's gRPC gateway
//! `POST /v3/kv/put` for etcd), always sent to the leader. CPU per write is the user+system time of
//! every server process of the system (from `/proc`) divided by the writes.
//!
//! Usage: `bench-raft [--secs 5] [--kills 20] [--value-bytes 100] [--dir PATH] [--no-etcd]`.
//! etcd comes from `apt-get install etcd-server` (3.4 on Debian); without it those rows are skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::Parser;
use unisondb_bench::locate::unisondb_bin;
use unisondb_bench::process::{cpu_us, on_path, ChildGuard};
use unisondb_bench::stats::summarize;
use unisondb_testkit::{free_port, loopback_config, NodeProcess, Ports};

const NS: &str = "bench";

/// Quorum write latency/throughput against etcd and a single durable node; failover time.
#[derive(Parser, Debug)]
#[command(name = "bench-raft")]
struct Args {
    /// Seconds of load per (system, writes in flight) cell, after a 1 s warm-up.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Leader SIGKILLs for the failover measurement (0: skip it).
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Bytes of each written value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Where the data directories live (default: a fresh dir under $TMPDIR, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skip etcd even when it is installed.
    #[arg(long)]
    no_etcd: bool,
}

/// The client every system is driven with: reqwest on a current-thread runtime owned by the thread.
struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Client {
    fn new() -> Result<Client> {
        Ok(Client {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            http: reqwest::Client::builder()
                .no_proxy()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    /// Sends `method url` with a JSON body; the status and body.
    fn send(&self, method: reqwest::Method, url: &str, body: &str) -> Result<(u16, Vec<u8>)> {
        self.rt.block_on(async {
            let r = self
                .http
                .request(method, url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await?;
            let s = r.status().as_u16();
            Ok((s, r.bytes().await?.to_vec()))
        })
    }

    fn get_json(&self, url: &str) -> Option<serde_json::Value> {
        self.rt.block_on(async {
            let r = self
                .http
                .get(url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())?;
            r.json().await.ok()
        })
    }
}

/// How one system takes a write.
#[derive(Clone)]
enum Target {
    /// `PUT {base}/api/v1/bench/kv/{key}`.
    Unison(String),
    /// `POST {base}/v3/kv/put`.
    Etcd(String),
}

impl Target {
    fn write(&self, c: &Client, key: &str, value: &str) -> Result<()> {
        let (status, body) = match self {
            Target::Unison(base) => c.send(
                reqwest::Method::PUT,
                &format!("{base}/api/v1/{NS}/kv/{key}"),
                &format!(r#"{{"value":"{value}"}}"#),
            )?,
            Target::Etcd(base) => c.send(
                reqwest::Method::POST,
                &format!("{base}/v3/kv/put"),
                &format!(r#"{{"key":"{}","value":"{value}"}}"#, B64.encode(key)),
            )?,
        };
        if status != 200 {
            bail!(
                "write {key}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }
}

/// One measured cell.
struct Cell {
    writes: u64,
    p50_us: u64,
    p99_us: u64,
    per_sec: f64,
    cpu_us_per_write: f64,
}

/// `inflight` threads write to `target` for `secs` (after a 1 s warm-up), one write in flight each.
fn measure(target: &Target, pids: &[u32], inflight: usize, secs: u64, value: &str) -> Result<Cell> {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..inflight)
        .map(|t| {
            let (target, stop, measuring, errors, value) = (
                target.clone(),
                stop.clone(),
                measuring.clone(),
                errors.clone(),
                value.to_string(),
            );
            std::thread::spawn(move || -> Result<Vec<u64>> {
                let c = Client::new()?;
                let mut lat = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("k{t:02}-{i:09}");
                    let on = measuring.load(Ordering::Relaxed);
                    let t0 = Instant::now();
                    if let Err(e) = target.write(&c, &key, &value) {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("write failed: {e:#}");
                        }
                        continue;
                    }
                    if on && measuring.load(Ordering::Relaxed) {
                        lat.push(t0.elapsed().as_micros() as u64);
                    }
                }
                Ok(lat)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let cpu0: u64 = pids.iter().map(|p| cpu_us(*p)).sum();
    let t0 = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(secs));
    measuring.store(false, Ordering::Relaxed);
    let wall = t0.elapsed();
    let cpu1: u64 = pids.iter().map(|p| cpu_us(*p)).sum();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| anyhow::anyhow!("writer panicked"))??);
    }
    let errors = errors.load(Ordering::Relaxed);
    if errors > 0 {
        bail!("{errors} writes failed");
    }
    let writes = all.len() as u64;
    let s = summarize(all);
    Ok(Cell {
        writes,
        p50_us: s.p50,
        p99_us: s.p99,
        per_sec: writes as f64 / wall.as_secs_f64(),
        cpu_us_per_write: (cpu1.saturating_sub(cpu0)) as f64 / writes.max(1) as f64,
    })
}

/// A 3-member etcd cluster on loopback with its defaults (fsync on every WAL write).
struct Etcd {
    members: Vec<(ChildGuard, u16)>,
}

impl Etcd {
    fn start(root: &Path) -> Result<Etcd> {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let dir = root.join(format!("etcd-{i}"));
            std::fs::create_dir_all(&dir)?;
            let log = std::fs::File::create(root.join(format!("etcd-{i}.log")))?;
            let child = Command::new("etcd")
                .args([
                    "--name",
                    &format!("e{i}"),
                    "--data-dir",
                    &dir.display().to_string(),
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                    "--initial-cluster",
                    &cluster.join(","),
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "bench-raft",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("spawning etcd")?;
            members.push((ChildGuard(child), *client));
        }
        Ok(Etcd { members })
    }

    fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|(c, _)| c.0.id()).collect()
    }

    /// The leader's client URL, once the members agree on one.
    fn leader(&self, c: &Client, timeout: Duration) -> Result<String> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            for (_, port) in &self.members {
                let base = format!("http://127.0.0.1:{port}");
                let Ok((200, body)) = c.send(
                    reqwest::Method::POST,
                    &format!("{base}/v3/maintenance/status"),
                    "{}",
                ) else {
                    continue;
                };
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let me = v["header"]["member_id"].as_str().unwrap_or("?");
                if v["leader"].as_str() == Some(me) {
                    return Ok(base);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("etcd elected no leader within {timeout:?}")
    }
}

/// A `unisondb` member or single node.
struct Node {
    proc: NodeProcess,
    ports: Ports,
}

fn unison_nodes(bin: &Path, root: &Path, members: usize, extra: &str) -> Result<Vec<Node>> {
    let ports: Vec<Ports> = (0..members).map(|_| Ports::free()).collect();
    let peers: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("\"{}=127.0.0.1:{}\"", i + 1, p.grpc))
        .collect();
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let name = if members == 1 {
            "single".to_string()
        } else {
            format!("member-{}", i + 1)
        };
        let dir = root.join(&name);
        let mut yaml = loopback_config(&dir, *p, &[NS], None, "");
        yaml = yaml.replace("log:\n  level: info\n", "log:\n  level: warn\n");
        yaml.push_str(extra);
        if members > 1 {
            // Default election timeout and heartbeat: the figures below are for them.
            yaml.push_str(&format!(
                "cluster:\n  node_id: {}\n  peers: [{}]\n  advertise_http: 127.0.0.1:{}\n",
                i + 1,
                peers.join(", "),
                p.http
            ));
        }
        let mut proc = NodeProcess::new(bin, &name, &dir, yaml);
        proc.start()?;
        out.push(Node { proc, ports: *p });
    }
    Ok(out)
}

fn wait_ready(rt: &tokio::runtime::Runtime, n: &Node) -> Result<()> {
    let c = reqwest::Client::builder().no_proxy().build()?;
    rt.block_on(
        n.proc
            .wait_http_ok(&c, &n.ports.url("/readyz"), Duration::from_secs(60)),
    )?;
    Ok(())
}

/// Index of the member every running member names as leader.
fn unison_leader(c: &Client, ms: &[Node], timeout: Duration) -> Result<usize> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        let mut claims = Vec::new();
        let mut named = Vec::new();
        for (i, m) in ms.iter().enumerate() {
            if !m.proc.is_started() {
                continue;
            }
            if let Some(v) = c.get_json(&m.ports.url(&format!("/status/leader?namespace={NS}"))) {
                if v["role"] == "leader" {
                    claims.push(i);
                }
                named.push(v["leader_id"].as_u64());
            }
        }
        if let [l] = claims[..] {
            if named.iter().all(|n| *n == Some(l as u64 + 1)) {
                return Ok(l);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("no agreed unisondb leader within {timeout:?}")
}

fn offset(c: &Client, n: &Node) -> Option<u64> {
    c.get_json(&n.ports.url(&format!("/api/v1/{NS}/offset")))?["lsn"].as_u64()
}

/// Sum and count of histogram `name` for the bench namespace on the node at `base` (all other
/// labels summed), from `/metrics`.
fn histogram(c: &Client, base: &str, name: &str) -> (f64, f64) {
    let Ok((200, body)) = c.send(reqwest::Method::GET, &format!("{base}/metrics"), "") else {
        return (0.0, 0.0);
    };
    let ns = format!("namespace=\"{NS}\"");
    let (mut sum, mut count) = (0.0, 0.0);
    for line in String::from_utf8_lossy(&body).lines() {
        let Some((series, v)) = line.rsplit_once(' ') else {
            continue;
        };
        if !series.contains(&ns) {
            continue;
        }
        let v: f64 = v.parse().unwrap_or(0.0);
        if series.starts_with(&format!("{name}_sum{{")) {
            sum += v;
        } else if series.starts_with(&format!("{name}_count{{")) {
            count += v;
        }
    }
    (sum, count)
}

/// Mean (ms) of a histogram read as (sum, count) on each member, between two readings.
fn mean_ms(before: &[(f64, f64)], after: &[(f64, f64)]) -> f64 {
    let (s, n) = before
        .iter()
        .zip(after)
        .fold((0.0, 0.0), |(s, n), (b, a)| (s + a.0 - b.0, n + a.1 - b.1));
    if n > 0.0 {
        1000.0 * s / n
    } else {
        f64::NAN
    }
}

fn row(name: &str, inflight: usize, c: &Cell) {
    println!(
        "| {name} | {inflight} | {} | {:.3} | {:.3} | {:.0} | {:.0} |",
        c.writes,
        c.p50_us as f64 / 1000.0,
        c.p99_us as f64 / 1000.0,
        c.per_sec,
        c.cpu_us_per_write
    );
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bin = unisondb_bin()?;
    let (root, remove) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("bench-raft-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&root)?;
    let rt = tokio::runtime::Runtime::new()?;
    let c = Client::new()?;
    let defaults = unisondb_config::ClusterConfig::default();
    let value = B64.encode(vec![b'v'; args.value_bytes]);

    let single = unison_nodes(&bin, &root, 1, "wal:\n  fsync: always\n")?;
    let mut group = unison_nodes(&bin, &root, 3, "")?;
    for n in single.iter().chain(&group) {
        wait_ready(&rt, n)?;
    }
    let etcd = if args.no_etcd {
        None
    } else if !on_path("etcd") {
        eprintln!("etcd not installed (apt-get install etcd-server): its rows are skipped");
        None
    } else {
        let e = Etcd::start(&root)?;
        let v = Command::new("etcd").arg("--version").output()?;
        eprintln!(
            "{}",
            String::from_utf8_lossy(&v.stdout)
                .lines()
                .next()
                .unwrap_or("")
        );
        Some(e)
    };
    let etcd_leader = etcd
        .as_ref()
        .map(|e| e.leader(&c, Duration::from_secs(30)))
        .transpose()?;
    let l = unison_leader(&c, &group, Duration::from_secs(30))?;
    let group_pids: Vec<u32> = group.iter().filter_map(|m| m.proc.pid()).collect();
    let single_pids: Vec<u32> = single.iter().filter_map(|m| m.proc.pid()).collect();

    println!(
        "\n{}-byte values, {} s per cell, every write to the leader; cluster defaults: \
         election_timeout_ms {} (max {}), heartbeat_ms {}\n",
        args.value_bytes,
        args.secs,
        defaults.election_timeout_ms,
        2 * defaults.election_timeout_ms,
        defaults.heartbeat_ms
    );
    println!(
        "| system | in flight | writes | p50 ms | p99 ms | writes/s | CPU µs/write (all members) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    let mut parts_seen = Vec::new();
    for inflight in [1usize, 16] {
        let s = measure(
            &Target::Unison(single[0].ports.url("")),
            &single_pids,
            inflight,
            args.secs,
            &value,
        )?;
        row("unisondb single node, fsync always", inflight, &s);
        let bases: Vec<String> = group.iter().map(|m| m.ports.url("")).collect();
        let read = |name: &str| -> Vec<(f64, f64)> {
            bases.iter().map(|b| histogram(&c, b, name)).collect()
        };
        let parts = [
            "unisondb_raft_append_rtt_seconds",
            "unisondb_raft_append_serve_seconds",
            "unisondb_wal_fsync_seconds",
        ];
        let before: Vec<_> = parts.iter().map(|p| read(p)).collect();
        let q = measure(
            &Target::Unison(group[l].ports.url("")),
            &group_pids,
            inflight,
            args.secs,
            &value,
        )?;
        row("unisondb 3-member group (quorum)", inflight, &q);
        let after: Vec<_> = parts.iter().map(|p| read(p)).collect();
        parts_seen.push((
            inflight,
            mean_ms(&before[0], &after[0]),
            mean_ms(&before[1], &after[1]),
            mean_ms(&before[2], &after[2]),
        ));
        let e = match (&etcd, &etcd_leader) {
            (Some(e), Some(base)) => {
                let cell = measure(
                    &Target::Etcd(base.clone()),
                    &e.pids(),
                    inflight,
                    args.secs,
                    &value,
                )?;
                row("etcd 3 members (gateway /v3/kv/put)", inflight, &cell);
                Some(cell)
            }
            _ => None,
        };
        ratios.push((inflight, s, q, e));
    }
    println!("\n| in flight | quorum p50 / etcd p50 (≤ 1) | quorum writes/s / etcd (≥ 1) | quorum CPU / etcd CPU | quorum p50 / single p50 (≤ 1.5) |");
    println!("|---|---|---|---|---|");
    for (inflight, s, q, e) in &ratios {
        let (ep50, etput, ecpu) = e.as_ref().map_or((0.0, 0.0, 0.0), |e| {
            (e.p50_us as f64, e.per_sec, e.cpu_us_per_write)
        });
        println!(
            "| {inflight} | {} | {} | {} | {} |",
            ratio(q.p50_us as f64, ep50),
            ratio(q.per_sec, etput),
            ratio(q.cpu_us_per_write, ecpu),
            ratio(q.p50_us as f64, s.p50_us as f64)
        );
    }
    println!(
        "\n| in flight | group: AppendEntries round trip on the leader, mean ms | of which the follower's append + fsync, mean ms | WAL fsync, mean ms (all members) |"
    );
    println!("|---|---|---|---|");
    for (inflight, rtt, serve, fsync) in &parts_seen {
        println!("| {inflight} | {rtt:.3} | {serve:.3} | {fsync:.3} |");
    }
    drop(etcd);
    drop(single);

    if args.kills > 0 {
        failover(&rt, &c, &mut group, args.kills, &value)?;
    }
    for m in group.iter_mut() {
        m.proc.kill();
    }
    if remove {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}

/// SIGKILL the leader `kills` times; each time, the time until a write is acknowledged through a
/// surviving member (followers proxy to the new leader), then restart the member and let it catch up.
fn failover(
    rt: &tokio::runtime::Runtime,
    c: &Client,
    ms: &mut [Node],
    kills: usize,
    value: &str,
) -> Result<()> {
    let mut times = Vec::new();
    for k in 0..kills {
        let l = unison_leader(c, ms, Duration::from_secs(30))?;
        let rest: Vec<usize> = (0..ms.len()).filter(|i| *i != l).collect();
        let t0 = Instant::now();
        ms[l].proc.kill();
        let mut i = 0usize;
        loop {
            i += 1;
            let m = &ms[rest[i % rest.len()]];
            let key = format!("failover-{k}-{i}");
            if Target::Unison(m.ports.url(""))
                .write(c, &key, value)
                .is_ok()
            {
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("no write acknowledged within 60 s of kill {}", k + 1);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = t0.elapsed();
        times.push(took.as_micros() as u64);
        eprintln!(
            "kill {}: first acknowledged write after {} ms",
            k + 1,
            took.as_millis()
        );
        ms[l].proc.start()?;
        wait_ready(rt, &ms[l])?;
        let nl = unison_leader(c, ms, Duration::from_secs(30))?;
        let t = Instant::now();
        while offset(c, &ms[l]) != offset(c, &ms[nl]) {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("restarted member did not catch up");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = summarize(times);
    println!(
        "\nfailover over {kills} leader SIGKILLs (kill → first acknowledged write): p50 {:.0} ms, \
         p99 {:.0} ms, max {:.0} ms (target p99 ≤ 2000 ms)",
        s.p50 as f64 / 1000.0,
        s.p99 as f64 / 1000.0,
        s.max as f64 / 1000.0
    );
    Ok(())
}
