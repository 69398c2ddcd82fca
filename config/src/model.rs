//! The config tree, section by section in docs/CONFIG.md order, with its defaults.
//!
//! Field order is the serialized order: the operator's rendered file (and its hash) depends on it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec;

/// Writable hub or read-only follower (`server.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Writable hub: owns its namespaces and streams their WAL.
    #[default]
    Replicator,
    /// Read-only follower of `replication.upstream`.
    Relayer,
}

impl Mode {
    /// The spelling used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Replicator => "replicator",
            Mode::Relayer => "relayer",
        }
    }
}

/// When the WAL is fsynced (`wal.fsync`); the period of `Interval` is `wal.fsync_interval_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Before every acknowledgement.
    #[default]
    Always,
    /// Every `wal.fsync_interval_ms`.
    Interval,
    /// Never (the OS decides).
    Never,
}

impl FsyncMode {
    /// The spelling used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncMode::Always => "always",
            FsyncMode::Interval => "interval",
            FsyncMode::Never => "never",
        }
    }
}

/// Log line format (`log.format`, also `--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The spelling used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The whole node configuration. Every key has a default; unknown keys are errors.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    pub notify: NotifyConfig,
    pub wal: WalConfig,
    pub memtable: MemtableConfig,
    pub replication: ReplicationConfig,
    pub log: LogConfig,
    /// Absent from rendered configs while off, so existing ConfigMaps (and their hashes) stay as they are.
    #[serde(skip_serializing_if = "RespConfig::is_off")]
    pub resp: RespConfig,
    /// Continuous WAL archiving and base backups in object storage; absent from rendered configs
    /// while off.
    #[serde(skip_serializing_if = "ArchiveConfig::is_off")]
    pub archive: ArchiveConfig,
    /// Hub high availability: the Raft group this hub belongs to. Absent (the default): a single
    /// hub, exactly as without the section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// `cluster.*`: a group of hubs (`mode: replicator`) that commit each write on a quorum and elect
/// a leader by themselves (one Raft group per namespace).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This member's id; absent: the hostname's trailing ordinal + 1 (`hub-0` -> 1, a StatefulSet pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// Every member's gRPC address, this one included: `host:port` (member i has id i + 1) or
    /// `ID=host:port`; from the environment, a comma-separated list.
    #[serde(deserialize_with = "codec::string_list")]
    pub peers: Vec<String>,
    /// `host:port` other members use to reach this member's HTTP API (followers proxy writes to the
    /// leader there); empty: this member's peer host with the `http.listen` port.
    pub advertise_http: String,
    /// Minimum election timeout; the maximum (and the leader's lease) is twice this. A crashed
    /// leader is replaced after the lease plus one or two random timeouts.
    pub election_timeout_ms: u64,
    /// How often the leader sends heartbeats.
    pub heartbeat_ms: u64,
    /// Build a Raft snapshot (a copy of the B+Tree at its checkpoint) every this many log
    /// entries, so the log can be purged; 0: never (the WAL keeps the whole log).
    pub snapshot_every_entries: u64,
    /// Log entries kept below the last snapshot when the log is purged, so a member that is
    /// only a little behind catches up from the log rather than by snapshot.
    pub keep_log_entries: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            peers: Vec::new(),
            advertise_http: String::new(),
            election_timeout_ms: 400,
            heartbeat_ms: 100,
            snapshot_every_entries: 50_000,
            keep_log_entries: 10_000,
        }
    }
}

impl ClusterConfig {
    /// The members as `(id, host:port)`, in id order.
    pub fn members(&self) -> Result<Vec<(u64, String)>, String> {
        let mut out = Vec::with_capacity(self.peers.len());
        for (i, p) in self.peers.iter().enumerate() {
            let (id, addr) = match p.split_once('=') {
                Some((id, addr)) => (
                    id.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("cluster.peers: {p:?}: the id must be a number"))?,
                    addr.trim().to_string(),
                ),
                None => (i as u64 + 1, p.trim().to_string()),
            };
            if id == 0 {
                return Err(format!("cluster.peers: {p:?}: ids start at 1"));
            }
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return Err(format!("cluster.peers: {p:?} is not host:port")),
            }
            if out.iter().any(|(other, _)| *other == id) {
                return Err(format!("cluster.peers: id {id} appears twice"));
            }
            out.push((id, addr));
        }
        out.sort();
        Ok(out)
    }

    /// This member's id: `node_id`, else the trailing number of `hostname` + 1.
    pub fn resolve_node_id(&self, hostname: &str) -> Result<u64, String> {
        if let Some(id) = self.node_id {
            return Ok(id);
        }
        let digits: String = hostname
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        digits.parse::<u64>().map(|n| n + 1).map_err(|_| {
            format!("cluster.node_id is not set and the hostname {hostname:?} ends in no ordinal")
        })
    }
}

