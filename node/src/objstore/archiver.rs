//! Continuous WAL archiving of one namespace: durable records are read from the local WAL and
//! uploaded as objects `<ns>/wal/<first>-<last>.wal` — as soon as a segment's worth has
//! accumulated, and the tail at least every `max_delay`.
//!
//! Progress lives in the store: on start the archiver lists `<ns>/wal/` and resumes after the
//! highest archived LSN, so a crash (even mid-upload: a PUT is all or nothing) leaves neither a gap
//! nor two objects for one LSN. Local WAL retention keeps every record not yet archived: the
//! engine pins the WAL at open (`hold_wal_for_archive`) and the archiver advances the pin only
//! after an upload succeeds.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{walobj, ObjStoreError, Store};
use crate::engine::Namespace;
use crate::metrics;
use crate::wal::{Record, WalReader};

/// How the archiver batches.
#[derive(Debug, Clone, Copy)]
pub struct ArchiverOptions {
    /// Longest an acknowledged (durable) record waits before its upload starts.
    pub max_delay: Duration,
    /// Upload as soon as this many bytes are pending (the WAL segment size: "as segments seal").
    pub object_bytes: usize,
    /// How often to look for new durable records.
    pub tick: Duration,
}

/// Records read but not yet uploaded.
#[derive(Default)]
struct Pending {
    records: Vec<Record>,
    bytes: usize,
    since: Option<Instant>,
}

/// Starts archiving `ns` into `store` until `stop`; the task uploads what is pending before it ends.
pub fn spawn(
    ns: Namespace,
    store: Store,
    opts: ArchiverOptions,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(ns, store, opts, stop))
}

/// Where archiving continues: after the highest LSN in the store, or (empty store) at the oldest
/// record of the local WAL.
pub async fn resume_point(store: &Store, ns: &Namespace) -> Result<u64, ObjStoreError> {
    let objs = walobj::from_listing(&store.list(&super::wal_dir(ns.name())).await?);
    if let Some((before, after)) = walobj::first_gap(&objs) {
        tracing::error!(
            namespace = ns.name(),
            before,
            after,
            "the archived WAL has a gap: point-in-time restore across it is impossible"
        );
    }
    match objs.iter().map(|o| o.last).max() {
        Some(last) if last > ns.durable_lsn() => Err(ObjStoreError::Refused(format!(
            "the store holds WAL of {} up to LSN {last} but this node's namespace ends at {}: \
             another history (restored to an earlier point?) — archive into another prefix",
            ns.name(),
            ns.durable_lsn()
        ))),
        Some(last) => Ok(last + 1),
        None => Ok(ns.wal_first_lsn().unwrap_or(ns.latest_lsn() + 1)),
    }
}

