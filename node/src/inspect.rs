//! `unisondb inspect DIR`: offline report of every namespace under a data directory.

use std::path::Path;

use serde::Serialize;
use thiserror::Error;

use crate::btree::{CheckReport, TreeStats};
use crate::engine::{EngineError, EngineOptions, Namespace};
use crate::wal::SegmentInfo;

#[derive(Debug, Error)]
pub enum InspectError {
    #[error("cannot list {dir}: {source}")]
    List { dir: String, source: std::io::Error },
    #[error("namespace {0} is locked by a running server: stop the server before inspecting")]
    Locked(String),
    #[error("namespace {name}: {source}")]
    Engine { name: String, source: EngineError },
}

/// What inspect found in one namespace.
#[derive(Debug, Serialize)]
pub struct NamespaceReport {
    pub name: String,
    pub lsn: u64,
    pub checkpoint_lsn: u64,
    pub wal_segments: Vec<SegmentInfo>,
    pub tree: TreeStats,
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

/// Opens each namespace found under `dir` (recovering it as a server would) and reports on it.
pub fn inspect(dir: &Path) -> Result<Report, InspectError> {
    let names = crate::db::discover(dir).map_err(|source| InspectError::List {
        dir: dir.display().to_string(),
        source,
    })?;
    let mut namespaces = Vec::new();
    for name in names {
        let ns = match Namespace::open(&dir.join(&name), &name, EngineOptions::default()) {
            Ok(ns) => ns,
            Err(EngineError::Locked(_)) => return Err(InspectError::Locked(name)),
            Err(source) => return Err(InspectError::Engine { name, source }),
        };
        let wrap = |source| InspectError::Engine {
            name: name.clone(),
            source,
        };
        let stats = ns.stats().map_err(wrap)?;
        let check = ns.check().map_err(wrap)?;
        namespaces.push(NamespaceReport {
            name: name.clone(),
            lsn: stats.lsn,
            checkpoint_lsn: stats.checkpoint_lsn,
            wal_segments: stats.wal_segments,
            tree: stats.tree,
            check,
        });
    }
    Ok(Report {
        data_dir: dir.display().to_string(),
        namespaces,
    })
}
