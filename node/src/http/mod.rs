//! The HTTP API (axum): UnisonDB-compatible `/api/v1/{namespace}/...`, plus scans, SSE, OpenAPI,
//! health, readiness and Prometheus metrics.
//!
//! The listener starts before the namespaces finish recovering, so `/healthz` answers at once while
//! `/readyz` and the API answer 503 until `AppState::set_ready`.

pub mod acks;
pub mod admin;
pub mod auth;
pub mod backup;
pub mod cluster;
pub mod error;
pub mod extract;
pub mod kv;
pub mod lob;
pub mod metrics;
pub mod openapi;
pub mod row;
pub mod staleness;
pub mod target;
pub mod txn;
pub mod watch;
pub mod write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::http::StatusCode;
use axum::Router;
use tokio_util::sync::CancellationToken;
use utoipa_axum::routes;

use crate::config::{Config, Mode};
use crate::db::Database;
use crate::engine::Namespace;
use crate::models::txn::{TxnLimits, TxnManager};
use crate::replication::ReplicationHandle;
use error::{ApiError, ApiResult};
use openapi::ApiRouter;

/// Everything handlers share.
pub struct AppState {
    pub cfg: Config,
    db: OnceLock<Database>,
    /// Replication as the HTTP layer sees it (read-only namespaces, readiness, positions, acks);
    /// installed with the database by `set_ready`.
    replication: OnceLock<ReplicationHandle>,
    /// Cluster mode: the Raft groups of this member (installed before the node is ready).
    cluster: OnceLock<Arc<crate::raft::group::Cluster>>,
    proxy: OnceLock<reqwest::Client>,
    ready: AtomicBool,
    pub txns: TxnManager,
    pub auth_token: Option<String>,
    /// Cancelled at shutdown so long-lived streams (SSE) end and graceful shutdown can finish.
    pub shutdown: CancellationToken,
}

pub type Shared = Arc<AppState>;

impl AppState {
    pub fn new(cfg: Config, auth_token: Option<String>, shutdown: CancellationToken) -> AppState {
        let limits = TxnLimits {
            idle: cfg.http.txn_idle_timeout_secs,
            lifetime: cfg.http.txn_max_lifetime_secs,
            ..TxnLimits::default()
        };
        AppState {
            cfg,
            db: OnceLock::new(),
            replication: OnceLock::new(),
            cluster: OnceLock::new(),
            proxy: OnceLock::new(),
            ready: AtomicBool::new(false),
            txns: TxnManager::new(limits),
            auth_token,
            shutdown,
        }
    }

    /// Installs the opened database and the replication handle, then marks the node ready.
    pub fn set_ready(&self, db: Database, replication: Option<ReplicationHandle>) {
        let _ = self.db.set(db);
        if let Some(r) = replication {
            let _ = self.replication.set(r);
        }
        self.ready.store(true, Ordering::Release);
    }

    /// Installs cluster mode's groups (before `set_ready`).
    pub fn set_cluster(&self, cluster: Arc<crate::raft::group::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The HTTP client followers proxy writes with (cluster mode).
    pub fn proxy_client(&self) -> reqwest::Client {
        self.proxy
            .get_or_init(|| {
                reqwest::Client::builder()
                    .connect_timeout(std::time::Duration::from_secs(2))
                    .timeout(std::time::Duration::from_secs(60))
                    .build()
                    .unwrap_or_default()
            })
            .clone()
    }

    /// Cluster mode's groups (`None` for a single hub).
    pub fn cluster(&self) -> Option<&Arc<crate::raft::group::Cluster>> {
        self.cluster.get()
    }

    /// The replication handle, once the node is ready (`None` when replication is not running).
    pub fn replication(&self) -> Option<&ReplicationHandle> {
        self.replication.get()
    }

    /// Stops reporting ready (shutdown begins).
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn db(&self) -> Option<&Database> {
        self.db.get()
    }

    pub fn read_only(&self) -> bool {
        self.cfg.server.mode == Mode::Relayer
    }

    /// The namespace a request names: 503 before recovery, 404 when unknown.
    pub fn namespace(&self, name: &str) -> ApiResult<Namespace> {
        let db = self
            .db
            .get()
            .ok_or_else(|| ApiError::unavailable("node is not ready (recovering)"))?;
        db.get(name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("namespace {name:?} not found")))
    }

