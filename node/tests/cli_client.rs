//! The terminal client (`unisondb kv|row|lob|watch`) against one running node, then the offline WAL
//! tools (`unisondb wal list|inspect|stats`) on the stopped node's directory, which must stay
//! byte-identical. One node for the whole file, steps in order, to keep it fast.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use unisondb_testkit::LoopbackNode;

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");
const TOKEN: &str = "s3cret-token";

struct Cli {
    url: String,
}

impl Cli {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--url")
            .arg(&self.url)
            .env_remove("UNISONDB_URL")
            // The node requires this bearer token; the client takes it from the environment.
            .env("UNISONDB_TOKEN", TOKEN);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run unisondb")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs and expects failure with `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        err
    }
}

fn offline(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("run unisondb");
    assert!(
        out.status.success(),
        "{args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

#[tokio::test]
async fn client_commands_then_wal_tools() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut node = LoopbackNode::start(
        BIN,
        tmp.path(),
        "n",
        &["default", "other"],
        None,
        "",
        &[("UNISONDB_HTTP_AUTH_TOKEN", TOKEN)],
    )
    .expect("start node");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().expect("header"),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client");
    node.wait_ready(&http, Duration::from_secs(30))
        .await
        .expect("ready");
    let cli = Cli { url: node.url("") };

    // kv
    assert!(cli
        .ok(&["kv", "put", "greeting", "hello world"])
        .starts_with("OK (lsn 1)"));
    assert_eq!(cli.ok(&["kv", "get", "greeting"]), "hello world\n");
    let v: serde_json::Value =
        serde_json::from_str(&cli.ok(&["kv", "get", "greeting", "--json"])).expect("json");
    assert_eq!(v["found"], true);
    assert_eq!(v["value"], "aGVsbG8gd29ybGQ=");
    let err = cli.fails(&["kv", "get", "missing"], 1);
    assert!(err.contains("not found"), "{err}");
    let file = tmp.path().join("value.txt");
    std::fs::write(&file, "from a file").expect("write");
    cli.ok(&["kv", "put", "a/b", "--file", file.to_str().expect("utf-8")]);
    assert_eq!(cli.ok(&["kv", "get", "a/b"]), "from a file\n");
    cli.ok(&["kv", "-n", "other", "put", "x", "in other"]);
    cli.fails(&["kv", "get", "x"], 1);
    assert_eq!(
        cli.ok(&["kv", "get", "x", "--namespace", "other"]),
        "in other\n"
    );
    cli.ok(&["kv", "put", "p1", "1"]);
    cli.ok(&["kv", "put", "p2", "2"]);
    cli.ok(&["kv", "put", "p3", "3"]);
    assert_eq!(cli.ok(&["kv", "scan", "p"]), "p1\t1\np2\t2\np3\t3\n");
    assert_eq!(
        cli.ok(&["kv", "scan", "p", "--limit", "2", "--keys-only"]),
        "p1\np2\n"
    );
    assert_eq!(
        cli.ok(&["kv", "scan", "p", "--reverse", "--keys-only"]),
        "p3\np2\np1\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&cli.ok(&["kv", "scan", "--json"])).expect("json");
    assert_eq!(v["count"], 5, "{v}");
    cli.ok(&["kv", "delete", "p2"]);
    assert_eq!(cli.ok(&["kv", "scan", "p", "--keys-only"]), "p1\np3\n");

    // row
    cli.ok(&["row", "put", "user1", "name=Ann", "city=Oslo", "lang=no"]);
    assert_eq!(
        cli.ok(&["row", "get", "user1"]),
        "city=Oslo\nlang=no\nname=Ann\n"
    );
    assert_eq!(
        cli.ok(&["row", "get", "user1", "--columns", "name"]),
        "name=Ann\n"
    );
    cli.ok(&["row", "delete", "user1", "city"]);
    assert_eq!(cli.ok(&["row", "get", "user1"]), "lang=no\nname=Ann\n");
    cli.ok(&["row", "delete", "user1"]);
    assert!(cli.fails(&["row", "get", "user1"], 1).contains("not found"));
    cli.fails(&["row", "put", "user2", "no-equals-sign"], 1);

    // lob
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let src = tmp.path().join("blob.bin");
    std::fs::write(&src, &blob).expect("write");
    let out = cli.ok(&["lob", "put", "big", src.to_str().expect("utf-8")]);
    assert!(out.contains("300000 bytes"), "{out}");
    let dst = tmp.path().join("copy.bin");
    cli.ok(&["lob", "get", "big", dst.to_str().expect("utf-8")]);
    assert_eq!(std::fs::read(&dst).expect("read"), blob);
    let out = cli.cmd(&["lob", "get", "big"]).output().expect("run");
    assert!(out.status.success());
    assert_eq!(out.stdout, blob);
    assert!(cli.fails(&["lob", "get", "nope"], 1).contains("not found"));

    // watch: replay from LSN 1, then live.
    let out = cli.ok(&["watch", "--from-lsn", "1", "--count", "3"]);
    assert_eq!(
        out, "1 kv put greeting\n2 kv put a/b\n3 kv put p1\n",
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(
        cli.ok(&["watch", "--from-lsn", "2", "--count", "1", "--json"])
            .trim(),
    )
    .expect("json line");
    assert_eq!(v["lsn"], 2);
    let next = node.lsn(&http, "default").await.expect("lsn") + 1;
    let live = cli
        .cmd(&[
            "watch",
            "--from-lsn",
            &next.to_string(),
            "--count",
            "1",
            "--models",
            "row",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    cli.ok(&["kv", "put", "ignored-by-the-filter", "x"]);
    cli.ok(&["row", "put", "live", "c=1"]);
    let out = tokio::task::spawn_blocking(move || live.wait_with_output())
        .await
        .expect("join")
        .expect("watch output");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{} row put live [c]\n", next + 1)
    );

    // Errors: wrong token, unknown namespace, unreachable node.
    let err = cli.fails(&["kv", "get", "greeting", "--token", "wrong"], 1);
    assert!(err.contains("401"), "{err}");
    let err = cli.fails(&["kv", "-n", "nope", "get", "k"], 1);
    assert!(err.contains("namespace"), "{err}");
    let err = Command::new(BIN)
        .args(["kv", "get", "k", "--url", "http://127.0.0.1:1"])
        .output()
        .expect("run");
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("cannot reach"));

    // backup --result-file: the compact answer (what a Kubernetes Job leaves as its termination
    // message), or `error: ...` when the node refuses; the token may carry a trailing newline.
    let result = tmp.path().join("result.json");
    let r = result.to_str().expect("utf-8");
    let out = cli
        .cmd(&["backup", "--result-file", r])
        .env("UNISONDB_TOKEN", format!("{TOKEN}\n"))
        .output()
        .expect("run backup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&result).expect("result file")).expect("json");
    assert!(v["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    let lsn = node.lsn(&http, "default").await.expect("lsn");
    assert_eq!(v["manifest"]["wal"]["lastLsn"], lsn, "{v}");
    assert!(v["manifest"]["snapshot"]["bytes"].is_u64(), "{v}");
    assert!(v["manifest"].get("epochHistory").is_none(), "{v}");
    let err = cli.fails(&["backup", "-n", "nope", "--result-file", r], 1);
    let written = std::fs::read_to_string(&result).expect("result file");
    assert!(written.starts_with("error: "), "{written}");
    assert!(
        err.contains(written.trim_start_matches("error: ")),
        "{err} / {written}"
    );

    // Offline WAL tools on the stopped node: read-only, byte for byte.
    node.stop(Duration::from_secs(20)).expect("clean stop");
    let data = node.data();
    let before = snapshot(&data);
    let list = offline(&["wal", "list", data.to_str().expect("utf-8")]);
    assert!(list.contains("namespace default: 1 segment(s)"), "{list}");
    assert!(list.contains("namespace other: 1 segment(s)"), "{list}");
    let ins = offline(&[
        "wal",
        "inspect",
        data.join("default").to_str().expect("utf-8"),
    ]);
    assert!(ins.contains("ok   put kv greeting"), "{ins}");
    assert!(ins.contains("delete kv p2"), "{ins}");
    assert!(ins.contains("put row user1/name"), "{ins}");
    assert!(!ins.contains("BAD"), "{ins}");
    let recs: serde_json::Value = serde_json::from_str(&offline(&[
        "wal",
        "inspect",
        "--json",
        "--from",
        "2",
        "--limit",
        "2",
        data.join("default").join("wal").to_str().expect("utf-8"),
    ]))
    .expect("json");
    let recs = recs["default"].as_array().expect("records");
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["lsn"], 2);
    assert_eq!(recs[0]["crc_ok"], true);
    assert!(recs[0]["epoch"].as_u64().expect("epoch") >= 1);
    assert!(recs[0]["hlc"].as_u64().expect("hlc") > 0);
    let stats: serde_json::Value = serde_json::from_str(&offline(&[
        "wal",
        "stats",
        "--json",
        data.to_str().expect("utf-8"),
    ]))
    .expect("json");
    let d = &stats["default"];
    assert_eq!(d["first_lsn"], 1);
    assert_eq!(d["records"], d["last_lsn"]);
    assert_eq!(d["ops"]["delete kv"], 1);
    assert_eq!(stats["other"]["records"], 1);
    assert_eq!(
        snapshot(&data),
        before,
        "the WAL tools changed the directory"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
}

/// `--url https://...` with `--ca-file`: the client verifies the node's certificate with that CA;
/// without it (or with another CA) it refuses to connect.
#[tokio::test]
async fn https_with_a_ca_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (crt, key) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).expect("write");
    std::fs::write(&key, cert.key_pair.serialize_pem()).expect("write");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let other_ca = tmp.path().join("other.crt");
    std::fs::write(&other_ca, other.cert.pem()).expect("write");
    let node = LoopbackNode::start(
        BIN,
        tmp.path(),
        "n",
        &["default"],
        None,
        "",
        &[
            ("UNISONDB_HTTP_AUTH_TOKEN", TOKEN),
            ("UNISONDB_HTTP_TLS_CERT_FILE", crt.to_str().expect("utf-8")),
            ("UNISONDB_HTTP_TLS_KEY_FILE", key.to_str().expect("utf-8")),
        ],
    )
    .expect("start node");
    let cli = Cli {
        url: format!("https://localhost:{}", node.ports.http),
    };
    let ca = crt.to_str().expect("utf-8");
    // "not found" (exit 1) means the node answered over TLS with the namespace open (before: the
    // connection is refused, exit 2, or the namespace is still recovering, an HTTP 503)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cli.run(&["kv", "get", "k", "--ca-file", ca]);
        if out.status.code() == Some(1)
            && String::from_utf8_lossy(&out.stderr).contains("not found")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never answered over https: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cli
        .ok(&["kv", "put", "k", "v", "--ca-file", ca])
        .starts_with("OK"));
    assert_eq!(cli.ok(&["kv", "get", "k", "--ca-file", ca]), "v\n");
    let err = cli.fails(&["kv", "get", "k"], 2);
    assert!(err.contains("--ca-file"), "{err}");
    let err = cli.fails(
        &[
            "kv",
            "get",
            "k",
            "--ca-file",
            other_ca.to_str().expect("utf-8"),
        ],
        2,
    );
    assert!(err.contains("cannot reach"), "{err}");
}
