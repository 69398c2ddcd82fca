//! Wide-column model: a row key holds named columns, one ordered cell per (row, column).
//!
//! Upserts merge columns; deleting a row is one prefix delete over its cells, expanded atomically by
//! the engine, so a row never appears half-deleted.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{check_column, check_key, ModelError};
use crate::engine::{Commit, Namespace, Snapshot};
use crate::storage::batch::WriteBatch;
use crate::storage::keys::{self, DecodedKey};

/// Column name → value.
pub type Columns = BTreeMap<Vec<u8>, Vec<u8>>;

/// One operation of an atomic row batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOp {
    /// Merge these columns into the row.
    Upsert { row: Vec<u8>, columns: Columns },
    /// Remove the named columns.
    DeleteColumns { row: Vec<u8>, columns: Vec<Vec<u8>> },
    /// Remove the whole row.
    Delete { row: Vec<u8> },
}

/// Adds a row op to a batch (shared by batches and transactions).
pub fn add_op(batch: &mut WriteBatch, op: &RowOp) -> Result<(), ModelError> {
    match op {
        RowOp::Upsert { row, columns } => {
            check_key(row)?;
            if columns.is_empty() {
                return Err(ModelError::Invalid(
                    "row upsert needs at least one column".into(),
                ));
            }
            for (c, v) in columns {
                check_column(c)?;
                batch.put(keys::row_cell_key(row, c), v.clone());
            }
        }
        RowOp::DeleteColumns { row, columns } => {
            check_key(row)?;
            if columns.is_empty() {
                return Err(ModelError::Invalid("no columns named to delete".into()));
            }
            for c in columns {
                check_column(c)?;
                batch.delete(keys::row_cell_key(row, c));
            }
        }
        RowOp::Delete { row } => {
            check_key(row)?;
            batch.delete_prefix(keys::row_prefix(row));
        }
    }
    Ok(())
}

fn write_one(ns: &Namespace, op: RowOp) -> Result<Commit, ModelError> {
    let mut b = WriteBatch::new();
    add_op(&mut b, &op)?;
    Ok(ns.write(b)?)
}

pub fn upsert(ns: &Namespace, row: &[u8], columns: Columns) -> Result<Commit, ModelError> {
    write_one(
        ns,
        RowOp::Upsert {
            row: row.to_vec(),
            columns,
        },
    )
}

pub fn delete_columns(
    ns: &Namespace,
    row: &[u8],
    columns: Vec<Vec<u8>>,
) -> Result<Commit, ModelError> {
    write_one(
        ns,
        RowOp::DeleteColumns {
            row: row.to_vec(),
            columns,
        },
    )
}

pub fn delete(ns: &Namespace, row: &[u8]) -> Result<Commit, ModelError> {
    write_one(ns, RowOp::Delete { row: row.to_vec() })
}

/// Applies every row op atomically.
pub fn batch(ns: &Namespace, ops: &[RowOp]) -> Result<Commit, ModelError> {
    if ops.is_empty() {
        return Err(ModelError::Invalid("batch has no operations".into()));
    }
    let mut b = WriteBatch::new();
    for op in ops {
        add_op(&mut b, op)?;
    }
    Ok(ns.write(b)?)
}

/// Reads a row (all columns, or only `filter`); None when the row has no cells.
pub fn get(
    ns: &Namespace,
    row: &[u8],
    filter: Option<&[Vec<u8>]>,
) -> Result<Option<Columns>, ModelError> {
    check_key(row)?;
    let snap = ns.snapshot()?;
    read_row(&snap, row, filter)
}

/// Reads a row from a snapshot.
pub fn read_row(
    snap: &Snapshot,
    row: &[u8],
    filter: Option<&[Vec<u8>]>,
) -> Result<Option<Columns>, ModelError> {
    let mut cols = Columns::new();
    match filter {
        Some(names) => {
            for c in names {
                check_column(c)?;
                if let Some(v) = snap.get(&keys::row_cell_key(row, c))? {
                    cols.insert(c.clone(), v);
                }
            }
        }
        None => {
            let prefix = keys::row_prefix(row);
            let upper = match keys::prefix_successor(&prefix) {
                Some(s) => Bound::Excluded(s),
                None => Bound::Unbounded,
            };
            for item in snap.range(Bound::Included(prefix), upper, false) {
                let (k, v) = item?;
                match keys::decode(&k) {
                    Some(DecodedKey::RowCell { column, .. }) => {
                        cols.insert(column, v);
                    }
                    _ => return Err(ModelError::Corrupt("foreign key inside a row range".into())),
                }
            }
        }
    }
    Ok(if cols.is_empty() { None } else { Some(cols) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testutil::namespace;

    fn cols(pairs: &[(&str, &str)]) -> Columns {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn upsert_merges_and_deletes() {
        let (_d, ns) = namespace();
        upsert(&ns, b"r", cols(&[("a", "1"), ("b", "2")])).unwrap();
        upsert(&ns, b"r", cols(&[("b", "3"), ("c", "4")])).unwrap();
        // A neighbour whose key extends ours must not leak in.
        upsert(&ns, b"r2", cols(&[("z", "9")])).unwrap();
        assert_eq!(
            get(&ns, b"r", None).unwrap(),
            Some(cols(&[("a", "1"), ("b", "3"), ("c", "4")]))
        );
        let f = vec![b"a".to_vec(), b"zz".to_vec()];
        assert_eq!(get(&ns, b"r", Some(&f)).unwrap(), Some(cols(&[("a", "1")])));
        delete_columns(&ns, b"r", vec![b"a".to_vec()]).unwrap();
        assert_eq!(
            get(&ns, b"r", None).unwrap(),
            Some(cols(&[("b", "3"), ("c", "4")]))
        );
        delete(&ns, b"r").unwrap();
        assert_eq!(get(&ns, b"r", None).unwrap(), None);
        assert_eq!(get(&ns, b"r2", None).unwrap(), Some(cols(&[("z", "9")])));
    }

    #[test]
    fn batch_is_atomic_and_validated() {
        let (_d, ns) = namespace();
        let ops = vec![
            RowOp::Upsert {
                row: b"a".to_vec(),
                columns: cols(&[("x", "1")]),
            },
            RowOp::Upsert {
                row: Vec::new(),
                columns: cols(&[("x", "1")]),
            },
        ];
        assert!(matches!(batch(&ns, &ops), Err(ModelError::Invalid(_))));
        assert_eq!(get(&ns, b"a", None).unwrap(), None);
    }
}
