//! Mutual TLS on the replication port: a follower with a certificate from the configured CA
//! replicates; one whose certificate comes from another CA is rejected; plaintext is refused too.

use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use unisondb::db::Database;
use unisondb::engine::{EngineOptions, FsyncPolicy};
use unisondb::replication::relayer::{follow, FollowConfig};
use unisondb::replication::run::serve_on;
use unisondb::replication::{AckRegistry, ClientTls, ReplicationState, ServerTls};
use unisondb::storage::batch::WriteBatch;
use unisondb_testkit::TestCa;

fn opts() -> EngineOptions {
    EngineOptions {
        fsync: FsyncPolicy::Never,
        ..EngineOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_accepts_the_right_ca_and_rejects_others() {
    let good = TestCa::new("unisondb test CA");
    let evil = TestCa::new("some other CA");
    let (srv_cert, srv_key) = good.leaf(&["localhost"]);
    let (cli_cert, cli_key) = good.leaf(&["relayer-1"]);
    let (bad_cert, bad_key) = evil.leaf(&["relayer-x"]);

    let hd = tempfile::tempdir().unwrap();
    let hub = Database::open(hd.path(), &["default".into()], &opts()).unwrap();
    let h = hub.get("default").unwrap().clone();
    for i in 0..50u32 {
        let mut b = WriteBatch::new();
        b.put(i.to_be_bytes().to_vec(), b"v".to_vec());
        h.write(b).unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let rx = stop.clone();
    let tls = ServerTls {
        cert_pem: srv_cert.into_bytes(),
        key_pem: srv_key.into_bytes(),
        client_ca_pem: Some(good.pem().into_bytes()),
        files: None,
    };
    let server = tokio::spawn(serve_on(
        listener,
        hub.clone(),
        AckRegistry::new(),
        Some(tls),
        rx,
    ));

    let run = |cert: String, key: String, ca_pem: String, scheme: &str| {
        let d = tempfile::tempdir().unwrap();
        let db = Database::open(d.path(), &["default".into()], &opts()).unwrap();
        let ns = db.get("default").unwrap().clone();
        let mut cfg = FollowConfig::new(format!("{scheme}://localhost:{port}"), "r");
        if scheme == "https" {
            cfg.tls = Some(ClientTls {
                ca_pem: ca_pem.into_bytes(),
                cert_pem: Some(cert.into_bytes()),
                key_pem: Some(key.into_bytes()),
                domain: None,
                files: None,
            });
        }
        let state = ReplicationState::new();
        let stop = CancellationToken::new();
        let rx = stop.clone();
        let task = tokio::spawn(follow(ns.clone(), cfg, state.clone(), rx));
        (d, ns, state, stop, task)
    };

    let (_d1, ok_ns, ok_state, ok_stop, ok_task) =
        run(cli_cert.clone(), cli_key.clone(), good.pem(), "https");
    let (_d2, bad_ns, bad_state, bad_stop, bad_task) = run(bad_cert, bad_key, good.pem(), "https");
    let (_d3, plain_ns, plain_state, plain_stop, plain_task) =
        run(String::new(), String::new(), String::new(), "http");
    // A client that does not trust the server's CA refuses it too.
    let (_d4, distrust_ns, _s4, distrust_stop, distrust_task) =
        run(cli_cert, cli_key, evil.pem(), "https");

    let t = Instant::now();
    while ok_ns.latest_lsn() != h.latest_lsn() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "mTLS follower did not converge: {:?}",
            ok_state.position("default")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        bad_ns.latest_lsn(),
        0,
        "a foreign-CA client must not replicate"
    );
    assert_eq!(plain_ns.latest_lsn(), 0, "plaintext must be refused");
    assert_eq!(
        distrust_ns.latest_lsn(),
        0,
        "the client must verify the server"
    );
    let bad = bad_state.position("default").unwrap();
    assert!(!bad.connected && bad.last_error.is_some(), "{bad:?}");
    assert!(!plain_state.position("default").unwrap().connected);

    for (s, t) in [
        (ok_stop, ok_task),
        (bad_stop, bad_task),
        (plain_stop, plain_task),
        (distrust_stop, distrust_task),
    ] {
        s.cancel();
        t.await.unwrap();
    }
    stop.cancel();
    server.await.unwrap().unwrap();
}
