//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the request and
//! response types, and built together with the router (`ApiRouter`) so neither can list a route the
//! other lacks.
//!
//! What every route shares is added here once rather than on each handler: path parameters, the error
//! body, 401/503 and the bearer scheme under `/api/`, and `?acks=N` with 504 on every operation whose
//! answer is a committed write (it carries an LSN).
//!
//! `ApiRouter` is the only way routes get into the router: `route` (documented), `not_found_under`
//! (the JSON 404 catch-all) and `route_layer`, so the test below can check the two against each other.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::{any, Route};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tower::{Layer, Service};
use utoipa::openapi::OpenApi;
use utoipa::ToSchema;
use utoipa_axum::router::UtoipaMethodRouter;

use super::error::ApiError;
use super::Shared;

/// Response schemas of committed writes: their operations take `?acks=N` and may answer 504.
const COMMITTING: &[&str] = &["WriteResponse", "LobWriteResponse", "TxnCommitResponse"];

/// Every error answer: `{"error": "..."}`, some with `found: false`.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    error: String,
    found: Option<bool>,
}

/// A router and the OpenAPI description of every route in it.
pub struct ApiRouter {
    router: Router<Shared>,
    doc: OpenApi,
    /// The axum path templates of the documented routes (for the route/document test).
    served: Vec<String>,
    /// Catch-all paths answering 404 (`not_found_under`).
    not_found: Vec<String>,
}

impl Default for ApiRouter {
    fn default() -> Self {
        ApiRouter {
            router: Router::new(),
            doc: OpenApi::default(),
            served: Vec::new(),
            not_found: Vec::new(),
        }
    }
}

impl ApiRouter {
    /// Serves the handlers collected by `utoipa_axum::routes!` at the axum path `at` and documents each
    /// under its own `#[utoipa::path]` (the paths differ where axum needs a wildcard: keys may hold `/`).
    pub fn route(mut self, at: &str, routes: UtoipaMethodRouter<Shared>) -> Self {
        let (schemas, paths, method_router) = routes;
        self.router = self.router.route(at, method_router);
        self.served.push(at.to_string());
        self.document(schemas, paths)
    }

    /// Documents an operation that an already routed handler serves under another documented path
    /// (`DELETE /row/{rowKey}/columns` is the row `DELETE` route with a `/columns` suffix).
    pub fn served_by_earlier_route(self, routes: UtoipaMethodRouter<Shared>) -> Self {
        let (schemas, paths, _) = routes;
        self.document(schemas, paths)
    }

    fn document(
        mut self,
        schemas: Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
        paths: utoipa::openapi::path::Paths,
    ) -> Self {
        self.doc.paths.merge(paths);
        self.doc
            .components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(schemas);
        self
    }

    /// Answers every other path under `prefix` (e.g. `/api/{*rest}`) with the JSON 404, behind the
    /// same route layers as the routes (so unknown API paths still need the bearer token).
    pub fn not_found_under(mut self, prefix: &str) -> Self {
        self.router = self.router.route(prefix, any(not_found));
        self.not_found.push(prefix.to_string());
        self
    }

    /// A middleware around the routes added so far (see `axum::Router::route_layer`).
    pub fn route_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.router = self.router.route_layer(layer);
        self
    }

    pub fn merge(mut self, other: ApiRouter) -> Self {
        self.router = self.router.merge(other.router);
        self.doc.merge(other.doc);
        self.served.extend(other.served);
        self.not_found.extend(other.not_found);
        self
    }

    /// The axum path templates of the documented routes.
    pub fn served(&self) -> &[String] {
        &self.served
    }

    /// The catch-all paths that answer 404.
    pub fn not_found(&self) -> &[String] {
        &self.not_found
    }

    /// The router, with the finished document available to `serve`.
    pub fn into_router(self) -> Router<Shared> {
        let doc = Arc::new(finish(self.doc));
        self.router.layer(Extension(doc))
    }

    /// The finished document (what `GET /api/v1/openapi.json` answers).
    pub fn document_json(&self) -> Value {
        finish(self.doc.clone())
    }
}

