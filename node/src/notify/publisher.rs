//! The publisher thread: one PUB socket fed by the change feed of every namespace.
//!
//! Each namespace's feed ([`crate::feed::changes_from_now`]) starts at the namespace's current LSN
//! (notifications are about changes from now on). The thread runs a small current-thread runtime of
//! its own (so `start` works with or without a caller's runtime): one task per namespace turns changes
//! into `[topic, payload]` pairs and hands them, through a bounded channel, to the loop that owns the
//! `zmq::Socket` (not `Sync`) and is its only sender. Everything is woken by the tailer or the
//! cancellation token; nothing polls.

use std::sync::LazyLock;
use std::thread::JoinHandle;
use std::time::Duration;

use futures::StreamExt;
use prometheus::{register_int_counter_vec_with_registry, IntCounterVec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::message::encode;
use super::{NotifyConfig, NotifyError};
use crate::db::Database;
use crate::engine::Namespace;
use crate::feed::{self, FeedError};

static PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec_with_registry!(
        "unisondb_notify_published_total",
        "Change notifications handed to the ZeroMQ PUB socket",
        &["namespace"],
        crate::metrics::REGISTRY
    )
    .expect("metric registers once")
});

/// Pause before reopening a feed after a WAL read failure.
const RETRY: Duration = Duration::from_millis(100);
/// Messages queued between the feeds and the socket loop.
const QUEUE: usize = 16_384;

type Msg = (String, Vec<u8>);

/// The running publisher; `join` waits for its thread after shutdown.
pub struct NotifyHandle {
    endpoint: String,
    thread: JoinHandle<()>,
}

impl NotifyHandle {
    /// The bound endpoint (with the real port when `bind` asked for port 0).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Waits for the publisher thread (returns once `shutdown` was cancelled).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("ZeroMQ publisher thread panicked");
        }
    }
}

/// Binds the PUB socket and starts publishing every namespace of `db` until `shutdown` is cancelled.
pub fn start(
    db: &Database,
    cfg: &NotifyConfig,
    shutdown: CancellationToken,
) -> Result<NotifyHandle, NotifyError> {
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::PUB)?;
    socket.set_sndhwm(cfg.high_water_mark)?;
    socket.set_linger(0)?;
    socket
        .bind(&cfg.bind)
        .map_err(|e| NotifyError::Bind(cfg.bind.clone(), e))?;
    let endpoint = socket
        .get_last_endpoint()?
        .unwrap_or_else(|_| cfg.bind.clone());
    tracing::info!(%endpoint, hwm = cfg.high_water_mark, "ZeroMQ notifications publishing");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Each feed starts at its namespace's LSN of this moment, before `start` returns.
    let feeds: Vec<(Namespace, u64)> = db
        .namespaces()
        .map(|ns| (ns.clone(), ns.latest_lsn() + 1))
        .collect();
    let thread = std::thread::Builder::new()
        .name("notify-pub".into())
        .spawn(move || {
            rt.block_on(async move {
                let (tx, rx) = mpsc::channel::<Msg>(QUEUE);
                for (ns, from) in feeds {
                    tokio::spawn(follow_feed(ns, from, tx.clone(), shutdown.clone()));
                }
                drop(tx);
                publish_loop(ctx, socket, rx, shutdown).await;
            });
        })?;
    Ok(NotifyHandle { endpoint, thread })
}

async fn publish_loop(
    _ctx: zmq::Context,
    socket: zmq::Socket,
    mut rx: mpsc::Receiver<Msg>,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = stop.cancelled() => None,
        };
        let Some((topic, payload)) = msg else { return };
        // PUB never blocks: at the high-water mark ZeroMQ drops for that subscriber.
        if let Err(e) = socket.send_multipart([topic.as_bytes(), &payload], 0) {
            tracing::warn!(error = %e, "ZeroMQ send failed");
        }
    }
}

/// Forwards every change of `ns` from `from` on; a gap (snapshot install) resumes at the new end.
async fn follow_feed(ns: Namespace, mut from: u64, tx: mpsc::Sender<Msg>, stop: CancellationToken) {
    let name = ns.name().to_string();
    let counter = PUBLISHED.with_label_values(&[&name]);
    loop {
        let mut changes = Box::pin(feed::changes_from(ns.clone(), from));
        let failure = loop {
            let item = tokio::select! {
                i = changes.next() => i,
                _ = stop.cancelled() => return,
            };
            match item {
                None => return,
                Some(Ok(c)) => {
                    from = c.lsn + 1;
                    if tx.send(encode(&name, &c)).await.is_err() {
                        return;
                    }
                    counter.inc();
                }
                Some(Err(e)) => break e,
            }
        };
        match failure {
            FeedError::Gap { .. } => {
                // After a snapshot install the old LSNs are gone: continue from the new end.
                from = ns.latest_lsn() + 1;
                tracing::warn!(namespace = %name, next = from, "WAL replaced by a snapshot; notifications resume after it");
            }
            FeedError::Decode { lsn, source } => {
                tracing::error!(namespace = %name, lsn, error = %source, "undecodable WAL record; not notified");
                from = lsn + 1;
            }
            FeedError::Tail(crate::engine::TailError::Truncated) => {
                // A history rollback: the records after the new end are replaced; notify the new ones.
                from = from.min(ns.latest_lsn() + 1);
                tracing::warn!(namespace = %name, next = from, "WAL truncated after a history divergence; notifications resume at the new end");
            }
            FeedError::Tail(e) => {
                tracing::warn!(namespace = %name, error = %e, "notification WAL read failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}
