//! Operator metrics (`unisondb_operator_*`), served on `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    pub kind: String,
    pub object: String,
}

/// All operator metrics plus the registry that renders them.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<KindLabel, Counter>,
    pub errors: Family<ErrorLabel, Counter>,
    pub duration: Family<KindLabel, Histogram>,
    pub managed: Family<KindLabel, Gauge>,
    pub status_writes: Family<KindLabel, Counter>,
    pub is_leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("unisondb_operator");
        let reconciles = Family::<KindLabel, Counter>::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let managed = Family::<KindLabel, Gauge>::default();
        let status_writes = Family::<KindLabel, Counter>::default();
        let is_leader = Gauge::default();
        registry.register("reconcile_runs", "Reconciliations run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliation errors by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconciliation duration",
            duration.clone(),
        );
        registry.register(
            "objects_managed",
            "Custom resources currently managed",
            managed.clone(),
        );
        registry.register(
            "status_writes",
            "Status patches sent (0 in steady state)",
            status_writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            is_leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            managed,
            status_writes,
            is_leader,
        }
    }

    pub fn observe(&self, kind: &str, took: Duration) {
        let l = KindLabel {
            kind: kind.to_string(),
        };
        self.reconciles.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(took.as_secs_f64());
    }

    pub fn error(&self, kind: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabel {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

pub type SharedMetrics = Arc<Metrics>;
