//! The `x-unisondb-lag-seconds` header on reads of a followed namespace, so a client reading from a
//! relayer whose upstream is away knows how old the answer may be (the relayer keeps serving; see
//! `replication::lag` for the readiness rule).
//!
//! Value: whole seconds, rounded up, since the node last knew it held everything its upstream had;
//! `0` only while connected and caught up. Only `GET`/`HEAD` under `/api/v1/{ns}/` on a namespace this
//! node follows carry it; owned namespaces never do.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use super::extract::api_path;
use super::Shared;

/// Name of the staleness header.
pub const LAG_HEADER: HeaderName = HeaderName::from_static("x-unisondb-lag-seconds");

/// Adds [`LAG_HEADER`] to reads of followed namespaces; measured when the request arrives.
pub async fn layer(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let staleness = if matches!(*req.method(), Method::GET | Method::HEAD) {
        st.replication().and_then(|r| {
            let ns = api_path(req.uri().path()).ok()?.namespace;
            r.staleness_seconds(&ns)
        })
    } else {
        None
    };
    let mut resp = next.run(req).await;
    if let Some(s) = staleness {
        resp.headers_mut()
            .insert(LAG_HEADER, HeaderValue::from(header_seconds(s)));
    }
    resp
}

/// Whole seconds, rounded up so that only "in sync" reads as 0.
fn header_seconds(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        s.ceil() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::header_seconds;

    #[test]
    fn only_in_sync_is_zero() {
        assert_eq!(header_seconds(0.0), 0);
        assert_eq!(header_seconds(0.001), 1);
        assert_eq!(header_seconds(2.0), 2);
        assert_eq!(header_seconds(2.5), 3);
        assert_eq!(header_seconds(f64::NAN), 0);
    }
}
