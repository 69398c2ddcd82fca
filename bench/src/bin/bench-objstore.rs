//! `bench-objstore`: backups and fan-out through an S3-compatible object store, with their peers in
//! the same run. A real `moto_server` (the one the tests use) on 127.0.0.1 and real `unisondb`
//! processes.
//!
//! * `bench-objstore backup --mib 1024`: one hub loaded with `--mib` MiB of KV values;
//!   then a base backup to the local backup directory against `tar cf` of the namespace directory to
//!   a file in the same directory (plain, and followed by an fsync as our backup does), a base backup
//!   into the bucket against `tar cf -` piped into one multipart upload by the same `object_store`
//!   client the node uses, and the restores of each (`unisondb restore --from` / `--from-object-store`
//!   against `tar xf`, from a file / from a streamed GET). Prints wall-clock, MiB/s, CPU seconds
//!   (the hub's from `/proc/<pid>/stat`, child processes' and this process's from `getrusage`, moto's
//!   from `/proc`), and tar's time / ours (≥ 1: we are faster).
//! * `bench-objstore fanout --relayers 100 --rate 100 --secs 20`: hub CPU per second of load at the
//!   same write rate with no relayer, N gRPC relayers, and N relayers following only the bucket (the
//!   hub archiving its WAL in every run), from `/proc/<hub pid>/stat`; also moto's and the relayers'.
//!
//! The `unisondb` binary: `--bin`, else `$UNISONDB_BIN`, else the one next to this executable.
//! `moto_server`: `--moto`, else `$UNISONDB_E2E_VENV/bin/moto_server`, else the test venv's
//! (installed by `scripts/install-deps.sh`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use object_store::{ObjectStore, WriteMultipart};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use unisondb_bench::locate::unisondb_bin;
use unisondb_bench::process::ChildGuard;
use unisondb_testkit::{free_port, NodeProcess};

const NS: &str = "bench";
const BUCKET: &str = "bench";
const PREFIX: &str = "hub";
const ACCESS_KEY: &str = "AKIABENCH";
const SECRET_KEY: &str = "bench-secret-key";

/// Backups and fan-out through an S3-compatible object store, against their peers.
#[derive(Parser, Debug)]
#[command(name = "bench-objstore")]
struct Args {
    #[arg(value_enum)]
    mode: Mode,
    /// Size of the namespace to back up, in MiB of values (backup).
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Size of each value, KiB (backup).
    #[arg(long, default_value_t = 64)]
    value_kib: usize,
    /// Relayers per kind (fanout).
    #[arg(long, default_value_t = 100)]
    relayers: usize,
    /// Writes per second to the hub (fanout).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds of load per run (fanout).
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// `replication.object_store.poll_interval_ms` of the store relayers (fanout).
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// The `unisondb` binary (default: `$UNISONDB_BIN`, else next to this executable).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// The `moto_server` executable.
    #[arg(long)]
    moto: Option<PathBuf>,
    /// Scratch directory (default: a fresh one under $TMPDIR), removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Backup,
    Fanout,
}

/// CPU seconds of process `pid` so far (user + system, from `/proc/PID/stat`).
fn proc_cpu(pid: u32) -> f64 {
    unisondb_bench::process::cpu_us(pid) as f64 / 1e6
}

