//! The process wiring of a node, in one place: HTTP listener, namespace recovery, gRPC replication,
//! followers, ZeroMQ notifications, LOB orphan collection, signals and graceful shutdown.
//!
//! Order: the HTTP listener starts first (so `/healthz` answers while namespaces recover and `/readyz`
//! says 503), then the database opens, then replication and notifications start, then the node is
//! ready. Shutdown (SIGTERM/SIGINT, a caller's token, or a background service failing): not ready →
//! cancel the shutdown token (HTTP drains, streams end, services stop) → wait up to
//! [`DRAIN_TIMEOUT`] for each → abort open transactions → close the store.
//!
//! Cancellation is one mechanism: a `CancellationToken`, with a child token per part that must be able
//! to stop on its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, ConfigExt, Mode};
use crate::db::Database;
use crate::engine::EngineError;
use crate::http::{self, AppState};
use crate::models::lob;
use crate::replication::{self, ServiceError};

/// How long in-flight requests get to finish after SIGTERM before the store is closed anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the server could not start, or stopped with a failure.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("HTTP TLS: {0}")]
    Tls(#[from] crate::tls::CertError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot open data dir {}: {source}", .dir.display())]
    Open { dir: PathBuf, source: EngineError },
    #[error("cannot start replication / notifications: {0}")]
    Services(#[from] ServiceError),
    #[error("{0}")]
    ServiceStopped(String),
    #[error("closing the store failed: {0}")]
    Close(EngineError),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("WAL archiving: {0}")]
    Archive(#[from] crate::objstore::ObjStoreError),
}

/// Runs the node until SIGTERM/SIGINT (or a background service fails).
pub async fn run(cfg: Config) -> Result<(), ServerError> {
    let stop = CancellationToken::new();
    let signals = tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_requested().await;
            stop.cancel();
        }
    });
    let result = run_until(cfg, stop).await;
    signals.abort();
    result
}

