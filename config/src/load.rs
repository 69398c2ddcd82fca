//! Layered loading with `figment`: embedded defaults, then the file, then `UNISONDB_*` variables.

use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, BTreeSet};

use figment::providers::{Format, Serialized, Toml};
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
    "resp",
    "archive",
    "cluster",
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

/// `UNISONDB_*` variables that are not config keys and belong to the node's own command line
/// (`--config`, and the client commands' `--url`/`--token`/`--namespace`): never warned about.
pub const NON_CONFIG_VARS: &[&str] = &[
    "UNISONDB_CONFIG",
    "UNISONDB_URL",
    "UNISONDB_TOKEN",
    "UNISONDB_NAMESPACE",
];

/// The keys of every section, as the environment may name them.
fn known_keys() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Optional sections switched on, so they serialize.
    let mut full = Config::default();
    full.resp.listen = "127.0.0.1:6379".into();
    full.archive.enabled = true;
    full.cluster = Some(Default::default());
    let data = Serialized::defaults(full).data().unwrap_or_default();
    if let Some(root) = data.get(&Profile::Default) {
        for (section, value) in root {
            if let Some(dict) = value.as_dict() {
                out.entry(section.clone())
                    .or_default()
                    .extend(dict.keys().cloned());
            }
        }
    }
    // Keys skipped when serializing their default (absent / empty).
    for (section, key) in [
        ("replication", "max_staleness_seconds"),
        ("notify", "namespaces"),
        ("resp", "listen"),
        ("replication", "object_store"),
        ("cluster", "node_id"),
    ] {
        out.entry(section.into()).or_default().insert(key.into());
    }
    out
}

/// `UNISONDB_<SECTION>_<KEY>=value` as `section.key`, the value kept as the raw string.
///
/// figment's `Env` guesses a type for every value (`007` would become the number 7 and lose its
/// zeros in a token); here the target key's type decides, through `extract_lossy` and `codec`.
/// A `UNISONDB_*` variable that names no config key (Kubernetes service links create
/// `UNISONDB_HTTP_PORT`, `UNISONDB_PORT_4000_TCP_ADDR`, ... for a Service named `unisondb*`) is
/// ignored with a warning: it must never stop the node from starting.
struct EnvLayer {
    /// (section, key, raw value)
    vars: Vec<(String, String, String)>,
    warnings: Vec<String>,
}

impl EnvLayer {
    fn from_process() -> Self {
        let known = known_keys();
        let mut vars = Vec::new();
        let mut warnings = Vec::new();
        let mut env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        env.sort();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if NON_CONFIG_VARS.contains(&name.as_str()) {
                continue;
            }
            let lower = rest.to_ascii_lowercase();
            let hit = lower.split_once('_').filter(|(section, key)| {
                known.get(*section).is_some_and(|keys| keys.contains(*key))
            });
            match hit {
                Some((section, key)) => vars.push((section.to_string(), key.to_string(), raw)),
                None => warnings.push(format!(
                    "environment variable {name} is not a config key (UNISONDB_<SECTION>_<KEY>); ignored"
                )),
            }
        }
        EnvLayer { vars, warnings }
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable(s)")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut sections: Map<String, Dict> = Map::new();
        for (section, field, raw) in &self.vars {
            sections
                .entry(section.clone())
                .or_default()
                .insert(field.clone(), Value::from(raw.clone()));
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

/// How a config file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// No file: embedded defaults.
    Defaults,
    /// Our own format (docs/CONFIG.md), TOML or YAML.
    Native,
    /// The original UnisonDB's TOML (`http_port`, `[storage_config]`, ...).
    UnisonDb,
}

/// A loaded configuration, with what the loader has to say about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Keys accepted but without effect, and `UNISONDB_*` variables ignored: one line each, for
    /// the log (after logging is set up) or stderr.
    pub warnings: Vec<String>,
    pub format: FileFormat,
}

