//! Large objects: streamed in and out as fixed-size chunks, checksummed, visible atomically at commit.
//!
//! Layout (see `storage::keys`): chunks live under a fresh *version* (`lob_chunk_key(key, version, i)`)
//! and are written in several batches while the upload streams; nothing points at that version, so they
//! are invisible. Commit is one batch: the remaining chunks, the manifest (`lob_meta_key`) naming the new
//! version with size, chunk count and CRC32C, and a prefix delete of the previous version's chunks.
//! An aborted upload deletes its chunks; chunks orphaned by a crash mid-upload are removed at startup by
//! `collect_orphans` (no manifest references their version).
//!
//! Reads take one snapshot, read the manifest and range-scan that version's chunks from the same
//! snapshot, verifying order, size and CRC32C; a mismatch ends the stream with `ModelError::Corrupt`.

use std::ops::Bound;

use super::{check_key, ModelError};
use crate::engine::{Commit, LobVersion, Namespace, Snapshot, SnapshotIter};
use crate::storage::batch::WriteBatch;
use crate::storage::keys::{self, DecodedKey, Model};

/// Size of every chunk but the last.
pub const CHUNK_SIZE: usize = 64 << 10;
/// Chunk bytes gathered before an intermediate (invisible) batch is written.
const STAGE_BYTES: usize = 1 << 20;
/// Manifest format 1 checksums with CRC32C; format 2 (written since) with CRC32 (IEEE), the
/// checksum UnisonDB's clients get back from a LOB commit (Go's `hash/crc32`, zlib's `crc32`).
const FORMAT_CRC32C: u8 = 1;
const FORMAT_CRC32: u8 = 2;
const MANIFEST_LEN: usize = 1 + 8 + 8 + 4 + 4 + 4;

/// The checksum a manifest's object is verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumKind {
    /// Manifests written before CRC32 became the checksum.
    Crc32c,
    /// CRC32 with the IEEE polynomial.
    Crc32,
}

impl ChecksumKind {
    /// Folds `data` into a running checksum of this kind.
    pub fn append(self, crc: u32, data: &[u8]) -> u32 {
        match self {
            ChecksumKind::Crc32c => crc32c::crc32c_append(crc, data),
            ChecksumKind::Crc32 => {
                let mut h = crc32fast::Hasher::new_with_initial(crc);
                h.update(data);
                h.finalize()
            }
        }
    }
}

/// What a LOB's manifest records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Manifest {
    pub version: u64,
    pub size: u64,
    pub chunks: u32,
    pub chunk_size: u32,
    pub checksum: u32,
    pub checksum_kind: ChecksumKind,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MANIFEST_LEN);
        out.push(match self.checksum_kind {
            ChecksumKind::Crc32c => FORMAT_CRC32C,
            ChecksumKind::Crc32 => FORMAT_CRC32,
        });
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.chunks.to_le_bytes());
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.checksum.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Result<Manifest, ModelError> {
        let checksum_kind = match (b.len(), b.first()) {
            (MANIFEST_LEN, Some(&FORMAT_CRC32C)) => ChecksumKind::Crc32c,
            (MANIFEST_LEN, Some(&FORMAT_CRC32)) => ChecksumKind::Crc32,
            _ => {
                return Err(ModelError::Corrupt(
                    "LOB manifest has an unknown format".into(),
                ))
            }
        };
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |i: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[i..i + 4]);
            u32::from_le_bytes(a)
        };
        Ok(Manifest {
            version: u64_at(1),
            size: u64_at(9),
            chunks: u32_at(17),
            chunk_size: u32_at(21),
            checksum: u32_at(25),
            checksum_kind,
        })
    }
}

/// Reads a LOB's manifest from a snapshot.
pub fn read_manifest(snap: &Snapshot, key: &[u8]) -> Result<Option<Manifest>, ModelError> {
    snap.get(&keys::lob_meta_key(key))?
        .map(|b| Manifest::decode(&b))
        .transpose()
}

/// The manifest of a LOB at the latest LSN.
pub fn stat(ns: &Namespace, key: &[u8]) -> Result<Option<Manifest>, ModelError> {
    check_key(key)?;
    read_manifest(&ns.snapshot()?, key)
}

/// Deletes the chunks of `version` in the background when an upload is dropped without commit/abort.
fn cleanup_in_background(ns: Namespace, key: Vec<u8>, version: u64) {
    let work = move || {
        let mut b = WriteBatch::new();
        b.delete_prefix(keys::lob_version_prefix(&key, version));
        if let Err(e) = ns.write(b) {
            tracing::warn!(namespace = ns.name(), error = %e, "could not delete chunks of an abandoned LOB upload; startup GC will");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(work);
        }
        Err(_) => work(),
    }
}

