//! Restore from the store: pick the newest complete base backup at or before the target, download
//! and verify it and the archived WAL after it up to the target, then restore offline as from a
//! local backup (`crate::backup::restore`: snapshot install, replay, and a new epoch at the next
//! owner start).

use std::path::{Path, PathBuf};

use super::walobj::{self, WalObject};
use super::{base, ObjStoreError, Store};
use crate::backup::{Manifest, RestoreSource, RestoreTarget};
use crate::storage::hlc::physical_ms;

/// Whether backup `m` starts at or before `target` (so replaying WAL after it can reach the target).
fn starts_before(m: &Manifest, target: &RestoreTarget) -> bool {
    target.lsn.is_none_or(|l| m.snapshot.lsn <= l)
        && target
            .time_ms
            .is_none_or(|t| physical_ms(m.hlc_range[0]) <= t)
}

/// The backup to restore from: `id` when given, else the newest one at or before the target.
pub fn choose<'a>(
    all: &'a [Manifest],
    id: Option<&str>,
    target: &RestoreTarget,
) -> Option<&'a Manifest> {
    match id {
        Some(id) => all.iter().find(|m| m.id == id),
        None => all.iter().rev().find(|m| starts_before(m, target)),
    }
}

/// Downloads (and verifies) what a restore of `namespace` to `target` needs into `staging`;
/// returns the source to hand to `crate::backup::restore`.
pub async fn fetch(
    store: &Store,
    namespace: &str,
    backup_id: Option<&str>,
    target: RestoreTarget,
    staging: &Path,
) -> Result<(Manifest, RestoreSource), ObjStoreError> {
    let all = base::list(store, namespace).await?;
    let m = choose(&all, backup_id, &target).cloned().ok_or_else(|| {
        ObjStoreError::Refused(match backup_id {
            Some(id) => format!(
                "no complete backup {id} in {}",
                store.location(&super::base_dir(namespace))
            ),
            None => format!(
                "no complete base backup of {namespace} at or before the target in {} ({} found)",
                store.location(&super::base_dir(namespace)),
                all.len()
            ),
        })
    })?;
    let dir = staging.join("base");
    base::download(store, &m, &dir).await?;
    let wal_dir = staging.join("wal");
    tokio::fs::create_dir_all(&wal_dir)
        .await
        .map_err(|source| ObjStoreError::Io {
            path: wal_dir.display().to_string(),
            source,
        })?;
    let objs: Vec<WalObject> = walobj::from_listing(&store.list(&super::wal_dir(namespace)).await?)
        .into_iter()
        .filter(|o| o.last > m.wal.last_lsn)
        .collect();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut next = m.wal.last_lsn + 1;
    let mut prev_key: Option<String> = None;
    for o in objs {
        if target.lsn.is_some_and(|l| next > l) {
            break;
        }
        if o.first > next {
            return Err(ObjStoreError::Refused(format!(
                "the archived WAL is missing LSNs {next}..{} (between {} and {}): restore to an earlier target",
                o.first - 1,
                prev_key.map_or_else(|| format!("backup {}", m.id), |k| store.location(&k)),
                store.location(&o.key)
            )));
        }
        let body = store.get(&o.key).await?;
        let recs = walobj::decode(&store.location(&o.key), (o.first, o.last), &body)?;
        let path = wal_dir.join(format!("{:020}-{:020}.wal", o.first, o.last));
        tokio::fs::write(&path, &body)
            .await
            .map_err(|source| ObjStoreError::Io {
                path: path.display().to_string(),
                source,
            })?;
        files.push(path);
        next = o.last + 1;
        prev_key = Some(o.key);
        if target
            .time_ms
            .is_some_and(|t| recs.last().is_some_and(|r| physical_ms(r.hlc) > t))
        {
            break;
        }
    }
    Ok((m, RestoreSource::Archive { dir, wal: files }))
}
