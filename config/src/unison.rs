//! The original UnisonDB's TOML configuration (`http_port`, `[storage_config]`, `[relayer_config.x]`,
//! ...), accepted as it is and mapped onto [`Config`] (docs/CONFIG.md, "UnisonDB's config.toml").
//!
//! A file is in UnisonDB's format when one of its top-level keys is one of UnisonDB's
//! ([`UNISON_TOP_LEVEL`]); the two formats share no top-level key. Every UnisonDB key is either
//! mapped, or accepted with one warning naming it (it has no meaning here: `db_engine`, `pprof_*`,
//! ...). A key unknown to UnisonDB's format is an error naming the key and its line. Our own
//! sections (`[wal]`, `[notify]`, ...) may sit beside UnisonDB's keys and override the mapping.

use std::collections::BTreeMap;
use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::human::{parse_go_duration, parse_size};
use crate::{Config, FsyncMode, NamespaceSocket};

/// UnisonDB's top-level keys and tables; any of them makes a file UnisonDB-format.
pub const UNISON_TOP_LEVEL: &[&str] = &[
    "http_port",
    "listen_ip",
    "pprof_enable",
    "grpc_config",
    "storage_config",
    "pprof_config",
    "relayer_config",
    "wal_io_global_limiter",
    "log_config",
    "limiter",
    "fuzz_config",
    "write_notify_config",
    "notifier_config",
    "raft_config",
];

/// True when the parsed top-level table has one of UnisonDB's keys.
pub fn is_unison(table: &toml::Table) -> bool {
    table.keys().any(|k| UNISON_TOP_LEVEL.contains(&k.as_str()))
}