/// Runs the node until `stop` is cancelled (or a background service fails); for embedding and tests.
pub async fn run_until(cfg: Config, stop: CancellationToken) -> Result<(), ServerError> {
    let auth = cfg.auth_token()?;
    let tls = if cfg.http.tls_cert_file.is_empty() {
        None
    } else {
        Some(Arc::new(crate::tls::ServerCerts::from_files(
            "http",
            crate::tls::TlsFiles {
                cert: PathBuf::from(&cfg.http.tls_cert_file),
                key: PathBuf::from(&cfg.http.tls_key_file),
                client_ca: None,
            },
            &[b"http/1.1"],
        )?))
    };
    // Cluster mode (hub high availability): resolved before anything opens.
    let cluster = match crate::raft::group::ClusterSettings::from_config(&cfg)
        .map_err(ServerError::Cluster)?
    {
        Some(settings) => {
            Some(crate::raft::group::Cluster::new(settings, &cfg).map_err(ServerError::Cluster)?)
        }
        None => None,
    };
    // Cancelled once, after the node stopped reporting ready; every part gets a child.
    let shutdown = CancellationToken::new();
    let state = Arc::new(AppState::new(cfg.clone(), auth, shutdown.child_token()));
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: cfg.http.listen.clone(),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: cfg.http.listen.clone(),
            source,
        })?;
    tracing::info!(%addr, tls = tls.is_some(), mode = ?cfg.server.mode, "HTTP listening");
    if cfg.server.mode == Mode::Relayer && cfg.replication.upstream.is_empty() {
        tracing::warn!("relayer mode without replication.upstream: serving read-only local data");
    }

    let app = http::router(state.clone());
    let graceful = shutdown.child_token().cancelled_owned();
    let server = match tls {
        Some(tls_cfg) => {
            let l = crate::tls::TlsListener::new(listener, tls_cfg).map_err(|source| {
                ServerError::Listen {
                    addr: addr.to_string(),
                    source,
                }
            })?;
            tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(graceful).await })
        }
        None => tokio::spawn(async move {
            // As the TLS listener does: SSE `/watch` events must not wait for delayed TCP acks.
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(graceful)
                .await
        }),
    };

    // Recover namespaces while /healthz already answers (and /readyz says 503).
    let opening = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        let conversion = cluster.as_ref().map(|c| crate::raft::store::Conversion {
            me: c.settings.node_id,
            members: c.settings.members.clone(),
            converter: c.settings.is_bootstrapper(),
        });
        move || open_database(&cfg, conversion.as_ref())
    });
    let (db, members) = tokio::select! {
        r = opening => r??,
        _ = stop.cancelled() => {
            tracing::info!("shutdown requested during recovery");
            shutdown.cancel();
            return Ok(());
        }
    };
    // gRPC (WAL streaming + health), followers (relayer mode / mirrors) and ZeroMQ notifications.
    let raft_service = match &cluster {
        Some(c) => {
            for (name, log, sm) in members {
                let ns = db.get(&name).ok_or_else(|| {
                    ServerError::Cluster(format!("namespace {name} did not open"))
                })?;
                let raft = c
                    .start_group(ns, log, sm, shutdown.child_token())
                    .await
                    .map_err(ServerError::Cluster)?;
                tokio::spawn(collect_orphans_when_leading(
                    ns.clone(),
                    raft,
                    shutdown.child_token(),
                ));
            }
            state.set_cluster(c.clone());
            tracing::info!(node_id = c.settings.node_id, members = ?c.settings.members,
                "cluster mode: Raft groups started");
            Some(crate::raft::service::RaftService::new(c))
        }
        None => None,
    };
    let (replication, mut services) =
        replication::start_from_config(&db, &cfg, raft_service, shutdown.child_token()).await?;
    state.set_ready(db.clone(), Some(replication));
    tracing::info!(namespaces = ?cfg.server.namespaces, "ready");

    let reaper = spawn_txn_reaper(state.clone(), shutdown.child_token());
    let archivers = start_archivers(&db, &cfg, &shutdown)?;
    let resp = if cfg.resp.listen.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&cfg.resp.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: cfg.resp.listen.clone(),
                source,
            })?;
        let ctx = Arc::new(crate::resp::Ctx::new(
            db.clone(),
            cfg.server.namespaces.clone(),
            state.auth_token.clone(),
        ));
        Some(tokio::spawn(crate::resp::serve(
            listener,
            ctx,
            shutdown.child_token(),
        )))
    };

    let service_failure = tokio::select! {
        _ = stop.cancelled() => None,
        Some(ended) = services.join_next() => Some(match ended {
            Ok(Ok(())) => "a replication/notification service stopped unexpectedly".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("replication/notification task failed: {e}"),
        }),
    };
    if let Some(why) = &service_failure {
        tracing::error!(error = %why, "shutting down");
    }
    state.set_not_ready();
    if let Some(c) = &cluster {
        // A planned stop: hand the leadership off before anything closes (bounded).
        c.step_down_all(Duration::from_secs(3)).await;
    }
    shutdown.cancel();
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(Ok(Ok(()))) => tracing::info!("HTTP drained"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP task failed"),
        Err(_) => tracing::warn!("in-flight requests did not finish in time; closing anyway"),
    }
    let _ = reaper.await;
    // After HTTP drained: the archivers upload what is durable, then end.
    for a in archivers {
        let _ = a.await;
    }
    if let Some(resp) = resp {
        let _ = resp.await;
    }
    if let Some(c) = &cluster {
        c.shutdown().await;
    }
    drain_services(&mut services).await;
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        st.txns.abort_all();
        db.close()
    })
    .await?
    .map_err(ServerError::Close)?;
    tracing::info!("store closed; bye");
    match service_failure {
        Some(why) => Err(ServerError::ServiceStopped(why)),
        None => Ok(()),
    }
}

