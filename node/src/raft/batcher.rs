//! Group commit for a Raft group: concurrent writes on the leader become one entry.
//!
//! openraft 0.9's core appends client writes one entry at a time, each costing a WAL write, an
//! AppendEntries round and a fsync on every member; before the leader's own fsync moved beside its
//! followers' (`durable.rs`) it also waited for that fsync before taking the next message, so 16
//! writers committed no faster than 1 (measured). The single-node engine
//! merges concurrent writes into one fsync; this does the same one level up: proposals queue here,
//! and a pump takes everything queued (up to [`MAX_OPS`] operations / [`MAX_BYTES`]) as one
//! entry — one WAL record, one LSN, one HLC, atomic as a whole — with at most [`IN_FLIGHT`] entries
//! in flight, so the next entry fills while the current one commits. Every write of an entry is
//! answered with the entry's commit (its LSN); a write is never split across entries.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{Applied, Proposal, RaftHandle};
use crate::engine::Namespace;
use crate::storage::batch::{self, Op};

/// Operations merged into one entry at most (a larger single write goes alone).
pub const MAX_OPS: usize = 4096;
/// Key and value bytes merged into one entry at most (a larger single write goes alone); the
/// size of one AppendEntries too (`store.rs`), which a follower must write and fsync within one
/// heartbeat interval.
pub const MAX_BYTES: usize = 1 << 20;
/// Entries proposed and not yet committed at most.
pub const IN_FLIGHT: usize = 2;

/// Why an entry was not committed.
#[derive(Debug, Clone)]
pub enum Refused {
    /// openraft's answer (not the leader, no quorum, stopped).
    Raft(Arc<RaftError<u64, ClientWriteError<u64, super::Member>>>),
    /// The merged batch does not encode.
    Encode(String),
}

/// What the group answered for an entry.
pub type Outcome = Result<Applied, Refused>;

struct Queued {
    ops: Vec<Op>,
    reply: oneshot::Sender<Outcome>,
}

/// The queue of one group's proposals.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Queued>,
}

fn op_bytes(op: &Op) -> usize {
    match op {
        Op::Put { key, value } => key.len() + value.len(),
        Op::Delete { key } => key.len(),
        Op::DeletePrefix { prefix } => prefix.len(),
    }
}

impl Batcher {
    /// Starts the pump for `ns`'s group on the current runtime; it ends when the batcher is
    /// dropped.
    pub fn start(raft: RaftHandle, ns: Namespace) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(pump(raft, ns, rx));
        Batcher { tx }
    }

    /// Queues `ops` and returns where the answer arrives (`None`: the pump is gone).
    pub fn submit(&self, ops: Vec<Op>) -> Option<oneshot::Receiver<Outcome>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Queued { ops, reply }).ok()?;
        Some(rx)
    }
}

async fn pump(raft: RaftHandle, ns: Namespace, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Queued> = None;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let mut bytes: usize = first.ops.iter().map(op_bytes).sum();
        let mut count = first.ops.len();
        let mut ops = Vec::new();
        let mut replies = Vec::new();
        ops.extend(first.ops);
        replies.push(first.reply);
        while let Ok(q) = rx.try_recv() {
            let b: usize = q.ops.iter().map(op_bytes).sum();
            if count + q.ops.len() > MAX_OPS || bytes + b > MAX_BYTES {
                carried = Some(q);
                break;
            }
            count += q.ops.len();
            bytes += b;
            ops.extend(q.ops);
            replies.push(q.reply);
        }
        // Taken here, in entry order: the entries' HLCs grow with their LSNs.
        let hlc = ns.next_hlc();
        let payload = match batch::encode(&ops) {
            Ok(p) => p,
            Err(e) => {
                drop(permit);
                for r in replies {
                    let _ = r.send(Err(Refused::Encode(e.to_string())));
                }
                continue;
            }
        };
        // Handed to openraft here, in order; answered when committed and applied.
        let answer = raft.client_write_ff(Proposal { hlc, payload }).await;
        tokio::spawn(async move {
            let outcome = match answer {
                Err(fatal) => Err(RaftError::Fatal(fatal)),
                Ok(rx) => match rx.await {
                    Ok(Ok(r)) => Ok(r.data),
                    Ok(Err(e)) => Err(RaftError::APIError(e)),
                    Err(_) => Err(RaftError::Fatal(openraft::error::Fatal::Stopped)),
                },
            }
            .map_err(|e| Refused::Raft(Arc::new(e)));
            drop(permit);
            for r in replies {
                let _ = r.send(outcome.clone());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_keys_and_values() {
        let put = Op::Put {
            key: b"ab".to_vec(),
            value: b"cde".to_vec(),
        };
        assert_eq!(op_bytes(&put), 5);
        assert_eq!(op_bytes(&Op::Delete { key: b"k".to_vec() }), 1);
    }
}
