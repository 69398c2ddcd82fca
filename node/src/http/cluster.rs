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
            if let Err(e) = read_index(&raft, metrics.last_log_index).await {
                return no_leader(&path.namespace, &format!("linearizable read refused: {e}"));
            }
        }
        let mut resp = next.run(req).await;
        if write {
            label_commit(&st, &path.namespace, cluster.settings.node_id, &mut resp);
        } else {
            // Which leader served the read, in which term, after applying which index.
            let h = resp.headers_mut();
            h.insert(LEADER_HEADER, HeaderValue::from(cluster.settings.node_id));
            h.insert(TERM_HEADER, HeaderValue::from(metrics.current_term));
            let read_at = metrics.last_log_index.map(|i| i + 1).unwrap_or(0);
            h.insert(READ_AT_HEADER, HeaderValue::from(read_at));
        }
        return resp;
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

/// ReadIndex: confirms the leadership with a quorum (openraft's `ensure_linearizable`), then waits
/// until this leader applied its whole log as of the read's arrival (`last`). openraft's own read
/// index is the commit index or the first entry of the leader's term, which after a leader restarts
/// in the same term (it keeps a committed vote for itself) can lie below entries acknowledged before
/// the restart: the commit index is persisted lazily. Every acknowledged write is in the leader's log.
async fn read_index(raft: &crate::raft::RaftHandle, last: Option<u64>) -> Result<(), String> {
    raft.ensure_linearizable()
        .await
        .map_err(|e| e.to_string())?;
    if last.is_some() {
        raft.wait(Some(std::time::Duration::from_secs(5)))
            .applied_index_at_least(last, "linearizable read")
            .await
            .map_err(|e| format!("the leader's log was not applied in time: {e}"))?;
    }
    Ok(())
}

/// Term of the entry a committed write's answer names (`CommittedAt`): `x-unisondb-raft-term`.
pub const TERM_HEADER: HeaderName = HeaderName::from_static("x-unisondb-raft-term");
/// Node id of the leader that committed it (or served a linearizable read): `x-unisondb-raft-leader`.
pub const LEADER_HEADER: HeaderName = HeaderName::from_static("x-unisondb-raft-leader");
/// A linearizable read's answer: the LSN the leader applied before it read.
pub const READ_AT_HEADER: HeaderName = HeaderName::from_static("x-unisondb-read-at-lsn");

/// Labels a committed write's answer with the term of its entry and this leader's id, so tests can
/// check that no two leaders acknowledged writes in the same term.
fn label_commit(st: &Shared, ns: &str, me: u64, resp: &mut Response) {
    let Some(super::acks::CommittedAt(lsn)) = resp.extensions().get().copied() else {
        return;
    };
    let Ok(n) = st.namespace(ns) else { return };
    let term = n.epoch_at(lsn);
    let h = resp.headers_mut();
    h.insert(TERM_HEADER, HeaderValue::from(term));
    h.insert(LEADER_HEADER, HeaderValue::from(me));
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
            for name in [
                header::CONTENT_TYPE,
                header::RETRY_AFTER,
                TERM_HEADER,
                LEADER_HEADER,
                READ_AT_HEADER,
            ] {
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
                "voter": s.voters.contains(id),
                "match_index": s.peer_match_index.as_ref().and_then(|p| p.get(id)),
            })
        })
        .collect();
    Some(Json(json!({"namespace": ns, "peers": peers})).into_response())
}

/// Body of `POST /api/v1/cluster/members`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberBody {
    /// The new member's node id (its `cluster.node_id`).
    pub id: u64,
    /// `host:port` of its gRPC listener (Raft traffic).
    pub grpc_addr: String,
    /// `host:port` of its HTTP API; absent: the gRPC host with this member's HTTP port.
    #[serde(default)]
    pub http_addr: Option<String>,
}

fn query_param<'a>(uri: &'a axum::http::Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
    })
}

