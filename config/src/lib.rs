//! The UnisonDB node configuration contract (docs/CONFIG.md), written once.
//!
//! The node deserializes it ([`Config::load`]); the Kubernetes operator builds a [`Config`] value and
//! serializes it into the ConfigMap. Loading layers embedded defaults, an optional `.toml`/`.yaml`/`.yml`
//! file and `UNISONDB_<SECTION>_<KEY>` environment variables with `figment`, rejects unknown keys and
//! then [`Config::validate`]s the result, so a typo fails loudly at start instead of being ignored.

mod codec;
mod error;
mod human;
mod load;
mod model;
mod unison;
mod validate;

pub use error::ConfigError;
pub use human::{parse_go_duration, parse_size};
pub use load::{FileFormat, Loaded, YamlNg, ENV_PREFIX, NON_CONFIG_VARS, SECTIONS};
pub use model::{
    Config, FsyncMode, GrpcConfig, HttpConfig, LogConfig, LogFormat, MemtableConfig, Mode,
    NamespaceSocket, NotifyConfig, ReplicationConfig, ServerConfig, WalConfig,
};
pub use unison::UNISON_TOP_LEVEL;
pub use validate::validate_namespace;

#[cfg(test)]
mod tests;
