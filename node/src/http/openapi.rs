//! The OpenAPI 3 document of the HTTP API, generated from `ROUTES` plus per-route details, so the
//! document cannot list a route the table lacks (a test checks the router answers every entry).

use axum::Json;
use serde_json::{json, Map, Value};

use super::ROUTES;

fn details(
    method: &str,
    path: &str,
) -> (
    &'static str,
    Option<&'static str>,
    &'static [u16],
    &'static [&'static str],
) {
    // (summary, request body schema, extra statuses, query parameters)
    let tail = path.trim_start_matches("/api/v1/{namespace}");
    match (method, tail) {
        ("get", "/healthz") => ("Process is alive; lists namespaces", None, &[], &[]),
        ("get", "/readyz") => (
            "200 once recovered, 503 before or while shutting down",
            None,
            &[503],
            &[],
        ),
        ("get", "/metrics") => ("Prometheus text exposition", None, &[], &[]),
        ("get", "/api/v1/openapi.json") => ("This document", None, &[], &[]),
        ("get", "/kv") => (
            "Ordered KV range/prefix scan with pagination",
            None,
            &[400, 404],
            &["prefix", "start", "end", "after", "limit", "reverse"],
        ),
        ("get", "/kv/{key}") => (
            "Read a value (404 with found=false when missing)",
            None,
            &[404],
            &[],
        ),
        ("put", "/kv/{key}") => ("Write a value", Some("KvPut"), &[400, 403, 404, 413], &[]),
        ("delete", "/kv/{key}") => ("Delete a key", None, &[403, 404], &[]),
        ("post", "/kv/batch") => (
            "Atomic batch of puts or deletes",
            Some("KvBatch"),
            &[400, 403, 404, 413],
            &[],
        ),
        ("get", "/row") => (
            "Ordered row scan (limit counts rows)",
            None,
            &[400, 404],
            &[
                "prefix", "start", "end", "after", "limit", "reverse", "columns",
            ],
        ),
        ("get", "/row/{rowKey}") => (
            "Read a row, optionally only some columns",
            None,
            &[404],
            &["columns"],
        ),
        ("put", "/row/{rowKey}") => (
            "Merge columns into a row",
            Some("RowPut"),
            &[400, 403, 404, 413],
            &[],
        ),
        ("delete", "/row/{rowKey}") => ("Delete a whole row", None, &[403, 404], &[]),
        ("delete", "/row/{rowKey}/columns") => (
            "Delete named columns",
            Some("ColumnNames"),
            &[400, 403, 404],
            &[],
        ),
        ("post", "/row/batch") => (
            "Atomic batch of row upserts or deletes",
            Some("RowBatch"),
            &[400, 403, 404, 413],
            &[],
        ),
        ("get", "/lob/{key}") => (
            "Stream a large object (raw bytes, CRC32C verified)",
            None,
            &[404],
            &[],
        ),
        ("put", "/lob/{key}") => (
            "Stream a large object in (raw body, no 1 MiB cap)",
            Some("Binary"),
            &[403, 404, 413],
            &[],
        ),
        ("delete", "/lob/{key}") => ("Delete a large object", None, &[403, 404], &[]),
        ("post", "/tx/begin") => (
            "Begin a transaction",
            Some("TxnBegin"),
            &[400, 403, 404],
            &[],
        ),
        ("post", "/tx/{txnId}/kv") => (
            "Stage a KV put/delete",
            Some("TxnKv"),
            &[400, 403, 404, 409, 410, 413],
            &[],
        ),
        ("post", "/tx/{txnId}/row") => (
            "Stage a row upsert/delete",
            Some("TxnRow"),
            &[400, 403, 404, 409, 410, 413],
            &[],
        ),
        ("post", "/tx/{txnId}/lob") => (
            "Append raw body to a staged large object",
            Some("Binary"),
            &[400, 403, 404, 409, 410, 413],
            &["key", "operation"],
        ),
        ("post", "/tx/{txnId}/commit") => (
            "Commit atomically (one LSN)",
            None,
            &[403, 404, 409, 410],
            &[],
        ),
        ("post", "/tx/{txnId}/abort") => ("Abort and discard", None, &[404, 409, 410], &[]),
        ("get", "/stats") => ("Namespace statistics", None, &[404], &[]),
        ("get", "/offset") => ("Latest LSN", None, &[404], &[]),
        ("get", "/checkpoint") => ("LSN reflected in the B+Tree", None, &[404], &[]),
        ("get", "/watch") => (
            "Server-sent change events (id = LSN)",
            None,
            &[400, 404],
            &["models", "prefix", "from_lsn"],
        ),
        _ => ("", None, &[], &[]),
    }
}

