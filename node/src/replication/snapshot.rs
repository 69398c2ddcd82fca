//! Snapshot bootstrap: the server streams a consistent copy of a namespace at one LSN; a follower
//! whose next LSN was trimmed from the upstream WAL installs it and continues the WAL after that LSN.
//!
//! Wire order: one header (LSN, HLC), entry chunks in key order, one trailer (count + CRC32C over all
//! entries). The follower installs while receiving; a bad count or CRC aborts the install, which then
//! leaves the namespace as it was.

use std::ops::Bound;

use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Status;

use super::proto::replication_client::ReplicationClient;
use super::proto::snapshot_chunk::Part;
use super::proto::{
    SnapshotChunk, SnapshotEntries, SnapshotEntry, SnapshotHeader, SnapshotRequest, SnapshotTrailer,
};
use super::service::engine_status;
use super::ReplicationError;
use crate::engine::{EngineError, Namespace};

const CHUNK_ENTRIES: usize = 512;
const CHUNK_BYTES: usize = 1 << 20;

/// Running checksum over entries, identical on both ends.
#[derive(Default)]
struct EntryCrc {
    crc: u32,
    count: u64,
}

impl EntryCrc {
    fn add(&mut self, key: &[u8], value: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, &(key.len() as u32).to_le_bytes());
        self.crc = crc32c::crc32c_append(self.crc, key);
        self.crc = crc32c::crc32c_append(self.crc, &(value.len() as u32).to_le_bytes());
        self.crc = crc32c::crc32c_append(self.crc, value);
        self.count += 1;
    }
}

/// HLC of the record at `lsn` (from the WAL), or the namespace's latest HLC if that record is gone.
fn hlc_at(ns: &Namespace, lsn: u64) -> u64 {
    if lsn == 0 {
        return 0;
    }
    match ns.wal_reader(lsn).map(|mut r| r.next_record()) {
        Ok(Ok(Some(rec))) if rec.lsn == lsn => rec.hlc,
        _ => ns.latest_hlc(),
    }
}

/// Starts streaming a snapshot of `ns`; the receiver yields header, entries, trailer.
pub async fn serve(ns: Namespace) -> Result<mpsc::Receiver<Result<SnapshotChunk, Status>>, Status> {
    let (tx, rx) = mpsc::channel(4);
    let ns2 = ns.clone();
    let (snap, hlc) = tokio::task::spawn_blocking(move || {
        let snap = ns2.snapshot()?;
        let hlc = hlc_at(&ns2, snap.lsn());
        Ok::<_, EngineError>((snap, hlc))
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(engine_status)?;
    let lsn = snap.lsn();
    tracing::info!(namespace = ns.name(), lsn, "streaming snapshot");
    tokio::task::spawn_blocking(move || {
        let send = |part: Part| {
            tx.blocking_send(Ok(SnapshotChunk { part: Some(part) }))
                .is_ok()
        };
        if !send(Part::Header(SnapshotHeader { lsn, hlc })) {
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

/// Downloads a snapshot of `ns` from the upstream and installs it; returns the snapshot's LSN.
pub async fn bootstrap(
    client: &mut ReplicationClient<Channel>,
    ns: &Namespace,
) -> Result<u64, ReplicationError> {
    let mut stream = client
        .stream_snapshot(SnapshotRequest {
            namespace: ns.name().to_string(),
        })
        .await?
        .into_inner();
    let header = match stream.message().await? {
        Some(SnapshotChunk {
            part: Some(Part::Header(h)),
        }) => h,
        _ => return Err(ReplicationError::Protocol("snapshot without header".into())),
    };
    if header.lsn <= ns.latest_lsn() {
        return Err(ReplicationError::Protocol(format!(
            "snapshot at LSN {} is not ahead of the local LSN {}",
            header.lsn,
            ns.latest_lsn()
        )));
    }
    tracing::info!(
        namespace = ns.name(),
        lsn = header.lsn,
        "installing snapshot from upstream"
    );
    type Item = Result<(Vec<u8>, Vec<u8>), EngineError>;
    let (tx, mut rx) = mpsc::channel::<Item>(8 * CHUNK_ENTRIES);
    let ns2 = ns.clone();
    let install = tokio::task::spawn_blocking(move || {
        let entries = std::iter::from_fn(move || rx.blocking_recv());
        ns2.install_snapshot(entries, header.lsn, header.hlc)
    });
    let feed = async {
        let mut crc = EntryCrc::default();
        loop {
            match stream.message().await? {
                Some(SnapshotChunk {
                    part: Some(Part::Entries(e)),
                }) => {
                    for SnapshotEntry { key, value } in e.entries {
                        crc.add(&key, &value);
                        if tx.send(Ok((key, value))).await.is_err() {
                            return Err(ReplicationError::Protocol(
                                "snapshot install stopped".into(),
                            ));
                        }
                    }
                }
                Some(SnapshotChunk {
                    part: Some(Part::Trailer(t)),
                }) => {
                    if t.entries != crc.count || t.crc32c != crc.crc {
                        return Err(ReplicationError::Protocol(format!(
                            "snapshot checksum mismatch: {} entries crc {:#x}, trailer says {} crc {:#x}",
                            crc.count, crc.crc, t.entries, t.crc32c
                        )));
                    }
                    return Ok(());
                }
                _ => {
                    return Err(ReplicationError::Protocol(
                        "snapshot stream ended early".into(),
                    ))
                }
            }
        }
    };
    let fed: Result<(), ReplicationError> = feed.await;
    if let Err(e) = &fed {
        // Makes the install abort without committing anything.
        let _ = tx.send(Err(EngineError::Corrupt(e.to_string()))).await;
    }
    drop(tx);
    let installed = install.await?;
    fed?;
    installed?;
    Ok(header.lsn)
}
