//! A batch of operations: what a write asks for, and (encoded) the payload of one WAL record.
//!
//! Payload: `version u8 = 1 | count u32 LE | op*`, op = `0x01 | klen u32 | key | vlen u32 | value` (put)
//! or `0x02 | klen u32 | key` (delete). Prefix deletes are expanded into point deletes before logging, so
//! a record replays to the same state on every replica.
//!
//! Control payload (cluster mode: Raft blank and membership entries): `version u8 = 0xC0 | body`. It
//! carries no data operations: [`decode`] returns no ops, so memtables, the change feed and relayers
//! skip it while the record keeps its LSN (the Raft log index).

use thiserror::Error;

const FORMAT_VERSION: u8 = 1;
/// First byte of a control payload (see the module docs).
pub const CONTROL_VERSION: u8 = 0xC0;
const OP_PUT: u8 = 0x01;
const OP_DELETE: u8 = 0x02;

/// One operation on stored (already model-encoded) keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Delete every key starting with `prefix`; resolved by the engine at write time, never logged.
    DeletePrefix {
        prefix: Vec<u8>,
    },
}

impl Op {
    /// Bytes this op adds to memory and log, for memtable accounting.
    pub fn weight(&self) -> usize {
        match self {
            Op::Put { key, value } => key.len() + value.len() + 16,
            Op::Delete { key } => key.len() + 16,
            Op::DeletePrefix { prefix } => prefix.len() + 16,
        }
    }
}

/// Operations applied atomically: all visible at one LSN, or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<Op>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    pub fn delete_prefix(&mut self, prefix: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::DeletePrefix {
            prefix: prefix.into(),
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// A payload that does not decode: the record passed its CRC, so this is a bug or a foreign format.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unsupported batch format version {0}")]
    Version(u8),
    #[error("batch payload truncated")]
    Truncated,
    #[error("unknown op tag {0:#x}")]
    Tag(u8),
    #[error("prefix delete cannot be logged; expand it first")]
    Unexpanded,
}

/// Encodes a batch of point operations as a WAL payload.
pub fn encode(ops: &[Op]) -> Result<Vec<u8>, DecodeError> {
    let size: usize = 5 + ops.iter().map(|o| o.weight()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        match op {
            Op::Put { key, value } => {
                out.push(OP_PUT);
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
            Op::Delete { key } => {
                out.push(OP_DELETE);
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
            }
            Op::DeletePrefix { .. } => return Err(DecodeError::Unexpanded),
        }
    }
    Ok(out)
}

/// Wraps `body` as a control payload: a record with no data operations.
pub fn encode_control(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(CONTROL_VERSION);
    out.extend_from_slice(body);
    out
}

/// The body of a control payload, or `None` for a data payload.
pub fn control_body(payload: &[u8]) -> Option<&[u8]> {
    match payload.split_first() {
        Some((&CONTROL_VERSION, body)) => Some(body),
        _ => None,
    }
}

/// A decoded op borrowing from the payload (no copies on the replay and notification paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpRef<'a> {
    Put { key: &'a [u8], value: &'a [u8] },
    Delete { key: &'a [u8] },
}

impl<'a> OpRef<'a> {
    pub fn key(&self) -> &'a [u8] {
        match self {
            OpRef::Put { key, .. } | OpRef::Delete { key } => key,
        }
    }
}

/// Decodes a WAL payload into borrowed ops.
pub fn decode(payload: &[u8]) -> Result<Vec<OpRef<'_>>, DecodeError> {
    let mut cur = Cursor { buf: payload };
    let version = cur.u8()?;
    if version == CONTROL_VERSION {
        return Ok(Vec::new());
    }
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let count = cur.u32()? as usize;
    let mut ops = Vec::with_capacity(count.min(payload.len() / 9 + 1));
    for _ in 0..count {
        let tag = cur.u8()?;
        let klen = cur.u32()? as usize;
        let key = cur.take(klen)?;
        match tag {
            OP_PUT => {
                let vlen = cur.u32()? as usize;
                let value = cur.take(vlen)?;
                ops.push(OpRef::Put { key, value });
            }
            OP_DELETE => ops.push(OpRef::Delete { key }),
            other => return Err(DecodeError::Tag(other)),
        }
    }
    Ok(ops)
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let mut b = WriteBatch::new();
        b.put(b"k1".to_vec(), b"v1".to_vec()).delete(b"k2".to_vec());
        let p = encode(&b.ops).unwrap();
        assert_eq!(
            decode(&p).unwrap(),
            vec![
                OpRef::Put {
                    key: b"k1",
                    value: b"v1"
                },
                OpRef::Delete { key: b"k2" }
            ]
        );
    }

    #[test]
    fn prefix_delete_is_not_loggable() {
        let mut b = WriteBatch::new();
        b.delete_prefix(b"p".to_vec());
        assert_eq!(encode(&b.ops), Err(DecodeError::Unexpanded));
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
        let control = encode_control(b"membership");
        assert_eq!(
            decode(&control),
            Ok(vec![]),
            "a control record has no data ops"
        );
        assert_eq!(control_body(&control), Some(&b"membership"[..]));
        assert_eq!(control_body(&encode(&[]).unwrap()), None);
        assert_eq!(decode(&[9, 0, 0, 0, 0]), Err(DecodeError::Version(9)));
        assert_eq!(
            decode(&[1, 1, 0, 0, 0, 7, 0, 0, 0, 0]),
            Err(DecodeError::Tag(7))
        );
        assert_eq!(
            decode(&[1, 1, 0, 0, 0, 1, 5, 0, 0, 0, b'a']),
            Err(DecodeError::Truncated)
        );
        // A huge count with no ops must not allocate absurdly or panic.
        assert_eq!(
            decode(&[1, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
