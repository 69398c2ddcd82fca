//! Asking a hub for a base backup: `POST /api/v1/{ns}/backups {"target":"objectStore"}` on its
//! client Service. A trait, so reconcile scenarios can answer for the node; [`HttpBackupTrigger`]
//! is the real one. Reading the answer is pure ([`parse_answer`]).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::crd::NamespaceBackup;

/// Why a backup request did not produce a backup.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    /// The node refused (4xx: no archive configured, unknown namespace, ...): asking again will
    /// not help, the UnisonBackup fails.
    #[error("{0}")]
    Refused(String),
    /// The node could not be reached or failed (5xx): asked again later, up to a deadline.
    #[error("{0}")]
    Unavailable(String),
}

/// Takes one namespace's base backup on a hub.
pub trait BackupTrigger: Send + Sync {
    /// `base_url` is the hub's HTTP API, e.g. `http://hub.prod.svc.cluster.local:4000`.
    fn trigger<'a>(
        &'a self,
        base_url: &'a str,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<NamespaceBackup, TriggerError>>;
}

/// The node's answer as a status entry: id, location, the manifest's LSNs and sizes.
pub fn parse_answer(namespace: &str, body: &Value) -> Result<NamespaceBackup, String> {
    let text = |v: &Value, what: &str| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("answer has no {what}: {body}"))
    };
    let num = |v: &Value, what: &str| {
        v.as_u64()
            .ok_or_else(|| format!("answer has no {what}: {body}"))
    };
    let m = &body["manifest"];
    Ok(NamespaceBackup {
        namespace: namespace.to_string(),
        id: text(&body["id"], "id")?,
        location: text(&body["location"], "location")?,
        snapshot_lsn: num(&m["snapshot"]["lsn"], "manifest.snapshot.lsn")?,
        last_lsn: num(&m["wal"]["lastLsn"], "manifest.wal.lastLsn")?,
        size_bytes: num(&m["snapshot"]["bytes"], "manifest.snapshot.bytes")?
            + num(&m["wal"]["bytes"], "manifest.wal.bytes")?,
    })
}

/// The real trigger: one POST per namespace. A base backup of a large namespace takes a while,
/// hence the long timeout.
pub struct HttpBackupTrigger {
    http: reqwest::Client,
}

/// How long one namespace's backup may take before the request counts as failed (and is retried).
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

impl HttpBackupTrigger {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(BACKUP_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        HttpBackupTrigger { http }
    }
}

impl Default for HttpBackupTrigger {
    fn default() -> Self {
        Self::new()
    }
}

impl BackupTrigger for HttpBackupTrigger {
    fn trigger<'a>(
        &'a self,
        base_url: &'a str,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<NamespaceBackup, TriggerError>> {
        Box::pin(async move {
            let url = format!(
                "{}/api/v1/{namespace}/backups",
                base_url.trim_end_matches('/')
            );
            let resp = self
                .http
                .post(&url)
                .json(&serde_json::json!({"target": "objectStore"}))
                .send()
                .await
                .map_err(|e| TriggerError::Unavailable(format!("POST {url}: {e}")))?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let what = format!("POST {url}: {status}: {}", body.trim());
            if status.is_client_error() {
                return Err(TriggerError::Refused(what));
            }
            if !status.is_success() {
                return Err(TriggerError::Unavailable(what));
            }
            let json: Value = serde_json::from_str(&body)
                .map_err(|e| TriggerError::Refused(format!("{what}: not JSON: {e}")))?;
            parse_answer(namespace, &json).map_err(TriggerError::Refused)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answer_gives_lsns_and_the_summed_size() {
        let body = json!({"id": "20260101T000000Z-1", "location": "s3://b/p/orders/base/20260101T000000Z-1/",
            "manifest": {"snapshot": {"lsn": 40, "bytes": 1000}, "wal": {"firstLsn": 41, "lastLsn": 57, "bytes": 24}}});
        let b = parse_answer("orders", &body).expect("parses");
        assert_eq!(
            (b.snapshot_lsn, b.last_lsn, b.size_bytes, b.id.as_str()),
            (40, 57, 1024, "20260101T000000Z-1")
        );
        let e = parse_answer("orders", &json!({"id": "x"})).expect_err("no location");
        assert!(e.contains("location"), "{e}");
    }
}
