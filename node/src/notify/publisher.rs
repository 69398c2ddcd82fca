//! The publisher: the PUB sockets (a shared one and any per-namespace ones), fed by the
//! change feed of every namespace.
//!
//! Each namespace's feed ([`crate::feed::changes_from_now`]) starts at the namespace's current LSN
//! (notifications are about changes from now on). It runs as tasks of the caller's runtime (or, called
//! outside one, on a thread with a small runtime of its own): one task per namespace turns changes
//! into `[topic, payload]` pairs and hands them, through a bounded channel, to the loop that owns the
//! `zmq::Socket`s (not `Sync`) and is their only sender; a message goes to the shared socket and to
//! its namespace's own socket, if it has one. A PUB socket never blocks (at the high-water mark it
//! drops for that subscriber), so the loop may share the server's workers. Everything is woken by
//! the tailer or the cancellation token; nothing polls.

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

/// Namespace, topic and payload.
type Msg = (String, String, Vec<u8>);

/// The running publisher; `join` or `finished` waits for it after shutdown.
pub struct NotifyHandle {
    endpoints: Vec<(Option<String>, String)>,
    runner: Runner,
}

/// Where the publisher runs: as tasks of the caller's runtime (the server: a feed woken by a
/// commit runs on a worker that is awake anyway, often the committing one, with no thread
/// switch), or on a thread of its own when `start` is called outside a runtime.
enum Runner {
    Task(tokio::runtime::Handle, tokio::task::JoinHandle<()>),
    Thread(JoinHandle<()>),
}

impl NotifyHandle {
    /// The shared socket's bound endpoint (with the real port when `bind` asked for port 0), or
    /// the first per-namespace one when there is no shared socket.
    pub fn endpoint(&self) -> &str {
        self.endpoints.first().map_or("", |(_, e)| e)
    }

    /// The bound endpoint of `namespace`'s own socket, if it has one.
    pub fn namespace_endpoint(&self, namespace: &str) -> Option<&str> {
        self.endpoints
            .iter()
            .find(|(ns, _)| ns.as_deref() == Some(namespace))
            .map(|(_, e)| e.as_str())
    }

    /// Waits for the publisher (returns once `shutdown` was cancelled). Blocks: call it outside
    /// async code (a plain thread or `spawn_blocking`).
    pub fn join(self) {
        let failed = match self.runner {
            Runner::Thread(t) => t.join().is_err(),
            Runner::Task(rt, task) => rt.block_on(task).is_err(),
        };
        if failed {
            tracing::error!("ZeroMQ publisher panicked");
        }
    }

    /// [`NotifyHandle::join`] for async callers.
    pub async fn finished(self) {
        let failed = match self.runner {
            Runner::Task(_, task) => task.await.is_err(),
            Runner::Thread(t) => tokio::task::spawn_blocking(move || t.join().is_err())
                .await
                .unwrap_or(true),
        };
        if failed {
            tracing::error!("ZeroMQ publisher panicked");
        }
    }
}

/// A bound PUB socket and the namespace it is limited to (`None`: every namespace).
struct Outlet {
    namespace: Option<String>,
    socket: zmq::Socket,
}

fn bind(
    ctx: &zmq::Context,
    bind: &str,
    hwm: i32,
    linger: Duration,
) -> Result<(zmq::Socket, String), NotifyError> {
    let socket = ctx.socket(zmq::PUB)?;
    socket.set_sndhwm(hwm)?;
    socket.set_linger(i32::try_from(linger.as_millis()).unwrap_or(i32::MAX))?;
    socket
        .bind(bind)
        .map_err(|e| NotifyError::Bind(bind.to_string(), e))?;
    let endpoint = socket
        .get_last_endpoint()?
        .unwrap_or_else(|_| bind.to_string());
    Ok((socket, endpoint))
}

/// Binds the PUB sockets and starts publishing every namespace of `db` until `shutdown` is cancelled.
pub fn start(
    db: &Database,
    cfg: &NotifyConfig,
    shutdown: CancellationToken,
) -> Result<NotifyHandle, NotifyError> {
    let ctx = zmq::Context::new();
    let mut outlets = Vec::new();
    let mut endpoints = Vec::new();
    if !cfg.bind.is_empty() {
        let (socket, endpoint) = bind(&ctx, &cfg.bind, cfg.high_water_mark, Duration::ZERO)?;
        tracing::info!(%endpoint, hwm = cfg.high_water_mark, "ZeroMQ notifications publishing");
        endpoints.push((None, endpoint));
        outlets.push(Outlet {
            namespace: None,
            socket,
        });
    }
    for ns in &cfg.namespaces {
        let (socket, endpoint) = bind(&ctx, &ns.bind, ns.high_water_mark, ns.linger)?;
        tracing::info!(%endpoint, namespace = %ns.namespace, hwm = ns.high_water_mark,
            "ZeroMQ notifications of one namespace publishing");
        endpoints.push((Some(ns.namespace.clone()), endpoint));
        outlets.push(Outlet {
            namespace: Some(ns.namespace.clone()),
            socket,
        });
    }

    // Each feed starts at its namespace's LSN of this moment, before `start` returns.
    let feeds: Vec<(Namespace, u64)> = db
        .namespaces()
        .map(|ns| (ns.clone(), ns.latest_lsn() + 1))
        .collect();
    let run = async move {
        let (tx, rx) = mpsc::channel::<Msg>(QUEUE);
        for (ns, from) in feeds {
            tokio::spawn(follow_feed(ns, from, tx.clone(), shutdown.clone()));
        }
        drop(tx);
        publish_loop(ctx, outlets, rx, shutdown).await;
    };
    let runner = match tokio::runtime::Handle::try_current() {
        Ok(rt) => Runner::Task(rt.clone(), rt.spawn(run)),
        Err(_) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Runner::Thread(
                std::thread::Builder::new()
                    .name("notify-pub".into())
                    .spawn(move || rt.block_on(run))?,
            )
        }
    };
    Ok(NotifyHandle { endpoints, runner })
}

async fn publish_loop(
    _ctx: zmq::Context,
    outlets: Vec<Outlet>,
    mut rx: mpsc::Receiver<Msg>,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = stop.cancelled() => None,
        };
        let Some((namespace, topic, payload)) = msg else {
            return;
        };
        for out in &outlets {
            if out.namespace.as_ref().is_some_and(|ns| *ns != namespace) {
                continue;
            }
            // PUB never blocks: at the high-water mark ZeroMQ drops for that subscriber.
            if let Err(e) = out.socket.send_multipart([topic.as_bytes(), &payload], 0) {
                tracing::warn!(error = %e, "ZeroMQ send failed");
            }
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
                    let (topic, payload) = encode(&name, &c);
                    if tx.send((name.clone(), topic, payload)).await.is_err() {
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
