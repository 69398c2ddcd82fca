//! Online, consistent backups of a namespace and their restore.
//!
//! A backup is a directory `<id>/` holding:
//! - `snapshot.bin`: every live entry of the namespace at one LSN `S` (a consistent view taken while
//!   writes continue), self-describing (LSN, HLC and epoch history up to `S` in its header), with an
//!   entry count and CRC32C in its trailer ([`files`]);
//! - `wal.bin`: the WAL records after `S` up to the durable LSN `E` when the backup ends, as WAL
//!   frames (each with its own CRC) — replayed on restore, and the base for point-in-time restore
//!   (stop at an LSN or a time);
//! - `manifest.json`, **written last** (fsynced file, then directory): namespace, epoch history, LSN
//!   and HLC ranges, sizes and checksums of both files. A directory without a manifest is an
//!   interrupted backup and is never restored from.
//!
//! Crash protocol of a restore (the server stopped; the namespace lock held): the snapshot is
//! installed with the engine's crash-safe install (marker, one B+Tree transaction, WAL reset), then
//! the records are applied as a follower applies them, each batch durable before the next; a crash
//! midway leaves a namespace at some LSN between `S` and the target, and running the restore again
//! starts over from the snapshot. The next owner start begins a new epoch, so relayers of the old
//! history past the restore point truncate or re-bootstrap instead of diverging.
//!
//! UnisonDB's routes (`/btree/backup`, `/wal/backup`) are served too ([`compat`]): a lone snapshot
//! file, and copies of sealed WAL segment files; `unisondb restore` takes either shape.

pub mod compat;
pub mod files;
pub mod manifest;
pub mod restore;
pub mod take;

pub use manifest::Manifest;
pub use restore::{restore, RestoreReport, RestoreSource, RestoreTarget};
pub use take::take;

use thiserror::Error;

/// Why a backup or restore failed.
#[derive(Debug, Error)]
pub enum BackupError {
    #[error("i/o on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    #[error("{path} is not a valid backup: {reason}")]
    Invalid { path: String, reason: String },
    #[error("{0}")]
    Refused(String),
}

impl BackupError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
        move |source| BackupError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn invalid(path: &std::path::Path, reason: impl Into<String>) -> BackupError {
        BackupError::Invalid {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

/// Joins a client-supplied relative path under `root`, refusing absolute paths and `..`, so an HTTP
/// request can never write outside the node's backup directory.
pub fn under_root(root: &std::path::Path, rel: &str) -> Result<std::path::PathBuf, BackupError> {
    use std::path::Component;
    let p = std::path::Path::new(rel.trim());
    let ok = !rel.trim().is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !ok {
        return Err(BackupError::Refused(format!(
            "{rel:?} must be a relative path without `..` (it is placed under the backup directory {})",
            root.display()
        )));
    }
    Ok(root.join(p))
}