    /// 403 on a read-only relayer, and on a namespace this hub mirrors from the hub that owns it.
    pub fn writable(&self, namespace: &str) -> ApiResult<()> {
        if self.read_only() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this node is a read-only relayer; write to the hub",
            ));
        }
        if let Some(repl) = self.replication() {
            if repl.is_read_only(namespace) {
                let owner = repl.owner(namespace).unwrap_or_default();
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("namespace {namespace:?} is mirrored here; write to its owning hub at {owner}"),
                ));
            }
        }
        Ok(())
    }

    /// For `?acks=N` (or header `x-unisondb-acks`): waits until N direct replicas applied `lsn`.
    ///
    /// The write is already durable here; a timeout answers 504 saying how many replicas acknowledged.
    pub async fn await_acks(
        &self,
        namespace: &str,
        lsn: u64,
        uri: &axum::http::Uri,
        headers: &axum::http::HeaderMap,
    ) -> ApiResult<()> {
        let want = acks::requested(uri, headers)?;
        let Some(req) = want else { return Ok(()) };
        if req.acks == 0 {
            return Ok(());
        }
        let Some(repl) = self.replication() else {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("write committed at LSN {lsn} but acknowledged by 0 of {} replicas (replication is not running)", req.acks),
            ));
        };
        match repl.wait_acks(namespace, lsn, req.acks, req.timeout).await {
            Ok(_) => Ok(()),
            Err(t) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "write committed at LSN {lsn} but acknowledged by {} of {} replicas within {} ms",
                    t.acked,
                    req.acks,
                    req.timeout.as_millis()
                ),
            )),
        }
    }
}

/// Every route, once: where axum serves it and the handler that answers, whose `#[utoipa::path]`
/// documents it. Adding a route means adding its handler here; the OpenAPI document follows.
pub fn routes(state: &Shared) -> ApiRouter {
    let api = ApiRouter::default()
        .route("/api/v1/openapi.json", routes!(openapi::serve))
        .route(
            "/api/v1/cluster/members",
            routes!(cluster::list_members, cluster::add_member),
        )
        .route(
            "/api/v1/cluster/members/{id}",
            routes!(cluster::remove_member),
        )
        .route("/api/v1/cluster/step-down", routes!(cluster::step_down))
        .route("/api/v1/{ns}/kv", routes!(kv::scan))
        // `{*key}`: keys may contain `/`; POST is only `/kv/batch`.
        .route(
            "/api/v1/{ns}/kv/{*key}",
            routes!(kv::get_one, kv::put_one, kv::delete_one, kv::batch),
        )
        .route("/api/v1/{ns}/row", routes!(row::scan))
        .route(
            "/api/v1/{ns}/row/{*key}",
            routes!(row::get_one, row::put_one, row::delete_one, row::batch),
        )
        .served_by_earlier_route(routes!(row::delete_columns))
        .route(
            "/api/v1/{ns}/lob/{*key}",
            routes!(lob::download, lob::upload, lob::delete),
        )
        .route("/api/v1/{ns}/tx/begin", routes!(txn::begin))
        .route("/api/v1/{ns}/tx/{id}/kv", routes!(txn::add_kv))
        .route("/api/v1/{ns}/tx/{id}/row", routes!(txn::add_row))
        .route("/api/v1/{ns}/tx/{id}/lob", routes!(txn::add_lob))
        .route("/api/v1/{ns}/tx/{id}/commit", routes!(txn::commit))
        .route("/api/v1/{ns}/tx/{id}/abort", routes!(txn::abort))
        .route("/api/v1/{ns}/stats", routes!(admin::stats))
        .route("/api/v1/{ns}/offset", routes!(admin::offset))
        .route("/api/v1/{ns}/checkpoint", routes!(admin::checkpoint))
        .route("/api/v1/{ns}/watch", routes!(watch::watch))
        .route("/api/v1/{ns}/btree/backup", routes!(backup::btree))
        .route("/api/v1/{ns}/wal/backup", routes!(backup::wal))
        .route(
            "/api/v1/{ns}/backups",
            routes!(backup::create, backup::list),
        )
        .not_found_under("/api/{*rest}")
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            acks::layer,
        ))
        // Inside auth and outside acks: a follower proxies before anything writes locally.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster::layer,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            staleness::layer,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    ApiRouter::default()
        .route("/healthz", routes!(admin::healthz))
        .route("/readyz", routes!(admin::readyz))
        .route("/metrics", routes!(admin::metrics))
        .route("/status/leader", routes!(admin::raft_leader))
        .route("/status/peers", routes!(admin::raft_peers))
        .merge(api)
}

/// Builds the full router.
pub fn router(state: Shared) -> Router {
    routes(&state)
        .into_router()
        .fallback(openapi::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// Ends when shutdown begins (for streams that must not hold up graceful shutdown).
pub async fn shutdown_signal(token: CancellationToken) {
    token.cancelled_owned().await
}
