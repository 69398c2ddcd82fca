//! Key-value model: one stored key per user key (`keys::kv_key`).

use super::{check_key, ModelError};
use crate::engine::{Commit, Namespace};
use crate::storage::batch::WriteBatch;
use crate::storage::keys;

/// One operation of an atomic KV batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// Adds a KV op to a batch (shared by batches and transactions).
pub fn add_op(batch: &mut WriteBatch, op: &KvOp) -> Result<(), ModelError> {
    match op {
        KvOp::Put { key, value } => {
            check_key(key)?;
            batch.put(keys::kv_key(key), value.clone());
        }
        KvOp::Delete { key } => {
            check_key(key)?;
            batch.delete(keys::kv_key(key));
        }
    }
    Ok(())
}

pub fn put(ns: &Namespace, key: &[u8], value: &[u8]) -> Result<Commit, ModelError> {
    Ok(ns.write(put_batch(key, value.to_vec())?)?)
}

/// [`put`] from async handlers (HTTP, RESP): see `Namespace::write_async`.
pub async fn put_async(ns: &Namespace, key: &[u8], value: Vec<u8>) -> Result<Commit, ModelError> {
    Ok(ns.write_async(put_batch(key, value)?).await?)
}

fn put_batch(key: &[u8], value: Vec<u8>) -> Result<WriteBatch, ModelError> {
    check_key(key)?;
    let mut b = WriteBatch::new();
    b.put(keys::kv_key(key), value);
    Ok(b)
}

pub fn get(ns: &Namespace, key: &[u8]) -> Result<Option<Vec<u8>>, ModelError> {
    check_key(key)?;
    Ok(ns.get(&keys::kv_key(key))?)
}

pub fn delete(ns: &Namespace, key: &[u8]) -> Result<Commit, ModelError> {
    Ok(ns.write(delete_batch(key)?)?)
}

/// [`delete`] from async handlers.
pub async fn delete_async(ns: &Namespace, key: &[u8]) -> Result<Commit, ModelError> {
    Ok(ns.write_async(delete_batch(key)?).await?)
}

fn delete_batch(key: &[u8]) -> Result<WriteBatch, ModelError> {
    check_key(key)?;
    let mut b = WriteBatch::new();
    b.delete(keys::kv_key(key));
    Ok(b)
}

/// Applies every op atomically (one WAL record, one LSN).
pub fn batch(ns: &Namespace, ops: &[KvOp]) -> Result<Commit, ModelError> {
    Ok(ns.write(ops_batch(ops)?)?)
}

/// [`batch`] from async handlers.
pub async fn batch_async(ns: &Namespace, ops: &[KvOp]) -> Result<Commit, ModelError> {
    Ok(ns.write_async(ops_batch(ops)?).await?)
}

fn ops_batch(ops: &[KvOp]) -> Result<WriteBatch, ModelError> {
    if ops.is_empty() {
        return Err(ModelError::Invalid("batch has no operations".into()));
    }
    let mut b = WriteBatch::new();
    for op in ops {
        add_op(&mut b, op)?;
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testutil::namespace;

    #[test]
    fn put_get_delete_batch() {
        let (_d, ns) = namespace();
        put(&ns, b"a", b"1").unwrap();
        assert_eq!(get(&ns, b"a").unwrap(), Some(b"1".to_vec()));
        delete(&ns, b"a").unwrap();
        assert_eq!(get(&ns, b"a").unwrap(), None);
        batch(
            &ns,
            &[
                KvOp::Put {
                    key: b"x".to_vec(),
                    value: b"1".to_vec(),
                },
                KvOp::Put {
                    key: b"y".to_vec(),
                    value: b"2".to_vec(),
                },
                KvOp::Delete { key: b"x".to_vec() },
            ],
        )
        .unwrap();
        assert_eq!(get(&ns, b"x").unwrap(), None);
        assert_eq!(get(&ns, b"y").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn bad_keys_are_invalid() {
        let (_d, ns) = namespace();
        assert!(matches!(put(&ns, b"", b"1"), Err(ModelError::Invalid(_))));
        assert!(matches!(
            put(&ns, &[b'k'; 600], b"1"),
            Err(ModelError::Invalid(_))
        ));
        assert!(matches!(batch(&ns, &[]), Err(ModelError::Invalid(_))));
    }
}
