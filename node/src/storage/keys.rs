//! One ordered key space for all models: a type-prefix byte, then an order-preserving encoding.
//!
//! - KV:        `0x01 | user_key`
//! - Row cell:  `0x02 | esc(row) | 0x00 0x01 | column`
//! - LOB meta:  `0x03 | esc(key) | 0x00 0x01 | 0x00`
//! - LOB chunk: `0x03 | esc(key) | 0x00 0x01 | 0x01 | version u64 BE | index u32 BE`
//!
//! `esc` doubles every `0x00` into `0x00 0xFF` and the terminator is `0x00 0x01`, so all cells of a row are
//! contiguous, rows sort by their key bytes, and no row key is a prefix-collision of another.

/// The first byte of every stored key: which model owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    Kv,
    Row,
    Lob,
}

impl Model {
    pub const fn tag(self) -> u8 {
        match self {
            Model::Kv => 0x01,
            Model::Row => 0x02,
            Model::Lob => 0x03,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Model> {
        match tag {
            0x01 => Some(Model::Kv),
            0x02 => Some(Model::Row),
            0x03 => Some(Model::Lob),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Model::Kv => "kv",
            Model::Row => "row",
            Model::Lob => "lob",
        }
    }
}

const TERM: [u8; 2] = [0x00, 0x01];
const LOB_META: u8 = 0x00;
const LOB_CHUNK: u8 = 0x01;

fn push_escaped(out: &mut Vec<u8>, part: &[u8]) {
    for &b in part {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&TERM);
}

/// Splits an escaped, terminated component off the front; returns (unescaped, rest).
fn split_escaped(input: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == 0 {
            match input.get(i + 1)? {
                0xFF => out.push(0),
                0x01 => return Some((out, &input[i + 2..])),
                _ => return None,
            }
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    None
}

/// Stored key of a KV entry.
pub fn kv_key(user_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(user_key.len() + 1);
    k.push(Model::Kv.tag());
    k.extend_from_slice(user_key);
    k
}

/// Prefix under which every cell of `row` lives.
pub fn row_prefix(row: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(row.len() + 4);
    k.push(Model::Row.tag());
    push_escaped(&mut k, row);
    k
}

/// Stored key of one wide-column cell.
pub fn row_cell_key(row: &[u8], column: &[u8]) -> Vec<u8> {
    let mut k = row_prefix(row);
    k.extend_from_slice(column);
    k
}

/// Prefix under which a LOB's manifest and all chunk versions live.
pub fn lob_prefix(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 4);
    k.push(Model::Lob.tag());
    push_escaped(&mut k, key);
    k
}

/// Stored key of a LOB's manifest (size, chunk count, checksum, current version).
pub fn lob_meta_key(key: &[u8]) -> Vec<u8> {
    let mut k = lob_prefix(key);
    k.push(LOB_META);
    k
}

/// Prefix of all chunks of one LOB version.
pub fn lob_version_prefix(key: &[u8], version: u64) -> Vec<u8> {
    let mut k = lob_prefix(key);
    k.push(LOB_CHUNK);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// Stored key of one LOB chunk.
pub fn lob_chunk_key(key: &[u8], version: u64, index: u32) -> Vec<u8> {
    let mut k = lob_version_prefix(key, version);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The first key of a model's range (all of its keys are >= this).
pub fn model_start(model: Model) -> Vec<u8> {
    vec![model.tag()]
}

/// The first key after a model's range (all of its keys are < this).
pub fn model_end(model: Model) -> Vec<u8> {
    vec![model.tag() + 1]
}

/// Smallest key greater than every key starting with `prefix` (None when there is none).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xFF {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

/// A stored key decoded back to what the user wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedKey {
    Kv {
        key: Vec<u8>,
    },
    RowCell {
        row: Vec<u8>,
        column: Vec<u8>,
    },
    LobMeta {
        key: Vec<u8>,
    },
    LobChunk {
        key: Vec<u8>,
        version: u64,
        index: u32,
    },
}

/// Decodes a stored key; None for bytes no encoder here produces.
pub fn decode(stored: &[u8]) -> Option<DecodedKey> {
    let (&tag, rest) = stored.split_first()?;
    match Model::from_tag(tag)? {
        Model::Kv => Some(DecodedKey::Kv { key: rest.to_vec() }),
        Model::Row => {
            let (row, column) = split_escaped(rest)?;
            Some(DecodedKey::RowCell {
                row,
                column: column.to_vec(),
            })
        }
        Model::Lob => {
            let (key, rest) = split_escaped(rest)?;
            match rest {
                [LOB_META] => Some(DecodedKey::LobMeta { key }),
                [LOB_CHUNK, tail @ ..] if tail.len() == 12 => {
                    let version = u64::from_be_bytes(tail[..8].try_into().ok()?);
                    let index = u32::from_be_bytes(tail[8..].try_into().ok()?);
                    Some(DecodedKey::LobChunk {
                        key,
                        version,
                        index,
                    })
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn models_do_not_interleave() {
        assert!(kv_key(&[0xFF; 8]) < row_cell_key(b"", b""));
        assert!(row_cell_key(&[0xFF; 8], &[0xFF]) < lob_meta_key(b""));
        assert!(kv_key(b"") >= model_start(Model::Kv));
        assert!(kv_key(&[0xFF]) < model_end(Model::Kv));
    }

    #[test]
    fn rows_with_nul_bytes_round_trip() {
        let k = row_cell_key(b"a\0b", b"c\0");
        assert_eq!(
            decode(&k),
            Some(DecodedKey::RowCell {
                row: b"a\0b".to_vec(),
                column: b"c\0".to_vec()
            })
        );
    }

    #[test]
    fn lob_keys_round_trip() {
        assert_eq!(
            decode(&lob_chunk_key(b"x/y", 7, 3)),
            Some(DecodedKey::LobChunk {
                key: b"x/y".to_vec(),
                version: 7,
                index: 3
            })
        );
        assert_eq!(
            decode(&lob_meta_key(b"x")),
            Some(DecodedKey::LobMeta { key: b"x".to_vec() })
        );
        assert!(lob_meta_key(b"x") < lob_chunk_key(b"x", 0, 0));
    }

    #[test]
    fn garbage_does_not_decode() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0x09, 1]), None);
        assert_eq!(decode(&[0x02, b'a']), None);
        assert_eq!(decode(&[0x02, 0, 7]), None);
    }

    #[test]
    fn successor_of_prefix() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
    }

    proptest! {
        #[test]
        fn row_order_matches_row_then_column_order(
            r1 in proptest::collection::vec(any::<u8>(), 0..6),
            c1 in proptest::collection::vec(any::<u8>(), 0..4),
            r2 in proptest::collection::vec(any::<u8>(), 0..6),
            c2 in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let a = row_cell_key(&r1, &c1);
            let b = row_cell_key(&r2, &c2);
            prop_assert_eq!(a.cmp(&b), (&r1, &c1).cmp(&(&r2, &c2)));
            prop_assert!(a.starts_with(&row_prefix(&r1)));
            prop_assert_eq!(b.starts_with(&row_prefix(&r1)), r1 == r2);
            prop_assert_eq!(decode(&a), Some(DecodedKey::RowCell { row: r1, column: c1 }));
        }

        #[test]
        fn kv_order_matches_user_order(a in proptest::collection::vec(any::<u8>(), 0..8),
                                       b in proptest::collection::vec(any::<u8>(), 0..8)) {
            prop_assert_eq!(kv_key(&a).cmp(&kv_key(&b)), a.cmp(&b));
        }
    }
}
