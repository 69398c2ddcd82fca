//! Follower position, connection state, lag and staleness per namespace: Prometheus metrics,
//! `/readyz`, `/stats` and the `x-unisondb-lag-seconds` read header.
//!
//! Lag in seconds is `now − HLC wall time of the last applied record`, and 0 whenever the follower has
//! applied everything the upstream reported (so an idle upstream does not look like growing lag).
//! The upstream reports its latest LSN in every batch and in heartbeats, so the record lag stays fresh.
//!
//! Staleness is how old the follower's view may be: 0 while connected and caught up, otherwise the
//! time since it last knew it held everything its upstream had (see [`ReplicationPosition`]).
//! Readiness is separate from connectivity: a follower that has been in sync once since start, or
//! holds data (from before a restart or from a snapshot), stays ready while its upstream is away,
//! unless `replication.max_staleness_seconds` is set and exceeded ([`ReplicationState::ready_with`]).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

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
static DIVERGENCES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec_with_registry!(
        "unisondb_replication_divergences_total",
        "Times the follower's history diverged from its upstream's, by repair (truncate or bootstrap)",
        &["namespace", "action"],
        REGISTRY
    )
    .expect("metric registers once")
});
static LAG_SECONDS: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec_with_registry!(
        "unisondb_replication_lag_seconds",
        "Now minus the HLC time of the last applied record; 0 when caught up",
        &["namespace"],
        REGISTRY
    )
    .expect("metric registers once")
});
static STALENESS_SECONDS: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec_with_registry!(
        "unisondb_replication_staleness_seconds",
        "Seconds since the follower last knew it held everything its upstream had; 0 when connected and caught up",
        &["namespace"],
        REGISTRY
    )
    .expect("metric registers once")
});

/// The last time a follower's history diverged from its upstream's, and what it did (in `/stats`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Divergence {
    /// When it was detected (Unix milliseconds).
    pub at_ms: u64,
    /// The last LSN both histories agree on.
    pub agreed_lsn: u64,
    /// The local records discarded: `agreed_lsn + 1 ..= discarded_to` (replaced by upstream's).
    pub discarded_from: u64,
    pub discarded_to: u64,
    /// `truncate` (WAL cut after `agreed_lsn`) or `bootstrap` (snapshot install).
    pub action: String,
    pub reason: String,
}

/// Replication position of one followed namespace (served in `/stats`). Times are wall-clock
/// milliseconds since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ReplicationPosition {
    pub upstream: String,
    /// The WAL stream to the upstream is open (set on its first message, cleared when it ends).
    pub connected: bool,
    /// When `connected` last changed (or the follower was registered).
    pub connected_changed_ms: u64,
    /// Last message (batch or heartbeat) from the upstream; `None` before the first.
    pub last_contact_ms: Option<u64>,
    /// Last time the follower had applied everything the upstream reported; `None` if never since start.
    pub last_in_sync_ms: Option<u64>,
    /// It held data when registered (from before a restart) or installed a snapshot since.
    pub holds_data: bool,
    pub applied_lsn: u64,
    pub applied_hlc: u64,
    pub upstream_lsn: u64,
    pub lag_records: u64,
    pub lag_seconds: f64,
    /// How old this node's view may be: see [`staleness_seconds`](ReplicationPosition::staleness).
    pub staleness_seconds: f64,
    pub reconnects: u64,
    pub snapshot_bootstraps: u64,
    /// History divergences detected (each repaired by a truncation or a bootstrap).
    pub divergences: u64,
    pub last_divergence: Option<Divergence>,
    pub last_error: Option<String>,
    #[serde(skip)]
    registered_ms: u64,
}

impl ReplicationPosition {
    /// Connected and holding everything the upstream reported.
    pub fn in_sync(&self) -> bool {
        self.connected && self.applied_lsn >= self.upstream_lsn
    }

    /// Seconds this node's view may be behind its upstream, at `now_ms`: 0 while in sync; else the
    /// time since it was last in sync; before that ever happened (restarted while the upstream is
    /// away), the age of its newest record (it had everything up to that record's write); with no
    /// record at all, the time since registration.
    pub fn staleness(&self, now_ms: u64) -> f64 {
        if self.in_sync() {
            return 0.0;
        }
        let since = match self.last_in_sync_ms {
            Some(t) => t,
            None if self.applied_hlc != 0 => physical_ms(self.applied_hlc),
            None => self.registered_ms,
        };
        now_ms.saturating_sub(since) as f64 / 1000.0
    }
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