/// `server.*`: role, storage and the namespaces served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub mode: Mode,
    pub data_dir: PathBuf,
    /// Served namespaces; from the environment, a comma-separated list.
    #[serde(deserialize_with = "codec::string_list")]
    pub namespaces: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Replicator,
            data_dir: PathBuf::from("./data"),
            namespaces: vec!["default".to_string()],
        }
    }
}

/// `http.*`: the API listener. Empty file names mean "not set".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `IP:port`.
    pub listen: String,
    pub max_body_bytes: u64,
    pub lob_max_bytes: u64,
    pub auth_token: String,
    pub auth_token_file: String,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// A transaction untouched this long is aborted by the reaper (whole seconds in the file).
    #[serde(with = "codec::secs")]
    pub txn_idle_timeout_secs: Duration,
    /// A transaction older than this is aborted whatever its activity (whole seconds in the file).
    #[serde(with = "codec::secs")]
    pub txn_max_lifetime_secs: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:4000".into(),
            max_body_bytes: 4 << 20,
            lob_max_bytes: 16 << 30,
            auth_token: String::new(),
            auth_token_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            txn_idle_timeout_secs: Duration::from_secs(60),
            txn_max_lifetime_secs: Duration::from_secs(600),
        }
    }
}

/// `grpc.*`: the replication listener; with `tls_ca_file` set, client certificates are required.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// `IP:port`.
    pub listen: String,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    pub tls_ca_file: String,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:4001".into(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_ca_file: String::new(),
        }
    }
}

/// `notify.*`: the ZeroMQ PUB sockets for change notifications.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    pub enabled: bool,
    /// ZeroMQ endpoint of the socket carrying every namespace, e.g. `tcp://0.0.0.0:4002`; empty
    /// means no shared socket (only the per-namespace ones below).
    pub bind: String,
    pub high_water_mark: u64,
    /// Extra sockets carrying one namespace each, as UnisonDB's `[notifier_config.<ns>]` sets them up.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, NamespaceSocket>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: "tcp://0.0.0.0:4002".into(),
            high_water_mark: 100_000,
            namespaces: BTreeMap::new(),
        }
    }
}

/// `notify.namespaces.<ns>`: a PUB socket of one namespace (UnisonDB's defaults: hwm 10000, linger 0).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceSocket {
    /// ZeroMQ endpoint, e.g. `tcp://*:5555`.
    pub bind: String,
    pub high_water_mark: u64,
    /// How long unsent messages are kept when the socket closes (whole milliseconds).
    pub linger_ms: u64,
}

impl Default for NamespaceSocket {
    fn default() -> Self {
        Self {
            bind: "tcp://*:5555".into(),
            high_water_mark: 10_000,
            linger_ms: 0,
        }
    }
}

/// `wal.*`: durability, segment size and retention of the write-ahead log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    pub fsync: FsyncMode,
    /// Fsync period with `fsync: interval` (whole milliseconds in the file).
    #[serde(with = "codec::millis")]
    pub fsync_interval_ms: Duration,
    pub segment_size_bytes: u64,
    pub retention_max_bytes: u64,
    /// Age bound of retained segments (whole seconds in the file).
    #[serde(with = "codec::secs")]
    pub retention_max_age_secs: Duration,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            fsync: FsyncMode::Always,
            fsync_interval_ms: Duration::from_millis(10),
            segment_size_bytes: 64 << 20,
            retention_max_bytes: 1 << 30,
            retention_max_age_secs: Duration::from_secs(86_400),
        }
    }
}

/// `memtable.*`: size at which the memtable is sealed and flushed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MemtableConfig {
    pub size_bytes: u64,
}

impl Default for MemtableConfig {
    fn default() -> Self {
        Self {
            size_bytes: 64 << 20,
        }
    }
}

