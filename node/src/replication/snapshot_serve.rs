//! Server side of snapshot streaming: a consistent copy of a namespace at one LSN, in the wire
//! format of [`super::snapshot`].

use std::ops::Bound;

use tokio::sync::mpsc;
use tonic::Status;

use super::proto::snapshot_chunk::Part;
use super::proto::{
    SnapshotChunk, SnapshotEntries, SnapshotEntry, SnapshotHeader, SnapshotTrailer,
};
use super::snapshot::{EntryCrc, CHUNK_BYTES, CHUNK_ENTRIES};
use super::stream::history_to_wire;
use crate::engine::{EngineError, Namespace};

/// Maps an engine failure while taking the snapshot to a status.
fn engine_status(e: EngineError) -> Status {
    Status::internal(e.to_string())
}

/// Starts streaming a snapshot of `ns`; the receiver yields header, entries, trailer.
pub async fn serve(ns: Namespace) -> Result<mpsc::Receiver<Result<SnapshotChunk, Status>>, Status> {
    let (tx, rx) = mpsc::channel(4);
    let ns2 = ns.clone();
    let (snap, hlc) = tokio::task::spawn_blocking(move || {
        let snap = ns2.snapshot()?;
        // Only durable state leaves this node: fsync up to the snapshot's LSN if it is not yet.
        if ns2.durable_lsn() < snap.lsn() {
            ns2.make_durable()?;
        }
        let hlc = ns2.hlc_at(snap.lsn());
        Ok::<_, EngineError>((snap, hlc))
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(engine_status)?;
    let lsn = snap.lsn();
    // The receiver adopts our history up to the snapshot with it (it outlives the WAL we trimmed).
    let history = history_to_wire(&ns.epoch_history(lsn));
    tracing::info!(namespace = ns.name(), lsn, "streaming snapshot");
    tokio::task::spawn_blocking(move || {
        let send = |part: Part| {
            tx.blocking_send(Ok(SnapshotChunk { part: Some(part) }))
                .is_ok()
        };
        if !send(Part::Header(SnapshotHeader { lsn, hlc, history })) {
            return;
        }
        let mut crc = EntryCrc::default();
        let mut chunk = Vec::new();
        let mut bytes = 0usize;
        for item in snap.range(Bound::Unbounded, Bound::Unbounded, false) {
            let (key, value) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(format!("snapshot read: {e}"))));
                    return;
                }
            };
            crc.add(&key, &value);
            bytes += key.len() + value.len() + 16;
            chunk.push(SnapshotEntry { key, value });
            if chunk.len() >= CHUNK_ENTRIES || bytes >= CHUNK_BYTES {
                let entries = std::mem::take(&mut chunk);
                bytes = 0;
                if !send(Part::Entries(SnapshotEntries { entries })) {
                    return;
                }
            }
        }
        if !chunk.is_empty() && !send(Part::Entries(SnapshotEntries { entries: chunk })) {
            return;
        }
        send(Part::Trailer(SnapshotTrailer {
            entries: crc.count,
            crc32c: crc.crc,
        }));
    });
    Ok(rx)
}
