//! Wire format of one notification: topic `<namespace>.<kv|row|lob>`, JSON payload.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::storage::events::{Change, ChangeOp};

/// The JSON payload (field order as documented).
#[derive(Debug, serde::Serialize)]
pub struct Payload<'a> {
    pub namespace: &'a str,
    pub model: &'static str,
    pub op: &'static str,
    /// Base64 of the user's key (row key for rows).
    pub key: String,
    pub lsn: u64,
    pub hlc: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

/// Topic and JSON payload of one change.
pub fn encode(namespace: &str, c: &Change) -> (String, Vec<u8>) {
    let model = c.model.as_str();
    let payload = Payload {
        namespace,
        model,
        op: match c.op {
            ChangeOp::Put => "put",
            ChangeOp::Delete => "delete",
        },
        key: B64.encode(&c.key),
        lsn: c.lsn,
        hlc: c.hlc,
        columns: (c.model == crate::storage::keys::Model::Row)
            .then(|| c.columns.iter().map(|col| B64.encode(col)).collect()),
    };
    let json = serde_json::to_vec(&payload).unwrap_or_default();
    (format!("{namespace}.{model}"), json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::keys::Model;

    #[test]
    fn topic_and_payload() {
        let c = Change {
            model: Model::Row,
            op: ChangeOp::Put,
            key: b"user:1".to_vec(),
            columns: vec![b"name".to_vec()],
            lsn: 7,
            hlc: 9,
        };
        let (topic, json) = encode("orders", &c);
        assert_eq!(topic, "orders.row");
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["key"], B64.encode(b"user:1"));
        assert_eq!(v["columns"][0], B64.encode(b"name"));
        assert_eq!(
            (v["lsn"].as_u64(), v["op"].as_str()),
            (Some(7), Some("put"))
        );
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
