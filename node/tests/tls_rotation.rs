//! Certificates rotated under running nodes (issue 16): a hub serving HTTPS and mutual-TLS gRPC
//! from files laid out as Kubernetes mounts a Secret (`tls.crt -> ..data/tls.crt`, `..data` a
//! symlink swapped atomically on update), a relayer streaming from it, and a writer going on
//! through the rotation. New handshakes present the new certificate within seconds, without a
//! restart; the relayer's WAL stream is never broken (no reconnect) and it ends with every write;
//! a broken update is refused and the previous certificate stays in use.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, Certificate, CertificateParams, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};
use unisondb_testkit::{free_port, NodeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_unisondb");

struct Ca {
    pem: String,
    cert: Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "rotation test CA");
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        cert,
        key,
    }
}

/// (certificate, key) signed by `ca` for `name`.
fn leaf(ca: &Ca, name: &str) -> (Certificate, KeyPair) {
    let p = CertificateParams::new(vec![name.to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert, key)
}

/// A Secret volume as the kubelet lays it out: `<dir>/tls.crt -> ..data/tls.crt`, `..data -> ..vN`.
struct SecretDir {
    dir: PathBuf,
    version: u32,
}

impl SecretDir {
    fn new(dir: &Path, cert: &str, key: &str) -> SecretDir {
        std::fs::create_dir_all(dir).unwrap();
        let mut s = SecretDir {
            dir: dir.to_path_buf(),
            version: 0,
        };
        s.update(cert, key);
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
        s
    }

    /// Writes a new version and swaps `..data` to it in one rename.
    fn update(&mut self, cert: &str, key: &str) {
        self.version += 1;
        let v = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.join(&v)).unwrap();
        std::fs::write(self.dir.join(&v).join("tls.crt"), cert).unwrap();
        std::fs::write(self.dir.join(&v).join("tls.key"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&v, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn cert(&self) -> String {
        self.dir.join("tls.crt").display().to_string()
    }

    fn key(&self) -> String {
        self.dir.join("tls.key").display().to_string()
    }
}

/// A TLS client trusting `ca`, presenting `identity` when given.
fn connector(
    ca: &Ca,
    identity: Option<&(Certificate, KeyPair)>,
    alpn: &[u8],
) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((c, k)) => builder
            .with_client_auth_cert(
                vec![c.der().clone()],
                PrivateKeyDer::try_from(k.serialize_der()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// The certificate a fresh handshake with 127.0.0.1:`port` is answered with.
async fn presented(port: u16, c: &tokio_rustls::TlsConnector) -> Option<CertificateDer<'static>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let tls = c
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    tls.get_ref().1.peer_certificates()?.first().cloned()
}

/// One HTTP/1.1 request over TLS; (status, body).
async fn https(
    port: u16,
    c: &tokio_rustls::TlsConnector,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = c
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    let status = out
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {out:?}"))?;
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// A counter or gauge from a Prometheus text page (0 when absent).
fn metric(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_a_live_replication_stream() {
    let root = tempfile::tempdir().unwrap();
    let ca = ca();
    let (a_cert, a_key) = leaf(&ca, "localhost");
    let (b_cert, b_key) = leaf(&ca, "localhost");
    let relayer_id = leaf(&ca, "relayer-0");
    let ca_file = root.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let mut secret = SecretDir::new(
        &root.path().join("secret"),
        &a_cert.pem(),
        &a_key.serialize_pem(),
    );
    let rel_secret = SecretDir::new(
        &root.path().join("relayer-secret"),
        &relayer_id.0.pem(),
        &relayer_id.1.serialize_pem(),
    );

    let (hub_http, hub_grpc, rel_http) = (free_port(), free_port(), free_port());
    let hub_yaml = format!(
        "server:\n  data_dir: {}\n  namespaces: [default]\n\
         http:\n  listen: 127.0.0.1:{hub_http}\n  tls_cert_file: {c}\n  tls_key_file: {k}\n\
         grpc:\n  listen: 127.0.0.1:{hub_grpc}\n  tls_cert_file: {c}\n  tls_key_file: {k}\n  tls_ca_file: {ca}\n\
         notify:\n  bind: tcp://127.0.0.1:0\n",
        root.path().join("hub/data").display(),
        c = secret.cert(),
        k = secret.key(),
        ca = ca_file.display(),
    );
    let rel_yaml = format!(
        "server:\n  mode: relayer\n  data_dir: {}\n  namespaces: [default]\n\
         http:\n  listen: 127.0.0.1:{rel_http}\ngrpc:\n  listen: 127.0.0.1:0\n\
         notify:\n  bind: tcp://127.0.0.1:0\n\
         replication:\n  upstream: https://localhost:{hub_grpc}\n  tls_ca_file: {ca}\n  \
         tls_cert_file: {}\n  tls_key_file: {}\n",
        root.path().join("relayer/data").display(),
        rel_secret.cert(),
        rel_secret.key(),
        ca = ca_file.display(),
    );
    let mut hub =
        NodeProcess::new(BIN, "hub", root.path().join("hub"), hub_yaml).dump_log_on_panic();
    hub.start().unwrap();
    let mut rel =
        NodeProcess::new(BIN, "relayer", root.path().join("relayer"), rel_yaml).dump_log_on_panic();
    rel.start().unwrap();

    let web = connector(&ca, None, b"http/1.1");
    let grpc = connector(&ca, Some(&relayer_id), b"h2");
    let deadline = Instant::now() + Duration::from_secs(30);
    while https(hub_http, &web, "GET", "/readyz", "")
        .await
        .map(|r| r.0)
        != Ok(200)
    {
        assert!(Instant::now() < deadline, "hub not ready:\n{}", hub.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(presented(hub_http, &web).await.unwrap(), *a_cert.der());
    assert_eq!(presented(hub_grpc, &grpc).await.unwrap(), *a_cert.der());

    // A writer that keeps going through the rotation, one new TLS connection per write.
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (web, written) = (web.clone(), written.clone());
        tokio::spawn(async move {
            for i in 0..150u64 {
                let (st, body) = https(
                    hub_http,
                    &web,
                    "PUT",
                    &format!("/api/v1/default/kv/k{i}"),
                    r#"{"value":"dg=="}"#,
                )
                .await
                .unwrap_or_else(|e| panic!("write {i}: {e}"));
                assert_eq!(st, 200, "write {i}: {body}");
                written.store(i + 1, Ordering::Release);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let c = reqwest::Client::new();
    let rel_metrics = || async {
        c.get(format!("http://127.0.0.1:{rel_http}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // The relayer is streaming before the rotation.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(
        &rel_metrics().await,
        "unisondb_replication_applied_lsn{namespace=\"default\"}",
    ) < 20.0
    {
        assert!(
            Instant::now() < deadline,
            "relayer not streaming:\n{}",
            rel.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = rel_metrics().await;
    let reconnects = metric(
        &before,
        "unisondb_replication_reconnects_total{namespace=\"default\"}",
    );

    // Rotate: both listeners present B on new handshakes within seconds.
    secret.update(&b_cert.pem(), &b_key.serialize_pem());
    let t = Instant::now();
    for (port, conn) in [(hub_http, &web), (hub_grpc, &grpc)] {
        loop {
            if presented(port, conn).await.as_ref() == Some(b_cert.der()) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "port {port} still presents the old certificate"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "new certificate in use on both ports {} ms after the update",
        t.elapsed().as_millis()
    );

    // A broken update (a key that does not parse) is refused: B stays in use.
    secret.update(
        &a_cert.pem(),
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (port, conn) in [(hub_http, &web), (hub_grpc, &grpc)] {
        assert_eq!(
            presented(port, conn).await.as_ref(),
            Some(b_cert.der()),
            "port {port}"
        );
    }

    writer.await.unwrap();
    assert_eq!(written.load(Ordering::Acquire), 150);
    let (_, off) = https(hub_http, &web, "GET", "/api/v1/default/offset", "")
        .await
        .unwrap();
    let hub_lsn: f64 = serde_json::from_str::<serde_json::Value>(&off).unwrap()["lsn"]
        .as_f64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = rel_metrics().await;
        if metric(
            &page,
            "unisondb_replication_applied_lsn{namespace=\"default\"}",
        ) >= hub_lsn
        {
            // The stream opened before the rotation carried everything: no reconnect.
            assert_eq!(
                metric(
                    &page,
                    "unisondb_replication_reconnects_total{namespace=\"default\"}"
                ),
                reconnects,
                "the WAL stream was broken by the rotation"
            );
            assert_eq!(
                metric(
                    &page,
                    "unisondb_replication_connected{namespace=\"default\"}"
                ),
                1.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relayer did not catch up:\n{}",
            rel.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, hub_metrics) = https(hub_http, &web, "GET", "/metrics", "").await.unwrap();
    for listener in ["http", "grpc"] {
        let ok = format!("unisondb_tls_reloads_total{{listener=\"{listener}\",result=\"ok\"}}");
        let err = format!("unisondb_tls_reloads_total{{listener=\"{listener}\",result=\"error\"}}");
        assert_eq!(metric(&hub_metrics, &ok), 1.0, "{listener}: {hub_metrics}");
        assert_eq!(metric(&hub_metrics, &err), 1.0, "{listener}");
    }
    // The relayer's own identity was read from its (unchanged) files at each connection.
    drop(rel_secret);
}
