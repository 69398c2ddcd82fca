//! Checksums on every read path: a mapping of the tree file plus one "verified" bit per page.
//!
//! A page's crc32c is checked the first time any reader (or the writer) touches it through a
//! mapping; the verdict is cached in an atomic bitmap that belongs to that mapping, so the hot
//! path costs one relaxed load per page visited. A new mapping (the file grew) starts with every
//! bit clear. Pages rewritten by a commit inside an existing mapping have their bits cleared
//! before the commit is published (`forget`), so new bytes are always verified again.
//!
//! A mismatch is `BTreeError::Checksum` naming the file and page, is counted in [`Integrity`]
//! (which the engine exposes as a metric and a "degraded" flag) and is never cached: every read
//! of a damaged page fails, none returns its bytes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use memmap2::Mmap;
use parking_lot::Mutex;

use super::page::{self, OVERFLOW_HDR};
use super::BTreeError;

/// Called once per detected checksum failure (the engine counts it in a metric).
pub type FailureHook = Box<dyn Fn(&BTreeError) + Send + Sync>;

/// Checksum failures seen in one tree file, shared by every mapping of it.
pub(crate) struct Integrity {
    path: PathBuf,
    failures: AtomicU64,
    /// The first failure, kept for `/stats` and readiness detail.
    first: Mutex<Option<String>>,
    hook: OnceLock<FailureHook>,
}

impl Integrity {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            failures: AtomicU64::new(0),
            first: Mutex::new(None),
            hook: OnceLock::new(),
        }
    }

    /// Installs the failure hook; a second call is ignored.
    pub(crate) fn set_hook(&self, hook: FailureHook) {
        let _ = self.hook.set(hook);
    }

    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn first_failure(&self) -> Option<String> {
        self.first.lock().clone()
    }

    /// Records a failure on `pgno` and builds the error to return.
    #[cold]
    fn fail(&self, pgno: u64, what: &'static str) -> BTreeError {
        let err = BTreeError::Checksum {
            file: self.path.display().to_string(),
            page: pgno,
            what,
        };
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.first.lock().get_or_insert_with(|| err.to_string());
        tracing::error!(file = %self.path.display(), page = pgno, what, "B+Tree checksum mismatch");
        if let Some(h) = self.hook.get() {
            h(&err);
        }
        err
    }
}

/// A read-only mapping of the whole tree file with its per-page verdict bitmap.
pub(crate) struct Mapping {
    map: Mmap,
    /// Bit `p` set = page `p` (or the overflow run starting at `p`) matched its checksum.
    verified: Box<[AtomicU64]>,
    integrity: Arc<Integrity>,
}

impl std::ops::Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl Mapping {
    pub(crate) fn new(map: Mmap, ps: usize, integrity: Arc<Integrity>) -> Self {
        let pages = map.len() / ps.max(1);
        let verified = (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Self {
            map,
            verified,
            integrity,
        }
    }

    #[inline]
    fn is_verified(&self, pgno: u64) -> bool {
        let i = pgno as usize;
        self.verified
            .get(i / 64)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (i % 64)) != 0)
    }

    #[inline]
    fn mark(&self, pgno: u64) {
        let i = pgno as usize;
        if let Some(w) = self.verified.get(i / 64) {
            w.fetch_or(1 << (i % 64), Ordering::Relaxed);
        }
    }

    /// Clears the verdicts of pages `pgno..pgno+n` (a commit rewrote them in this mapping).
    pub(crate) fn forget(&self, pgno: u64, n: u64) {
        for p in pgno..pgno.saturating_add(n) {
            let i = p as usize;
            if let Some(w) = self.verified.get(i / 64) {
                w.fetch_and(!(1 << (i % 64)), Ordering::Relaxed);
            }
        }
    }

    /// The bytes of leaf/branch page `pgno`, checksum verified (once per mapping).
    ///
    /// Kept tiny so it inlines into every lookup: the hot path is a bounds check and one bit
    /// test; the checksum itself lives in the cold `verify_*` functions.
    #[inline]
    pub(crate) fn page(&self, pgno: u64, ps: usize) -> Result<&[u8], BTreeError> {
        let buf = page::page_slice(&self.map, pgno, ps)?;
        if !self.is_verified(pgno) {
            self.verify_page(pgno, buf)?;
        }
        Ok(buf)
    }

    #[cold]
    #[inline(never)]
    fn verify_page(&self, pgno: u64, buf: &[u8]) -> Result<(), BTreeError> {
        if !page::crc_ok(buf) {
            return Err(self.integrity.fail(pgno, "tree page"));
        }
        self.mark(pgno);
        Ok(())
    }

    /// The value bytes of the overflow run at `pgno`, its run checksum verified (once per mapping).
    #[inline]
    pub(crate) fn overflow(&self, pgno: u64, len: u64, ps: usize) -> Result<&[u8], BTreeError> {
        let value = page::overflow_value(&self.map, pgno, len, ps)?;
        if !self.is_verified(pgno) {
            self.verify_overflow(pgno, value.len(), ps)?;
        }
        Ok(value)
    }

    #[cold]
    #[inline(never)]
    fn verify_overflow(&self, pgno: u64, len: usize, ps: usize) -> Result<(), BTreeError> {
        // `overflow_value` checked that the whole run lies inside the mapping.
        let start = pgno as usize * ps;
        let run = self
            .map
            .get(start..start + OVERFLOW_HDR + len)
            .ok_or_else(|| page::corrupt(format!("overflow run at page {pgno} past the file")))?;
        if !page::crc_ok(run) {
            return Err(self.integrity.fail(pgno, "overflow run"));
        }
        self.mark(pgno);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mapping(bytes: &[u8], ps: usize) -> (tempfile::NamedTempFile, Mapping) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        // SAFETY: test file, not modified while mapped.
        let map = unsafe { Mmap::map(f.as_file()).unwrap() };
        let integ = Arc::new(Integrity::new(f.path().to_path_buf()));
        (f, Mapping::new(map, ps, integ))
    }

    #[test]
    fn verdicts_are_cached_and_failures_counted() {
        let ps = 512;
        let mut file = vec![0u8; 4 * ps];
        let p2 = &mut file[2 * ps..3 * ps];
        page::write_header(p2, page::T_LEAF, 0, 2);
        page::seal(p2);
        file[3 * ps + 100] = 1; // page 3: never sealed
        let (_f, m) = mapping(&file, ps);
        assert!(m.page(2, ps).is_ok());
        assert!(m.is_verified(2));
        for _ in 0..2 {
            let e = m.page(3, ps).unwrap_err();
            assert!(matches!(e, BTreeError::Checksum { page: 3, .. }), "{e}");
        }
        assert!(!m.is_verified(3));
        assert_eq!(m.integrity.failures(), 2);
        assert!(m.integrity.first_failure().unwrap().contains("page 3"));
        m.forget(2, 1);
        assert!(!m.is_verified(2));
    }

    #[test]
    fn overflow_run_checksum() {
        let ps = 512;
        let v: Vec<u8> = (0..1200u32).map(|i| i as u8).collect();
        let mut file = vec![0u8; 2 * ps];
        file.extend_from_slice(&page::encode_overflow(2, &v, ps));
        let (_f, m) = mapping(&file, ps);
        assert_eq!(m.overflow(2, 1200, ps).unwrap(), &v[..]);
        let mut bad = file.clone();
        bad[2 * ps + OVERFLOW_HDR + 1000] ^= 4;
        let (_f2, m2) = mapping(&bad, ps);
        assert!(matches!(
            m2.overflow(2, 1200, ps),
            Err(BTreeError::Checksum { page: 2, .. })
        ));
    }
}