/// An upload in progress: chunks are written (invisibly) as data arrives.
pub struct LobWriter {
    ns: Namespace,
    key: Vec<u8>,
    version: u64,
    /// Keeps the version in flight (orphan collection skips it) until the upload ends.
    in_flight: Option<LobVersion>,
    limit: u64,
    buf: Vec<u8>,
    next_index: u32,
    size: u64,
    crc: u32,
    pending: WriteBatch,
    pending_bytes: usize,
    /// Some chunks are already in the store: they must be deleted if the upload does not commit.
    wrote_any: bool,
    done: bool,
}

impl LobWriter {
    /// Starts an upload of `key` that may not exceed `limit` bytes.
    pub fn new(ns: Namespace, key: &[u8], limit: u64) -> Result<LobWriter, ModelError> {
        check_key(key)?;
        let in_flight = ns.begin_lob_version();
        Ok(LobWriter {
            version: in_flight.get(),
            in_flight: Some(in_flight),
            ns,
            key: key.to_vec(),
            limit,
            buf: Vec::with_capacity(CHUNK_SIZE),
            next_index: 0,
            size: 0,
            crc: 0,
            pending: WriteBatch::new(),
            pending_bytes: 0,
            wrote_any: false,
            done: false,
        })
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends data; may write a batch of chunks (blocking).
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), ModelError> {
        if self.size + data.len() as u64 > self.limit {
            return Err(ModelError::TooLarge(format!(
                "large object exceeds the limit of {} bytes",
                self.limit
            )));
        }
        self.size += data.len() as u64;
        self.crc = ChecksumKind::Crc32.append(self.crc, data);
        while !data.is_empty() {
            let take = (CHUNK_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK_SIZE {
                self.stage_chunk()?;
            }
        }
        Ok(())
    }

    fn stage_chunk(&mut self) -> Result<(), ModelError> {
        if self.next_index == u32::MAX {
            return Err(ModelError::TooLarge("too many chunks".into()));
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_SIZE));
        self.pending_bytes += chunk.len();
        self.pending.put(
            keys::lob_chunk_key(&self.key, self.version, self.next_index),
            chunk,
        );
        self.next_index += 1;
        if self.pending_bytes >= STAGE_BYTES {
            let batch = std::mem::take(&mut self.pending);
            self.pending_bytes = 0;
            self.wrote_any = true;
            self.ns.write(batch)?;
        }
        Ok(())
    }

    /// Ends the data: the returned staged object commits with one batch.
    pub fn seal(mut self) -> Result<StagedLob, ModelError> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.pending.put(
                keys::lob_chunk_key(&self.key, self.version, self.next_index),
                chunk,
            );
            self.next_index += 1;
        }
        self.done = true;
        Ok(StagedLob {
            ns: self.ns.clone(),
            key: std::mem::take(&mut self.key),
            manifest: Manifest {
                version: self.version,
                size: self.size,
                chunks: self.next_index,
                chunk_size: CHUNK_SIZE as u32,
                checksum: self.crc,
                checksum_kind: ChecksumKind::Crc32,
            },
            pending: std::mem::take(&mut self.pending),
            wrote_any: self.wrote_any,
            done: false,
            _in_flight: self.in_flight.take(),
        })
    }

    /// Drops the upload and deletes what it wrote (blocking).
    pub fn abort(mut self) -> Result<(), ModelError> {
        self.done = true;
        if self.wrote_any {
            let mut b = WriteBatch::new();
            b.delete_prefix(keys::lob_version_prefix(&self.key, self.version));
            self.ns.write(b)?;
        }
        Ok(())
    }
}

impl Drop for LobWriter {
    fn drop(&mut self) {
        if !self.done && self.wrote_any {
            cleanup_in_background(self.ns.clone(), std::mem::take(&mut self.key), self.version);
        }
    }
}

/// A complete upload waiting for its commit batch.
pub struct StagedLob {
    ns: Namespace,
    key: Vec<u8>,
    manifest: Manifest,
    pending: WriteBatch,
    wrote_any: bool,
    done: bool,
    /// Released after the commit or the abort (or the background cleanup's start).
    _in_flight: Option<LobVersion>,
}

