//! Opening a namespace: lock its directory, open the B+Tree and the WAL, replay the WAL after the
//! checkpoint into memtables.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, RwLock};

use super::write::{NsMetrics, Queue};
use super::{flush::FlushControl, DirLock, EngineError, EngineOptions, Inner, MemState};
use crate::btree::BTree;
use crate::memtable::Memtable;
use crate::storage::batch;
use crate::storage::hlc::Hlc;
use crate::wal::{Wal, WalError};

/// `replay_upto` (cluster mode): replay into memtables and publish only up to this LSN (the saved
/// committed index, at least the checkpoint); Raft applies the rest once it is committed again.
pub(crate) fn open(
    dir: &Path,
    name: &str,
    opts: EngineOptions,
    replay_upto: Option<u64>,
) -> Result<Inner, EngineError> {
    let started = Instant::now();
    // A new namespace directory must survive a power loss: fsync its parent after creating it.
    crate::fsutil::create_dir_all_durable(dir)?;
    let lock = DirLock::acquire(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            EngineError::Locked(name.to_string())
        } else {
            EngineError::Io(e)
        }
    })?;
    let tree = BTree::open(&dir.join("tree.db"), opts.btree.clone())?;
    let failures = crate::metrics::CHECKSUM_FAILURES.with_label_values(&[name]);
    tree.set_failure_hook(Box::new(move |_| failures.inc()));
    let checkpoint = tree.begin_read()?.checkpoint_lsn();
    let wal_dir = dir.join("wal");
    // An interrupted snapshot install: finish it if the tree switched, otherwise forget it.
    let install_lsn = super::install::read_marker(dir)?;
    if let Some(s) = install_lsn {
        if s == checkpoint {
            for (_, name) in crate::wal::list_segment_files(&wal_dir)? {
                std::fs::remove_file(wal_dir.join(name))?;
            }
            // The log restarts after the snapshot: the old durable bound no longer applies.
            crate::wal::forget_durable(&wal_dir)?;
        }
        // The snapshot's epoch history is staged beside the marker: adopt it with the tree, or drop it.
        super::epoch::finish_install(dir, s == checkpoint)?;
    }
    let (wal, report) = Wal::open(&wal_dir, opts.wal.clone())?;
    if let Some(s) = install_lsn {
        if s == checkpoint && wal.last_lsn() < s {
            wal.reset(s + 1)?;
        }
        super::install::remove_marker(dir)?;
        tracing::warn!(
            namespace = name,
            lsn = s,
            completed = s == checkpoint,
            "recovered an interrupted snapshot install"
        );
    }
    if report.truncated_bytes > 0 {
        tracing::warn!(namespace = name, bytes = report.truncated_bytes,
            segment = ?report.truncated_segment, last_lsn = report.last_lsn,
            "dropped a torn WAL tail during recovery");
    }
    let last = wal.last_lsn();
    if last < checkpoint {
        return Err(EngineError::Corrupt(format!(
            "WAL ends at LSN {last} but the B+Tree checkpoint is at LSN {checkpoint}: WAL files are missing"
        )));
    }
    // What readers may see: everything, or in cluster mode up to the committed index.
    let visible = replay_upto.map_or(last, |c| c.max(checkpoint).min(last));
    wal.publish(last);
    if visible < last {
        wal.unpublish(visible);
    }

    let hlc = Hlc::new();
    let mut sealed = Vec::new();
    let mut active = Arc::new(Memtable::new());
    let mut last_hlc = 0;
    let mut replayed = 0u64;
    if visible > checkpoint {
        let mut reader = wal.reader(checkpoint + 1).map_err(|e| match e {
            WalError::Trimmed { requested, oldest } => EngineError::Corrupt(format!(
                "WAL needed from LSN {requested} (after checkpoint) but starts at {oldest}"
            )),
            other => EngineError::Wal(other),
        })?;
        while let Some(rec) = reader.next_record()? {
            let ops = batch::decode(&rec.payload)?;
            active.apply(rec.lsn, &ops);
            hlc.observe(rec.hlc);
            last_hlc = rec.hlc;
            replayed += 1;
            if active.size_bytes() >= opts.memtable_bytes {
                sealed.push(std::mem::replace(&mut active, Arc::new(Memtable::new())));
            }
        }
    } else if let Some(first) = wal.first_lsn() {
        // Nothing to replay; still learn the clock from the last visible record.
        if let Ok(mut r) = wal.reader(visible.max(first)) {
            if let Some(rec) = r.next_record()? {
                hlc.observe(rec.hlc);
                last_hlc = rec.hlc;
            }
        }
    }
    let (lsn_tx, _) = tokio::sync::watch::channel(visible);
    let metrics = NsMetrics::new(name);
    metrics.lsn.set(visible as i64);
    metrics.checkpoint.set(checkpoint as i64);
    tracing::info!(
        namespace = name,
        checkpoint,
        last_lsn = last,
        replayed,
        ms = started.elapsed().as_millis() as u64,
        "namespace recovered"
    );
    Ok(Inner {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        opts,
        wal,
        tree,
        hlc,
        mems: RwLock::new(MemState { active, sealed }),
        visible: AtomicU64::new(visible),
        last_hlc: AtomicU64::new(last_hlc),
        queue: Mutex::new(Queue::starting_after(last)),
        queue_cv: Condvar::new(),
        released: tokio::sync::Notify::new(),
        flush: FlushControl::default(),
        poisoned: Mutex::new(None),
        lsn_tx,
        models: Default::default(),
        epochs: super::epoch::Epochs::open(dir, last)?,
        metrics,
        recent: Default::default(),
        _lock: lock,
    })
}
