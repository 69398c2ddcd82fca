//! Client side of snapshot streaming: a follower whose next LSN the upstream trimmed downloads a
//! snapshot (wire format in [`super::snapshot`]) and installs it while receiving.

use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::proto::replication_client::ReplicationClient;
use super::proto::snapshot_chunk::Part;
use super::proto::{SnapshotChunk, SnapshotEntry, SnapshotRequest};
use super::snapshot::{EntryCrc, CHUNK_ENTRIES};
use super::stream::history_from_wire;
use super::ReplicationError;
use crate::engine::{EngineError, Namespace};

/// Downloads a snapshot of `ns` from the upstream and installs it, with the upstream's epoch history;
/// returns the snapshot's LSN. With `replacing` (the local history diverged) the snapshot may be at or
/// below the local LSN: the local records are discarded.
pub async fn bootstrap(
    client: &mut ReplicationClient<Channel>,
    ns: &Namespace,
    replacing: bool,
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
    if header.lsn <= ns.latest_lsn() && !replacing {
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
    let history = history_from_wire(&header.history);
    let install = tokio::task::spawn_blocking(move || {
        let entries = std::iter::from_fn(move || rx.blocking_recv());
        ns2.install_snapshot_from(entries, header.lsn, header.hlc, history, replacing)
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
        let _ = tx.send(Err(EngineError::Transfer(e.to_string()))).await;
    }
    drop(tx);
    let installed = install.await?;
    fed?;
    installed?;
    Ok(header.lsn)
}
