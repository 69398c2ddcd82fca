//! One call for `server.rs`: start the gRPC server, the followers (relayer mode or hub mirrors) and
//! the ZeroMQ publisher, and get back the handle the HTTP layer keeps in its state (read-only checks
//! with the owner's address, `/readyz`, `/stats` positions, `?acks=N` waits).

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::acks::{AckRegistry, AckTimeout};
use super::lag::{ReplicationPosition, ReplicationState};
use super::run::{bind, replica_id, run_followers, GrpcServerConfig, RelayerConfig};
use super::tls::ClientTls;
use super::ReplicationError;
use crate::config::{Config, Mode};
use crate::db::Database;
use crate::notify::{self, NotifyConfig};

/// What the HTTP layer asks replication; cheap to clone.
#[derive(Clone, Default)]
pub struct ReplicationHandle {
    pub acks: AckRegistry,
    pub state: ReplicationState,
    /// `/readyz` fails when a followed namespace lags more than this.
    pub max_lag_records: u64,
    /// `/readyz` fails when a followed namespace is staler than this (`None`: never for staleness).
    pub max_staleness: Option<Duration>,
}

impl ReplicationHandle {
    /// Whether writes to `namespace` must be refused here (it is followed from an upstream).
    pub fn is_read_only(&self, namespace: &str) -> bool {
        self.state.is_followed(namespace)
    }

    /// Address of the node that owns a followed namespace (for the 403 body).
    pub fn owner(&self, namespace: &str) -> Option<String> {
        self.state.upstream_of(namespace)
    }

    /// `/readyz` part for replication: `Ok` on hubs without mirrors; see
    /// [`ReplicationState::ready_with`] for the rule (disconnection alone does not fail it).
    pub fn ready(&self) -> Result<(), String> {
        self.state
            .ready_with(self.max_lag_records, self.max_staleness)
    }

    /// For the `x-unisondb-lag-seconds` read header: staleness of a followed namespace.
    pub fn staleness_seconds(&self, namespace: &str) -> Option<f64> {
        self.state.staleness_seconds(namespace)
    }

    /// Replication position of a followed namespace, for `/api/v1/{ns}/stats`.
    pub fn position(&self, namespace: &str) -> Option<ReplicationPosition> {
        self.state.position(namespace)
    }

    /// For `?acks=N`: waits until `n` direct replicas applied `lsn`; `Err` says how many did (→ 504).
    pub async fn wait_acks(
        &self,
        namespace: &str,
        lsn: u64,
        n: usize,
        timeout: Duration,
    ) -> Result<usize, AckTimeout> {
        self.acks.tracker(namespace).wait(lsn, n, timeout).await
    }
}

