//! A write's consistency request, `?acks=N[&acks_timeout_ms=T]` or header `x-unisondb-acks: N`, and the
//! one layer that honours it for every committing route.
//!
//! Handlers never wait for replicas: a committed write's response carries its LSN as the `CommittedAt`
//! extension (see `write.rs`), and `layer` waits for the acknowledgements after the handler returns.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::extract::api_path;
use super::Shared;

/// Default wait for replica acknowledgements before answering 504.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound a client may ask for, so a request cannot pin a connection for long.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// How many replicas must acknowledge, and for how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckRequest {
    pub acks: usize,
    pub timeout: Duration,
}

/// The request's ack requirement, if it states one; 400 on malformed values.
pub fn requested(uri: &Uri, headers: &HeaderMap) -> ApiResult<Option<AckRequest>> {
    let mut acks: Option<usize> = None;
    let mut timeout = DEFAULT_TIMEOUT;
    if let Some(q) = uri.query() {
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "acks" => acks = Some(number(v, "acks")? as usize),
                "acks_timeout_ms" => {
                    timeout = Duration::from_millis(number(v, "acks_timeout_ms")?).min(MAX_TIMEOUT)
                }
                _ => {}
            }
        }
    }
    if acks.is_none() {
        if let Some(h) = headers.get("x-unisondb-acks") {
            let v = h
                .to_str()
                .map_err(|_| ApiError::bad_request("header x-unisondb-acks is not ASCII"))?;
            acks = Some(number(v, "x-unisondb-acks")? as usize);
        }
    }
    Ok(acks.map(|acks| AckRequest { acks, timeout }))
}

/// The LSN a write committed at: a response extension set by write responses, read by `layer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedAt(pub u64);

/// Rejects a malformed `acks` before the handler runs (so a 400 never follows a committed write);
/// after a committed write that asked for acks, waits for them (504 saying how many replicas acked).
pub async fn layer(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let wanted = match requested(req.uri(), req.headers()) {
        Ok(w) => w.is_some_and(|w| w.acks > 0),
        Err(e) => return e.into_response(),
    };
    if !wanted {
        return next.run(req).await;
    }
    let (uri, headers) = (req.uri().clone(), req.headers().clone());
    let resp = next.run(req).await;
    let Some(CommittedAt(lsn)) = resp.extensions().get::<CommittedAt>().copied() else {
        return resp;
    };
    let waited = match api_path(uri.path()) {
        Ok(p) => st.await_acks(&p.namespace, lsn, &uri, &headers).await,
        Err(e) => Err(e),
    };
    match waited {
        Ok(()) => resp,
        Err(e) => e.into_response(),
    }
}

fn number(v: &str, what: &str) -> ApiResult<u64> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= 1_000_000)
        .ok_or_else(|| {
            ApiError::bad_request(format!("{what} must be a non-negative integer, got {v:?}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn query_header_and_errors() {
        let h = HeaderMap::new();
        assert_eq!(requested(&uri("/x"), &h).unwrap(), None);
        assert_eq!(
            requested(&uri("/x?acks=2&acks_timeout_ms=250"), &h).unwrap(),
            Some(AckRequest {
                acks: 2,
                timeout: Duration::from_millis(250)
            })
        );
        assert_eq!(
            requested(&uri("/x?acks=1&acks_timeout_ms=120000"), &h)
                .unwrap()
                .unwrap()
                .timeout,
            MAX_TIMEOUT
        );
        let mut hh = HeaderMap::new();
        hh.insert("x-unisondb-acks", "3".parse().unwrap());
        assert_eq!(requested(&uri("/x"), &hh).unwrap().unwrap().acks, 3);
        assert!(requested(&uri("/x?acks=two"), &h).is_err());
        assert!(requested(&uri("/x?acks=-1"), &h).is_err());
    }
}
