//! Sequential readers: own file handles, a read buffer, `pread`, and a retention pin.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::record::{self, Decoded, FrameFormat};
use super::shared::Shared;
use super::{Record, WalError};

/// Bytes fetched per `pread` when streaming; large enough to amortize syscalls.
const READ_CHUNK: usize = 256 << 10;

/// Iterates records from an LSN up to the published LSN; pins its segments against retention.
///
/// Returns `Ok(None)` when caught up; call again later (e.g. after `Wal::wait_published`).
pub struct WalReader {
    shared: Arc<Shared>,
    pin_id: u64,
    next_lsn: u64,
    cursor: Option<Cursor>,
    /// Reads up to the last appended LSN instead of the published one (the Raft log reader: entries
    /// are read before they are committed).
    appended: bool,
}

/// An open segment and a window of its bytes.
struct Cursor {
    file: File,
    /// Frame format of this segment (from its header).
    format: FrameFormat,
    first_lsn: u64,
    name: String,
    /// File offset of `buf[0]`.
    buf_off: u64,
    /// Read window; only `buf[..len]` holds file bytes. Its length is kept (not truncated to `len`)
    /// so a refill never zeroes it again: at the tail of a busy log every record read refills.
    buf: Vec<u8>,
    /// Bytes of `buf` read from the file.
    len: usize,
    /// Index in `buf` of the next frame.
    pos: usize,
}

/// What the cursor found at its position.
enum Step {
    Frame(Record, usize),
    /// A frame older than the target was skipped without reading its payload.
    Skipped,
    /// No complete frame here (end of written data in this file).
    End,
}

impl Cursor {
    fn offset(&self) -> u64 {
        self.buf_off + self.pos as u64
    }

    fn avail(&self) -> usize {
        self.len.saturating_sub(self.pos)
    }

    /// The buffered bytes from the cursor on.
    fn rest(&self) -> &[u8] {
        &self.buf[self.pos..self.len]
    }

    /// Forgets buffered bytes from `at` on (they are read again from the file).
    fn forget_from(&mut self, at: usize) {
        self.len = self.len.min(at);
    }