impl Config {
    /// Loads `path` (or the embedded defaults), applies `UNISONDB_*` overrides from the process
    /// environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_verbose(path).map(|l| l.config)
    }

    /// [`Config::load`], keeping the warnings and the detected file format.
    pub fn load_verbose(path: Option<&Path>) -> Result<Loaded, ConfigError> {
        let (base, mut warnings, format) = match path {
            Some(p) => Self::parse_file_verbose(p)?,
            None => (Config::default(), Vec::new(), FileFormat::Defaults),
        };
        let (config, env_warnings) = base.with_env_verbose()?;
        warnings.extend(env_warnings);
        config.validate()?;
        Ok(Loaded {
            config,
            warnings,
            format,
        })
    }

    /// Parses a `.toml` or `.yaml`/`.yml` file over the defaults (no environment, no validation);
    /// unknown keys are errors.
    pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
        Self::parse_file_verbose(path).map(|(c, _, _)| c)
    }

    /// [`Config::parse_file`], with warnings and the detected format. A TOML file with one of
    /// UnisonDB's top-level keys is read as UnisonDB's format ([`crate::UNISON_TOP_LEVEL`]).
    pub fn parse_file_verbose(
        path: &Path,
    ) -> Result<(Config, Vec<String>, FileFormat), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let perr = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let defaults = Figment::from(Serialized::defaults(Config::default()));
        match ext.as_deref() {
            Some("toml") => {
                let table: toml::Table = toml::from_str(&text)
                    .map_err(|e| perr(crate::unison::toml_error(&text, &e)))?;
                if crate::unison::is_unison(&table) {
                    let (c, w) = crate::unison::parse(&text).map_err(perr)?;
                    return Ok((c, w, FileFormat::UnisonDb));
                }
                let c = defaults.merge(Toml::string(&text)).extract().map_err(|e| {
                    // figment names the key path; the toml parser knows the line.
                    let line = toml::from_str::<Config>(&text)
                        .err()
                        .and_then(|te| te.span())
                        .map(|s| crate::unison::line_of(&text, s.start));
                    unison_hint(&e, with_line(parse_error(path, &e), line))
                })?;
                Ok((c, Vec::new(), FileFormat::Native))
            }
            Some("yaml") | Some("yml") => {
                let c = defaults
                    .merge(YamlNg::string(&text))
                    .extract()
                    .map_err(|e| {
                        let line = if text.trim().is_empty() {
                            None
                        } else {
                            serde_yaml_ng::from_str::<Config>(&text)
                                .err()
                                .and_then(|ye| ye.location())
                                .map(|l| l.line())
                        };
                        with_line(parse_error(path, &e), line)
                    })?;
                Ok((c, Vec::new(), FileFormat::Native))
            }
            _ => Err(ConfigError::Extension(path.to_path_buf())),
        }
    }

    /// `self` with the `UNISONDB_<SECTION>_<KEY>` variables of the process environment applied.
    /// Values are typed like the key they replace: numbers, booleans (`true/false/1/0/yes/no/on/off`),
    /// comma-separated lists and `a=b,c=d` maps. Variables naming no key are ignored.
    pub fn with_env(self) -> Result<Config, ConfigError> {
        self.with_env_verbose().map(|(c, _)| c)
    }

    /// [`Config::with_env`], with one warning per ignored `UNISONDB_*` variable.
    pub fn with_env_verbose(self) -> Result<(Config, Vec<String>), ConfigError> {
        let layer = EnvLayer::from_process();
        let warnings = layer.warnings.clone();
        let c = Figment::from(Serialized::defaults(self))
            .merge(layer)
            .extract_lossy()
            .map_err(|e| {
                let (path, message) = describe(&e);
                ConfigError::Env {
                    var: format!("{ENV_PREFIX}{}", path.join("_").to_ascii_uppercase()),
                    message,
                }
            })?;
        Ok((c, warnings))
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

fn with_line(e: ConfigError, line: Option<usize>) -> ConfigError {
    match (e, line) {
        (ConfigError::Parse { path, message }, Some(line)) => ConfigError::Parse {
            path,
            message: format!("line {line}: {message}"),
        },
        (e, _) => e,
    }
}

/// An unknown top-level key of a TOML file is unknown to UnisonDB's format too: say so.
fn unison_hint(e: &figment::Error, err: ConfigError) -> ConfigError {
    let top_level_unknown =
        e.path.len() == 1 && matches!(e.kind, figment::error::Kind::UnknownField(..));
    match err {
        ConfigError::Parse { path, message } if top_level_unknown => ConfigError::Parse {
            path,
            message: format!(
                "{message}; nor is it one of UnisonDB's top-level keys ({})",
                crate::UNISON_TOP_LEVEL.join(", ")
            ),
        },
        e => e,
    }
}