/// One WAL archiver per namespace when `archive.enabled` (see `crate::objstore::archiver`).
fn start_archivers(
    db: &Database,
    cfg: &Config,
    shutdown: &CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ServerError> {
    if !cfg.archive.enabled {
        return Ok(Vec::new());
    }
    let store = crate::objstore::Store::from_config(&cfg.archive.store())?;
    let opts = crate::objstore::archiver::ArchiverOptions {
        max_delay: Duration::from_secs(cfg.archive.max_delay_seconds),
        object_bytes: usize::try_from(cfg.wal.segment_size_bytes)
            .unwrap_or(usize::MAX)
            .clamp(64 << 10, 64 << 20),
        tick: Duration::from_millis(200),
    };
    tracing::info!(store = %store.location(""), "WAL archiving on");
    Ok(db
        .namespaces()
        .map(|ns| {
            crate::objstore::archiver::spawn(
                ns.clone(),
                store.clone(),
                opts,
                shutdown.child_token(),
            )
        })
        .collect())
}

/// Opens every configured namespace (followed ones refuse local writes) and removes LOB chunks
/// orphaned by a crash from the namespaces this node owns (blocking). A follower keeps the chunks it
/// holds: they may belong to an upload still in flight upstream, and the owner's cleanup reaches it
/// as replicated records.
///
/// In cluster mode the namespaces this hub owns open as Raft group members; their storage halves
/// are returned for the groups to start.
fn open_database(
    cfg: &Config,
    cluster: Option<&crate::raft::store::Conversion>,
) -> Result<(Database, Vec<Member>), ServerError> {
    let dir = &cfg.server.data_dir;
    let opts = cfg.engine_options();
    let mut members = Vec::new();
    let db = Database::open_each(dir, &cfg.server.namespaces, |d, name| {
        let role = cfg.role_of(name);
        if cluster.is_some() && role == crate::engine::Role::Owner {
            let (ns, log, sm) = crate::raft::store::open(d, name, opts.clone(), cluster)?;
            members.push((name.to_string(), log, sm));
            Ok(ns)
        } else {
            crate::engine::Namespace::open_as(d, name, opts.clone(), role)
        }
    })
    .map_err(|source| ServerError::Open {
        dir: dir.clone(),
        source,
    })?;
    // Staging copies of base backups a crash interrupted (not serving yet).
    for ns in db.names() {
        let staging = cfg
            .server
            .data_dir
            .join("backups")
            .join(ns)
            .join(".objstore-staging");
        if staging.exists() {
            if let Err(e) = std::fs::remove_dir_all(&staging) {
                tracing::warn!(dir = %staging.display(), error = %e, "stale backup staging not removed");
            }
        }
    }
    for ns in db.namespaces().filter(|ns| ns.role().owns()) {
        match lob::collect_orphans(ns) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                namespace = ns.name(),
                versions = n,
                "removed orphan LOB chunks"
            ),
            Err(e) => {
                tracing::warn!(namespace = ns.name(), error = %e, "LOB orphan collection failed")
            }
        }
    }
    Ok((db, members))
}

/// A group member removes LOB chunks orphaned by a crash (`lob::collect_orphans`) each time it
/// becomes its namespace's leader, once it has applied its log: the owner's start-up collection, for
/// a namespace whose writes go through the group. Uploads running on this leader are left alone.
async fn collect_orphans_when_leading(
    ns: crate::engine::Namespace,
    raft: crate::raft::RaftHandle,
    stop: CancellationToken,
) {
    use openraft::ServerState;
    let mut rx = raft.metrics();
    let mut leading = false;
    loop {
        let now = rx.borrow_and_update().state == ServerState::Leader;
        if now && !leading {
            // Applied through the log as of the election, so no committed manifest is missed.
            let last = rx.borrow().last_log_index;
            let applied = raft
                .wait(Some(std::time::Duration::from_secs(60)))
                .applied_index_at_least(last, "LOB orphan collection")
                .await;
            if applied.is_ok() && raft.metrics().borrow().state == ServerState::Leader {
                let n = ns.clone();
                match tokio::task::spawn_blocking(move || lob::collect_orphans(&n)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(versions)) => tracing::info!(
                        namespace = ns.name(),
                        versions,
                        "removed orphan LOB chunks (new leader)"
                    ),
                    Ok(Err(e)) => tracing::warn!(namespace = ns.name(), error = %e,
                        "LOB orphan collection failed"),
                    Err(e) => tracing::warn!(namespace = ns.name(), error = %e,
                        "LOB orphan collection task failed"),
                }
            }
        }
        leading = now;
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

/// A namespace opened as a group member, with its Raft storage halves.
type Member = (
    String,
    crate::raft::store::LogStore,
    crate::raft::store::StateMachine,
);

/// Aborts transactions past their idle or lifetime limit, every second while any transaction is
/// open or remembered, until `stop`; with none it sleeps until one begins (an idle node does not
/// wake for it). Transactions begin only on writable (owned) namespaces, so the cleanup writes of an
/// abort never meet a follower.
fn spawn_txn_reaper(state: Arc<AppState>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if state.txns.is_idle() {
                tokio::select! {
                    _ = state.txns.began() => {}
                    _ = stop.cancelled() => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return,
            }
            let st = state.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || st.txns.reap()).await {
                tracing::warn!(error = %e, "transaction reaper task failed");
            }
        }
    })
}

/// Waits (bounded by [`DRAIN_TIMEOUT`]) for the replication/notification services to stop.
async fn drain_services(services: &mut JoinSet<Result<(), ServiceError>>) {
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(ended) = services.join_next().await {
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "service ended with an error"),
                Err(e) => tracing::warn!(error = %e, "service task failed"),
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("replication/notification services did not stop in time");
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_requested() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
