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
    let tree = serde_yaml_ng::to_value(Config::default()).unwrap();
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
    let r = load_env(&[("UNISONDB_HTTP_LISEN", "x")]);
    match r {
        Err(ConfigError::Env { var, .. }) => assert_eq!(var, "UNISONDB_HTTP_LISEN"),
        other => panic!("expected an env error, got {other:?}"),
    }
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
