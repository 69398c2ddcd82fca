//! The PUB socket thread and one WAL-follower thread per namespace.
//!
//! Followers start at the namespace's current LSN (notifications are about changes from now on), read
//! records as they become visible, and hand `[topic, payload]` pairs to the socket thread through a
//! bounded channel. The socket thread owns the `zmq::Socket` (not `Sync`) and is the only sender.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::LazyLock;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::{register_int_counter_vec_with_registry, IntCounterVec};
use tokio::sync::watch;

use super::message::encode;
use super::{NotifyConfig, NotifyError};
use crate::db::Database;
use crate::engine::{EngineError, Namespace};
use crate::storage::events::changes;
use crate::wal::WalError;

static PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec_with_registry!(
        "unisondb_notify_published_total",
        "Change notifications handed to the ZeroMQ PUB socket",
        &["namespace"],
        crate::metrics::REGISTRY
    )
    .expect("metric registers once")
});

/// How often idle threads look at the shutdown flag.
const POLL: Duration = Duration::from_millis(100);

type Msg = (String, Vec<u8>);

/// The running publisher; `join` waits for its threads after shutdown.
pub struct NotifyHandle {
    endpoint: String,
    threads: Vec<JoinHandle<()>>,
}

impl NotifyHandle {
    /// The bound endpoint (with the real port when `bind` asked for port 0).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Binds the PUB socket and starts publishing every namespace of `db`.
pub fn start(
    db: &Database,
    cfg: &NotifyConfig,
    shutdown: watch::Receiver<bool>,
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

    let (tx, rx) = sync_channel::<Msg>(16_384);
    let mut threads = Vec::new();
    for ns in db.namespaces() {
        let (ns, tx, stop) = (ns.clone(), tx.clone(), shutdown.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("notify-{}", ns.name()))
                .spawn(move || follow_wal(ns, tx, stop))?,
        );
    }
    drop(tx);
    let stop = shutdown.clone();
    threads.push(
        std::thread::Builder::new()
            .name("notify-pub".into())
            .spawn(move || publish_loop(ctx, socket, rx, stop))?,
    );
    Ok(NotifyHandle { endpoint, threads })
}

fn publish_loop(
    _ctx: zmq::Context,
    socket: zmq::Socket,
    rx: Receiver<Msg>,
    stop: watch::Receiver<bool>,
) {
    loop {
        match rx.recv_timeout(POLL) {
            Ok((topic, payload)) => {
                // PUB never blocks: at the high-water mark ZeroMQ drops for that subscriber.
                if let Err(e) = socket.send_multipart([topic.as_bytes(), &payload], 0) {
                    tracing::warn!(error = %e, "ZeroMQ send failed");
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if *stop.borrow() {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Reads `ns`'s WAL from its current end and forwards each change.
fn follow_wal(ns: Namespace, tx: SyncSender<Msg>, stop: watch::Receiver<bool>) {
    let name = ns.name().to_string();
    let counter = PUBLISHED.with_label_values(&[&name]);
    let mut next = ns.latest_lsn() + 1;
    let mut reader = None;
    while !*stop.borrow() {
        if reader.is_none() {
            match ns.wal_reader(next) {
                Ok(r) => reader = Some(r),
                Err(EngineError::Wal(WalError::Trimmed { .. })) => {
                    next = ns.latest_lsn() + 1;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(namespace = %name, error = %e, "notification reader cannot open WAL");
                    std::thread::sleep(POLL);
                    continue;
                }
            }
        }
        let Some(r) = reader.as_mut() else { continue };
        match r.next_record() {
            Ok(Some(rec)) => {
                next = rec.lsn + 1;
                match changes(rec.lsn, rec.hlc, &rec.payload) {
                    Ok(list) => {
                        for c in &list {
                            if tx.send(encode(&name, c)).is_err() {
                                return;
                            }
                            counter.inc();
                        }
                    }
                    Err(e) => {
                        tracing::error!(namespace = %name, lsn = rec.lsn, error = %e, "undecodable WAL record; not notified")
                    }
                }
            }
            Ok(None) => {
                ns.wait_for_lsn(next - 1, POLL);
            }
            Err(e) => {
                // After a snapshot install the old LSNs are gone: continue from the new end.
                if let WalError::Trimmed { .. } = e {
                    next = ns.latest_lsn() + 1;
                    tracing::warn!(namespace = %name, next, "WAL replaced by a snapshot; notifications resume after it");
                } else {
                    tracing::warn!(namespace = %name, error = %e, "notification WAL read failed; retrying");
                    std::thread::sleep(POLL);
                }
                reader = None;
            }
        }
    }
}
