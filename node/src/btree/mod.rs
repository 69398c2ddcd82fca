//! Our copy-on-write B+Tree on one memory-mapped file (LMDB/bbolt technique).
//!
//! * `page`: page layout and checksums; `node`: editable nodes of a write txn;
//! * `meta`: the two meta pages (commit point); `freelist`: persisted free page ids;
//! * `write`: the write transaction (COW, allocation, commit); `cursor`: range iteration;
//! * `check`: full verification; `verify`: checksums on every read path (cached per mapping).
//!
//! Readers take a snapshot (meta + mapping) and register their txid; pages freed by txn
//! `T` are reused only once every live reader has txid >= `T` **and** no earlier than txn
//! `T + 2` (the LMDB rule): while commit `T + 1` writes its pages, both metas on disk (`T - 1`'s
//! slot now holds `T`, the other `T + 1`'s predecessor) still describe intact trees, so falling
//! back to the older meta after a torn or damaged newer one never reads overwritten pages.
//! The writer edits private copies of pages (copy-on-write), then commits with pwrite +
//! fdatasync of the pages, followed by the alternate meta page + fdatasync. Each commit persists
//! the whole free list (free and still-pinned pages, the ones it freed itself marked as held),
//! so a reopened file has every page accounted for and keeps the delay across restarts.

mod check;
mod cursor;
mod freelist;
mod meta;
mod node;
mod page;
mod verify;
mod write;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::Mutex;

pub use verify::FailureHook;
use verify::{Integrity, Mapping};

pub use cursor::RangeIter;
pub use write::WriteTxn;

use meta::Meta;
use page::{corrupt, ValRef};

/// Errors from the B+Tree; corruption is always reported, never skipped.
#[derive(Debug, thiserror::Error)]
pub enum BTreeError {
    #[error("i/o error on B+Tree file: {0}")]
    Io(#[from] std::io::Error),
    #[error("B+Tree file is corrupt: {0}")]
    Corrupt(String),
    /// A page (or overflow run) whose bytes do not match their crc32c: its data is never returned.
    #[error("checksum mismatch in {what} {page} of {file}")]
    Checksum {
        file: String,
        page: u64,
        what: &'static str,
    },
    #[error("B+Tree {0} is opened read-only")]
    ReadOnly(String),
    #[error("key of {0} bytes exceeds the maximum key size")]
    KeyTooLarge(usize),
    #[error("value of {0} bytes exceeds the 4 GiB value limit")]
    ValueTooLarge(usize),
    #[error("page size {0} is not a power of two in 512..=65536")]
    BadPageSize(usize),
    #[error("B+Tree file is locked by another open handle: {0}")]
    Locked(std::io::Error),
    #[error("an earlier commit failed half-way; reopen the tree")]
    Poisoned,
}

/// Tuning for a tree file; the page size is fixed when the file is created.
///
/// `page_size` must be a power of two in 512..=65536; an existing file keeps its own size.
#[derive(Debug, Clone)]
pub struct BTreeOptions {
    /// Bytes per page for a new file (default 4096).
    pub page_size: usize,
}

impl Default for BTreeOptions {
    fn default() -> Self {
        Self { page_size: 4096 }
    }
}

/// Shape of the tree, for `inspect` and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TreeStats {
    /// Last committed transaction id.
    pub txid: u64,
    /// WAL LSN the committed tree reflects.
    pub checkpoint_lsn: u64,
    /// Levels from root to leaf (0 = empty tree).
    pub depth: u32,
    pub page_size: usize,
    /// High-water mark: pages in use or free (the file may be larger, preallocated).
    pub total_pages: u64,
    /// Pages on the persisted free list (including ones still pinned by readers).
    pub free_pages: u64,
    pub entries: u64,
    pub file_size: u64,
}

/// Result of a full verification.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    /// Tree, overflow, freelist and free pages visited.
    pub pages_checked: u64,
    /// Entries found in the leaves.
    pub entries: u64,
    /// Human-readable inconsistencies; empty means healthy.
    pub problems: Vec<String>,
}

/// A committed tree as readers see it: meta plus the mapping that covers its pages.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub meta: Meta,
    pub map: Arc<Mapping>,
}

impl Snapshot {
    pub(crate) fn ps(&self) -> usize {
        self.meta.page_size as usize
    }
}

/// State shared by readers and the writer; held only for a few instructions.
struct Shared {
    snap: Snapshot,
    /// Live readers: txid -> count. The smallest key bounds free-page reuse.
    readers: BTreeMap<u64, usize>,
}