    /// Registers a followed namespace. Holding no data, it is not ready until first in sync.
    pub fn register(&self, namespace: &str, upstream: &str, applied_lsn: u64, applied_hlc: u64) {
        let now = wall_ms();
        let mut m = self.inner.write();
        let p = m.entry(namespace.to_string()).or_default();
        if p.registered_ms == 0 {
            p.registered_ms = now;
            p.connected_changed_ms = now;
        }
        p.upstream = upstream.to_string();
        p.applied_lsn = applied_lsn;
        p.applied_hlc = applied_hlc;
        p.holds_data |= applied_lsn > 0;
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
        p.staleness_seconds = p.staleness(wall_ms());
        Some(p)
    }

    /// Staleness of a followed namespace now (for the read header); `None` if not followed.
    pub fn staleness_seconds(&self, namespace: &str) -> Option<f64> {
        let m = self.inner.read();
        m.get(namespace).map(|p| p.staleness(wall_ms()))
    }

    /// Every followed namespace's position.
    pub fn positions(&self) -> BTreeMap<String, ReplicationPosition> {
        let names: Vec<String> = self.inner.read().keys().cloned().collect();
        names
            .into_iter()
            .filter_map(|n| self.position(&n).map(|p| (n, p)))
            .collect()
    }

    /// [`ReplicationState::ready_with`] without a staleness bound.
    pub fn ready(&self, max_lag_records: u64) -> Result<(), String> {
        self.ready_with(max_lag_records, None)
    }

    /// `/readyz` for followers. Every followed namespace must have something worth serving (it has
    /// been in sync since start, or holds data from before a restart or a snapshot); while connected
    /// it must be at most `max_lag_records` behind; and, when `max_staleness` is set, its staleness
    /// must not exceed it. Being disconnected alone does not make a node unready: a relayer whose
    /// upstream restarts keeps serving what it has, and says how stale it is.
    pub fn ready_with(
        &self,
        max_lag_records: u64,
        max_staleness: Option<Duration>,
    ) -> Result<(), String> {
        for (ns, p) in self.positions() {
            if p.last_in_sync_ms.is_none() && !p.holds_data {
                return Err(format!(
                    "namespace {ns}: not yet in sync with {} and no local data",
                    p.upstream
                ));
            }
            if p.connected && p.lag_records > max_lag_records {
                return Err(format!(
                    "namespace {ns}: {} records behind {} (max {max_lag_records})",
                    p.lag_records, p.upstream
                ));
            }
            if let Some(max) = max_staleness {
                if p.staleness_seconds > max.as_secs_f64() {
                    return Err(format!(
                        "namespace {ns}: {:.1} s stale (max {} s), {}",
                        p.staleness_seconds,
                        max.as_secs(),
                        if p.connected {
                            format!("catching up with {}", p.upstream)
                        } else {
                            format!(
                                "not connected to {}: {}",
                                p.upstream,
                                p.last_error.as_deref().unwrap_or("not connected yet")
                            )
                        }
                    ));
                }
            }
        }
        Ok(())
    }

    /// A message arrived from the upstream reporting `upstream_lsn` as its latest.
    pub(crate) fn contact(&self, namespace: &str, upstream_lsn: u64) {
        let now = wall_ms();
        self.update(namespace, |p| {
            if !p.connected {
                p.connected = true;
                p.connected_changed_ms = now;
            }
            p.last_error = None;
            p.last_contact_ms = Some(now);
            p.upstream_lsn = upstream_lsn;
            if p.applied_lsn >= upstream_lsn {
                p.last_in_sync_ms = Some(now);
            }
        });
    }

    /// The stream to the upstream ended (`error`: why, when known).
    pub(crate) fn disconnected(&self, namespace: &str, error: Option<String>) {
        let now = wall_ms();
        self.update(namespace, |p| {
            if p.connected {
                p.connected = false;
                p.connected_changed_ms = now;
            }
            if error.is_some() {
                p.last_error = error;
            }
        });
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
        self.update(namespace, |p| {
            p.snapshot_bootstraps += 1;
            p.holds_data = true;
        });
    }

