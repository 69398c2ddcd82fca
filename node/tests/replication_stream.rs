//! In-process replication: a hub and followers in temp dirs, the gRPC server on 127.0.0.1:0.
//! Convergence, byte-identical WALs, resume after a server restart without gap or duplicate, acks,
//! multi-hop chains and snapshot bootstrap when the hub trimmed its WAL.

use std::net::SocketAddr;
use std::ops::Bound;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use unisondb::db::Database;
use unisondb::engine::{EngineOptions, FsyncPolicy, Namespace};
use unisondb::replication::relayer::{follow, Backoff, FollowConfig};
use unisondb::replication::run::serve_on;
use unisondb::replication::{AckRegistry, ReplicationState};
use unisondb::storage::batch::WriteBatch;
use unisondb::wal::{Record, RetentionPolicy, WalOptions};

const NS: &str = "default";

fn opts() -> EngineOptions {
    EngineOptions {
        fsync: FsyncPolicy::Never,
        ..EngineOptions::default()
    }
}

fn open(dir: &std::path::Path, o: EngineOptions) -> Database {
    Database::open(dir, &[NS.to_string()], &o).unwrap()
}

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

async fn serve(db: &Database, acks: &AckRegistry, addr: &str) -> Server {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let rx = stop.clone();
    let (db, acks) = (db.clone(), acks.clone());
    let task = tokio::spawn(async move {
        serve_on(listener, db, acks, None, rx).await.unwrap();
    });
    Server { addr, stop, task }
}

impl Server {
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within 10 s")
            .unwrap();
    }
}

struct Follower {
    state: ReplicationState,
    stop: CancellationToken,
    task: JoinHandle<bool>,
}

fn start_follower(ns: &Namespace, addr: SocketAddr, id: &str) -> Follower {
    let mut cfg = FollowConfig::new(format!("http://{addr}"), id);
    cfg.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    let state = ReplicationState::new();
    let stop = CancellationToken::new();
    let rx = stop.clone();
    let task = tokio::spawn(follow(ns.clone(), cfg, state.clone(), rx));
    Follower { state, stop, task }
}

impl Follower {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("follower stops")
            .unwrap();
    }
}

async fn write_n(ns: &Namespace, from: usize, n: usize) {
    let ns = ns.clone();
    tokio::task::spawn_blocking(move || {
        for i in from..from + n {
            let mut b = WriteBatch::new();
            b.put(
                format!("key{i:06}").into_bytes(),
                vec![(i % 251) as u8; 100 + i % 300],
            );
            if i % 7 == 0 && i > 0 {
                b.delete(format!("key{:06}", i - 1).into_bytes());
            }
            ns.write(b).unwrap();
        }
    })
    .await
    .unwrap();
}

