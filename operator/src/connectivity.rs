//! Whether a node's pods are connected to their upstream: the `Connected` condition.
//!
//! A relayer stays Ready while its upstream is away (it keeps serving reads, with a staleness
//! header), so readiness cannot tell an operator that replication is broken. This condition does:
//! the operator reads each running pod's `/metrics` (unauthenticated, served on the HTTP port, the
//! same endpoint Prometheus scrapes) and reports which namespaces are disconnected and how stale
//! they are. Parsing and the verdict are pure; [`PodMetricsProbe`] is the I/O edge.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::Client;

use crate::crd::{NamespaceState, PodState};
use crate::nodeconfig::HTTP_PORT;

/// Condition type set on nodes that follow an upstream (relayers, hubs with mirrors).
pub const CONNECTED: &str = "Connected";

/// One namespace as a pod reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Link {
    /// The pod follows this namespace from an upstream (it reports replication metrics for it).
    pub follower: bool,
    /// Last visible LSN.
    pub lsn: u64,
    pub connected: bool,
    /// Records behind the upstream.
    pub lag_records: u64,
    /// Seconds behind the upstream (age of the newest applied record when behind).
    pub lag_seconds: f64,
    /// Seconds the pod's view may be behind its upstream (0 while connected and caught up).
    pub staleness_seconds: f64,
    /// History divergences this pod repaired on the namespace since it started (truncate or
    /// re-bootstrap; the reason is in the pod's `/api/v1/{ns}/stats`).
    pub divergences: u64,
    /// Hub groups: the pod's Raft view of the namespace (`None` outside cluster mode).
    pub raft: Option<RaftView>,
}

/// One member's `unisondb_raft_*` gauges for one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RaftView {
    /// This member leads the namespace's group (`unisondb_raft_is_leader`).
    pub leader: bool,
    /// The group's current term as this member knows it (`unisondb_raft_term`).
    pub term: u64,
    /// The last committed LSN applied on this member (`unisondb_raft_commit_index`).
    pub commit_index: u64,
}

/// What one pod reported, or why it could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct PodReport {
    pub pod: String,
    /// Followed namespace → link; `Err` when the pod's metrics could not be read.
    pub links: Result<BTreeMap<String, Link>, String>,
}

/// Everything one probe learned about a node's pods.
#[derive(Clone, Debug, PartialEq)]
pub enum Connectivity {
    /// Nothing to judge by (no running pod yet, or the pods could not be listed).
    Unknown(String),
    Observed(Vec<PodReport>),
}

/// The `Connected` condition's status (`"True"`, `"False"` or `"Unknown"`), reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// Reads `unisondb_lsn`, the `unisondb_replication_*` gauges and (hub groups) the
/// `unisondb_raft_*` gauges per namespace from a Prometheus text exposition; other lines are ignored.
pub fn parse_metrics(text: &str) -> BTreeMap<String, Link> {
    let mut out: BTreeMap<String, Link> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, ns, value)) = sample(line) else {
            continue;
        };
        match name {
            "unisondb_lsn" => out.entry(ns).or_default().lsn = value.max(0.0) as u64,
            "unisondb_replication_connected" => {
                let l = out.entry(ns).or_default();
                l.follower = true;
                l.connected = value >= 1.0;
            }
            "unisondb_replication_lag_records" => {
                out.entry(ns).or_default().lag_records = value.max(0.0) as u64
            }
            "unisondb_replication_lag_seconds" => {
                out.entry(ns).or_default().lag_seconds = value.max(0.0)
            }
            "unisondb_replication_staleness_seconds" => {
                out.entry(ns).or_default().staleness_seconds = value
            }
            "unisondb_raft_is_leader" => {
                out.entry(ns)
                    .or_default()
                    .raft
                    .get_or_insert_with(Default::default)
                    .leader = value >= 1.0
            }
            "unisondb_raft_term" => {
                out.entry(ns)
                    .or_default()
                    .raft
                    .get_or_insert_with(Default::default)
                    .term = value.max(0.0) as u64
            }
            "unisondb_raft_commit_index" => {
                out.entry(ns)
                    .or_default()
                    .raft
                    .get_or_insert_with(Default::default)
                    .commit_index = value.max(0.0) as u64
            }
            // One series per action (truncate, bootstrap): summed per namespace.
            "unisondb_replication_divergences_total" => {
                out.entry(ns).or_default().divergences += value.max(0.0) as u64
            }
            _ => {}
        }
    }
    out
}

