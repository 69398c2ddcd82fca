//! Why a configuration could not be loaded.

use std::path::PathBuf;

use thiserror::Error;

/// Why a configuration could not be loaded; each variant names where the bad input came from.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file (or `http.auth_token_file`) could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `--config` names a file that is neither TOML nor YAML.
    #[error("config file {0}: unsupported extension (use .toml, .yaml or .yml)")]
    Extension(PathBuf),
    /// The file is malformed, has an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A `UNISONDB_*` variable names an unknown key in a known section or has a bad value.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// The merged config is well-formed but the node cannot run with it.
    #[error("invalid config: {0}")]
    Invalid(String),
}
