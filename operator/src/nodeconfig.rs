//! Renders the node's config file (docs/CONFIG.md) from a hub or relayer spec. Pure: the same input
//! always yields byte-identical YAML, so its hash only changes when the config does.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::{ExtraConfig, NodeSpec};

/// Where the node keeps its data inside the container (node contract).
pub const DATA_DIR: &str = "/var/lib/unisondb";
/// Directory the ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/unisondb";
/// File name of the config inside the ConfigMap and the mount.
pub const CONFIG_FILE: &str = "config.yaml";
/// Where the TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/unisondb/tls";
/// Where the HTTP auth Secret is mounted.
pub const AUTH_DIR: &str = "/etc/unisondb/auth";
pub const HTTP_PORT: i32 = 4000;
pub const GRPC_PORT: i32 = 4001;

/// `server.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Replicator,
    Relayer,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Replicator => "replicator",
            Mode::Relayer => "relayer",
        }
    }
}

/// Everything the config depends on besides the shared spec fields.
#[derive(Clone, Debug)]
pub struct ConfigInput<'a> {
    pub mode: Mode,
    pub namespaces: Vec<String>,
    pub spec: &'a NodeSpec,
    /// Relayer: resolved upstream gRPC URL.
    pub upstream: Option<String>,
    /// Hub: namespace -> upstream gRPC URL of the owning hub.
    pub mirrors: BTreeMap<String, String>,
}

/// The rendered file and its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedConfig {
    pub yaml: String,
    /// Hex SHA-256 of `yaml` (first 16 chars), stamped on the pod template.
    pub hash: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("extraConfig: unknown section {0:?} (see docs/CONFIG.md)")]
    UnknownSection(String),
    #[error("extraConfig: unknown key {0}.{1} (see docs/CONFIG.md)")]
    UnknownKey(String, String),
    #[error("extraConfig: {0}.{1} is managed by the operator and cannot be overridden")]
    Managed(String, String),
    #[error("extraConfig: {0}.{1} has the wrong type (expected {2})")]
    WrongType(String, String, &'static str),
    #[error("rendering config: {0}")]
    Render(String),
}

// ---- the file format, section by section, in docs/CONFIG.md order --------------------------------

#[derive(Serialize)]
struct Server {
    mode: &'static str,
    data_dir: String,
    namespaces: Vec<String>,
}

#[derive(Serialize)]
struct Http {
    listen: String,
    max_body_bytes: u64,
    lob_max_bytes: u64,
    auth_token: String,
    auth_token_file: String,
    tls_cert_file: String,
    tls_key_file: String,
    txn_idle_timeout_secs: u64,
    txn_max_lifetime_secs: u64,
}

#[derive(Serialize)]
struct Grpc {
    listen: String,
    tls_cert_file: String,
    tls_key_file: String,
    tls_ca_file: String,
}

#[derive(Serialize)]
struct Notify {
    enabled: bool,
    bind: String,
    high_water_mark: u64,
}

#[derive(Serialize)]
struct Wal {
    fsync: &'static str,
    fsync_interval_ms: u64,
    segment_size_bytes: u64,
    retention_max_bytes: u64,
    retention_max_age_secs: u64,
}

#[derive(Serialize)]
struct Memtable {
    size_bytes: u64,
}

#[derive(Serialize)]
struct Replication {
    upstream: String,
    mirrors: BTreeMap<String, String>,
    max_lag_records: u64,
    tls_ca_file: String,
    tls_cert_file: String,
    tls_key_file: String,
}

#[derive(Serialize)]
struct Log {
    format: String,
    level: String,
}

#[derive(Serialize)]
struct NodeConfig {
    server: Server,
    http: Http,
    grpc: Grpc,
    notify: Notify,
    wal: Wal,
    memtable: Memtable,
    replication: Replication,
    log: Log,
}

/// Keys only the operator sets: they encode ports, mounts and topology.
const MANAGED: &[(&str, &str)] = &[
    ("server", "mode"),
    ("server", "data_dir"),
    ("server", "namespaces"),
    ("http", "listen"),
    ("http", "auth_token_file"),
    ("grpc", "listen"),
    ("grpc", "tls_cert_file"),
    ("grpc", "tls_key_file"),
    ("grpc", "tls_ca_file"),
    ("notify", "enabled"),
    ("notify", "bind"),
    ("replication", "upstream"),
    ("replication", "mirrors"),
    ("replication", "tls_ca_file"),
    ("replication", "tls_cert_file"),
    ("replication", "tls_key_file"),
];

