//! The Redis-protocol listener with real clients (issue 15, "A Redis-protocol front end"): a hub and
//! a relayer as real processes; `redis-cli` for every command, `redis-benchmark` for a short load
//! (no errors), redis-py subscribing to keyspace notifications on the relayer while the hub is
//! written through RESP. Reads and notifications work on the relayer, writes there are refused with
//! Redis's READONLY error; data written through RESP and through HTTP are the same data.

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use reqwest::Client;
use unisondb_testkit::{free_port, NodeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");

struct Node {
    proc: NodeProcess,
    http: u16,
    grpc: u16,
    resp: u16,
}

async fn start(root: &std::path::Path, name: &str, upstream: Option<u16>, extra: &str) -> Node {
    let (http, grpc, resp) = (free_port(), free_port(), free_port());
    let mut yaml = format!(
        "server:\n  mode: {}\n  data_dir: {}\n  namespaces: [default, other]\n\
         http:\n  listen: 127.0.0.1:{http}\n{extra}grpc:\n  listen: 127.0.0.1:{grpc}\n\
         notify:\n  bind: tcp://127.0.0.1:0\nresp:\n  listen: 127.0.0.1:{resp}\n",
        if upstream.is_some() {
            "relayer"
        } else {
            "replicator"
        },
        root.join(name).join("data").display(),
    );
    if let Some(up) = upstream {
        yaml.push_str(&format!(
            "replication:\n  upstream: http://127.0.0.1:{up}\n"
        ));
    }
    let mut proc = NodeProcess::new(BIN, name, root.join(name), yaml).dump_log_on_panic();
    proc.start_ready(&format!("http://127.0.0.1:{http}/healthz"))
        .await
        .unwrap();
    Node {
        proc,
        http,
        grpc,
        resp,
    }
}

/// `redis-cli -p PORT ARGS...`: (exit ok, stdout trimmed).
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (apt install redis-tools; scripts/install-deps.sh does)");
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_clients_against_a_hub_and_a_relayer() {
    let root = tempfile::tempdir().unwrap();
    let hub = start(root.path(), "hub", None, "").await;
    let rel = start(root.path(), "relayer", Some(hub.grpc), "").await;
    let p = hub.resp;

    // The commands, through redis-cli.
    assert_eq!(cli(p, &["PING"]), "PONG");
    assert_eq!(cli(p, &["ECHO", "hi"]), "hi");
    assert_eq!(cli(p, &["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(p, &["GET", "greeting"]), "hello world");
    assert_eq!(cli(p, &["GET", "missing"]), "");
    assert_eq!(
        cli(
            p,
            &["MSET", "user:1", "ann", "user:2", "bob", "item:1", "x"]
        ),
        "OK"
    );
    assert_eq!(cli(p, &["MGET", "user:1", "nope", "user:2"]), "ann\n\nbob");
    assert_eq!(cli(p, &["EXISTS", "user:1", "user:2", "nope"]), "2");
    // SCAN with MATCH walks every page (COUNT 1 forces cursors).
    let mut cursor = "0".to_string();
    let mut found = Vec::new();
    // Each redis-cli is a new connection: cursors must hold across connections, as Redis's do.
    for round in 0.. {
        assert!(
            round < 50,
            "SCAN never finished: {found:?}, cursor {cursor}"
        );
        let out = cli(p, &["SCAN", &cursor, "MATCH", "user:*", "COUNT", "1"]);
        assert!(!out.starts_with("ERR"), "{out}");
        let mut lines = out.lines();
        cursor = lines.next().unwrap().to_string();
        found.extend(lines.map(String::from).filter(|l| !l.is_empty()));
        if cursor == "0" {
            break;
        }
    }
    found.sort();
    assert_eq!(found, ["user:1", "user:2"]);
    assert_eq!(cli(p, &["DEL", "user:2", "nope"]), "1");
    assert_eq!(cli(p, &["EXISTS", "user:2"]), "0");
    // Namespaces are databases.
    let sel = cli(p, &["-n", "1", "GET", "greeting"]);
    assert_eq!(sel, "", "namespace 'other' (db 1) is separate");
    // Errors in Redis's format.
    assert!(cli(p, &["SET", "k", "v", "EX", "10"]).contains("TTLs are not supported"));
    assert!(cli(p, &["FLUSHALL"]).starts_with("ERR unknown command 'FLUSHALL'"));
    assert!(cli(p, &["GET"]).contains("wrong number of arguments for 'get'"));
    // Pipelined SETs (sent in one write by redis-py, committed together) each answer OK, the last
    // write of a key wins, and a bad key in the pipeline fails alone.
    let py = unisondb_testkit::venv_python().unwrap_or_else(|e| panic!("{e}"));
    let pipeline = format!(
        r#"
import redis
r = redis.Redis(port={p})
pl = r.pipeline(transaction=False)
for i in range(20):
    pl.set(f"pipe:{{i % 5}}", f"v{{i}}")
pl.set("", "empty")
pl.set("pipe:last", "done")
for res in pl.execute(raise_on_error=False):
    print(res if res is True else f"error: {{res}}")
"#
    );
    let out = Command::new(&py).args(["-c", &pipeline]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(replies.len(), 22, "{replies:?}");
    assert!(replies[..20].iter().all(|r| r == "True"), "{replies:?}");
    assert!(replies[20].contains("key must not be empty"), "{replies:?}");
    assert_eq!(replies[21], "True");
    assert_eq!(
        cli(p, &["MGET", "pipe:0", "pipe:4", "pipe:last"]),
        "v15\nv19\ndone"
    );
    // HELLO 3 answers a map and switches to RESP3.
    let hello = cli(p, &["-3", "HELLO", "3"]);
    assert!(hello.contains("proto") && hello.contains('3'), "{hello}");

    // RESP and HTTP are the same data.
    let c = Client::new();
    let v: serde_json::Value = c
        .get(format!(
            "http://127.0.0.1:{}/api/v1/default/kv/greeting",
            hub.http
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        B64.decode(v["value"].as_str().unwrap()).unwrap(),
        b"hello world"
    );
    c.put(format!(
        "http://127.0.0.1:{}/api/v1/default/kv/from-http",
        hub.http
    ))
    .json(&serde_json::json!({"value": B64.encode("via http")}))
    .send()
    .await
    .unwrap();
    assert_eq!(cli(p, &["GET", "from-http"]), "via http");

    // The relayer: reads after replication, writes refused, notifications delivered.
    let r = rel.resp;
    let t = std::time::Instant::now();
    while cli(r, &["GET", "from-http"]) != "via http" {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "relayer did not replicate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cli(r, &["SET", "k", "v"]).starts_with("READONLY"));
    assert!(cli(r, &["DEL", "greeting"]).starts_with("READONLY"));

    let script = format!(
        r#"
import redis, sys
r = redis.Redis(port={r}, socket_timeout=20)
ps = r.pubsub()
ps.psubscribe("__keyspace@default__:watch:*")
ps.subscribe("__keyevent@0__:del")
print("READY", flush=True)
got = []
while len(got) < 4:
    m = ps.get_message(timeout=20)
    if m is None:
        print("TIMEOUT", got, flush=True); sys.exit(1)
    if m["type"] in ("pmessage", "message"):
        got.append((m["channel"].decode(), m["data"].decode()))
for g in got:
    print(g[0], g[1], flush=True)
"#
    );
    let mut sub = Command::new(py)
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(sub.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "READY");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cli(p, &["SET", "watch:a", "1"]), "OK");
    assert_eq!(cli(p, &["SET", "unwatched", "1"]), "OK");
    assert_eq!(cli(p, &["SET", "watch:b", "2"]), "OK");
    assert_eq!(cli(p, &["DEL", "watch:a"]), "1");
    assert!(sub.wait().unwrap().success(), "subscriber failed");
    let got: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert_eq!(
        got,
        [
            "__keyspace@default__:watch:a set",
            "__keyspace@default__:watch:b set",
            "__keyspace@default__:watch:a del",
            "__keyevent@0__:del watch:a",
        ]
    );

    // A short redis-benchmark run completes without errors.
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &p.to_string(),
            "-t",
            "set,get",
            "-n",
            "2000",
            "-c",
            "4",
            "-d",
            "100",
            "-P",
            "10",
            "-q",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for t in ["SET", "GET"] {
        // Progress lines end in \r: split on both line ends.
        let done = text
            .split(['\r', '\n'])
            .map(str::trim)
            .any(|l| l.starts_with(&format!("{t}: ")) && l.contains("requests per second"));
        assert!(done, "{text}");
    }
    assert!(!text.contains("ERR"), "{text}");
    drop((hub.proc, rel.proc));
}
