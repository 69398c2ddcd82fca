//! Mocked-API scenarios of `reconcile()`: a `kube::Client` over a `tower_test` mock service, the
//! test playing the API server. Each scenario asserts the exact sequence of calls one reconcile
//! makes (reads, server-side applies, the status patch, events) and what they carry.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::api::{ApiResource, GroupVersionKind};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use futures::future::BoxFuture;
use unisondb_operator::apply::PdbSupport;
use unisondb_operator::connectivity::{Connectivity, Link, PodReport, ReplicationProbe};
use unisondb_operator::crd::{NodeStatus, UnisonHub, UnisonRelayer};
use unisondb_operator::kind::NodeKind;
use unisondb_operator::metrics::{ErrorLabel, Metrics};
use unisondb_operator::reconcile::{self, Context, CONNECTIVITY_RESYNC, RESYNC};
use unisondb_operator::Error;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

const NS: &str = "default";
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// One API call the operator made.
struct Call {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
    responder: Responder,
}

impl Call {
    fn reply(self, status: u16, body: &Value) {
        let bytes = serde_json::to_vec(body).expect("serializable response");
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .expect("response");
        self.responder.send_response(response);
    }

    /// Answers as the API server does for a missing object.
    fn not_found(self) {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{} not found", self.path), "reason": "NotFound", "code": 404
        });
        self.reply(404, &body);
    }
}

/// The API server side of the mock.
struct ApiServer(Handle);

impl ApiServer {
    async fn next(&mut self) -> Call {
        let (req, responder) = self
            .0
            .next_request()
            .await
            .expect("the operator made no further API call");
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        Call {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body,
            responder,
        }
    }

    /// The next call must be `method path`.
    async fn expect(&mut self, method: Method, path: &str) -> Call {
        let call = self.next().await;
        assert_eq!(
            (&call.method, call.path.as_str()),
            (&method, path),
            "unexpected API call"
        );
        call
    }

    /// The next call must be a forced server-side apply by the operator's field manager to
    /// `path`; answered with the applied object. Returns what was applied.
    async fn expect_apply(&mut self, path: &str) -> Value {
        let call = self.expect(Method::PATCH, path).await;
        assert_eq!(call.content_type, "application/apply-patch+yaml");
        assert!(
            call.query.contains("fieldManager=unisondb-operator")
                && call.query.contains("force=true"),
            "server-side apply, forced, as unisondb-operator: {}",
            call.query
        );
        let body = call.body.clone();
        call.reply(200, &body);
        body
    }

    /// The next call must be a merge patch of `path`'s status subresource; answered with `obj`
    /// carrying the new status. Returns the status written.
    async fn expect_status_patch(&mut self, path: &str, obj: &Value) -> NodeStatus {
        let call = self.expect(Method::PATCH, &format!("{path}/status")).await;
        assert_eq!(call.content_type, "application/merge-patch+json");
        let status = call.body["status"].clone();
        let mut answer = obj.clone();
        answer["status"] = status.clone();
        call.reply(200, &answer);
        serde_json::from_value(status).expect("status patch carries a NodeStatus")
    }

    /// The next call must create a Warning event with `reason`.
    /// A relayer `edge` made from scratch: its StatefulSet is read (absent), then the ConfigMap,
    /// ServiceAccount and both Services are applied in order, and the PDB when `pdb`.
    async fn expect_new_edge(&mut self, pdb: bool) {
        self.expect(Method::GET, &sts_path("edge"))
            .await
            .not_found();
        for path in [
            "/api/v1/namespaces/default/configmaps/edge-config",
            "/api/v1/namespaces/default/serviceaccounts/edge",
            "/api/v1/namespaces/default/services/edge-headless",
            "/api/v1/namespaces/default/services/edge",
        ] {
            self.expect_apply(path).await;
        }
        if pdb {
            self.expect_apply("/apis/policy/v1/namespaces/default/poddisruptionbudgets/edge")
                .await;
        }
    }

    async fn expect_normal_event(&mut self, reason: &str) -> String {
        let call = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
            )
            .await;
        assert_eq!(call.body["type"], "Normal");
        assert_eq!(call.body["reason"], reason);
        let note = call.body["note"].as_str().unwrap_or_default().to_string();
        let body = call.body.clone();
        call.reply(201, &body);
        note
    }

    async fn expect_warning_event(&mut self, reason: &str) {
        let call = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
            )
            .await;
        assert_eq!(call.body["type"], "Warning");
        assert_eq!(call.body["reason"], reason);
        let body = call.body.clone();
        call.reply(201, &body);
    }
}

fn pdb_v1() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy", "v1", "PodDisruptionBudget"),
        "poddisruptionbudgets",
    )
}

/// What the pods of a following node report, scripted (the real probe GETs each pod's /metrics).
struct Scripted(Connectivity);

impl ReplicationProbe for Scripted {
    fn observe<'a>(&'a self, _ns: &'a str, _selector: &'a str) -> BoxFuture<'a, Connectivity> {
        Box::pin(async move { self.0.clone() })
    }
}

/// Pods `edge-0..n`, each following `orders` and `users`, `orders` connected or not.
fn pods_report(n: usize, orders_connected: bool) -> Connectivity {
    Connectivity::Observed(
        (0..n)
            .map(|i| PodReport {
                pod: format!("edge-{i}"),
                links: Ok(BTreeMap::from([
                    (
                        "orders".to_string(),
                        Link {
                            follower: true,
                            connected: orders_connected,
                            staleness_seconds: if orders_connected { 0.0 } else { 12.0 },
                            ..Default::default()
                        },
                    ),
                    (
                        "users".to_string(),
                        Link {
                            follower: true,
                            connected: true,
                            ..Default::default()
                        },
                    ),
                ])),
            })
            .collect(),
    )
}

/// A context whose client talks to the returned mock API server.
fn harness(pdb: Option<PdbSupport>) -> (Arc<Context>, ApiServer) {
    harness_with(pdb, pods_report(3, true))
}

fn harness_with(pdb: Option<PdbSupport>, pods: Connectivity) -> (Arc<Context>, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let ctx = Context::new(
        client,
        Arc::new(Metrics::new()),
        "cluster.local".into(),
        "test".into(),
    )
    .with_probe(Arc::new(Scripted(pods)));
    let ctx = match pdb {
        Some(p) => ctx.with_pdb(p),
        None => ctx,
    };
    (Arc::new(ctx), ApiServer(handle))
}

