//! Mocked-API scenarios of the backup reconcilers: a `kube::Client` over a `tower_test` mock
//! service (the test plays the API server) and a scripted [`BackupTrigger`] (the test plays the
//! hub's `POST /api/v1/{ns}/backups`). Each scenario asserts the exact calls one reconcile makes.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use parking_lot::Mutex;
use serde_json::{json, Value};

use unisondb_operator::backup::trigger::{BackupTrigger, TriggerError};
use unisondb_operator::backup::{self, schedule};
use unisondb_operator::crd::{
    BackupPhase, NamespaceBackup, UnisonBackup, UnisonBackupStatus, UnisonScheduledBackup,
    UnisonScheduledBackupStatus,
};
use unisondb_operator::metrics::Metrics;
use unisondb_operator::reconcile::{Context, RESYNC};
use unisondb_operator::Error;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

const NS: &str = "default";
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
const HUB: &str = "/apis/unisondb.io/v1alpha1/namespaces/default/unisonhubs/hub";
const BACKUPS: &str = "/apis/unisondb.io/v1alpha1/namespaces/default/unisonbackups";
const SCHEDULES: &str = "/apis/unisondb.io/v1alpha1/namespaces/default/unisonscheduledbackups";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

struct Call {
    method: Method,
    path: String,
    query: String,
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

    fn not_found(self) {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "not found", "reason": "NotFound", "code": 404});
        self.reply(404, &body);
    }
}

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
            body,
            responder,
        }
    }

    async fn expect(&mut self, method: Method, path: &str) -> Call {
        let call = self.next().await;
        assert_eq!(
            (&call.method, call.path.as_str()),
            (&method, path),
            "unexpected API call"
        );
        call
    }

    /// A merge patch of `path`'s status, answered with `obj` carrying it; returns the status.
    async fn expect_status<S: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        obj: &Value,
    ) -> S {
        let call = self.expect(Method::PATCH, &format!("{path}/status")).await;
        let status = call.body["status"].clone();
        let mut answer = obj.clone();
        answer["status"] = status.clone();
        call.reply(200, &answer);
        serde_json::from_value(status).expect("status shape")
    }

    /// An event (created, or patched when the recorder saw its key before); returns its note.
    async fn expect_event(&mut self, type_: &str, reason: &str) -> String {
        let call = self.next().await;
        assert!(
            (call.method == Method::POST && call.path == EVENTS)
                || (call.method == Method::PATCH && call.path.starts_with(EVENTS)),
            "expected an event {reason}, got {} {}",
            call.method,
            call.path
        );
        if call.method == Method::POST {
            assert_eq!(call.body["type"], type_, "{}", call.body);
            assert_eq!(call.body["reason"], reason, "{}", call.body);
        }
        let note = call.body["note"].as_str().unwrap_or_default().to_string();
        let body = call.body.clone();
        let code = if call.method == Method::POST {
            201
        } else {
            200
        };
        call.reply(code, &body);
        note
    }
}

/// The hub's answers, scripted in order; records every call (endpoint, namespace).
#[derive(Default)]
struct ScriptedHub {
    answers: Mutex<VecDeque<Result<NamespaceBackup, TriggerError>>>,
    calls: Mutex<Vec<(String, String)>>,
}

impl BackupTrigger for ScriptedHub {
    fn trigger<'a>(
        &'a self,
        base_url: &'a str,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<NamespaceBackup, TriggerError>> {
        Box::pin(async move {
            self.calls
                .lock()
                .push((base_url.to_string(), namespace.to_string()));
            self.answers
                .lock()
                .pop_front()
                .unwrap_or_else(|| panic!("unscripted backup call for {namespace}"))
        })
    }
}

fn record(ns: &str, lsn: u64) -> NamespaceBackup {
    NamespaceBackup {
        namespace: ns.into(),
        id: format!("id-{ns}"),
        location: format!("s3://bkp/{ns}/base/id-{ns}/"),
        snapshot_lsn: lsn - 5,
        last_lsn: lsn,
        size_bytes: 1000,
    }
}

fn harness(
    answers: Vec<Result<NamespaceBackup, TriggerError>>,
) -> (Arc<Context>, ApiServer, Arc<ScriptedHub>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let hub = Arc::new(ScriptedHub {
        answers: Mutex::new(answers.into()),
        calls: Mutex::new(Vec::new()),
    });
    let ctx = Context::new(
        client,
        Arc::new(Metrics::new()),
        "cluster.local".into(),
        "test".into(),
    )
    .with_backup_trigger(hub.clone());
    (Arc::new(ctx), ApiServer(handle), hub)
}