impl StagedLob {
    pub fn manifest(&self) -> Manifest {
        self.manifest
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Adds this object's commit ops (last chunks, manifest, removal of `old`'s chunks) to `batch`.
    /// Call under `commit_lock()` with `old` read just before, then `mark_committed` after the write.
    pub fn add_commit_ops(&mut self, batch: &mut WriteBatch, old: Option<Manifest>) {
        batch.ops.append(&mut self.pending.ops);
        batch.put(keys::lob_meta_key(&self.key), self.manifest.encode());
        if let Some(old) = old {
            if old.version != self.manifest.version {
                batch.delete_prefix(keys::lob_version_prefix(&self.key, old.version));
            }
        }
    }

    pub fn mark_committed(&mut self) {
        self.done = true;
    }

    /// Deletes what this upload wrote (blocking).
    pub fn abort(mut self) -> Result<(), ModelError> {
        self.done = true;
        if self.wrote_any {
            let mut b = WriteBatch::new();
            b.delete_prefix(keys::lob_version_prefix(&self.key, self.manifest.version));
            self.ns.write(b)?;
        }
        Ok(())
    }
}

impl Drop for StagedLob {
    fn drop(&mut self) {
        if !self.done && self.wrote_any {
            cleanup_in_background(
                self.ns.clone(),
                std::mem::take(&mut self.key),
                self.manifest.version,
            );
        }
    }
}

/// Held while reading old manifests and writing new ones: serialises read-manifest-then-replace
/// across commits and deletes of `ns` (per namespace, see `Namespace::commit_lock`), so two concurrent
/// uploads of the same key cannot both delete the same old version and orphan the winner's predecessor.
pub fn commit_lock(ns: &Namespace) -> parking_lot::MutexGuard<'_, ()> {
    ns.commit_lock()
}