/// Why one of the background services ended.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("gRPC: {0}")]
    Grpc(#[from] ReplicationError),
    #[error("notifications: {0}")]
    Notify(#[from] notify::NotifyError),
}

/// Resolves the config sections (`grpc.*`, `replication.*`, `notify.*`) and starts everything.
pub async fn start_from_config(
    db: &Database,
    cfg: &Config,
    raft: Option<crate::raft::service::RaftService>,
    shutdown: CancellationToken,
) -> Result<(ReplicationHandle, JoinSet<Result<(), ServiceError>>), ServiceError> {
    let grpc = GrpcServerConfig::from_parts(
        &cfg.grpc.listen,
        &cfg.grpc.tls_cert_file,
        &cfg.grpc.tls_key_file,
        &cfg.grpc.tls_ca_file,
    )?;
    let r = &cfg.replication;
    let replica_id = replica_id(&cfg.server.data_dir).map_err(ReplicationError::from)?;
    let mut follow = RelayerConfig::resolve(
        db,
        cfg.server.mode == Mode::Relayer,
        &r.upstream,
        &r.mirrors,
        &replica_id,
    );
    if let (true, Some(os)) = (cfg.server.mode == Mode::Relayer, &r.object_store) {
        let store = crate::objstore::Store::from_config(os)
            .map_err(|e| ReplicationError::Config(format!("replication.object_store: {e}")))?;
        let f =
            follow.get_or_insert_with(|| RelayerConfig::mirrors(&Default::default(), &replica_id));
        f.object_store = Some(crate::objstore::follower::StoreSource {
            store,
            poll: Duration::from_millis(os.poll_interval_ms.max(50)),
            fallback_after: Duration::from_secs(os.fallback_after_seconds.max(1)),
        });
    }
    if let Some(f) = follow.as_mut() {
        f.tls = ClientTls::from_files(&r.tls_ca_file, &r.tls_cert_file, &r.tls_key_file)?;
        f.max_lag_records = r.max_lag_records;
        f.max_staleness = r.max_staleness_seconds.map(Duration::from_secs);
    }
    let hwm = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    let notify_cfg = cfg.notify.enabled.then(|| NotifyConfig {
        bind: cfg.notify.bind.clone(),
        high_water_mark: hwm(cfg.notify.high_water_mark),
        namespaces: cfg
            .notify
            .namespaces
            .iter()
            .map(|(ns, s)| notify::NamespaceSocket {
                namespace: ns.clone(),
                bind: s.bind.clone(),
                high_water_mark: hwm(s.high_water_mark),
                linger: Duration::from_millis(s.linger_ms),
            })
            .collect(),
    });
    start_with_raft(
        db,
        &grpc,
        follow.as_ref(),
        notify_cfg.as_ref(),
        raft,
        shutdown,
    )
    .await
}

/// Starts everything; the join set finishes after `shutdown` is cancelled (or a service fails).
/// Binding errors (gRPC port, ZeroMQ endpoint) are returned here, before anything runs.
pub async fn start(
    db: &Database,
    grpc: &GrpcServerConfig,
    followers: Option<&RelayerConfig>,
    notify_cfg: Option<&NotifyConfig>,
    shutdown: CancellationToken,
) -> Result<(ReplicationHandle, JoinSet<Result<(), ServiceError>>), ServiceError> {
    start_with_raft(db, grpc, followers, notify_cfg, None, shutdown).await
}

/// [`start`], serving cluster mode's Raft service on the gRPC listener too when given.
pub async fn start_with_raft(
    db: &Database,
    grpc: &GrpcServerConfig,
    followers: Option<&RelayerConfig>,
    notify_cfg: Option<&NotifyConfig>,
    raft: Option<crate::raft::service::RaftService>,
    shutdown: CancellationToken,
) -> Result<(ReplicationHandle, JoinSet<Result<(), ServiceError>>), ServiceError> {
    let handle = ReplicationHandle {
        acks: AckRegistry::new(),
        state: ReplicationState::new(),
        max_lag_records: followers.map_or(u64::MAX, |f| f.max_lag_records),
        max_staleness: followers.and_then(|f| f.max_staleness),
    };
    let mut set = JoinSet::new();
    if let Some(cfg) = notify_cfg {
        let publisher = notify::start(db, cfg, shutdown.clone())?;
        set.spawn(async move {
            publisher.finished().await;
            Ok(())
        });
    }
    if let Some(f) = followers {
        // Register before spawning so read-only checks hold from the first request.
        for (ns, upstream) in &f.upstreams {
            let local = db
                .get(ns)
                .ok_or_else(|| ReplicationError::UnknownNamespace(ns.clone()))?;
            let url = super::relayer::FollowConfig {
                tls: f.tls.clone(),
                ..super::relayer::FollowConfig::new(upstream.clone(), "")
            }
            .url();
            handle
                .state
                .register(ns, &url, local.latest_lsn(), local.latest_hlc());
        }
        let (db, f, state, stop) = (
            db.clone(),
            f.clone(),
            handle.state.clone(),
            shutdown.clone(),
        );
        set.spawn(async move { Ok(run_followers(db, &f, state, stop).await?) });
    }
    let listener = bind(&grpc.listen).await?;
    let (db, tls, acks) = (db.clone(), grpc.tls.clone(), handle.acks.clone());
    set.spawn(async move {
        Ok(super::run::serve_with_raft(listener, db, acks, tls, raft, shutdown).await?)
    });
    Ok((handle, set))
}
