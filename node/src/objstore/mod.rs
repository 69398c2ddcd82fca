//! Object storage (S3-compatible): base backups, continuous WAL archiving and restore from it.
//!
//! Layout under the configured prefix (see DESIGN.md):
//! - `<ns>/base/<id>/snapshot.bin`, `wal.bin`, then `manifest.json` **last** — a backup without
//!   a manifest is an interrupted upload and is never listed ([`base`]);
//! - `<ns>/wal/<first>-<last>.wal`: archived WAL records `first..=last` (LSNs zero-padded to 20
//!   digits so names sort by LSN and contiguity is checked from a listing), each in the backup
//!   `wal.bin` format — CRC32C-framed records, self-verifying ([`walobj`]).
//!
//! [`archiver`] uploads a namespace's WAL as it becomes durable; [`restore`] brings a namespace
//! back from a base backup plus archived WAL, to a target LSN or time.

pub mod archiver;
pub mod base;
pub mod client;
pub mod credentials;
pub mod follower;
pub mod restore;
pub mod walobj;

pub use client::Store;

use thiserror::Error;

/// Why an object-store operation failed; names the object (`s3://bucket/key`) involved.
#[derive(Debug, Error)]
pub enum ObjStoreError {
    #[error("object store configuration: {0}")]
    Config(String),
    #[error("object {object}: {source}")]
    Store {
        object: String,
        source: object_store::Error,
    },
    #[error("object {object} does not exist")]
    NotFound { object: String },
    #[error("upload of {object} failed: {reason}")]
    Upload { object: String, reason: String },
    #[error("object {object} is corrupt: {reason}")]
    Corrupt { object: String, reason: String },
    #[error("local file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    #[error("{0}")]
    Refused(String),
}

/// Parses `s3://BUCKET[/PREFIX]` into (bucket, prefix).
pub fn parse_url(url: &str) -> Result<(String, String), ObjStoreError> {
    let rest = url.trim().strip_prefix("s3://").ok_or_else(|| {
        ObjStoreError::Config(format!("{url:?} is not an s3://BUCKET[/PREFIX] URL"))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(ObjStoreError::Config(format!("{url:?} names no bucket")));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// Key prefix of a namespace's base backups.
pub fn base_dir(namespace: &str) -> String {
    format!("{namespace}/base/")
}

/// Key prefix of a namespace's archived WAL.
pub fn wal_dir(namespace: &str) -> String {
    format!("{namespace}/wal/")
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls() {
        assert_eq!(
            super::parse_url("s3://b/x/y/").unwrap(),
            ("b".into(), "x/y".into())
        );
        assert_eq!(super::parse_url("s3://b").unwrap(), ("b".into(), "".into()));
        assert!(super::parse_url("http://b").is_err());
        assert!(super::parse_url("s3:///p").is_err());
    }
}