/// `name{...namespace="ns"...} value` → (name, ns, value); `None` for comments and other shapes.
fn sample(line: &str) -> Option<(&str, String, f64)> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let open = line.find('{')?;
    let close = line[open..].find('}')? + open;
    let name = &line[..open];
    let labels = &line[open + 1..close];
    let value: f64 = line[close + 1..].split_whitespace().next()?.parse().ok()?;
    let ns = labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == "namespace").then(|| v.trim().trim_matches('"').to_string())
    })?;
    Some((name, ns, value))
}

/// Divergences repaired by the readable pods, in total and as `pod namespace (n)` items; `None`
/// when nothing was readable (keep what the status said before).
pub fn divergences(report: &Connectivity) -> Option<(u64, Vec<String>)> {
    let Connectivity::Observed(pods) = report else {
        return None;
    };
    let mut total = 0;
    let mut where_ = Vec::new();
    let mut readable = false;
    for p in pods {
        let Ok(links) = &p.links else { continue };
        readable = true;
        for (ns, l) in links.iter().filter(|(_, l)| l.divergences > 0) {
            total += l.divergences;
            where_.push(format!("{} {ns} ({})", p.pod, l.divergences));
        }
    }
    readable.then_some((total, where_))
}

/// The condition for `report`: True when every readable pod is connected on every namespace it
/// follows; False naming the pods and namespaces that are not; Unknown when nothing was readable.
pub fn verdict(report: &Connectivity) -> Verdict {
    let pods = match report {
        Connectivity::Unknown(why) => {
            return Verdict {
                status: "Unknown",
                reason: "NotObserved",
                message: why.clone(),
            }
        }
        Connectivity::Observed(pods) => pods,
    };
    let mut down = Vec::new();
    let mut unreadable = Vec::new();
    let mut links = 0usize;
    for p in pods {
        match &p.links {
            Err(e) => unreadable.push(format!("{}: {e}", p.pod)),
            Ok(l) => {
                links += l.values().filter(|l| l.follower).count();
                for (ns, link) in l.iter().filter(|(_, l)| l.follower && !l.connected) {
                    down.push(format!(
                        "{} {ns} (stale {:.0}s)",
                        p.pod, link.staleness_seconds
                    ));
                }
            }
        }
    }
    if !down.is_empty() {
        return Verdict {
            status: "False",
            reason: "UpstreamDisconnected",
            message: format!("disconnected: {}", down.join(", ")),
        };
    }
    if links == 0 {
        let message = if unreadable.is_empty() {
            "no pod reports a replication stream yet".to_string()
        } else {
            format!("metrics unreadable: {}", unreadable.join("; "))
        };
        return Verdict {
            status: "Unknown",
            reason: "NotObserved",
            message,
        };
    }
    let readable = pods.len() - unreadable.len();
    let mut message = format!(
        "{readable}/{} pods connected on every namespace",
        pods.len()
    );
    if !unreadable.is_empty() {
        message.push_str(&format!("; unreadable: {}", unreadable.join("; ")));
    }
    Verdict {
        status: "True",
        reason: "AllConnected",
        message,
    }
}

/// Each pod's state for the status (`role`: `hub` or `relayer`), and the largest lag over every
/// pod and followed namespace (whole seconds rounded up, records); `None` when nothing was read.
pub fn pod_states(
    report: &Connectivity,
    role: &str,
) -> Option<(Vec<PodState>, Option<i64>, Option<i64>)> {
    let Connectivity::Observed(pods) = report else {
        return None;
    };
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let (mut max_s, mut max_r): (Option<i64>, Option<i64>) = (None, None);
    let states = pods
        .iter()
        .map(|p| {
            let (error, namespaces) = match &p.links {
                Err(e) => (Some(e.clone()), Vec::new()),
                Ok(links) => (
                    None,
                    links
                        .iter()
                        .map(|(ns, l)| {
                            let secs = l.lag_seconds.ceil() as i64;
                            let recs = clamp(l.lag_records);
                            if l.follower {
                                max_s = max_s.max(Some(secs));
                                max_r = max_r.max(Some(recs));
                            }
                            NamespaceState {
                                name: ns.clone(),
                                lsn: clamp(l.lsn),
                                connected: l.follower.then_some(l.connected),
                                lag_records: l.follower.then_some(recs),
                                lag_seconds: l.follower.then_some(secs),
                                leader: l.raft.as_ref().map(|r| r.leader),
                                term: l.raft.as_ref().map(|r| clamp(r.term)),
                            }
                        })
                        .collect(),
                ),
            };
            PodState {
                name: p.pod.clone(),
                role: role.to_string(),
                error,
                namespaces,
            }
        })
        .collect();
    Some((states, max_s, max_r))
}

