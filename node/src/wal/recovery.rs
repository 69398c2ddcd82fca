//! Opening a WAL directory: validate every segment, repair a torn tail, reject damage.
//!
//! Rules:
//! - Segments are ordered by the first LSN in their file name; each header must be valid and
//!   agree with the name, and LSNs must be contiguous within and across segments.
//! - Segments are created atomically (`segment::create`: header fsynced under `*.wal.tmp`, then
//!   renamed), so a final-named segment with a short, zeroed or invalid header is **damage**,
//!   not crash debris: `WalError::Corrupt`. (Before atomic creation, such a last segment was
//!   deleted as "torn during creation" — a fully zeroed last segment and every record in it
//!   vanished silently.) Leftover `*.wal.tmp` files never held records and are removed.
//! - Only the *last* segment may end in a defect (partial frame, bad CRC, zeros, garbage), and
//!   only if no CRC-valid frame that could follow appears after it **and** the valid records
//!   reach the durable-LSN bound (`durable.rs`): then it is a torn write past what was ever
//!   fsynced, and the file is truncated to the last good record. Anything else is
//!   `WalError::Corrupt`: a log ending below the durable bound (zeroed or truncated data, a
//!   missing last segment) has lost acknowledged records, so it is refused, never truncated.
//! - A last segment with a valid header but no valid records is kept empty so the next LSN is
//!   not forgotten.
//! - [`Mode`] says what recovery may change: the server repairs a torn tail; `inspect` only
//!   reports it; `inspect --repair` truncates a torn tail and does nothing else.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::segment::{self, HeaderError, SEGMENT_HEADER_LEN};
use super::shared::{Active, SegMeta};
use super::{durable, RecoveryReport, WalError};

/// What recovery is allowed to change on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The server: create the directory if missing, remove creation leftovers, truncate a torn
    /// tail, make recovered records durable.
    Open,
    /// `inspect`: change nothing; a torn tail is reported (`RecoveryReport::torn_tail`).
    ReadOnly,
    /// `inspect --repair`: truncate a torn tail, and nothing else.
    RepairTail,
}

/// What `recover` hands to `Wal::open`.
pub(crate) struct Recovered {
    pub segments: Vec<SegMeta>,
    pub active: Option<Active>,
    pub last_lsn: u64,
    pub report: RecoveryReport,
}

fn corrupt(name: &str, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        segment: name.to_string(),
        offset,
        reason: reason.into(),
    }
}

/// Lists segment files in `dir` as (first_lsn from name, file name), sorted by LSN.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, String)>, WalError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match segment::parse_file_name(name) {
            Some(lsn) => out.push((lsn, name.to_string())),
            None => tracing::debug!(file = name, "ignoring non-segment file in WAL directory"),
        }
    }
    out.sort();
    Ok(out)
}

/// Removes `*.wal.tmp` files: segments whose atomic creation a crash interrupted.
fn remove_creation_leftovers(dir: &Path) -> Result<(), WalError> {
    let mut removed = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(seg) = name.strip_suffix(segment::CREATING_SUFFIX) else {
            continue;
        };
        if segment::parse_file_name(seg).is_some() {
            tracing::warn!(
                file = name,
                "removing a WAL segment whose creation was interrupted"
            );
            std::fs::remove_file(entry.path())?;
            removed = true;
        }
    }
    if removed {
        segment::sync_dir(dir)?;
    }
    Ok(())
}

