//! Keyspace notifications as Redis sends them (`__keyspace@<db>__:<key>` with the event,
//! `__keyevent@<db>__:<event>` with the key), fed by the same change feed as ZeroMQ and SSE: a KV
//! put is `set`, a delete `del`. `<db>` is the namespace's name, or its index in `server.namespaces`
//! (what `SELECT n` selects). The feeds start with the first subscriber.

use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use tokio::sync::broadcast;

use crate::db::Database;
use crate::storage::events::ChangeOp;
use crate::storage::keys::Model;

/// One key event of one namespace.
#[derive(Debug, Clone)]
pub struct KeyEvent {
    pub namespace: Arc<str>,
    pub index: usize,
    pub key: Vec<u8>,
    pub event: &'static str,
}

impl KeyEvent {
    /// The (channel, message) pairs Redis would publish for it, in both `<db>` spellings.
    pub fn messages(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::with_capacity(4);
        for db in [self.namespace.to_string(), self.index.to_string()] {
            let mut space = format!("__keyspace@{db}__:").into_bytes();
            space.extend_from_slice(&self.key);
            out.push((space, self.event.as_bytes().to_vec()));
            out.push((
                format!("__keyevent@{db}__:{}", self.event).into_bytes(),
                self.key.clone(),
            ));
        }
        out
    }
}

/// The fan-out point: one broadcast channel of every namespace's key events.
pub struct Hub {
    db: Database,
    order: Vec<String>,
    tx: OnceLock<broadcast::Sender<Arc<KeyEvent>>>,
}

/// Events queued per subscriber before it misses some (it is told, as Redis would drop it).
const BUFFER: usize = 16_384;

impl Hub {
    pub fn new(db: Database, order: Vec<String>) -> Hub {
        Hub {
            db,
            order,
            tx: OnceLock::new(),
        }
    }

    /// A receiver of every key event from now on; starts the feeds on first use.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<KeyEvent>> {
        self.tx
            .get_or_init(|| {
                let (tx, _) = broadcast::channel(BUFFER);
                for (index, name) in self.order.iter().enumerate() {
                    if let Some(ns) = self.db.get(name) {
                        tokio::spawn(follow(ns.clone(), index, tx.clone()));
                    }
                }
                tx
            })
            .subscribe()
    }
}

async fn follow(ns: crate::engine::Namespace, index: usize, tx: broadcast::Sender<Arc<KeyEvent>>) {
    let name: Arc<str> = Arc::from(ns.name());
    let mut from = ns.latest_lsn() + 1;
    loop {
        let mut changes = Box::pin(crate::feed::changes_from(ns.clone(), from));
        while let Some(item) = changes.next().await {
            match item {
                Ok(c) => {
                    from = c.lsn + 1;
                    if c.model != Model::Kv {
                        continue;
                    }
                    let event = match c.op {
                        ChangeOp::Put => "set",
                        ChangeOp::Delete => "del",
                    };
                    // No receivers: nobody listens right now, which is fine.
                    let _ = tx.send(Arc::new(KeyEvent {
                        namespace: name.clone(),
                        index,
                        key: c.key,
                        event,
                    }));
                }
                Err(e) => {
                    tracing::warn!(namespace = %name, error = %e, "keyspace notification feed interrupted; resuming at the end");
                    from = ns.latest_lsn() + 1;
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