/// Runs one reconcile of `obj` against `script` (the API server's side). Fails if the script's
/// calls are not all made, or if the operator makes a call the script does not answer.
async fn scenario<K, F, Fut>(
    obj: &Value,
    pdb: Option<PdbSupport>,
    script: F,
) -> (Result<Action, Error>, Arc<Context>)
where
    K: NodeKind,
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ApiServer> + Send + 'static,
{
    scenario_with::<K, F, Fut>(obj, harness(pdb), script).await
}

/// [`scenario`] with a given context (e.g. other pod reports).
async fn scenario_with<K, F, Fut>(
    obj: &Value,
    (ctx, api): (Arc<Context>, ApiServer),
    script: F,
) -> (Result<Action, Error>, Arc<Context>)
where
    K: NodeKind,
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ApiServer> + Send + 'static,
{
    let obj: K = serde_json::from_value(obj.clone()).expect("fixture parses");
    let server = tokio::spawn(script(api));
    let reconciling = tokio::spawn(reconcile::reconcile(Arc::new(obj), ctx.clone()));
    let mut api = tokio::time::timeout(STEP_TIMEOUT, server)
        .await
        .expect("the operator made every expected API call")
        .expect("the API server's assertions held");
    let result = match tokio::time::timeout(STEP_TIMEOUT, reconciling).await {
        Ok(r) => r.expect("reconcile did not panic"),
        Err(_) => match api.0.poll_request() {
            Poll::Ready(Some((req, _))) => {
                panic!("unexpected API call {} {}", req.method(), req.uri())
            }
            _ => panic!("reconcile hung"),
        },
    };
    if let Poll::Ready(Some((req, _))) = api.0.poll_request() {
        panic!("unexpected API call {} {}", req.method(), req.uri());
    }
    (result, ctx)
}

fn hub_fixture(status: Option<&NodeStatus>) -> Value {
    let mut hub = json!({
        "apiVersion": "unisondb.io/v1alpha1", "kind": "UnisonHub",
        "metadata": {"name": "hub", "namespace": NS, "uid": "uid-hub", "generation": 1},
        "spec": {"image": "unisondb:test", "namespaces": ["orders", "users"]}
    });
    if let Some(s) = status {
        hub["status"] = serde_json::to_value(s).expect("status serializes");
    }
    hub
}

fn relayer_fixture(upstream: Value, replicas: i32) -> Value {
    json!({
        "apiVersion": "unisondb.io/v1alpha1", "kind": "UnisonRelayer",
        "metadata": {"name": "edge", "namespace": NS, "uid": "uid-edge", "generation": 3},
        "spec": {"image": "unisondb:test", "upstream": upstream, "replicas": replicas}
    })
}

const HUB: &str = "/apis/unisondb.io/v1alpha1/namespaces/default/unisonhubs/hub";
const EDGE: &str = "/apis/unisondb.io/v1alpha1/namespaces/default/unisonrelayers/edge";

fn sts_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{name}")
}

fn cond<'a>(s: &'a NodeStatus, t: &str) -> (&'a str, &'a str) {
    let c = s
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("condition {t}"));
    (c.status.as_str(), c.reason.as_str())
}

/// The StatefulSet as the server returns it after an apply: the applied object plus a status.
fn with_sts_status(mut applied: Value, replicas: i32, ready: i32) -> Value {
    applied["metadata"]["generation"] = json!(1);
    applied["status"] = json!({
        "replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas,
        "observedGeneration": 1
    });
    applied
}

/// Plays a hub's first reconcile: no StatefulSet yet, every object applied in order, status
/// written. Returns the status written and the StatefulSet as served.
async fn first_hub_reconcile(api: &mut ApiServer, sts_ready: bool) -> (NodeStatus, Value) {
    api.expect(Method::GET, &sts_path("hub")).await.not_found();
    // no mirrors: no referenced hub is read
    let cm = api
        .expect_apply("/api/v1/namespaces/default/configmaps/hub-config")
        .await;
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["uid"], "uid-hub");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["controller"], true);
    let config = cm["data"]["config.yaml"].as_str().expect("config.yaml");
    assert!(config.contains("mode: replicator"), "{config}");
    let sa = api
        .expect_apply("/api/v1/namespaces/default/serviceaccounts/hub")
        .await;
    assert_eq!(sa["automountServiceAccountToken"], false);
    let headless = api
        .expect_apply("/api/v1/namespaces/default/services/hub-headless")
        .await;
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let client = api
        .expect_apply("/api/v1/namespaces/default/services/hub")
        .await;
    assert_eq!(client["spec"]["type"], "ClusterIP");
    // one replica: a PDB of ours left from earlier would be removed (read first; absent is fine)
    api.expect(
        Method::GET,
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/hub",
    )
    .await
    .not_found();
    let call = api.expect(Method::PATCH, &sts_path("hub")).await;
    let sts = call.body.clone();
    assert_eq!(sts["spec"]["replicas"], 1);
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["image"],
        "unisondb:test"
    );
    let served = with_sts_status(sts, 1, i32::from(sts_ready));
    call.reply(200, &served);
    let status = api.expect_status_patch(HUB, &hub_fixture(None)).await;
    let note = api.expect_normal_event("Created").await;
    assert_eq!(note, "StatefulSet hub created with 1 replica(s)");
    (status, served)
}