    /// Ensures at least `need` unconsumed bytes are buffered, unless the file ends first.
    fn fill(&mut self, need: usize) -> io::Result<()> {
        if self.pos >= self.len {
            self.buf_off += self.pos as u64;
            self.len = 0;
            self.pos = 0;
            // Give back memory grown for an oversized record.
            if self.buf.len() > 4 * READ_CHUNK {
                self.buf.truncate(READ_CHUNK);
                self.buf.shrink_to_fit();
            }
        } else if self.pos > 0 {
            self.buf.copy_within(self.pos..self.len, 0);
            self.buf_off += self.pos as u64;
            self.len -= self.pos;
            self.pos = 0;
        }
        while self.len < need {
            let have = self.len;
            let want = (need - have).max(READ_CHUNK);
            if self.buf.len() < have + want {
                // Zeroed once per size; later fills reuse it.
                self.buf.resize(have + want, 0);
            }
            let n = loop {
                match self
                    .file
                    .read_at(&mut self.buf[have..have + want], self.buf_off + have as u64)
                {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.len = have + n;
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Advances past a frame of `len` bytes, dropping the buffer if it jumps past it.
    fn consume(&mut self, len: u64) {
        let end = self.pos as u64 + len;
        if end <= self.len as u64 {
            self.pos = end as usize;
        } else {
            self.buf_off += end;
            self.len = 0;
            self.pos = 0;
        }
    }

    /// Reads the frame at the cursor. Frames below `target` are skipped cheaply.
    ///
    /// Buffered bytes past the consumed point may predate a concurrent write, so any
    /// incomplete or bad frame is re-read from the file once before being believed.
    fn step(&mut self, target: u64) -> Result<Step, WalError> {
        for attempt in 0..2 {
            if attempt == 1 {
                self.forget_from(self.pos);
            }
            let header_len = self.format.header_len();
            if self.avail() < header_len {
                self.fill(header_len)?;
            }
            let Some(h) = record::parse_header(self.rest(), self.format) else {
                continue;
            };
            if h.lsn < target && h.lsn >= self.first_lsn {
                self.consume(h.frame_len());
                return Ok(Step::Skipped);
            }
            let Ok(need) = usize::try_from(h.frame_len()) else {
                continue;
            };
            if self.avail() < need {
                // Never size the buffer from a length the file cannot back (stale or bad bytes).
                if need > READ_CHUNK && self.offset() + h.frame_len() > self.file.metadata()?.len()
                {
                    continue;
                }
                self.fill(need)?;
            }
            match record::decode(self.rest(), self.format) {
                Decoded::Frame(f) => {
                    let rec = Record {
                        lsn: f.lsn,
                        hlc: f.hlc,
                        epoch: f.epoch,
                        payload: Bytes::copy_from_slice(f.payload),
                    };
                    return Ok(Step::Frame(rec, f.len));
                }
                Decoded::Incomplete { .. } => continue,
                Decoded::CrcMismatch { .. } if attempt == 0 => continue,
                Decoded::CrcMismatch { lsn } => {
                    return Err(WalError::Corrupt {
                        segment: self.name.clone(),
                        offset: self.offset(),
                        reason: format!("crc mismatch reading record (header LSN {lsn})"),
                    })
                }
            }
        }
        Ok(Step::End)
    }
}

impl WalReader {
    /// Creates a reader positioned at `from_lsn` (0 means 1); checks trimming and pins atomically.
    pub(crate) fn new(shared: Arc<Shared>, from_lsn: u64) -> Result<WalReader, WalError> {
        let from = from_lsn.max(1);
        let pin_id = {
            // Holding the segment list read lock excludes retention until the pin is in place.
            let segs = shared.segments.read();
            if let Some(first) = segs.first() {
                if from < first.first_lsn {
                    return Err(WalError::Trimmed {
                        requested: from,
                        oldest: first.first_lsn,
                    });
                }
            }
            shared.pin(from)
        };
        Ok(WalReader {
            shared,
            pin_id,
            next_lsn: from,
            cursor: None,
            appended: false,
        })
    }

    /// Returns the next published record in LSN order, or `None` when caught up.
    pub fn next_record(&mut self) -> Result<Option<Record>, WalError> {
        let published = if self.appended {
            self.shared.last_lsn.load(Ordering::Acquire)
        } else {
            self.shared.published.load(Ordering::Acquire)
        };
        if self.next_lsn > published {
            return Ok(None);
        }
        let mut switched = false;
        loop {
            let Some(cur) = self.cursor.as_mut() else {
                self.open_segment_for(self.next_lsn)?;
                switched = true;
                continue;
            };
            match cur.step(self.next_lsn)? {
                Step::Skipped => {}
                Step::Frame(rec, len) => {
                    if rec.lsn != self.next_lsn {
                        return Err(WalError::Corrupt {
                            segment: cur.name.clone(),
                            offset: cur.offset(),
                            reason: format!(
                                "reader expected LSN {} but found {}",
                                self.next_lsn, rec.lsn
                            ),
                        });
                    }
                    cur.consume(len as u64);
                    self.next_lsn += 1;
                    return Ok(Some(rec));
                }
                Step::End => {
                    // The published record must then be at the start of a later segment.
                    if switched {
                        return Err(WalError::Corrupt {
                            segment: cur.name.clone(),
                            offset: cur.offset(),
                            reason: format!("published LSN {} is missing", self.next_lsn),
                        });
                    }
                    self.cursor = None;
                }
            }
        }
    }

    /// Like `next_record`, but waits up to `timeout` for the next record to be published.
    pub fn next_record_timeout(&mut self, timeout: Duration) -> Result<Option<Record>, WalError> {
        if let Some(rec) = self.next_record()? {
            return Ok(Some(rec));
        }
        self.shared
            .wait_published(self.next_lsn.saturating_sub(1), timeout);
        self.next_record()
    }

    /// Where the last returned record ends: (first LSN of its segment, byte offset in that file).
    /// This is UnisonDB's "WAL position" (segment id, offset) for `/offset` and `/checkpoint`.
    pub fn position(&self) -> Option<(u64, u64)> {
        self.cursor.as_ref().map(|c| (c.first_lsn, c.offset()))
    }

    /// Reads every appended record, published or not (cluster mode's Raft log reader).
    pub(crate) fn through_appended(mut self) -> WalReader {
        self.appended = true;
        self
    }

    /// Moves forward to `lsn` without returning the records before it (the caller got them from
    /// elsewhere); they are skipped by header on the next read, and the retention pin follows.
    pub(crate) fn skip_to(&mut self, lsn: u64) {
        if lsn > self.next_lsn {
            self.next_lsn = lsn;
            self.shared.advance_pin(self.pin_id, lsn);
        }
    }

    /// LSN of the record the next successful `next_record` will return.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Opens the segment holding `lsn` (under the list lock, so it cannot be deleted meanwhile).
    fn open_segment_for(&mut self, lsn: u64) -> Result<(), WalError> {
        let cursor = {
            let segs = self.shared.segments.read();
            let idx = segs.partition_point(|s| s.first_lsn <= lsn);
            let Some(seg) = idx.checked_sub(1).and_then(|i| segs.get(i)) else {
                let oldest = segs.first().map(|s| s.first_lsn).unwrap_or(1);
                return Err(WalError::Trimmed {
                    requested: lsn,
                    oldest,
                });
            };
            let file = File::open(&seg.path)?;
            let format = super::segment::file_format(&file)?;
            Cursor {
                file,
                format,
                first_lsn: seg.first_lsn,
                name: seg.file_name.clone(),
                buf_off: super::segment::SEGMENT_HEADER_LEN as u64,
                buf: Vec::new(),
                len: 0,
                pos: 0,
            }
        };
        self.shared.advance_pin(self.pin_id, lsn);
        self.cursor = Some(cursor);
        Ok(())
    }
}

impl Drop for WalReader {
    fn drop(&mut self) {
        self.shared.unpin(self.pin_id);
    }
}
