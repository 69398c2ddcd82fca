//! Node configuration: the contract in docs/CONFIG.md, loaded from TOML/YAML, then `UNISONDB_*` overrides.
//!
//! Every key has a default, unknown keys are errors, and `validate` rejects values the node cannot run with,
//! so a typo in an operator-rendered file fails loudly at start instead of being silently ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::btree::BTreeOptions;
use crate::engine::{EngineOptions, FsyncPolicy};
use crate::wal::{RetentionPolicy, WalOptions};

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {0}: unsupported extension (use .toml, .yaml or .yml)")]
    Extension(PathBuf),
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Writable hub or read-only follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Replicator,
    Relayer,
}

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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub mode: Mode,
    pub data_dir: PathBuf,
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: String,
    pub max_body_bytes: u64,
    pub lob_max_bytes: u64,
    pub auth_token: String,
    pub auth_token_file: String,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// A transaction untouched this long is aborted by the reaper.
    pub txn_idle_timeout_secs: u64,
    /// A transaction older than this is aborted whatever its activity.
    pub txn_max_lifetime_secs: u64,
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
            txn_idle_timeout_secs: 60,
            txn_max_lifetime_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    pub enabled: bool,
    pub bind: String,
    pub high_water_mark: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: "tcp://0.0.0.0:4002".into(),
            high_water_mark: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    pub fsync: String,
    pub fsync_interval_ms: u64,
    pub segment_size_bytes: u64,
    pub retention_max_bytes: u64,
    pub retention_max_age_secs: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            fsync: "always".into(),
            fsync_interval_ms: 10,
            segment_size_bytes: 64 << 20,
            retention_max_bytes: 1 << 30,
            retention_max_age_secs: 86_400,
        }
    }
}

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    pub upstream: String,
    pub mirrors: BTreeMap<String, String>,
    pub max_lag_records: u64,
    pub tls_ca_file: String,
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            upstream: String::new(),
            mirrors: BTreeMap::new(),
            max_lag_records: 10_000,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: String,
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

const ENV_PREFIX: &str = "UNISONDB_";