#[tokio::test]
async fn hub_first_reconcile_applies_in_order_then_writes_status() {
    let pdb = Some(PdbSupport::known(Some(pdb_v1())));
    let (result, _) = scenario::<UnisonHub, _, _>(&hub_fixture(None), pdb, |mut api| async move {
        let (status, _) = first_hub_reconcile(&mut api, false).await;
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.depth, Some(0));
        assert_eq!(
            status.grpc_endpoint.as_deref(),
            Some("http://hub.default.svc.cluster.local:4001")
        );
        assert!(status.config_hash.is_some());
        assert_eq!(
            status.selector,
            "app.kubernetes.io/component=hub,app.kubernetes.io/instance=hub,app.kubernetes.io/name=unisondb"
        );
        assert_eq!(cond(&status, "Ready"), ("False", "ReplicasNotReady"));
        assert_eq!(cond(&status, "Progressing"), ("True", "RollingOut"));
        assert_eq!(cond(&status, "Degraded"), ("False", "AsExpected"));
        api
    })
    .await;
    assert_eq!(result.expect("reconcile succeeds"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn steady_state_hub_writes_no_status() {
    let pdb = || Some(PdbSupport::known(Some(pdb_v1())));
    // First reconcile: learn the status the operator writes for a ready hub.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (result, _) =
        scenario::<UnisonHub, _, _>(&hub_fixture(None), pdb(), |mut api| async move {
            let (status, served) = first_hub_reconcile(&mut api, true).await;
            assert_eq!(cond(&status, "Ready"), ("True", "AllReplicasReady"));
            assert_eq!(cond(&status, "Progressing"), ("False", "Stable"));
            tx.send((status, served)).expect("status handed over");
            api
        })
        .await;
    result.expect("first reconcile succeeds");
    let (status, served) = rx.await.expect("status written");

    // Second reconcile of the object now carrying that status, its StatefulSet in place: the same
    // (no-op) applies, and no status patch.
    let (result, _) =
        scenario::<UnisonHub, _, _>(&hub_fixture(Some(&status)), pdb(), |mut api| async move {
            api.expect(Method::GET, &sts_path("hub"))
                .await
                .reply(200, &served);
            for path in [
                "/api/v1/namespaces/default/configmaps/hub-config",
                "/api/v1/namespaces/default/serviceaccounts/hub",
                "/api/v1/namespaces/default/services/hub-headless",
                "/api/v1/namespaces/default/services/hub",
            ] {
                api.expect_apply(path).await;
            }
            api.expect(
                Method::GET,
                "/apis/policy/v1/namespaces/default/poddisruptionbudgets/hub",
            )
            .await
            .not_found();
            let call = api.expect(Method::PATCH, &sts_path("hub")).await;
            let again = with_sts_status(call.body.clone(), 1, 1);
            assert_eq!(again, served, "the same StatefulSet is built again");
            call.reply(200, &served);
            api
        })
        .await;
    assert_eq!(result.expect("reconcile succeeds"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn relayer_discovers_pdb_api_reads_its_hub_and_applies_a_pdb() {
    let rel = relayer_fixture(json!({"hubRef": {"name": "hub"}}), 3);
    let answer = rel.clone();
    let (result, _) = scenario::<UnisonRelayer, _, _>(&rel, None, |mut api| async move {
        api.expect(Method::GET, &sts_path("edge")).await.not_found();
        // PDB API discovery (once per process)
        api.expect(Method::GET, "/apis/policy/v1").await.reply(
            200,
            &json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "policy/v1",
                "resources": [{"name": "poddisruptionbudgets", "singularName": "poddisruptionbudget",
                               "namespaced": true, "kind": "PodDisruptionBudget",
                               "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}]
            }),
        );
        // the upstream chain: one hub
        api.expect(Method::GET, HUB)
            .await
            .reply(200, &hub_fixture(None));
        let cm = api
            .expect_apply("/api/v1/namespaces/default/configmaps/edge-config")
            .await;
        let config = cm["data"]["config.yaml"].as_str().expect("config.yaml");
        assert!(config.contains("mode: relayer"), "{config}");
        assert!(
            config.contains("upstream: http://hub.default.svc.cluster.local:4001"),
            "{config}"
        );
        assert!(
            config.contains("- orders") && config.contains("- users"),
            "{config}"
        );
        api.expect_apply("/api/v1/namespaces/default/serviceaccounts/edge")
            .await;
        api.expect_apply("/api/v1/namespaces/default/services/edge-headless")
            .await;
        api.expect_apply("/api/v1/namespaces/default/services/edge")
            .await;
        let pdb = api
            .expect_apply("/apis/policy/v1/namespaces/default/poddisruptionbudgets/edge")
            .await;
        assert_eq!(pdb["apiVersion"], "policy/v1");
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        let call = api.expect(Method::PATCH, &sts_path("edge")).await;
        let sts = call.body.clone();
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        call.reply(200, &with_sts_status(sts, 3, 3));
        let status = api.expect_status_patch(EDGE, &answer).await;
        assert_eq!(status.depth, Some(1));
        assert_eq!(
            status.upstream.as_deref(),
            Some("http://hub.default.svc.cluster.local:4001")
        );
        assert_eq!(status.upstream_ref.as_deref(), Some("UnisonHub/default/hub"));
        assert_eq!((status.replicas, status.ready_replicas), (3, 3));
        assert_eq!(cond(&status, "Ready"), ("True", "AllReplicasReady"));
        assert_eq!(cond(&status, "Degraded"), ("False", "AsExpected"));
        assert_eq!(cond(&status, "Connected"), ("True", "AllConnected"));
        // per-pod state from the pods' reports, and the lag summary for `-o wide`
        assert_eq!(status.pods.len(), 3);
        assert_eq!(status.pods[0].role, "relayer");
        assert_eq!(status.pods[0].namespaces[0].connected, Some(true));
        assert_eq!((status.max_lag_seconds, status.max_lag_records), (Some(0), Some(0)));
        api.expect_normal_event("Created").await;
        api
    })
    .await;
    // A following node is requeued often enough to keep Connected current.
    assert_eq!(
        result.expect("reconcile succeeds"),
        Action::requeue(CONNECTIVITY_RESYNC)
    );
}

/// A relayer whose pods lost their upstream stays Ready (it serves reads) and says so in
/// Connected=False, naming the pod and namespace.
#[tokio::test]
async fn disconnected_relayer_stays_ready_and_reports_connected_false() {
    let mut rel = relayer_fixture(json!({"address": "http://hub.example:4001"}), 2);
    rel["spec"]["namespaces"] = json!(["orders", "users"]);
    let answer = rel.clone();
    let ctx = harness_with(
        Some(PdbSupport::known(Some(pdb_v1()))),
        pods_report(2, false),
    );
    let (result, _) = scenario_with::<UnisonRelayer, _, _>(&rel, ctx, |mut api| async move {
        api.expect_new_edge(true).await;
        let call = api.expect(Method::PATCH, &sts_path("edge")).await;
        let sts = call.body.clone();
        call.reply(200, &with_sts_status(sts, 2, 2));
        let status = api.expect_status_patch(EDGE, &answer).await;
        assert_eq!(cond(&status, "Ready"), ("True", "AllReplicasReady"));
        assert_eq!(
            cond(&status, "Connected"),
            ("False", "UpstreamDisconnected")
        );
        let msg = &status
            .conditions
            .iter()
            .find(|c| c.type_ == "Connected")
            .expect("Connected")
            .message;
        assert!(
            msg.contains("edge-0 orders") && msg.contains("edge-1 orders"),
            "{msg}"
        );
        assert!(!msg.contains("users"), "{msg}");
        api.expect_normal_event("Created").await;
        api
    })
    .await;
    result.expect("reconcile succeeds");
}

/// A pod that repaired a history divergence: counted in status and announced by a Warning event
/// (once: the next reconcile sees the same count in the status it wrote).
#[tokio::test]
async fn repaired_divergence_is_counted_in_status_and_announced() {
    let mut rel = relayer_fixture(json!({"address": "http://hub.example:4001"}), 1);
    rel["spec"]["namespaces"] = json!(["orders", "users"]);
    let answer = rel.clone();
    let mut pods = pods_report(1, true);
    if let Connectivity::Observed(p) = &mut pods {
        if let Ok(links) = &mut p[0].links {
            links.get_mut("orders").expect("orders").divergences = 2;
        }
    }
    let ctx = harness_with(Some(PdbSupport::known(Some(pdb_v1()))), pods);
    let (result, _) = scenario_with::<UnisonRelayer, _, _>(&rel, ctx, |mut api| async move {
        api.expect_new_edge(false).await;
        // one replica: no PDB wanted; a stale one of ours would be deleted
        api.expect(
            Method::GET,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/edge",
        )
        .await
        .not_found();
        let call = api.expect(Method::PATCH, &sts_path("edge")).await;
        let sts = call.body.clone();
        call.reply(200, &with_sts_status(sts, 1, 1));
        let status = api.expect_status_patch(EDGE, &answer).await;
        assert_eq!(status.replication_divergences, Some(2));
        api.expect_warning_event("HistoryDiverged").await;
        api.expect_normal_event("Created").await;
        api
    })
    .await;
    result.expect("reconcile succeeds");
}

const PDB_PATH: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets/edge";

fn pdb_owned_by(uid: &str) -> Value {
    json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
           "metadata": {"name": "edge", "namespace": NS, "uid": "uid-pdb",
                        "ownerReferences": [{"apiVersion": "x/v1", "kind": "X", "name": "x", "uid": uid}]},
           "spec": {"maxUnavailable": 1}})
}

/// Scaled to one replica: the PDB is removed only if this node owns it; a user's PDB of the same
/// name is left alone (the delete is also conditional on the PDB's uid).
#[tokio::test]
async fn scale_down_deletes_only_an_owned_pdb() {
    for (owner, deleted) in [("uid-edge", true), ("uid-of-someone-else", false)] {
        let mut rel = relayer_fixture(json!({"address": "http://hub.example:4001"}), 1);
        rel["spec"]["namespaces"] = json!(["orders"]);
        let answer = rel.clone();
        let ctx = harness_with(
            Some(PdbSupport::known(Some(pdb_v1()))),
            pods_report(1, true),
        );
        let (result, _) = scenario_with::<UnisonRelayer, _, _>(&rel, ctx, |mut api| async move {
            api.expect_new_edge(false).await;
            api.expect(Method::GET, PDB_PATH)
                .await
                .reply(200, &pdb_owned_by(owner));
            if deleted {
                let call = api.expect(Method::DELETE, PDB_PATH).await;
                assert_eq!(
                    call.body["preconditions"]["uid"], "uid-pdb",
                    "the delete is conditional on the PDB's uid"
                );
                call.reply(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                );
            }
            let call = api.expect(Method::PATCH, &sts_path("edge")).await;
            let sts = call.body.clone();
            call.reply(200, &with_sts_status(sts, 1, 1));
            api.expect_status_patch(EDGE, &answer).await;
            api.expect_normal_event("Created").await;
            api
        })
        .await;
        result.expect("reconcile succeeds");
    }
}

/// `storage.size` above the existing template's: the StatefulSet keeps its template (immutable),
/// each smaller PVC is patched to the new size, and `VolumesResized` reports progress.
#[tokio::test]
async fn larger_storage_grows_each_pvc_and_reports_progress() {
    let mut rel = relayer_fixture(json!({"address": "http://hub.example:4001"}), 2);
    rel["spec"]["namespaces"] = json!(["orders"]);
    rel["spec"]["storage"] = json!({"size": "2Gi"});
    let answer = rel.clone();
    let ctx = harness_with(
        Some(PdbSupport::known(Some(pdb_v1()))),
        pods_report(2, true),
    );
    let (result, _) = scenario_with::<UnisonRelayer, _, _>(&rel, ctx, |mut api| async move {
        let existing = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "edge", "namespace": NS, "generation": 1},
            "spec": {"replicas": 2, "selector": {}, "serviceName": "edge-headless", "template": {},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"},
                        "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]}
        });
        api.expect(Method::GET, &sts_path("edge"))
            .await
            .reply(200, &existing);
        for path in [
            "/api/v1/namespaces/default/configmaps/edge-config",
            "/api/v1/namespaces/default/serviceaccounts/edge",
            "/api/v1/namespaces/default/services/edge-headless",
            "/api/v1/namespaces/default/services/edge",
            PDB_PATH,
        ] {
            api.expect_apply(path).await;
        }
        let call = api.expect(Method::PATCH, &sts_path("edge")).await;
        let sts = call.body.clone();
        let tpl = &sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"];
        assert_eq!(tpl["storage"], "1Gi", "the template keeps its size");
        call.reply(200, &with_sts_status(sts, 2, 2));
        let list = api
            .expect(
                Method::GET,
                "/api/v1/namespaces/default/persistentvolumeclaims",
            )
            .await;
        assert!(list.query.contains("labelSelector="), "{}", list.query);
        let pvc = |name: &str, size: &str| {
            json!({"metadata": {"name": name, "namespace": NS},
                   "spec": {"resources": {"requests": {"storage": size}}},
                   "status": {"phase": "Bound", "capacity": {"storage": size}}})
        };
        list.reply(
            200,
            &json!({"kind": "PersistentVolumeClaimList", "apiVersion": "v1", "metadata": {},
                    "items": [pvc("data-edge-0", "1Gi"), pvc("data-edge-1", "2048Mi")]}),
        );
        // only the smaller one is patched (2048Mi is 2Gi)
        let patch = api
            .expect(
                Method::PATCH,
                "/api/v1/namespaces/default/persistentvolumeclaims/data-edge-0",
            )
            .await;
        assert_eq!(
            patch.body["spec"]["resources"]["requests"]["storage"],
            "2Gi"
        );
        let body = pvc("data-edge-0", "2Gi");
        patch.reply(200, &body);
        let status = api.expect_status_patch(EDGE, &answer).await;
        assert_eq!(cond(&status, "VolumesResized"), ("False", "Resizing"));
        assert_eq!(cond(&status, "Degraded"), ("False", "AsExpected"));
        let note = api.expect_normal_event("RollingUpdate").await;
        assert!(note.contains("image (none) → unisondb:test"), "{note}");
        api
    })
    .await;
    assert_eq!(
        result.expect("reconcile succeeds"),
        Action::requeue(reconcile::RESIZE_RESYNC),
        "progress is looked at again soon while volumes grow"
    );
}

#[tokio::test]
async fn invalid_spec_is_degraded_and_applies_nothing() {
    // Two upstream kinds at once: the CRD's CEL rule refuses it, and so does the operator (API
    // servers before 1.25 drop CEL rules).
    let rel = relayer_fixture(
        json!({"hubRef": {"name": "hub"}, "address": "http://far:4001"}),
        1,
    );
    let pdb = Some(PdbSupport::known(Some(pdb_v1())));
    let answer = rel.clone();
    let (result, _) = scenario::<UnisonRelayer, _, _>(&rel, pdb, |mut api| async move {
        api.expect(Method::GET, &sts_path("edge")).await.not_found();
        // no upstream is read, nothing is applied: straight to status
        let status = api.expect_status_patch(EDGE, &answer).await;
        assert_eq!(cond(&status, "Degraded"), ("True", "InvalidUpstream"));
        assert_eq!(cond(&status, "Progressing"), ("False", "Blocked"));
        assert_eq!(cond(&status, "Ready"), ("False", "ReplicasNotReady"));
        assert_eq!(status.depth, None);
        api.expect_warning_event("InvalidUpstream").await;
        api
    })
    .await;
    assert_eq!(
        result.expect("a refused spec is not a reconcile error"),
        Action::requeue(CONNECTIVITY_RESYNC)
    );
}

#[tokio::test]
async fn missing_upstream_keeps_the_running_statefulset() {
    let rel = relayer_fixture(json!({"hubRef": {"name": "gone"}}), 2);
    let pdb = Some(PdbSupport::known(Some(pdb_v1())));
    let answer = rel.clone();
    let (result, _) = scenario::<UnisonRelayer, _, _>(&rel, pdb, |mut api| async move {
        let existing = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "edge", "namespace": NS, "generation": 4},
            "spec": {"replicas": 2, "selector": {}, "serviceName": "edge-headless", "template": {}},
            "status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "observedGeneration": 4}
        });
        api.expect(Method::GET, &sts_path("edge"))
            .await
            .reply(200, &existing);
        api.expect(
            Method::GET,
            "/apis/unisondb.io/v1alpha1/namespaces/default/unisonhubs/gone",
        )
        .await
        .not_found();
        // nothing applied, nothing deleted: the pods keep serving reads
        let status = api.expect_status_patch(EDGE, &answer).await;
        assert_eq!(cond(&status, "Degraded"), ("True", "UpstreamNotFound"));
        assert_eq!(cond(&status, "Ready"), ("True", "AllReplicasReady"));
        assert_eq!(status.ready_replicas, 2);
        api.expect_warning_event("UpstreamNotFound").await;
        api
    })
    .await;
    assert_eq!(
        result.expect("reconcile succeeds"),
        Action::requeue(CONNECTIVITY_RESYNC)
    );
}