/// CPU seconds of this process (`self`) or of its reaped children, from getrusage.
fn rusage(children: bool) -> f64 {
    let who = if children {
        libc::RUSAGE_CHILDREN
    } else {
        libc::RUSAGE_SELF
    };
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `moto_server` on loopback with the bucket created; killed on drop.
struct Moto {
    child: ChildGuard,
    port: u16,
}

impl Moto {
    async fn start(bin: Option<PathBuf>) -> Result<Moto> {
        let bin = bin.unwrap_or_else(|| {
            std::env::var_os("UNISONDB_E2E_VENV")
                .map(PathBuf::from)
                .unwrap_or_else(|| unisondb_testkit::cache_dir().join("venv"))
                .join("bin/moto_server")
        });
        let port = free_port();
        let child = ChildGuard(
            std::process::Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("{} (run scripts/install-deps.sh)", bin.display()))?,
        );
        let c = reqwest::Client::new();
        let t = Instant::now();
        loop {
            let r = c
                .put(format!("http://127.0.0.1:{port}/{BUCKET}"))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("moto_server did not start");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Moto { child, port })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn cpu(&self) -> f64 {
        proc_cpu(self.child.0.id())
    }

    /// The same client the node builds (`object_store`'s S3), for the peer's upload and download.
    fn client(&self) -> Result<object_store::aws::AmazonS3> {
        Ok(object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()?)
    }

    /// The YAML of a store (`archive` or `replication.object_store`), indented by `indent`.
    fn yaml(&self, indent: &str) -> String {
        format!(
            "{indent}endpoint: {}\n{indent}bucket: {BUCKET}\n{indent}prefix: {PREFIX}\n\
             {indent}path_style: true\n",
            self.endpoint()
        )
    }
}

/// A `unisondb` process and its HTTP port; killed on drop.
struct Node {
    p: NodeProcess,
    http: u16,
    grpc: u16,
}

impl Node {
    fn new(bin: &Path, root: &Path, name: &str, extra: &str) -> Node {
        let dir = root.join(name);
        let (http, grpc) = (free_port(), free_port());
        let yaml = format!(
            "server:\n  data_dir: {}\n  namespaces: [{NS}]\n{extra}http:\n  listen: 127.0.0.1:{http}\n\
             grpc:\n  listen: 127.0.0.1:{grpc}\nnotify:\n  bind: tcp://127.0.0.1:0\n\
             wal:\n  fsync: interval\nlog:\n  level: warn\n",
            dir.join("data").display()
        );
        let p = NodeProcess::new(bin, name, &dir, yaml)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        Node { p, http, grpc }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    fn pid(&self) -> u32 {
        self.p.pid().unwrap_or(0)
    }

    async fn lsn(&self, c: &reqwest::Client) -> u64 {
        let r = c
            .get(self.url(&format!("/api/v1/{NS}/offset")))
            .send()
            .await;
        match r {
            Ok(r) => r
                .json::<Value>()
                .await
                .map_or(0, |v| v["lsn"].as_u64().unwrap_or(0)),
            Err(_) => 0,
        }
    }
}

/// One measured step: wall seconds, bytes moved, CPU seconds (where from is in the label).
struct Row {
    what: String,
    secs: f64,
    bytes: u64,
    cpu: f64,
    moto_cpu: Option<f64>,
}

impl Row {
    fn print(&self) {
        println!(
            "| {} | {:.2} | {:.1} | {:.1} | {:.2} | {} |",
            self.what,
            self.secs,
            self.bytes as f64 / (1 << 20) as f64,
            self.bytes as f64 / (1 << 20) as f64 / self.secs,
            self.cpu,
            self.moto_cpu.map_or("-".into(), |c| format!("{c:.2}"))
        );
    }
}

fn du(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return std::fs::metadata(p).map_or(0, |m| m.len());
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                du(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// Runs `cmd` to completion; (wall seconds, CPU seconds of it from getrusage).
async fn timed(cmd: &mut tokio::process::Command) -> Result<(f64, f64)> {
    let (c0, t) = (rusage(true), Instant::now());
    let out = cmd.stdout(Stdio::null()).output().await?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((t.elapsed().as_secs_f64(), rusage(true) - c0))
}

/// Sends `r`; its JSON answer, or an error with the body.
async fn post(r: reqwest::RequestBuilder) -> Result<Value> {
    let r = r.send().await?;
    let st = r.status();
    let text = r.text().await?;
    if !st.is_success() {
        bail!("{st}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

async fn load(hub: &Node, mib: u64, value_kib: usize) -> Result<()> {
    let n = (mib << 10) / value_kib as u64;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (next, url) = (next.clone(), hub.url(&format!("/api/v1/{NS}/kv/")));
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            // Incompressible values (xorshift), so neither side gains from compression.
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (w + 1);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let v: Vec<u8> = (0..value_kib * 128)
                    .flat_map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x.to_le_bytes()
                    })
                    .collect();
                let r = c
                    .put(format!("{url}k{i:09}"))
                    .json(&json!({"value": B64.encode(&v)}))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("load: {}", r.text().await?);
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn backup(a: &Args, bin: &Path, root: &Path) -> Result<()> {
    let moto = Moto::start(a.moto.clone()).await?;
    // Base backups into the bucket need `archive.bucket`; WAL archiving stays off (not measured).
    let archive = format!("archive:\n  enabled: false\n{}", moto.yaml("  "));
    let mut hub = Node::new(bin, root, "hub", &archive);
    hub.p
        .start_ready(&hub.url("/readyz"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = reqwest::Client::new();
    let t = Instant::now();
    load(&hub, a.mib, a.value_kib).await?;
    eprintln!("loaded {} MiB in {:.1}s", a.mib, t.elapsed().as_secs_f64());
    let data = root.join("hub/data");
    let ns_dir = data.join(NS);
    let ns_bytes = du(&ns_dir);
    let backups = data.join("backups").join(NS);
    std::fs::create_dir_all(&backups)?;
    println!(
        "namespace directory {}: {:.1} MiB on disk ({} MiB of values)\n",
        ns_dir.display(),
        ns_bytes as f64 / (1 << 20) as f64,
        a.mib
    );
    println!("| step | wall s | MiB | MiB/s | CPU s | moto CPU s |\n|---|---|---|---|---|---|");
    let mut rows = Vec::new();

    // Local directory: our backup (in the hub; its CPU) against tar of the namespace directory.
    let (cpu0, t) = (proc_cpu(hub.pid()), Instant::now());
    let b = post(c.post(hub.url(&format!("/api/v1/{NS}/backups")))).await?;
    let ours_local = Row {
        what: "backup → local dir (unisondb)".into(),
        secs: t.elapsed().as_secs_f64(),
        bytes: b["manifest"]["snapshot"]["bytes"].as_u64().unwrap_or(0)
            + b["manifest"]["wal"]["bytes"].as_u64().unwrap_or(0),
        cpu: proc_cpu(hub.pid()) - cpu0,
        moto_cpu: None,
    };
    let backup_path = PathBuf::from(b["path"].as_str().context("backup path")?);
    let backup_path = if backup_path.is_absolute() {
        backup_path
    } else {
        backups.join(backup_path)
    };
    let tar_file = backups.join("peer.tar");
    let (secs, cpu) = timed(
        tokio::process::Command::new("tar")
            .arg("cf")
            .arg(&tar_file)
            .arg("-C")
            .arg(&data)
            .arg(NS),
    )
    .await?;
    let tar_bytes = std::fs::metadata(&tar_file)?.len();
    let tar_local = Row {
        what: "tar cf → local file".into(),
        secs,
        bytes: tar_bytes,
        cpu,
        moto_cpu: None,
    };
    let (s2, c2) = timed(tokio::process::Command::new("sync").arg(&tar_file)).await?;
    let tar_local_sync = Row {
        what: "tar cf + fsync → local file".into(),
        secs: secs + s2,
        bytes: tar_bytes,
        cpu: cpu + c2,
        moto_cpu: None,
    };
    // Restores into fresh directories.
    let (secs, cpu) = timed(
        tokio::process::Command::new(bin)
            .arg("restore")
            .arg("-d")
            .arg(root.join("r-local/data"))
            .args(["-n", NS, "--force", "--from"])
            .arg(&backup_path),
    )
    .await?;
    let ours_rl = Row {
        what: "restore ← local dir (unisondb)".into(),
        secs,
        bytes: ours_local.bytes,
        cpu,
        moto_cpu: None,
    };
    let into = root.join("r-tar/data");
    std::fs::create_dir_all(&into)?;
    let (secs, cpu) = timed(
        tokio::process::Command::new("tar")
            .arg("xf")
            .arg(&tar_file)
            .arg("-C")
            .arg(&into),
    )
    .await?;
    let tar_rl = Row {
        what: "tar xf ← local file".into(),
        secs,
        bytes: tar_bytes,
        cpu,
        moto_cpu: None,
    };
    // Our restore ends durable (every file fsynced); so does this peer: fsync each extracted file.
    let (s2, c2) = timed(tokio::process::Command::new("sh").arg("-c").arg(format!(
        "find '{}' -type f -print0 | xargs -0 -r sync",
        into.display()
    )))
    .await?;
    let tar_rl_sync = Row {
        what: "tar xf + fsync ← local file".into(),
        secs: secs + s2,
        bytes: tar_bytes,
        cpu: cpu + c2,
        moto_cpu: None,
    };
    std::fs::remove_file(&tar_file)?;
    std::fs::remove_dir_all(root.join("r-tar"))?;
    std::fs::remove_dir_all(root.join("r-local"))?;
    std::fs::remove_dir_all(&backup_path)?;

    // Object store: our base backup against tar piped into one multipart upload.
    let (cpu0, m0, t) = (proc_cpu(hub.pid()), moto.cpu(), Instant::now());
    let b = post(
        c.post(hub.url(&format!("/api/v1/{NS}/backups")))
            .json(&json!({"target": "objectStore"})),
    )
    .await?;
    let ours_s3 = Row {
        what: "backup → S3 (unisondb)".into(),
        secs: t.elapsed().as_secs_f64(),
        bytes: b["manifest"]["snapshot"]["bytes"].as_u64().unwrap_or(0)
            + b["manifest"]["wal"]["bytes"].as_u64().unwrap_or(0),
        cpu: proc_cpu(hub.pid()) - cpu0,
        moto_cpu: Some(moto.cpu() - m0),
    };
    let s3 = moto.client()?;
    let key = object_store::path::Path::from("peer/ns.tar");
    let (self0, ch0, m0, t) = (rusage(false), rusage(true), moto.cpu(), Instant::now());
    let mut tar = tokio::process::Command::new("tar")
        .arg("cf")
        .arg("-")
        .arg("-C")
        .arg(&data)
        .arg(NS)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = tar.stdout.take().context("tar stdout")?;
    let mut w = WriteMultipart::new_with_chunk_size(s3.put_multipart(&key).await?, 8 << 20);
    let mut buf = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    loop {
        use tokio::io::AsyncReadExt;
        let n = out.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        w.wait_for_capacity(4).await?;
        w.write(&buf[..n]);
        sent += n as u64;
    }
    w.finish().await?;
    if !tar.wait().await?.success() {
        bail!("tar cf - failed");
    }
    let tar_s3 = Row {
        what: "tar cf - | multipart upload → S3".into(),
        secs: t.elapsed().as_secs_f64(),
        bytes: sent,
        cpu: (rusage(false) - self0) + (rusage(true) - ch0),
        moto_cpu: Some(moto.cpu() - m0),
    };
    let (m0, t) = (moto.cpu(), Instant::now());
    let (secs, cpu) = timed(
        tokio::process::Command::new(bin)
            .arg("restore")
            .arg("-d")
            .arg(root.join("r-s3/data"))
            .args(["-n", NS, "--force", "--from-object-store"])
            .arg(format!("s3://{BUCKET}/{PREFIX}"))
            .args(["--endpoint", &moto.endpoint(), "--path-style"])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    )
    .await?;
    let _ = t;
    let ours_rs3 = Row {
        what: "restore ← S3 (unisondb)".into(),
        secs,
        bytes: ours_s3.bytes,
        cpu,
        moto_cpu: Some(moto.cpu() - m0),
    };
    let into = root.join("r-tar-s3/data");
    std::fs::create_dir_all(&into)?;
    let (self0, ch0, m0, t) = (rusage(false), rusage(true), moto.cpu(), Instant::now());
    let mut untar = tokio::process::Command::new("tar")
        .arg("xf")
        .arg("-")
        .arg("-C")
        .arg(&into)
        .stdin(Stdio::piped())
        .spawn()?;
    let mut stdin = untar.stdin.take().context("tar stdin")?;
    let mut body = s3.get(&key).await?.into_stream();
    while let Some(chunk) = body.next().await {
        stdin.write_all(&chunk?).await?;
    }
    drop(stdin);
    if !untar.wait().await?.success() {
        bail!("tar xf - failed");
    }
    let tar_rs3 = Row {
        what: "GET → tar xf - ← S3".into(),
        secs: t.elapsed().as_secs_f64(),
        bytes: sent,
        cpu: (rusage(false) - self0) + (rusage(true) - ch0),
        moto_cpu: Some(moto.cpu() - m0),
    };
    rows.extend([
        ours_local,
        tar_local,
        tar_local_sync,
        ours_rl,
        tar_rl,
        tar_rl_sync,
        ours_s3,
        tar_s3,
        ours_rs3,
        tar_rs3,
    ]);
    for r in &rows {
        r.print();
    }
    let ratio = |ours: &Row, tar: &Row| tar.secs / ours.secs;
    println!(
        "\ntar time / our time for the same namespace (≥ 0.8 is the goal; > 1: we are faster):\n\
         backup local {:.2}x (against tar+fsync {:.2}x), restore local {:.2}x (against \
         tar+fsync {:.2}x), backup S3 {:.2}x, restore S3 {:.2}x",
        ratio(&rows[0], &rows[1]),
        ratio(&rows[0], &rows[2]),
        ratio(&rows[3], &rows[4]),
        ratio(&rows[3], &rows[5]),
        ratio(&rows[6], &rows[7]),
        ratio(&rows[8], &rows[9]),
    );
    hub.p.terminate(Duration::from_secs(10))?;
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    None,
    Grpc,
    Store,
}

async fn fanout_run(a: &Args, bin: &Path, root: &Path, moto: &Moto, kind: Kind) -> Result<()> {
    let root = root.join(format!("{kind:?}").to_lowercase());
    // Every run: a hub archiving its WAL (max 1 s delay), so the only difference is who reads.
    let archive = format!(
        "archive:\n  enabled: true\n  max_delay_seconds: 1\n{}",
        moto.yaml("  ").replace(
            &format!("prefix: {PREFIX}"),
            &format!("prefix: {PREFIX}-{kind:?}")
        )
    );
    let mut hub = Node::new(bin, &root, "hub", &archive);
    hub.p
        .start_ready(&hub.url("/readyz"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let n = if kind == Kind::None { 0 } else { a.relayers };
    let mut relayers = Vec::new();
    for i in 0..n {
        let repl = match kind {
            Kind::Grpc => format!(
                "  mode: relayer\nreplication:\n  upstream: http://127.0.0.1:{}\n",
                hub.grpc
            ),
            _ => format!(
                "  mode: relayer\nreplication:\n  object_store:\n{}    poll_interval_ms: {}\n",
                moto.yaml("    ").replace(
                    &format!("prefix: {PREFIX}"),
                    &format!("prefix: {PREFIX}-Store")
                ),
                a.poll_ms
            ),
        };
        let mut r = Node::new(bin, &root, &format!("r{i}"), &repl);
        r.p.start()?;
        relayers.push(r);
    }
    let c = reqwest::Client::new();
    for r in &relayers {
        r.p.wait_http_ok(&c, &r.url("/healthz"), Duration::from_secs(120))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = |pids: &[u32]| pids.iter().map(|p| proc_cpu(*p)).sum::<f64>();
    let rpids: Vec<u32> = relayers.iter().map(Node::pid).collect();
    let (h0, m0, r0, t) = (proc_cpu(hub.pid()), moto.cpu(), cpu(&rpids), Instant::now());
    let total = a.rate * a.secs;
    let value = B64.encode(vec![b'v'; 1024]);
    // Paced, up to 16 writes in flight, so a slow commit does not lower the offered rate.
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = t + Duration::from_secs_f64(i as f64 / a.rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = slots.clone().acquire_owned().await?;
        let put = c
            .put(hub.url(&format!("/api/v1/{NS}/kv/k{:06}", i % 10_000)))
            .json(&json!({"value": value}));
        puts.spawn(async move {
            let r = put.send().await.and_then(|r| r.error_for_status());
            drop(permit);
            r.map(|_| ())
        });
    }
    while let Some(r) = puts.join_next().await {
        r??;
    }
    let secs = t.elapsed().as_secs_f64();
    let (hub_cpu, moto_cpu, rel_cpu) =
        (proc_cpu(hub.pid()) - h0, moto.cpu() - m0, cpu(&rpids) - r0);
    // Everything reaches every relayer (the store ones within the archive delay + a poll).
    let last = hub.lsn(&c).await;
    let t = Instant::now();
    let mut behind = relayers.len();
    while t.elapsed() < Duration::from_secs(60) {
        behind = 0;
        for r in &relayers {
            if r.lsn(&c).await < last {
                behind += 1;
            }
        }
        if behind == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "| {kind:?} | {n} | {:.1} | {:.3} | {:.2} | {:.3} | {:.3} | {:.1} | {behind} |",
        total as f64 / secs,
        hub_cpu / secs,
        hub_cpu * 1e3 / total as f64,
        moto_cpu / secs,
        rel_cpu / secs,
        t.elapsed().as_secs_f64(),
    );
    for mut r in relayers {
        let _ = r.p.terminate(Duration::from_secs(5));
    }
    hub.p.terminate(Duration::from_secs(10))?;
    Ok(())
}

async fn fanout(a: &Args, bin: &Path, root: &Path) -> Result<()> {
    let moto = Moto::start(a.moto.clone()).await?;
    println!(
        "| readers | relayers | writes/s | hub CPU s/s | hub CPU ms/write | moto CPU s/s | relayers CPU s/s | catch-up s | behind |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for kind in [Kind::None, Kind::Grpc, Kind::Store] {
        fanout_run(a, bin, root, &moto, kind).await?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = Args::parse();
    let bin = match &a.bin {
        Some(b) => b.clone(),
        None => unisondb_bin()?,
    };
    let tmp;
    let root = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("bench-objstore-{}", std::process::id()));
            tmp
        }
    };
    std::fs::create_dir_all(&root)?;
    let res = match a.mode {
        Mode::Backup => backup(&a, &bin, &root).await,
        Mode::Fanout => fanout(&a, &bin, &root).await,
    };
    if res.is_ok() || std::env::var_os("BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    res
}
