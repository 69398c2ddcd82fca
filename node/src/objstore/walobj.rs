//! Archived WAL objects: names carrying their LSN range, and their contents (the backup `wal.bin`
//! format: magic, then CRC32C-framed records with consecutive LSNs).

use bytes::Bytes;

use super::ObjStoreError;
use crate::backup::files;
use crate::wal::record;
use crate::wal::Record;

/// Name of the object holding records `first..=last` under `<ns>/wal/`.
pub fn key(namespace: &str, first: u64, last: u64) -> String {
    format!("{}{first:020}-{last:020}.wal", super::wal_dir(namespace))
}

/// The LSN range a WAL object's key names; `None` for other keys.
pub fn parse_key(key: &str) -> Option<(u64, u64)> {
    let name = key.rsplit('/').next()?.strip_suffix(".wal")?;
    let (a, b) = name.split_once('-')?;
    let (first, last) = (a.parse().ok()?, b.parse().ok()?);
    (first <= last && a.len() == 20 && b.len() == 20).then_some((first, last))
}

/// An archived WAL object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    pub key: String,
    pub first: u64,
    pub last: u64,
}

/// The WAL objects of a listing, in LSN order.
pub fn from_listing(listed: &[super::client::Listed]) -> Vec<WalObject> {
    let mut v: Vec<WalObject> = listed
        .iter()
        .filter_map(|l| {
            parse_key(&l.key).map(|(first, last)| WalObject {
                key: l.key.clone(),
                first,
                last,
            })
        })
        .collect();
    v.sort_by_key(|o| (o.first, o.last));
    v
}

/// The first hole in a run of WAL objects: `(last LSN before it, first LSN after it)`.
pub fn first_gap(objs: &[WalObject]) -> Option<(u64, u64)> {
    objs.windows(2)
        .find(|w| w[1].first != w[0].last + 1)
        .map(|w| (w[0].last, w[1].first))
}

/// Encodes records (consecutive LSNs) as an object body.
pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(8 + records.iter().map(|r| r.payload.len() + 64).sum::<usize>());
    out.extend_from_slice(files::WAL_MAGIC);
    for r in records {
        record::encode_into(&mut out, r.lsn, r.hlc, r.epoch, &r.payload);
    }
    out
}

/// Decodes and verifies an object body fetched as `object` (its `s3://` location): every frame's
/// CRC, consecutive LSNs, and the range its name promises.
pub fn decode(object: &str, range: (u64, u64), body: &Bytes) -> Result<Vec<Record>, ObjStoreError> {
    let corrupt = |reason: String| ObjStoreError::Corrupt {
        object: object.to_string(),
        reason,
    };
    if body.get(..8) != Some(&files::WAL_MAGIC[..]) {
        return Err(corrupt("not an archived WAL object (bad magic)".into()));
    }
    let recs = files::frames(
        std::path::Path::new(object),
        &body[8..],
        record::FrameFormat::V2,
    )
    .map_err(|e| match e {
        crate::backup::BackupError::Invalid { reason, .. } => corrupt(reason),
        other => corrupt(other.to_string()),
    })?;
    let got = (recs.first().map(|r| r.lsn), recs.last().map(|r| r.lsn));
    if got != (Some(range.0), Some(range.1)) {
        return Err(corrupt(format!(
            "holds LSNs {:?}..{:?}, its name says {}..{}",
            got.0, got.1, range.0, range.1
        )));
    }
    Ok(recs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_lsn_and_round_trip() {
        let k = key("ns", 5, 1200);
        assert_eq!(parse_key(&k), Some((5, 1200)));
        assert!(key("ns", 9, 9) < key("ns", 10, 10));
        assert_eq!(parse_key("ns/wal/x.wal"), None);
        let recs: Vec<Record> = (5..9)
            .map(|l| Record {
                lsn: l,
                hlc: l << 16,
                epoch: 1,
                payload: Bytes::from(vec![l as u8; 20]),
            })
            .collect();
        let body = Bytes::from(encode(&recs));
        assert_eq!(decode("o", (5, 8), &body).unwrap(), recs);
        assert!(decode("o", (5, 9), &body).is_err());
        for at in 0..body.len() {
            let mut bad = body.to_vec();
            bad[at] ^= 0x10;
            assert!(
                decode("o", (5, 8), &Bytes::from(bad)).is_err(),
                "flip at {at}"
            );
        }
    }
}
