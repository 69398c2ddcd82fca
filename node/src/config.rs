//! Node configuration. The contract (types, defaults, validation, file + `UNISONDB_*` loading) lives
//! in the `unisondb-config` crate shared with the operator; this module re-exports it and adds the
//! node-only mapping onto storage-engine options.

pub use unisondb_config::{
    validate_namespace, Config, ConfigError, FsyncMode, GrpcConfig, HttpConfig, LogConfig,
    LogFormat, MemtableConfig, Mode, NotifyConfig, ReplicationConfig, ServerConfig, WalConfig,
    YamlNg, ENV_PREFIX, SECTIONS,
};

use crate::btree::BTreeOptions;
use crate::engine::{EngineOptions, FsyncPolicy, Role};
use crate::wal::{RetentionPolicy, WalOptions};

/// Node-side conversions of a [`Config`] (the config crate knows nothing of the engine).
pub trait ConfigExt {
    /// The engine options this config asks for.
    fn engine_options(&self) -> EngineOptions;

    /// The part this node plays for `namespace`: a relayer follows every namespace (even without an
    /// upstream, it serves read-only local data); a hub follows those it mirrors and owns the rest.
    fn role_of(&self, namespace: &str) -> Role;
}

impl ConfigExt for Config {
    fn engine_options(&self) -> EngineOptions {
        let fsync = match self.wal.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Interval => FsyncPolicy::Interval(self.wal.fsync_interval_ms),
            FsyncMode::Never => FsyncPolicy::Never,
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
                max_age: Some(self.wal.retention_max_age_secs),
            },
            btree: BTreeOptions::default(),
            hold_wal_for_archive: self.archive.enabled,
        }
    }

    fn role_of(&self, namespace: &str) -> Role {
        if self.server.mode == Mode::Relayer || self.replication.mirrors.contains_key(namespace) {
            Role::Follower
        } else {
            Role::Owner
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn default_engine_options() {
        let o = Config::default().engine_options();
        assert_eq!(o.fsync, FsyncPolicy::Always);
        assert_eq!(o.memtable_bytes, 64 << 20);
        assert_eq!(o.wal.segment_size, 64 << 20);
        assert_eq!(o.retention.max_bytes, Some(1 << 30));
        assert_eq!(o.retention.max_age, Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn fsync_modes_map_onto_the_engine() {
        let mut c = Config::default();
        c.wal.fsync = FsyncMode::Interval;
        c.wal.fsync_interval_ms = Duration::from_millis(5);
        assert_eq!(
            c.engine_options().fsync,
            FsyncPolicy::Interval(Duration::from_millis(5))
        );
        c.wal.fsync = FsyncMode::Never;
        assert_eq!(c.engine_options().fsync, FsyncPolicy::Never);
    }

    #[test]
    fn roles_follow_the_mode_and_the_mirrors() {
        let mut c = Config::default();
        assert_eq!(c.role_of("a"), Role::Owner);
        c.replication
            .mirrors
            .insert("m".into(), "http://h:4001".into());
        assert_eq!(c.role_of("m"), Role::Follower);
        assert_eq!(c.role_of("a"), Role::Owner);
        c.server.mode = Mode::Relayer;
        assert_eq!(c.role_of("a"), Role::Follower);
    }
}
