//! Follower position and lag per namespace: Prometheus metrics, `/readyz` and `/stats` data.
//!
//! Lag in seconds is `now − HLC wall time of the last applied record`, and 0 whenever the follower has
//! applied everything the upstream reported (so an idle upstream does not look like growing lag).
//! The upstream reports its latest LSN in every batch and in heartbeats, so the record lag stays fresh.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;
use prometheus::{
    register_gauge_vec_with_registry, register_int_counter_vec_with_registry,
    register_int_gauge_vec_with_registry, GaugeVec, IntCounterVec, IntGaugeVec,
};

use crate::metrics::REGISTRY;
use crate::storage::hlc::{physical_ms, wall_ms};

macro_rules! int_gauge {
    ($name:ident, $metric:expr, $help:expr) => {
        static $name: LazyLock<IntGaugeVec> = LazyLock::new(|| {
            register_int_gauge_vec_with_registry!($metric, $help, &["namespace"], REGISTRY)
                .expect("metric registers once")
        });
    };
}
macro_rules! counter {
    ($name:ident, $metric:expr, $help:expr) => {
        static $name: LazyLock<IntCounterVec> = LazyLock::new(|| {
            register_int_counter_vec_with_registry!($metric, $help, &["namespace"], REGISTRY)
                .expect("metric registers once")
        });
    };
}

int_gauge!(
    LAG_RECORDS,
    "unisondb_replication_lag_records",
    "Upstream latest LSN minus the locally applied LSN"
);
int_gauge!(
    APPLIED_LSN,
    "unisondb_replication_applied_lsn",
    "Last LSN applied from the upstream"
);
int_gauge!(
    UPSTREAM_LSN,
    "unisondb_replication_upstream_lsn",
    "Latest LSN the upstream reported"
);
int_gauge!(
    CONNECTED,
    "unisondb_replication_connected",
    "1 while the WAL stream to the upstream is open"
);
counter!(
    RECONNECTS,
    "unisondb_replication_reconnects_total",
    "Times the follower reconnected to its upstream after a failure"
);
counter!(
    BOOTSTRAPS,
    "unisondb_replication_snapshot_bootstraps_total",
    "Snapshot bootstraps after the upstream trimmed the needed WAL"
);
counter!(
    RECORDS_APPLIED,
    "unisondb_replication_records_applied_total",
    "WAL records received from the upstream and applied"
);
static LAG_SECONDS: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec_with_registry!(
        "unisondb_replication_lag_seconds",
        "Now minus the HLC time of the last applied record; 0 when caught up",
        &["namespace"],
        REGISTRY
    )
    .expect("metric registers once")
});

/// Replication position of one followed namespace (served in `/stats`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ReplicationPosition {
    pub upstream: String,
    pub connected: bool,
    pub applied_lsn: u64,
    pub applied_hlc: u64,
    pub upstream_lsn: u64,
    pub lag_records: u64,
    pub lag_seconds: f64,
    pub reconnects: u64,
    pub snapshot_bootstraps: u64,
    pub last_error: Option<String>,
}

/// Status of every namespace this node follows; shared by the followers and the HTTP layer.
#[derive(Clone, Default)]
pub struct ReplicationState {
    inner: Arc<RwLock<BTreeMap<String, ReplicationPosition>>>,
}