/// Runs `reconcile` against `script`; fails on a missing or an unexpected API call.
async fn drive<F, Fut, R>(api: ApiServer, reconcile: R, script: F) -> Result<Action, Error>
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ApiServer> + Send + 'static,
    R: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let server = tokio::spawn(script(api));
    let reconciling = tokio::spawn(reconcile);
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
    result
}

fn hub(with_backup: bool) -> Value {
    let mut h = json!({
        "apiVersion": "unisondb.io/v1alpha1", "kind": "UnisonHub",
        "metadata": {"name": "hub", "namespace": NS, "uid": "uid-hub"},
        "spec": {"namespaces": ["orders", "users"]}
    });
    if with_backup {
        h["spec"]["backup"] =
            json!({"objectStore": {"bucket": "bkp", "credentialsSecret": {"name": "s3"}}});
    }
    h
}

fn backup_obj(status: Option<UnisonBackupStatus>) -> Value {
    let mut b = json!({
        "apiVersion": "unisondb.io/v1alpha1", "kind": "UnisonBackup",
        "metadata": {"name": "b1", "namespace": NS, "uid": "uid-b1", "generation": 1},
        "spec": {"hubRef": {"name": "hub"}}
    });
    if let Some(s) = status {
        b["status"] = serde_json::to_value(s).unwrap();
    }
    b
}

fn run_backup(ctx: &Arc<Context>, obj: &Value) -> impl Future<Output = Result<Action, Error>> {
    let obj: UnisonBackup = serde_json::from_value(obj.clone()).expect("backup parses");
    backup::reconcile(Arc::new(obj), ctx.clone())
}

fn b1() -> String {
    format!("{BACKUPS}/b1")
}

#[tokio::test]
async fn a_hub_without_spec_backup_fails_the_backup_for_good() {
    let (ctx, api, hub_calls) = harness(vec![]);
    let obj = backup_obj(None);
    let result = drive(api, run_backup(&ctx, &obj), |mut api| async move {
        api.expect(Method::GET, HUB).await.reply(200, &hub(false));
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.phase, BackupPhase::Failed);
        assert!(s.completed_at.is_some());
        let failed = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Failed")
            .expect("Failed condition");
        assert_eq!(
            (failed.status.as_str(), failed.reason.as_str()),
            ("True", "BackupNotConfigured")
        );
        assert!(s.message.unwrap_or_default().contains("no spec.backup"));
        api.expect_event("Warning", "BackupNotConfigured").await;
        api
    })
    .await;
    assert_eq!(result.expect("reconciles"), Action::await_change());
    assert!(hub_calls.calls.lock().is_empty(), "the hub is never asked");

    // once Failed, a later reconcile does nothing at all: no API call, no backup call
    let (ctx, api, hub_calls) = harness(vec![]);
    let failed = backup_obj(Some(UnisonBackupStatus {
        phase: BackupPhase::Failed,
        ..Default::default()
    }));
    let result = drive(api, run_backup(&ctx, &failed), |api| async move { api }).await;
    assert_eq!(result.expect("reconciles"), Action::await_change());
    assert!(hub_calls.calls.lock().is_empty());
}

