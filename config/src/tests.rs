//! Contract tests: defaults, accepted spellings, file formats, environment layering, errors.
//!
//! Environment and files go through `figment::Jail`, which serializes tests that touch the process
//! environment and runs each in its own temporary working directory.

// `Jail::expect_with` takes closures returning `figment::Result`, whose error is large by design.
#![allow(clippy::result_large_err)]

use std::path::Path;
use std::time::Duration;

use figment::Jail;

use crate::*;

/// Runs `f` in a jail with `env` set; `ConfigError`s become jail failures with their message.
fn jailed(env: &[(&str, &str)], f: impl FnOnce(&mut Jail) -> Result<(), String>) {
    Jail::expect_with(|jail| {
        for (k, v) in env {
            jail.set_env(k, v);
        }
        f(jail).map_err(figment::Error::from)
    });
}

fn load_env(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut out = None;
    jailed(env, |_| {
        out = Some(Config::load(None));
        Ok(())
    });
    out.expect("jail ran")
}

fn load_env_verbose(env: &[(&str, &str)]) -> Result<(Config, Vec<String>), ConfigError> {
    let mut out = None;
    jailed(env, |_| {
        out = Some(Config::load_verbose(None).map(|l| (l.config, l.warnings)));
        Ok(())
    });
    out.expect("jail ran")
}

fn load_file_verbose(name: &str, text: &str) -> Result<Loaded, ConfigError> {
    let mut out = None;
    jailed(&[], |jail| {
        jail.create_file(name, text).map_err(|e| e.to_string())?;
        out = Some(Config::load_verbose(Some(Path::new(name))));
        Ok(())
    });
    out.expect("jail ran")
}

fn load_file(name: &str, text: &str) -> Result<Config, ConfigError> {
    let mut out = None;
    jailed(&[], |jail| {
        jail.create_file(name, text).map_err(|e| e.to_string())?;
        out = Some(Config::load(Some(Path::new(name))));
        Ok(())
    });
    out.expect("jail ran")
}

fn err_text(r: Result<Config, ConfigError>) -> String {
    match r {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_match_the_contract() {
    let c = load_env(&[]).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.server.mode, Mode::Replicator);
    assert_eq!(c.server.data_dir, Path::new("./data"));
    assert_eq!(c.server.namespaces, vec!["default"]);
    assert_eq!(c.http.listen, "0.0.0.0:4000");
    assert_eq!(c.http.max_body_bytes, 4194304);
    assert_eq!(c.http.lob_max_bytes, 17179869184);
    assert_eq!(c.http.txn_idle_timeout_secs, Duration::from_secs(60));
    assert_eq!(c.http.txn_max_lifetime_secs, Duration::from_secs(600));
    assert_eq!(c.grpc.listen, "0.0.0.0:4001");
    assert!(c.notify.enabled);
    assert_eq!(c.notify.bind, "tcp://0.0.0.0:4002");
    assert_eq!(c.notify.high_water_mark, 100_000);
    assert_eq!(c.wal.fsync, FsyncMode::Always);
    assert_eq!(c.wal.fsync_interval_ms, Duration::from_millis(10));
    assert_eq!(c.wal.segment_size_bytes, 67108864);
    assert_eq!(c.wal.retention_max_bytes, 1073741824);
    assert_eq!(c.wal.retention_max_age_secs, Duration::from_secs(86400));
    assert_eq!(c.memtable.size_bytes, 67108864);
    assert_eq!(c.replication.max_lag_records, 10_000);
    assert_eq!(c.replication.max_staleness_seconds, None);
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "info");
    c.validate().unwrap();
}

#[test]
fn sections_list_matches_the_tree() {
    // With every optional section switched on, so each renders.
    let mut c = Config::default();
    c.resp.listen = "127.0.0.1:6379".into();
    c.archive.enabled = true;
    c.cluster = Some(Default::default());
    let tree = serde_yaml_ng::to_value(c).unwrap();
    let keys: Vec<&str> = tree
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(keys, SECTIONS);
}

