//! Relayers that follow the object store (`replication.object_store`): bootstrap from the newest
//! base backup when the archived WAL does not reach back to the local LSN, then list and fetch new
//! WAL objects, verify each (CRC32C frames, the range its name promises, contiguity with the local
//! LSN) and apply them as a follower applies a gRPC stream. With a gRPC `upstream` configured, the
//! follower hands over to it once it has caught up with the store and the upstream accepts a
//! connection; the gRPC follower resumes at the local LSN + 1, so nothing is skipped or applied twice.
//! When that upstream then streams nothing for `fallback_after`, the caller comes back here (see
//! `replication::run`), again from the local LSN + 1. No load on the hub per reader: the bucket
//! serves them all. Metrics: `unisondb_objstore_follow_*`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{base, walobj, ObjStoreError, Store};
use crate::engine::Namespace;
use crate::metrics;
use crate::wal::Record;

/// The store a relayer follows and how often it lists it.
#[derive(Debug, Clone)]
pub struct StoreSource {
    pub store: Store,
    pub poll: Duration,
    /// How long a gRPC upstream may stream nothing before the relayer follows the store again.
    pub fallback_after: Duration,
}

/// `unisondb_objstore_follow_mode` values.
pub const MODE_STORE: i64 = 0;
/// `unisondb_objstore_follow_mode` while the gRPC upstream is followed.
pub const MODE_GRPC: i64 = 1;

const BATCH: usize = 512;

/// Follows `ns` from the store until `shutdown` (returns `false`), or — with `upstream` — until
/// caught up with the store while the upstream is reachable (returns `true`: continue with gRPC).
pub async fn follow(
    ns: Namespace,
    src: StoreSource,
    upstream: Option<String>,
    shutdown: CancellationToken,
) -> bool {
    let name = ns.name().to_string();
    tracing::info!(namespace = %name, store = %src.store.location(""), lsn = ns.latest_lsn(),
        "following the object store");
    metrics::OBJSTORE_FOLLOW_MODE
        .with_label_values(&[&name])
        .set(MODE_STORE);
    let applied_lsn = metrics::OBJSTORE_FOLLOW_LSN.with_label_values(&[&name]);
    let errors = metrics::OBJSTORE_FOLLOW_ERRORS.with_label_values(&[&name]);
    loop {
        if shutdown.is_cancelled() {
            return false;
        }
        let res = step(&ns, &src.store).await;
        applied_lsn.set(ns.latest_lsn() as i64);
        match res {
            Ok(0) => {
                if let Some(u) = &upstream {
                    if reachable(u).await {
                        tracing::info!(namespace = %name, upstream = %u, lsn = ns.latest_lsn(),
                            "caught up with the object store; switching to the gRPC upstream");
                        metrics::OBJSTORE_FOLLOW_MODE
                            .with_label_values(&[&name])
                            .set(MODE_GRPC);
                        return true;
                    }
                }
            }
            Ok(n) => {
                tracing::debug!(namespace = %name, applied = n, lsn = ns.latest_lsn(), "applied from the object store");
                continue;
            }
            Err(e) => {
                errors.inc();
                tracing::warn!(namespace = %name, error = %e, "following the object store");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(src.poll) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}

/// Whether a TCP connection to the upstream's `host:port` succeeds within a second.
async fn reachable(upstream: &str) -> bool {
    let rest = upstream.split("://").last().unwrap_or(upstream);
    let authority = rest.split('/').next().unwrap_or(rest);
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(authority)
        )
        .await,
        Ok(Ok(_))
    )
}

/// One round: bootstrap if needed, then apply every contiguous new WAL object. Returns how many
/// records were applied.
pub async fn step(ns: &Namespace, store: &Store) -> Result<u64, ObjStoreError> {
    let objs = walobj::from_listing(&store.list(&super::wal_dir(ns.name())).await?);
    let local = ns.latest_lsn();
    let pending: Vec<_> = objs.into_iter().filter(|o| o.last > local).collect();
    let mut applied = 0u64;
    // An empty relayer starts from a base backup rather than replaying the whole archive.
    let needs_base = local == 0 || pending.first().is_some_and(|o| o.first > local + 1);
    if needs_base {
        applied += bootstrap(ns, store).await?;
    }
    for o in pending {
        let next = ns.latest_lsn() + 1;
        if o.last < next {
            continue;
        }
        if o.first > next {
            return Err(ObjStoreError::Refused(format!(
                "the archived WAL has no LSN {next} (next object: {}); waiting for a base backup past it",
                store.location(&o.key)
            )));
        }
        let body = store.get(&o.key).await?;
        fetched(ns.name(), 1);
        let recs = walobj::decode(&store.location(&o.key), (o.first, o.last), &body)?;
        applied += apply(ns, recs.into_iter().filter(|r| r.lsn >= next).collect()).await?;
    }
    Ok(applied)
}

/// Installs the newest base backup when it is ahead of the local LSN; returns the records applied
/// from its WAL part (0 when there is no backup to install).
async fn bootstrap(ns: &Namespace, store: &Store) -> Result<u64, ObjStoreError> {
    let all = base::list(store, ns.name()).await?;
    let Some(m) = all.iter().max_by_key(|m| m.wal.last_lsn).cloned() else {
        return Ok(0);
    };
    if m.wal.last_lsn <= ns.latest_lsn() {
        return Ok(0);
    }
    let staging = ns
        .dir()
        .with_file_name(format!(".objstore-follow-{}", ns.name()));
    let _ = tokio::fs::remove_dir_all(&staging).await;
    base::download(store, &m, &staging).await?;
    fetched(ns.name(), 2);
    let ns2 = ns.clone();
    let dir = staging.clone();
    let res = tokio::task::spawn_blocking(move || -> Result<Vec<Record>, ObjStoreError> {
        use crate::backup::{files, manifest};
        let (h, entries) = files::read_snapshot(&dir.join(manifest::SNAPSHOT))?;
        if h.lsn > ns2.latest_lsn() {
            ns2.install_snapshot_from(entries, h.lsn, h.hlc, h.history.clone(), false)
                .map_err(crate::backup::BackupError::from)?;
        }
        Ok(files::read_wal(&dir.join(manifest::WAL))?)
    })
    .await
    .map_err(|e| ObjStoreError::Refused(format!("bootstrap task failed: {e}")))?;
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let recs = res?;
    tracing::info!(namespace = ns.name(), backup = %m.id, snapshot_lsn = m.snapshot.lsn,
        "bootstrapped from a base backup in the object store");
    let next = ns.latest_lsn() + 1;
    apply(ns, recs.into_iter().filter(|r| r.lsn >= next).collect()).await
}

fn fetched(namespace: &str, n: u64) {
    metrics::OBJSTORE_FOLLOW_OBJECTS
        .with_label_values(&[namespace])
        .inc_by(n);
}

/// Applies consecutive records (the first must be the local LSN + 1), in batches.
async fn apply(ns: &Namespace, mut recs: Vec<Record>) -> Result<u64, ObjStoreError> {
    let n = recs.len() as u64;
    if n == 0 {
        return Ok(0);
    }
    let ns = ns.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ObjStoreError> {
        while !recs.is_empty() {
            let rest = recs.split_off(recs.len().min(BATCH));
            ns.apply_replicated(std::mem::replace(&mut recs, rest))
                .map_err(crate::backup::BackupError::from)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| ObjStoreError::Refused(format!("apply task failed: {e}")))??;
    Ok(n)
}
