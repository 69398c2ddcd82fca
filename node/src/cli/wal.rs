//! `unisondb wal list|inspect|stats DIR`: offline, read-only WAL tools (what UnisonDB's `udbctl`
//! offers for its WAL).
//!
//! `DIR` is a data directory (every namespace under it), one namespace's directory, or a `wal/`
//! directory itself. Segment files are only opened for reading and read whole; nothing is created,
//! truncated or locked, so the directory is byte-identical afterwards (a torn tail is reported, never
//! repaired: that is `unisondb inspect --repair`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;

use crate::storage::batch::{self, OpRef};
use crate::storage::keys::{self, DecodedKey};
use crate::wal::record::{self, Decoded};
use crate::wal::segment;

#[derive(Subcommand)]
pub enum WalCommand {
    /// Segments of each namespace: file, LSN range, records, size, modification time.
    List {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Records: LSN, epoch, HLC, size, CRC check, and the keys each record writes.
    Inspect {
        dir: PathBuf,
        /// Only records with LSN >= this.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many records per namespace (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// Totals per namespace: segments, records, bytes, LSN range, epochs, operations by model.
    Stats {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// One segment file.
#[derive(Debug, Serialize)]
pub struct SegmentRow {
    pub file: String,
    pub first_lsn: u64,
    /// `first_lsn - 1` when the segment holds no record.
    pub last_lsn: u64,
    pub records: u64,
    pub size_bytes: u64,
    pub modified_unix_secs: u64,
    /// Why the scan stopped before the end of the file (torn tail or corruption).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defect: Option<String>,
}

/// One record.
#[derive(Debug, Serialize)]
pub struct RecordRow {
    pub lsn: u64,
    pub epoch: u64,
    pub hlc: u64,
    /// Frame bytes on disk (header + payload).
    pub size: u64,
    pub crc_ok: bool,
    pub segment: String,
    pub offset: u64,
    /// `put kv a`, `delete row r/c`, ...; empty if the payload does not decode.
    pub ops: Vec<String>,
    /// CRC32C of the payload alone (0 when the frame is damaged): compares records across nodes.
    pub payload_crc32c: u32,
}

/// Totals of one namespace.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub segments: u64,
    pub records: u64,
    pub bytes: u64,
    pub first_lsn: Option<u64>,
    pub last_lsn: Option<u64>,
    pub epochs: Vec<u64>,
    /// `"put kv"` → count, ...
    pub ops: BTreeMap<String, u64>,
    pub defects: Vec<String>,
}

/// The WAL directories under `dir`, with the namespace name each belongs to.
pub fn wal_dirs(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let name_of = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    if !segment_files(dir)?.is_empty() {
        let ns = dir.parent().map(name_of).unwrap_or_default();
        return Ok(vec![(ns, dir.to_path_buf())]);
    }
    if dir.join("wal").is_dir() {
        return Ok(vec![(name_of(dir), dir.join("wal"))]);
    }
    let mut out = Vec::new();
    for name in crate::db::discover(dir)? {
        let wal = dir.join(&name).join("wal");
        if wal.is_dir() {
            out.push((name, wal));
        }
    }
    Ok(out)
}

/// `(first LSN, path)` of the segment files in `dir`, oldest first.
fn segment_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(first) = name.to_str().and_then(segment::parse_file_name) {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn modified_secs(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => format!(
            "0x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

/// `put kv key`, `delete row r/c`, `put lob k#chunk3`...
fn describe_op(op: &OpRef<'_>) -> String {
    let verb = match op {
        OpRef::Put { .. } => "put",
        OpRef::Delete { .. } => "delete",
    };
    let what = match keys::decode(op.key()) {
        Some(DecodedKey::Kv { key }) => format!("kv {}", text(&key)),
        Some(DecodedKey::RowCell { row, column }) => {
            format!("row {}/{}", text(&row), text(&column))
        }
        Some(DecodedKey::LobMeta { key }) => format!("lob {}", text(&key)),
        Some(DecodedKey::LobChunk { key, index, .. }) => {
            format!("lob {}#chunk{index}", text(&key))
        }
        None => format!("raw {}", text(op.key())),
    };
    format!("{verb} {what}")
}

/// Scans one segment read-only, calling `each` for every valid record; returns its summary.
fn scan_segment(
    first: u64,
    path: &Path,
    mut each: impl FnMut(RecordRow),
) -> std::io::Result<SegmentRow> {
    let image = std::fs::read(path)?;
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut row = SegmentRow {
        file: file.clone(),
        first_lsn: first,
        last_lsn: first.saturating_sub(1),
        records: 0,
        size_bytes: image.len() as u64,
        modified_unix_secs: modified_secs(path),
        defect: None,
    };
    if image.len() < segment::SEGMENT_HEADER_LEN {
        row.defect = Some("segment header incomplete".into());
        return Ok(row);
    }
    if let Err(e) = segment::decode_header(&image) {
        row.defect = Some(format!("bad segment header: {e:?}"));
        return Ok(row);
    }
    let format = segment::image_format(&image);
    let mut off = segment::SEGMENT_HEADER_LEN;
    let mut expected = first;
    while off < image.len() {
        match record::decode(&image[off..], format) {
            Decoded::Frame(f) => {
                if f.lsn != expected {
                    row.defect = Some(format!(
                        "offset {off}: record has LSN {} but {expected} was expected",
                        f.lsn
                    ));
                    break;
                }
                let ops = batch::decode(f.payload)
                    .map(|ops| ops.iter().map(describe_op).collect())
                    .unwrap_or_default();
                each(RecordRow {
                    lsn: f.lsn,
                    epoch: f.epoch,
                    hlc: f.hlc,
                    size: f.len as u64,
                    crc_ok: true,
                    segment: file.clone(),
                    offset: off as u64,
                    ops,
                    payload_crc32c: crc32c::crc32c(f.payload),
                });
                row.records += 1;
                row.last_lsn = f.lsn;
                expected += 1;
                off += f.len;
            }
            Decoded::CrcMismatch { lsn } => {
                if let Some(h) = record::parse_header(&image[off..], format) {
                    each(RecordRow {
                        lsn,
                        epoch: h.epoch,
                        hlc: h.hlc,
                        size: h.frame_len(),
                        crc_ok: false,
                        segment: file.clone(),
                        offset: off as u64,
                        ops: Vec::new(),
                        payload_crc32c: 0,
                    });
                }
                row.defect = Some(format!("offset {off}: CRC mismatch (record LSN {lsn})"));
                break;
            }
            Decoded::Incomplete { .. } => {
                row.defect = Some(format!(
                    "offset {off}: {} bytes of an incomplete record (torn tail)",
                    image.len() - off
                ));
                break;
            }
        }
    }
    Ok(row)
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

fn print_json(v: &impl Serialize) -> Result<(), String> {
    let s = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    println!("{s}");
    Ok(())
}

/// Runs one `wal` command; exit 0, 1 on an I/O error, 3 when a defect was found.
pub fn run(cmd: WalCommand) -> ExitCode {
    match run_inner(cmd) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => fail(e),
    }
}

fn run_inner(cmd: WalCommand) -> Result<bool, String> {
    let dir = match &cmd {
        WalCommand::List { dir, .. }
        | WalCommand::Inspect { dir, .. }
        | WalCommand::Stats { dir, .. } => dir.clone(),
    };
    let dirs = wal_dirs(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if dirs.is_empty() {
        return Err(format!("no WAL found under {}", dir.display()));
    }
    let mut clean = true;
    match cmd {
        WalCommand::List { json, .. } => {
            let mut all = BTreeMap::new();
            for (ns, wal) in &dirs {
                let mut rows = Vec::new();
                for (first, path) in segment_files(wal).map_err(|e| e.to_string())? {
                    let row = scan_segment(first, &path, |_| {}).map_err(|e| e.to_string())?;
                    clean &= row.defect.is_none();
                    rows.push(row);
                }
                all.insert(ns.clone(), rows);
            }
            if json {
                print_json(&all)?;
            } else {
                for (ns, rows) in &all {
                    println!("namespace {ns}: {} segment(s)", rows.len());
                    println!(
                        "  {:<26} {:>12} {:>12} {:>9} {:>12}  modified",
                        "file", "first_lsn", "last_lsn", "records", "bytes"
                    );
                    for r in rows {
                        println!(
                            "  {:<26} {:>12} {:>12} {:>9} {:>12}  {}{}",
                            r.file,
                            r.first_lsn,
                            r.last_lsn,
                            r.records,
                            r.size_bytes,
                            r.modified_unix_secs,
                            r.defect
                                .as_ref()
                                .map(|d| format!("  !! {d}"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
        }
        WalCommand::Inspect {
            from, limit, json, ..
        } => {
            let mut all: BTreeMap<String, Vec<RecordRow>> = BTreeMap::new();
            for (ns, wal) in &dirs {
                let mut out = Vec::new();
                for (first, path) in segment_files(wal).map_err(|e| e.to_string())? {
                    if limit > 0 && out.len() as u64 >= limit {
                        break;
                    }
                    let row = scan_segment(first, &path, |r| {
                        if r.lsn >= from && (limit == 0 || (out.len() as u64) < limit) {
                            out.push(r);
                        }
                    })
                    .map_err(|e| e.to_string())?;
                    if let Some(d) = &row.defect {
                        clean = false;
                        eprintln!("namespace {ns}: {}: {d}", row.file);
                    }
                }
                all.insert(ns.clone(), out);
            }
            if json {
                print_json(&all)?;
            } else {
                for (ns, rows) in &all {
                    println!("namespace {ns}: {} record(s)", rows.len());
                    println!(
                        "  {:>10} {:>14} {:>20} {:>8}  crc  ops",
                        "lsn", "epoch", "hlc", "size"
                    );
                    for r in rows {
                        println!(
                            "  {:>10} {:>14} {:>20} {:>8}  {}  {}",
                            r.lsn,
                            r.epoch,
                            r.hlc,
                            r.size,
                            if r.crc_ok { "ok " } else { "BAD" },
                            r.ops.join(", ")
                        );
                    }
                }
            }
        }
        WalCommand::Stats { json, .. } => {
            let mut all: BTreeMap<String, Stats> = BTreeMap::new();
            for (ns, wal) in &dirs {
                let mut st = Stats::default();
                for (first, path) in segment_files(wal).map_err(|e| e.to_string())? {
                    let row = scan_segment(first, &path, |r| {
                        st.records += 1;
                        st.first_lsn.get_or_insert(r.lsn);
                        st.last_lsn = Some(r.lsn);
                        if st.epochs.last() != Some(&r.epoch) {
                            st.epochs.push(r.epoch);
                        }
                        for op in &r.ops {
                            let kind: String =
                                op.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" ");
                            *st.ops.entry(kind).or_default() += 1;
                        }
                    })
                    .map_err(|e| e.to_string())?;
                    st.segments += 1;
                    st.bytes += row.size_bytes;
                    if let Some(d) = row.defect {
                        st.defects.push(format!("{}: {d}", row.file));
                    }
                }
                clean &= st.defects.is_empty();
                all.insert(ns.clone(), st);
            }
            if json {
                print_json(&all)?;
            } else {
                for (ns, st) in &all {
                    println!("namespace {ns}");
                    println!("  segments {}  bytes {}", st.segments, st.bytes);
                    println!(
                        "  records {}  lsn {}..{}",
                        st.records,
                        st.first_lsn.map_or("-".into(), |l| l.to_string()),
                        st.last_lsn.map_or("-".into(), |l| l.to_string())
                    );
                    println!("  epochs {:?}", st.epochs);
                    for (k, n) in &st.ops {
                        println!("  {k:<12} {n}");
                    }
                    for d in &st.defects {
                        println!("  !! {d}");
                    }
                }
            }
        }
    }
    Ok(clean)
}