#[tokio::test]
async fn a_backup_runs_each_namespace_once_then_completes() {
    let (ctx, api, hub_calls) = harness(vec![Ok(record("orders", 57)), Ok(record("users", 12))]);
    let obj = backup_obj(None);
    let result = drive(api, run_backup(&ctx, &obj), |mut api| async move {
        api.expect(Method::GET, HUB).await.reply(200, &hub(true));
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.phase, BackupPhase::Running);
        assert!(s.started_at.is_some());
        assert_eq!(s.namespaces, ["orders", "users"]);
        api.expect_event("Normal", "Started").await;
        let note = api.expect_event("Normal", "NamespaceBackedUp").await;
        assert!(
            note.contains("orders: s3://bkp/orders/base/id-orders/ at LSN 57"),
            "{note}"
        );
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!((s.phase, s.backups.len()), (BackupPhase::Running, 1));
        api.expect_event("Normal", "NamespaceBackedUp").await;
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.phase, BackupPhase::Completed);
        assert!(s.completed_at.is_some());
        assert_eq!(s.backups, vec![record("orders", 57), record("users", 12)]);
        assert_eq!(s.total_bytes, Some(2000));
        let done = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Completed")
            .unwrap();
        assert_eq!(done.status, "True");
        api.expect_event("Normal", "Completed").await;
        api
    })
    .await;
    assert_eq!(result.expect("reconciles"), Action::await_change());
    assert_eq!(
        *hub_calls.calls.lock(),
        vec![
            (
                "http://hub.default.svc.cluster.local:4000".to_string(),
                "orders".to_string()
            ),
            (
                "http://hub.default.svc.cluster.local:4000".to_string(),
                "users".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn an_unreachable_hub_is_retried_and_done_namespaces_are_never_redone() {
    let (ctx, api, _) = harness(vec![
        Ok(record("orders", 57)),
        Err(TriggerError::Unavailable("connection refused".into())),
    ]);
    let obj = backup_obj(None);
    let result = drive(api, run_backup(&ctx, &obj), |mut api| async move {
        api.expect(Method::GET, HUB).await.reply(200, &hub(true));
        let _: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        api.expect_event("Normal", "Started").await;
        api.expect_event("Normal", "NamespaceBackedUp").await;
        let _: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.phase, BackupPhase::Running, "not failed: retried");
        assert!(s
            .message
            .unwrap_or_default()
            .contains("will retry: users: connection refused"));
        api.expect_event("Warning", "HubUnavailable").await;
        api
    })
    .await;
    assert_eq!(result.expect("reconciles"), Action::requeue(backup::RETRY));

    // the next reconcile, from the status written: only `users` is asked for
    let (ctx, api, hub_calls) = harness(vec![Ok(record("users", 12))]);
    let resumed = backup_obj(Some(UnisonBackupStatus {
        phase: BackupPhase::Running,
        started_at: Some(unisondb_operator::status::now()),
        namespaces: vec!["orders".into(), "users".into()],
        backups: vec![record("orders", 57)],
        ..Default::default()
    }));
    let result = drive(api, run_backup(&ctx, &resumed), |mut api| async move {
        api.expect(Method::GET, HUB).await.reply(200, &hub(true));
        api.expect_event("Normal", "NamespaceBackedUp").await;
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.phase, BackupPhase::Completed);
        assert_eq!(s.backups.len(), 2);
        api.expect_event("Normal", "Completed").await;
        api
    })
    .await;
    assert_eq!(result.expect("reconciles"), Action::await_change());
    assert_eq!(hub_calls.calls.lock().len(), 1);
    assert_eq!(hub_calls.calls.lock()[0].1, "users");
}

#[tokio::test]
async fn a_refusal_by_the_hub_fails_the_backup() {
    let (ctx, api, _) = harness(vec![Err(TriggerError::Refused(
        "409 Conflict: no archive configured".into(),
    ))]);
    let obj = backup_obj(None);
    let result = drive(api, run_backup(&ctx, &obj), |mut api| async move {
        api.expect(Method::GET, HUB).await.reply(200, &hub(true));
        let _: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        api.expect_event("Normal", "Started").await;
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.phase, BackupPhase::Failed);
        assert!(s
            .message
            .unwrap_or_default()
            .contains("orders: 409 Conflict"));
        api.expect_event("Warning", "BackupRefused").await;
        api
    })
    .await;
    assert_eq!(result.expect("reconciles"), Action::await_change());
}

#[tokio::test]
async fn a_missing_hub_keeps_the_backup_pending() {
    let (ctx, api, _) = harness(vec![]);
    let obj = backup_obj(None);
    let result = drive(api, run_backup(&ctx, &obj), |mut api| async move {
        api.expect(Method::GET, HUB).await.not_found();
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.phase, BackupPhase::Pending);
        assert!(s
            .message
            .unwrap_or_default()
            .contains("UnisonHub default/hub not found"));
        api
    })
    .await;
    assert_eq!(result.expect("reconciles"), Action::requeue(backup::RETRY));
}

// ---- UnisonScheduledBackup ----

fn schedule_obj(
    schedule: &str,
    suspend: bool,
    status: Option<UnisonScheduledBackupStatus>,
) -> Value {
    let mut o = json!({
        "apiVersion": "unisondb.io/v1alpha1", "kind": "UnisonScheduledBackup",
        "metadata": {"name": "nightly", "namespace": NS, "uid": "uid-sched", "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"schedule": schedule, "hubRef": {"name": "hub"}, "suspend": suspend,
            "successfulBackupsHistoryLimit": 2}
    });
    if let Some(s) = status {
        o["status"] = serde_json::to_value(s).unwrap();
    }
    o
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().expect("timestamp")
}