/// A rejected spec with a running StatefulSet: what is valid still applies (a new image rolls the
/// pods), what the problem touches stays as it runs (the config hash, the claim template); the
/// problem is reported.
#[tokio::test]
async fn a_problem_elsewhere_does_not_stop_an_image_upgrade() {
    let mut rel = relayer_fixture(json!({"hubRef": {"name": "gone"}}), 2);
    rel["spec"]["image"] = json!("unisondb:new");
    let pdb = Some(PdbSupport::known(Some(pdb_v1())));
    let answer = rel.clone();
    let (result, _) = scenario::<UnisonRelayer, _, _>(&rel, pdb, |mut api| async move {
        let existing = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "edge", "namespace": NS, "generation": 4},
            "spec": {"replicas": 2, "selector": {}, "serviceName": "edge-headless",
                     "template": {"metadata": {"annotations": {"unisondb.io/config-hash": "oldhash"}},
                                  "spec": {"containers": [{"name": "unisondb", "image": "unisondb:old"}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"},
                        "spec": {"resources": {"requests": {"storage": "3Gi"}}}}]},
            "status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "observedGeneration": 4}
        });
        api.expect(Method::GET, &sts_path("edge"))
            .await
            .reply(200, &existing);
        api.expect(
            Method::GET,
            "/apis/unisondb.io/v1alpha1/namespaces/default/unisonhubs/gone",
        )
        .await
        .not_found();
        // no ConfigMap, Services or PDB: straight to the StatefulSet
        let call = api.expect(Method::PATCH, &sts_path("edge")).await;
        let sts = call.body.clone();
        let tpl = &sts["spec"]["template"];
        assert_eq!(tpl["spec"]["containers"][0]["image"], "unisondb:new");
        assert_eq!(
            tpl["metadata"]["annotations"]["unisondb.io/config-hash"], "oldhash",
            "the running config is kept"
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            "3Gi"
        );
        call.reply(200, &with_sts_status(sts, 2, 2));
        let status = api.expect_status_patch(EDGE, &answer).await;
        assert_eq!(cond(&status, "Degraded"), ("True", "UpstreamNotFound"));
        api.expect_warning_event("UpstreamNotFound").await;
        let note = api.expect_normal_event("RollingUpdate").await;
        assert!(note.contains("unisondb:old → unisondb:new"), "{note}");
        api
    })
    .await;
    result.expect("reconcile succeeds");
}