/// The JSON 404 of an unknown route.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json",
    responses((status = 200, description = "the OpenAPI document", body = Value)))]
pub async fn serve(Extension(doc): Extension<Arc<Value>>) -> Json<Value> {
    Json(doc.as_ref().clone())
}

/// Adds what the routes share to the generated document (see the module comment).
fn finish(mut doc: OpenApi) -> Value {
    doc.components
        .get_or_insert_with(Default::default)
        .schemas
        .extend([(
            "Error".to_string(),
            <ErrorBody as utoipa::PartialSchema>::schema(),
        )]);
    let mut v = serde_json::to_value(&doc).unwrap_or_else(|_| json!({}));
    v["info"] = json!({
        "title": "UnisonDB HTTP API",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Compatible with UnisonDB's /api/v1, plus scans, SSE change stream, streaming LOBs.",
    });
    v["components"]["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer"}});
    v["security"] = json!([{"bearer": []}]);
    if let Some(paths) = v["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in ops.iter_mut() {
                finish_operation(method, path, op);
            }
        }
    }
    v
}

fn finish_operation(method: &str, path: &str, op: &mut Value) {
    op["operationId"] = json!(format!(
        "{method}{}",
        path.replace(['/', '{', '}', '.'], "_")
    ));
    let api = path.starts_with("/api/");
    let committing = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .and_then(|r| r.rsplit('/').next())
        .is_some_and(|name| COMMITTING.contains(&name));
    let mut params: Vec<Value> = Vec::new();
    for name in path_params(path) {
        let description = if name == "namespace" {
            "namespace name"
        } else if name == "txnId" {
            "transaction id from tx/begin"
        } else {
            "percent-encode '/' as %2F to put it in a key"
        };
        params.push(json!({"name": name, "in": "path", "required": true,
            "schema": {"type": "string"}, "description": description}));
    }
    if let Some(declared) = op["parameters"].as_array() {
        params.extend(declared.iter().cloned());
    }
    if committing {
        for (name, description) in [
            (
                "acks",
                "wait until this many direct replicas applied the write (504 on timeout)",
            ),
            (
                "acks_timeout_ms",
                "how long to wait for acks (default 5000, at most 60000)",
            ),
        ] {
            params.push(json!({"name": name, "in": "query", "required": false,
                "schema": {"type": "integer", "minimum": 0}, "description": description}));
        }
    }
    op["parameters"] = Value::Array(params);
    let responses = op["responses"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut codes: Vec<(String, Value)> = responses.into_iter().collect();
    if api {
        codes.push(("401".into(), json!({})));
        codes.push(("503".into(), json!({})));
    } else {
        op["security"] = json!([]);
    }
    if committing {
        codes.push(("504".into(), json!({})));
    }
    let mut out = Map::new();
    for (code, mut resp) in codes {
        if out.contains_key(&code) {
            continue;
        }
        if !code.starts_with('2') {
            let n: u16 = code.parse().unwrap_or_default();
            if resp["description"].as_str().is_none_or(str::is_empty) {
                resp["description"] = json!(status_text(n));
            }
            resp["content"] = json!({"application/json":
                {"schema": {"$ref": "#/components/schemas/Error"}}});
        }
        out.insert(code, resp);
    }
    let mut sorted: Vec<_> = out.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    op["responses"] = Value::Object(sorted.into_iter().collect());
}

/// The `{name}` parameters of a path template, in order.
fn path_params(path: &str) -> Vec<&str> {
    path.split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(name, _)| name))
        .collect()
}