async fn run(ns: Namespace, store: Store, opts: ArchiverOptions, stop: CancellationToken) {
    let name = ns.name().to_string();
    let errors = metrics::ARCHIVE_ERRORS.with_label_values(&[&name]);
    let mut next = loop {
        match resume_point(&store, &ns).await {
            Ok(n) => break n,
            Err(e) => {
                errors.inc();
                tracing::warn!(namespace = %name, error = %e, "archive: cannot resume yet");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    tracing::info!(namespace = %name, from_lsn = next, "WAL archiving started");
    ns.archived_through(next - 1);
    let mut pending = Pending::default();
    let mut reader: Option<WalReader> = None;
    let mut backoff = opts.tick;
    loop {
        let stopping = stop.is_cancelled();
        // Read what became durable (blocking file reads, off the async threads).
        let read_from = pending.records.last().map_or(next, |r| r.lsn + 1);
        let (ns2, max) = (ns.clone(), opts.object_bytes);
        let taken = std::mem::take(&mut pending);
        let r = reader.take();
        let res = tokio::task::spawn_blocking(move || fill(&ns2, r, taken, read_from, max)).await;
        match res {
            Ok((r, p, None)) => {
                reader = r;
                pending = p;
            }
            Ok((_, p, Some(err))) => {
                pending = p;
                errors.inc();
                if let Some(first) = trimmed_past(&ns, read_from, &err) {
                    tracing::error!(namespace = %name, missing_from = read_from, resumes_at = first,
                        "archive gap: WAL records were removed before they were archived; take a base backup");
                    // Only possible with nothing pending (the pin protects read records).
                    if pending.records.is_empty() {
                        next = first;
                    }
                } else {
                    tracing::warn!(namespace = %name, error = %err, "archive: reading the WAL failed");
                }
            }
            Err(e) => {
                errors.inc();
                tracing::warn!(namespace = %name, error = %e, "archive: reader task failed");
            }
        }
        let due = pending.bytes >= opts.object_bytes
            || pending.since.is_some_and(|t| t.elapsed() >= opts.max_delay)
            || stopping;
        if due && !pending.records.is_empty() {
            let upload = upload(&store, &name, &pending.records);
            let res = if stopping {
                tokio::time::timeout(Duration::from_secs(10), upload)
                    .await
                    .unwrap_or_else(|_| {
                        Err(ObjStoreError::Refused("final upload timed out".into()))
                    })
            } else {
                upload.await
            };
            match res {
                Ok(last) => {
                    next = last + 1;
                    ns.archived_through(last);
                    pending = Pending::default();
                    backoff = opts.tick;
                }
                Err(e) => {
                    errors.inc();
                    tracing::warn!(namespace = %name, error = %e, "archive upload failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        metrics::ARCHIVE_LSN
            .with_label_values(&[&name])
            .set((next - 1) as i64);
        metrics::ARCHIVE_LAG
            .with_label_values(&[&name])
            .set(ns.durable_lsn().saturating_sub(next - 1) as i64);
        if stopping {
            tracing::info!(namespace = %name, archived_lsn = next - 1, "WAL archiving stopped");
            return;
        }
        let wait = if pending.records.is_empty() {
            opts.tick
        } else {
            backoff.max(opts.tick)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// When `err` says the WAL no longer holds `from`, the oldest LSN it does hold (or the next one).
fn trimmed_past(ns: &Namespace, from: u64, err: &crate::engine::EngineError) -> Option<u64> {
    let first = ns.wal_first_lsn().unwrap_or(ns.latest_lsn() + 1);
    (first > from).then(|| {
        tracing::debug!(error = %err, "WAL trimmed");
        first
    })
}

/// Reads durable records from `from` into `p` until `max` bytes are pending or none is left.
fn fill(
    ns: &Namespace,
    reader: Option<WalReader>,
    mut p: Pending,
    from: u64,
    max: usize,
) -> (
    Option<WalReader>,
    Pending,
    Option<crate::engine::EngineError>,
) {
    let durable = ns.durable_lsn();
    if durable < from || p.bytes >= max {
        return (reader, p, None);
    }
    let mut r = match reader {
        Some(r) => r,
        None => match ns.wal_reader(from) {
            Ok(r) => r,
            Err(e) => return (None, p, Some(e)),
        },
    };
    while p.bytes < max {
        match r.next_record() {
            Ok(Some(rec)) if rec.lsn <= durable => {
                let expected = p.records.last().map_or(from, |l| l.lsn + 1);
                if rec.lsn != expected {
                    let why = format!(
                        "WAL reader returned LSN {} where {expected} was expected",
                        rec.lsn
                    );
                    return (None, p, Some(crate::engine::EngineError::Corrupt(why)));
                }
                p.bytes += rec.payload.len() + 32;
                p.since.get_or_insert_with(Instant::now);
                p.records.push(rec);
                if rec_is_last(&p, durable) {
                    break;
                }
            }
            // Past the durable LSN (visible first under a relaxed fsync policy): read it next time.
            Ok(Some(_)) => return (None, p, None),
            Ok(None) => break,
            Err(e) => return (None, p, Some(e.into())),
        }
    }
    (Some(r), p, None)
}

fn rec_is_last(p: &Pending, durable: u64) -> bool {
    p.records.last().is_some_and(|r| r.lsn >= durable)
}

/// Uploads `records` as one object; returns its last LSN.
async fn upload(store: &Store, namespace: &str, records: &[Record]) -> Result<u64, ObjStoreError> {
    let (first, last) = match (records.first(), records.last()) {
        (Some(f), Some(l)) => (f.lsn, l.lsn),
        _ => return Err(ObjStoreError::Refused("nothing to upload".into())),
    };
    let body = walobj::encode(records);
    let n = body.len() as u64;
    store
        .put(&walobj::key(namespace, first, last), body.into())
        .await?;
    metrics::ARCHIVE_UPLOADS
        .with_label_values(&[namespace])
        .inc();
    metrics::ARCHIVE_UPLOAD_BYTES
        .with_label_values(&[namespace])
        .inc_by(n);
    tracing::debug!(namespace, first, last, bytes = n, "WAL archived");
    Ok(last)
}