/// State owned by the single writer.
pub(crate) struct WriterState {
    /// Pages reusable right now (no reader can see them).
    pub free: BTreeSet<u64>,
    /// Pages freed by txn `t`, reusable once every live reader has txid >= `t`.
    pub pending: BTreeMap<u64, Vec<u64>>,
    /// Pages holding the committed meta's freelist (freed by the next commit).
    pub freelist_pages: Vec<u64>,
    pub file_len: u64,
    /// Set when a commit failed after its meta write started; the tree must be reopened.
    pub poisoned: bool,
}

pub(crate) struct Inner {
    #[cfg_attr(not(test), allow(dead_code))] // read by the unit tests only
    path: PathBuf,
    pub file: File,
    /// Checksum failures of this file, shared by all its mappings.
    integrity: Arc<Integrity>,
    /// Opened by `open_read_only`: no write transaction may start.
    read_only: bool,
    shared: Mutex<Shared>,
    pub writer: Mutex<WriterState>,
}

/// A tree file. Cheap to clone; one writer at a time, readers never block.
#[derive(Clone)]
pub struct BTree {
    inner: Arc<Inner>,
}

/// Largest key accepted for a page size: an entry must stay within a quarter page
/// (997 bytes for 4 KiB pages, 1024 from 8 KiB up, 101 for 512-byte pages).
pub fn max_key_size(page_size: usize) -> usize {
    (max_entry_size(page_size) - node::leaf_entry_size(0, 8)).min(1024)
}

/// Largest leaf/branch entry (slot + cell) kept inline; splits rely on it.
pub(crate) fn max_entry_size(page_size: usize) -> usize {
    (page_size - page::BRANCH_HDR) / 4
}

