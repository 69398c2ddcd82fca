//! `unisondb inspect DIR`: offline, read-only report of every namespace under a data directory.
//!
//! Inspect never changes what it inspects: the tree is opened read-only (`BTree::open_read_only`),
//! the WAL scanned without repair (`wal::inspect`), no lock file is created, nothing flushed.
//! Torn WAL tails are reported, not truncated; `inspect --repair` truncates a torn tail (only
//! that — what the server would do at start) so an operator can do it deliberately.

use std::path::Path;

use serde::Serialize;
use thiserror::Error;

use crate::btree::{BTree, BTreeError, CheckReport, TreeStats};
use crate::wal::{RecoveryReport, SegmentInfo};

#[derive(Debug, Error)]
pub enum InspectError {
    #[error("cannot list {dir}: {source}")]
    List { dir: String, source: std::io::Error },
    #[error("namespace {0} is locked by a running server: stop the server before inspecting")]
    Locked(String),
}

/// What inspect may change.
#[derive(Debug, Clone, Copy, Default)]
pub struct InspectOptions {
    /// Truncate a torn WAL tail (and nothing else).
    pub repair: bool,
}

/// What inspect found in one namespace.
#[derive(Debug, Serialize)]
pub struct NamespaceReport {
    pub name: String,
    pub lsn: u64,
    pub checkpoint_lsn: u64,
    pub wal_segments: Vec<SegmentInfo>,
    /// The WAL scan (torn tail found, and truncated with `--repair`); `None` if it failed.
    pub wal: Option<RecoveryReport>,
    pub tree: TreeStats,
    /// Tree verification; WAL damage and WAL/tree mismatches are listed in its problems too.
    pub check: CheckReport,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub data_dir: String,
    pub namespaces: Vec<NamespaceReport>,
}

impl Report {
    /// True when any namespace's check found problems.
    pub fn has_problems(&self) -> bool {
        self.namespaces.iter().any(|n| !n.check.problems.is_empty())
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "data dir: {}", self.data_dir);
        if self.namespaces.is_empty() {
            let _ = writeln!(s, "no namespaces found");
        }
        for n in &self.namespaces {
            let _ = writeln!(s, "\nnamespace {}", n.name);
            let _ = writeln!(s, "  lsn {}  checkpoint lsn {}", n.lsn, n.checkpoint_lsn);
            let _ = writeln!(s, "  wal segments: {}", n.wal_segments.len());
            if let Some(t) = n.wal.as_ref().and_then(|w| w.torn_tail.as_ref()) {
                let done = n.wal.as_ref().is_some_and(|w| w.truncated_bytes > 0);
                let _ = writeln!(
                    s,
                    "  wal torn tail: {} at offset {} ({} bytes: {}) — {}",
                    t.segment,
                    t.offset,
                    t.bytes,
                    t.reason,
                    if done {
                        "truncated (--repair)"
                    } else {
                        "left as is; the server truncates it at start, `inspect --repair` now"
                    }
                );
            }
            for seg in &n.wal_segments {
                let _ = writeln!(
                    s,
                    "    {}  lsn {}..{}  {} bytes",
                    seg.file_name, seg.first_lsn, seg.last_lsn, seg.size_bytes
                );
            }
            let t = &n.tree;
            let _ = writeln!(
                s,
                "  b+tree: depth {} pages {} free {} entries {} page size {} file {} bytes txid {}",
                t.depth, t.total_pages, t.free_pages, t.entries, t.page_size, t.file_size, t.txid
            );
            if n.check.problems.is_empty() {
                let _ = writeln!(
                    s,
                    "  check: ok ({} pages, {} entries)",
                    n.check.pages_checked, n.check.entries
                );
            } else {
                let _ = writeln!(s, "  check: {} problem(s)", n.check.problems.len());
                for p in &n.check.problems {
                    let _ = writeln!(s, "    - {p}");
                }
            }
        }
        s
    }
}

/// Read-only report on each namespace found under `dir` (see the module doc).
pub fn inspect(dir: &Path) -> Result<Report, InspectError> {
    inspect_with(dir, InspectOptions::default())
}

/// [`inspect`], with `opts.repair` allowing a torn WAL tail to be truncated.
pub fn inspect_with(dir: &Path, opts: InspectOptions) -> Result<Report, InspectError> {
    let names = crate::db::discover(dir).map_err(|source| InspectError::List {
        dir: dir.display().to_string(),
        source,
    })?;
    let mut namespaces = Vec::new();
    for name in names {
        namespaces.push(inspect_namespace(&dir.join(&name), &name, opts)?);
    }
    Ok(Report {
        data_dir: dir.display().to_string(),
        namespaces,
    })
}

/// True if a server holds the namespace's directory lock (checked without creating the file).
fn dir_locked(ns_dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(ns_dir.join("LOCK")) else {
        return false;
    };
    // SAFETY: flock on a valid, owned descriptor; released when `f` drops.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

fn inspect_namespace(
    ns_dir: &Path,
    name: &str,
    opts: InspectOptions,
) -> Result<NamespaceReport, InspectError> {
    if dir_locked(ns_dir) {
        return Err(InspectError::Locked(name.to_string()));
    }
    let mut problems = Vec::new();
    let tree_path = ns_dir.join("tree.db");
    let (tree, check, checkpoint_lsn) = match BTree::open_read_only(&tree_path) {
        Ok(t) => {
            let stats = t.stats();
            let check = t.check();
            let cp = t.begin_read().map(|r| r.checkpoint_lsn()).unwrap_or(0);
            match (stats, check) {
                (Ok(s), Ok(c)) => (s, c, cp),
                (Err(e), _) | (_, Err(e)) => {
                    problems.push(format!("{}: {e}", tree_path.display()));
                    (TreeStats::default(), CheckReport::default(), cp)
                }
            }
        }
        Err(BTreeError::Locked(_)) => return Err(InspectError::Locked(name.to_string())),
        Err(e) => {
            problems.push(format!("{}: cannot open: {e}", tree_path.display()));
            (TreeStats::default(), CheckReport::default(), 0)
        }
    };
    let wal_dir = ns_dir.join("wal");
    let (wal, segments, lsn) = match crate::wal::inspect(&wal_dir, opts.repair) {
        Ok((report, segs)) => {
            let last = report.last_lsn;
            if last < checkpoint_lsn {
                problems.push(format!(
                    "WAL ends at LSN {last} but the B+Tree checkpoint is at LSN {checkpoint_lsn}: WAL files are missing"
                ));
            } else if checkpoint_lsn > 0 && report.first_lsn.is_some_and(|f| f > checkpoint_lsn + 1)
            {
                problems.push(format!(
                    "WAL starts at LSN {:?}, after the checkpoint {checkpoint_lsn}: records in between are missing",
                    report.first_lsn
                ));
            }
            (Some(report), segs, last)
        }
        Err(e) => {
            problems.push(format!("{}: {e}", wal_dir.display()));
            (None, Vec::new(), 0)
        }
    };
    let mut check = check;
    problems.append(&mut check.problems);
    check.problems = problems;
    Ok(NamespaceReport {
        name: name.to_string(),
        lsn: lsn.max(checkpoint_lsn),
        checkpoint_lsn,
        wal_segments: segments,
        wal,
        tree,
        check,
    })
}
