//! The usual test topology: `unisondb` nodes on 127.0.0.1, each listener on its own free port, a hub
//! (`replicator`) or a relayer following a hub's gRPC address. One config template for every test.

use std::path::Path;

use crate::port::free_port;

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
