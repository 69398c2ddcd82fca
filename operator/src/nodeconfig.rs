//! Renders the node's config file (docs/CONFIG.md) from a hub or relayer spec. The file is a
//! `unisondb_config::Config` (the node's own type) serialized to YAML. Pure: the same input always
//! yields byte-identical YAML, so its hash only changes when the config does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};
use unisondb_config::{ArchiveConfig, ClusterConfig, Config, FsyncMode, ObjectStoreConfig};

use crate::crd::{ExtraConfig, FsyncPolicy, NodeSpec};

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

/// `server.mode`: the node's own type, so the operator cannot spell it differently.
pub use unisondb_config::Mode;

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
    /// Hub with `spec.backup`: the `archive` section (absent: not rendered).
    pub archive: Option<ArchiveConfig>,
    /// Relayer with `upstream.objectStore`: `replication.object_store`.
    pub object_store: Option<ObjectStoreConfig>,
    /// Hub group (`replicas` > 1): every member's gRPC address, `cluster.peers` (absent: no
    /// `cluster` section, a single hub).
    pub peers: Option<Vec<String>>,
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
    #[error("extraConfig: {0} (see docs/CONFIG.md)")]
    Invalid(String),
    #[error("rendering config: {0}")]
    Render(String),
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
    ("replication", "object_store"),
    ("cluster", "node_id"),
    ("cluster", "peers"),
    ("cluster", "advertise_http"),
];

/// Sections only the operator sets, from the spec (`spec.backup`).
const MANAGED_SECTIONS: &[&str] = &["archive"];

/// The node's config for `input`: the node's defaults, with the operator-managed keys (ports, mounts,
/// topology) and the spec's WAL settings filled in.
fn base(input: &ConfigInput<'_>) -> Config {
    let spec = &input.spec;
    let tls = |file: &str| {
        spec.tls
            .as_ref()
            .map(|_| format!("{TLS_DIR}/{file}"))
            .unwrap_or_default()
    };
    let mut c = Config::default();
    c.server.mode = input.mode;
    c.server.data_dir = DATA_DIR.into();
    c.server.namespaces = input.namespaces.clone();
    c.http.listen = format!("0.0.0.0:{HTTP_PORT}");
    c.http.auth_token_file = spec
        .http_auth
        .as_ref()
        .map(|a| format!("{AUTH_DIR}/{}", a.key))
        .unwrap_or_default();
    c.grpc.listen = format!("0.0.0.0:{GRPC_PORT}");
    c.grpc.tls_cert_file = tls("tls.crt");
    c.grpc.tls_key_file = tls("tls.key");
    c.grpc.tls_ca_file = tls("ca.crt");
    if spec.tls.as_ref().is_some_and(|t| t.http) {
        c.http.tls_cert_file = tls("tls.crt");
        c.http.tls_key_file = tls("tls.key");
    }
    c.notify.enabled = spec.notifications.enabled;
    c.notify.bind = format!("tcp://0.0.0.0:{}", spec.notifications.port);
    let wal = &spec.wal;
    c.wal.fsync = match wal.fsync {
        FsyncPolicy::Always => FsyncMode::Always,
        FsyncPolicy::Interval => FsyncMode::Interval,
        FsyncPolicy::Never => FsyncMode::Never,
    };
    if let Some(ms) = wal.fsync_interval_ms {
        c.wal.fsync_interval_ms = Duration::from_millis(ms);
    }
    if let Some(bytes) = wal.segment_size_bytes {
        c.wal.segment_size_bytes = bytes;
    }
    if let Some(bytes) = wal.retention_max_bytes {
        c.wal.retention_max_bytes = bytes;
    }
    if let Some(secs) = wal.retention_max_age_secs {
        c.wal.retention_max_age_secs = Duration::from_secs(secs);
    }
    c.replication.upstream = input.upstream.clone().unwrap_or_default();
    c.replication.mirrors = input.mirrors.clone();
    c.replication.tls_ca_file = tls("ca.crt");
    c.replication.tls_cert_file = tls("tls.crt");
    c.replication.tls_key_file = tls("tls.key");
    c.replication.object_store = input.object_store.clone();
    c.archive = input.archive.clone().unwrap_or_default();
    // node_id stays absent (the pod's hostname ordinal + 1) and advertise_http empty (the peer
    // host with the HTTP port): both follow from the StatefulSet's stable pod names.
    c.cluster = input.peers.as_ref().map(|peers| ClusterConfig {
        peers: peers.clone(),
        ..ClusterConfig::default()
    });
    c
}

