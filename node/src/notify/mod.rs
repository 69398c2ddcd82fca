//! ZeroMQ change notifications: one PUB socket per node fed by the change feed of every namespace,
//! plus optional sockets of one namespace each (as UnisonDB sets them up).
//!
//! Every record that becomes visible (a local commit on a hub, an applied record on a relayer) comes
//! through [`crate::feed`] — the same source as the HTTP SSE stream — and each change goes out as a
//! multipart `[topic, payload]` message (see [`message`] and docs/NOTIFICATIONS.md).
//! Reading the WAL, not hooking the write path, keeps writers independent of subscribers: a slow or
//! absent subscriber never slows a commit, and ZeroMQ's high-water mark bounds memory.

pub mod message;
mod publisher;

pub use publisher::{start, NotifyHandle};

/// The `notify.*` config section.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// ZeroMQ endpoint of the socket carrying every namespace, e.g. `tcp://0.0.0.0:4002`; empty
    /// for none.
    pub bind: String,
    /// Messages queued per subscriber before ZeroMQ drops for that subscriber.
    pub high_water_mark: i32,
    /// Sockets carrying one namespace each (UnisonDB's `[notifier_config.<ns>]`).
    pub namespaces: Vec<NamespaceSocket>,
}

/// A PUB socket for one namespace's changes.
#[derive(Debug, Clone)]
pub struct NamespaceSocket {
    pub namespace: String,
    pub bind: String,
    pub high_water_mark: i32,
    /// How long unsent messages are kept when the socket closes.
    pub linger: std::time::Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            bind: "tcp://0.0.0.0:4002".into(),
            high_water_mark: 100_000,
            namespaces: Vec::new(),
        }
    }
}

/// Why the publisher could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("ZeroMQ: {0}")]
    Zmq(#[from] zmq::Error),
    #[error("cannot bind ZeroMQ PUB socket to {0}: {1}")]
    Bind(String, zmq::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Starts the publisher and runs until `shutdown` is cancelled.
pub async fn run(
    db: crate::db::Database,
    cfg: &NotifyConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), NotifyError> {
    start(&db, cfg, shutdown)?.finished().await;
    Ok(())
}
