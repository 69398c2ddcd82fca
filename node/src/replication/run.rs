//! Process-level wiring for `main.rs`: the gRPC server (replication + health) and the followers.
//!
//! Both take a `CancellationToken` as the shutdown signal (cancel it to stop); pass a child token
//! where one part must be able to stop alone.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use super::acks::AckRegistry;
use super::lag::ReplicationState;
use super::proto::replication_server::ReplicationServer;
use super::relayer::{follow, Backoff, FollowConfig};
use super::service::ReplicationService;
use super::tls::{ClientTls, ServerTls};
use super::ReplicationError;
use crate::db::Database;
use crate::tls::TlsListener;

/// The `grpc.*` config section, resolved.
#[derive(Debug, Clone)]
pub struct GrpcServerConfig {
    /// `host:port` to bind (e.g. `0.0.0.0:4001`).
    pub listen: String,
    /// `None` = plaintext (only when explicitly configured so: no cert files).
    pub tls: Option<ServerTls>,
}

impl GrpcServerConfig {
    /// From the raw config strings (`grpc.listen`, `grpc.tls_cert_file`, `tls_key_file`, `tls_ca_file`).
    pub fn from_parts(
        listen: &str,
        cert: &str,
        key: &str,
        ca: &str,
    ) -> Result<GrpcServerConfig, ReplicationError> {
        Ok(GrpcServerConfig {
            listen: listen.to_string(),
            tls: ServerTls::from_files(cert, key, ca)?,
        })
    }
}

/// Binds `cfg.listen` and serves until shutdown.
pub async fn run_grpc_server(
    db: Database,
    acks: AckRegistry,
    cfg: &GrpcServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ReplicationError> {
    let listener = bind(&cfg.listen).await?;
    serve_on(listener, db, acks, cfg.tls.clone(), shutdown).await
}

/// Binds the gRPC port, naming the address in the error.
pub async fn bind(listen: &str) -> Result<TcpListener, ReplicationError> {
    TcpListener::bind(listen).await.map_err(|e| {
        ReplicationError::BadAddress(listen.to_string(), format!("cannot listen: {e}"))
    })
}

/// Serves replication and `grpc.health.v1` on an already bound listener (tests bind port 0).
pub async fn serve_on(
    listener: TcpListener,
    db: Database,
    acks: AckRegistry,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> Result<(), ReplicationError> {
    serve_with_raft(listener, db, acks, tls, None, shutdown).await
}

/// [`serve_on`], plus the Raft service of cluster mode on the same listener when given.
pub async fn serve_with_raft(
    listener: TcpListener,
    db: Database,
    acks: AckRegistry,
    tls: Option<ServerTls>,
    raft: Option<crate::raft::service::RaftService>,
    shutdown: CancellationToken,
) -> Result<(), ReplicationError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ReplicationServer<ReplicationService>>()
        .await;
    let mut service = ReplicationService::new(db, acks, shutdown.clone());
    if let Some(r) = &raft {
        service = service.with_raft_groups(r.groups());
    }
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tls = tls.is_some(), mtls = tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
        "gRPC replication server listening");
    // Cluster mode: the listener also takes AppendEntries links (raft/link.rs), unless a test plays
    // an older member that has none.
    let links = match &raft {
        Some(r) if std::env::var_os("UNISONDB_FAULT_NO_RAFT_LINK").is_none() => Some(r.clone()),
        _ => None,
    };
    let router = Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(service.into_server())
        .add_optional_service(raft.map(|r| r.into_server()));
    match (tls, links) {
        // Our own TLS accept loop rather than tonic's, so renewed certificates take effect
        // without a restart (crate::tls).
        (Some(tls), links) => {
            let certs = Arc::new(tls.certs()?);
            // Links negotiate their own ALPN protocol; the rest is gRPC.
            let divert = links.map(|l| {
                let tx = crate::raft::link::serve_diverted(l, shutdown.clone());
                (crate::raft::link::ALPN, tx)
            });
            let incoming = TlsListener::diverting(listener, certs, divert)?.into_incoming();
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await?
        }
        (None, Some(links)) => {
            let incoming = crate::raft::link::incoming(listener, links, shutdown.clone());
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await?
        }
        (None, None) => {
            router
                .serve_with_incoming_shutdown(
                    // `Server::tcp_nodelay` applies only to tonic's own listener: without
                    // this, Nagle holds a stream's next small batch until the replica's
                    // delayed TCP ack (up to 40 ms of replication lag).
                    TcpListenerStream::new(listener).map(|s| {
                        s.inspect(|s| {
                            let _ = s.set_nodelay(true);
                        })
                    }),
                    shutdown.cancelled_owned(),
                )
                .await?
        }
    }
    tracing::info!(%addr, "gRPC server stopped");
    Ok(())
}

