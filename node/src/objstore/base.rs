//! Base backups in the store: the local backup's files (see `crate::backup`) uploaded under
//! `<ns>/base/<id>/`, manifest last; listing (complete ones only), verified download, retention.

use std::path::Path;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{walobj, ObjStoreError, Store};
use crate::backup::manifest::{self, Manifest};

/// Key prefix of one backup.
pub fn backup_dir(namespace: &str, id: &str) -> String {
    format!("{}{id}/", super::base_dir(namespace))
}

/// Uploads the backup in `dir` (described by `m`): data files first, the manifest last, so a
/// crash midway leaves no manifest and the upload is never listed. Returns its location.
pub async fn upload(store: &Store, m: &Manifest, dir: &Path) -> Result<String, ObjStoreError> {
    let prefix = backup_dir(&m.namespace, &m.id);
    for name in [manifest::SNAPSHOT, manifest::WAL] {
        store
            .put_file(&format!("{prefix}{name}"), &dir.join(name))
            .await?;
    }
    let json = serde_json::to_vec_pretty(m).map_err(|e| ObjStoreError::Refused(e.to_string()))?;
    store
        .put(&format!("{prefix}{}", manifest::FILE), json.into())
        .await?;
    Ok(store.location(&prefix))
}

/// The complete backups of `namespace` in the store (those with a readable manifest), oldest first.
pub async fn list(store: &Store, namespace: &str) -> Result<Vec<Manifest>, ObjStoreError> {
    let mut out = Vec::new();
    for l in store.list(&super::base_dir(namespace)).await? {
        if !l.key.ends_with(&format!("/{}", manifest::FILE)) {
            continue;
        }
        let body = match store.get(&l.key).await {
            Ok(b) => b,
            Err(ObjStoreError::NotFound { .. }) => continue, // deleted meanwhile (retention)
            Err(e) => return Err(e),
        };
        match serde_json::from_slice::<Manifest>(&body) {
            Ok(m) => out.push(m),
            Err(e) => {
                tracing::warn!(object = %store.location(&l.key), error = %e, "unreadable backup manifest skipped")
            }
        }
    }
    out.sort_by_key(|m| (m.created_unix_ms, m.snapshot.lsn));
    Ok(out)
}

/// Downloads backup `m` into `dest` (created), checking each file's size and CRC32C against the
/// manifest as it streams; a mismatch is refused naming the object.
pub async fn download(store: &Store, m: &Manifest, dest: &Path) -> Result<(), ObjStoreError> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| ObjStoreError::Io { path, source }
    };
    tokio::fs::create_dir_all(dest).await.map_err(io(dest))?;
    let prefix = backup_dir(&m.namespace, &m.id);
    for (name, bytes, crc) in [
        (manifest::SNAPSHOT, m.snapshot.bytes, m.snapshot.crc32c),
        (manifest::WAL, m.wal.bytes, m.wal.crc32c),
    ] {
        let key = format!("{prefix}{name}");
        let path = dest.join(name);
        let body = store.get_stream(&key).await?;
        let mut f = tokio::fs::File::create(&path).await.map_err(io(&path))?;
        let (mut n, mut c) = (0u64, 0u32);
        futures::pin_mut!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            c = crc32c::crc32c_append(c, &chunk);
            f.write_all(&chunk).await.map_err(io(&path))?;
        }
        f.sync_all().await.map_err(io(&path))?;
        if (n, c) != (bytes, crc) {
            return Err(ObjStoreError::Corrupt {
                object: store.location(&key),
                reason: format!(
                    "{n} bytes with CRC32C {c:08x}; the manifest says {bytes} bytes, {crc:08x}"
                ),
            });
        }
    }
    m.write(dest)?;
    Ok(())
}

/// Keeps the `keep` newest backups (0: all): older ones are deleted manifest first (so a partly
/// deleted backup is never listed), then the WAL objects no kept backup needs. Returns how many
/// backups were deleted.
pub async fn apply_retention(
    store: &Store,
    namespace: &str,
    keep: usize,
) -> Result<usize, ObjStoreError> {
    let all = list(store, namespace).await?;
    if keep == 0 || all.len() <= keep {
        return Ok(0);
    }
    let (old, kept) = all.split_at(all.len() - keep);
    for m in old {
        let prefix = backup_dir(namespace, &m.id);
        store.delete(&format!("{prefix}{}", manifest::FILE)).await?;
        for l in store.list(&prefix).await? {
            store.delete(&l.key).await?;
        }
        tracing::info!(namespace, backup = %m.id, "old base backup deleted from the store");
    }
    // A point-in-time restore starts at a kept backup's snapshot: older WAL is unreachable.
    let floor = kept.iter().map(|m| m.snapshot.lsn).min().unwrap_or(0);
    let wal = walobj::from_listing(&store.list(&super::wal_dir(namespace)).await?);
    for o in wal.iter().filter(|o| o.last <= floor) {
        store.delete(&o.key).await?;
    }
    Ok(old.len())
}
