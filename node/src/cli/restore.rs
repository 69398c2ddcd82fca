//! `unisondb restore`: offline restore of a namespace from a backup (ours, or UnisonDB's
//! `--btree FILE` / `--wal DIR` shapes), optionally to a point in time. The server must be stopped:
//! the namespace's lock is taken for the whole restore.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::backup::{restore, RestoreSource, RestoreTarget};

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The node's data directory (server.data_dir).
    #[arg(short = 'd', long)]
    pub data_dir: PathBuf,
    /// Namespace to restore.
    #[arg(short = 'n', long)]
    pub namespace: String,
    /// A backup directory (with manifest.json), from `unisondb backup` or `POST /backups`.
    #[arg(long, conflicts_with_all = ["btree", "wal"])]
    pub from: Option<PathBuf>,
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
    let source = match a.from {
        Some(dir) => RestoreSource::Backup(dir),
        None => RestoreSource::Files {
            btree: a.btree,
            wal: a.wal,
        },
    };
    let time_ms = match a.to_time.as_deref().map(parse_time).transpose() {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let target = RestoreTarget {
        lsn: a.to_lsn,
        time_ms,
    };
    match restore(&a.data_dir, &a.namespace, &source, target, a.dry_run) {
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
