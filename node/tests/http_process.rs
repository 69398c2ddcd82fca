//! Process-level behaviour: large streamed LOBs with bounded memory, SIGTERM + restart durability,
//! TLS, and the `config check` / `inspect` commands.

mod common;

use std::sync::Arc;

use common::{b64, run_cli, unb64, Server};
use futures::StreamExt;
use reqwest::Client;
use serde_json::{json, Value};

/// Deterministic pseudo-random bytes, generated on the fly (the test does not hold 64 MiB either).
fn block(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn lob_64mib_streams_with_bounded_memory() {
    let s = Server::start("memtable:\n  size_bytes: 4194304\nwal:\n  fsync: interval\n").await;
    let c = Client::new();
    const BLOCK: usize = 1 << 20;
    const BLOCKS: u64 = 64;
    let mut crc = 0u32;
    for i in 0..BLOCKS {
        crc = crc32_append(crc, &block(i, BLOCK));
    }
    let body = futures::stream::iter((0..BLOCKS).map(|i| Ok::<_, std::io::Error>(block(i, BLOCK))));
    let r = c
        .put(s.url("/api/v1/default/lob/big%2Fobject"))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["size"], json!(BLOCKS * BLOCK as u64));
    assert_eq!(v["checksum"].as_u64().unwrap() as u32, crc);
    // Stream it back, checking bytes as they come.
    let r = c
        .get(s.url("/api/v1/default/lob/big%2Fobject"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        (BLOCKS * BLOCK as u64).to_string().as_str()
    );
    assert_eq!(r.headers()["x-unisondb-crc32"], crc.to_string().as_str());
    let mut stream = r.bytes_stream();
    let (mut got_crc, mut n) = (0u32, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        got_crc = crc32_append(got_crc, &chunk);
        n += chunk.len() as u64;
    }
    assert_eq!((n, got_crc), (BLOCKS * BLOCK as u64, crc));
    let rss = s.peak_rss_kib();
    eprintln!("server peak RSS after 64 MiB up+down: {rss} KiB");
    assert!(rss > 0 && rss < 200 * 1024, "peak RSS {rss} KiB");
    // Replace with a small object, then delete.
    let r = c
        .put(s.url("/api/v1/default/lob/big%2Fobject"))
        .body("tiny")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = c
        .get(s.url("/api/v1/default/lob/big%2Fobject"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), b"tiny");
    assert_eq!(
        c.delete(s.url("/api/v1/default/lob/big%2Fobject"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(s.url("/api/v1/default/lob/big%2Fobject"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn sigterm_exits_zero_and_restart_keeps_data() {
    let mut s = Server::start("wal:\n  fsync: never\n").await;
    let c = Client::new();
    for i in 0..50 {
        let r = c
            .put(s.url(&format!("/api/v1/default/kv/k{i}")))
            .json(&json!({"value": b64(format!("v{i}").as_bytes())}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    c.put(s.url("/api/v1/default/row/r"))
        .json(&json!({"columns": {"a": b64(b"1")}}))
        .send()
        .await
        .unwrap();
    c.put(s.url("/api/v1/default/lob/l"))
        .body(vec![3u8; 200_000])
        .send()
        .await
        .unwrap();
    // An open SSE stream must not hold up graceful shutdown.
    let watch = c.get(s.url("/api/v1/default/watch")).send().await.unwrap();
    assert_eq!(watch.status(), 200);
    let t = std::time::Instant::now();
    let st = s.terminate();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "shutdown took {:?}",
        t.elapsed()
    );
    drop(watch);
    assert!(st.success(), "exit {st}:\n{}", s.log());
    assert!(s.log().contains("store closed"), "{}", s.log());
    // Offline inspect while stopped.
    let out = run_cli(
        &["inspect", "--json", s.data_dir().to_str().unwrap()],
        s.dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["namespaces"][0]["name"], "default");
    assert!(report["namespaces"][0]["lsn"].as_u64().unwrap() >= 52);
    assert_eq!(report["namespaces"][0]["check"]["problems"], json!([]));
    let text = run_cli(&["inspect", s.data_dir().to_str().unwrap()], s.dir.path());
    assert!(String::from_utf8_lossy(&text.stdout).contains("check: ok"));
    s.restart().await;
    let v: Value = c
        .get(s.url("/api/v1/default/kv/k49"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unb64(v["value"].as_str().unwrap()), b"v49");
    assert_eq!(
        c.get(s.url("/api/v1/default/row/r"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let lob = c
        .get(s.url("/api/v1/default/lob/l"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(lob.len(), 200_000);
    // Inspect refuses a running server's directory.
    let out = run_cli(&["inspect", s.data_dir().to_str().unwrap()], s.dir.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop the server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_check_prints_effective_config_and_rejects_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("c.toml");
    std::fs::write(
        &good,
        "[server]\nnamespaces = [\"a\", \"b\"]\n[wal]\nfsync = \"interval\"\n",
    )
    .unwrap();
    let out = run_cli(&["config", "check", good.to_str().unwrap()], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        yaml.contains("fsync: interval")
            && yaml.contains("- a")
            && yaml.contains("listen: 0.0.0.0:4000"),
        "{yaml}"
    );
    let bad = dir.path().join("c.yaml");
    std::fs::write(&bad, "server:\n  namespace: [a]\n").unwrap();
    let out = run_cli(&["config", "check", bad.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn tls_listener_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let s = Server::start(&format!(
        "http:\n  tls_cert_file: {}\n  tls_key_file: {}\n",
        cert_path.display(),
        key_path.display()
    ))
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    // Poll until the listener is up and ready.
    let mut body = String::new();
    for _ in 0..100 {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
            .await
            .unwrap();
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        body.clear();
        let _ = tls.read_to_string(&mut body).await;
        if body.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    // Plain HTTP to the TLS port is refused.
    assert!(Client::new().get(s.url("/healthz")).send().await.is_err());
}

/// CRC32 (IEEE), the LOB checksum UnisonDB clients compare with.
fn crc32_append(crc: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(data);
    h.finalize()
}