fn base(input: &ConfigInput<'_>) -> NodeConfig {
    let spec = &input.spec;
    let tls = |file: &str| {
        spec.tls
            .as_ref()
            .map(|_| format!("{TLS_DIR}/{file}"))
            .unwrap_or_default()
    };
    NodeConfig {
        server: Server {
            mode: input.mode.as_str(),
            data_dir: DATA_DIR.to_string(),
            namespaces: input.namespaces.clone(),
        },
        http: Http {
            listen: format!("0.0.0.0:{HTTP_PORT}"),
            max_body_bytes: 4_194_304,
            lob_max_bytes: 17_179_869_184,
            auth_token: String::new(),
            auth_token_file: spec
                .http_auth
                .as_ref()
                .map(|a| format!("{AUTH_DIR}/{}", a.key))
                .unwrap_or_default(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            txn_idle_timeout_secs: 60,
            txn_max_lifetime_secs: 600,
        },
        grpc: Grpc {
            listen: format!("0.0.0.0:{GRPC_PORT}"),
            tls_cert_file: tls("tls.crt"),
            tls_key_file: tls("tls.key"),
            tls_ca_file: tls("ca.crt"),
        },
        notify: Notify {
            enabled: spec.notifications.enabled,
            bind: format!("tcp://0.0.0.0:{}", spec.notifications.port),
            high_water_mark: 100_000,
        },
        wal: Wal {
            fsync: spec.wal.fsync.as_str(),
            fsync_interval_ms: spec.wal.fsync_interval_ms.unwrap_or(10),
            segment_size_bytes: spec.wal.segment_size_bytes.unwrap_or(67_108_864),
            retention_max_bytes: spec.wal.retention_max_bytes.unwrap_or(1_073_741_824),
            retention_max_age_secs: spec.wal.retention_max_age_secs.unwrap_or(86_400),
        },
        memtable: Memtable {
            size_bytes: 67_108_864,
        },
        replication: Replication {
            upstream: input.upstream.clone().unwrap_or_default(),
            mirrors: input.mirrors.clone(),
            max_lag_records: 10_000,
            tls_ca_file: tls("ca.crt"),
            tls_cert_file: tls("tls.crt"),
            tls_key_file: tls("tls.key"),
        },
        log: Log {
            format: "text".to_string(),
            level: "info".to_string(),
        },
    }
}

/// Checks `extraConfig` against the documented keys without rendering (used by validation).
pub fn check_extra(extra: &ExtraConfig) -> Result<(), ConfigError> {
    let probe = base(&ConfigInput {
        mode: Mode::Replicator,
        namespaces: vec![],
        spec: &NodeSpec::default(),
        upstream: None,
        mirrors: BTreeMap::new(),
    });
    let mut doc = serde_yaml::to_value(&probe).map_err(|e| ConfigError::Render(e.to_string()))?;
    merge_extra(&mut doc, extra)
}

fn kind_of(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Bool(_) => "boolean",
        serde_yaml::Value::Number(_) => "number",
        serde_yaml::Value::String(_) => "string",
        serde_yaml::Value::Sequence(_) => "list",
        serde_yaml::Value::Mapping(_) => "map",
        _ => "null",
    }
}

fn merge_extra(doc: &mut serde_yaml::Value, extra: &ExtraConfig) -> Result<(), ConfigError> {
    for (section, keys) in extra {
        let sec = doc
            .get_mut(section.as_str())
            .and_then(|s| s.as_mapping_mut())
            .ok_or_else(|| ConfigError::UnknownSection(section.clone()))?;
        for (key, value) in keys {
            if MANAGED.contains(&(section.as_str(), key.as_str())) {
                return Err(ConfigError::Managed(section.clone(), key.clone()));
            }
            let slot = sec
                .get_mut(key.as_str())
                .ok_or_else(|| ConfigError::UnknownKey(section.clone(), key.clone()))?;
            let new =
                serde_yaml::to_value(value).map_err(|e| ConfigError::Render(e.to_string()))?;
            let want = kind_of(slot);
            if kind_of(&new) != want {
                return Err(ConfigError::WrongType(section.clone(), key.clone(), want));
            }
            *slot = new;
        }
    }
    Ok(())
}

/// Renders the full config file (every key explicit) and its hash.
pub fn render(input: &ConfigInput<'_>) -> Result<RenderedConfig, ConfigError> {
    let mut doc =
        serde_yaml::to_value(base(input)).map_err(|e| ConfigError::Render(e.to_string()))?;
    merge_extra(&mut doc, &input.spec.extra_config)?;
    let yaml = serde_yaml::to_string(&doc).map_err(|e| ConfigError::Render(e.to_string()))?;
    let hash = hash(&yaml);
    Ok(RenderedConfig { yaml, hash })
}

/// Short, stable content hash.
pub fn hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