#[test]
fn enums_accept_their_spellings() {
    for (s, m) in [("replicator", Mode::Replicator), ("relayer", Mode::Relayer)] {
        let c = load_file("c.yaml", &format!("server:\n  mode: {s}\n")).unwrap();
        assert_eq!(c.server.mode, m);
        assert_eq!(m.as_str(), s);
    }
    for (s, f) in [
        ("always", FsyncMode::Always),
        ("interval", FsyncMode::Interval),
        ("never", FsyncMode::Never),
    ] {
        let c = load_file("c.toml", &format!("[wal]\nfsync = \"{s}\"\n")).unwrap();
        assert_eq!(c.wal.fsync, f);
        assert_eq!(f.as_str(), s);
        assert_eq!(load_env(&[("UNISONDB_WAL_FSYNC", s)]).unwrap().wal.fsync, f);
    }
    for (s, f) in [("text", LogFormat::Text), ("json", LogFormat::Json)] {
        let c = load_file("c.yml", &format!("log:\n  format: {s}\n")).unwrap();
        assert_eq!(c.log.format, f);
        assert_eq!(f.as_str(), s);
    }
}

#[test]
fn bad_enum_values_name_the_key_and_the_choices() {
    let e = err_text(load_file("c.yaml", "server:\n  mode: leader\n"));
    assert!(e.contains("server.mode") && e.contains("leader"), "{e}");
    assert!(e.contains("replicator") && e.contains("relayer"), "{e}");
    let e = err_text(load_file("c.toml", "[wal]\nfsync = \"sometimes\"\n"));
    assert!(e.contains("wal.fsync") && e.contains("sometimes"), "{e}");
    assert!(e.contains("interval"), "{e}");
    let e = err_text(load_env(&[("UNISONDB_LOG_FORMAT", "xml")]));
    assert!(
        e.contains("UNISONDB_LOG_FORMAT") && e.contains("xml"),
        "{e}"
    );
    assert!(e.contains("json"), "{e}");
}

#[test]
fn yaml_and_toml_parse_the_same() {
    let y = load_file(
        "c.yaml",
        "server:\n  namespaces: [a, b]\nwal:\n  fsync: interval\n  fsync_interval_ms: 5\nreplication:\n  mirrors: {x: 'http://h:4001'}\n",
    )
    .unwrap();
    let t = load_file(
        "c.toml",
        "[server]\nnamespaces = [\"a\", \"b\"]\n[wal]\nfsync = \"interval\"\nfsync_interval_ms = 5\n[replication.mirrors]\nx = \"http://h:4001\"\n",
    )
    .unwrap();
    assert_eq!(y, t);
    assert_eq!(y.wal.fsync, FsyncMode::Interval);
    assert_eq!(y.wal.fsync_interval_ms, Duration::from_millis(5));
    assert_eq!(y.server.namespaces, vec!["a", "b"]);
    assert_eq!(y.replication.mirrors["x"], "http://h:4001");
}