fn schemas() -> Value {
    let b64 = json!({"type": "string", "format": "byte"});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "found": {"type": "boolean"}}},
        "KvPut": {"type": "object", "required": ["value"], "properties": {"value": b64}},
        "KvBatch": {"type": "object", "required": ["operation"], "properties": {
            "operation": {"type": "string", "enum": ["put", "delete"]},
            "items": {"type": "array", "items": {"type": "object", "properties": {"key": {"type": "string"}, "value": b64}}},
            "keys": {"type": "array", "items": {"type": "string"}}}},
        "RowPut": {"type": "object", "required": ["columns"], "properties": {"columns": {"type": "object", "additionalProperties": b64}}},
        "ColumnNames": {"type": "object", "required": ["columns"], "properties": {"columns": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "string"}}]}}},
        "RowBatch": {"type": "object", "required": ["operation", "rows"], "properties": {
            "operation": {"type": "string", "enum": ["put", "delete"]},
            "rows": {"type": "array", "items": {"type": "object", "properties": {"rowKey": {"type": "string"}, "columns": {"type": "object"}}}}}},
        "TxnBegin": {"type": "object", "properties": {"operation": {"type": "string", "enum": ["put", "delete"]}, "entryType": {"type": "string", "enum": ["kv", "row", "lob"]}}},
        "TxnKv": {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}, "value": b64, "operation": {"type": "string"}}},
        "TxnRow": {"type": "object", "required": ["rowKey"], "properties": {"rowKey": {"type": "string"}, "columns": {"type": "object"}, "operation": {"type": "string"}}},
        "Binary": {"type": "string", "format": "binary"},
    })
}

/// Builds the document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path) in ROUTES {
        let (summary, body, statuses, query) = details(method, path);
        let mut params: Vec<Value> = Vec::new();
        for name in ["namespace", "key", "rowKey", "txnId"] {
            if path.contains(&format!("{{{name}}}")) {
                params.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"},
                    "description": if name == "namespace" { "namespace name" } else { "percent-encode '/' as %2F to put it in a key" }}));
            }
        }
        // Writes that commit may wait for replica acknowledgements (`?acks=N`, 504 on timeout).
        let commits = statuses.contains(&403)
            && (*method != "post" || path.ends_with("/batch") || path.ends_with("/commit"));
        let ack_params: &[&str] = if commits {
            &["acks", "acks_timeout_ms"]
        } else {
            &[]
        };
        for q in query.iter().chain(ack_params) {
            let schema = match *q {
                "limit" | "from_lsn" | "acks" | "acks_timeout_ms" => {
                    json!({"type": "integer", "minimum": 0})
                }
                "reverse" => json!({"type": "boolean"}),
                _ => json!({"type": "string"}),
            };
            params
                .push(json!({"name": q, "in": "query", "required": *q == "key", "schema": schema}));
        }
        let mut responses = Map::new();
        let ok = if path.ends_with("/watch") {
            json!({"description": "event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}})
        } else if path.contains("/lob/") && *method == "get" {
            json!({"description": "object bytes", "content": {"application/octet-stream": {"schema": {"$ref": "#/components/schemas/Binary"}}}})
        } else if *path == "/metrics" {
            json!({"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}})
        } else {
            json!({"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}})
        };
        responses.insert("200".into(), ok);
        let auth = path.starts_with("/api/");
        let mut codes: Vec<u16> = statuses.to_vec();
        if auth {
            codes.extend([401, 503]);
        }
        if commits {
            codes.push(504);
        }
        codes.sort_unstable();
        codes.dedup();
        for code in codes {
            responses.insert(code.to_string(), json!({"description": status_text(code),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}));
        }
        let mut op = json!({
            "summary": summary,
            "operationId": format!("{method}{}", path.replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "responses": responses,
        });
        if let Some(schema) = body {
            let ct = if schema == "Binary" {
                "application/octet-stream"
            } else {
                "application/json"
            };
            op["requestBody"] = json!({"required": schema != "TxnBegin",
                "content": {ct: {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
        }
        if !auth {
            op["security"] = json!([]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "UnisonDB HTTP API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Compatible with UnisonDB's /api/v1, plus scans, SSE change stream, streaming LOBs."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    })
}

fn status_text(code: u16) -> &'static str {
    match code {
        400 => "bad request (JSON, base64, parameters)",
        401 => "missing or invalid bearer token (when auth is configured)",
        403 => "write on a read-only relayer or on a namespace mirrored from another hub",
        504 => "committed, but fewer replicas than `acks` acknowledged it in time",
        404 => "unknown namespace, key or transaction",
        409 => "transaction already committed",
        410 => "transaction aborted or expired",
        413 => "body over the configured limit",
        503 => "node not ready",
        _ => "error",
    }
}

pub async fn serve() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::http::{router, AppState};
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use tower::ServiceExt;

    #[test]
    fn document_lists_exactly_the_route_table() {
        let doc = document();
        let mut listed = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(
                    !op["summary"].as_str().unwrap().is_empty(),
                    "{method} {path} has no summary"
                );
                listed.insert((method.clone(), path.clone()));
            }
        }
        let table: BTreeSet<_> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(listed, table);
    }

    /// Every documented route reaches a handler: not the router's 404 fallback, not 405.
    #[tokio::test]
    async fn router_serves_every_documented_route() {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let app = router(Arc::new(AppState::new(Config::default(), None, shutdown)));
        for (method, path) in ROUTES {
            let uri = path
                .replace("{namespace}", "default")
                .replace("{key}", "k")
                .replace("{rowKey}", "r")
                .replace("{txnId}", "t");
            let req = Request::builder()
                .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&body);
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert!(!text.contains("no such route"), "{method} {uri}: {text}");
        }
        // And an undocumented one does hit the fallback.
        let resp = app
            .oneshot(
                Request::builder()
                    .uri("/api/v1/default/nope")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