/// Reads how a node's pods are connected; a trait so reconcile tests can script the answer.
pub trait ReplicationProbe: Send + Sync {
    /// Probes the pods matching `selector` in `namespace`.
    fn observe<'a>(&'a self, namespace: &'a str, selector: &'a str) -> BoxFuture<'a, Connectivity>;
}

/// The real probe: lists the pods and GETs `http://<pod IP>:<HTTP port>/metrics` from each
/// (`https` for pods annotated `prometheus.io/scheme: https`; the certificate names the Services,
/// not the pod IP, and metrics carry no secret, so it is not verified).
pub struct PodMetricsProbe {
    client: Client,
    http: reqwest::Client,
}

/// How long one pod may take to answer before it counts as unreadable.
const POD_TIMEOUT: Duration = Duration::from_secs(2);

impl PodMetricsProbe {
    pub fn new(client: Client) -> Self {
        let http = reqwest::Client::builder()
            .timeout(POD_TIMEOUT)
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        PodMetricsProbe { client, http }
    }

    async fn pod_links(&self, scheme: &str, ip: &str) -> Result<BTreeMap<String, Link>, String> {
        let url = format!("{scheme}://{ip}:{HTTP_PORT}/metrics");
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("GET /metrics: {}", resp.status()));
        }
        let body = resp.text().await.map_err(|e| e.to_string())?;
        Ok(parse_metrics(&body))
    }
}