#[test]
fn empty_yaml_means_defaults_and_other_extensions_are_refused() {
    assert_eq!(load_file("c.yaml", "\n").unwrap(), Config::default());
    assert_eq!(load_file("c.toml", "").unwrap(), Config::default());
    assert!(matches!(
        load_file("c.json", "{}"),
        Err(ConfigError::Extension(_))
    ));
    assert!(matches!(
        Config::load(Some(Path::new("/nonexistent/c.yaml"))),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn unknown_keys_are_errors() {
    let r = load_file("c.yaml", "http:\n  lisen: 0.0.0.0:1\n");
    assert!(matches!(r, Err(ConfigError::Parse { .. })), "{r:?}");
    let e = err_text(r);
    assert!(e.contains("http.lisen"), "{e}");
    let e = err_text(load_file("c.toml", "[bogus]\nx = 1\n"));
    assert!(e.contains("bogus"), "{e}");
    // A variable naming no key is a warning (see `service_link_variables_are_warnings`).
    let (c, w) = load_env_verbose(&[("UNISONDB_HTTP_LISEN", "x")]).unwrap();
    assert_eq!(c, Config::default());
    assert!(w.iter().any(|w| w.contains("UNISONDB_HTTP_LISEN")), "{w:?}");
}

#[test]
fn variables_outside_the_sections_are_ignored() {
    let c = load_env(&[
        ("UNISONDB_E2E_RUN", "1"),
        ("UNISONDB_CRASH_CYCLES", "3"),
        ("UNISONDB_HTTP", "x"),
    ])
    .unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn env_overrides_are_typed() {
    let c = load_env(&[
        ("UNISONDB_HTTP_LISTEN", "127.0.0.1:8080"),
        ("UNISONDB_WAL_FSYNC", "never"),
        ("UNISONDB_SERVER_NAMESPACES", "a, b"),
        ("UNISONDB_SERVER_DATA_DIR", "/tmp/x"),
        ("UNISONDB_MEMTABLE_SIZE_BYTES", "1048576"),
        ("UNISONDB_NOTIFY_ENABLED", "false"),
        ("UNISONDB_NOTIFY_BIND", "tcp://127.0.0.1:5555"),
        ("UNISONDB_SERVER_MODE", "relayer"),
        ("UNISONDB_REPLICATION_UPSTREAM", "http://hub:4001"),
        ("UNISONDB_REPLICATION_MIRRORS", "x=http://h:1, y=http://g:2"),
        ("UNISONDB_HTTP_TXN_IDLE_TIMEOUT_SECS", "5"),
        ("UNISONDB_WAL_FSYNC_INTERVAL_MS", "7"),
        ("UNISONDB_REPLICATION_MAX_STALENESS_SECONDS", "30"),
        ("UNISONDB_LOG_LEVEL", "info,unisondb=debug"),
        ("PATH", "/bin"),
    ])
    .unwrap();
    assert_eq!(c.http.listen, "127.0.0.1:8080");
    assert_eq!(c.wal.fsync, FsyncMode::Never);
    assert_eq!(c.server.namespaces, vec!["a", "b"]);
    assert_eq!(c.server.data_dir, Path::new("/tmp/x"));
    assert_eq!(c.memtable.size_bytes, 1 << 20);
    assert!(!c.notify.enabled);
    assert_eq!(c.notify.bind, "tcp://127.0.0.1:5555");
    assert_eq!(c.server.mode, Mode::Relayer);
    assert_eq!(c.replication.upstream, "http://hub:4001");
    assert_eq!(c.replication.mirrors["x"], "http://h:1");
    assert_eq!(c.replication.mirrors["y"], "http://g:2");
    assert_eq!(c.http.txn_idle_timeout_secs, Duration::from_secs(5));
    assert_eq!(c.wal.fsync_interval_ms, Duration::from_millis(7));
    assert_eq!(c.replication.max_staleness_seconds, Some(30));
    assert_eq!(c.log.level, "info,unisondb=debug");
    for (v, want) in [
        ("1", true),
        ("yes", true),
        ("on", true),
        ("0", false),
        ("off", false),
    ] {
        assert_eq!(
            load_env(&[("UNISONDB_NOTIFY_ENABLED", v)])
                .unwrap()
                .notify
                .enabled,
            want,
            "{v}"
        );
    }
    let e = err_text(load_env(&[("UNISONDB_WAL_SEGMENT_SIZE_BYTES", "lots")]));
    assert!(e.contains("UNISONDB_WAL_SEGMENT_SIZE_BYTES"), "{e}");
    let e = err_text(load_env(&[("UNISONDB_REPLICATION_MIRRORS", "x")]));
    assert!(e.contains("name=value"), "{e}");
}

#[test]
fn string_values_stay_verbatim() {
    let c = load_env(&[("UNISONDB_HTTP_AUTH_TOKEN", "007")]).unwrap();
    assert_eq!(c.http.auth_token, "007");
    let c = load_env(&[("UNISONDB_HTTP_AUTH_TOKEN", "true")]).unwrap();
    assert_eq!(c.http.auth_token, "true");
    assert_eq!(c.auth_token().unwrap().as_deref(), Some("true"));
}

#[test]
fn env_wins_over_the_file() {
    let mut out = None;
    jailed(&[("UNISONDB_HTTP_LISTEN", "127.0.0.1:9")], |jail| {
        jail.create_file(
            "c.yaml",
            "http:\n  listen: 127.0.0.1:8\n  max_body_bytes: 77\n",
        )
        .map_err(|e| e.to_string())?;
        out = Some(Config::load(Some(Path::new("c.yaml"))));
        Ok(())
    });
    let c = out.unwrap().unwrap();
    assert_eq!(c.http.listen, "127.0.0.1:9");
    assert_eq!(c.http.max_body_bytes, 77);
}

#[test]
fn invalid_values_are_rejected() {
    for env in [
        ("UNISONDB_WAL_FSYNC", "sometimes"),
        ("UNISONDB_HTTP_LISTEN", "nowhere"),
        ("UNISONDB_SERVER_NAMESPACES", "../etc"),
        ("UNISONDB_SERVER_NAMESPACES", ""),
        ("UNISONDB_HTTP_TLS_CERT_FILE", "/only/cert.pem"),
        ("UNISONDB_LOG_FORMAT", "xml"),
        ("UNISONDB_SERVER_MODE", "leader"),
        ("UNISONDB_HTTP_TXN_IDLE_TIMEOUT_SECS", "0"),
        ("UNISONDB_WAL_SEGMENT_SIZE_BYTES", "-1"),
        ("UNISONDB_REPLICATION_MAX_STALENESS_SECONDS", "soon"),
    ] {
        assert!(load_env(&[env]).is_err(), "{env:?}");
    }
    let e = err_text(load_env(&[
        ("UNISONDB_WAL_FSYNC", "interval"),
        ("UNISONDB_WAL_FSYNC_INTERVAL_MS", "0"),
    ]));
    assert!(e.contains("fsync_interval_ms"), "{e}");
}

#[test]
fn namespace_rule() {
    for ok in ["default", "a-b_c.d", &"x".repeat(64)] {
        assert!(validate_namespace(ok).is_ok(), "{ok}");
    }
    for bad in ["", ".hidden", "a/b", "../etc", "sp ace", &"x".repeat(65)] {
        assert!(validate_namespace(bad).is_err(), "{bad}");
    }
}

#[test]
fn yaml_output_is_the_documented_format_and_round_trips() {
    let c = Config::default();
    let yaml = c.to_yaml();
    for line in [
        "  mode: replicator",
        "  fsync: always",
        "  fsync_interval_ms: 10",
        "  txn_idle_timeout_secs: 60",
        "  retention_max_age_secs: 86400",
        "  format: text",
        "  mirrors: {}",
    ] {
        assert!(yaml.contains(line), "{line:?} missing in\n{yaml}");
    }
    let back: Config = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(back, c);
    let toml_back: Config = toml_roundtrip(&c);
    assert_eq!(toml_back, c);
    // An optional key is left out when absent and round-trips when set.
    assert!(!yaml.contains("max_staleness_seconds"), "{yaml}");
    let mut c = Config::default();
    c.replication.max_staleness_seconds = Some(5);
    let yaml = c.to_yaml();
    assert!(yaml.contains("  max_staleness_seconds: 5"), "{yaml}");
    assert_eq!(serde_yaml_ng::from_str::<Config>(&yaml).unwrap(), c);
    assert_eq!(toml_roundtrip(&c), c);
}

fn toml_roundtrip(c: &Config) -> Config {
    let mut out = None;
    jailed(&[], |jail| {
        let text = figment::providers::Serialized::defaults(c.clone());
        let dict = figment::Figment::from(text)
            .extract::<Config>()
            .map_err(|e| e.to_string())?;
        jail.create_file("x.yaml", &dict.to_yaml())
            .map_err(|e| e.to_string())?;
        out = Some(Config::parse_file(Path::new("x.yaml")));
        Ok(())
    });
    out.unwrap().unwrap()
}

#[test]
fn service_link_variables_are_warnings() {
    // What Kubernetes injects for Services named `unisondb` and `unisondb-http`.
    let (c, w) = load_env_verbose(&[
        ("UNISONDB_HTTP_PORT", "80"),
        ("UNISONDB_PORT", "tcp://10.0.0.1:4000"),
        ("UNISONDB_PORT_4000_TCP_ADDR", "10.0.0.1"),
        ("UNISONDB_SERVICE_HOST", "10.0.0.1"),
        ("UNISONDB_HTTP_SERVICE_PORT", "4000"),
        ("UNISONDB_CONFIG", "/etc/unisondb/config.toml"),
        ("UNISONDB_URL", "http://x:4000"),
    ])
    .unwrap();
    assert_eq!(c, Config::default());
    for var in [
        "UNISONDB_HTTP_PORT",
        "UNISONDB_PORT",
        "UNISONDB_PORT_4000_TCP_ADDR",
        "UNISONDB_SERVICE_HOST",
        "UNISONDB_HTTP_SERVICE_PORT",
    ] {
        let n = w.iter().filter(|w| w.contains(&format!("{var} "))).count();
        assert_eq!(n, 1, "{var}: {w:?}");
    }
    assert!(
        !w.iter()
            .any(|w| w.contains("UNISONDB_CONFIG") || w.contains("UNISONDB_URL")),
        "{w:?}"
    );
    // A known key with a bad value still fails.
    let e = err_text(load_env(&[
        ("UNISONDB_HTTP_LISTEN", "bad"),
        ("UNISONDB_HTTP_PORT", "80"),
    ]));
    assert!(e.contains("http.listen") && e.contains("bad"), "{e}");
    let e = err_text(load_env(&[("UNISONDB_MEMTABLE_SIZE_BYTES", "lots")]));
    assert!(e.contains("UNISONDB_MEMTABLE_SIZE_BYTES"), "{e}");
}

/// UnisonDB's own `cmd/unisondb/config.toml`, as its documentation lists the keys.
const UNISON_SERVER: &str = r#"## Port of the http server
http_port = 4000
pprof_enable = true

[grpc_config]
port = 4001
cert_path = "../../certs/server.crt"
key_path = "../../certs/server.key"
ca_path = "../../certs/ca.crt"

[storage_config]
base_dir = "/tmp/unisondb/server"   # Base directory for storage
namespaces = ["default", "tenant_1", "tenant_2", "tenant_3", "tenant_4"]
bytes_per_sync = "1MB"
segment_size = "16MB"
arena_size = "4MB"
db_engine = "LMDB"
btree_flush_interval = "0s"

[write_notify_config]
enabled = false
max_delay = "20ms"

[storage_config.wal_cleanup_config]
interval = "5m"
enabled = true
max_age = "1h"
min_segments = 5
max_segments = 10

[storage_config.btree_config]
no_sync = true
mmap_size = "4GB"

[notifier_config.default]
bind_address = "tcp://*:5555"
high_water_mark = 1000
linger_time = 5

[notifier_config.tenant_1]
bind_port = 5556

[pprof_config]
enabled = true
port = 6070

[log_config]
log_level = "debug"

[log_config.min_level_percents]
debug = 100.0
info  = 50.0

[fuzz_config]
ops_per_namespace = 400
workers_per_namespace = 50
local_relayer_count = 1000
"#;

#[test]
fn unisondb_server_config_is_mapped() {
    let l = load_file_verbose("config.toml", UNISON_SERVER).unwrap();
    assert_eq!(l.format, FileFormat::UnisonDb);
    let c = l.config;
    assert_eq!(c.http.listen, "0.0.0.0:4000");
    assert_eq!(c.grpc.listen, "0.0.0.0:4001");
    assert_eq!(c.grpc.tls_cert_file, "../../certs/server.crt");
    assert_eq!(c.grpc.tls_key_file, "../../certs/server.key");
    assert_eq!(c.grpc.tls_ca_file, "../../certs/ca.crt");
    assert_eq!(c.server.data_dir, Path::new("/tmp/unisondb/server"));
    assert_eq!(
        c.server.namespaces,
        vec!["default", "tenant_1", "tenant_2", "tenant_3", "tenant_4"]
    );
    assert_eq!(c.server.mode, Mode::Replicator);
    assert_eq!(c.wal.segment_size_bytes, 16 << 20);
    assert_eq!(c.memtable.size_bytes, 4 << 20);
    assert_eq!(c.wal.retention_max_age_secs, Duration::from_secs(3600));
    assert_eq!(c.log.level, "debug");
    // Per-namespace sockets only, as UnisonDB has them.
    assert!(c.notify.enabled);
    assert_eq!(c.notify.bind, "");
    assert_eq!(c.notify.namespaces["default"].bind, "tcp://*:5555");
    assert_eq!(c.notify.namespaces["default"].high_water_mark, 1000);
    assert_eq!(c.notify.namespaces["default"].linger_ms, 5);
    assert_eq!(c.notify.namespaces["tenant_1"].bind, "tcp://*:5556");
    assert_eq!(c.notify.namespaces["tenant_1"].high_water_mark, 10_000);
    // One warning per key without meaning here, each naming it.
    let w = l.warnings;
    for key in [
        "pprof_enable",
        "pprof_config",
        "storage_config.bytes_per_sync",
        "storage_config.db_engine",
        "storage_config.btree_flush_interval",
        "storage_config.btree_config.no_sync",
        "storage_config.btree_config.mmap_size",
        "storage_config.wal_cleanup_config.interval",
        "storage_config.wal_cleanup_config.min_segments",
        "storage_config.wal_cleanup_config.max_segments",
        "write_notify_config",
        "log_config.min_level_percents",
        "fuzz_config",
    ] {
        let n = w
            .iter()
            .filter(|w| w.contains(&format!("key {key} ")))
            .count();
        assert_eq!(n, 1, "{key}: {w:?}");
    }
    assert!(
        !w.iter()
            .any(|w| w.contains("segment_size ") || w.contains("http_port")),
        "{w:?}"
    );
}

#[test]
fn unisondb_relayer_config_follows_its_upstream() {
    let text = r#"
http_port = 6000
[grpc_config]
port = 6001
[storage_config]
base_dir = "/tmp/unisondb/relayer"
namespaces = ["default", "tenant_1", "tenant_2"]
segment_size = "16MB"
arena_size = "4MB"
[relayer_config]
[relayer_config.relayer1]
namespaces = ["default", "tenant_1", "tenant_2"]
cert_path = "client.crt"
key_path = "client.key"
ca_path = "ca.crt"
upstream_address = "localhost:4001"
lsn_lag_threshold = 100
[log_config]
log_level = "info"
[limiter]
interval = "500ms"
burst = 20
"#;
    let l = load_file_verbose("relayer.toml", text).unwrap();
    let c = l.config;
    assert_eq!(c.http.listen, "0.0.0.0:6000");
    assert_eq!(c.replication.upstream, "localhost:4001");
    assert!(c.replication.mirrors.is_empty());
    assert_eq!(c.replication.tls_ca_file, "ca.crt");
    assert_eq!(c.replication.tls_cert_file, "client.crt");
    assert_eq!(c.replication.tls_key_file, "client.key");
    assert_eq!(c.replication.max_lag_records, 100);
    assert_eq!(c.notify.bind, "");
    assert!(!c.notify.enabled);
    assert!(
        l.warnings.iter().any(|w| w.contains("key limiter ")),
        "{:?}",
        l.warnings
    );

    // Two groups with different upstreams: one upstream per namespace.
    let text = r#"
[storage_config]
namespaces = ["a", "b"]
[relayer_config.one]
namespaces = ["a"]
upstream_address = "http://hub1:4001"
[relayer_config.two]
namespaces = ["b", "c"]
upstream_address = "http://hub2:4001"
"#;
    let c = load_file("r.toml", text).unwrap();
    assert_eq!(c.replication.upstream, "");
    assert_eq!(c.replication.mirrors["a"], "http://hub1:4001");
    assert_eq!(c.replication.mirrors["b"], "http://hub2:4001");
    assert_eq!(c.replication.mirrors["c"], "http://hub2:4001");
    assert_eq!(c.server.namespaces, vec!["a", "b", "c"]);
}

#[test]
fn our_sections_may_sit_beside_unisondb_keys() {
    let c = load_file(
        "c.toml",
        "http_port = 4100\n[wal]\nfsync = \"never\"\n[notify]\nbind = \"tcp://127.0.0.1:4102\"\n",
    )
    .unwrap();
    assert_eq!(c.http.listen, "0.0.0.0:4100");
    assert_eq!(c.wal.fsync, FsyncMode::Never);
    assert_eq!(c.notify.bind, "tcp://127.0.0.1:4102");
}

#[test]
fn misspelled_keys_name_the_key_and_the_line() {
    // Inside a UnisonDB table.
    let text =
        "http_port = 4000\n\n[storage_config]\nbase_dir = \"/tmp/x\"\nsegmnt_size = \"16MB\"\n";
    let e = err_text(load_file("config.toml", text));
    assert!(e.contains("segmnt_size") && e.contains("line 5"), "{e}");
    // At the top level of a UnisonDB file.
    let e = err_text(load_file(
        "config.toml",
        "http_port = 4000\nhttp_prot = 1\n",
    ));
    assert!(e.contains("http_prot") && e.contains("line 2"), "{e}");
    // A top-level key of neither format.
    let e = err_text(load_file("config.toml", "\nhtp_port = 4000\n"));
    assert!(e.contains("htp_port") && e.contains("line 2"), "{e}");
    assert!(e.contains("UnisonDB") && e.contains("http_port"), "{e}");
    // In our own format (TOML and YAML).
    let e = err_text(load_file(
        "c.toml",
        "[server]\ndata_dir = \"x\"\n\n[http]\nlisen = \"x\"\n",
    ));
    assert!(e.contains("lisen") && e.contains("line 5"), "{e}");
    let e = err_text(load_file(
        "c.yaml",
        "server:\n  data_dir: x\nhttp:\n  lisen: x\n",
    ));
    assert!(e.contains("lisen") && e.contains("line 4"), "{e}");
    // A bad size or duration names its key.
    let e = err_text(load_file(
        "config.toml",
        "[storage_config]\nsegment_size = \"16XB\"\n",
    ));
    assert!(e.contains("storage_config.segment_size"), "{e}");
    let e = err_text(load_file(
        "config.toml",
        "[write_notify_config]\nmax_delay = \"20 parsecs\"\n",
    ));
    assert!(e.contains("write_notify_config.max_delay"), "{e}");
}

#[test]
fn resp_is_off_by_default_and_absent_from_rendered_configs() {
    let c = Config::default();
    assert!(c.resp.is_off());
    assert!(
        !c.to_yaml().contains("resp"),
        "a default config renders no resp section"
    );
    let mut on = c.clone();
    on.resp.listen = "0.0.0.0:6379".into();
    on.validate().unwrap();
    assert!(on.to_yaml().contains("listen: 0.0.0.0:6379"));
    on.resp.listen = "6379".into();
    assert!(on.validate().is_err());
}

#[test]
fn an_archive_bucket_without_archiving_survives_loading() {
    // Base backups go to `archive.bucket` even with WAL archiving off (docs/CONFIG.md).
    let c = load_file(
        "c.yaml",
        "archive:\n  enabled: false\n  bucket: b\n  endpoint: http://s3:9000\n",
    )
    .unwrap();
    assert!(!c.archive.enabled);
    assert_eq!(
        (c.archive.bucket.as_str(), c.archive.endpoint.as_str()),
        ("b", "http://s3:9000")
    );
    assert!(!c.archive.is_off());
    assert!(Config::default().archive.is_off());
}

#[test]
fn cluster_members_ids_and_validation() {
    use crate::ClusterConfig;
    let c = ClusterConfig {
        peers: vec![
            "hub-0.hub:4001".into(),
            "hub-1.hub:4001".into(),
            "hub-2.hub:4001".into(),
        ],
        ..Default::default()
    };
    assert_eq!(
        c.members().unwrap(),
        vec![
            (1, "hub-0.hub:4001".to_string()),
            (2, "hub-1.hub:4001".to_string()),
            (3, "hub-2.hub:4001".to_string())
        ]
    );
    assert_eq!(c.resolve_node_id("hub-0").unwrap(), 1);
    assert_eq!(c.resolve_node_id("unisondb-hub-12").unwrap(), 13);
    assert!(c.resolve_node_id("laptop").is_err());
    let explicit = ClusterConfig {
        node_id: Some(7),
        peers: vec!["7=a:1".into(), "9=b:2".into()],
        ..Default::default()
    };
    assert_eq!(explicit.resolve_node_id("x-0").unwrap(), 7);
    assert_eq!(explicit.members().unwrap()[1], (9, "b:2".to_string()));
    let dup = ClusterConfig {
        peers: vec!["1=a:1".into(), "1=b:2".into()],
        ..Default::default()
    };
    assert!(dup.members().unwrap_err().contains("twice"));

    let mut cfg = Config {
        cluster: Some(c.clone()),
        ..Default::default()
    };
    cfg.validate().unwrap();
    cfg.server.mode = Mode::Relayer;
    assert!(cfg.validate().is_err(), "a relayer cannot be a member");
    cfg.server.mode = Mode::Replicator;
    cfg.cluster = Some(ClusterConfig {
        node_id: Some(5),
        ..c.clone()
    });
    assert!(cfg.validate().is_err(), "node_id must be a member");
    cfg.cluster = Some(ClusterConfig {
        heartbeat_ms: 600,
        ..c
    });
    assert!(
        cfg.validate().is_err(),
        "election timeout below twice the heartbeat"
    );

    let text = "cluster:\n  peers: [\"a:4001\", \"b:4001\", \"c:4001\"]\n  node_id: 2\n";
    let loaded = load_file("c.yaml", text).unwrap();
    let cl = loaded.cluster.unwrap();
    assert_eq!(
        (cl.node_id, cl.peers.len(), cl.heartbeat_ms),
        (Some(2), 3, 100)
    );
    assert!(
        Config::default().cluster.is_none(),
        "no section: a single hub"
    );
}

#[test]
fn upstream_lists_every_member_of_a_hub_group() {
    // A single address stays exactly what it was.
    let one = load_file("o.yaml", "replication:\n  upstream: http://hub:4001\n").unwrap();
    assert_eq!(one.replication.upstream, "http://hub:4001");
    assert_eq!(one.replication.upstreams(), vec!["http://hub:4001"]);
    // A YAML list, a comma-separated string and the environment give the same list.
    let want = vec![
        "http://hub-0:4001",
        "http://hub-1:4001",
        "http://hub-2:4001",
    ];
    let list = load_file(
        "l.yaml",
        "replication:\n  upstream: [http://hub-0:4001, http://hub-1:4001, http://hub-2:4001]\n",
    )
    .unwrap();
    assert_eq!(list.replication.upstreams(), want);
    let comma = load_file(
        "c.yaml",
        "replication:\n  upstream: \"http://hub-0:4001, http://hub-1:4001,http://hub-2:4001\"\n",
    )
    .unwrap();
    assert_eq!(comma.replication.upstreams(), want);
    let toml = load_file(
        "t.toml",
        "[replication]\nupstream = [\"http://hub-0:4001\", \"http://hub-1:4001\", \"http://hub-2:4001\"]\n",
    )
    .unwrap();
    assert_eq!(toml.replication.upstreams(), want);
    let env = load_env(&[(
        "UNISONDB_REPLICATION_UPSTREAM",
        "http://hub-0:4001,http://hub-1:4001,http://hub-2:4001",
    )])
    .unwrap();
    assert_eq!(env.replication.upstreams(), want);

    for (bad, why) in [
        ("http://a:4001,,http://b:4001", "is empty"),
        ("http://a:4001,http://a:4001", "appears twice"),
        ("http://a:4001,https://b:4001", "same scheme"),
        ("http://a:4001,grpc://b:4001", "scheme"),
        ("http://a:4001,http://b", "host:port"),
    ] {
        let e = err_text(load_env(&[("UNISONDB_REPLICATION_UPSTREAM", bad)]));
        assert!(
            e.contains("replication.upstream") && e.contains(why),
            "{bad}: {e}"
        );
    }
}