/// Takes an advisory exclusive lock so a second opener fails instead of corrupting the file.
fn lock_exclusive(file: &File) -> Result<(), BTreeError> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a valid, owned file descriptor; the lock dies with the descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(BTreeError::Locked(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Takes a shared lock: fails while a writer (a running server) holds the exclusive one.
fn lock_shared(file: &File) -> Result<(), BTreeError> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a valid, owned file descriptor; the lock dies with the descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc != 0 {
        return Err(BTreeError::Locked(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Maps the whole file read-only, with a fresh (all unverified) checksum bitmap.
fn map_file(
    file: &File,
    ps: usize,
    integrity: &Arc<Integrity>,
) -> Result<Arc<Mapping>, BTreeError> {
    // SAFETY: the file is only written through this process's writer, and only at pages no
    // reader can reach (copy-on-write); it never shrinks, so mapped ranges stay valid.
    let map = unsafe { Mmap::map(file)? };
    Ok(Arc::new(Mapping::new(map, ps, integrity.clone())))
}

/// Suffix of the temporary file a new tree is built in before it is renamed into place.
const CREATING_SUFFIX: &str = "creating";

/// Creates a new, empty tree file at `path` crash-safely: the two meta pages are written and
/// fsynced under a temporary name, renamed into place, and the directory fsynced. A crash leaves
/// either no `path` (the temp file is removed at the next open) or a valid empty tree — never a
/// file without a valid meta page, which could not be opened again.
fn create_file(path: &Path, ps: usize) -> Result<(), BTreeError> {
    let tmp = path.with_extension(CREATING_SUFFIX);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    file.set_len((ps * 16) as u64)?;
    let m = Meta {
        page_size: ps as u32,
        page_count: 2,
        ..Meta::default()
    };
    let mut page = vec![0u8; ps];
    page[..meta::META_LEN].copy_from_slice(&m.encode());
    file.write_all_at(&page, 0)?;
    file.write_all_at(&page, ps as u64)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    sync_parent(path)?;
    tracing::info!(path = %path.display(), page_size = ps, "created B+Tree file");
    Ok(())
}

/// fsyncs the directory holding `path`, so a creation or rename in it is durable.
fn sync_parent(path: &Path) -> Result<(), BTreeError> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl BTree {
    /// Opens or creates the tree file at `path`; picks the newest valid meta page.
    ///
    /// The file is `flock`ed: a second open (even in this process) fails with `Locked` until every
    /// handle, `ReadTxn` and `RangeIter` of the first one is dropped.
    pub fn open(path: &Path, opts: BTreeOptions) -> Result<Self, BTreeError> {
        let ps = opts.page_size;
        if !ps.is_power_of_two() || !(meta::MIN_PAGE..=meta::MAX_PAGE).contains(&ps) {
            return Err(BTreeError::BadPageSize(ps));
        }
        let tmp = path.with_extension(CREATING_SUFFIX);
        if tmp.exists() {
            // A creation interrupted by a crash: nothing in it was ever committed.
            std::fs::remove_file(&tmp)?;
            tracing::warn!(path = %tmp.display(), "removed a B+Tree file left half-created by a crash");
        }
        let exists = match std::fs::metadata(path) {
            Ok(md) => md.len() > 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e.into()),
        };
        if !exists {
            // A zero-length file was created by an older version and never written: nothing to lose.
            create_file(path, ps)?;
        }
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        lock_exclusive(&file)?;
        Self::from_file(path, file, ps, false)
    }

    /// Opens an existing tree without ever writing to it (for `inspect`): no creation, no lock
    /// file, a shared `flock` (so it fails while a server has the tree open), and
    /// `begin_write` answers [`BTreeError::ReadOnly`].
    pub fn open_read_only(path: &Path) -> Result<Self, BTreeError> {
        let file = OpenOptions::new().read(true).open(path)?;
        lock_shared(&file)?;
        Self::from_file(path, file, BTreeOptions::default().page_size, true)
    }

    fn from_file(path: &Path, file: File, ps: usize, read_only: bool) -> Result<Self, BTreeError> {
        let file_len = file.metadata()?.len();
        let m = meta::load(&file, file_len, ps)?;
        if m.page_size as usize != ps && !read_only {
            tracing::warn!(
                file_page_size = m.page_size,
                requested = ps,
                "existing B+Tree file keeps its own page size"
            );
        }
        let integrity = Arc::new(Integrity::new(path.to_path_buf()));
        let map = map_file(&file, m.page_size as usize, &integrity)?;
        let fl = freelist::read(&map, m.freelist, m.page_size as usize, m.page_count, true)?;
        if (fl.free.len() + fl.held.len()) as u64 != m.free_count {
            return Err(corrupt(format!(
                "meta says {} free pages, freelist holds {}",
                m.free_count,
                fl.free.len() + fl.held.len()
            )));
        }
        // Pages freed by the last commit still belong to the other meta's tree: hold them back
        // until the next commit is durable (the N+2 rule survives a restart).
        let mut pending = BTreeMap::new();
        if !fl.held.is_empty() {
            pending.insert(m.txid, fl.held);
        }
        tracing::debug!(
            txid = m.txid,
            root = m.root,
            pages = m.page_count,
            "opened B+Tree"
        );
        let inner = Inner {
            path: path.to_path_buf(),
            file,
            integrity,
            read_only,
            shared: Mutex::new(Shared {
                snap: Snapshot { meta: m, map },
                readers: BTreeMap::new(),
            }),
            writer: Mutex::new(WriterState {
                free: fl.free.into_iter().collect(),
                pending,
                freelist_pages: fl.pages,
                file_len,
                poisoned: false,
            }),
        };
        Ok(BTree {
            inner: Arc::new(inner),
        })
    }

    /// The file this tree lives in.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Snapshot of the last committed tree; never blocks on the writer.
    pub fn begin_read(&self) -> Result<ReadTxn, BTreeError> {
        let mut sh = self.inner.shared.lock();
        let snap = sh.snap.clone();
        *sh.readers.entry(snap.meta.txid).or_insert(0) += 1;
        drop(sh);
        Ok(ReadTxn {
            reg: Arc::new(ReaderReg {
                inner: self.inner.clone(),
                txid: snap.meta.txid,
            }),
            snap,
        })
    }

    /// Starts the (single) write transaction; waits while another one is open.
    pub fn begin_write(&self) -> Result<WriteTxn<'_>, BTreeError> {
        WriteTxn::begin(self)
    }

    /// Verifies the whole last committed tree; problems are listed, not returned as errors.
    pub fn check(&self) -> Result<CheckReport, BTreeError> {
        let rt = self.begin_read()?;
        Ok(check::check(&rt.snap))
    }

    /// Cheap summary of the last committed tree.
    pub fn stats(&self) -> Result<TreeStats, BTreeError> {
        let snap = self.inner.shared.lock().snap.clone();
        let m = snap.meta;
        Ok(TreeStats {
            txid: m.txid,
            checkpoint_lsn: m.checkpoint_lsn,
            depth: m.depth,
            page_size: m.page_size as usize,
            total_pages: m.page_count,
            free_pages: m.free_count,
            entries: m.entries,
            file_size: self.inner.file.metadata()?.len(),
        })
    }

    /// Number of live read snapshots (diagnostics).
    #[cfg(test)]
    pub fn live_readers(&self) -> usize {
        self.inner.shared.lock().readers.values().sum()
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Checksum failures detected on any read path since open.
    pub fn checksum_failures(&self) -> u64 {
        self.inner.integrity.failures()
    }

    /// The first checksum failure detected since open (file and page), if any.
    pub fn first_checksum_failure(&self) -> Option<String> {
        self.inner.integrity.first_failure()
    }

    /// Installs a function called on every checksum failure (once; later calls are ignored).
    pub fn set_failure_hook(&self, hook: FailureHook) {
        self.inner.integrity.set_hook(hook);
    }
}

impl Inner {
    pub(crate) fn current(&self) -> Snapshot {
        self.shared.lock().snap.clone()
    }

    /// Smallest txid of a live reader.
    pub(crate) fn oldest_reader(&self) -> Option<u64> {
        self.shared.lock().readers.keys().next().copied()
    }

    pub(crate) fn publish(&self, snap: Snapshot) {
        self.shared.lock().snap = snap;
    }
}

/// Registration of one reader's txid; dropping it lets the writer reuse what it could see.
pub(crate) struct ReaderReg {
    inner: Arc<Inner>,
    txid: u64,
}

impl Drop for ReaderReg {
    fn drop(&mut self) {
        let mut sh = self.inner.shared.lock();
        if let Some(c) = sh.readers.get_mut(&self.txid) {
            *c -= 1;
            if *c == 0 {
                sh.readers.remove(&self.txid);
            }
        }
    }
}

/// A consistent snapshot of the last committed tree; owns what it needs ('static, Send).
pub struct ReadTxn {
    snap: Snapshot,
    reg: Arc<ReaderReg>,
}

/// Finds `key` in a committed tree; the returned value borrows the mapping.
pub(crate) fn lookup<'m>(
    map: &'m Mapping,
    m: &Meta,
    key: &[u8],
) -> Result<Option<&'m [u8]>, BTreeError> {
    let ps = m.page_size as usize;
    let mut pg = m.root;
    if pg == 0 {
        return Ok(None);
    }
    for _ in 0..page::MAX_DEPTH {
        if pg < 2 || pg >= m.page_count {
            return Err(corrupt(format!("child pointer to page {pg} out of range")));
        }
        let view = page::PageView::new(map.page(pg, ps)?, pg)?;
        if view.is_leaf() {
            return match view.search(key)? {
                Ok(i) => Ok(Some(resolve(map, view.leaf_entry(i)?.1, ps)?)),
                Err(_) => Ok(None),
            };
        }
        pg = view.child(view.child_index(key)?)?;
    }
    Err(corrupt("tree deeper than any valid tree (cycle?)"))
}

/// The bytes of a stored value, following an overflow reference into the mapping.
#[inline]
pub(crate) fn resolve<'m>(
    map: &'m Mapping,
    v: ValRef<'m>,
    ps: usize,
) -> Result<&'m [u8], BTreeError> {
    match v {
        ValRef::Inline(b) => Ok(b),
        ValRef::Overflow { pgno, len } => map.overflow(pgno, len, ps),
    }
}

