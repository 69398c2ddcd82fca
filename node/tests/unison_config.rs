//! UnisonDB's own config.toml and command line, against real `unisondb` processes (issue 14):
//!
//! - `unisondb server` with no flags, in a directory holding a UnisonDB-format `config.toml`, picks it
//!   up (and says so), serves on its `http_port` with its namespaces, stores under its `base_dir`, and
//!   starts despite a Kubernetes service-link variable `UNISONDB_HTTP_PORT`.
//! - `unisondb relay -c relay.toml` with a `[relayer_config.x]` group follows a hub (the upstream
//!   given as UnisonDB writes it, a bare `host:port`) and refuses writes.
//! - A misspelled key stops the node with the key and its line; `config check` prints the effective
//!   config and the warnings.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use unisondb_testkit::{free_port, LoopbackNode, Wait};

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");

/// A `unisondb` child run in `dir` with its stderr in `dir/server.log`; killed on drop.
struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Proc {
    fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let log = dir.join("server.log");
        let f = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env_remove("UNISONDB_CONFIG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn unisondb");
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self, c: &reqwest::Client, port: u16) {
        let url = format!("http://127.0.0.1:{port}/readyz");
        let r = Wait::new("node ready", Duration::from_secs(30))
            .until_async(|| {
                let c = c.clone();
                let url = url.clone();
                let exited = self.child.try_wait().ok().flatten();
                async move {
                    if let Some(st) = exited {
                        return Err(format!("exited with {st}"));
                    }
                    match c.get(&url).send().await {
                        Ok(r) if r.status().is_success() => Ok(Some(())),
                        Ok(_) | Err(_) => Ok(None),
                    }
                }
            })
            .await;
        if let Err(e) = r {
            panic!("{e}\n{}", self.log());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

async fn put(c: &reqwest::Client, port: u16, ns: &str, key: &str, value: &str) -> u16 {
    c.put(format!("http://127.0.0.1:{port}/api/v1/{ns}/kv/{key}"))
        .json(&serde_json::json!({ "value": B64.encode(value) }))
        .send()
        .await
        .expect("put")
        .status()
        .as_u16()
}

async fn get(c: &reqwest::Client, port: u16, ns: &str, key: &str) -> Option<String> {
    let r = c
        .get(format!("http://127.0.0.1:{port}/api/v1/{ns}/kv/{key}"))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: serde_json::Value = r.json().await.ok()?;
    let b = B64.decode(v["value"].as_str()?).ok()?;
    String::from_utf8(b).ok()
}

#[tokio::test]
async fn server_without_flags_uses_unisondb_config_toml() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("storage");
    let (http, grpc) = (free_port(), free_port());
    std::fs::write(
        tmp.path().join("config.toml"),
        format!(
            r#"## UnisonDB's config.toml, as its users write it
http_port = {http}
listen_ip = "127.0.0.1"
pprof_enable = true

[grpc_config]
port = {grpc}

[storage_config]
base_dir = "{}"
namespaces = ["default", "tenant_1"]
bytes_per_sync = "1MB"
segment_size = "16MB"
arena_size = "4MB"
db_engine = "LMDB"

[storage_config.wal_cleanup_config]
interval = "5m"
enabled = false
max_age = "1h"

[write_notify_config]
enabled = false
max_delay = "20ms"

[log_config]
log_level = "info"

[log_config.min_level_percents]
info = 50.0
"#,
            base.display()
        ),
    )
    .expect("write config");
    // A Kubernetes Service named `unisondb-http` would inject these.
    let mut p = Proc::spawn(
        tmp.path(),
        &["server"],
        &[
            ("UNISONDB_HTTP_PORT", "tcp://10.0.0.7:80"),
            ("UNISONDB_HTTP_SERVICE_HOST", "10.0.0.7"),
        ],
    );
    let c = client();
    p.wait_ready(&c, http).await;
    assert_eq!(put(&c, http, "tenant_1", "k1", "v1").await, 200);
    assert_eq!(get(&c, http, "tenant_1", "k1").await.as_deref(), Some("v1"));
    assert_eq!(put(&c, http, "default", "k2", "v2").await, 200);
    let health: serde_json::Value = c
        .get(format!("http://127.0.0.1:{http}/healthz"))
        .send()
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json");
    assert_eq!(
        health["namespaces"],
        serde_json::json!(["default", "tenant_1"])
    );
    for ns in ["default", "tenant_1"] {
        let wal = base.join(ns).join("wal");
        let segs = std::fs::read_dir(&wal)
            .unwrap_or_else(|e| panic!("{}: {e}", wal.display()))
            .count();
        assert!(segs > 0, "no WAL segment under {}", wal.display());
    }
    // The gRPC listener is on grpc_config.port.
    std::net::TcpStream::connect(("127.0.0.1", grpc)).expect("gRPC port listening");
    let log = p.log();
    assert!(log.contains("using ./config.toml"), "{log}");
    assert!(log.contains("UNISONDB_HTTP_PORT"), "{log}");
    assert!(log.contains("storage_config.db_engine"), "{log}");
    assert!(
        !tmp.path().join("data").exists(),
        "defaults' ./data was used"
    );
}

#[tokio::test]
async fn relay_follows_a_hub_from_relayer_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = LoopbackNode::start(BIN, tmp.path(), "hub", &["default"], None, "", &[])
        .expect("start hub");
    let c = client();
    hub.wait_ready(&c, Duration::from_secs(30))
        .await
        .expect("hub ready");
    assert_eq!(put(&c, hub.ports.http, "default", "before", "1").await, 200);

    let dir = tmp.path().join("relay");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (http, grpc) = (free_port(), free_port());
    std::fs::write(
        dir.join("relay.toml"),
        format!(
            r#"http_port = {http}
listen_ip = "127.0.0.1"
[grpc_config]
port = {grpc}
[storage_config]
base_dir = "{}"
namespaces = ["default"]
segment_size = "16MB"
arena_size = "4MB"
[relayer_config]
[relayer_config.relayer1]
namespaces = ["default"]
upstream_address = "127.0.0.1:{}"
lsn_lag_threshold = 100
"#,
            dir.join("storage").display(),
            hub.ports.grpc
        ),
    )
    .expect("write relay.toml");
    let mut relay = Proc::spawn(&dir, &["relay", "-c", "relay.toml"], &[]);
    relay.wait_ready(&c, http).await;
    assert_eq!(put(&c, hub.ports.http, "default", "after", "2").await, 200);
    let got = Wait::new("relay has both keys", Duration::from_secs(20))
        .until_async(|| {
            let c = c.clone();
            async move {
                let a = get(&c, http, "default", "before").await;
                let b = get(&c, http, "default", "after").await;
                Ok::<_, String>(
                    (a.as_deref() == Some("1") && b.as_deref() == Some("2")).then_some(()),
                )
            }
        })
        .await;
    if let Err(e) = got {
        panic!("{e}\n{}", relay.log());
    }
    // Read-only.
    assert_eq!(put(&c, http, "default", "x", "y").await, 403);
}

