//! `unisondb restore`: offline restore of a namespace from a backup (ours, or UnisonDB's
//! `--btree FILE` / `--wal DIR` shapes), optionally to a point in time. The server must be stopped:
//! the namespace's lock is taken for the whole restore.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use unisondb_config::ObjectStoreConfig;

use crate::backup::{restore, BackupError, RestoreSource, RestoreTarget};
use crate::engine::{EngineOptions, Namespace, Role};
use crate::objstore::{self, ObjStoreError};

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The node's data directory (server.data_dir).
    #[arg(short = 'd', long)]
    pub data_dir: PathBuf,
    /// Namespace to restore.
    #[arg(short = 'n', long)]
    pub namespace: String,
    /// A backup directory (with manifest.json), from `unisondb backup` or `POST /backups`.
    #[arg(long, conflicts_with_all = ["btree", "wal", "from_object_store"])]
    pub from: Option<PathBuf>,
    /// Restore from an object store, `s3://BUCKET[/PREFIX]`: the newest base backup at or before
    /// the target, then the archived WAL after it up to the target.
    #[arg(long, conflicts_with_all = ["btree", "wal"])]
    pub from_object_store: Option<String>,
    /// S3-compatible endpoint (`http(s)://host:port`) for --from-object-store; empty: AWS S3.
    #[arg(long, default_value = "")]
    pub endpoint: String,
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted servers need.
    #[arg(long)]
    pub path_style: bool,
    /// AWS shared-credentials file (profile default); else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.
    #[arg(long, default_value = "")]
    pub credentials_file: String,
    /// PEM CA bundle for an https endpoint.
    #[arg(long, default_value = "")]
    pub ca_file: String,
    /// A base backup id in the store (default: the newest at or before the target).
    #[arg(long, requires = "from_object_store")]
    pub backup_id: Option<String>,
    /// Exit 0 without change when the namespace already holds data (idempotent init containers).
    #[arg(long)]
    pub if_empty: bool,
    /// A snapshot file from `POST /btree/backup` (UnisonDB's `--btree`).
    #[arg(long)]
    pub btree: Option<PathBuf>,
    /// WAL segment copies from `POST /wal/backup` (a directory), or a backup's wal.bin.
    #[arg(long)]
    pub wal: Option<PathBuf>,
    /// Stop after this LSN (point-in-time restore).
    #[arg(long)]
    pub to_lsn: Option<u64>,
    /// Stop after the last record committed at or before this time: RFC 3339
    /// (`2026-12-02T10:00:00Z`) or Unix milliseconds.
    #[arg(long)]
    pub to_time: Option<String>,
    /// Only verify the backup and print what would be restored.
    #[arg(long, conflicts_with = "force")]
    pub dry_run: bool,
    /// Confirm: the namespace's current contents are replaced.
    #[arg(long)]
    pub force: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Parses `--to-time`.
pub fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.trim().parse::<u64>() {
        return Ok(ms);
    }
    let ts: jiff::Timestamp = s
        .trim()
        .parse()
        .map_err(|e| format!("--to-time {s:?}: not RFC 3339 nor Unix milliseconds ({e})"))?;
    u64::try_from(ts.as_millisecond()).map_err(|_| format!("--to-time {s:?} is before 1970"))
}