#[tokio::test]
async fn apply_refused_by_the_server_fails_with_an_event_and_backs_off() {
    let pdb = Some(PdbSupport::known(None));
    let (result, ctx) =
        scenario::<UnisonHub, _, _>(&hub_fixture(None), pdb, |mut api| async move {
            api.expect(Method::GET, &sts_path("hub")).await.not_found();
            let call = api
                .expect(
                    Method::PATCH,
                    "/api/v1/namespaces/default/configmaps/hub-config",
                )
                .await;
            call.reply(
            422,
            &json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "ConfigMap \"hub-config\" is invalid", "reason": "Invalid", "code": 422
            }),
        );
            // the refusal is a condition (not only an event); nothing else is attempted
            let status = api.expect_status_patch(HUB, &hub_fixture(None)).await;
            assert_eq!(cond(&status, "Degraded"), ("True", "ApplyRejected"));
            let msg = &status
                .conditions
                .iter()
                .find(|c| c.type_ == "Degraded")
                .expect("Degraded")
                .message;
            assert!(msg.contains("hub-config\" is invalid"), "{msg}");
            api.expect_warning_event("Invalid").await;
            api
        })
        .await;
    let err = result.expect_err("a refused apply fails the reconcile");
    assert_eq!(err.reason(), "Invalid");
    let hub: UnisonHub = serde_json::from_value(hub_fixture(None)).expect("fixture");
    let hub = Arc::new(hub);
    let first = reconcile::error_policy(hub.clone(), &err, ctx.clone());
    let second = reconcile::error_policy(hub, &err, ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(2)));
    assert_eq!(second, Action::requeue(Duration::from_secs(4)));
    let counted = ctx
        .metrics
        .errors
        .get_or_create(&ErrorLabel {
            kind: "UnisonHub".into(),
            reason: "Invalid".into(),
        })
        .get();
    assert_eq!(counted, 2, "errors counted by kind and reason");
}