/// Makes a staged upload visible in one batch; on failure its chunks are cleaned up.
pub fn commit(ns: &Namespace, mut staged: StagedLob) -> Result<(Commit, Manifest), ModelError> {
    let result = {
        let _guard = commit_lock(ns);
        let old = read_manifest(&ns.snapshot()?, &staged.key)?;
        let mut b = WriteBatch::new();
        staged.add_commit_ops(&mut b, old);
        ns.write(b)
    };
    match result {
        Ok(c) => {
            staged.mark_committed();
            Ok((c, staged.manifest))
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes a LOB (manifest and current chunks); NotFound when there is none.
pub fn delete(ns: &Namespace, key: &[u8]) -> Result<Commit, ModelError> {
    check_key(key)?;
    let _guard = commit_lock(ns);
    let mut b = WriteBatch::new();
    add_delete_ops(&ns.snapshot()?, key, &mut b)?;
    Ok(ns.write(b)?)
}

/// Adds the ops deleting a LOB to `batch` (call under `commit_lock`).
pub fn add_delete_ops(
    snap: &Snapshot,
    key: &[u8],
    batch: &mut WriteBatch,
) -> Result<(), ModelError> {
    let Some(m) = read_manifest(snap, key)? else {
        return Err(ModelError::NotFound("large object".into()));
    };
    batch.delete(keys::lob_meta_key(key));
    batch.delete_prefix(keys::lob_version_prefix(key, m.version));
    Ok(())
}

/// Streams a committed LOB's chunks from one snapshot, verifying them.
pub struct LobReader {
    manifest: Manifest,
    key: Vec<u8>,
    iter: SnapshotIter,
    next_index: u32,
    crc: u32,
    read: u64,
    finished: bool,
}

/// Opens a LOB for reading; None when it does not exist.
pub fn open(ns: &Namespace, key: &[u8]) -> Result<Option<LobReader>, ModelError> {
    check_key(key)?;
    let snap = ns.snapshot()?;
    let Some(manifest) = read_manifest(&snap, key)? else {
        return Ok(None);
    };
    let prefix = keys::lob_version_prefix(key, manifest.version);
    let upper = match keys::prefix_successor(&prefix) {
        Some(s) => Bound::Excluded(s),
        None => Bound::Unbounded,
    };
    let iter = snap.range(Bound::Included(prefix), upper, false);
    Ok(Some(LobReader {
        manifest,
        key: key.to_vec(),
        iter,
        next_index: 0,
        crc: 0,
        read: 0,
        finished: false,
    }))
}

impl LobReader {
    pub fn manifest(&self) -> Manifest {
        self.manifest
    }

    fn fail(&mut self, why: String) -> Option<Result<Vec<u8>, ModelError>> {
        self.finished = true;
        Some(Err(ModelError::Corrupt(why)))
    }
}

impl Iterator for LobReader {
    type Item = Result<Vec<u8>, ModelError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.iter.next() {
            Some(Err(e)) => {
                self.finished = true;
                Some(Err(e.into()))
            }
            Some(Ok((k, v))) => {
                let expected = (self.key.as_slice(), self.manifest.version, self.next_index);
                match keys::decode(&k) {
                    Some(DecodedKey::LobChunk {
                        key,
                        version,
                        index,
                    }) if (key.as_slice(), version, index) == expected => {}
                    _ => {
                        return self.fail(format!(
                            "chunk {} of version {} missing",
                            self.next_index, self.manifest.version
                        ))
                    }
                }
                self.next_index += 1;
                self.read += v.len() as u64;
                if self.read > self.manifest.size {
                    return self.fail("chunks longer than the manifest size".into());
                }
                self.crc = self.manifest.checksum_kind.append(self.crc, &v);
                Some(Ok(v))
            }
            None => {
                self.finished = true;
                if self.next_index != self.manifest.chunks || self.read != self.manifest.size {
                    return self.fail(format!(
                        "expected {} chunks / {} bytes, found {} / {}",
                        self.manifest.chunks, self.manifest.size, self.next_index, self.read
                    ));
                }
                if self.crc != self.manifest.checksum {
                    return self.fail(format!(
                        "{:?} mismatch: manifest {:#010x}, data {:#010x}",
                        self.manifest.checksum_kind, self.manifest.checksum, self.crc
                    ));
                }
                None
            }
        }
    }
}

/// Deletes chunk versions no manifest references (left by a crash mid-upload). Uploads in progress
/// on this node are left alone, and so is any version above the bound taken when the collection
/// began (an upload that starts meanwhile; on a group's new leader also the versions of an old
/// leader whose clock ran ahead, collected on a later pass). Runs at an owner's start and
/// on a group member when it becomes leader (its writes go through the group). Skips from version
/// to version, reading one chunk per version, so the cost is proportional to versions, not bytes.
/// Returns the versions removed. Does nothing on a namespace this node follows: unreferenced chunks
/// there may be an upload still in flight upstream, and the owner's cleanup arrives as replicated
/// records.
pub fn collect_orphans(ns: &Namespace) -> Result<usize, ModelError> {
    if ns.role() == crate::engine::Role::Follower {
        return Ok(0);
    }
    // Before the view: an upload not in flight now either committed before the view (its
    // manifest is in it) or never will.
    let (in_flight, bound) = ns.lob_versions_in_flight();
    let snap = ns.snapshot()?;
    let end = keys::model_end(Model::Lob);
    let mut cursor = keys::model_start(Model::Lob);
    let mut batch = WriteBatch::new();
    let mut removed = 0;
    loop {
        let next = snap
            .range(
                Bound::Included(cursor.clone()),
                Bound::Excluded(end.clone()),
                false,
            )
            .next();
        let Some(item) = next else { break };
        let (k, v) = item?;
        match keys::decode(&k) {
            Some(DecodedKey::LobMeta { .. }) => {
                let _ = v;
                cursor = k;
                cursor.push(0);
            }
            Some(DecodedKey::LobChunk { key, version, .. }) => {
                let live = read_manifest(&snap, &key).ok().flatten().map(|m| m.version);
                let prefix = keys::lob_version_prefix(&key, version);
                let running = in_flight.contains(&version) || version > bound;
                if live != Some(version) && !running {
                    batch.delete_prefix(prefix.clone());
                    removed += 1;
                }
                match keys::prefix_successor(&prefix) {
                    Some(s) => cursor = s,
                    None => break,
                }
            }
            _ => {
                cursor = k;
                cursor.push(0);
            }
        }
    }
    if !batch.is_empty() {
        ns.write(batch)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testutil::namespace;

    fn upload(ns: &Namespace, key: &[u8], data: &[u8]) -> Manifest {
        let mut w = LobWriter::new(ns.clone(), key, u64::MAX).unwrap();
        for part in data.chunks(10_000) {
            w.write(part).unwrap();
        }
        commit(ns, w.seal().unwrap()).unwrap().1
    }

    fn download(ns: &Namespace, key: &[u8]) -> Option<Vec<u8>> {
        let r = open(ns, key).unwrap()?;
        let mut out = Vec::new();
        for c in r {
            out.extend(c.unwrap());
        }
        Some(out)
    }

    #[test]
    fn checksums_are_crc32_and_old_crc32c_manifests_still_verify() {
        // The IEEE check value, as Go's hash/crc32 and zlib compute it.
        assert_eq!(ChecksumKind::Crc32.append(0, b"123456789"), 0xCBF4_3926);
        let split = ChecksumKind::Crc32.append(ChecksumKind::Crc32.append(0, b"1234"), b"56789");
        assert_eq!(split, 0xCBF4_3926);
        // A manifest of format 1 (CRC32C) decodes and its object verifies.
        let (_d, ns) = namespace();
        let m = upload(&ns, b"old", b"legacy bytes");
        let legacy = Manifest {
            checksum: crc32c::crc32c(b"legacy bytes"),
            checksum_kind: ChecksumKind::Crc32c,
            ..m
        };
        assert_eq!(legacy.encode()[0], 1);
        assert_eq!(Manifest::decode(&legacy.encode()).unwrap(), legacy);
        let mut b = WriteBatch::new();
        b.put(keys::lob_meta_key(b"old"), legacy.encode());
        ns.write(b).unwrap();
        assert_eq!(download(&ns, b"old").unwrap(), b"legacy bytes");
        assert!(Manifest::decode(&[3; MANIFEST_LEN]).is_err());
    }

    #[test]
    fn round_trip_replace_delete() {
        let (_d, ns) = namespace();
        let data: Vec<u8> = (0..3 * CHUNK_SIZE + 123).map(|i| (i % 251) as u8).collect();
        let m = upload(&ns, b"big", &data);
        assert_eq!(m.chunks, 4);
        assert_eq!(m.checksum, crc32fast::hash(&data));
        assert_eq!(m.checksum_kind, ChecksumKind::Crc32);
        assert_eq!(download(&ns, b"big").unwrap(), data);
        let m2 = upload(&ns, b"big", b"small");
        assert_ne!(m.version, m2.version);
        assert_eq!(download(&ns, b"big").unwrap(), b"small");
        // The old version's chunks are gone.
        let snap = ns.snapshot().unwrap();
        let p = keys::lob_version_prefix(b"big", m.version);
        assert!(snap
            .range(
                Bound::Included(p.clone()),
                Bound::Excluded(keys::prefix_successor(&p).unwrap()),
                false
            )
            .next()
            .is_none());
        delete(&ns, b"big").unwrap();
        assert!(download(&ns, b"big").is_none());
        assert!(matches!(delete(&ns, b"big"), Err(ModelError::NotFound(_))));
        // Empty object.
        upload(&ns, b"empty", b"");
        assert_eq!(download(&ns, b"empty").unwrap(), b"");
    }

    #[test]
    fn limit_abort_and_orphans() {
        let (_d, ns) = namespace();
        let mut w = LobWriter::new(ns.clone(), b"k", 10).unwrap();
        assert!(matches!(w.write(&[0; 11]), Err(ModelError::TooLarge(_))));
        // An upload that crashes after writing chunks leaves an orphan version.
        let mut w = LobWriter::new(ns.clone(), b"k", u64::MAX).unwrap();
        w.write(&vec![7; 2 * STAGE_BYTES]).unwrap();
        // A crash loses the in-memory registration with the rest of the process.
        drop(w.in_flight.take());
        std::mem::forget(w);
        upload(&ns, b"k", b"live");
        assert_eq!(collect_orphans(&ns).unwrap(), 1);
        assert_eq!(collect_orphans(&ns).unwrap(), 0);
        assert_eq!(download(&ns, b"k").unwrap(), b"live");
    }

    #[test]
    fn an_upload_in_progress_keeps_its_chunks() {
        let (_d, ns) = namespace();
        let data = vec![9u8; 2 * STAGE_BYTES + 5];
        let mut w = LobWriter::new(ns.clone(), b"big", u64::MAX).unwrap();
        w.write(&data[..2 * STAGE_BYTES]).unwrap();
        assert!(
            w.wrote_any,
            "chunks are in the store before the upload ends"
        );
        // A group's new leader collects while this node's upload runs: its version is skipped.
        assert_eq!(collect_orphans(&ns).unwrap(), 0);
        w.write(&data[2 * STAGE_BYTES..]).unwrap();
        let staged = w.seal().unwrap();
        commit(&ns, staged).unwrap();
        assert_eq!(download(&ns, b"big").unwrap(), data);
        assert_eq!(
            collect_orphans(&ns).unwrap(),
            0,
            "the committed version is live"
        );
    }

    #[test]
    fn corrupt_chunk_is_detected() {
        let (_d, ns) = namespace();
        let m = upload(&ns, b"c", &[1u8; 1000]);
        let mut b = WriteBatch::new();
        b.put(keys::lob_chunk_key(b"c", m.version, 0), vec![2u8; 1000]);
        ns.write(b).unwrap();
        let r = open(&ns, b"c").unwrap().unwrap();
        let results: Vec<_> = r.collect();
        assert!(matches!(results.last(), Some(Err(ModelError::Corrupt(_)))));
    }
}