pub fn run(a: RestoreArgs) -> ExitCode {
    let fail = |m: String| {
        eprintln!("error: {m}");
        ExitCode::FAILURE
    };
    if !a.dry_run && !a.force {
        return fail(
            "restore replaces the namespace's data: add --force (or --dry-run to check first)"
                .into(),
        );
    }
    if a.if_empty {
        match holds_data(&a.data_dir, &a.namespace) {
            Ok(Some(lsn)) => {
                println!(
                    "{} already holds data (LSN {lsn}): nothing restored (--if-empty)",
                    a.namespace
                );
                return ExitCode::SUCCESS;
            }
            Ok(None) => {}
            Err(e) => return fail(e.to_string()),
        }
    }
    let time_ms = match a.to_time.as_deref().map(parse_time).transpose() {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let target = RestoreTarget {
        lsn: a.to_lsn,
        time_ms,
    };
    let staging = a.data_dir.join(format!(".restore-staging-{}", a.namespace));
    let source = match (&a.from_object_store, a.from.clone()) {
        (Some(url), _) => match fetch_from_store(&a, url, target, &staging) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return fail(e.to_string());
            }
        },
        (None, Some(dir)) => RestoreSource::Backup(dir),
        (None, None) => RestoreSource::Files {
            btree: a.btree.clone(),
            wal: a.wal.clone(),
        },
    };
    let result = restore(&a.data_dir, &a.namespace, &source, target, a.dry_run);
    if a.from_object_store.is_some() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    match result {
        Ok(r) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                let verb = if r.dry_run {
                    "would restore"
                } else {
                    "restored"
                };
                match r.snapshot_lsn {
                    Some(s) => println!(
                        "{verb} {} in {}: snapshot at LSN {s} ({} entries), {} WAL records; LSN {}",
                        r.namespace, r.dir, r.snapshot_entries, r.records_applied, r.lsn
                    ),
                    None => println!(
                        "{verb} {} in {}: {} WAL records; LSN {}",
                        r.namespace, r.dir, r.records_applied, r.lsn
                    ),
                }
                if r.records_skipped > 0 {
                    println!(
                        "  {} records after the target were left out",
                        r.records_skipped
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}

/// The namespace's LSN when it already holds data, `None` when it is empty or absent.
fn holds_data(data_dir: &Path, namespace: &str) -> Result<Option<u64>, BackupError> {
    let dir = data_dir.join(namespace);
    if !dir.exists() {
        return Ok(None);
    }
    let ns = Namespace::open_as(&dir, namespace, EngineOptions::default(), Role::Follower)?;
    let lsn = ns.latest_lsn();
    ns.close()?;
    Ok((lsn > 0).then_some(lsn))
}

/// Downloads and verifies the base backup and archived WAL into `staging`.
fn fetch_from_store(
    a: &RestoreArgs,
    url: &str,
    target: RestoreTarget,
    staging: &Path,
) -> Result<RestoreSource, ObjStoreError> {
    let (bucket, prefix) = objstore::parse_url(url)?;
    let cfg = ObjectStoreConfig {
        endpoint: a.endpoint.clone(),
        bucket,
        prefix,
        region: a.region.clone(),
        path_style: a.path_style,
        credentials_file: a.credentials_file.clone(),
        ca_file: a.ca_file.clone(),
        ..ObjectStoreConfig::default()
    };
    let store = objstore::Store::from_config(&cfg)?;
    let _ = std::fs::remove_dir_all(staging);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ObjStoreError::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    let (m, source) = rt.block_on(objstore::restore::fetch(
        &store,
        &a.namespace,
        a.backup_id.as_deref(),
        target,
        staging,
    ))?;
    eprintln!(
        "restoring from base backup {} (snapshot at LSN {}) in {}",
        m.id,
        m.snapshot.lsn,
        store.location(&objstore::base::backup_dir(&m.namespace, &m.id))
    );
    Ok(source)
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339_or_millis() {
        assert_eq!(super::parse_time("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(
            super::parse_time("2023-11-14T22:13:20Z"),
            Ok(1_700_000_000_000)
        );
        assert!(super::parse_time("yesterday").is_err());
    }
}

#[cfg(test)]
mod time_tests {
    use super::parse_time;

    #[test]
    fn to_time_takes_rfc3339_or_unix_milliseconds() {
        // what the operator passes from `bootstrap.recovery.targetTime`
        assert_eq!(parse_time("2026-12-02T10:00:00Z"), Ok(1_796_205_600_000));
        assert_eq!(
            parse_time("2026-12-02T11:00:00.250+01:00"),
            Ok(1_796_205_600_250)
        );
        assert_eq!(parse_time(" 1796205600000 "), Ok(1_796_205_600_000));
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} accepted");
        }
    }
}