fn status_text(code: u16) -> &'static str {
    match code {
        400 => "bad request (JSON, base64, parameters)",
        401 => "missing or invalid bearer token (when auth is configured)",
        403 => "write on a read-only relayer or on a namespace mirrored from another hub",
        404 => "unknown namespace, key or transaction (also an aborted or expired one)",
        409 => "transaction already committed",
        413 => "body over the configured limit",
        503 => "node not ready",
        504 => "committed, but fewer replicas than `acks` acknowledged it in time",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::extract::{MatchedPath, Request};
    use axum::http::{Method, StatusCode};
    use axum::middleware::Next;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;
    use crate::http::{router, routes, AppState};

    fn state() -> Shared {
        let shutdown = tokio_util::sync::CancellationToken::new();
        Arc::new(AppState::new(Config::default(), None, shutdown))
    }

    fn concrete(template: &str) -> String {
        template
            .replace("{namespace}", "default")
            .replace("{ns}", "default")
            .replace("{key}", "k")
            .replace("{*key}", "k")
            .replace("{rowKey}", "r")
            .replace("{txnId}", "t")
            .replace("{id}", "t")
    }

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
        out
    }

    /// Every documented operation reaches a handler (not the 404 fallback, not 405), and every route
    /// the router serves is documented with every method it answers (any other method is 405).
    #[tokio::test]
    async fn document_and_router_agree() {
        let st = state();
        let built = routes(&st);
        let served: Vec<String> = built.served().to_vec();
        let built_not_found = built.not_found().to_vec();
        let doc = built.document_json();
        let matched = Arc::new(Mutex::new(None::<String>));
        let m2 = matched.clone();
        let app = router(st).layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let m2 = m2.clone();
                async move {
                    *m2.lock().unwrap() = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(|p| p.as_str().to_string());
                    next.run(req).await
                }
            },
        ));
        let send = |method: Method, uri: String| {
            let app = app.clone();
            async move {
                let req = Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap();
                let resp = app.oneshot(req).await.unwrap();
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let mut documented: BTreeMap<String, BTreeSet<Method>> = BTreeMap::new();
        let ops = operations(&doc);
        assert!(ops.len() >= 28, "{} operations", ops.len());
        for (method, path, op) in ops {
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path} has no summary"
            );
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let uri = concrete(&path);
            let (status, text) = send(m.clone(), uri.clone()).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert!(!text.contains("no such route"), "{method} {uri}: {text}");
            let at = matched.lock().unwrap().take().expect("a matched route");
            assert!(served.contains(&at), "{method} {path} served by {at}");
            documented.entry(at).or_default().insert(m);
        }
        for at in &served {
            let methods = documented
                .get(at)
                .unwrap_or_else(|| panic!("{at} is served but no documented operation reaches it"));
            for m in [
                Method::GET,
                Method::PUT,
                Method::POST,
                Method::DELETE,
                Method::PATCH,
                Method::OPTIONS,
            ] {
                if methods.contains(&m) {
                    continue;
                }
                let (status, text) = send(m.clone(), concrete(at)).await;
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {at} is served but not documented: {text}"
                );
            }
        }
        // And an undocumented path hits the fallback (the only other routes the builder can add).
        assert_eq!(built_not_found, ["/api/{*rest}"]);
        let (status, text) = send(Method::GET, "/api/v1/default/nope".into()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(text.contains("no such route"), "{text}");
    }

    #[test]
    fn committed_writes_document_acks_and_everything_under_api_needs_the_token() {
        let doc = routes(&state()).document_json();
        let names = |op: &Value| -> Vec<String> {
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect()
        };
        let kv = &doc["paths"]["/api/v1/{namespace}/kv/{key}"];
        assert_eq!(
            names(&kv["put"]),
            ["namespace", "key", "acks", "acks_timeout_ms"]
        );
        assert!(kv["put"]["responses"]["504"].is_object());
        assert_eq!(names(&kv["get"]), ["namespace", "key"]);
        assert!(kv["get"]["responses"]["504"].is_null());
        assert!(kv["get"]["responses"]["401"].is_object());
        let commit = &doc["paths"]["/api/v1/{namespace}/tx/{txnId}/commit"]["post"];
        assert!(names(commit).contains(&"acks".to_string()));
        let upload = &doc["paths"]["/api/v1/{namespace}/lob/{key}"]["put"];
        assert!(names(upload).contains(&"acks".to_string()));
        let stage = &doc["paths"]["/api/v1/{namespace}/tx/{txnId}/kv"]["post"];
        assert!(!names(stage).contains(&"acks".to_string()));
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
        assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
        let put = &doc["components"]["schemas"]["KvBatch"]["properties"]["operation"];
        assert!(put.is_object(), "{put}");
    }
}
