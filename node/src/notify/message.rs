//! Wire format of one notification: topic `<namespace>.<kv|row|lob>`, JSON payload.
//!
//! The payload starts from `feed::change_json` (the same event JSON as SSE `/watch`), with one
//! difference the notification contract requires: row `columns` are base64 (column names are bytes),
//! and non-row changes carry no `columns` field.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::storage::events::Change;
use crate::storage::keys::Model;

/// Topic and JSON payload of one change.
pub fn encode(namespace: &str, c: &Change) -> (String, Vec<u8>) {
    let mut v = crate::feed::change_json(namespace, c);
    if let Some(obj) = v.as_object_mut() {
        if c.model == Model::Row {
            let cols: Vec<serde_json::Value> = c
                .columns
                .iter()
                .map(|col| serde_json::Value::String(B64.encode(col)))
                .collect();
            obj.insert("columns".into(), serde_json::Value::Array(cols));
        } else {
            obj.remove("columns");
        }
    }
    let json = serde_json::to_vec(&v).unwrap_or_default();
    (format!("{namespace}.{}", c.model.as_str()), json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::events::ChangeOp;

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
        assert_eq!(v["key"], B64.encode(b"user:1"));
        assert_eq!(v["columns"][0], B64.encode(b"name"));
        assert_eq!(v["columns"][1], B64.encode([0xFF, 0]));
        assert_eq!(v["namespace"], "orders");
        assert_eq!(v["model"], "row");
        assert_eq!(
            (v["lsn"].as_u64(), v["op"].as_str()),
            (Some(7), Some("put"))
        );
        assert_eq!(v["hlc"].as_u64(), Some(9 << 16));
        assert_eq!(v["timestampMs"].as_u64(), Some(9));
        let kv = Change {
            model: Model::Kv,
            columns: vec![],
            ..c
        };
        let (topic, json) = encode("orders", &kv);
        assert_eq!(topic, "orders.kv");
        assert!(!String::from_utf8(json).unwrap().contains("columns"));
    }
}
