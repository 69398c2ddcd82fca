//! Model-level change events decoded from WAL records: the one source for ZeroMQ, SSE and `/watch`.

use super::batch::{self, DecodeError, OpRef};
use super::keys::{self, DecodedKey, Model};

/// Whether a change wrote or removed data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    Put,
    Delete,
}

/// One user-visible change: a KV key, a row (with the columns touched) or a LOB, at an LSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub model: Model,
    pub op: ChangeOp,
    /// The user's key (row key for rows), never the internal encoding.
    pub key: Vec<u8>,
    /// Columns written or deleted (rows only), in order.
    pub columns: Vec<Vec<u8>>,
    pub lsn: u64,
    pub hlc: u64,
}

/// Decodes one WAL record into the changes it makes, in log order; LOB chunks are folded into their LOB.
pub fn changes(lsn: u64, hlc: u64, payload: &[u8]) -> Result<Vec<Change>, DecodeError> {
    let ops = batch::decode(payload)?;
    let mut out: Vec<Change> = Vec::new();
    for op in ops {
        let change_op = match op {
            OpRef::Put { .. } => ChangeOp::Put,
            OpRef::Delete { .. } => ChangeOp::Delete,
        };
        match keys::decode(op.key()) {
            Some(DecodedKey::Kv { key }) => out.push(Change {
                model: Model::Kv,
                op: change_op,
                key,
                columns: Vec::new(),
                lsn,
                hlc,
            }),
            Some(DecodedKey::RowCell { row, column }) => {
                // Consecutive cells of the same row and op form one row event.
                if let Some(last) = out.last_mut() {
                    if last.model == Model::Row && last.op == change_op && last.key == row {
                        last.columns.push(column);
                        continue;
                    }
                }
                out.push(Change {
                    model: Model::Row,
                    op: change_op,
                    key: row,
                    columns: vec![column],
                    lsn,
                    hlc,
                });
            }
            Some(DecodedKey::LobMeta { key }) => out.push(Change {
                model: Model::Lob,
                op: change_op,
                key,
                columns: Vec::new(),
                lsn,
                hlc,
            }),
            Some(DecodedKey::LobChunk { .. }) | None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::{encode, WriteBatch};

    #[test]
    fn groups_row_cells_and_hides_lob_chunks() {
        let mut b = WriteBatch::new();
        b.put(keys::kv_key(b"a"), b"1".to_vec())
            .put(keys::row_cell_key(b"r", b"c1"), b"x".to_vec())
            .put(keys::row_cell_key(b"r", b"c2"), b"y".to_vec())
            .delete(keys::row_cell_key(b"r", b"c3"))
            .put(keys::lob_chunk_key(b"blob", 1, 0), b"data".to_vec())
            .put(keys::lob_meta_key(b"blob"), b"meta".to_vec());
        let ch = changes(5, 9, &encode(&b.ops).unwrap()).unwrap();
        let summary: Vec<_> = ch
            .iter()
            .map(|c| (c.model, c.op, c.key.clone(), c.columns.len()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Model::Kv, ChangeOp::Put, b"a".to_vec(), 0),
                (Model::Row, ChangeOp::Put, b"r".to_vec(), 2),
                (Model::Row, ChangeOp::Delete, b"r".to_vec(), 1),
                (Model::Lob, ChangeOp::Put, b"blob".to_vec(), 0),
            ]
        );
        assert!(ch.iter().all(|c| c.lsn == 5 && c.hlc == 9));
    }
}