fn owned_backup(name: &str, owner_uid: &str, phase: &str) -> Value {
    json!({"apiVersion": "unisondb.io/v1alpha1", "kind": "UnisonBackup",
        "metadata": {"name": name, "namespace": NS, "labels": {"unisondb.io/scheduled-backup": "nightly"},
            "ownerReferences": [{"apiVersion": "unisondb.io/v1alpha1", "kind": "UnisonScheduledBackup",
                "name": "nightly", "uid": owner_uid, "controller": true}]},
        "spec": {"hubRef": {"name": "hub"}}, "status": {"phase": phase}})
}

fn run_schedule(
    ctx: &Arc<Context>,
    obj: &Value,
    now: &str,
) -> impl Future<Output = Result<Action, Error>> {
    let obj: UnisonScheduledBackup = serde_json::from_value(obj.clone()).expect("parses");
    let ctx = ctx.clone();
    let now = ts(now);
    async move { schedule::run(&obj, &ctx, now).await }
}

async fn expect_prune_list(api: &mut ApiServer, items: Vec<Value>) {
    let call = api.expect(Method::GET, BACKUPS).await;
    assert!(
        call.query
            .contains("labelSelector=unisondb.io%2Fscheduled-backup%3Dnightly"),
        "{}",
        call.query
    );
    call.reply(
        200,
        &json!({"apiVersion": "unisondb.io/v1alpha1", "kind": "UnisonBackupList",
        "metadata": {}, "items": items}),
    );
}

#[tokio::test]
async fn a_due_time_creates_an_owned_backup_prunes_history_and_requeues_for_the_next() {
    let (ctx, api, _) = harness(vec![]);
    let obj = schedule_obj("*/5 * * * *", false, None);
    let sched_path = format!("{SCHEDULES}/nightly");
    let result = drive(
        api,
        run_schedule(&ctx, &obj, "2026-01-01T01:00:30Z"),
        move |mut api| async move {
            // 01:00 is due: its UnisonBackup is applied, named after the scheduled time
            let name = "nightly-1767229200";
            let call = api
                .expect(Method::PATCH, &format!("{BACKUPS}/{name}"))
                .await;
            assert!(
                call.query.contains("fieldManager=unisondb-operator"),
                "{}",
                call.query
            );
            let b = call.body.clone();
            assert_eq!(b["kind"], "UnisonBackup");
            assert_eq!(b["spec"]["hubRef"]["name"], "hub");
            assert_eq!(
                b["metadata"]["labels"]["unisondb.io/scheduled-backup"],
                "nightly"
            );
            assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "uid-sched");
            assert_eq!(b["metadata"]["ownerReferences"][0]["controller"], true);
            call.reply(200, &b);
            let note = api.expect_event("Normal", "BackupCreated").await;
            assert!(note.contains(name), "{note}");
            // history: four Completed of ours (limit 2), one Failed, one Completed of another owner
            expect_prune_list(
                &mut api,
                vec![
                    owned_backup("nightly-100", "uid-sched", "Completed"),
                    owned_backup("nightly-400", "uid-sched", "Completed"),
                    owned_backup("nightly-200", "uid-sched", "Completed"),
                    owned_backup("nightly-300", "uid-sched", "Completed"),
                    owned_backup("nightly-50", "uid-sched", "Failed"),
                    owned_backup("nightly-10", "uid-other", "Completed"),
                ],
            )
            .await;
            for old in ["nightly-100", "nightly-200"] {
                api.expect(Method::DELETE, &format!("{BACKUPS}/{old}"))
                    .await
                    .reply(200, &owned_backup(old, "uid-sched", "Completed"));
                api.expect_event("Normal", "BackupPruned").await;
            }
            let s: UnisonScheduledBackupStatus = api.expect_status(&sched_path, &obj).await;
            assert_eq!(
                s.last_schedule_time.as_deref(),
                Some("2026-01-01T01:00:00Z")
            );
            assert_eq!(
                s.next_schedule_time.as_deref(),
                Some("2026-01-01T01:05:00Z")
            );
            assert_eq!(s.last_backup.as_deref(), Some(name));
            api
        },
    )
    .await;
    assert_eq!(
        result.expect("reconciles"),
        Action::requeue(Duration::from_secs(270)),
        "requeued for 01:05"
    );
}

