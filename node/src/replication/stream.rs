//! Server side of `StreamWal`: reads WAL records after an LSN and sends them in batches.
//!
//! A batch closes at `max_records` or `max_bytes`, or as soon as the reader is caught up (no timer
//! delay: the latency of a write reaching a relayer is one read + one send). Flow control is the
//! bounded channel in front of the HTTP/2 stream: a slow replica makes the pump wait, never buffer.
//! While idle, a heartbeat (empty batch with the latest LSN/HLC) goes out every `heartbeat`, so the
//! replica can tell a quiet upstream from a dead connection and keep its lag figures right.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::proto::{WalBatch, WalRecord};
use crate::engine::Namespace;
use crate::wal::record::frame_crc;
use crate::wal::{Record, WalReader};

/// Batching and liveness parameters of one WAL stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    pub max_records: usize,
    pub max_bytes: usize,
    pub heartbeat: Duration,
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

/// Converts a WAL record to the wire form, with its frame CRC for end-to-end verification.
pub fn to_wire(r: Record) -> WalRecord {
    WalRecord {
        crc32c: frame_crc(r.lsn, r.hlc, &r.payload),
        lsn: r.lsn,
        hlc: r.hlc,
        payload: r.payload,
    }
}

/// Converts a received record back, verifying its CRC; `Err` names the LSN whose bytes are damaged.
pub fn from_wire(w: WalRecord) -> Result<Record, u64> {
    if frame_crc(w.lsn, w.hlc, &w.payload) != w.crc32c {
        return Err(w.lsn);
    }
    Ok(Record {
        lsn: w.lsn,
        hlc: w.hlc,
        payload: w.payload,
    })
}

/// Reads up to one batch on a blocking thread; returns the reader for the next call.
async fn read_batch(
    mut reader: WalReader,
    opts: StreamOptions,
) -> Result<(WalReader, Vec<WalRecord>), Status> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < opts.max_records && bytes < opts.max_bytes {
            match reader.next_record() {
                Ok(Some(r)) => {
                    bytes += r.payload.len() + 32;
                    out.push(to_wire(r));
                }
                Ok(None) => break,
                Err(e) if out.is_empty() => return Err(Status::internal(format!("WAL read: {e}"))),
                // Send what we have; the error comes back on the next call.
                Err(_) => break,
            }
        }
        Ok((reader, out))
    })
    .await
    .map_err(|e| Status::internal(format!("WAL read task: {e}")))?
}

/// Pumps batches into `tx` until the receiver goes away or the WAL cannot be read.
pub async fn pump(
    ns: Namespace,
    mut reader: WalReader,
    tx: mpsc::Sender<Result<WalBatch, Status>>,
    opts: StreamOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut visible = ns.subscribe();
    loop {
        if *shutdown.borrow() {
            // Ending the stream lets the server's graceful shutdown finish; replicas reconnect.
            let _ = tx
                .send(Err(Status::unavailable("server shutting down")))
                .await;
            return;
        }
        // Mark the current LSN seen *before* reading, so a publish during the read wakes us.
        visible.borrow_and_update();
        let records = match read_batch(reader, opts).await {
            Ok((r, recs)) => {
                reader = r;
                recs
            }
            Err(status) => {
                tracing::warn!(namespace = ns.name(), %status, "WAL stream ends");
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let caught_up = records.is_empty();
        if !caught_up {
            let batch = WalBatch {
                records,
                latest_lsn: ns.latest_lsn(),
                latest_hlc: ns.latest_hlc(),
            };
            if tx.send(Ok(batch)).await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            changed = visible.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(opts.heartbeat) => {
                let hb = WalBatch { records: Vec::new(), latest_lsn: ns.latest_lsn(), latest_hlc: ns.latest_hlc() };
                if tx.send(Ok(hb)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
            _ = shutdown.changed() => {}
        }
    }
}
