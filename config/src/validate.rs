//! Rejects values that parse but that the node cannot run with.

use std::net::SocketAddr;

use crate::{Config, ConfigError, FsyncMode, Mode};

/// The namespace naming rule (`server.namespaces`): 1..=64 bytes of `[A-Za-z0-9_.-]`, not starting
/// with a dot. The storage engine applies the same rule when it opens a namespace.
pub fn validate_namespace(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid namespace name {name:?}"))
    }
}

/// `replication.upstream`: one address as before, or several (a hub group's members), each
/// `[http(s)://]host:port`, all with the same scheme, none twice, no empty entry.
fn validate_upstream_list(list: &str) -> Result<(), String> {
    if list.trim().is_empty() {
        return Ok(());
    }
    let entries: Vec<&str> = list.split(',').map(str::trim).collect();
    let mut schemes = std::collections::BTreeSet::new();
    for (i, a) in entries.iter().enumerate() {
        let bad = |why: &str| format!("replication.upstream: entry {} ({a:?}) {why}", i + 1);
        if a.is_empty() {
            return Err(bad("is empty"));
        }
        if a.contains(char::is_whitespace) {
            return Err(bad("contains whitespace"));
        }
        let (scheme, rest) = match a.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (s, rest),
            Some((s, _)) => return Err(bad(&format!("has scheme {s:?}; use http:// or https://"))),
            None => ("", *a),
        };
        schemes.insert(scheme);
        let hostport = rest.trim_end_matches('/');
        if entries.len() > 1 {
            match hostport.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return Err(bad("is not [http(s)://]host:port")),
            }
        }
        if entries[..i].contains(a) {
            return Err(bad("appears twice"));
        }
    }
    if schemes.len() > 1 {
        return Err(
            "replication.upstream: every address must use the same scheme (one TLS setting serves them all)"
                .into(),
        );
    }
    Ok(())
}

impl Config {
    /// Rejects values the node cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.server.namespaces.is_empty() {
            return bad("server.namespaces must name at least one namespace".into());
        }
        for ns in &self.server.namespaces {
            if let Err(e) = validate_namespace(ns) {
                return bad(format!("server.namespaces: {e}"));
            }
        }
        if self.server.data_dir.as_os_str().is_empty() {
            return bad("server.data_dir must not be empty".into());
        }
        for (key, addr) in [
            ("http.listen", &self.http.listen),
            ("grpc.listen", &self.grpc.listen),
        ] {
            if addr.parse::<SocketAddr>().is_err() {
                return bad(format!("{key}: {addr:?} is not an IP:port address"));
            }
        }
        for (ns, socket) in &self.notify.namespaces {
            if !self.server.namespaces.contains(ns) {
                return bad(format!(
                    "notify.namespaces.{ns}: {ns:?} is not in server.namespaces"
                ));
            }
            if socket.bind.is_empty() || socket.bind == self.notify.bind {
                return bad(format!(
                    "notify.namespaces.{ns}.bind must be set and differ from notify.bind"
                ));
            }
        }
        if !self.resp.listen.is_empty() && self.resp.listen.parse::<SocketAddr>().is_err() {
            return bad(format!(
                "resp.listen: {:?} is not an IP:port address",
                self.resp.listen
            ));
        }
        if self.wal.fsync == FsyncMode::Interval && self.wal.fsync_interval_ms.is_zero() {
            return bad("wal.fsync_interval_ms must be > 0 with fsync: interval".into());
        }
        if self.wal.segment_size_bytes < 64 << 10 {
            return bad("wal.segment_size_bytes must be at least 65536".into());
        }
        if self.memtable.size_bytes < 64 << 10 {
            return bad("memtable.size_bytes must be at least 65536".into());
        }
        if self.http.max_body_bytes == 0 || self.http.lob_max_bytes == 0 {
            return bad("http.max_body_bytes and http.lob_max_bytes must be > 0".into());
        }
        if self.http.txn_idle_timeout_secs.is_zero() || self.http.txn_max_lifetime_secs.is_zero() {
            return bad("http.txn_* timeouts must be > 0".into());
        }
        if self.http.tls_cert_file.is_empty() != self.http.tls_key_file.is_empty() {
            return bad("http.tls_cert_file and http.tls_key_file must be set together".into());
        }
        if !self.http.auth_token.is_empty() && !self.http.auth_token_file.is_empty() {
            return bad("set http.auth_token or http.auth_token_file, not both".into());
        }
        validate_upstream_list(&self.replication.upstream).map_err(ConfigError::Invalid)?;
        if let Some(c) = &self.cluster {
            if self.server.mode != Mode::Replicator {
                return bad("cluster: only a hub (server.mode: replicator) can be a member".into());
            }
            let members = c.members().map_err(ConfigError::Invalid)?;
            if members.is_empty() {
                return bad("cluster.peers must list every member, this one included".into());
            }
            if let Some(id) = c.node_id {
                if !members.iter().any(|(m, _)| *m == id) {
                    return bad(format!("cluster.node_id {id} is not in cluster.peers"));
                }
            }
            if c.heartbeat_ms == 0 || c.election_timeout_ms < 2 * c.heartbeat_ms {
                return bad(
                    "cluster: heartbeat_ms must be > 0 and election_timeout_ms at least twice it"
                        .into(),
                );
            }
            if !c.advertise_http.is_empty() && !c.advertise_http.contains(':') {
                return bad("cluster.advertise_http must be host:port".into());
            }
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return bad(format!(
                "log.level: {:?} is not a valid filter",
                self.log.level
            ));
        }
        Ok(())
    }
}