fn api_error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// The groups a membership request names (`?namespace=`, else every group) and its deadline
/// (`?timeout_ms=`, default 30 s).
fn scope(
    cluster: &crate::raft::group::Cluster,
    uri: &axum::http::Uri,
) -> Result<(Vec<String>, tokio::time::Instant), Box<Response>> {
    let namespaces = match query_param(uri, "namespace") {
        Some(ns) if cluster.groups.get(ns).is_none() => {
            return Err(Box::new(api_error(
                StatusCode::NOT_FOUND,
                format!("no Raft group for namespace {ns:?} runs here"),
            )))
        }
        Some(ns) => vec![ns.to_string()],
        None => cluster.groups.all().into_iter().map(|(n, _)| n).collect(),
    };
    let ms = match query_param(uri, "timeout_ms") {
        None => 30_000,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= 600_000 => n,
            _ => {
                return Err(Box::new(api_error(
                    StatusCode::BAD_REQUEST,
                    format!("timeout_ms must be a number of milliseconds up to 600000, got {v:?}"),
                )))
            }
        },
    };
    Ok((
        namespaces,
        tokio::time::Instant::now() + std::time::Duration::from_millis(ms),
    ))
}

fn not_clustered() -> Response {
    api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "raft service disabled (no cluster section)",
    )
}

/// The answer of a membership change: 200 when every group is done, 504 naming what is pending,
/// 409 when a group refused, 503 (retry) when a forwarded request reached a member that does not lead.
fn report_response(id: u64, r: crate::raft::members::Report) -> Response {
    let status = if !r.refused.is_empty() {
        StatusCode::CONFLICT
    } else if !r.not_leader.is_empty() {
        StatusCode::SERVICE_UNAVAILABLE
    } else if !r.pending.is_empty() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::OK
    };
    let mut body = json!({"id": id, "namespaces": r.done});
    if status != StatusCode::OK {
        let mut why: Vec<String> = r
            .refused
            .iter()
            .map(|(ns, w)| format!("{ns}: refused: {w}"))
            .collect();
        why.extend(
            r.pending
                .iter()
                .map(|(ns, w)| format!("{ns}: pending: {w}")),
        );
        why.extend(
            r.not_leader
                .keys()
                .map(|ns| format!("{ns}: this member does not lead the group")),
        );
        body["error"] = json!(why.join("; "));
        body["pending"] = json!(r.pending);
        body["refused"] = json!(r.refused);
    }
    let mut resp = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn is_forwarded(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(crate::raft::members::FORWARDED)
}

/// The members of a namespace's group (`?namespace=`, default the first group): leader, term and
/// each member's id, addresses, whether it votes, and (on the leader) its match index.
#[utoipa::path(get, path = "/api/v1/cluster/members",
    responses((status = 200, body = Value), (status = 404, body = Value), (status = 503, body = Value)))]
pub async fn list_members(State(st): State<Shared>, uri: axum::http::Uri) -> Response {
    let Some(cluster) = st.cluster() else {
        return not_clustered();
    };
    let Some(ns) = pick(&st, uri.query()) else {
        return not_clustered();
    };
    let (Some(s), Some(raft)) = (cluster.status(&ns), cluster.groups.get(&ns)) else {
        return api_error(
            StatusCode::NOT_FOUND,
            format!("no Raft group for namespace {ns:?} runs here"),
        );
    };
    let membership = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .clone();
    let members: Vec<_> = s
        .members
        .iter()
        .map(|(id, m)| {
            json!({
                "id": id,
                "grpc_addr": m.grpc,
                "http_addr": m.http,
                "voter": membership.voter_ids().any(|v| v == *id),
                "match_index": s.peer_match_index.as_ref().and_then(|p| p.get(id)),
            })
        })
        .collect();
    Json(json!({
        "namespace": ns,
        "leader": s.leader_id,
        "term": s.term,
        "members": members,
    }))
    .into_response()
}

/// Adds a member to every group (or `?namespace=`'s): as a learner, promoted to voter once caught
/// up. Idempotent; sent to any member (forwarded to each group's leader); answers when done, or 504
/// after `?timeout_ms=` (default 30000) naming what is pending.
#[utoipa::path(post, path = "/api/v1/cluster/members", request_body = AddMemberBody,
    responses((status = 200, body = Value), (status = 400, body = Value), (status = 409, body = Value),
        (status = 504, body = Value)))]