/// A size: a string with a unit (`"16MB"`) or a plain number of bytes.
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self, key: &str) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(s) => parse_size(s).map_err(|e| format!("{key}: {e}")),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UFile {
    http_port: Option<u16>,
    listen_ip: Option<String>,
    pprof_enable: Option<toml::Value>,
    grpc_config: Option<UGrpc>,
    storage_config: Option<UStorage>,
    pprof_config: Option<toml::Value>,
    relayer_config: Option<BTreeMap<String, URelay>>,
    wal_io_global_limiter: Option<toml::Value>,
    log_config: Option<ULog>,
    limiter: Option<toml::Value>,
    fuzz_config: Option<toml::Value>,
    write_notify_config: Option<UWriteNotify>,
    notifier_config: Option<BTreeMap<String, UNotifier>>,
    raft_config: Option<toml::Value>,
    // Our own sections, allowed beside UnisonDB's keys; they override the mapping.
    server: Option<toml::Value>,
    http: Option<toml::Value>,
    grpc: Option<toml::Value>,
    notify: Option<toml::Value>,
    wal: Option<toml::Value>,
    memtable: Option<toml::Value>,
    replication: Option<toml::Value>,
    log: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UGrpc {
    listen_ip: Option<String>,
    port: Option<u16>,
    cert_path: Option<String>,
    key_path: Option<String>,
    ca_path: Option<String>,
    allow_insecure: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UStorage {
    base_dir: Option<String>,
    namespaces: Option<Vec<String>>,
    bytes_per_sync: Option<Size>,
    segment_size: Option<Size>,
    arena_size: Option<Size>,
    db_engine: Option<String>,
    btree_flush_interval: Option<String>,
    btree_config: Option<UBtree>,
    wal_fsync_interval: Option<String>,
    wal_cleanup_config: Option<UCleanup>,
    event_log_mode: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UBtree {
    no_sync: Option<bool>,
    mmap_size: Option<Size>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UCleanup {
    enabled: Option<bool>,
    max_age: Option<String>,
    min_segments: Option<i64>,
    max_segments: Option<i64>,
    interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UWriteNotify {
    enabled: Option<bool>,
    max_delay: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UNotifier {
    /// Documented spelling: a ZeroMQ endpoint.
    bind_address: Option<String>,
    /// Spelling of later versions: a port, bound on every interface.
    bind_port: Option<u16>,
    high_water_mark: Option<u64>,
    linger_time: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct URelay {
    namespaces: Option<Vec<String>>,
    cert_path: Option<String>,
    key_path: Option<String>,
    ca_path: Option<String>,
    upstream_address: Option<String>,
    grpc_service_config: Option<String>,
    lsn_lag_threshold: Option<u64>,
    segment_lag_threshold: Option<u64>,
    allow_insecure: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ULog {
    log_level: Option<String>,
    min_level_percents: Option<toml::Value>,
    disable_timestamp: Option<bool>,
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A `toml` error as "line N: message" (the message names the key for unknown fields).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let line = line_of(text, span.start);
            let src = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}: {msg} (`{src}`)")
        }
        None => msg.to_string(),
    }
}

/// Collects "key: why it is ignored" warnings, each key once.
#[derive(Default)]
struct Warnings(Vec<String>);

impl Warnings {
    fn ignored<T>(&mut self, v: &Option<T>, key: &str, why: &str) {
        if v.is_some() {
            self.0
                .push(format!("UnisonDB key {key} has no effect here: {why}"));
        }
    }
}

/// The listen address `ip:port`; UnisonDB's empty `listen_ip` means every interface.
fn listen(ip: Option<&str>, port: u16) -> String {
    match ip.map(str::trim).filter(|s| !s.is_empty()) {
        Some(ip) if ip.contains(':') && !ip.starts_with('[') => format!("[{ip}]:{port}"),
        Some(ip) => format!("{ip}:{port}"),
        None => format!("0.0.0.0:{port}"),
    }
}

/// Parses UnisonDB-format TOML text over the defaults. Returns the config (not validated, no
/// environment) and the warnings for keys that have no meaning here.
pub fn parse(text: &str) -> Result<(Config, Vec<String>), String> {
    let f: UFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    let mut w = Warnings::default();
    let mut c = Config::default();

    // Top level.
    if let Some(port) = f.http_port {
        c.http.listen = listen(f.listen_ip.as_deref(), port);
    }
    w.ignored(
        &f.pprof_enable,
        "pprof_enable",
        "no pprof endpoint (use /metrics)",
    );
    w.ignored(
        &f.pprof_config,
        "pprof_config",
        "no pprof endpoint (use /metrics)",
    );
    w.ignored(
        &f.wal_io_global_limiter,
        "wal_io_global_limiter",
        "replication is flow-controlled per stream",
    );
    w.ignored(&f.limiter, "limiter", "reconnects use jittered backoff");
    w.ignored(&f.fuzz_config, "fuzz_config", "no built-in fuzzer");
    if let Some(d) = f
        .write_notify_config
        .as_ref()
        .and_then(|n| n.max_delay.as_ref())
    {
        parse_go_duration(d).map_err(|e| format!("write_notify_config.max_delay: {e}"))?;
    }
    if let Some(n) = &f.write_notify_config {
        let _ = n.enabled;
    }
    w.ignored(
        &f.write_notify_config,
        "write_notify_config",
        "WAL readers are woken on every commit",
    );
    w.ignored(
        &f.raft_config,
        "raft_config",
        "Raft hub groups are not configured through this file",
    );

    // gRPC.
    if let Some(g) = f.grpc_config {
        let port = g.port.unwrap_or_else(|| {
            c.grpc
                .listen
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(4001)
        });
        let ip = g.listen_ip.as_deref().or(f.listen_ip.as_deref());
        c.grpc.listen = listen(ip, port);
        c.grpc.tls_cert_file = g.cert_path.unwrap_or_default();
        c.grpc.tls_key_file = g.key_path.unwrap_or_default();
        c.grpc.tls_ca_file = g.ca_path.unwrap_or_default();
        if g.allow_insecure == Some(true) && !c.grpc.tls_cert_file.is_empty() {
            w.0.push(
                "UnisonDB key grpc_config.allow_insecure has no effect here: cert_path/key_path are set, so gRPC serves TLS"
                    .into(),
            );
        }
    } else if let Some(ip) = f.listen_ip.as_deref() {
        c.grpc.listen = listen(Some(ip), 4001);
    }

    // Storage.
    if let Some(s) = f.storage_config {
        if let Some(dir) = s.base_dir {
            c.server.data_dir = PathBuf::from(dir);
        }
        if let Some(ns) = s.namespaces {
            c.server.namespaces = ns;
        }
        if let Some(sz) = &s.segment_size {
            c.wal.segment_size_bytes = sz.bytes("storage_config.segment_size")?;
        }
        if let Some(sz) = &s.arena_size {
            c.memtable.size_bytes = sz.bytes("storage_config.arena_size")?;
        }
        if let Some(sz) = &s.bytes_per_sync {
            sz.bytes("storage_config.bytes_per_sync")?;
        }
        w.ignored(
            &s.bytes_per_sync,
            "storage_config.bytes_per_sync",
            "the WAL is fsynced by wal.fsync (always by default)",
        );
        w.ignored(
            &s.db_engine,
            "storage_config.db_engine",
            "the B+Tree is built in (no LMDB/BoltDB choice)",
        );
        if let Some(d) = &s.btree_flush_interval {
            parse_go_duration(d)
                .map_err(|e| format!("storage_config.btree_flush_interval: {e}"))?;
        }
        w.ignored(
            &s.btree_flush_interval,
            "storage_config.btree_flush_interval",
            "the memtable is flushed when it reaches memtable.size_bytes",
        );
        if let Some(b) = &s.btree_config {
            if let Some(sz) = &b.mmap_size {
                sz.bytes("storage_config.btree_config.mmap_size")?;
            }
            w.ignored(
                &b.no_sync,
                "storage_config.btree_config.no_sync",
                "B+Tree commits are always synced (WAL fsync is wal.fsync)",
            );
            w.ignored(
                &b.mmap_size,
                "storage_config.btree_config.mmap_size",
                "the B+Tree mapping grows with the file",
            );
        }
        if let Some(d) = &s.wal_fsync_interval {
            let every = parse_go_duration(d)
                .map_err(|e| format!("storage_config.wal_fsync_interval: {e}"))?;
            if every.is_zero() {
                c.wal.fsync = FsyncMode::Always;
            } else {
                c.wal.fsync = FsyncMode::Interval;
                c.wal.fsync_interval_ms = every.max(std::time::Duration::from_millis(1));
            }
        }
        w.ignored(
            &s.event_log_mode,
            "storage_config.event_log_mode",
            "every namespace accepts KV, row and LOB writes",
        );
        if let Some(cl) = s.wal_cleanup_config {
            for (key, d) in [("interval", &cl.interval), ("max_age", &cl.max_age)] {
                if let Some(d) = d {
                    parse_go_duration(d)
                        .map_err(|e| format!("storage_config.wal_cleanup_config.{key}: {e}"))?;
                }
            }
            if cl.enabled == Some(true) {
                if let Some(age) = &cl.max_age {
                    let age = parse_go_duration(age).unwrap_or_default();
                    c.wal.retention_max_age_secs =
                        std::time::Duration::from_secs(age.as_secs().max(1));
                }
            } else if cl.max_age.is_some() {
                w.0.push(
                    "UnisonDB key storage_config.wal_cleanup_config.max_age has no effect here: cleanup is disabled (enabled = false); wal.retention_max_bytes/retention_max_age_secs still bound the WAL kept after a flush"
                        .into(),
                );
            }
            w.ignored(
                &cl.interval,
                "storage_config.wal_cleanup_config.interval",
                "retention is applied after every flush",
            );
            w.ignored(
                &cl.min_segments,
                "storage_config.wal_cleanup_config.min_segments",
                "the active segment and unflushed segments are always kept",
            );
            w.ignored(
                &cl.max_segments,
                "storage_config.wal_cleanup_config.max_segments",
                "use wal.retention_max_bytes",
            );
        }
    }

    // Logging.
    if let Some(l) = f.log_config {
        if let Some(level) = l.log_level {
            c.log.level = level.to_ascii_lowercase();
        }
        w.ignored(
            &l.min_level_percents,
            "log_config.min_level_percents",
            "logs are not sampled",
        );
        w.ignored(
            &l.disable_timestamp,
            "log_config.disable_timestamp",
            "use log.format",
        );
    }

    // Notifications: UnisonDB has one PUB socket per configured namespace and no shared one.
    let notifiers = f.notifier_config.unwrap_or_default();
    c.notify.enabled = !notifiers.is_empty();
    c.notify.bind = String::new();
    for (ns, n) in notifiers {
        let defaults = NamespaceSocket::default();
        let bind = match (n.bind_address, n.bind_port) {
            (Some(a), _) => a,
            (None, Some(p)) => format!("tcp://*:{p}"),
            (None, None) => defaults.bind,
        };
        c.notify.namespaces.insert(
            ns,
            NamespaceSocket {
                bind,
                high_water_mark: n.high_water_mark.unwrap_or(defaults.high_water_mark),
                linger_ms: n.linger_time.unwrap_or(defaults.linger_ms),
            },
        );
    }

    // Relayer groups: one upstream for everything, else an upstream per namespace.
    let groups = f.relayer_config.unwrap_or_default();
    if !groups.is_empty() {
        map_relayers(&mut c, groups, &mut w)?;
    }

    // Our own sections override the mapping.
    let ours: toml::Table = [
        ("server", f.server),
        ("http", f.http),
        ("grpc", f.grpc),
        ("notify", f.notify),
        ("wal", f.wal),
        ("memtable", f.memtable),
        ("replication", f.replication),
        ("log", f.log),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
    .collect();
    if !ours.is_empty() {
        let text = toml::to_string(&ours).map_err(|e| e.to_string())?;
        c = Figment::from(Serialized::defaults(c))
            .merge(Toml::string(&text))
            .extract()
            .map_err(|e| {
                let key = e.path.join(".");
                format!("{key}: {}", e.kind)
            })?;
    }
    Ok((c, w.0))
}

fn map_relayers(
    c: &mut Config,
    groups: BTreeMap<String, URelay>,
    w: &mut Warnings,
) -> Result<(), String> {
    let mut per_ns: BTreeMap<String, String> = BTreeMap::new();
    let mut tls: Option<(String, String, String, String)> = None;
    let mut lag: Option<u64> = None;
    for (name, g) in groups {
        let key = |k: &str| format!("relayer_config.{name}.{k}");
        let upstream = g
            .upstream_address
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| format!("{} must be set", key("upstream_address")))?;
        let namespaces = g.namespaces.unwrap_or_else(|| c.server.namespaces.clone());
        for ns in namespaces {
            if let Some(prev) = per_ns.insert(ns.clone(), upstream.clone()) {
                if prev != upstream {
                    return Err(format!(
                        "{}: namespace {ns:?} is already followed from {prev}",
                        key("namespaces")
                    ));
                }
            }
            if !c.server.namespaces.contains(&ns) {
                c.server.namespaces.push(ns);
            }
        }
        let paths = (
            g.ca_path.unwrap_or_default(),
            g.cert_path.unwrap_or_default(),
            g.key_path.unwrap_or_default(),
            name.clone(),
        );
        match &tls {
            Some(t) if (&t.0, &t.1, &t.2) != (&paths.0, &paths.1, &paths.2) => {
                return Err(format!(
                    "relayer_config.{name}: TLS files differ from relayer_config.{}; one set of client TLS files serves every upstream here",
                    t.3
                ));
            }
            Some(_) => {}
            None => tls = Some(paths),
        }
        if let Some(l) = g.lsn_lag_threshold.or(g.segment_lag_threshold) {
            lag = Some(lag.map_or(l, |m: u64| m.min(l)));
        }
        w.ignored(
            &g.segment_lag_threshold,
            &key("segment_lag_threshold"),
            "lag is counted in records (mapped onto replication.max_lag_records)",
        );
        w.ignored(
            &g.grpc_service_config,
            &key("grpc_service_config"),
            "reconnects use jittered backoff",
        );
        w.ignored(
            &g.allow_insecure,
            &key("allow_insecure"),
            "without ca_path the upstream is reached in plaintext",
        );
    }
    if let Some((ca, cert, key, _)) = tls {
        c.replication.tls_ca_file = ca;
        c.replication.tls_cert_file = cert;
        c.replication.tls_key_file = key;
    }
    if let Some(l) = lag {
        c.replication.max_lag_records = l.max(1);
    }
    let upstreams: std::collections::BTreeSet<&String> = per_ns.values().collect();
    let covers_all = c.server.namespaces.iter().all(|ns| per_ns.contains_key(ns));
    if upstreams.len() == 1 && covers_all {
        c.replication.upstream = per_ns.values().next().cloned().unwrap_or_default();
    } else {
        c.replication.mirrors = per_ns;
    }
    // The mode stays the command's: `unisondb relay|replica` follow, `unisondb server` writes.
    Ok(())
}
