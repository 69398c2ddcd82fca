//! WAL-streaming replication over gRPC (`proto/replication.proto`).
//!
//! Server side ([`service`]): every node serves its namespaces' WALs, snapshots and latest LSNs, and
//! counts downstream acknowledgements ([`acks`]). Client side ([`relayer`]): a relayer or a mirroring hub
//! follows one upstream per namespace (or the best member of a hub group, [`upstream`]), appends the records verbatim, acknowledges them and reports its
//! position and lag ([`lag`]). A follower behind the upstream's WAL retention bootstraps from a snapshot
//! ([`bootstrap`], client side) that the upstream serves ([`snapshot_serve`]); both share the wire format
//! in `snapshot`. [`tls`] builds mutual-TLS configs; [`run`] and [`node`] are the process-level wiring
//! that `crate::server` calls.

pub mod acks;
mod bootstrap;
pub mod history;
pub mod lag;
pub mod node;
pub mod proto;
pub mod relayer;
pub mod run;
pub mod service;
pub(crate) mod snapshot;
mod snapshot_serve;
pub mod stream;
pub mod tls;
pub mod upstream;

use thiserror::Error;

pub use acks::{AckRegistry, AckTimeout, AckTracker};
pub use lag::{Divergence, ReplicationPosition, ReplicationState};
pub use node::{start, start_from_config, ReplicationHandle, ServiceError};
pub use relayer::{Backoff, FollowConfig};
pub use run::{GrpcServerConfig, RelayerConfig};
pub use service::ReplicationService;
pub use tls::{ClientFiles, ClientTls, ServerTls};

/// Why replication (a server, a follower session or the wiring) failed.
#[derive(Debug, Error)]
pub enum ReplicationError {
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("upstream answered {0}")]
    Status(#[from] tonic::Status),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid upstream address {0:?}: {1}")]
    BadAddress(String, String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("upstream stream broke the protocol: {0}")]
    Protocol(String),
    #[error("upstream no longer has LSN {0} (WAL retention)")]
    Trimmed(u64),
    /// The local history diverged after `agreed` and cannot be truncated there: re-bootstrap.
    #[error("history diverged from the upstream's after LSN {agreed}; a snapshot must replace it")]
    Diverged { agreed: u64 },
    #[error("upstream went silent for {0:?}")]
    Silent(std::time::Duration),
    #[error("upstream closed the stream")]
    Closed,
    /// A better member of the hub group is available (`upstream`): the session ends to move there.
    #[error("moving to {0}, a better member of the hub group")]
    Moved(String),
    #[error("unknown namespace {0}")]
    UnknownNamespace(String),
    #[error("{0}")]
    Config(String),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
