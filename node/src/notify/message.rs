//! Wire format of one notification: topic `<namespace>.<kv|row|lob>`, JSON payload.
//!
//! The payload carries UnisonDB's fields, so its subscribers match unchanged (`key` as text,
//! `namespace`, `operation`, `entry_type`, `seq_num` = our LSN), and ours beside them: `keyB64`
//! (exact key bytes), `lsn`, `hlc`, `timestampMs`, `op`, `model`, and for rows `columns` (base64
//! column names, since names are bytes). docs/NOTIFICATIONS.md documents it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Serialize;

use crate::storage::events::{Change, ChangeOp};
use crate::storage::keys::Model;

/// The payload, serialized straight from borrowed fields (every relayer encodes one per change).
#[derive(Serialize)]
struct Payload<'a> {
    key: std::borrow::Cow<'a, str>,
    namespace: &'a str,
    operation: &'static str,
    entry_type: &'static str,
    seq_num: u64,
    #[serde(rename = "keyB64")]
    key_b64: String,
    lsn: u64,
    hlc: u64,
    #[serde(rename = "timestampMs")]
    timestamp_ms: u64,
    op: &'static str,
    model: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    columns: Option<Vec<String>>,
}

/// Topic and JSON payload of one change.
pub fn encode(namespace: &str, c: &Change) -> (String, Vec<u8>) {
    let operation = match c.op {
        ChangeOp::Put => "put",
        ChangeOp::Delete => "delete",
    };
    let entry_type = c.model.as_str();
    let p = Payload {
        key: String::from_utf8_lossy(&c.key),
        namespace,
        operation,
        entry_type,
        seq_num: c.lsn,
        key_b64: B64.encode(&c.key),
        lsn: c.lsn,
        hlc: c.hlc,
        timestamp_ms: crate::storage::hlc::physical_ms(c.hlc),
        op: operation,
        model: entry_type,
        columns: (c.model == Model::Row)
            .then(|| c.columns.iter().map(|col| B64.encode(col)).collect()),
    };
    let json = serde_json::to_vec(&p).unwrap_or_default();
    (format!("{namespace}.{entry_type}"), json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_and_payload() {
        let c = Change {
            model: Model::Row,
            op: ChangeOp::Put,
            key: b"user:1".to_vec(),
            columns: vec![b"name".to_vec(), vec![0xFF, 0]],
            lsn: 7,
            hlc: 9 << 16,
        };
        let (topic, json) = encode("orders", &c);
        assert_eq!(topic, "orders.row");
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        // UnisonDB's fields, as its subscribers test them.
        assert_eq!(v["key"], "user:1");
        assert_eq!(v["namespace"], "orders");
        assert_eq!(v["operation"], "put");
        assert_eq!(v["entry_type"], "row");
        assert_eq!(v["seq_num"].as_u64(), Some(7));
        // Ours beside them.
        assert_eq!(v["keyB64"], B64.encode(b"user:1"));
        assert_eq!(v["columns"][0], B64.encode(b"name"));
        assert_eq!(v["columns"][1], B64.encode([0xFF, 0]));
        assert_eq!(v["model"], "row");
        assert_eq!(
            (v["lsn"].as_u64(), v["op"].as_str()),
            (Some(7), Some("put"))
        );
        assert_eq!(v["hlc"].as_u64(), Some(9 << 16));
        assert_eq!(v["timestampMs"].as_u64(), Some(9));
        let kv = Change {
            model: Model::Kv,
            op: ChangeOp::Delete,
            key: vec![b'k', 0xFF],
            columns: vec![],
            ..c
        };
        let (topic, json) = encode("orders", &kv);
        assert_eq!(topic, "orders.kv");
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(v.get("columns").is_none());
        assert_eq!(
            (v["operation"].as_str(), v["entry_type"].as_str()),
            (Some("delete"), Some("kv"))
        );
        // A key that is not text: `key` is its lossy text, `keyB64` the exact bytes.
        assert_eq!(v["key"], "k\u{FFFD}");
        assert_eq!(v["keyB64"], B64.encode([b'k', 0xFF]));
    }
}