#[tokio::test]
async fn nothing_due_creates_nothing_and_far_times_requeue_at_the_resync() {
    let (ctx, api, _) = harness(vec![]);
    let status = UnisonScheduledBackupStatus {
        last_schedule_time: Some("2026-01-01T00:00:00Z".into()),
        next_schedule_time: Some("2026-01-02T00:00:00Z".into()),
        last_backup: Some("nightly-1767225600".into()),
        conditions: vec![],
    };
    let obj = schedule_obj("0 0 * * *", false, Some(status));
    let path = format!("{SCHEDULES}/nightly");
    let result = drive(
        api,
        run_schedule(&ctx, &obj, "2026-01-01T10:00:00Z"),
        move |mut api| async move {
            expect_prune_list(&mut api, vec![]).await;
            // only the Degraded=False condition is new
            let s: UnisonScheduledBackupStatus = api.expect_status(&path, &obj).await;
            assert_eq!(s.last_backup.as_deref(), Some("nightly-1767225600"));
            assert_eq!(s.conditions[0].status, "False");
            api
        },
    )
    .await;
    assert_eq!(result.expect("reconciles"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn an_invalid_schedule_is_degraded_and_creates_nothing() {
    let (ctx, api, _) = harness(vec![]);
    let obj = schedule_obj("every night", false, None);
    let path = format!("{SCHEDULES}/nightly");
    let result = drive(
        api,
        run_schedule(&ctx, &obj, "2026-01-01T10:00:00Z"),
        move |mut api| async move {
            api.expect_event("Warning", "InvalidSchedule").await;
            expect_prune_list(&mut api, vec![]).await;
            let s: UnisonScheduledBackupStatus = api.expect_status(&path, &obj).await;
            let c = &s.conditions[0];
            assert_eq!(
                (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
                ("Degraded", "True", "InvalidSchedule")
            );
            assert!(c.message.contains("every night"), "{}", c.message);
            assert_eq!(s.next_schedule_time, None);
            api
        },
    )
    .await;
    assert!(result.is_ok());
}

#[tokio::test]
async fn a_suspended_schedule_creates_nothing_and_shows_no_next_time() {
    let (ctx, api, _) = harness(vec![]);
    // it was scheduled before: the next time shown then is cleared (null in the merge patch)
    let before = UnisonScheduledBackupStatus {
        next_schedule_time: Some("2026-01-01T01:05:00Z".into()),
        ..Default::default()
    };
    let obj = schedule_obj("*/5 * * * *", true, Some(before));
    let path = format!("{SCHEDULES}/nightly/status");
    let result = drive(
        api,
        run_schedule(&ctx, &obj, "2026-01-01T01:00:30Z"),
        move |mut api| async move {
            expect_prune_list(&mut api, vec![]).await;
            let call = api.expect(Method::PATCH, &path).await;
            let status = &call.body["status"];
            assert!(
                status.get("nextScheduleTime").is_some_and(Value::is_null),
                "a merge patch must null the field to clear it: {status}"
            );
            assert!(
                status.get("lastBackup").is_none_or(Value::is_null),
                "{status}"
            );
            let answer = obj.clone();
            call.reply(200, &answer);
            api
        },
    )
    .await;
    assert!(result.is_ok());
}

// ---- hubs with httpAuth: one Job per namespace ----

const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn auth_hub() -> Value {
    let mut h = hub(true);
    h["spec"]["httpAuth"] = json!({"secretName": "hub-token"});
    h
}

fn job_obj(name: &str, condition: Option<(&str, &str, &str)>) -> Value {
    let mut j = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
            "ownerReferences": [{"apiVersion": "unisondb.io/v1alpha1", "kind": "UnisonBackup",
                "name": "b1", "uid": "uid-b1", "controller": true}]},
        "spec": {"template": {"spec": {"containers": []}}}, "status": {}});
    if let Some((type_, reason, message)) = condition {
        j["status"]["conditions"] =
            json!([{"type": type_, "status": "True", "reason": reason, "message": message}]);
    }
    j
}

fn job_pod(job: &str, message: &str, exit_code: i32) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{job}-x1"), "namespace": NS, "labels": {"job-name": job},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
                "uid": format!("uid-{job}"), "controller": true}]},
        "status": {"phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": [{"name": "backup", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": exit_code,
                "finishedAt": "2026-01-01T00:00:10Z", "message": message}}}]}})
}

