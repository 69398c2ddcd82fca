//! HTTP metrics: requests and latency per matched route template (never the raw path, which would
//! explode label cardinality with keys), and gauges refreshed from `Namespace::stats` at scrape time.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    register_histogram_vec_with_registry, register_int_counter_vec_with_registry,
    register_int_gauge_with_registry, HistogramVec, IntCounterVec, IntGauge,
};

use crate::metrics::REGISTRY;

pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec_with_registry!(
        "unisondb_http_requests_total",
        "HTTP requests by method, route template and status",
        &["method", "route", "status"],
        REGISTRY
    )
    .expect("metric registers once")
});

pub static HTTP_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec_with_registry!(
        "unisondb_http_request_duration_seconds",
        "Time to response headers, by method and route template",
        &["method", "route"],
        vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0],
        REGISTRY
    )
    .expect("metric registers once")
});

pub static OPEN_TXNS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge_with_registry!(
        "unisondb_open_transactions",
        "Transactions begun and not yet committed, aborted or reaped",
        REGISTRY
    )
    .expect("metric registers once")
});

/// Records one request under its route template.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    HTTP_SECONDS
        .with_label_values(&[method.as_str(), route.as_str()])
        .observe(start.elapsed().as_secs_f64());
    HTTP_REQUESTS
        .with_label_values(&[method.as_str(), route.as_str(), resp.status().as_str()])
        .inc();
    resp
}

/// Refreshes gauges from each namespace's stats (blocking: reads tree stats).
pub fn refresh(st: &super::AppState) {
    use crate::metrics as m;
    OPEN_TXNS.set(st.txns.open_count() as i64);
    if let Some(r) = st.replication() {
        r.state.publish_all();
    }
    let Some(db) = st.db() else { return };
    for ns in db.namespaces() {
        match ns.stats() {
            Ok(s) => {
                let l = [s.name.as_str()];
                m::LSN.with_label_values(&l).set(s.lsn as i64);
                m::CHECKPOINT_LSN
                    .with_label_values(&l)
                    .set(s.checkpoint_lsn as i64);
                m::MEMTABLE_BYTES
                    .with_label_values(&l)
                    .set(s.memtable_bytes as i64);
                m::BTREE_PAGES
                    .with_label_values(&l)
                    .set(s.tree.total_pages as i64);
                m::BTREE_FILE_BYTES
                    .with_label_values(&l)
                    .set(s.tree.file_size as i64);
                m::WAL_SEGMENTS
                    .with_label_values(&l)
                    .set(s.wal_segments.len() as i64);
            }
            Err(e) => tracing::warn!(namespace = ns.name(), error = %e, "stats for metrics failed"),
        }
    }
}
