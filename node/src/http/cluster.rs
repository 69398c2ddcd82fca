//! Cluster mode over HTTP: writes reach the leader, linearizable reads, `/status/leader|peers`.
//!
//! A write (`POST`/`PUT`/`DELETE`/`PATCH` under `/api/v1/{ns}/kv|row|lob|tx`) arriving at a
//! follower is proxied to the leader's HTTP address (learned from the Raft RPCs) and the leader's
//! answer is returned as it is, so clients behind any Service need no change. Without a leader the
//! answer is 503 with `Retry-After: 1`. `GET ...?consistency=linearizable` runs openraft's
//! ReadIndex (`ensure_linearizable`) on the leader; a follower proxies such reads too.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::ServerState;
use serde_json::json;

use super::extract::api_path;
use super::Shared;

/// Set on a proxied request: a member never forwards it again (no loops during elections).
const FORWARDED: HeaderName = HeaderName::from_static("x-unisondb-forwarded-by");

/// Models whose writes go through the group (backups, watch and stats stay local).
const REPLICATED_MODELS: &[&str] = &["kv", "row", "lob", "tx"];

fn no_leader(ns: &str, why: &str) -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": format!("namespace {ns}: {why}; retry shortly")})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn wants_linearizable(req: &Request) -> bool {
    req.uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "consistency=linearizable"))
}

/// The layer (see the module docs); a no-op without cluster mode.
pub async fn layer(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let Some(cluster) = st.cluster() else {
        return next.run(req).await;
    };
    let Ok(path) = api_path(req.uri().path()) else {
        return next.run(req).await;
    };
    let Some(raft) = cluster.groups.get(&path.namespace) else {
        return next.run(req).await;
    };
    let is_read = matches!(*req.method(), Method::GET | Method::HEAD);
    let write = !is_read && REPLICATED_MODELS.contains(&path.model.as_str());
    let linearizable = is_read && wants_linearizable(&req);
    if !write && !linearizable {
        return next.run(req).await;
    }
    let metrics = raft.metrics().borrow().clone();
    if metrics.state == ServerState::Leader {
        if linearizable {
            if let Err(e) = raft.ensure_linearizable().await {
                return no_leader(&path.namespace, &format!("linearizable read refused: {e}"));
            }
        }
        return next.run(req).await;
    }
    if req.headers().contains_key(&FORWARDED) {
        return no_leader(&path.namespace, "this member is no longer the leader");
    }
    let Some(leader) = metrics.current_leader else {
        return no_leader(&path.namespace, "no Raft leader now (election in progress)");
    };
    let Some(addr) = cluster.http_of(leader) else {
        return no_leader(
            &path.namespace,
            &format!("leader {leader}'s address is unknown"),
        );
    };
    forward(&st, req, &addr, cluster.settings.node_id).await
}

/// Sends `req` to the leader at `addr` and returns its answer.
async fn forward(st: &Shared, req: Request, addr: &str, me: u64) -> Response {
    let (parts, body) = req.into_parts();
    let limit = usize::try_from(st.cfg.http.lob_max_bytes.max(st.cfg.http.max_body_bytes))
        .unwrap_or(usize::MAX);
    let body = match to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({"error": format!("request body: {e}")})),
            )
                .into_response()
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("http://{addr}{path}");
    let mut out = st
        .proxy_client()
        .request(parts.method.clone(), &url)
        .header(FORWARDED, me.to_string())
        .body(body);
    for name in [header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v.clone());
        }
    }
    match out.send().await {
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    return (
                        StatusCode::BAD_GATEWAY,
                        Json(json!({"error": format!("leader at {addr}: {e}")})),
                    )
                        .into_response()
                }
            };
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = status;
            for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
                if let Some(v) = headers.get(&name) {
                    r.headers_mut().insert(name, v.clone());
                }
            }
            r
        }
        Err(e) => {
            tracing::warn!(leader = addr, error = %e, "proxying a write to the leader failed");
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": format!("the leader at {addr} did not answer: {e}; retry shortly")})),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

/// `?namespace=` of the status routes, else the first group.
fn pick(st: &Shared, q: Option<&str>) -> Option<String> {
    let cluster = st.cluster()?;
    if let Some(ns) = q.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("namespace="))
            .map(str::to_string)
    }) {
        return Some(ns);
    }
    cluster.groups.all().first().map(|(n, _)| n.clone())
}

/// `GET /status/leader`: `{"namespace","leader_addr","leader_id"}` (UnisonDB's shape) plus term
/// and this member's id and role; 503 `raft service disabled` without cluster mode.
pub fn leader(st: &Shared, query: Option<&str>) -> Option<Response> {
    let cluster = st.cluster()?;
    let ns = pick(st, query)?;
    let Some(s) = cluster.status(&ns) else {
        return Some(
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": format!("no Raft group for namespace {ns}")})),
            )
                .into_response(),
        );
    };
    Some(
        Json(json!({
            "namespace": ns,
            "leader_addr": s.leader_http,
            "leader_id": s.leader_id,
            "term": s.term,
            "node_id": s.node_id,
            "role": s.role,
        }))
        .into_response(),
    )
}

/// `GET /status/peers`: `{"namespace","peers":[..]}` with each member's id, addresses and (on the
/// leader) match index.
pub fn peers(st: &Shared, query: Option<&str>) -> Option<Response> {
    let cluster = st.cluster()?;
    let ns = pick(st, query)?;
    let s = cluster.status(&ns)?;
    let peers: Vec<_> = s
        .members
        .iter()
        .map(|(id, m)| {
            json!({
                "id": id,
                "grpc_addr": m.grpc,
                "http_addr": m.http,
                "leader": s.leader_id == Some(*id),
                "match_index": s.peer_match_index.as_ref().and_then(|p| p.get(id)),
            })
        })
        .collect();
    Some(Json(json!({"namespace": ns, "peers": peers})).into_response())
}
