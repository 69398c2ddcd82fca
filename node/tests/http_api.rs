//! The HTTP API against the real binary: every route, every error status, scans, transactions, SSE.

mod common;

use std::time::Duration;

use common::{b64, unb64, Server};
use futures::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

async fn j(r: reqwest::Response) -> (StatusCode, Value) {
    let s = r.status();
    let t = r.text().await.unwrap();
    let v = serde_json::from_str(&t).unwrap_or_else(|_| panic!("non-JSON body ({s}): {t:?}"));
    (s, v)
}

#[tokio::test]
async fn kv_routes_and_slash_keys() {
    let s = Server::start("").await;
    let c = Client::new();
    let (st, v) = j(c
        .put(s.url("/api/v1/default/kv/hello"))
        .json(&json!({"value": b64(b"world")}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["success"], true);
    let (st, v) = j(c
        .get(s.url("/api/v1/default/kv/hello"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!((st, v["found"].clone()), (StatusCode::OK, json!(true)));
    assert_eq!(unb64(v["value"].as_str().unwrap()), b"world");
    // Miss: 404 with found=false (UnisonDB answers 200 here).
    let (st, v) = j(c
        .get(s.url("/api/v1/default/kv/nope"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 404);
    assert_eq!(v["found"], false);
    assert!(v["error"].is_string());
    // Keys with '/': encoded and unencoded address the same key.
    c.put(s.url("/api/v1/default/kv/a%2Fb"))
        .json(&json!({"value": b64(b"slash")}))
        .send()
        .await
        .unwrap();
    let (st, v) = j(c.get(s.url("/api/v1/default/kv/a/b")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(unb64(v["value"].as_str().unwrap()), b"slash");
    // A key named "batch" is still addressable with PUT/GET.
    let (st, _) = j(c
        .put(s.url("/api/v1/default/kv/batch"))
        .json(&json!({"value": b64(b"b")}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 200);
    // Delete.
    let (st, _) = j(c
        .delete(s.url("/api/v1/default/kv/hello"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        c.get(s.url("/api/v1/default/kv/hello"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Batch put then delete, atomic.
    let items: Vec<Value> = (0..5)
        .map(|i| json!({"key": format!("b{i}"), "value": b64(format!("v{i}").as_bytes())}))
        .collect();
    let (st, v) = j(c
        .post(s.url("/api/v1/default/kv/batch"))
        .json(&json!({"operation": "put", "items": items}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!((st, v["count"].clone()), (StatusCode::OK, json!(5)));
    let (st, _) = j(c
        .post(s.url("/api/v1/default/kv/batch"))
        .json(&json!({"operation": "delete", "keys": ["b0", "b1"]}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        c.get(s.url("/api/v1/default/kv/b0"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(s.url("/api/v1/default/kv/b2"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A batch with one bad item writes nothing.
    let (st, _) = j(c.post(s.url("/api/v1/default/kv/batch")).json(&json!({"operation": "put", "items": [{"key": "ok1", "value": b64(b"1")}, {"key": "bad", "value": "***"}]})).send().await.unwrap()).await;
    assert_eq!(st, 400);
    assert_eq!(
        c.get(s.url("/api/v1/default/kv/ok1"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // POST on a plain key is 405.
    assert_eq!(
        c.post(s.url("/api/v1/default/kv/other"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    // Stats/offset/checkpoint.
    let (st, v) = j(c.get(s.url("/api/v1/default/stats")).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(v["namespace"], "default");
    assert!(v["lsn"].as_u64().unwrap() >= 5);
    let (_, v) = j(c.get(s.url("/api/v1/default/offset")).send().await.unwrap()).await;
    assert!(v["lsn"].as_u64().unwrap() >= 5);
    let (st, v) = j(c
        .get(s.url("/api/v1/default/checkpoint"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 200);
    assert!(v["checkpointLsn"].is_u64());
}

#[tokio::test]
async fn row_routes() {
    let s = Server::start("").await;
    let c = Client::new();
    let put = |row: &str, cols: Value| {
        c.put(s.url(&format!("/api/v1/default/row/{row}")))
            .json(&json!({"columns": cols}))
            .send()
    };
    assert_eq!(
        put("user1", json!({"name": b64(b"ada"), "age": b64(b"36")}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        put("user1", json!({"age": b64(b"37"), "city": b64(b"london")}))
            .await
            .unwrap()
            .status(),
        200
    );
    let (st, v) = j(c
        .get(s.url("/api/v1/default/row/user1"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["found"], true);
    let cols = v["columns"].as_object().unwrap();
    assert_eq!(cols.len(), 3);
    assert_eq!(unb64(cols["age"].as_str().unwrap()), b"37");
    let (_, v) = j(c
        .get(s.url("/api/v1/default/row/user1?columns=name,missing"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(v["columns"].as_object().unwrap().len(), 1);
    // Delete named columns (UnisonDB shape: an object whose keys name the columns).
    let (st, _) = j(c
        .delete(s.url("/api/v1/default/row/user1/columns"))
        .json(&json!({"columns": {"age": null}}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 200);
    let (_, v) = j(c
        .get(s.url("/api/v1/default/row/user1"))
        .send()
        .await
        .unwrap())
    .await;
    assert!(v["columns"].get("age").is_none());
    // A row key ending in "/columns" is reachable percent-encoded.
    assert_eq!(
        put("x%2Fcolumns", json!({"c": b64(b"1")}))
            .await
            .unwrap()
            .status(),
        200
    );
    let (st, _) = j(c
        .delete(s.url("/api/v1/default/row/x%2Fcolumns"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        c.get(s.url("/api/v1/default/row/x%2Fcolumns"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Delete row.
    let (st, _) = j(c
        .delete(s.url("/api/v1/default/row/user1"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 200);
    let (st, v) = j(c
        .get(s.url("/api/v1/default/row/user1"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(
        (st, v["found"].clone()),
        (StatusCode::NOT_FOUND, json!(false))
    );
    // Batch.
    let rows: Vec<Value> = (0..3)
        .map(|i| json!({"rowKey": format!("r{i}"), "columns": {"a": b64(b"1"), "b": b64(b"2")}}))
        .collect();
    let (st, v) = j(c
        .post(s.url("/api/v1/default/row/batch"))
        .json(&json!({"operation": "put", "rows": rows}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!((st, v["count"].clone()), (StatusCode::OK, json!(3)));
    let (st, _) = j(c.post(s.url("/api/v1/default/row/batch")).json(&json!({"operation": "delete", "rows": [{"rowKey": "r0"}, {"rowKey": "r1", "columns": ["a"]}]})).send().await.unwrap()).await;
    assert_eq!(st, 200);
    assert_eq!(
        c.get(s.url("/api/v1/default/row/r0"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let (_, v) = j(c.get(s.url("/api/v1/default/row/r1")).send().await.unwrap()).await;
    assert_eq!(
        v["columns"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["b"]
    );
}

#[tokio::test]
async fn scans_paginate_in_order() {
    let s = Server::start("").await;
    let c = Client::new();
    let items: Vec<Value> = (0..25)
        .map(|i| json!({"key": format!("k/{i:03}"), "value": b64(b"v")}))
        .collect();
    c.post(s.url("/api/v1/default/kv/batch"))
        .json(&json!({"operation": "put", "items": items}))
        .send()
        .await
        .unwrap();
    c.put(s.url("/api/v1/default/kv/other"))
        .json(&json!({"value": b64(b"x")}))
        .send()
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let mut req = c
            .get(s.url("/api/v1/default/kv"))
            .query(&[("prefix", "k/"), ("limit", "10")]);
        if let Some(a) = &after {
            req = req.query(&[("after", a.as_str())]);
        }
        let (st, v) = j(req.send().await.unwrap()).await;
        assert_eq!(st, 200, "{v}");
        for it in v["items"].as_array().unwrap() {
            seen.push(it["key"].as_str().unwrap().to_string());
        }
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("k/{i:03}")).collect();
    assert_eq!(seen, want);
    // Reverse with a range.
    let (_, v) = j(c
        .get(s.url("/api/v1/default/kv?start=k/010&end=k/015&reverse=true"))
        .send()
        .await
        .unwrap())
    .await;
    let keys: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["k/014", "k/013", "k/012", "k/011", "k/010"]);
    // Rows: limit counts rows, not cells.
    let rows: Vec<Value> = (0..5).map(|i| json!({"rowKey": format!("row{i}"), "columns": {"a": b64(b"1"), "b": b64(b"2"), "c": b64(b"3")}})).collect();
    c.post(s.url("/api/v1/default/row/batch"))
        .json(&json!({"operation": "put", "rows": rows}))
        .send()
        .await
        .unwrap();
    let (st, v) = j(c
        .get(s.url("/api/v1/default/row?prefix=row&limit=2"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 200);
    let r = v["rows"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["columns"].as_object().unwrap().len(), 3);
    assert_eq!(v["next"], "row1");
    let (_, v) = j(c
        .get(s.url("/api/v1/default/row?prefix=row&limit=10&after=row1&columns=b"))
        .send()
        .await
        .unwrap())
    .await;
    let r = v["rows"].as_array().unwrap();
    assert_eq!(
        r.iter()
            .map(|x| x["rowKey"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["row2", "row3", "row4"]
    );
    assert_eq!(r[0]["columns"].as_object().unwrap().len(), 1);
    assert!(v["next"].is_null());
    // Bad scan parameters.
    assert_eq!(
        c.get(s.url("/api/v1/default/kv?limit=abc"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.get(s.url("/api/v1/default/kv?limit=5000"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        c.get(s.url("/api/v1/default/kv?bogus=1"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}

#[tokio::test]
async fn bad_input_matrix_gets_4xx_and_server_survives() {
    let s = Server::start("http:\n  max_body_bytes: 65536\n  lob_max_bytes: 1048576\n").await;
    let c = Client::new();
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            c.put(s.url("/api/v1/default/kv/k"))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
        ),
        (
            c.put(s.url("/api/v1/default/kv/k"))
                .json(&json!({"value": "@@not base64@@"})),
            400,
        ),
        (
            c.put(s.url("/api/v1/default/kv/k"))
                .json(&json!({"wrong": "field"})),
            400,
        ),
        (c.put(s.url("/api/v1/default/kv/k")).body(""), 400),
        (
            c.put(s.url("/api/v1/default/kv/k"))
                .json(&json!({"value": b64(&vec![0u8; 100_000])})),
            413,
        ),
        (
            c.put(s.url("/api/v1/default/kv/k"))
                .json(&json!({"value": b64(&vec![1u8; 70_000])})),
            413,
        ),
        (
            c.put(s.url("/api/v1/default/row/r"))
                .json(&json!({"columns": {"a": "!!"}})),
            400,
        ),
        (
            c.put(s.url("/api/v1/default/row/r"))
                .json(&json!({"columns": {}})),
            400,
        ),
        (
            c.put(s.url(&format!("/api/v1/default/kv/{}", "k".repeat(600))))
                .json(&json!({"value": b64(b"1")})),
            400,
        ),
        (c.get(s.url("/api/v1/nosuchns/kv/k")), 404),
        (
            c.put(s.url("/api/v1/nosuchns/kv/k"))
                .json(&json!({"value": b64(b"1")})),
            404,
        ),
        (c.get(s.url("/api/v1/default/kv/%FF%FE")), 400),
        (c.get(s.url("/api/v1/%FF/kv/k")), 400),
        (c.get(s.url("/api/v1/default/nothing")), 404),
        (c.post(s.url("/api/v1/default/tx/deadbeef/commit")), 404),
        (
            c.post(s.url("/api/v1/default/tx/deadbeef/kv"))
                .json(&json!({"key": "a", "value": b64(b"1")})),
            404,
        ),
        (
            c.post(s.url("/api/v1/default/kv/batch"))
                .json(&json!({"operation": "merge", "items": []})),
            400,
        ),
        (
            c.post(s.url("/api/v1/default/kv/batch"))
                .json(&json!({"operation": "put", "items": []})),
            400,
        ),
        (
            c.put(s.url("/api/v1/default/lob/big"))
                .body(vec![0u8; 2 << 20]),
            413,
        ),
        (c.get(s.url("/api/v1/default/lob/missing")), 404),
        (c.delete(s.url("/api/v1/default/lob/missing")), 404),
        (c.get(s.url("/api/v1/default/watch?models=bogus")), 400),
        (c.patch(s.url("/api/v1/default/kv/k")), 405),
    ];
    for (i, (req, want)) in cases.into_iter().enumerate() {
        // Each case on a fresh connection: the server closes connections whose body it refused (413
        // answered before reading the body), and the client may then see a reset while still sending.
        let (client, req) = req.build_split();
        let req = req.unwrap();
        drop(client);
        let r = match Client::new().execute(req).await {
            Ok(r) => r,
            Err(e) if want == 413 => {
                eprintln!("case {i}: connection closed while sending the oversized body: {e}");
                continue;
            }
            Err(e) => panic!("case {i}: {e}"),
        };
        let st = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(st, want, "case {i}: {body}");
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("case {i}: non-JSON error {body:?}"));
        assert!(v["error"].is_string(), "case {i}: {body}");
    }
    // A chunked LOB upload without Content-Length is cut at the limit too.
    let stream =
        futures::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![7u8; 64 << 10])));
    let r = c
        .put(s.url("/api/v1/default/lob/chunked"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    // Huge headers: refused (431) or the connection is closed; never a crash.
    let r = c
        .get(s.url("/healthz"))
        .header("x-big", "a".repeat(1 << 20))
        .send()
        .await;
    if let Ok(r) = r {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    // Still serving (a fresh client: the server rightly closed the connections it refused).
    let c = Client::new();
    let (st, v) = j(c
        .put(s.url("/api/v1/default/kv/k"))
        .json(&json!({"value": b64(b"fine")}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

#[tokio::test]
async fn relayer_is_read_only() {
    let s = Server::start("server:\n  mode: relayer\n").await;
    let c = Client::new();
    for req in [
        c.put(s.url("/api/v1/default/kv/k"))
            .json(&json!({"value": b64(b"1")})),
        c.delete(s.url("/api/v1/default/kv/k")),
        c.put(s.url("/api/v1/default/row/r"))
            .json(&json!({"columns": {"a": b64(b"1")}})),
        c.put(s.url("/api/v1/default/lob/l")).body("x"),
        c.post(s.url("/api/v1/default/tx/begin")),
        c.post(s.url("/api/v1/default/kv/batch"))
            .json(&json!({"operation": "delete", "keys": ["a"]})),
    ] {
        let (st, _) = j(req.send().await.unwrap()).await;
        assert_eq!(st, 403);
    }
    assert_eq!(
        c.get(s.url("/api/v1/default/kv/k"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn transactions_commit_abort_and_expire() {
    let s = Server::start("http:\n  txn_idle_timeout_secs: 1\n").await;
    let c = Client::new();
    let begin = || async {
        let (st, v) = j(c
            .post(s.url("/api/v1/default/tx/begin"))
            .json(&json!({"operation": "put", "entryType": "kv"}))
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!(st, 200, "{v}");
        v["txnId"].as_str().unwrap().to_string()
    };
    let id = begin().await;
    let tx = |p: &str| s.url(&format!("/api/v1/default/tx/{id}/{p}"));
    assert_eq!(
        c.post(tx("kv"))
            .json(&json!({"key": "t1", "value": b64(b"a")}))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.post(tx("row"))
            .json(&json!({"rowKey": "tr", "columns": {"c": b64(b"x")}}))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.post(tx("lob") + "?key=tl")
            .body(vec![5u8; 300_000])
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.post(tx("lob") + "?key=tl")
            .body(vec![6u8; 1000])
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Not visible before commit.
    assert_eq!(
        c.get(s.url("/api/v1/default/kv/t1"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(s.url("/api/v1/default/lob/tl"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let (st, v) = j(c.post(tx("commit")).send().await.unwrap()).await;
    assert_eq!(st, 200, "{v}");
    let mut want = vec![5u8; 300_000];
    want.extend(vec![6u8; 1000]);
    assert_eq!(
        v["checksum"].as_u64().unwrap() as u32,
        crc32fast::hash(&want)
    );
    assert_eq!(
        c.get(s.url("/api/v1/default/kv/t1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(s.url("/api/v1/default/row/tr"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let lob = c
        .get(s.url("/api/v1/default/lob/tl"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(lob.as_ref(), want.as_slice());
    // Committed: 409.
    assert_eq!(c.post(tx("commit")).send().await.unwrap().status(), 409);
    assert_eq!(
        c.post(tx("kv"))
            .json(&json!({"key": "x", "value": b64(b"1")}))
            .send()
            .await
            .unwrap()
            .status(),
        409
    );
    // Abort: discarded, then 404 as UnisonDB (it forgets aborted transactions).
    let id2 = begin().await;
    let tx2 = |p: &str| s.url(&format!("/api/v1/default/tx/{id2}/{p}"));
    c.post(tx2("kv"))
        .json(&json!({"key": "t2", "value": b64(b"a")}))
        .send()
        .await
        .unwrap();
    assert_eq!(c.post(tx2("abort")).send().await.unwrap().status(), 200);
    let (st, v) = j(c.post(tx2("commit")).send().await.unwrap()).await;
    assert_eq!(st, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("aborted"), "{v}");
    assert_eq!(
        c.get(s.url("/api/v1/default/kv/t2"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Delete-typed transaction: ops default to delete.
    let (_, v) = j(c
        .post(s.url("/api/v1/default/tx/begin"))
        .json(&json!({"operation": "delete", "entryType": "kv"}))
        .send()
        .await
        .unwrap())
    .await;
    let id4 = v["txnId"].as_str().unwrap().to_string();
    c.post(s.url(&format!("/api/v1/default/tx/{id4}/kv")))
        .json(&json!({"key": "t1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.post(s.url(&format!("/api/v1/default/tx/{id4}/commit")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(s.url("/api/v1/default/kv/t1"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // Idle timeout: reaped, then 404 with the reason.
    let id3 = begin().await;
    c.post(s.url(&format!("/api/v1/default/tx/{id3}/kv")))
        .json(&json!({"key": "t3", "value": b64(b"a")}))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (st, v) = j(c
        .post(s.url(&format!("/api/v1/default/tx/{id3}/commit")))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(
        c.get(s.url("/api/v1/default/kv/t3"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // A transaction id is bound to its namespace.
    let s2 = Server::start("server:\n  namespaces: [a, b]\n").await;
    let (_, v) = j(c.post(s2.url("/api/v1/a/tx/begin")).send().await.unwrap()).await;
    let ida = v["txnId"].as_str().unwrap().to_string();
    assert_eq!(
        c.post(s2.url(&format!("/api/v1/b/tx/{ida}/commit")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.post(s2.url(&format!("/api/v1/a/tx/{ida}/commit")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Reads SSE `data:` payloads of `event: change` until `n` arrive (bounded by a timeout).
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<Value> {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events in time")
            .expect("stream open")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(pos) = buf.find("\n\n") {
            let ev: String = buf[..pos].to_string();
            buf.drain(..pos + 2);
            if ev.lines().any(|l| l == "event: change") {
                let data = ev
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect::<String>();
                out.push(serde_json::from_str(&data).unwrap());
            }
        }
    }
    out
}

#[tokio::test]
async fn sse_watch_delivers_changes_in_order() {
    let s = Server::start("").await;
    let c = Client::new();
    c.put(s.url("/api/v1/default/kv/before"))
        .json(&json!({"value": b64(b"0")}))
        .send()
        .await
        .unwrap();
    let resp = c
        .get(s.url("/api/v1/default/watch?models=kv,row&prefix=w"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let writer = {
        let c = c.clone();
        let base = s.url("/api/v1/default");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for i in 0..5 {
                c.put(format!("{base}/kv/w{i}"))
                    .json(&json!({"value": b64(b"v")}))
                    .send()
                    .await
                    .unwrap();
            }
            c.put(format!("{base}/kv/ignored"))
                .json(&json!({"value": b64(b"v")}))
                .send()
                .await
                .unwrap();
            c.put(format!("{base}/row/wrow"))
                .json(&json!({"columns": {"c1": b64(b"1"), "c2": b64(b"2")}}))
                .send()
                .await
                .unwrap();
            c.delete(format!("{base}/kv/w0")).send().await.unwrap();
        })
    };
    let evs = read_events(resp, 7).await;
    writer.await.unwrap();
    let summary: Vec<(String, String, Vec<u8>)> = evs
        .iter()
        .map(|e| {
            (
                e["model"].as_str().unwrap().into(),
                e["op"].as_str().unwrap().into(),
                unb64(e["key"].as_str().unwrap()),
            )
        })
        .collect();
    let mut want: Vec<(String, String, Vec<u8>)> = (0..5)
        .map(|i| ("kv".into(), "put".into(), format!("w{i}").into_bytes()))
        .collect();
    want.push(("row".into(), "put".into(), b"wrow".to_vec()));
    want.push(("kv".into(), "delete".into(), b"w0".to_vec()));
    assert_eq!(summary, want);
    let lsns: Vec<u64> = evs.iter().map(|e| e["lsn"].as_u64().unwrap()).collect();
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{lsns:?}");
    assert_eq!(evs[5]["columns"], json!(["c1", "c2"]));
    assert_eq!(evs[0]["namespace"], "default");
    // Replay from an LSN includes history.
    let resp = c
        .get(s.url("/api/v1/default/watch?models=kv&from_lsn=1"))
        .send()
        .await
        .unwrap();
    let evs = read_events(resp, 1).await;
    assert_eq!(unb64(evs[0]["key"].as_str().unwrap()), b"before");
}

#[tokio::test]
async fn metrics_parse_as_prometheus_and_health() {
    let s = Server::start("").await;
    let c = Client::new();
    c.put(s.url("/api/v1/default/kv/m"))
        .json(&json!({"value": b64(b"1")}))
        .send()
        .await
        .unwrap();
    c.get(s.url("/api/v1/default/kv/m")).send().await.unwrap();
    let (st, v) = j(c.get(s.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(
        (st, v["status"].clone(), v["namespaces"].clone()),
        (StatusCode::OK, json!("ok"), json!(["default"]))
    );
    assert_eq!(c.get(s.url("/readyz")).send().await.unwrap().status(), 200);
    let text = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let parts: Vec<&str> = rest.trim().splitn(3, ' ').collect();
            assert!(matches!(parts[0], "HELP" | "TYPE"), "bad comment {line:?}");
            if parts[0] == "TYPE" {
                assert!(
                    matches!(
                        parts[2],
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ),
                    "{line:?}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || matches!(value, "+Inf" | "-Inf" | "NaN"),
            "{line:?}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line:?}");
                for pair in labels[1..labels.len() - 1]
                    .split("\",")
                    .filter(|p| !p.is_empty())
                {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line:?}"
                    );
                    assert!(v.starts_with('"'), "{line:?}");
                }
            }
        }
        names.insert(name.to_string());
    }
    for want in [
        "unisondb_http_requests_total",
        "unisondb_http_request_duration_seconds_bucket",
        "unisondb_lsn",
        "unisondb_memtable_bytes",
        "unisondb_btree_pages",
        "unisondb_open_transactions",
        "unisondb_wal_appends_total",
    ] {
        assert!(names.contains(want), "{want} missing from:\n{text}");
    }
    // Route templates, not raw keys, in labels.
    assert!(text.contains("route=\"/api/v1/{ns}/kv/{*key}\""), "{text}");
    assert!(!text.contains("/kv/m\""));
    assert!(text.contains("unisondb_lsn{namespace=\"default\"}"));
}

#[tokio::test]
async fn openapi_document_is_served() {
    let s = Server::start("").await;
    let (st, v) = j(Client::new()
        .get(s.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(st, 200);
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/v1/{namespace}/kv/{key}",
        "/api/v1/{namespace}/watch",
        "/api/v1/{namespace}/tx/{txnId}/commit",
    ] {
        assert!(v["paths"].get(p).is_some(), "{p}");
    }
}

#[tokio::test]
async fn bearer_token_guards_api_only() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let s = Server::start(&format!(
        "http:\n  auth_token_file: {}\n",
        token_file.display()
    ))
    .await;
    let c = Client::new();
    let r = c.get(s.url("/api/v1/default/kv/a")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        c.get(s.url("/api/v1/default/kv/a"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(s.url("/api/v1/default/kv/a"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(s.url("/metrics")).send().await.unwrap().status(), 200);
}