impl Config {
    /// Loads `path` (or the embedded defaults), applies `UNISONDB_*` overrides from the process
    /// environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like `load`, with an explicit environment (tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let base = match path {
            Some(p) => Self::parse_file(p)?,
            None => Config::default(),
        };
        let cfg = apply_env(base, env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a `.toml` or `.yaml`/`.yml` file; unknown keys are errors.
    pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let parsed = match ext.as_deref() {
            Some("toml") => toml::from_str::<Config>(&text).map_err(|e| e.to_string()),
            Some("yaml") | Some("yml") => {
                if text.trim().is_empty() {
                    Ok(Config::default())
                } else {
                    serde_yaml::from_str::<Config>(&text).map_err(|e| e.to_string())
                }
            }
            _ => return Err(ConfigError::Extension(path.to_path_buf())),
        };
        parsed.map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Rejects values the node cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.server.namespaces.is_empty() {
            return bad("server.namespaces must name at least one namespace".into());
        }
        for ns in &self.server.namespaces {
            if let Err(e) = crate::engine::validate_name(ns) {
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
        if !matches!(self.wal.fsync.as_str(), "always" | "interval" | "never") {
            return bad(format!(
                "wal.fsync: {:?} (expected always, interval or never)",
                self.wal.fsync
            ));
        }
        if self.wal.fsync == "interval" && self.wal.fsync_interval_ms == 0 {
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
        if self.http.txn_idle_timeout_secs == 0 || self.http.txn_max_lifetime_secs == 0 {
            return bad("http.txn_* timeouts must be > 0".into());
        }
        if self.http.tls_cert_file.is_empty() != self.http.tls_key_file.is_empty() {
            return bad("http.tls_cert_file and http.tls_key_file must be set together".into());
        }
        if !self.http.auth_token.is_empty() && !self.http.auth_token_file.is_empty() {
            return bad("set http.auth_token or http.auth_token_file, not both".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad(format!(
                "log.format: {:?} (expected text or json)",
                self.log.format
            ));
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

    /// The engine options this config asks for.
    pub fn engine_options(&self) -> EngineOptions {
        let fsync = match self.wal.fsync.as_str() {
            "interval" => FsyncPolicy::Interval(Duration::from_millis(self.wal.fsync_interval_ms)),
            "never" => FsyncPolicy::Never,
            _ => FsyncPolicy::Always,
        };
        let defaults = EngineOptions::default();
        EngineOptions {
            fsync,
            memtable_bytes: usize::try_from(self.memtable.size_bytes).unwrap_or(usize::MAX),
            max_sealed_memtables: defaults.max_sealed_memtables,
            wal: WalOptions {
                segment_size: self.wal.segment_size_bytes,
            },
            retention: RetentionPolicy {
                max_bytes: Some(self.wal.retention_max_bytes),
                max_age: Some(Duration::from_secs(self.wal.retention_max_age_secs)),
            },
            btree: BTreeOptions::default(),
        }
    }

    /// The bearer token required on `/api`, if any (from the value or the file).
    pub fn auth_token(&self) -> Result<Option<String>, ConfigError> {
        if !self.http.auth_token.is_empty() {
            return Ok(Some(self.http.auth_token.clone()));
        }
        if self.http.auth_token_file.is_empty() {
            return Ok(None);
        }
        let path = PathBuf::from(&self.http.auth_token_file);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "http.auth_token_file {} is empty",
                path.display()
            )));
        }
        Ok(Some(token))
    }

    /// The effective configuration as YAML (for `config check`).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Applies `UNISONDB_<SECTION>_<KEY>` variables onto `cfg` by editing its JSON form, so the value is
/// typed like the key it replaces (numbers, booleans, comma-separated lists, `a=b,c=d` maps).
fn apply_env(
    cfg: Config,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut tree = serde_json::to_value(&cfg).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    let mut touched = false;
    for (var, raw) in vars {
        let rest = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        let Some(sections) = tree.as_object_mut() else {
            break;
        };
        let Some((section, key)) = sections
            .keys()
            .find(|s| rest.starts_with(&format!("{s}_")))
            .cloned()
            .map(|s| {
                let key = rest[s.len() + 1..].to_string();
                (s, key)
            })
        else {
            tracing::debug!(var, "ignoring environment variable: no such config section");
            continue;
        };
        let Some(slot) = sections
            .get_mut(&section)
            .and_then(|s| s.as_object_mut())
            .and_then(|s| s.get_mut(&key))
        else {
            return Err(ConfigError::Env {
                var,
                message: format!("no config key {section}.{key}"),
            });
        };
        *slot = typed_like(slot, &raw).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        touched = true;
    }
    if !touched {
        return Ok(cfg);
    }
    serde_json::from_value(tree).map_err(|e| ConfigError::Invalid(e.to_string()))
}

fn typed_like(current: &serde_json::Value, raw: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    Ok(match current {
        Value::Bool(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Bool(true),
            "false" | "0" | "no" | "off" => Value::Bool(false),
            _ => return Err(format!("{raw:?} is not a boolean")),
        },
        Value::Number(_) => Value::Number(
            raw.trim()
                .parse::<u64>()
                .map_err(|_| format!("{raw:?} is not a non-negative integer"))?
                .into(),
        ),
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        Value::Object(_) => {
            let mut map = serde_json::Map::new();
            for pair in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{pair:?} is not name=value"))?;
                map.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
            }
            Value::Object(map)
        }
        _ => Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::load_with_env(None, Vec::new()).unwrap();
        assert_eq!(c.server.mode, Mode::Replicator);
        assert_eq!(c.server.namespaces, vec!["default"]);
        assert_eq!(c.http.listen, "0.0.0.0:4000");
        assert_eq!(c.grpc.listen, "0.0.0.0:4001");
        assert_eq!(c.notify.bind, "tcp://0.0.0.0:4002");
        assert_eq!(c.http.max_body_bytes, 4194304);
        assert_eq!(c.http.lob_max_bytes, 17179869184);
        assert_eq!(c.engine_options().fsync, FsyncPolicy::Always);
    }

    #[test]
    fn yaml_and_toml_parse_the_same() {
        let d = tempfile::tempdir().unwrap();
        let y = write(
            d.path(),
            "c.yaml",
            "server:\n  namespaces: [a, b]\nwal:\n  fsync: interval\n  fsync_interval_ms: 5\nreplication:\n  mirrors: {x: 'http://h:4001'}\n",
        );
        let t = write(
            d.path(),
            "c.toml",
            "[server]\nnamespaces = [\"a\", \"b\"]\n[wal]\nfsync = \"interval\"\nfsync_interval_ms = 5\n[replication.mirrors]\nx = \"http://h:4001\"\n",
        );
        let a = Config::load_with_env(Some(&y), Vec::new()).unwrap();
        let b = Config::load_with_env(Some(&t), Vec::new()).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.engine_options().fsync,
            FsyncPolicy::Interval(Duration::from_millis(5))
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let y = write(d.path(), "c.yaml", "http:\n  lisen: 0.0.0.0:1\n");
        assert!(matches!(
            Config::load_with_env(Some(&y), Vec::new()),
            Err(ConfigError::Parse { .. })
        ));
        let t = write(d.path(), "c.toml", "[bogus]\nx = 1\n");
        assert!(Config::load_with_env(Some(&t), Vec::new()).is_err());
        let env = vec![("UNISONDB_HTTP_LISEN".to_string(), "x".to_string())];
        assert!(matches!(
            Config::load_with_env(None, env),
            Err(ConfigError::Env { .. })
        ));
    }

    #[test]
    fn env_overrides_are_typed() {
        let env = vec![
            (
                "UNISONDB_HTTP_LISTEN".to_string(),
                "127.0.0.1:8080".to_string(),
            ),
            ("UNISONDB_WAL_FSYNC".to_string(), "never".to_string()),
            ("UNISONDB_SERVER_NAMESPACES".to_string(), "a, b".to_string()),
            (
                "UNISONDB_MEMTABLE_SIZE_BYTES".to_string(),
                "1048576".to_string(),
            ),
            ("UNISONDB_NOTIFY_ENABLED".to_string(), "false".to_string()),
            ("UNISONDB_SERVER_MODE".to_string(), "relayer".to_string()),
            (
                "UNISONDB_REPLICATION_MIRRORS".to_string(),
                "x=http://h:1".to_string(),
            ),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let c = Config::load_with_env(None, env).unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:8080");
        assert_eq!(c.wal.fsync, "never");
        assert_eq!(c.server.namespaces, vec!["a", "b"]);
        assert_eq!(c.memtable.size_bytes, 1 << 20);
        assert!(!c.notify.enabled);
        assert_eq!(c.server.mode, Mode::Relayer);
        assert_eq!(c.replication.mirrors["x"], "http://h:1");
        let bad = vec![(
            "UNISONDB_WAL_SEGMENT_SIZE_BYTES".to_string(),
            "lots".to_string(),
        )];
        assert!(Config::load_with_env(None, bad).is_err());
    }

    #[test]
    fn invalid_values_are_rejected() {
        for env in [
            ("UNISONDB_WAL_FSYNC", "sometimes"),
            ("UNISONDB_HTTP_LISTEN", "nowhere"),
            ("UNISONDB_SERVER_NAMESPACES", "../etc"),
            ("UNISONDB_HTTP_TLS_CERT_FILE", "/only/cert.pem"),
            ("UNISONDB_LOG_FORMAT", "xml"),
            ("UNISONDB_SERVER_MODE", "leader"),
        ] {
            let env = vec![(env.0.to_string(), env.1.to_string())];
            assert!(Config::load_with_env(None, env.clone()).is_err(), "{env:?}");
        }
    }

    #[test]
    fn yaml_output_round_trips() {
        let c = Config::default();
        let back: Config = serde_yaml::from_str(&c.to_yaml()).unwrap();
        assert_eq!(back, c);
    }
}
