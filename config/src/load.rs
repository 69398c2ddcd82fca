//! Layered loading with `figment`: embedded defaults, then the file, then `UNISONDB_*` variables.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;

use crate::{Config, ConfigError};

/// Prefix of the environment variables that override keys: `UNISONDB_<SECTION>_<KEY>`.
pub const ENV_PREFIX: &str = "UNISONDB_";

/// Top-level sections. `UNISONDB_*` variables naming another section (`UNISONDB_E2E_...`) are not
/// config overrides and are ignored; an unknown key inside one of these sections is an error.
pub const SECTIONS: &[&str] = &[
    "server",
    "http",
    "grpc",
    "notify",
    "wal",
    "memtable",
    "replication",
    "log",
];

/// YAML for figment through `serde_yaml_ng` (figment's own `Yaml` uses the deprecated `serde_yaml`).
/// An empty document is an empty mapping, so an empty file means "all defaults".
pub struct YamlNg;

impl Format for YamlNg {
    type Error = serde_yaml_ng::Error;
    const NAME: &'static str = "YAML";

    fn from_str<T: DeserializeOwned>(string: &str) -> Result<T, Self::Error> {
        if string.trim().is_empty() {
            serde_yaml_ng::from_str("{}")
        } else {
            serde_yaml_ng::from_str(string)
        }
    }
}

/// `UNISONDB_<SECTION>_<KEY>=value` as `section.key`, the value kept as the raw string.
///
/// figment's `Env` guesses a type for every value (`007` would become the number 7 and lose its
/// zeros in a token); here the target key's type decides, through `extract_lossy` and `codec`.
struct EnvLayer(Env);

impl EnvLayer {
    fn from_process() -> Self {
        EnvLayer(Env::prefixed(ENV_PREFIX).filter_map(|key| {
            let key = key.as_str().to_ascii_lowercase();
            let (section, rest) = key.split_once('_')?;
            SECTIONS
                .contains(&section)
                .then(|| format!("{section}.{rest}").into())
        }))
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut sections: Map<String, Dict> = Map::new();
        for (key, raw) in self.0.iter() {
            if let Some((section, field)) = key.as_str().split_once('.') {
                sections
                    .entry(section.to_string())
                    .or_default()
                    .insert(field.to_string(), Value::from(raw));
            }
        }
        let root: Dict = sections
            .into_iter()
            .map(|(section, keys)| (section, Value::from(keys)))
            .collect();
        Ok(Profile::Default.collect(root))
    }
}

/// The offending key path (figment includes an unknown field's own name) and the problem.
fn describe(e: &figment::Error) -> (Vec<String>, String) {
    (e.path.clone(), e.kind.to_string())
}

impl Config {
    /// Loads `path` (or the embedded defaults), applies `UNISONDB_*` overrides from the process
    /// environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let base = match path {
            Some(p) => Self::parse_file(p)?,
            None => Config::default(),
        };
        let cfg = base.with_env()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a `.toml` or `.yaml`/`.yml` file over the defaults (no environment, no validation);
    /// unknown keys are errors.
    pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let defaults = Figment::from(Serialized::defaults(Config::default()));
        let layered = match ext.as_deref() {
            Some("toml") => defaults.merge(Toml::string(&text)),
            Some("yaml") | Some("yml") => defaults.merge(YamlNg::string(&text)),
            _ => return Err(ConfigError::Extension(path.to_path_buf())),
        };
        layered.extract().map_err(|e| parse_error(path, &e))
    }

    /// `self` with the `UNISONDB_<SECTION>_<KEY>` variables of the process environment applied.
    /// Values are typed like the key they replace: numbers, booleans (`true/false/1/0/yes/no/on/off`),
    /// comma-separated lists and `a=b,c=d` maps.
    pub fn with_env(self) -> Result<Config, ConfigError> {
        Figment::from(Serialized::defaults(self))
            .merge(EnvLayer::from_process())
            .extract_lossy()
            .map_err(|e| {
                let (path, message) = describe(&e);
                ConfigError::Env {
                    var: format!("{ENV_PREFIX}{}", path.join("_").to_ascii_uppercase()),
                    message,
                }
            })
    }

    /// The effective configuration as YAML (for `config check` and the operator's ConfigMap).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The bearer token required on `/api`, if any (from `http.auth_token` or its file).
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
}

fn parse_error(path: &Path, e: &figment::Error) -> ConfigError {
    let (key, message) = describe(e);
    let message = if key.is_empty() {
        message
    } else {
        format!("{}: {message}", key.join("."))
    };
    ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    }
}