async fn converge(a: &Namespace, b: &Namespace, timeout: Duration) {
    let t = Instant::now();
    while b.latest_lsn() != a.latest_lsn() {
        assert!(
            t.elapsed() < timeout,
            "no convergence: upstream {} follower {}",
            a.latest_lsn(),
            b.latest_lsn()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn wal(ns: &Namespace, from: u64) -> Vec<Record> {
    let mut r = ns.wal_reader(from).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        out.push(rec);
    }
    out
}

fn contents(ns: &Namespace) -> Vec<(Vec<u8>, Vec<u8>)> {
    ns.snapshot()
        .unwrap()
        .range(Bound::Unbounded, Bound::Unbounded, false)
        .map(|r| r.unwrap())
        .collect()
}

fn assert_identical(a: &Namespace, b: &Namespace, wal_from: u64) {
    assert_eq!(a.latest_lsn(), b.latest_lsn());
    assert_eq!(a.latest_hlc(), b.latest_hlc());
    let (wa, wb) = (wal(a, wal_from), wal(b, wal_from));
    assert_eq!(wa.len(), wb.len());
    for (x, y) in wa.iter().zip(&wb) {
        assert_eq!(x, y, "WAL records differ at LSN {}", x.lsn);
    }
    // Contiguous LSNs, no gap or duplicate.
    for (i, r) in wb.iter().enumerate() {
        assert_eq!(r.lsn, wal_from + i as u64);
    }
    assert_eq!(contents(a), contents(b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_converges_with_identical_wal_and_acks() {
    let (hd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (hub, rel) = (open(hd.path(), opts()), open(rd.path(), opts()));
    let (h, r) = (hub.get(NS).unwrap().clone(), rel.get(NS).unwrap().clone());
    let acks = AckRegistry::new();
    write_n(&h, 0, 300).await;
    let server = serve(&hub, &acks, "127.0.0.1:0").await;
    let f = start_follower(&r, server.addr, "relayer-1");
    converge(&h, &r, Duration::from_secs(20)).await;
    write_n(&h, 300, 200).await; // live tail
    converge(&h, &r, Duration::from_secs(20)).await;
    assert_identical(&h, &r, 1);

    // The follower acknowledges what it applied; waits for more replicas than exist time out.
    let tracker = acks.tracker(NS);
    let lsn = h.latest_lsn();
    assert_eq!(tracker.wait(lsn, 1, Duration::from_secs(5)).await, Ok(1));
    let err = tracker
        .wait(lsn, 2, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!((err.wanted, err.acked), (2, 1));
    // A write waiting for two replicas returns once a second one has applied it.
    let waiter = {
        let t = tracker.clone();
        tokio::spawn(async move { t.wait(lsn, 2, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "only one replica exists yet");
    let r2d = tempfile::tempdir().unwrap();
    let rel2 = open(r2d.path(), opts());
    let r2 = rel2.get(NS).unwrap().clone();
    let f2 = start_follower(&r2, server.addr, "relayer-2");
    assert_eq!(waiter.await.unwrap(), Ok(2));
    assert!(r2.latest_lsn() >= lsn, "acked only after applying");
    f2.stop().await;

    let pos = f.state.position(NS).unwrap();
    assert!(pos.connected);
    assert_eq!(pos.applied_lsn, lsn);
    assert!(f.state.ready(0).is_ok(), "{:?}", f.state.ready(0));
    f.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_server_restart_without_gap_or_duplicate() {
    let (hd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (hub, rel) = (open(hd.path(), opts()), open(rd.path(), opts()));
    let (h, r) = (hub.get(NS).unwrap().clone(), rel.get(NS).unwrap().clone());
    let acks = AckRegistry::new();
    let server = serve(&hub, &acks, "127.0.0.1:0").await;
    let addr = server.addr;
    let f = start_follower(&r, addr, "relayer-1");
    // Writes keep flowing while the server goes away and comes back.
    let writer = {
        let h = h.clone();
        tokio::spawn(async move {
            for round in 0..20 {
                write_n(&h, round * 50, 50).await;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await;
    let mid = r.latest_lsn();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!f.state.position(NS).unwrap().connected);
    let server = serve(&hub, &acks, &addr.to_string()).await;
    writer.await.unwrap();
    converge(&h, &r, Duration::from_secs(30)).await;
    assert!(mid < h.latest_lsn(), "the restart happened mid-stream");
    assert_identical(&h, &r, 1);
    assert!(f.state.position(NS).unwrap().reconnects >= 1);

    // The follower restarts too (new process in real life): it resumes from its own LSN.
    f.stop().await;
    write_n(&h, 5000, 30).await;
    let f = start_follower(&r, addr, "relayer-1");
    converge(&h, &r, Duration::from_secs(20)).await;
    assert_identical(&h, &r, 1);
    f.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_of_three_hops_is_identical() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let dbs: Vec<_> = dirs.iter().map(|d| open(d.path(), opts())).collect();
    let nss: Vec<_> = dbs.iter().map(|d| d.get(NS).unwrap().clone()).collect();
    let mut servers = Vec::new();
    let mut followers = Vec::new();
    for i in 0..3 {
        servers.push(serve(&dbs[i], &AckRegistry::new(), "127.0.0.1:0").await);
        followers.push(start_follower(
            &nss[i + 1],
            servers[i].addr,
            &format!("hop{}", i + 1),
        ));
    }
    write_n(&nss[0], 0, 400).await;
    converge(&nss[0], &nss[3], Duration::from_secs(30)).await;
    for n in &nss[1..] {
        assert_identical(&nss[0], n, 1);
    }
    for f in followers {
        f.stop().await;
    }
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_behind_retention_bootstraps_from_snapshot() {
    let hub_opts = EngineOptions {
        fsync: FsyncPolicy::Never,
        memtable_bytes: 64 << 10,
        wal: WalOptions {
            segment_size: 16 << 10,
        },
        retention: RetentionPolicy {
            max_bytes: Some(1),
            max_age: None,
        },
        ..EngineOptions::default()
    };
    let (hd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (hub, rel) = (open(hd.path(), hub_opts), open(rd.path(), opts()));
    let (h, r) = (hub.get(NS).unwrap().clone(), rel.get(NS).unwrap().clone());
    // The follower holds a little old history, then falls far behind.
    let acks = AckRegistry::new();
    let server = serve(&hub, &acks, "127.0.0.1:0").await;
    write_n(&h, 0, 20).await;
    let f = start_follower(&r, server.addr, "late");
    converge(&h, &r, Duration::from_secs(20)).await;
    f.stop().await;
    write_n(&h, 20, 2000).await;
    h.flush().unwrap();
    write_n(&h, 2020, 10).await;
    h.flush().unwrap();
    let first = h.stats().unwrap().wal_first_lsn.unwrap();
    assert!(
        first > 22,
        "hub WAL must be trimmed past the follower (first LSN {first})"
    );

    let f = start_follower(&r, server.addr, "late");
    converge(&h, &r, Duration::from_secs(30)).await;
    assert_eq!(contents(&h), contents(&r));
    let pos = f.state.position(NS).unwrap();
    assert_eq!(pos.snapshot_bootstraps, 1);
    // Then it tails the WAL as usual.
    write_n(&h, 3000, 50).await;
    converge(&h, &r, Duration::from_secs(20)).await;
    assert_eq!(contents(&h), contents(&r));
    assert_eq!(wal(&h, r.latest_lsn() - 49), wal(&r, r.latest_lsn() - 49));
    f.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_mirroring_each_other_converge_without_loops() {
    use std::collections::BTreeMap;
    use unisondb::replication::run::{GrpcServerConfig, RelayerConfig};
    let names = ["a".to_string(), "b".to_string()];
    let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hub_a = Database::open(da.path(), &names, &opts()).unwrap();
    let hub_b = Database::open(db_.path(), &names, &opts()).unwrap();
    // Reserve two ports, then let each hub bind its own.
    let pa = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let pb = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let stop = CancellationToken::new();
    let rx = stop.clone();
    let mut sets = Vec::new();
    let mut handles = Vec::new();
    for (hub, listen, owner_of_other, other) in [(&hub_a, pa, pb, "b"), (&hub_b, pb, pa, "a")] {
        let mirrors: BTreeMap<String, String> =
            [(other.to_string(), format!("http://{owner_of_other}"))].into();
        let mut follow =
            RelayerConfig::resolve(hub, false, "", &mirrors, &format!("hub-{listen}")).unwrap();
        follow.backoff = Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        };
        let grpc = GrpcServerConfig {
            listen: listen.to_string(),
            tls: None,
        };
        let (h, set) = unisondb::replication::start(hub, &grpc, Some(&follow), None, rx.clone())
            .await
            .unwrap();
        assert!(h.is_read_only(other));
        assert_eq!(h.owner(other), Some(format!("http://{owner_of_other}")));
        assert!(!h.is_read_only(if other == "a" { "b" } else { "a" }));
        handles.push(h);
        sets.push(set);
    }
    let (a_a, a_b) = (
        hub_a.get("a").unwrap().clone(),
        hub_a.get("b").unwrap().clone(),
    );
    let (b_a, b_b) = (
        hub_b.get("a").unwrap().clone(),
        hub_b.get("b").unwrap().clone(),
    );
    tokio::join!(write_n(&a_a, 0, 150), write_n(&b_b, 0, 120));
    converge(&a_a, &b_a, Duration::from_secs(20)).await;
    converge(&b_b, &a_b, Duration::from_secs(20)).await;
    assert_identical(&a_a, &b_a, 1);
    assert_identical(&b_b, &a_b, 1);
    // No loops: nothing flows back, the LSNs stay put.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((a_a.latest_lsn(), a_b.latest_lsn()), (150, 120));
    assert!(handles[0].ready().is_ok() && handles[1].ready().is_ok());
    assert_eq!(handles[0].position("b").unwrap().applied_lsn, 120);
    // Each hub saw the other's acks for its own namespace.
    assert_eq!(
        handles[0]
            .wait_acks("a", 150, 1, Duration::from_secs(5))
            .await,
        Ok(1)
    );
    stop.cancel();
    for mut set in sets {
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_latest_lsn_rpcs() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use unisondb::replication::proto::replication_client::ReplicationClient;
    use unisondb::replication::proto::LatestLsnRequest;
    let hd = tempfile::tempdir().unwrap();
    let hub = open(hd.path(), opts());
    write_n(hub.get(NS).unwrap(), 0, 7).await;
    let server = serve(&hub, &AckRegistry::new(), "127.0.0.1:0").await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "unisondb.replication.v1.Replication".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let mut client = ReplicationClient::new(channel);
    let latest = client
        .latest_lsn(LatestLsnRequest {
            namespace: NS.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((latest.lsn, latest.wal_first_lsn), (7, 1));
    assert_eq!(latest.hlc, hub.get(NS).unwrap().latest_hlc());
    let missing = client
        .latest_lsn(LatestLsnRequest {
            namespace: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    server.shutdown().await;
}

/// Every TCP socket of this process whose local port is `port`, other than a listener: the server's
/// side of accepted connections. Read from /proc/self/fd, so the test sees the real sockets.
fn accepted_sockets(port: u16) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a valid, writable sockaddr_in of `len` bytes.
        let rc = unsafe {
            libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len)
        };
        if rc != 0
            || i32::from(addr.sin_family) != libc::AF_INET
            || u16::from_be(addr.sin_port) != port
        {
            continue;
        }
        let mut listening: libc::c_int = 0;
        let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `listening` is a valid, writable c_int of `l` bytes.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&mut listening as *mut libc::c_int).cast(),
                &mut l,
            )
        };
        if listening == 0 {
            out.push(fd);
        }
    }
    out
}

/// The server's side of a replication stream sends small batches at once: Nagle off. (tonic's
/// `tcp_nodelay` setting does not reach connections from our own listener stream; with Nagle a
/// batch waited for the replica's delayed TCP ack, up to 40 ms.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_replication_connections_have_nagle_off() {
    let d = tempfile::tempdir().unwrap();
    let hub = open(d.path(), opts());
    let acks = AckRegistry::new();
    let server = serve(&hub, &acks, "127.0.0.1:0").await;
    let cfg = FollowConfig::new(format!("http://{}", server.addr), "nodelay-probe");
    let mut client = cfg.connect().await.unwrap();
    client
        .latest_lsn(unisondb::replication::proto::LatestLsnRequest {
            namespace: NS.into(),
        })
        .await
        .unwrap();
    let fds = accepted_sockets(server.addr.port());
    assert!(
        !fds.is_empty(),
        "the server's side of the connection was not found"
    );
    for fd in fds {
        let mut on: libc::c_int = 0;
        let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `on` is a valid, writable c_int of `l` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&mut on as *mut libc::c_int).cast(),
                &mut l,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(
            on, 1,
            "TCP_NODELAY is off on an accepted replication connection (fd {fd})"
        );
    }
    drop(client);
    server.shutdown().await;
}