impl ReplicationProbe for PodMetricsProbe {
    fn observe<'a>(&'a self, namespace: &'a str, selector: &'a str) -> BoxFuture<'a, Connectivity> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let pods = match api.list(&ListParams::default().labels(selector)).await {
                Ok(l) => l.items,
                Err(e) => return Connectivity::Unknown(format!("cannot list pods: {e}")),
            };
            let mut reports = Vec::new();
            for pod in pods {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let status = pod.status.as_ref();
                let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
                let Some(ip) = status.and_then(|s| s.pod_ip.clone()).filter(|_| running) else {
                    continue;
                };
                let https = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("prometheus.io/scheme"))
                    .is_some_and(|s| s == "https");
                let links = self
                    .pod_links(if https { "https" } else { "http" }, &ip)
                    .await;
                reports.push(PodReport { pod: name, links });
            }
            if reports.is_empty() {
                Connectivity::Unknown("no running pod".to_string())
            } else {
                Connectivity::Observed(reports)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP unisondb_replication_connected 1 while the WAL stream to the upstream is open
# TYPE unisondb_replication_connected gauge
unisondb_replication_connected{namespace="default"} 1
unisondb_replication_connected{namespace="orders"} 0
unisondb_replication_staleness_seconds{namespace="default"} 0
unisondb_replication_staleness_seconds{namespace="orders"} 41.5
unisondb_lsn{namespace="default"} 120
unisondb_lsn{namespace="orders"} 7
unisondb_lsn{namespace="local"} 3
unisondb_replication_lag_records{namespace="orders"} 5
unisondb_replication_lag_seconds{namespace="orders"} 2.2
unisondb_replication_divergences_total{action="truncate",namespace="orders"} 2
unisondb_replication_divergences_total{action="bootstrap",namespace="orders"} 1
unisondb_http_requests_total{method="GET",route="/readyz",status="200"} 12
"#;

    fn pod(name: &str, links: Result<BTreeMap<String, Link>, String>) -> PodReport {
        PodReport {
            pod: name.into(),
            links,
        }
    }

    #[test]
    fn parses_both_families_per_namespace() {
        let l = parse_metrics(METRICS);
        assert_eq!(l.len(), 3);
        assert!(l["default"].connected);
        assert!(!l["orders"].connected);
        assert_eq!(l["orders"].staleness_seconds, 41.5);
        assert_eq!((l["orders"].divergences, l["default"].divergences), (3, 0));
    }

    #[test]
    fn divergences_are_summed_and_named() {
        let report = Connectivity::Observed(vec![
            pod("edge-0", Ok(parse_metrics(METRICS))),
            pod("edge-1", Err("refused".into())),
        ]);
        assert_eq!(
            divergences(&report),
            Some((3, vec!["edge-0 orders (3)".to_string()]))
        );
        let unreadable = Connectivity::Observed(vec![pod("edge-1", Err("refused".into()))]);
        assert_eq!(divergences(&unreadable), None);
        assert_eq!(divergences(&Connectivity::Unknown("x".into())), None);
    }

    #[test]
    fn pod_states_carry_lsn_and_lag_and_the_maximum() {
        let report = Connectivity::Observed(vec![
            pod("edge-0", Ok(parse_metrics(METRICS))),
            pod("edge-1", Err("refused".into())),
        ]);
        let (pods, max_s, max_r) = pod_states(&report, "relayer").expect("observed");
        assert_eq!((max_s, max_r), (Some(3), Some(5)), "2.2 s rounds up");
        assert_eq!(pods[0].role, "relayer");
        let orders = pods[0]
            .namespaces
            .iter()
            .find(|n| n.name == "orders")
            .unwrap();
        assert_eq!(
            (orders.lsn, orders.connected, orders.lag_records),
            (7, Some(false), Some(5))
        );
        // a namespace the pod owns (no replication metrics) has an LSN and no lag
        let local = pods[0]
            .namespaces
            .iter()
            .find(|n| n.name == "local")
            .unwrap();
        assert_eq!(
            (local.lsn, local.connected, local.lag_seconds),
            (3, None, None)
        );
        assert_eq!(pods[1].error.as_deref(), Some("refused"));
        assert_eq!(pod_states(&Connectivity::Unknown("x".into()), "hub"), None);
    }

    #[test]
    fn owned_namespaces_do_not_make_a_hub_disconnected() {
        let hub = "unisondb_lsn{namespace=\"default\"} 9\n";
        let v = verdict(&Connectivity::Observed(vec![pod(
            "hub-0",
            Ok(parse_metrics(hub)),
        )]));
        assert_eq!(
            v.status, "Unknown",
            "no followed namespace: nothing to judge"
        );
    }

    #[test]
    fn garbage_parses_to_nothing() {
        for text in [
            "",
            "x{",
            "unisondb_replication_connected{namespace=\"a\"} nope",
            "}{ 1",
        ] {
            assert!(parse_metrics(text).is_empty(), "{text:?}");
        }
    }

    #[test]
    fn one_disconnected_namespace_makes_it_false_and_names_it() {
        let v = verdict(&Connectivity::Observed(vec![
            pod("edge-0", Ok(parse_metrics(METRICS))),
            pod(
                "edge-1",
                Ok(parse_metrics(&METRICS.replace("} 0\n", "} 1\n"))),
            ),
        ]));
        assert_eq!(v.status, "False");
        assert_eq!(v.reason, "UpstreamDisconnected");
        assert!(
            v.message.contains("edge-0 orders (stale 42s)"),
            "{}",
            v.message
        );
        assert!(!v.message.contains("edge-1"), "{}", v.message);
    }

    #[test]
    fn all_connected_is_true_and_unreadable_pods_are_noted() {
        let up = METRICS
            .replace("{namespace=\"orders\"} 0", "{namespace=\"orders\"} 1")
            .replace("41.5", "0");
        let v = verdict(&Connectivity::Observed(vec![
            pod("edge-0", Ok(parse_metrics(&up))),
            pod("edge-1", Err("timed out".into())),
        ]));
        assert_eq!((v.status, v.reason), ("True", "AllConnected"));
        assert!(v.message.starts_with("1/2 pods"), "{}", v.message);
        assert!(v.message.contains("edge-1: timed out"), "{}", v.message);
    }

    #[test]
    fn nothing_readable_is_unknown() {
        assert_eq!(
            verdict(&Connectivity::Unknown("no running pod".into())).status,
            "Unknown"
        );
        let v = verdict(&Connectivity::Observed(vec![pod(
            "a",
            Err("refused".into()),
        )]));
        assert_eq!((v.status, v.reason), ("Unknown", "NotObserved"));
        let v = verdict(&Connectivity::Observed(vec![pod("a", Ok(BTreeMap::new()))]));
        assert_eq!(v.status, "Unknown");
    }
}