fn cert_manager_hub() -> Value {
    let mut hub = hub_fixture(None);
    hub["spec"]["tls"] = json!({"certManager": {
        "issuerRef": {"name": "unisondb-ca", "kind": "ClusterIssuer"}, "renewBefore": "360h"
    }});
    hub
}

const CERT_MANAGER_DISCOVERY: &str = "/apis/cert-manager.io/v1";

#[tokio::test]
async fn cert_manager_certificate_is_applied_before_the_statefulset_that_mounts_it() {
    let pdb = Some(PdbSupport::known(Some(pdb_v1())));
    let (result, _) = scenario::<UnisonHub, _, _>(&cert_manager_hub(), pdb, |mut api| async move {
        api.expect(Method::GET, &sts_path("hub")).await.not_found();
        // cert-manager's API is discovered because the spec asks for a Certificate
        api.expect(Method::GET, CERT_MANAGER_DISCOVERY).await.reply(
            200,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "cert-manager.io/v1",
                "resources": [{"name": "certificates", "singularName": "certificate", "namespaced": true,
                    "kind": "Certificate", "verbs": ["get", "list", "watch", "create", "patch"]}]}),
        );
        for path in [
            "/api/v1/namespaces/default/configmaps/hub-config",
            "/api/v1/namespaces/default/serviceaccounts/hub",
            "/api/v1/namespaces/default/services/hub-headless",
            "/api/v1/namespaces/default/services/hub",
        ] {
            api.expect_apply(path).await;
        }
        api.expect(
            Method::GET,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/hub",
        )
        .await
        .not_found();
        let cert = api
            .expect_apply("/apis/cert-manager.io/v1/namespaces/default/certificates/hub")
            .await;
        assert_eq!(cert["kind"], "Certificate");
        assert_eq!(cert["metadata"]["ownerReferences"][0]["uid"], "uid-hub");
        assert_eq!(cert["spec"]["secretName"], "hub-tls");
        assert_eq!(
            cert["spec"]["issuerRef"],
            json!({"name": "unisondb-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        );
        assert_eq!(cert["spec"]["renewBefore"], "360h");
        let dns: Vec<&str> = cert["spec"]["dnsNames"]
            .as_array()
            .expect("dnsNames")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for want in [
            "hub.default.svc",
            "hub.default.svc.cluster.local",
            "*.hub-headless.default.svc.cluster.local",
        ] {
            assert!(dns.contains(&want), "{want} missing from {dns:?}");
        }
        let call = api.expect(Method::PATCH, &sts_path("hub")).await;
        let sts = call.body.clone();
        let volumes = sts["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes");
        assert!(
            volumes
                .iter()
                .any(|v| v["name"] == "tls" && v["secret"]["secretName"] == "hub-tls"),
            "the pods mount cert-manager's Secret: {volumes:?}"
        );
        call.reply(200, &with_sts_status(sts, 1, 1));
        let status = api.expect_status_patch(HUB, &cert_manager_hub()).await;
        assert_eq!(cond(&status, "Degraded"), ("False", "AsExpected"));
        assert_eq!(
            status.grpc_endpoint.as_deref(),
            Some("https://hub.default.svc.cluster.local:4001")
        );
        api.expect_normal_event("Created").await;
        api
    })
    .await;
    assert_eq!(result.expect("reconcile succeeds"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn cert_manager_missing_is_degraded_not_a_failure() {
    let pdb = Some(PdbSupport::known(Some(pdb_v1())));
    let (result, _) = scenario::<UnisonHub, _, _>(&cert_manager_hub(), pdb, |mut api| async move {
        api.expect(Method::GET, &sts_path("hub")).await.not_found();
        api.expect(Method::GET, CERT_MANAGER_DISCOVERY)
            .await
            .not_found();
        // nothing applied (pods would wait for a Secret nobody fills): straight to status
        let status = api.expect_status_patch(HUB, &cert_manager_hub()).await;
        assert_eq!(cond(&status, "Degraded"), ("True", "CertManagerMissing"));
        let msg = &status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .expect("Degraded")
            .message;
        assert!(msg.contains("cert-manager"), "{msg}");
        api.expect_warning_event("CertManagerMissing").await;
        api
    })
    .await;
    assert_eq!(
        result.expect("a missing cert-manager is not a reconcile error"),
        Action::requeue(RESYNC)
    );
}

#[tokio::test]
async fn tls_with_both_sources_is_refused() {
    let mut hub = cert_manager_hub();
    hub["spec"]["tls"]["secretName"] = json!("mine");
    let pdb = Some(PdbSupport::known(Some(pdb_v1())));
    let answer = hub.clone();
    let (result, _) = scenario::<UnisonHub, _, _>(&hub, pdb, |mut api| async move {
        api.expect(Method::GET, &sts_path("hub")).await.not_found();
        api.expect(Method::GET, CERT_MANAGER_DISCOVERY)
            .await
            .not_found();
        let status = api.expect_status_patch(HUB, &answer).await;
        assert_eq!(cond(&status, "Degraded"), ("True", "InvalidTls"));
        api.expect_warning_event("InvalidTls").await;
        api
    })
    .await;
    result.expect("a refused spec is not a reconcile error");
}

// ---------------------------------------------------------------------------------------------
// Hub groups (spec.replicas 3 or 5)

/// Answers for the group's members: their ids per namespace, and what the operator asked.
#[derive(Default)]
struct ScriptedMembers {
    ids: parking_lot::Mutex<Vec<u64>>,
    calls: parking_lot::Mutex<Vec<String>>,
}

impl unisondb_operator::group::admin::GroupAdmin for ScriptedMembers {
    fn step_down<'a>(&'a self, base: &'a str) -> BoxFuture<'a, Result<(), String>> {
        self.calls.lock().push(format!("step-down {base}"));
        Box::pin(async { Ok(()) })
    }
    fn remove_member<'a>(&'a self, base: &'a str, id: u64) -> BoxFuture<'a, Result<(), String>> {
        self.calls.lock().push(format!("remove {id} via {base}"));
        self.ids.lock().retain(|i| *i != id);
        Box::pin(async { Ok(()) })
    }
    fn member_ids<'a>(
        &'a self,
        _base: &'a str,
        _ns: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u64>, String>> {
        let ids = self.ids.lock().clone();
        Box::pin(async move { Ok(ids) })
    }
}

fn group_fixture(replicas: i32, status: Option<&NodeStatus>) -> Value {
    let mut hub = hub_fixture(status);
    hub["spec"]["replicas"] = json!(replicas);
    hub
}

/// Members `hub-0..n` reporting Raft state for `orders` and `users`; `leader` leads both.
fn group_report(n: usize, leader: Option<usize>, term: u64) -> Connectivity {
    let ns = |lead: bool| unisondb_operator::connectivity::RaftView {
        leader: lead,
        term,
        commit_index: 40,
    };
    Connectivity::Observed(
        (0..n)
            .map(|i| PodReport {
                pod: format!("hub-{i}"),
                links: Ok(BTreeMap::from(["orders", "users"].map(|name| {
                    (
                        name.to_string(),
                        Link {
                            lsn: 40,
                            raft: Some(ns(leader == Some(i))),
                            ..Default::default()
                        },
                    )
                }))),
            })
            .collect(),
    )
}

/// The config hash the group fixture renders to (the same for any member count).
fn group_config_hash() -> String {
    use unisondb_operator::dereference::Dereferenced;
    let hub: UnisonHub = serde_json::from_value(group_fixture(3, None)).expect("fixture");
    let target = unisondb_operator::kind::Target::of(&hub).expect("target");
    let deref = Dereferenced {
        existing: None,
        pdb_api: None,
        refs: std::collections::HashMap::new(),
        cert_manager: None,
    };
    let v = unisondb_operator::validate::validate(&hub, &target, &deref, "cluster.local")
        .expect("valid");
    unisondb_operator::build::build(&v, None, "x")
        .expect("builds")
        .config_hash
}

/// A running group StatefulSet of `replicas` pods at the fixture's image and config (as
/// `dereference` reads it).
fn group_sts(replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "hub", "namespace": NS, "generation": 1},
        "spec": {
            "replicas": replicas, "serviceName": "hub-headless", "selector": {},
            "template": {
                "metadata": {"annotations": {"unisondb.io/config-hash": group_config_hash()}},
                "spec": {"containers": [{"name": "unisondb", "image": "unisondb:test"}]}
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"resources": {"requests": {"storage": "10Gi"}}}}]
        },
        "status": {"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1,
                   "updatedReplicas": replicas, "updateRevision": "hub-new"}
    })
}

