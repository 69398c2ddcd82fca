//! `GET /api/v1/{ns}/watch`: the change feed as server-sent events, for clients without ZeroMQ.
//!
//! `?models=kv,row,lob` and `?prefix=` filter; `?from_lsn=N` (or the `Last-Event-ID` header, resuming
//! after that LSN) replays from the WAL, otherwise only new changes are sent. Event id = LSN.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use utoipa::IntoParams;

use super::error::{ApiError, ApiResult};
use super::target::Target;
use super::{shutdown_signal, Shared};
use crate::feed;
use crate::storage::keys::Model;

/// Query of `GET /watch`.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// Comma-separated models to send (default `kv,row,lob`).
    models: Option<String>,
    /// Only keys starting with this.
    prefix: Option<String>,
    /// Replay from this LSN (else only new changes; `Last-Event-ID` resumes after an LSN).
    from_lsn: Option<u64>,
}

/// Server-sent change events (id = LSN).
#[utoipa::path(get, path = "/api/v1/{namespace}/watch", params(WatchQuery),
    responses((status = 200, description = "event stream", body = String, content_type = "text/event-stream"),
        (status = 400), (status = 404)))]
pub async fn watch(
    State(st): State<Shared>,
    target: Target,
    headers: HeaderMap,
    q: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let ns = target.ns;
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let mut models = Vec::new();
    for m in q
        .models
        .as_deref()
        .unwrap_or("kv,row,lob")
        .split(',')
        .map(str::trim)
    {
        models.push(match m {
            "kv" => Model::Kv,
            "row" => Model::Row,
            "lob" => Model::Lob,
            "" => continue,
            other => return Err(ApiError::bad_request(format!("unknown model {other:?}"))),
        });
    }
    let prefix = q.prefix.unwrap_or_default().into_bytes();
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|lsn| lsn + 1);
    let from = q.from_lsn.or(resume);
    let name = target.name;
    let changes = match from {
        Some(lsn) => feed::changes_from(ns, lsn).boxed(),
        None => feed::changes_from_now(ns).boxed(),
    };
    let events = changes
        .filter(move |r| {
            let keep = match r {
                Ok(c) => models.contains(&c.model) && c.key.starts_with(&prefix),
                Err(_) => true,
            };
            futures::future::ready(keep)
        })
        .map(move |r| -> Result<Event, Infallible> {
            Ok(match r {
                Ok(c) => Event::default()
                    .event("change")
                    .id(c.lsn.to_string())
                    .data(feed::change_json(&name, &c).to_string()),
                Err(e) => {
                    tracing::warn!(error = %e, "change feed ended with an error");
                    Event::default()
                        .event("error")
                        .data(json!({"error": e.to_string()}).to_string())
                }
            })
        })
        .take_until(shutdown_signal(st.shutdown.clone()));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
