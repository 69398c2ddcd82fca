//! One call for `main.rs`: start the gRPC server, the followers (relayer mode or hub mirrors) and the
//! ZeroMQ publisher, and get back the handle the HTTP layer needs (read-only checks with the owner's
//! address, `/readyz`, `/stats` positions, `?acks=N` waits).

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::acks::{AckRegistry, AckTimeout};
use super::lag::{ReplicationPosition, ReplicationState};
use super::run::{run_followers, run_grpc_server, GrpcServerConfig, RelayerConfig};
use super::ReplicationError;
use crate::db::Database;
use crate::notify::{self, NotifyConfig};

/// What the HTTP layer asks replication; cheap to clone.
#[derive(Clone, Default)]
pub struct ReplicationHandle {
    pub acks: AckRegistry,
    pub state: ReplicationState,
    /// `/readyz` fails when a followed namespace lags more than this.
    pub max_lag_records: u64,
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

    /// `/readyz` part for replication: `Ok` on hubs without mirrors.
    pub fn ready(&self) -> Result<(), String> {
        self.state.ready(self.max_lag_records)
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

/// Starts everything; the join set finishes after `shutdown` turns true (or a service fails).
///
/// Binding errors of the ZeroMQ socket are reported here synchronously; the gRPC listener's inside
/// the join set (it binds in its task).
pub fn start(
    db: &Database,
    grpc: &GrpcServerConfig,
    followers: Option<&RelayerConfig>,
    notify_cfg: Option<&NotifyConfig>,
    shutdown: watch::Receiver<bool>,
) -> Result<(ReplicationHandle, JoinSet<Result<(), ServiceError>>), ServiceError> {
    let handle = ReplicationHandle {
        acks: AckRegistry::new(),
        state: ReplicationState::new(),
        max_lag_records: followers.map_or(u64::MAX, |f| f.max_lag_records),
    };
    let mut set = JoinSet::new();
    if let Some(cfg) = notify_cfg {
        let publisher = notify::start(db, cfg, shutdown.clone())?;
        set.spawn(async move {
            tokio::task::spawn_blocking(move || publisher.join())
                .await
                .map_err(ReplicationError::from)?;
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
    let (db, grpc, acks) = (db.clone(), grpc.clone(), handle.acks.clone());
    set.spawn(async move { Ok(run_grpc_server(db, acks, &grpc, shutdown).await?) });
    Ok((handle, set))
}