impl ReplicationState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a followed namespace (so `/readyz` fails until it connects).
    pub fn register(&self, namespace: &str, upstream: &str, applied_lsn: u64, applied_hlc: u64) {
        let mut m = self.inner.write();
        let p = m.entry(namespace.to_string()).or_default();
        p.upstream = upstream.to_string();
        p.applied_lsn = applied_lsn;
        p.applied_hlc = applied_hlc;
        drop(m);
        self.publish(namespace);
    }

    /// Whether `namespace` is followed from an upstream (i.e. read-only here).
    pub fn is_followed(&self, namespace: &str) -> bool {
        self.inner.read().contains_key(namespace)
    }

    /// Upstream address of a followed namespace (for 403 answers naming the owner).
    pub fn upstream_of(&self, namespace: &str) -> Option<String> {
        self.inner.read().get(namespace).map(|p| p.upstream.clone())
    }

    /// Current position with lag computed now; `None` if the namespace is not followed.
    pub fn position(&self, namespace: &str) -> Option<ReplicationPosition> {
        let mut p = self.inner.read().get(namespace)?.clone();
        p.lag_records = p.upstream_lsn.saturating_sub(p.applied_lsn);
        p.lag_seconds = lag_seconds(&p);
        Some(p)
    }

    /// Every followed namespace's position.
    pub fn positions(&self) -> BTreeMap<String, ReplicationPosition> {
        let names: Vec<String> = self.inner.read().keys().cloned().collect();
        names
            .into_iter()
            .filter_map(|n| self.position(&n).map(|p| (n, p)))
            .collect()
    }

    /// `/readyz` for followers: every followed namespace connected with lag ≤ `max_lag_records`.
    pub fn ready(&self, max_lag_records: u64) -> Result<(), String> {
        for (ns, p) in self.positions() {
            if !p.connected {
                return Err(format!("namespace {ns}: not connected to {}", p.upstream));
            }
            if p.lag_records > max_lag_records {
                return Err(format!(
                    "namespace {ns}: {} records behind {} (max {max_lag_records})",
                    p.lag_records, p.upstream
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn update(&self, namespace: &str, f: impl FnOnce(&mut ReplicationPosition)) {
        if let Some(p) = self.inner.write().get_mut(namespace) {
            f(p);
        }
        self.publish(namespace);
    }

    pub(crate) fn count_reconnect(&self, namespace: &str) {
        RECONNECTS.with_label_values(&[namespace]).inc();
        self.update(namespace, |p| p.reconnects += 1);
    }

    pub(crate) fn count_bootstrap(&self, namespace: &str) {
        BOOTSTRAPS.with_label_values(&[namespace]).inc();
        self.update(namespace, |p| p.snapshot_bootstraps += 1);
    }

    pub(crate) fn count_applied(&self, namespace: &str, n: u64) {
        RECORDS_APPLIED.with_label_values(&[namespace]).inc_by(n);
    }

    /// Refreshes the gauges from the stored position (also called periodically so seconds-lag moves).
    pub fn publish(&self, namespace: &str) {
        let Some(p) = self.position(namespace) else {
            return;
        };
        let l = &[namespace];
        LAG_RECORDS.with_label_values(l).set(p.lag_records as i64);
        APPLIED_LSN.with_label_values(l).set(p.applied_lsn as i64);
        UPSTREAM_LSN.with_label_values(l).set(p.upstream_lsn as i64);
        CONNECTED.with_label_values(l).set(i64::from(p.connected));
        LAG_SECONDS.with_label_values(l).set(p.lag_seconds);
    }
}

fn lag_seconds(p: &ReplicationPosition) -> f64 {
    if p.applied_lsn >= p.upstream_lsn || p.applied_hlc == 0 {
        return 0.0;
    }
    wall_ms().saturating_sub(physical_ms(p.applied_hlc)) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_and_readiness() {
        let s = ReplicationState::new();
        s.register("a", "http://up", 5, 0);
        assert!(s.ready(10).is_err(), "not connected yet");
        s.update("a", |p| {
            p.connected = true;
            p.upstream_lsn = 20;
            p.applied_hlc = (wall_ms() - 3000) << 16;
        });
        let p = s.position("a").unwrap();
        assert_eq!(p.lag_records, 15);
        assert!(
            p.lag_seconds >= 2.9 && p.lag_seconds < 60.0,
            "{}",
            p.lag_seconds
        );
        assert!(s.ready(10).is_err());
        assert!(s.ready(15).is_ok());
        s.update("a", |p| p.applied_lsn = 20);
        assert_eq!(s.position("a").unwrap().lag_seconds, 0.0);
        assert!(s.is_followed("a") && !s.is_followed("b"));
    }
}