/// `replication.*`: what this node follows and how it authenticates upstream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Relayer: gRPC address of the upstream, e.g. `http://hub-0.hub:4001`; or every member of a
    /// hub group (a list, or comma-separated): the relayer prefers a follower, falls back to the
    /// leader and moves on when its member fails. Kept as one comma-separated string.
    #[serde(deserialize_with = "codec::comma_joined")]
    pub upstream: String,
    /// Hub: namespace -> upstream of the hub that owns it; from the environment, `a=url,b=url`.
    #[serde(deserialize_with = "codec::string_map")]
    pub mirrors: BTreeMap<String, String>,
    pub max_lag_records: u64,
    /// `/readyz` fails once a followed namespace has been out of sync with its upstream for longer
    /// than this many seconds. Absent (the default): no bound, so a relayer cut off from its upstream
    /// stays in service with the data it has; reads say how stale it is (`x-unisondb-lag-seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_staleness_seconds: Option<u64>,
    pub tls_ca_file: String,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Relayer: follow the WAL archived in object storage (bootstrap from its latest base backup),
    /// before or instead of `upstream`. Absent: gRPC only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreConfig>,
}

impl ReplicationConfig {
    /// The addresses of `upstream`, in the order given (empty when none is set).
    pub fn upstreams(&self) -> Vec<String> {
        split_upstreams(&self.upstream)
    }
}

/// Splits an upstream list (`a,b,c`; a single address is a list of one).
pub fn split_upstreams(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            upstream: String::new(),
            mirrors: BTreeMap::new(),
            max_lag_records: 10_000,
            max_staleness_seconds: None,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            object_store: None,
        }
    }
}

/// `replication.object_store.*`: an S3-compatible bucket a relayer reads the archived WAL from
/// (objects under `<prefix>/<namespace>/wal/` and `<prefix>/<namespace>/base/<id>/`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStoreConfig {
    /// `http(s)://host:port` of an S3-compatible server; empty: AWS S3 for `region`.
    pub endpoint: String,
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`; may be empty.
    pub prefix: String,
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted servers need.
    pub path_style: bool,
    /// AWS shared-credentials file (profile `default`), e.g. a mounted Secret; empty: the
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` environment variables.
    pub credentials_file: String,
    /// PEM CA bundle to trust for an `https` endpoint; empty: the system roots.
    pub ca_file: String,
    /// How often to list the store for new WAL objects.
    pub poll_interval_ms: u64,
    /// Relayer with a gRPC `upstream` too: after this many seconds without a stream from the
    /// upstream it follows the store again (and returns to gRPC once the upstream is back).
    pub fallback_after_seconds: u64,
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            bucket: String::new(),
            prefix: String::new(),
            region: "us-east-1".into(),
            path_style: true,
            credentials_file: String::new(),
            ca_file: String::new(),
            poll_interval_ms: 1000,
            fallback_after_seconds: 30,
        }
    }
}

/// `archive.*`: this node uploads sealed WAL segments (and the open tail every
/// `max_delay_seconds`) and its base backups to an S3-compatible store. Off unless `enabled`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    pub enabled: bool,
    /// As in `replication.object_store`.
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub path_style: bool,
    pub credentials_file: String,
    pub ca_file: String,
    /// Upper bound on how long an acknowledged record waits before it is in the store.
    pub max_delay_seconds: u64,
    /// Base backups kept in the store (older ones, and WAL only they need, are deleted); 0 keeps all.
    pub retain_base_backups: u32,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        let store = ObjectStoreConfig::default();
        Self {
            enabled: false,
            endpoint: store.endpoint,
            bucket: store.bucket,
            prefix: store.prefix,
            region: store.region,
            path_style: store.path_style,
            credentials_file: store.credentials_file,
            ca_file: store.ca_file,
            max_delay_seconds: 10,
            retain_base_backups: 7,
        }
    }
}

impl ArchiveConfig {
    /// Whether there is nothing to render: archiving off and no bucket (a bucket alone still
    /// receives base backups, so it must survive a render and a reload).
    pub fn is_off(&self) -> bool {
        !self.enabled && self.bucket.trim().is_empty()
    }

    /// The bucket this archive writes to, in the shape readers use.
    pub fn store(&self) -> ObjectStoreConfig {
        ObjectStoreConfig {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            credentials_file: self.credentials_file.clone(),
            ca_file: self.ca_file.clone(),
            ..ObjectStoreConfig::default()
        }
    }
}

/// `log.*`: format and `tracing` filter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive, e.g. `info` or `info,unisondb=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `resp.*`: the Redis-protocol (RESP2/RESP3) listener for the key-value model; off unless set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RespConfig {
    /// `IP:port` (6379 in examples); empty: no RESP listener.
    pub listen: String,
}

impl RespConfig {
    /// Whether the listener is off (nothing to render).
    pub fn is_off(&self) -> bool {
        self.listen.is_empty()
    }
}