/// Pod `hub-i` at `revision`, ready, labelled `role`.
fn member(i: usize, revision: &str, role: Option<&str>) -> Value {
    let mut labels = json!({"controller-revision-hash": revision});
    if let Some(r) = role {
        labels["unisondb.io/role"] = json!(r);
    }
    json!({
        "metadata": {"name": format!("hub-{i}"), "namespace": NS, "labels": labels},
        "status": {"podIP": format!("10.0.0.{i}"), "phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

/// The reconcile of a running group up to the StatefulSet apply: the StatefulSet read, every
/// object applied (the group's Services and PDB included). Returns the applied StatefulSet.
async fn group_applies(api: &mut ApiServer, running: i32, applied_replicas: i32) -> Value {
    api.expect(Method::GET, &sts_path("hub"))
        .await
        .reply(200, &group_sts(running));
    let cm = api
        .expect_apply("/api/v1/namespaces/default/configmaps/hub-config")
        .await;
    let config = cm["data"]["config.yaml"].as_str().unwrap_or_default();
    assert_eq!(
        config
            .matches("hub-headless.default.svc.cluster.local:4001")
            .count(),
        applied_replicas as usize,
        "peers follow the StatefulSet's size: {config}"
    );
    api.expect_apply("/api/v1/namespaces/default/serviceaccounts/hub")
        .await;
    api.expect_apply("/api/v1/namespaces/default/services/hub-headless")
        .await;
    let client = api
        .expect_apply("/api/v1/namespaces/default/services/hub")
        .await;
    assert_eq!(client["spec"]["selector"]["unisondb.io/role"], "leader");
    api.expect_apply("/api/v1/namespaces/default/services/hub-ro")
        .await;
    let followers = api
        .expect_apply("/api/v1/namespaces/default/services/hub-followers")
        .await;
    assert_eq!(
        followers["spec"]["selector"]["unisondb.io/role"],
        "follower"
    );
    let pdb = api
        .expect_apply("/apis/policy/v1/namespaces/default/poddisruptionbudgets/hub")
        .await;
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let call = api.expect(Method::PATCH, &sts_path("hub")).await;
    let sts = call.body.clone();
    assert_eq!(sts["spec"]["replicas"], applied_replicas);
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");
    let mut served = group_sts(applied_replicas);
    served["spec"] = sts["spec"].clone();
    call.reply(200, &served);
    sts
}

async fn expect_pod_list(api: &mut ApiServer, pods: Vec<Value>) {
    let call = api
        .expect(Method::GET, "/api/v1/namespaces/default/pods")
        .await;
    assert!(call.query.contains("labelSelector"), "{}", call.query);
    call.reply(
        200,
        &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}),
    );
}

async fn expect_label(api: &mut ApiServer, pod: &str, role: &str) {
    let call = api
        .expect(
            Method::PATCH,
            &format!("/api/v1/namespaces/default/pods/{pod}"),
        )
        .await;
    assert_eq!(call.content_type, "application/merge-patch+json");
    assert_eq!(call.body["metadata"]["labels"]["unisondb.io/role"], role);
    let body = call.body.clone();
    call.reply(200, &body);
}

fn group_harness(report: Connectivity, members: Arc<ScriptedMembers>) -> (Arc<Context>, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Context::new(
        Client::new(service, NS),
        Arc::new(Metrics::new()),
        "cluster.local".into(),
        "test".into(),
    )
    .with_probe(Arc::new(Scripted(report)))
    .with_pdb(PdbSupport::known(Some(pdb_v1())))
    .with_group_admin(members);
    (Arc::new(ctx), ApiServer(handle))
}

#[tokio::test]
async fn hub_group_labels_the_leader_and_reports_it() {
    let members = Arc::new(ScriptedMembers::default());
    let hub = group_fixture(3, None);
    let answer = hub.clone();
    let (result, _) = scenario_with::<UnisonHub, _, _>(
        &hub,
        group_harness(group_report(3, Some(1), 4), members.clone()),
        |mut api| async move {
            group_applies(&mut api, 3, 3).await;
            // hub-0 still carries the label of an earlier leader; hub-1 leads now
            expect_pod_list(
                &mut api,
                vec![
                    member(0, "hub-new", Some("leader")),
                    member(1, "hub-new", None),
                    member(2, "hub-new", Some("follower")),
                ],
            )
            .await;
            expect_label(&mut api, "hub-0", "follower").await;
            expect_label(&mut api, "hub-1", "leader").await;
            let status = api.expect_status_patch(HUB, &answer).await;
            assert_eq!(status.leader.as_deref(), Some("hub-1"));
            assert_eq!(status.members, ["hub-0", "hub-1", "hub-2"]);
            assert_eq!(status.term, Some(4));
            assert_eq!(
                status.grpc_endpoint.as_deref(),
                Some("http://hub-ro.default.svc.cluster.local:4001")
            );
            assert_eq!(cond(&status, "QuorumLost"), ("False", "LeaderElected"));
            let leads = status.pods[1]
                .namespaces
                .iter()
                .all(|n| n.leader == Some(true) && n.term == Some(4));
            assert!(leads, "{:?}", status.pods[1]);
            let note = api.expect_normal_event("LeaderChanged").await;
            assert_eq!(note, "leader pod hub-1 (term 4)");
            api
        },
    )
    .await;
    assert_eq!(
        result.expect("reconcile succeeds"),
        Action::requeue(unisondb_operator::group::GROUP_RESYNC)
    );
    assert!(
        members.calls.lock().is_empty(),
        "no node call in steady state"
    );
}

#[tokio::test]
async fn hub_group_rolls_a_follower_first_and_the_leader_after_a_step_down() {
    let members = Arc::new(ScriptedMembers::default());
    let labelled = |prev: &str| NodeStatus {
        leader: Some(prev.into()),
        ..Default::default()
    };
    // hub-0 and hub-1 (the leader) run the old revision: the follower goes first
    let hub = group_fixture(3, Some(&labelled("hub-1")));
    let answer = hub.clone();
    let harness = group_harness(group_report(3, Some(1), 2), members.clone());
    scenario_with::<UnisonHub, _, _>(&hub, harness, |mut api| async move {
        group_applies(&mut api, 3, 3).await;
        expect_pod_list(
            &mut api,
            vec![
                member(0, "hub-old", Some("follower")),
                member(1, "hub-old", Some("leader")),
                member(2, "hub-new", Some("follower")),
            ],
        )
        .await;
        api.expect(Method::DELETE, "/api/v1/namespaces/default/pods/hub-0")
            .await
            .reply(200, &member(0, "hub-old", None));
        let status = api.expect_status_patch(HUB, &answer).await;
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .unwrap();
        assert!(
            degraded.message.contains("restarting follower hub-0"),
            "{}",
            degraded.message
        );
        api
    })
    .await
    .0
    .expect("reconcile succeeds");
    assert!(members.calls.lock().is_empty());

    // only the leader is left: asked to step down (through its pod IP), not deleted yet
    let answer = hub.clone();
    let harness = group_harness(group_report(3, Some(1), 2), members.clone());
    scenario_with::<UnisonHub, _, _>(&hub, harness, |mut api| async move {
        group_applies(&mut api, 3, 3).await;
        expect_pod_list(
            &mut api,
            vec![
                member(0, "hub-new", Some("follower")),
                member(1, "hub-old", Some("leader")),
                member(2, "hub-new", Some("follower")),
            ],
        )
        .await;
        api.expect_status_patch(HUB, &answer).await;
        api
    })
    .await
    .0
    .expect("reconcile succeeds");
    assert_eq!(
        *members.calls.lock(),
        ["step-down http://10.0.0.1:4000".to_string()]
    );

    // leadership moved to hub-2: hub-1 is a follower now and is restarted, hub-2 labelled
    let answer = hub.clone();
    let harness = group_harness(group_report(3, Some(2), 3), members.clone());
    scenario_with::<UnisonHub, _, _>(&hub, harness, |mut api| async move {
        group_applies(&mut api, 3, 3).await;
        expect_pod_list(
            &mut api,
            vec![
                member(0, "hub-new", Some("follower")),
                member(1, "hub-old", Some("leader")),
                member(2, "hub-new", Some("follower")),
            ],
        )
        .await;
        expect_label(&mut api, "hub-1", "follower").await;
        expect_label(&mut api, "hub-2", "leader").await;
        api.expect(Method::DELETE, "/api/v1/namespaces/default/pods/hub-1")
            .await
            .reply(200, &member(1, "hub-old", None));
        api.expect_status_patch(HUB, &answer).await;
        let note = api.expect_normal_event("LeaderChanged").await;
        assert_eq!(note, "leader pod hub-1 -> hub-2 (term 3)");
        api
    })
    .await
    .0
    .expect("reconcile succeeds");
}

#[tokio::test]
async fn hub_group_scale_down_removes_members_before_shrinking() {
    let members = Arc::new(ScriptedMembers::default());
    *members.ids.lock() = vec![1, 2, 3, 4, 5];
    let hub = group_fixture(3, None);
    let answer = hub.clone();
    // 5 running, 3 wanted: member 5 is removed, the StatefulSet stays at 5 (peers too)
    for (expect_removed, applied) in [(5u64, 5), (4, 5)] {
        let answer = answer.clone();
        let harness = group_harness(group_report(5, Some(0), 2), members.clone());
        scenario_with::<UnisonHub, _, _>(&hub, harness, |mut api| async move {
            group_applies(&mut api, 5, applied).await;
            expect_pod_list(
                &mut api,
                (0..5)
                    .map(|i| {
                        member(
                            i,
                            "hub-new",
                            Some(if i == 0 { "leader" } else { "follower" }),
                        )
                    })
                    .collect(),
            )
            .await;
            let status = api.expect_status_patch(HUB, &answer).await;
            let degraded = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Degraded")
                .unwrap();
            assert!(
                degraded
                    .message
                    .contains(&format!("member {expect_removed} removed")),
                "{}",
                degraded.message
            );
            api.expect_normal_event("LeaderChanged").await;
            api
        })
        .await
        .0
        .expect("reconcile succeeds");
    }
    assert_eq!(
        *members.calls.lock(),
        [
            "remove 5 via http://hub.default.svc.cluster.local:4000".to_string(),
            "remove 4 via http://hub.default.svc.cluster.local:4000".to_string()
        ]
    );
    // members 4 and 5 are gone from every group: now the StatefulSet shrinks to 3
    let harness = group_harness(group_report(3, Some(0), 2), members.clone());
    scenario_with::<UnisonHub, _, _>(&hub, harness, |mut api| async move {
        group_applies(&mut api, 5, 3).await;
        expect_pod_list(
            &mut api,
            (0..3)
                .map(|i| {
                    member(
                        i,
                        "hub-new",
                        Some(if i == 0 { "leader" } else { "follower" }),
                    )
                })
                .collect(),
        )
        .await;
        api.expect_status_patch(HUB, &answer).await;
        let note = api.expect_normal_event("Scaled").await;
        assert!(note.contains("5 → 3"), "{note}");
        api.expect_normal_event("LeaderChanged").await;
        api
    })
    .await
    .0
    .expect("reconcile succeeds");
}
