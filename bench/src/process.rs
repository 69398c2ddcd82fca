//! Child processes of the benchmarks: `unisondb` nodes from a YAML config and `redis-server`s, killed
//! when dropped.
//!
//! Nodes run as `testkit::NodeProcess`, the workspace's one spawner.

use std::fmt;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::client::HttpClient;
use unisondb_testkit::{free_port, wait_for, NodeProcess};

/// A child process, SIGKILLed and reaped on drop so an early error leaves no server behind.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// (VmRSS, RssAnon) in KiB from `/proc`.
    pub fn rss_kib(&self) -> (u64, u64) {
        rss_kib(self.0.id())
    }
}

/// (VmRSS, RssAnon) in KiB of process `pid` from `/proc`; (0, 0) when it is gone.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `wal.fsync` of a spawned node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fsync {
    Always,
    Interval,
    Never,
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fsync::Always => "always",
            Fsync::Interval => "interval",
            Fsync::Never => "never",
        })
    }
}

/// What a spawned `unisondb` node looks like; everything else keeps the server's defaults.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Directory name under the run's root; also used in error messages.
    pub name: String,
    /// The one namespace the node serves.
    pub namespace: String,
    /// gRPC URL of the node to follow (relayer mode); `None` for a hub (replicator mode).
    pub upstream: Option<String>,
    pub fsync: Fsync,
    pub memtable_bytes: u64,
    pub segment_bytes: u64,
    pub notify_high_water_mark: u64,
}

impl NodeSpec {
    /// A hub serving `namespace` with the server's default WAL and memtable sizes, fsync `always`.
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            namespace: namespace.into(),
            upstream: None,
            fsync: Fsync::Always,
            memtable_bytes: 64 << 20,
            segment_bytes: 64 << 20,
            notify_high_water_mark: 100_000,
        }
    }

    /// The node's config file, every listener on its own 127.0.0.1 port.
    fn yaml(&self, data_dir: &Path, http: u16, grpc: u16, zmq: u16) -> String {
        let mode = if self.upstream.is_some() {
            "relayer"
        } else {
            "replicator"
        };
        let mut yaml = format!(
            "server:\n  mode: {mode}\n  data_dir: {}\n  namespaces: [{}]\n\
             http:\n  listen: 127.0.0.1:{http}\ngrpc:\n  listen: 127.0.0.1:{grpc}\n\
             notify:\n  bind: tcp://127.0.0.1:{zmq}\n  high_water_mark: {}\n\
             wal:\n  fsync: {}\n  segment_size_bytes: {}\n\
             memtable:\n  size_bytes: {}\nlog:\n  level: warn\n",
            data_dir.display(),
            self.namespace,
            self.notify_high_water_mark,
            self.fsync,
            self.segment_bytes,
            self.memtable_bytes,
        );
        if let Some(up) = &self.upstream {
            yaml.push_str(&format!(
                "replication:\n  upstream: {up}\n  max_lag_records: 100000000\n"
            ));
        }
        yaml
    }
}

/// A running `unisondb` node and its ports: a [`NodeProcess`] (stderr in `<dir>/server.log`, killed
/// on drop) plus what the benchmarks read off it.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub http: u16,
    pub grpc: u16,
    pub zmq: u16,
    process: NodeProcess,
}

impl Node {
    /// Starts `bin server --config <root>/<name>/config.yaml`; does not wait for it to be ready.
    pub fn spawn(bin: &Path, root: &Path, spec: &NodeSpec) -> Result<Node> {
        let dir = root.join(&spec.name);
        let (http, grpc, zmq) = (free_port(), free_port(), free_port());
        let yaml = spec.yaml(&dir.join("data"), http, grpc, zmq);
        let mut process = NodeProcess::new(bin, &spec.name, &dir, yaml);
        process.start()?;
        Ok(Node {
            name: spec.name.clone(),
            dir,
            http,
            grpc,
            zmq,
            process,
        })
    }

    /// gRPC URL for a relayer to follow this node.
    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// Waits until `GET /readyz` answers 200; the error carries the server's log.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let client = HttpClient::new(self.http)?;
        let what = format!("{} to be ready", self.name);
        wait_for(&what, timeout, || {
            self.process.check_running().map_err(|e| e.to_string())?;
            Ok::<_, String>((client.get_status("/readyz").ok() == Some(200)).then_some(()))
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.log()))
    }

    /// (VmRSS, RssAnon) in KiB from `/proc`; VmRSS includes touched mmap'd file pages (RssFile).
    pub fn rss_kib(&self) -> (u64, u64) {
        self.process.pid().map(rss_kib).unwrap_or((0, 0))
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// CPU time so far in microseconds ([`cpu_us`]).
    pub fn cpu_us(&self) -> u64 {
        self.process.pid().map(cpu_us).unwrap_or(0)
    }
}

/// A running `redis-server` without persistence, on 127.0.0.1.
pub struct RedisServer {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    pub child: ChildGuard,
}

/// How to start a `redis-server`.
#[derive(Debug, Clone, Default)]
pub struct RedisSpec {
    /// Port of the primary to replicate (`--replicaof`).
    pub replica_of: Option<u16>,
    /// `--notify-keyspace-events KEA` (keyspace events for subscribers).
    pub keyspace_events: bool,
}

impl RedisServer {
    /// Starts `redis-server` (no RDB, no AOF) under `<root>/<name>` and waits until it accepts TCP.
    pub fn spawn(root: &Path, name: &str, spec: &RedisSpec) -> Result<RedisServer> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir);
        if spec.keyspace_events {
            cmd.args(["--notify-keyspace-events", "KEA"]);
        }
        if let Some(p) = spec.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &p.to_string()]);
        }
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = ChildGuard(
            cmd.stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("spawn redis-server (apt-get install -y redis-server)")?,
        );
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("redis {name} did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(RedisServer {
            name: name.into(),
            dir,
            port,
            child,
        })
    }

    /// `redis://` URL of this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// CPU time so far in microseconds ([`cpu_us`]).
    pub fn cpu_us(&self) -> u64 {
        cpu_us(self.child.0.id())
    }
}

/// CPU time (user + system, all threads, exited ones included) of process `pid` in microseconds,
/// from `/proc/PID/stat`; 0 when it is gone. Resolution is one clock tick (usually 10 ms), so
/// measure over many records.
pub fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11) // state .. cmajflt: utime is field 14 of the whole line, 12th after ')'
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    let ticks: u64 = f.iter().sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000 / hz
}

/// Whether `bin` is on `PATH`.
pub fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(bin).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayer_yaml_follows_upstream() {
        let mut spec = NodeSpec::new("r0", "bench");
        spec.upstream = Some("http://127.0.0.1:1".into());
        spec.fsync = Fsync::Interval;
        let y = spec.yaml(Path::new("/d"), 1, 2, 3);
        assert!(y.contains("mode: relayer"));
        assert!(y.contains("fsync: interval"));
        assert!(y.contains("upstream: http://127.0.0.1:1"));
        assert!(y.contains("namespaces: [bench]"));
    }
}
