//! Server side of `StreamWal`: reads WAL records after an LSN and sends them in batches.
//!
//! Records come from the namespace's WAL tailer ([`crate::engine::Tail`]): a batch closes at its
//! limits or as soon as the tail is caught up (no timer delay: the latency of a write reaching a
//! relayer is one read + one send). Flow control is the
//! bounded channel in front of the HTTP/2 stream: a slow replica makes the pump wait, never buffer.
//! While idle, a heartbeat (empty batch with the latest LSN/HLC) goes out every `heartbeat`, so the
//! replica can tell a quiet upstream from a dead connection and keep its lag figures right.
//! The tail is durable-only: a record leaves this node only once fsynced here (heartbeats still report
//! the visible LSN, so lag stays right).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::history;
use super::proto::{self, WalBatch, WalRecord};
use crate::engine::{EpochEntry, Namespace, Tail, TailError, TailLimits};
use crate::wal::record::{frame_crc, frame_crc_v1};
use crate::wal::Record;

/// Batching and liveness parameters of one WAL stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    pub max_records: usize,
    pub max_bytes: usize,
    pub heartbeat: Duration,
}

impl StreamOptions {
    /// The tail's batch bounds.
    pub fn limits(&self) -> TailLimits {
        TailLimits {
            max_records: self.max_records,
            max_bytes: self.max_bytes,
        }
    }
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            max_records: 512,
            max_bytes: 1 << 20,
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// Converts a WAL record to the wire form, with its (v2) frame CRC for end-to-end verification: the
/// CRC covers the epoch, so a record cannot change history on the way.
pub fn to_wire(r: Record) -> WalRecord {
    WalRecord {
        crc32c: frame_crc(r.lsn, r.hlc, r.epoch, &r.payload),
        lsn: r.lsn,
        hlc: r.hlc,
        epoch: r.epoch,
        payload: r.payload,
    }
}

/// Converts a received record back, verifying its CRC; `Err` names the LSN whose bytes are damaged.
/// An upstream from before epochs sends no epoch (0) and the version-1 CRC (`lsn|hlc|payload`): accepted
/// for epoch 0 only, so followers can be upgraded before their upstream.
pub fn from_wire(w: WalRecord) -> Result<Record, u64> {
    let v2 = frame_crc(w.lsn, w.hlc, w.epoch, &w.payload) == w.crc32c;
    if !v2 && (w.epoch != 0 || frame_crc_v1(w.lsn, w.hlc, &w.payload) != w.crc32c) {
        return Err(w.lsn);
    }
    Ok(Record {
        lsn: w.lsn,
        hlc: w.hlc,
        epoch: w.epoch,
        payload: w.payload,
    })
}

/// Epoch history entries to and from the wire.
pub fn history_to_wire(h: &[EpochEntry]) -> Vec<proto::EpochEntry> {
    h.iter()
        .map(|e| proto::EpochEntry {
            epoch: e.epoch,
            start_lsn: e.start_lsn,
        })
        .collect()
}

pub fn history_from_wire(h: &[proto::EpochEntry]) -> Vec<EpochEntry> {
    h.iter()
        .map(|e| EpochEntry {
            epoch: e.epoch,
            start_lsn: e.start_lsn,
        })
        .collect()
}

/// Maps a tail failure to a status; a trimmed LSN is OUT_OF_RANGE so followers know to bootstrap; a
/// truncated WAL (this node rolled back a diverged tail) is ABORTED so followers reconnect and run the
/// history check against the new state.
pub(crate) fn tail_status(e: TailError) -> Status {
    match e {
        TailError::Trimmed { requested, oldest } => Status::out_of_range(format!(
            "LSN {requested} is no longer in the WAL (oldest available is {oldest})"
        )),
        TailError::Truncated => Status::aborted(
            "this node truncated its WAL after a history divergence; reconnect to re-check history",
        ),
        other => Status::internal(other.to_string()),
    }
}

/// A replica that was ahead of this node at `Start`: its history, re-checked while it waits.
pub struct Recheck {
    pub history: Vec<EpochEntry>,
    pub last_lsn: u64,
}

/// This node's epoch history for the check, with its last LSN. An owner's current epoch is included
/// even before its first record: it closes the older ones (a restarted hub never looks like a lagging
/// upstream of its previous epoch).
pub(crate) fn our_history(ns: &Namespace) -> (Vec<EpochEntry>, u64) {
    let last = ns.latest_lsn();
    let mut ours = ns.epoch_history(last);
    if let Some(w) = ns.write_epoch() {
        if ours.last().map(|e| e.epoch) != Some(w) {
            ours.push(EpochEntry {
                epoch: w,
                start_lsn: last + 1,
            });
        }
    }
    (ours, last)
}

/// Pumps batches from `tail` into `tx` until the receiver goes away, the WAL cannot be read or
/// `shutdown` is cancelled.
pub async fn pump(
    mut tail: Tail,
    tx: mpsc::Sender<Result<WalBatch, Status>>,
    heartbeat: Duration,
    shutdown: CancellationToken,
    mut verify: Option<Recheck>,
) {
    let ns = tail.namespace().clone();
    loop {
        if shutdown.is_cancelled() {
            // Ending the stream lets the server's graceful shutdown finish; replicas reconnect.
            let _ = tx
                .send(Err(Status::unavailable("server shutting down")))
                .await;
            return;
        }
        // A replica waiting ahead of us: as our history grows, it must stay a prefix of the
        // replica's; once we hold the replica's last LSN the check is final.
        if let Some(r) = &verify {
            let (ours, last) = our_history(&ns);
            let agreed = history::agreed_lsn(&r.history, r.last_lsn, &ours, last);
            if agreed < r.last_lsn {
                tracing::warn!(
                    namespace = ns.name(),
                    replica_last_lsn = r.last_lsn,
                    agreed,
                    "history changed while the replica waited ahead of us; ending its stream"
                );
                let _ = tx
                    .send(Err(Status::aborted(format!(
                        "history changed: this upstream now agrees with the replica only up to LSN {agreed}; reconnect"
                    ))))
                    .await;
                return;
            }
            if last >= r.last_lsn {
                verify = None;
            }
        }
        let records = match tail.read().await {
            Ok(recs) => recs,
            Err(e) => {
                let status = tail_status(e);
                tracing::warn!(namespace = ns.name(), %status, "WAL stream ends");
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        if !records.is_empty() {
            let batch = WalBatch {
                records: records.into_iter().map(to_wire).collect(),
                latest_lsn: ns.latest_lsn(),
                latest_hlc: ns.latest_hlc(),
                control: None,
            };
            if tx.send(Ok(batch)).await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            more = tail.changed() => {
                if !more {
                    return;
                }
            }
            _ = tokio::time::sleep(heartbeat) => {
                let hb = WalBatch { records: Vec::new(), latest_lsn: ns.latest_lsn(), latest_hlc: ns.latest_hlc(), control: None };
                if tx.send(Ok(hb)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_crc_covers_the_epoch_and_accepts_pre_epoch_upstreams() {
        let rec = Record {
            lsn: 7,
            hlc: 9,
            epoch: 1234,
            payload: bytes::Bytes::from_static(b"payload"),
        };
        let w = to_wire(rec.clone());
        assert_eq!(from_wire(w.clone()), Ok(rec));
        let mut changed = w.clone();
        changed.epoch = 1235;
        assert_eq!(
            from_wire(changed),
            Err(7),
            "an epoch changed on the way is detected"
        );
        // A pre-epoch upstream: no epoch field, v1 CRC.
        let old = WalRecord {
            lsn: 7,
            hlc: 9,
            epoch: 0,
            payload: bytes::Bytes::from_static(b"payload"),
            crc32c: frame_crc_v1(7, 9, b"payload"),
        };
        assert_eq!(from_wire(old.clone()).map(|r| r.epoch), Ok(0));
        let mut forged = old;
        forged.epoch = 5;
        assert_eq!(
            from_wire(forged),
            Err(7),
            "the v1 CRC never vouches for an epoch"
        );
    }
}
