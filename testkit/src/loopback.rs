//! The usual test topology: `unisondb` nodes on 127.0.0.1, each listener on its own free port, a hub
//! (`replicator`) or a relayer following a hub's gRPC address. One config template for every test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::node::NodeProcess;
use crate::port::free_port;
use crate::Error;

/// The three listeners of a node on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub grpc: u16,
    pub zmq: u16,
}

impl Ports {
    /// Three distinct free ports.
    pub fn free() -> Ports {
        Ports {
            http: free_port(),
            grpc: free_port(),
            zmq: free_port(),
        }
    }

    /// `http://127.0.0.1:<http><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// The gRPC address a relayer follows.
    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }
}

/// Config of a loopback node with its data in `<dir>/data`: a relayer of `upstream` when given, else a
/// hub; `replication_extra` is appended inside the relayer's `replication:` section (indented keys).
pub fn loopback_config(
    dir: &Path,
    ports: Ports,
    namespaces: &[&str],
    upstream: Option<&str>,
    replication_extra: &str,
) -> String {
    let mode = if upstream.is_some() {
        "relayer"
    } else {
        "replicator"
    };
    let mut yaml = format!(
        "server:\n  mode: {mode}\n  data_dir: {}\n  namespaces: [{}]\nhttp:\n  listen: 127.0.0.1:{}\n\
         grpc:\n  listen: 127.0.0.1:{}\nnotify:\n  bind: tcp://127.0.0.1:{}\nlog:\n  level: info\n",
        dir.join("data").display(),
        namespaces.join(", "),
        ports.http,
        ports.grpc,
        ports.zmq,
    );
    if let Some(up) = upstream {
        yaml.push_str(&format!(
            "replication:\n  upstream: {up}\n{replication_extra}"
        ));
    }
    yaml
}

/// One `unisondb` process on loopback (its config from [`loopback_config`], data in `<root>/<name>/data`),
/// SIGKILLed on drop if still running: the node most process tests start, in one place.
pub struct LoopbackNode {
    pub dir: PathBuf,
    pub ports: Ports,
    pub proc: NodeProcess,
}

impl LoopbackNode {
    /// Starts `bin` as a hub (no `upstream`) or a relayer of `upstream`, with `env` set and its log
    /// printed if the test panics.
    pub fn start(
        bin: &str,
        root: &Path,
        name: &str,
        namespaces: &[&str],
        upstream: Option<&str>,
        replication_extra: &str,
        env: &[(&str, &str)],
    ) -> Result<LoopbackNode, Error> {
        let dir = root.join(name);
        let ports = Ports::free();
        let yaml = loopback_config(&dir, ports, namespaces, upstream, replication_extra);
        let mut proc = NodeProcess::new(bin, name, &dir, yaml).dump_log_on_panic();
        for (k, v) in env {
            proc = proc.env(k, *v);
        }
        proc.start()?;
        Ok(LoopbackNode { dir, ports, proc })
    }

    /// `http://127.0.0.1:<http><path>`.
    pub fn url(&self, path: &str) -> String {
        self.ports.url(path)
    }

    /// The gRPC address relayers of this node follow.
    pub fn grpc_url(&self) -> String {
        self.ports.grpc_url()
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, c: &reqwest::Client, timeout: Duration) -> Result<(), Error> {
        self.proc
            .wait_http_ok(c, &self.url("/readyz"), timeout)
            .await
    }

    /// SIGTERM, then waits for an exit that must be clean (status 0).
    pub fn stop(&mut self, timeout: Duration) -> Result<(), Error> {
        match self.proc.terminate(timeout)? {
            Some(status) if !status.success() => Err(Error::Exited {
                name: self.proc.name().to_string(),
                status,
                log: self.proc.log(),
            }),
            _ => Ok(()),
        }
    }

    /// The namespace's last LSN (`GET /api/v1/{ns}/offset`); `None` while the node does not answer.
    pub async fn lsn(&self, c: &reqwest::Client, namespace: &str) -> Option<u64> {
        let r = c
            .get(self.url(&format!("/api/v1/{namespace}/offset")))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json::<serde_json::Value>().await.ok()?["lsn"].as_u64()
    }
}

/// A hub serving only `default` on 127.0.0.1 (gRPC and ZeroMQ on any free port) with 64 KiB WAL
/// segments and memtable, so a few hundred writes roll segments and flush: the node of the backup
/// tests. `extra_yaml` adds whole sections (e.g. `archive:`); returns the process (not started,
/// its log printed if the test panics) and its HTTP port.
pub fn small_node(bin: &str, dir: &Path, name: &str, extra_yaml: &str) -> (NodeProcess, u16) {
    let http = crate::free_port();
    let yaml = format!(
        "server:\n  data_dir: {}\n  namespaces: [default]\nhttp:\n  listen: 127.0.0.1:{http}\n\
         grpc:\n  listen: 127.0.0.1:0\nnotify:\n  bind: tcp://127.0.0.1:0\n\
         wal:\n  segment_size_bytes: 65536\nmemtable:\n  size_bytes: 65536\n{extra_yaml}",
        dir.join("data").display()
    );
    (
        NodeProcess::new(bin, name, dir, yaml).dump_log_on_panic(),
        http,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayer_config_names_its_upstream_and_extra_keys() {
        let p = Ports::free();
        let hub = loopback_config(Path::new("/d"), p, &["a", "b"], None, "");
        assert!(hub.contains("mode: replicator") && hub.contains("namespaces: [a, b]"));
        assert!(!hub.contains("replication:"));
        let r = loopback_config(
            Path::new("/d"),
            p,
            &["a"],
            Some("http://h:1"),
            "  max_staleness_seconds: 2\n",
        );
        assert!(r.contains("mode: relayer"));
        assert!(r.ends_with("replication:\n  upstream: http://h:1\n  max_staleness_seconds: 2\n"));
        assert!(r.contains(&format!("listen: 127.0.0.1:{}", p.grpc)));
    }
}