async fn expect_pods_of(api: &mut ApiServer, job: &str, pods: Vec<Value>) {
    let call = api.expect(Method::GET, PODS).await;
    assert!(
        call.query
            .contains(&format!("labelSelector=job-name%3D{job}")),
        "{}",
        call.query
    );
    call.reply(
        200,
        &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}),
    );
}

fn running(job: Option<&str>, done: Vec<NamespaceBackup>) -> UnisonBackupStatus {
    UnisonBackupStatus {
        phase: BackupPhase::Running,
        started_at: Some(unisondb_operator::status::now()),
        namespaces: vec!["orders".into(), "users".into()],
        backups: done,
        job: job.map(str::to_string),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_auth_hub_gets_one_job_per_namespace_created_once() {
    let (ctx, api, hub_calls) = harness(vec![]);
    let obj = backup_obj(None);
    let result = drive(api, run_backup(&ctx, &obj), |mut api| async move {
        api.expect(Method::GET, HUB).await.reply(200, &auth_hub());
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.phase, BackupPhase::Running);
        api.expect_event("Normal", "Started").await;
        api.expect(Method::GET, &format!("{JOBS}/b1-orders"))
            .await
            .not_found();
        let call = api.expect(Method::POST, JOBS).await;
        let j = call.body.clone();
        assert_eq!(j["metadata"]["name"], "b1-orders");
        assert_eq!(j["metadata"]["ownerReferences"][0]["uid"], "uid-b1");
        let c = &j["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["env"][0]["valueFrom"]["secretKeyRef"],
            json!({"name": "hub-token", "key": "token", "optional": false})
        );
        let args = c["args"].to_string();
        assert!(
            args.contains("http://hub.default.svc.cluster.local:4000") && !args.contains("token"),
            "{args}"
        );
        call.reply(201, &j);
        api.expect_event("Normal", "JobCreated").await;
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.job.as_deref(), Some("b1-orders"));
        assert!(
            s.message
                .unwrap_or_default()
                .contains("Job b1-orders created"),
            "message"
        );
        api
    })
    .await;
    assert_eq!(
        result.expect("reconciles"),
        Action::requeue(backup::JOB_POLL)
    );
    assert!(
        hub_calls.calls.lock().is_empty(),
        "the operator never calls the hub"
    );

    // the next reconcile finds the Job by name: nothing created, the backup waits for it
    let (ctx, api, _) = harness(vec![]);
    let mut st = running(Some("b1-orders"), vec![]);
    st.message = Some("orders: Job b1-orders created".into());
    let obj = backup_obj(Some(st));
    let result = drive(api, run_backup(&ctx, &obj), |mut api| async move {
        api.expect(Method::GET, HUB).await.reply(200, &auth_hub());
        api.expect(Method::GET, &format!("{JOBS}/b1-orders"))
            .await
            .reply(200, &job_obj("b1-orders", None));
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.phase, BackupPhase::Running);
        assert!(s
            .message
            .unwrap_or_default()
            .contains("waiting for Job b1-orders"));
        api
    })
    .await;
    assert_eq!(
        result.expect("reconciles"),
        Action::requeue(backup::JOB_POLL)
    );

    // a Job of that name owned by something else (an earlier UnisonBackup "b1") is never read
    let (ctx, api, _) = harness(vec![]);
    let obj = backup_obj(Some(running(None, vec![])));
    let result = drive(api, run_backup(&ctx, &obj), |mut api| async move {
        api.expect(Method::GET, HUB).await.reply(200, &auth_hub());
        let mut old = job_obj("b1-orders", Some(("Complete", "", "")));
        old["metadata"]["ownerReferences"][0]["uid"] = json!("uid-old-b1");
        api.expect(Method::GET, &format!("{JOBS}/b1-orders"))
            .await
            .reply(200, &old);
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!((s.phase, s.backups.len()), (BackupPhase::Running, 0));
        assert!(s.message.unwrap_or_default().contains("not this backup's"));
        api
    })
    .await;
    assert_eq!(
        result.expect("reconciles"),
        Action::requeue(backup::JOB_POLL)
    );
}