/// What a relayer (or a hub's mirrors) follows, resolved from `replication.*`.
#[derive(Debug, Clone)]
pub struct RelayerConfig {
    /// Namespace → upstream gRPC address.
    pub upstreams: BTreeMap<String, String>,
    pub tls: Option<ClientTls>,
    pub replica_id: String,
    pub backoff: Backoff,
    pub max_lag_records: u64,
    /// `replication.max_staleness_seconds`: `/readyz` fails beyond it; `None` = no bound.
    pub max_staleness: Option<std::time::Duration>,
    /// `replication.object_store` (relayer mode): every namespace first follows the WAL archived in
    /// the bucket, and switches to its gRPC upstream (if any) once caught up and the upstream is up.
    pub object_store: Option<crate::objstore::follower::StoreSource>,
}

impl RelayerConfig {
    /// Relayer mode: every namespace of `db` follows `upstream`.
    pub fn all_from(db: &Database, upstream: &str, replica_id: &str) -> RelayerConfig {
        RelayerConfig {
            upstreams: db
                .names()
                .map(|n| (n.to_string(), upstream.to_string()))
                .collect(),
            tls: None,
            replica_id: replica_id.to_string(),
            backoff: Backoff::default(),
            max_lag_records: 10_000,
            max_staleness: None,
            object_store: None,
        }
    }

    /// From the config contract: a relayer follows `upstream` for every namespace, except those that
    /// `mirrors` names another upstream for; a hub follows only its `mirrors`. `None`: nothing to follow.
    pub fn resolve(
        db: &Database,
        relayer_mode: bool,
        upstream: &str,
        mirrors: &BTreeMap<String, String>,
        replica_id: &str,
    ) -> Option<RelayerConfig> {
        let mut cfg = if relayer_mode && !upstream.is_empty() {
            RelayerConfig::all_from(db, upstream, replica_id)
        } else {
            RelayerConfig::mirrors(&BTreeMap::new(), replica_id)
        };
        cfg.upstreams
            .extend(mirrors.iter().map(|(k, v)| (k.clone(), v.clone())));
        (!cfg.upstreams.is_empty()).then_some(cfg)
    }

    /// Hub mode with `replication.mirrors`: only the mirrored namespaces follow their owners.
    pub fn mirrors(mirrors: &BTreeMap<String, String>, replica_id: &str) -> RelayerConfig {
        RelayerConfig {
            upstreams: mirrors.clone(),
            tls: None,
            replica_id: replica_id.to_string(),
            backoff: Backoff::default(),
            max_lag_records: 10_000,
            max_staleness: None,
            object_store: None,
        }
    }
}

/// Follows every configured namespace until shutdown. Fails fast on an unknown namespace.
pub async fn run_followers(
    db: Database,
    cfg: &RelayerConfig,
    state: ReplicationState,
    shutdown: CancellationToken,
) -> Result<(), ReplicationError> {
    let mut tasks = tokio::task::JoinSet::new();
    for (name, upstream) in &cfg.upstreams {
        let ns = db
            .get(name)
            .cloned()
            .ok_or_else(|| ReplicationError::UnknownNamespace(name.clone()))?;
        let mut fc = FollowConfig::new(upstream.clone(), cfg.replica_id.clone());
        fc.tls = cfg.tls.clone();
        fc.backoff = cfg.backoff;
        // Registered before the task runs so `/readyz` and 403s are right from the first request.
        state.register(name, &fc.url(), ns.latest_lsn(), ns.latest_hlc());
        let (state, shutdown, store) = (state.clone(), shutdown.clone(), cfg.object_store.clone());
        tasks.spawn(async move {
            let Some(src) = store else {
                follow(ns, fc, state, shutdown).await;
                return;
            };
            // Store until caught up and the upstream answers, gRPC until it is gone for
            // `fallback_after`, then the store again; each resumes at the local LSN + 1.
            fc.give_up_after = Some(src.fallback_after);
            loop {
                let url = fc.url();
                let switch = crate::objstore::follower::follow(
                    ns.clone(),
                    src.clone(),
                    Some(url),
                    shutdown.clone(),
                )
                .await;
                if !switch || !follow(ns.clone(), fc.clone(), state.clone(), shutdown.clone()).await
                {
                    return;
                }
            }
        });
    }
    // Namespaces with no gRPC upstream follow only the store.
    if let Some(src) = &cfg.object_store {
        for ns in db.namespaces() {
            if cfg.upstreams.contains_key(ns.name()) || ns.role().owns() {
                continue;
            }
            let (ns, src, stop) = (ns.clone(), src.clone(), shutdown.clone());
            tasks.spawn(async move {
                crate::objstore::follower::follow(ns, src, None, stop).await;
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r?;
    }
    Ok(())
}

/// This node's stable replica id: `<data_dir>/replica-id`, created with a random value on first use.
///
/// Written crash-safely (temp file, fsync, rename, fsync dir): a crash never leaves an empty or
/// partial id that would make the node reappear upstream as a different replica.
pub fn replica_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("replica-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let id = format!("{}-{:016x}", host.trim(), rand::random::<u64>());
    crate::fsutil::create_dir_all_durable(data_dir)?;
    crate::fsutil::write_atomic(&path, id.as_bytes())?;
    Ok(id)
}
