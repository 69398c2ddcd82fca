//! The UnisonDB node configuration contract (docs/CONFIG.md), written once.
//!
//! The node deserializes it ([`Config::load`]); the Kubernetes operator builds a [`Config`] value and
//! serializes it into the ConfigMap. Loading layers embedded defaults, an optional `.toml`/`.yaml`/`.yml`
//! file and `UNISONDB_<SECTION>_<KEY>` environment variables with `figment`, rejects unknown keys and
//! then [`Config::validate`]s the result, so a typo fails loudly at start instead of being ignored.
//!
//! The original UnisonDB's TOML (`http_port`, `[storage_config]`, `[relayer_config.x]`, ...) is accepted
//! as it is: a file with one of its top-level keys ([`UNISON_TOP_LEVEL`]) is mapped onto [`Config`],
//! keys without meaning here become warnings ([`Config::load_verbose`]). `UNISONDB_*` variables that
//! name no key (Kubernetes service links) are warnings too, never errors.

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
pub use model::split_upstreams;
pub use model::{
    ArchiveConfig, ClusterConfig, Config, FsyncMode, GrpcConfig, HttpConfig, LogConfig, LogFormat,
    MemtableConfig, Mode, NamespaceSocket, NotifyConfig, ObjectStoreConfig, ReplicationConfig,
    RespConfig, ServerConfig, WalConfig,
};
pub use unison::UNISON_TOP_LEVEL;
pub use validate::validate_namespace;

#[cfg(test)]
mod tests;
