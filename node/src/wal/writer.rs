//! The append path: sequence check, segment roll, one `pwrite` per record, `fdatasync` on sync.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::record::{self, FrameFormat, MAX_PAYLOAD_LEN};
use super::segment::{self, SEGMENT_HEADER_LEN};
use super::shared::{Active, SegMeta, Shared, Writer};
use super::{Record, WalError};

impl Shared {
    /// Appends one record; visible to `pread` immediately, durable after `sync`.
    pub(crate) fn append(
        &self,
        lsn: u64,
        hlc: u64,
        epoch: u64,
        payload: &[u8],
    ) -> Result<(), WalError> {
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
            // A pre-epoch (v1) segment cannot hold epochs: continue in a new v2 segment.
            Some(_) if w.format == FrameFormat::V1 => true,
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
        record::encode_into(buf, lsn, hlc, epoch, payload);
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

    /// Appends consecutive records with one `pwrite` per segment they land in (a follower applying a
    /// received batch); same checks as [`Shared::append`]. On an error, records before the failing one
    /// may be appended (`last_lsn` tells).
    pub(crate) fn append_many(&self, records: &[Record]) -> Result<(), WalError> {
        let mut w = self.writer.lock();
        if let Some(why) = &w.poisoned {
            return Err(WalError::Poisoned(why.clone()));
        }
        let mut i = 0;
        while i < records.len() {
            let expected = self.last_lsn.load(Ordering::Acquire) + 1;
            let first = &records[i];
            if first.lsn != expected || first.lsn == u64::MAX {
                return Err(WalError::OutOfSequence {
                    expected,
                    got: first.lsn,
                });
            }
            if first.payload.len() > MAX_PAYLOAD_LEN {
                return Err(WalError::PayloadTooLarge(first.payload.len()));
            }
            let needs_roll = match &w.active {
                None => true,
                Some(_) if w.format == FrameFormat::V1 => true,
                Some(a) => {
                    a.size > SEGMENT_HEADER_LEN as u64
                        && a.size
                            .saturating_add(record::frame_len(first.payload.len()) as u64)
                            > self.opts.segment_size
                }
            };
            if needs_roll {
                self.roll(&mut w, first.lsn)?;
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
            // Frames that fit this segment (at least one: the segment was rolled for it).
            buf.clear();
            let mut size = active.size;
            let mut j = i;
            while let Some(rec) = records.get(j) {
                let fl = record::frame_len(rec.payload.len()) as u64;
                let in_sequence = rec.lsn == first.lsn + (j - i) as u64;
                if j > i
                    && (!in_sequence
                        || rec.payload.len() > MAX_PAYLOAD_LEN
                        || size.saturating_add(fl) > self.opts.segment_size)
                {
                    break; // written first; the next round reports or rolls
                }
                record::encode_into(buf, rec.lsn, rec.hlc, rec.epoch, &rec.payload);
                size += fl;
                j += 1;
            }
            if let Err(e) = active.file.write_all_at(buf, active.size) {
                if let Err(e2) = active.file.set_len(active.size) {
                    *poisoned = Some(format!("write failed ({e}) and truncate failed ({e2})"));
                }
                return Err(e.into());
            }
            if buf.capacity() > 4 << 20 {
                *buf = Vec::new();
            }
            active.size = size;
            self.active_size.store(size, Ordering::Release);
            self.last_lsn.store(records[j - 1].lsn, Ordering::Release);
            i = j;
        }
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
            self.mark_durable(first_lsn.saturating_sub(1));
        }
        let (file, path) = segment::create(&self.dir, first_lsn)?;
        let mut segs = self.segments.write();
        if segs.last().is_some_and(|m| m.first_lsn == first_lsn) {
            // An empty v1 segment was just re-created in place as v2 (same name): replace its entry.
            segs.pop();
        } else if let (Some(old), Some(meta)) = (&w.active, segs.last_mut()) {
            meta.last_lsn = first_lsn - 1;
            meta.size = old.size;
        }
        w.format = FrameFormat::V2;
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
        self.reset_inner(next_lsn, false)
    }

    /// Like `reset`, but `next_lsn` may be at or below the current end: every record is discarded
    /// (a snapshot from a diverged upstream replaces the whole history).
    pub(crate) fn reset_replacing(&self, next_lsn: u64) -> Result<(), WalError> {
        self.reset_inner(next_lsn, true)
    }

    fn reset_inner(&self, next_lsn: u64, replacing: bool) -> Result<(), WalError> {
        let mut w = self.writer.lock();
        let last = self.last_lsn.load(Ordering::Acquire);
        if next_lsn == 0 || (next_lsn <= last && !replacing) {
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
        w.format = FrameFormat::V2;
        self.last_lsn.store(next_lsn - 1, Ordering::Release);
        self.published.store(next_lsn - 1, Ordering::Release);
        self.durable_lsn.store(next_lsn - 1, Ordering::Release);
        self.durable_tx.send_replace(next_lsn - 1);
        Ok(())
    }

    /// Whether a record of `payload_len` bytes fits in the active segment (no roll, no new file).
    pub(crate) fn has_room(&self, payload_len: usize) -> bool {
        let w = self.writer.lock();
        let frame_len = record::frame_len(payload_len) as u64;
        match &w.active {
            Some(a) if w.format != FrameFormat::V1 => {
                a.size.saturating_add(frame_len) <= self.opts.segment_size
            }
            _ => false,
        }
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
        self.mark_durable(upto);
        Ok(upto)
    }
}

impl Shared {
    /// Discards every record after `lsn` (a follower rolling back a diverged tail); returns how many.
    ///
    /// Later segments are removed newest-first, then the segment holding `lsn` is cut just past it and
    /// fsynced, so a crash at any point leaves a contiguous prefix (the caller repeats the truncation).
    /// `lsn` below the oldest stored record is `Trimmed`: the caller must install a snapshot instead.
    pub(crate) fn truncate_after(&self, lsn: u64) -> Result<u64, WalError> {
        let mut w = self.writer.lock();
        let last = self.last_lsn.load(Ordering::Acquire);
        if lsn >= last {
            return Ok(0);
        }
        let mut segs = self.segments.write();
        let oldest = segs.first().map(|s| s.first_lsn).unwrap_or(1);
        // The segment that keeps `lsn` (or, for lsn == oldest - 1, the first one, emptied).
        let Some(keep) = segs.iter().rposition(|s| s.first_lsn <= lsn.max(oldest)) else {
            return Err(WalError::Trimmed {
                requested: lsn,
                oldest,
            });
        };
        if lsn + 1 < oldest {
            return Err(WalError::Trimmed {
                requested: lsn + 1,
                oldest,
            });
        }
        // Lower the durable bound first (`durable.rs`): a crash while cutting must not leave a
        // log that ends below it, which recovery would refuse as lost data.
        if super::durable::read(&self.dir)? > lsn {
            super::durable::write(&self.dir, lsn)?;
        }
        for s in segs.drain(keep + 1..).rev() {
            std::fs::remove_file(&s.path)?;
        }
        segment::sync_dir(&self.dir)?;
        let meta = &mut segs[keep];
        let file = segment::open_rw(&meta.path)?;
        let format = segment::file_format(&file)?;
        let mut image = Vec::new();
        {
            use std::io::Read;
            (&file).read_to_end(&mut image)?;
        }
        // Walk the frames up to and including `lsn` to find where the kept part ends.
        let mut off = SEGMENT_HEADER_LEN;
        let mut next = meta.first_lsn;
        while next <= lsn {
            match record::decode(&image[off.min(image.len())..], format) {
                record::Decoded::Frame(f) if f.lsn == next => {
                    off += f.len;
                    next += 1;
                }
                _ => {
                    return Err(WalError::Corrupt {
                        segment: meta.file_name.clone(),
                        offset: off as u64,
                        reason: format!("record {next} unreadable while truncating after {lsn}"),
                    })
                }
            }
        }
        file.set_len(off as u64)?;
        file.sync_all()?;
        meta.last_lsn = lsn;
        meta.size = off as u64;
        w.active = Some(Active {
            file: Arc::new(file),
            size: off as u64,
        });
        w.format = format;
        self.active_size.store(off as u64, Ordering::Release);
        self.last_lsn.store(lsn, Ordering::Release);
        self.rewind(lsn);
        Ok(last - lsn)
    }
}
