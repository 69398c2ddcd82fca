//! Ordered range and prefix scans over KV keys and row keys, with a limit and a continuation key.
//!
//! Bounds are computed on the stored encoding: KV keys are `tag | key`, so user order is stored order;
//! row cells are `tag | esc(row) 00 01 | column`, so `row_prefix(r)` is below every cell of `r` and of any
//! greater row, and `esc(p)` (without terminator) prefixes every row whose key starts with `p`.

use std::ops::Bound;

use super::row::Columns;
use super::ModelError;
use crate::engine::Snapshot;
use crate::storage::keys::{self, DecodedKey, Model};

/// Largest page a scan returns.
pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 100;

/// One KV entry: (user key, value).
pub type KvEntry = (Vec<u8>, Vec<u8>);

/// What to scan (all user-key bounds; empty = unbounded).
#[derive(Debug, Clone, Default)]
pub struct ScanRequest {
    pub prefix: Option<Vec<u8>>,
    /// Inclusive lower bound.
    pub start: Option<Vec<u8>>,
    /// Exclusive upper bound.
    pub end: Option<Vec<u8>>,
    /// Continue after this key (the previous page's `next`).
    pub after: Option<Vec<u8>>,
    pub limit: usize,
    pub reverse: bool,
}

/// One page of results; `next` is set when more may follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Vec<u8>>,
}

fn tighter_lower(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match (&a, &b) {
        (Bound::Unbounded, _) => b,
        (_, Bound::Unbounded) => a,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            if x > y || (x == y && matches!(a, Bound::Excluded(_))) {
                a
            } else {
                b
            }
        }
    }
}

fn tighter_upper(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match (&a, &b) {
        (Bound::Unbounded, _) => b,
        (_, Bound::Unbounded) => a,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            if x < y || (x == y && matches!(a, Bound::Excluded(_))) {
                a
            } else {
                b
            }
        }
    }
}

fn upper_of(prefix_or_end: Option<Vec<u8>>, model: Model) -> Bound<Vec<u8>> {
    match prefix_or_end {
        Some(k) => Bound::Excluded(k),
        None => Bound::Excluded(keys::model_end(model)),
    }
}

fn check_limit(limit: usize) -> Result<usize, ModelError> {
    match limit {
        0 => Ok(DEFAULT_LIMIT),
        l if l > MAX_LIMIT => Err(ModelError::Invalid(format!(
            "limit {l} exceeds the maximum of {MAX_LIMIT}"
        ))),
        l => Ok(l),
    }
}

/// Scans KV entries; returns `(key, value)` pairs in key order (or reverse).
pub fn scan_kv(snap: &Snapshot, req: &ScanRequest) -> Result<Page<KvEntry>, ModelError> {
    let limit = check_limit(req.limit)?;
    let mut lower = Bound::Included(keys::model_start(Model::Kv));
    let mut upper = upper_of(None, Model::Kv);
    if let Some(p) = &req.prefix {
        let enc = keys::kv_key(p);
        upper = tighter_upper(upper, upper_of(keys::prefix_successor(&enc), Model::Kv));
        lower = tighter_lower(lower, Bound::Included(enc));
    }
    if let Some(s) = &req.start {
        lower = tighter_lower(lower, Bound::Included(keys::kv_key(s)));
    }
    if let Some(e) = &req.end {
        upper = tighter_upper(upper, Bound::Excluded(keys::kv_key(e)));
    }
    if let Some(a) = &req.after {
        let b = Bound::Excluded(keys::kv_key(a));
        if req.reverse {
            upper = tighter_upper(upper, b);
        } else {
            lower = tighter_lower(lower, b);
        }
    }
    let mut items = Vec::new();
    let mut next = None;
    if !empty_range(&lower, &upper) {
        for item in snap.range(lower, upper, req.reverse) {
            let (k, v) = item?;
            let Some(DecodedKey::Kv { key }) = keys::decode(&k) else {
                return Err(ModelError::Corrupt(
                    "foreign key inside the KV range".into(),
                ));
            };
            if items.len() == limit {
                next = items.last().map(|(k, _): &KvEntry| k.clone());
                break;
            }
            items.push((key, v));
        }
    }
    Ok(Page { items, next })
}

/// Encoded prefix shared by every row whose key starts with `p` (the row prefix minus its terminator).
fn row_key_prefix(p: &[u8]) -> Vec<u8> {
    let mut enc = keys::row_prefix(p);
    enc.truncate(enc.len() - 2);
    enc
}

