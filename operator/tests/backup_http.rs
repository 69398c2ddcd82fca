//! The real backup trigger against a real HTTP server on loopback standing in for the node's
//! `POST /api/v1/{ns}/backups` (node contract in docs/BACKUP.md): the request it sends, and how
//! each kind of answer is classified (backup, refusal, retryable failure, unreachable).

use axum::extract::{Json, Path};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use unisondb_operator::backup::trigger::{BackupTrigger, HttpBackupTrigger, TriggerError};

async fn backups(Path(ns): Path<String>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if body != json!({"target": "objectStore"}) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("bad body {body}")})),
        );
    }
    match ns.as_str() {
        "orders" => (
            StatusCode::OK,
            Json(json!({
                "id": "20260101T000000Z-3",
                "location": "s3://bkp/prod/orders/base/20260101T000000Z-3/",
                "manifest": {"namespace": "orders",
                    "snapshot": {"lsn": 90, "hlc": 1, "entries": 3, "bytes": 4096, "crc32c": 1},
                    "wal": {"firstLsn": 91, "lastLsn": 120, "records": 30, "bytes": 2048, "crc32c": 2},
                    "hlcRange": [1, 2]}
            })),
        ),
        "noarchive" => (
            StatusCode::CONFLICT,
            Json(json!({"error": "no archive configured (archive.enabled is false)"})),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "upload failed: connection reset"})),
        ),
    }
}

async fn node() -> String {
    let app = Router::new().route("/api/v1/{ns}/backups", post(backups));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_http_trigger_posts_the_object_store_target_and_classifies_answers() {
    let base = node().await;
    let t = HttpBackupTrigger::new();
    let b = t.trigger(&base, "orders").await.expect("a backup");
    assert_eq!(b.namespace, "orders");
    assert_eq!(b.id, "20260101T000000Z-3");
    assert_eq!(b.location, "s3://bkp/prod/orders/base/20260101T000000Z-3/");
    assert_eq!((b.snapshot_lsn, b.last_lsn, b.size_bytes), (90, 120, 6144));

    match t.trigger(&format!("{base}/"), "noarchive").await {
        Err(TriggerError::Refused(m)) => {
            assert!(
                m.contains("409") && m.contains("no archive configured"),
                "{m}"
            )
        }
        other => panic!("a 409 is a refusal: {other:?}"),
    }
    match t.trigger(&base, "broken").await {
        Err(TriggerError::Unavailable(m)) => assert!(m.contains("500"), "{m}"),
        other => panic!("a 500 is retried: {other:?}"),
    }
    // nothing listening: retried, not failed
    let port = unisondb_testkit::free_port();
    match t
        .trigger(&format!("http://127.0.0.1:{port}"), "orders")
        .await
    {
        Err(TriggerError::Unavailable(m)) => assert!(m.contains("POST"), "{m}"),
        other => panic!("an unreachable hub is retried: {other:?}"),
    }
}