    /// Counts a divergence (metric by action) and keeps it as the namespace's last one.
    pub(crate) fn record_divergence(&self, namespace: &str, d: Divergence) {
        DIVERGENCES
            .with_label_values(&[namespace, d.action.as_str()])
            .inc();
        self.update(namespace, |p| {
            p.divergences += 1;
            p.last_divergence = Some(d);
        });
    }

    pub(crate) fn count_applied(&self, namespace: &str, n: u64) {
        RECORDS_APPLIED.with_label_values(&[namespace]).inc_by(n);
    }

    /// Refreshes the gauges from the stored position (also called periodically so seconds-lag moves).
    /// Publishes every followed namespace's gauges (at scrape time: seconds-lag and staleness grow
    /// with the clock, not only when a batch arrives).
    pub fn publish_all(&self) {
        let names: Vec<String> = self.inner.read().keys().cloned().collect();
        for n in names {
            self.publish(&n);
        }
    }

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
        STALENESS_SECONDS
            .with_label_values(l)
            .set(p.staleness_seconds);
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
        s.register("a", "http://up", 0, 0);
        assert!(s.ready(10).is_err(), "never in sync and no data");
        s.update("a", |p| p.applied_hlc = (wall_ms() - 3000) << 16);
        s.contact("a", 20);
        let p = s.position("a").unwrap();
        assert!(p.connected && p.last_in_sync_ms.is_none());
        assert_eq!(p.lag_records, 20);
        assert!(
            p.lag_seconds >= 2.9 && p.lag_seconds < 60.0,
            "{}",
            p.lag_seconds
        );
        assert!(
            s.ready(100).is_err(),
            "still catching up for the first time"
        );
        s.update("a", |p| p.applied_lsn = 20);
        s.contact("a", 20);
        assert_eq!(s.position("a").unwrap().lag_seconds, 0.0);
        assert!(s.ready(0).is_ok());
        // Falling far behind while connected is not ready; being cut off alone is.
        s.contact("a", 50);
        assert!(s.ready(10).is_err());
        assert!(s.ready(30).is_ok());
        s.disconnected("a", Some("gone".into()));
        assert!(s.ready(10).is_ok(), "{:?}", s.ready(10));
        assert!(s.is_followed("a") && !s.is_followed("b"));
    }

    #[test]
    fn staleness_and_its_bound() {
        let s = ReplicationState::new();
        s.register("a", "http://up", 0, 0);
        s.contact("a", 0);
        assert_eq!(s.staleness_seconds("a"), Some(0.0));
        assert_eq!(s.staleness_seconds("b"), None);
        s.disconnected("a", Some("gone".into()));
        s.update("a", |p| p.last_in_sync_ms = Some(wall_ms() - 5000));
        let p = s.position("a").unwrap();
        assert!(!p.connected && p.last_error.as_deref() == Some("gone"));
        assert!(p.staleness_seconds >= 4.9 && p.staleness_seconds < 60.0);
        assert!(s.ready_with(10, None).is_ok());
        assert!(s.ready_with(10, Some(Duration::from_secs(60))).is_ok());
        let why = s.ready_with(10, Some(Duration::from_secs(2))).unwrap_err();
        assert!(why.contains("stale") && why.contains("gone"), "{why}");
        // Reconnected and caught up: fresh again.
        s.contact("a", 0);
        assert!(s.ready_with(10, Some(Duration::from_secs(2))).is_ok());
    }

    #[test]
    fn restarted_with_data_while_the_upstream_is_away() {
        let s = ReplicationState::new();
        let hlc = (wall_ms() - 10_000) << 16;
        s.register("a", "http://up", 7, hlc);
        assert!(s.ready(10).is_ok(), "local data is served");
        let st = s.staleness_seconds("a").unwrap();
        assert!((9.9..60.0).contains(&st), "age of the newest record: {st}");
        assert!(s.ready_with(10, Some(Duration::from_secs(5))).is_err());
    }
}