#[tokio::test]
async fn a_job_s_termination_message_completes_the_backup() {
    let (ctx, api, _) = harness(vec![]);
    let obj = backup_obj(Some(running(Some("b1-users"), vec![record("orders", 57)])));
    let answer = json!({"id": "id-users", "location": "s3://bkp/users/base/id-users/",
        "manifest": {"namespace": "users", "snapshot": {"lsn": 7, "bytes": 900},
            "wal": {"firstLsn": 8, "lastLsn": 12, "bytes": 100}}});
    let result = drive(api, run_backup(&ctx, &obj), |mut api| async move {
        api.expect(Method::GET, HUB).await.reply(200, &auth_hub());
        api.expect(Method::GET, &format!("{JOBS}/b1-users"))
            .await
            .reply(200, &job_obj("b1-users", Some(("Complete", "", ""))));
        expect_pods_of(
            &mut api,
            "b1-users",
            vec![job_pod("b1-users", &answer.to_string(), 0)],
        )
        .await;
        let note = api.expect_event("Normal", "NamespaceBackedUp").await;
        assert!(
            note.contains("users: s3://bkp/users/base/id-users/ at LSN 12"),
            "{note}"
        );
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.phase, BackupPhase::Completed);
        assert_eq!(s.backups.len(), 2);
        assert_eq!(
            s.backups[1],
            NamespaceBackup {
                namespace: "users".into(),
                id: "id-users".into(),
                location: "s3://bkp/users/base/id-users/".into(),
                snapshot_lsn: 7,
                last_lsn: 12,
                size_bytes: 1000,
            }
        );
        assert_eq!(s.total_bytes, Some(2000));
        assert_eq!(s.job, None, "no Job runs any more");
        api.expect_event("Normal", "Completed").await;
        api
    })
    .await;
    assert_eq!(result.expect("reconciles"), Action::await_change());
}

#[tokio::test]
async fn a_failed_job_fails_the_backup_with_the_container_s_message() {
    let (ctx, api, _) = harness(vec![]);
    let obj = backup_obj(Some(running(Some("b1-orders"), vec![])));
    let result = drive(api, run_backup(&ctx, &obj), |mut api| async move {
        api.expect(Method::GET, HUB).await.reply(200, &auth_hub());
        api.expect(Method::GET, &format!("{JOBS}/b1-orders"))
            .await
            .reply(
                200,
                &job_obj(
                    "b1-orders",
                    Some((
                        "Failed",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    )),
                ),
            );
        expect_pods_of(
            &mut api,
            "b1-orders",
            vec![job_pod(
                "b1-orders",
                "error: no archive object store is configured (HTTP 409)",
                1,
            )],
        )
        .await;
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.phase, BackupPhase::Failed);
        let msg = s.message.clone().unwrap_or_default();
        assert!(msg.contains("BackoffLimitExceeded"), "{msg}");
        assert!(
            msg.contains("no archive object store is configured (HTTP 409)"),
            "{msg}"
        );
        let failed = s.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
        assert_eq!(
            (failed.status.as_str(), failed.reason.as_str()),
            ("True", "JobFailed")
        );
        api.expect_event("Warning", "JobFailed").await;
        api
    })
    .await;
    assert_eq!(result.expect("reconciles"), Action::await_change());
}

#[tokio::test]
async fn a_job_deleted_under_us_is_created_again() {
    let (ctx, api, _) = harness(vec![]);
    let obj = backup_obj(Some(running(Some("b1-orders"), vec![])));
    let result = drive(api, run_backup(&ctx, &obj), |mut api| async move {
        api.expect(Method::GET, HUB).await.reply(200, &auth_hub());
        api.expect(Method::GET, &format!("{JOBS}/b1-orders"))
            .await
            .not_found();
        let call = api.expect(Method::POST, JOBS).await;
        assert_eq!(call.body["metadata"]["name"], "b1-orders");
        let body = call.body.clone();
        call.reply(201, &body);
        let note = api.expect_event("Warning", "JobMissing").await;
        assert!(note.contains("deleted before it reported"), "{note}");
        let s: UnisonBackupStatus = api.expect_status(&b1(), &backup_obj(None)).await;
        assert_eq!(s.phase, BackupPhase::Running);
        assert!(s.message.unwrap_or_default().contains("created again"));
        api
    })
    .await;
    assert_eq!(
        result.expect("reconciles"),
        Action::requeue(backup::JOB_POLL)
    );
}