/// Scans the WAL in `dir`; what it may repair depends on `mode` (`Open` creates `dir` if missing).
pub(crate) fn recover(dir: &Path, mode: Mode) -> Result<Recovered, WalError> {
    if !dir.exists() && mode == Mode::Open {
        std::fs::create_dir_all(dir)?;
        // Make the new directory's own entry durable too.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            segment::sync_dir(parent)?;
        }
    }
    if !dir.exists() {
        return Ok(Recovered {
            segments: Vec::new(),
            active: None,
            last_lsn: 0,
            report: RecoveryReport::default(),
        });
    }
    if mode == Mode::Open {
        remove_creation_leftovers(dir)?;
    }
    let durable_lsn = durable::read(dir)?;
    let listed = list_segments(dir)?;
    let mut report = RecoveryReport::default();
    let mut segments: Vec<SegMeta> = Vec::with_capacity(listed.len());
    let mut active = None;
    let mut prev_last: Option<u64> = None;
    let n = listed.len();

    for (i, (name_lsn, name)) in listed.into_iter().enumerate() {
        let is_last = i + 1 == n;
        let path = dir.join(&name);
        let mut file = match mode {
            Mode::ReadOnly => File::open(&path)?,
            Mode::Open | Mode::RepairTail => segment::open_rw(&path)?,
        };
        let mut image = Vec::new();
        file.read_to_end(&mut image)?;
        let file_len = image.len() as u64;

        let first_lsn = segment::decode_header(&image).map_err(|e| {
            let reason = match e {
                HeaderError::Short => "segment header is truncated",
                HeaderError::Invalid(_) if image.iter().all(|&b| b == 0) => {
                    "segment is all zeros (segments are created atomically, so this is damage, not an interrupted creation)"
                }
                HeaderError::Invalid(_) => "segment header is invalid",
            };
            let detail = match e {
                HeaderError::Invalid(r) => format!("{reason}: {r}"),
                HeaderError::Short => format!("{reason} ({file_len} bytes)"),
            };
            corrupt(&name, 0, detail)
        })?;
        if first_lsn != name_lsn {
            return Err(corrupt(
                &name,
                0,
                format!("header first LSN {first_lsn} does not match file name"),
            ));
        }
        if first_lsn == 0 {
            return Err(corrupt(&name, 0, "segment first LSN is 0"));
        }
        if let Some(prev) = prev_last {
            if first_lsn != prev + 1 {
                return Err(corrupt(
                    &name,
                    0,
                    format!(
                        "LSN gap: previous segment ends at {prev}, this one starts at {first_lsn}"
                    ),
                ));
            }
        }

        let scan = segment::scan(&image, first_lsn);
        if let Some(defect) = &scan.defect {
            if !is_last {
                return Err(corrupt(&name, defect.offset, defect.reason.clone()));
            }
            if defect.definite {
                return Err(corrupt(&name, defect.offset, defect.reason.clone()));
            }
            if let Some((off, lsn)) =
                segment::find_later_frame(&image, defect.offset, scan.last_lsn)
            {
                return Err(corrupt(
                    &name,
                    defect.offset,
                    format!(
                        "{}; a valid record (LSN {lsn}) follows at offset {off}, so this is not a torn tail",
                        defect.reason
                    ),
                ));
            }
            if scan.last_lsn < durable_lsn {
                return Err(corrupt(
                    &name,
                    defect.offset,
                    format!(
                        "{}; records up to LSN {durable_lsn} were durable but only {} remain, so this is lost data, not a torn tail",
                        defect.reason, scan.last_lsn
                    ),
                ));
            }
            let dropped = file_len - scan.valid_end;
            report.torn_tail = Some(super::TornTail {
                segment: name.clone(),
                offset: scan.valid_end,
                bytes: dropped,
                reason: defect.reason.clone(),
            });
            if mode == Mode::ReadOnly {
                tracing::warn!(segment = %name, offset = scan.valid_end, bytes = dropped,
                    reason = %defect.reason, "WAL has a torn tail (left as is: read-only)");
            } else {
                tracing::warn!(
                    segment = %name,
                    offset = scan.valid_end,
                    bytes = dropped,
                    first_dropped_lsn = scan.last_lsn + 1,
                    reason = %defect.reason,
                    "truncating torn tail of WAL"
                );
                file.set_len(scan.valid_end)?;
                file.sync_all()?;
                report.truncated_bytes += dropped;
                report.truncated_segment = Some(name.clone());
            }
        }
        drop(image);

        report.records += scan.records;
        prev_last = Some(scan.last_lsn);
        if is_last {
            // Records found on disk may still sit only in the page cache after a process crash;
            // make them durable so `durable_lsn` starts out true.
            if mode == Mode::Open {
                file.sync_data()?;
            }
            active = Some(Active {
                file: Arc::new(file),
                size: scan.valid_end,
            });
        } else {
            drop::<File>(file);
        }
        segments.push(SegMeta {
            first_lsn,
            last_lsn: scan.last_lsn,
            size: scan.valid_end,
            path,
            file_name: name,
        });
    }

    let last_lsn = prev_last.unwrap_or(0);
    if last_lsn < durable_lsn {
        let where_ = segments
            .last()
            .map(|s| s.file_name.clone())
            .unwrap_or_else(|| durable::FILE.to_string());
        return Err(corrupt(
            &where_,
            segments.last().map(|s| s.size).unwrap_or(0),
            format!(
                "the log ends at LSN {last_lsn} but records up to LSN {durable_lsn} were durable ({}): WAL data is missing",
                durable::FILE
            ),
        ));
    }
    report.segments = segments.len();
    report.last_lsn = last_lsn;
    report.first_lsn = segments
        .first()
        .map(|s| s.first_lsn)
        .filter(|&f| f <= last_lsn);
    debug_assert!(segments.iter().all(|s| s.size >= SEGMENT_HEADER_LEN as u64));
    Ok(Recovered {
        segments,
        active,
        last_lsn,
        report,
    })
}