/// Scans rows; `limit` counts rows, whose cells are grouped. `columns` filters the returned columns.
pub fn scan_rows(
    snap: &Snapshot,
    req: &ScanRequest,
    columns: Option<&[Vec<u8>]>,
) -> Result<Page<(Vec<u8>, Columns)>, ModelError> {
    let limit = check_limit(req.limit)?;
    let mut lower = Bound::Included(keys::model_start(Model::Row));
    let mut upper = upper_of(None, Model::Row);
    if let Some(p) = &req.prefix {
        let enc = row_key_prefix(p);
        upper = tighter_upper(upper, upper_of(keys::prefix_successor(&enc), Model::Row));
        lower = tighter_lower(lower, Bound::Included(enc));
    }
    if let Some(s) = &req.start {
        lower = tighter_lower(lower, Bound::Included(keys::row_prefix(s)));
    }
    if let Some(e) = &req.end {
        upper = tighter_upper(upper, Bound::Excluded(keys::row_prefix(e)));
    }
    if let Some(a) = &req.after {
        let rp = keys::row_prefix(a);
        if req.reverse {
            upper = tighter_upper(upper, Bound::Excluded(rp));
        } else if let Some(s) = keys::prefix_successor(&rp) {
            lower = tighter_lower(lower, Bound::Included(s));
        }
    }
    let mut items: Vec<(Vec<u8>, Columns)> = Vec::new();
    let mut next = None;
    if !empty_range(&lower, &upper) {
        for item in snap.range(lower, upper, req.reverse) {
            let (k, v) = item?;
            let Some(DecodedKey::RowCell { row, column }) = keys::decode(&k) else {
                return Err(ModelError::Corrupt(
                    "foreign key inside the row range".into(),
                ));
            };
            let same_row = items.last().is_some_and(|(r, _)| *r == row);
            if !same_row {
                if items.len() == limit {
                    next = items.last().map(|(r, _)| r.clone());
                    break;
                }
                items.push((row, Columns::new()));
            }
            if columns.is_none_or(|f| f.contains(&column)) {
                if let Some((_, cols)) = items.last_mut() {
                    cols.insert(column, v);
                }
            }
        }
    }
    Ok(Page { items, next })
}

fn empty_range(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Excluded(u))
        | (Bound::Excluded(l), Bound::Excluded(u))
        | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
        (Bound::Included(l), Bound::Included(u)) => l > u,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testutil::namespace;
    use crate::models::{kv, row};

    fn keys_of(p: &Page<(Vec<u8>, Vec<u8>)>) -> Vec<String> {
        p.items
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn kv_prefix_range_pagination_reverse() {
        let (_d, ns) = namespace();
        for k in ["a", "b/1", "b/2", "b/3", "b0", "c"] {
            kv::put(&ns, k.as_bytes(), b"v").unwrap();
        }
        row::upsert(&ns, b"b/9", [(b"c".to_vec(), b"v".to_vec())].into()).unwrap();
        let snap = ns.snapshot().unwrap();
        let mut req = ScanRequest {
            prefix: Some(b"b/".to_vec()),
            limit: 2,
            ..Default::default()
        };
        let p1 = scan_kv(&snap, &req).unwrap();
        assert_eq!(keys_of(&p1), ["b/1", "b/2"]);
        assert_eq!(p1.next, Some(b"b/2".to_vec()));
        req.after = p1.next;
        let p2 = scan_kv(&snap, &req).unwrap();
        assert_eq!(keys_of(&p2), ["b/3"]);
        assert_eq!(p2.next, None);
        let rev = scan_kv(
            &snap,
            &ScanRequest {
                reverse: true,
                start: Some(b"b".to_vec()),
                end: Some(b"c".to_vec()),
                after: Some(b"b0".to_vec()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys_of(&rev), ["b/3", "b/2", "b/1"]);
        assert!(matches!(
            scan_kv(
                &snap,
                &ScanRequest {
                    limit: MAX_LIMIT + 1,
                    ..Default::default()
                }
            ),
            Err(ModelError::Invalid(_))
        ));
    }

    #[test]
    fn rows_group_cells_and_count_rows() {
        let (_d, ns) = namespace();
        for r in ["r1", "r1x", "r2", "s"] {
            row::upsert(
                &ns,
                r.as_bytes(),
                [
                    (b"a".to_vec(), b"1".to_vec()),
                    (b"b".to_vec(), b"2".to_vec()),
                ]
                .into(),
            )
            .unwrap();
        }
        let snap = ns.snapshot().unwrap();
        let req = ScanRequest {
            prefix: Some(b"r".to_vec()),
            limit: 2,
            ..Default::default()
        };
        let p = scan_rows(&snap, &req, None).unwrap();
        let rows: Vec<_> = p.items.iter().map(|(r, c)| (r.clone(), c.len())).collect();
        assert_eq!(rows, vec![(b"r1".to_vec(), 2), (b"r1x".to_vec(), 2)]);
        assert_eq!(p.next, Some(b"r1x".to_vec()));
        let p2 = scan_rows(
            &snap,
            &ScanRequest {
                after: p.next.clone(),
                ..req.clone()
            },
            Some(&[b"b".to_vec()]),
        )
        .unwrap();
        assert_eq!(p2.items.len(), 1);
        assert_eq!(p2.items[0].0, b"r2");
        assert_eq!(p2.items[0].1.len(), 1);
        assert_eq!(p2.next, None);
        let rev = scan_rows(
            &snap,
            &ScanRequest {
                reverse: true,
                limit: 3,
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let names: Vec<_> = rev.items.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(names, vec![b"s".to_vec(), b"r2".to_vec(), b"r1x".to_vec()]);
        assert!(rev.items.iter().all(|(_, c)| c.len() == 2));
        assert_eq!(rev.next, Some(b"r1x".to_vec()));
    }
}
