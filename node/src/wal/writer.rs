//! The append path: sequence check, segment roll, one `pwrite` per record, `fdatasync` on sync.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::record::{self, MAX_PAYLOAD_LEN};
use super::segment::{self, SEGMENT_HEADER_LEN};
use super::shared::{Active, SegMeta, Shared, Writer};
use super::WalError;

impl Shared {
    /// Appends one record; visible to `pread` immediately, durable after `sync`.
    pub(crate) fn append(&self, lsn: u64, hlc: u64, payload: &[u8]) -> Result<(), WalError> {
        let mut w = self.writer.lock();
        if let Some(why) = &w.poisoned {
            return Err(WalError::Poisoned(why.clone()));
        }
        let expected = self.last_lsn.load(Ordering::Acquire) + 1;
        if lsn != expected || lsn == u64::MAX {
            return Err(WalError::OutOfSequence { expected, got: lsn });
        }
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(WalError::PayloadTooLarge(payload.len()));
        }
        let frame_len = record::frame_len(payload.len()) as u64;
        let needs_roll = match &w.active {
            None => true,
            Some(a) => {
                a.size > SEGMENT_HEADER_LEN as u64
                    && a.size.saturating_add(frame_len) > self.opts.segment_size
            }
        };
        if needs_roll {
            self.roll(&mut w, lsn)?;
        }

        let Writer {
            active,
            buf,
            poisoned,
            ..
        } = &mut *w;
        let Some(active) = active.as_mut() else {
            return Err(WalError::Io(io::Error::other("no active WAL segment")));
        };
        buf.clear();
        record::encode_into(buf, lsn, hlc, payload);
        if let Err(e) = active.file.write_all_at(buf, active.size) {
            // Undo a partial frame so the next append does not leave garbage behind it.
            if let Err(e2) = active.file.set_len(active.size) {
                *poisoned = Some(format!("write failed ({e}) and truncate failed ({e2})"));
            }
            return Err(e.into());
        }
        // Do not let one huge record keep a huge buffer alive.
        if buf.capacity() > 4 << 20 {
            *buf = Vec::new();
        }
        active.size += frame_len;
        self.active_size.store(active.size, Ordering::Release);
        self.last_lsn.store(lsn, Ordering::Release);
        Ok(())
    }

    /// Seals the active segment (fdatasync) and starts a new one whose first record is `first_lsn`.
    fn roll(&self, w: &mut Writer, first_lsn: u64) -> Result<(), WalError> {
        if let Some(old) = &w.active {
            if let Err(e) = old.file.sync_data() {
                // After a failed fsync the page cache state is unknown: stop accepting writes.
                w.poisoned = Some(format!("fdatasync failed while sealing segment: {e}"));
                return Err(e.into());
            }
            self.durable_lsn
                .fetch_max(first_lsn.saturating_sub(1), Ordering::AcqRel);
        }
        let (file, path) = segment::create(&self.dir, first_lsn)?;
        let mut segs = self.segments.write();
        if let (Some(old), Some(meta)) = (&w.active, segs.last_mut()) {
            meta.last_lsn = first_lsn - 1;
            meta.size = old.size;
        }
        segs.push(SegMeta {
            first_lsn,
            last_lsn: first_lsn - 1,
            size: SEGMENT_HEADER_LEN as u64,
            path,
            file_name: segment::file_name(first_lsn),
        });
        self.active_size
            .store(SEGMENT_HEADER_LEN as u64, Ordering::Release);
        w.active = Some(Active {
            file: Arc::new(file),
            size: SEGMENT_HEADER_LEN as u64,
        });
        Ok(())
    }

    /// Replaces the log with one empty segment starting at `next_lsn` (which must exceed `last_lsn`).
    ///
    /// The new segment is created first and old ones removed oldest-first after it; a crash in
    /// between leaves a non-contiguous log that the engine's install marker tells recovery to reset.
    pub(crate) fn reset(&self, next_lsn: u64) -> Result<(), WalError> {
        let mut w = self.writer.lock();
        let last = self.last_lsn.load(Ordering::Acquire);
        if next_lsn <= last {
            return Err(WalError::OutOfSequence {
                expected: last + 1,
                got: next_lsn,
            });
        }
        if let Some(old) = &w.active {
            old.file.sync_data()?;
        }
        let (file, path) = segment::create(&self.dir, next_lsn)?;
        let mut segs = self.segments.write();
        for s in segs.drain(..) {
            if s.first_lsn != next_lsn {
                std::fs::remove_file(&s.path)?;
            }
        }
        segment::sync_dir(&self.dir)?;
        segs.push(SegMeta {
            first_lsn: next_lsn,
            last_lsn: next_lsn - 1,
            size: SEGMENT_HEADER_LEN as u64,
            path,
            file_name: segment::file_name(next_lsn),
        });
        self.active_size
            .store(SEGMENT_HEADER_LEN as u64, Ordering::Release);
        w.active = Some(Active {
            file: Arc::new(file),
            size: SEGMENT_HEADER_LEN as u64,
        });
        self.last_lsn.store(next_lsn - 1, Ordering::Release);
        self.durable_lsn.store(next_lsn - 1, Ordering::Release);
        Ok(())
    }

    /// Makes everything appended before this call durable with one `fdatasync`.
    ///
    /// The writer lock is released before syncing so appends can continue during the fsync.
    pub(crate) fn sync(&self) -> Result<u64, WalError> {
        let (file, upto) = {
            let w = self.writer.lock();
            let upto = self.last_lsn.load(Ordering::Acquire);
            match &w.active {
                Some(a) => (Arc::clone(&a.file), upto),
                None => return Ok(upto),
            }
        };
        // Earlier segments were fdatasync'ed when they were sealed by `roll`.
        if let Err(e) = file.sync_data() {
            // After a failed fsync the page cache state is unknown: stop accepting writes.
            self.writer.lock().poisoned = Some(format!("fdatasync failed: {e}"));
            return Err(e.into());
        }
        self.durable_lsn.fetch_max(upto, Ordering::AcqRel);
        Ok(upto)
    }
}