pub async fn add_member(
    State(st): State<Shared>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    super::extract::JsonBody(b): super::extract::JsonBody<AddMemberBody>,
) -> Response {
    let Some(cluster) = st.cluster() else {
        return not_clustered();
    };
    if b.id == 0 {
        return api_error(StatusCode::BAD_REQUEST, "id must be at least 1");
    }
    let valid = |a: &str| {
        a.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    };
    if !valid(&b.grpc_addr) {
        return api_error(
            StatusCode::BAD_REQUEST,
            format!("grpc_addr must be host:port, got {:?}", b.grpc_addr),
        );
    }
    let http = match b.http_addr.filter(|h| !h.is_empty()) {
        Some(h) if valid(&h) => h,
        Some(h) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                format!("http_addr must be host:port, got {h:?}"),
            )
        }
        None => {
            let host = b.grpc_addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
            let port = st
                .cfg
                .http
                .listen
                .rsplit_once(':')
                .map(|(_, p)| p)
                .unwrap_or("4000");
            format!("{host}:{port}")
        }
    };
    let (namespaces, deadline) = match scope(cluster, &uri) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let change = crate::raft::members::Change::Add {
        id: b.id,
        member: crate::raft::Member {
            grpc: b.grpc_addr,
            http,
        },
    };
    let r = crate::raft::members::run(
        cluster,
        namespaces,
        change,
        deadline,
        is_forwarded(&headers),
    )
    .await;
    report_response(b.id, r)
}

/// Removes member `id` from every group (or `?namespace=`'s), voter or learner; a leader leaving
/// hands its leadership off first. Idempotent; sent to any member.
#[utoipa::path(delete, path = "/api/v1/cluster/members/{id}",
    params(("id" = u64, Path, description = "node id")),
    responses((status = 200, body = Value), (status = 409, body = Value), (status = 504, body = Value)))]
pub async fn remove_member(
    State(st): State<Shared>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(cluster) = st.cluster() else {
        return not_clustered();
    };
    let Ok(id) = id.parse::<u64>() else {
        return api_error(
            StatusCode::BAD_REQUEST,
            format!("member id must be a number, got {id:?}"),
        );
    };
    let (namespaces, deadline) = match scope(cluster, &uri) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let r = crate::raft::members::run(
        cluster,
        namespaces,
        crate::raft::members::Change::Remove { id },
        deadline,
        is_forwarded(&headers),
    )
    .await;
    report_response(id, r)
}

/// Hands the leadership of every group this member leads (or `?namespace=`'s) to an up-to-date
/// voter (`?to=ID`, else the most caught-up one), e.g. before its pod is deleted. Answers each
/// group's new leader; `null` where this member did not lead.
#[utoipa::path(post, path = "/api/v1/cluster/step-down",
    responses((status = 200, body = Value), (status = 504, body = Value)))]
pub async fn step_down(State(st): State<Shared>, uri: axum::http::Uri) -> Response {
    let Some(cluster) = st.cluster() else {
        return not_clustered();
    };
    let (namespaces, _) = match scope(cluster, &uri) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let to = match query_param(&uri, "to").map(str::parse::<u64>) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => return api_error(StatusCode::BAD_REQUEST, "to must be a node id"),
    };
    let ms = query_param(&uri, "timeout_ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(5_000)
        .min(600_000);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
    let started = std::time::Instant::now();
    let tasks = namespaces.into_iter().map(|ns| async move {
        let r = match cluster.groups.get(&ns) {
            Some(raft) => crate::raft::handoff::step_down(cluster, &ns, &raft, to, deadline).await,
            None => Ok(None),
        };
        (ns, r)
    });
    let mut leaders = serde_json::Map::new();
    let mut errors = Vec::new();
    for (ns, r) in futures::future::join_all(tasks).await {
        match r {
            Ok(l) => {
                leaders.insert(ns, json!(l));
            }
            Err(e) => errors.push(format!("{ns}: {e}")),
        }
    }
    let body = json!({
        "node_id": cluster.settings.node_id,
        "new_leaders": leaders,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    });
    if errors.is_empty() {
        Json(body).into_response()
    } else {
        let mut body = body;
        body["error"] = json!(errors.join("; "));
        (StatusCode::GATEWAY_TIMEOUT, Json(body)).into_response()
    }
}
