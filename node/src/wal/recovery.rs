//! Opening a WAL directory: validate every segment, repair a torn tail, reject mid-log damage.
//!
//! Rules:
//! - Segments are ordered by the first LSN in their file name; each header must be valid and
//!   agree with the name, and LSNs must be contiguous within and across segments.
//! - Only the *last* segment may end in a defect (partial frame, bad CRC, zeros, garbage), and
//!   only if no CRC-valid frame that could follow appears after it: then it is a torn write and
//!   the file is truncated to the last good record. Anything else is `WalError::Corrupt`.
//! - A last segment torn during creation (short or all-zero header) is removed; a last segment
//!   with a valid header but no valid records is kept empty so the next LSN is not forgotten.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::segment::{self, HeaderError, SEGMENT_HEADER_LEN};
use super::shared::{Active, SegMeta};
use super::{RecoveryReport, WalError};

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

/// Scans and repairs the WAL in `dir` (created if missing).
pub(crate) fn recover(dir: &Path) -> Result<Recovered, WalError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        // Make the new directory's own entry durable too.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            segment::sync_dir(parent)?;
        }
    }
    let listed = list_segments(dir)?;
    let mut report = RecoveryReport::default();
    let mut segments: Vec<SegMeta> = Vec::with_capacity(listed.len());
    let mut active = None;
    let mut prev_last: Option<u64> = None;
    let n = listed.len();

    for (i, (name_lsn, name)) in listed.into_iter().enumerate() {
        let is_last = i + 1 == n;
        let path = dir.join(&name);
        let mut file = segment::open_rw(&path)?;
        let mut image = Vec::new();
        file.read_to_end(&mut image)?;
        let file_len = image.len() as u64;

        let first_lsn = match segment::decode_header(&image) {
            Ok(lsn) => lsn,
            Err(e) => {
                let torn_creation =
                    matches!(e, HeaderError::Short) || image.iter().all(|&b| b == 0);
                if is_last && torn_creation {
                    tracing::warn!(
                        segment = %name,
                        bytes = file_len,
                        "removing last WAL segment torn during creation"
                    );
                    drop(file);
                    std::fs::remove_file(&path)?;
                    segment::sync_dir(dir)?;
                    report.truncated_bytes += file_len;
                    report.truncated_segment = Some(name);
                    break;
                }
                let reason = match e {
                    HeaderError::Short => "segment header is truncated".to_string(),
                    HeaderError::Invalid(r) => r,
                };
                return Err(corrupt(&name, 0, reason));
            }
        };
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
            let dropped = file_len - scan.valid_end;
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
        drop(image);

        report.records += scan.records;
        prev_last = Some(scan.last_lsn);
        if is_last {
            // Records found on disk may still sit only in the page cache after a process crash;
            // make them durable so `durable_lsn` starts out true.
            file.sync_data()?;
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

    // If the torn-creation segment was removed, the previous one becomes active again.
    if active.is_none() {
        if let Some(last) = segments.last() {
            let file = segment::open_rw(&last.path)?;
            active = Some(Active {
                file: Arc::new(file),
                size: last.size,
            });
        }
    }

    let last_lsn = prev_last.unwrap_or(0);
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