#[test]
fn misspelled_key_stops_the_node_with_key_and_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("config.toml"),
        "http_port = 4000\n\n[storage_config]\nbase_dir = \"./x\"\nsegmnt_size = \"16MB\"\n",
    )
    .expect("write");
    for (args, env) in [
        (vec!["server"], vec![]),
        (vec!["replica", "-c", "config.toml"], vec![]),
        (vec!["relay"], vec![("UNISONDB_CONFIG", "config.toml")]),
    ] {
        let mut child = Command::new(BIN)
            .args(&args)
            .current_dir(tmp.path())
            .env_remove("UNISONDB_CONFIG")
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        // A node that started (on defaults, say) would never exit by itself: bound the wait.
        let exited = Wait::new("the node to refuse its config", Duration::from_secs(20))
            .until(|| child.try_wait().map_err(|e| e.to_string()));
        if exited.is_err() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("output");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(exited.is_ok(), "{args:?} started instead of failing: {err}");
        assert!(!out.status.success(), "{args:?} started: {err}");
        assert!(
            err.contains("segmnt_size") && err.contains("line 5"),
            "{args:?}: {err}"
        );
    }
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn config_check_prints_either_format_with_warnings() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let f = tmp.path().join("config.toml");
    std::fs::write(
        &f,
        "http_port = 4100\n[storage_config]\nnamespaces = [\"a\"]\ndb_engine = \"BOLT\"\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&f)
        .env("UNISONDB_PORT_4000_TCP_ADDR", "10.0.0.1")
        .output()
        .expect("run");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{se}");
    assert!(
        so.contains("listen: 0.0.0.0:4100") && so.contains("- a"),
        "{so}"
    );
    assert!(se.contains("storage_config.db_engine"), "{se}");
    assert!(se.contains("UNISONDB_PORT_4000_TCP_ADDR"), "{se}");
    // A known key with a bad value is still an error.
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&f)
        .env("UNISONDB_HTTP_LISTEN", "bad")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.listen"));
}