/// `cluster` is rendered only for hub groups: `extraConfig.cluster` (timeouts) is checked against
/// a group's config, and refused for a single hub (it has no such section).
pub fn check_extra_for(extra: &ExtraConfig, group: bool) -> Result<(), ConfigError> {
    let probe = base(&ConfigInput {
        mode: Mode::Replicator,
        namespaces: vec![],
        spec: &NodeSpec::default(),
        upstream: None,
        mirrors: BTreeMap::new(),
        archive: None,
        object_store: None,
        peers: group.then(|| vec!["probe-0.probe:4001".to_string()]),
    });
    let mut doc = to_doc(&probe)?;
    merge_extra(&mut doc, extra)
}

/// Checks `extraConfig` against the documented keys without rendering (used by validation).
pub fn check_extra(extra: &ExtraConfig) -> Result<(), ConfigError> {
    check_extra_for(extra, false)
}

fn to_doc(config: &Config) -> Result<Value, ConfigError> {
    serde_yaml_ng::to_value(config).map_err(|e| ConfigError::Render(e.to_string()))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Sequence(_) => "list",
        Value::Mapping(_) => "map",
        _ => "null",
    }
}

/// Overlays `extra` on `doc` key by key, then reads the result back as the node would, so a value
/// of the right kind but not accepted by the node (`wal.fsync: sometimes`) is refused here.
fn merge_extra(doc: &mut Value, extra: &ExtraConfig) -> Result<(), ConfigError> {
    for (section, keys) in extra {
        if let Some(key) = keys
            .keys()
            .next()
            .filter(|_| MANAGED_SECTIONS.contains(&section.as_str()))
        {
            return Err(ConfigError::Managed(section.clone(), key.clone()));
        }
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
                serde_yaml_ng::to_value(value).map_err(|e| ConfigError::Render(e.to_string()))?;
            let want = kind_of(slot);
            if kind_of(&new) != want {
                return Err(ConfigError::WrongType(section.clone(), key.clone(), want));
            }
            *slot = new;
        }
    }
    serde_yaml_ng::from_value::<Config>(doc.clone())
        .map(drop)
        .map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// Renders the full config file (every key explicit) and its hash. The hash leaves out
/// `cluster.peers`: scaling a group changes only that list, and must not restart every member
/// (running members learn new ones by Raft membership changes; a restarted one reads the new list).
pub fn render(input: &ConfigInput<'_>) -> Result<RenderedConfig, ConfigError> {
    let mut doc = to_doc(&base(input))?;
    merge_extra(&mut doc, &input.spec.extra_config)?;
    let yaml = serde_yaml_ng::to_string(&doc).map_err(|e| ConfigError::Render(e.to_string()))?;
    let hash = match doc
        .get_mut("cluster")
        .and_then(|c| c.as_mapping_mut())
        .and_then(|c| c.get_mut("peers"))
    {
        Some(peers) => {
            *peers = Value::Sequence(Vec::new());
            let without =
                serde_yaml_ng::to_string(&doc).map_err(|e| ConfigError::Render(e.to_string()))?;
            hash(&without)
        }
        None => hash(&yaml),
    };
    Ok(RenderedConfig { yaml, hash })
}

/// Short, stable content hash.
pub fn hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(section: &str, key: &str, value: serde_json::Value) -> ExtraConfig {
        BTreeMap::from([(
            section.to_string(),
            BTreeMap::from([(key.to_string(), value)]),
        )])
    }

    #[test]
    fn extra_values_are_read_back_with_the_node_types() {
        assert_eq!(check_extra(&extra("wal", "fsync", "never".into())), Ok(()));
        assert_eq!(check_extra(&extra("log", "format", "json".into())), Ok(()));
        for (section, key, value) in [
            ("wal", "fsync", serde_json::Value::from("sometimes")),
            ("log", "format", "xml".into()),
            ("wal", "segment_size_bytes", (-1).into()),
            ("http", "txn_idle_timeout_secs", 1.5.into()),
        ] {
            assert!(
                matches!(
                    check_extra(&extra(section, key, value.clone())),
                    Err(ConfigError::Invalid(_))
                ),
                "{section}.{key}: {value}"
            );
        }
    }
}