impl ReadTxn {
    /// Commit id of the snapshot.
    #[cfg(test)]
    pub fn txid(&self) -> u64 {
        self.snap.meta.txid
    }

    /// WAL LSN the snapshot reflects (set by the writer via `set_checkpoint_lsn`).
    pub fn checkpoint_lsn(&self) -> u64 {
        self.snap.meta.checkpoint_lsn
    }

    /// Number of entries in the snapshot.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.snap.meta.entries
    }

    /// Point lookup; copies the value out.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BTreeError> {
        self.get_with(key, |v| v.to_vec())
    }

    /// Point lookup without allocating: `f` sees the value in place (also for overflow values).
    pub fn get_with<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, BTreeError> {
        Ok(lookup(&self.snap.map, &self.snap.meta, key)?.map(f))
    }

    /// Ordered iteration between `start` and `end`, ascending or (`reverse`) descending.
    pub fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> Result<RangeIter, BTreeError> {
        RangeIter::new(self.snap.clone(), self.reg.clone(), start, end, reverse)
    }

    /// Visits entries between `start` and `end` in order, handing `f` slices of the mapping
    /// until it returns false: the allocation-free way to scan (no copy, no iterator state).
    pub fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BTreeError> {
        cursor::scan(&self.snap, start, end, reverse, f)
    }
}
