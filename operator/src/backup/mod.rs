//! `UnisonBackup`: one base backup of a hub's namespaces into the hub's object store, asked of the
//! hub over HTTP ([`trigger`]) — or, for a hub with `httpAuth` or `tls.http`, by a Job in the
//! hub's image ([`job`]) — one namespace at a time, progress recorded in status after each so a
//! restarted operator never takes one twice. Completed and Failed are final.
//!
//! Stages as for nodes: read the hub; decide, purely ([`admit`]); act (the HTTP call or the
//! Job); status.

pub mod job;
pub mod schedule;
pub mod trigger;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::crd::{
    BackupPhase, Condition, NamespaceBackup, UnisonBackup, UnisonBackupSpec, UnisonBackupStatus,
    UnisonHub,
};
use crate::nodeconfig::HTTP_PORT;
use crate::reconcile::{object_key, Context};
use crate::status::now;
use crate::topology::Key;
use crate::Error;

use trigger::TriggerError;

/// Requeue while the hub is missing or unreachable.
pub const RETRY: Duration = Duration::from_secs(30);
/// A backup not Completed this long after it started fails (`DeadlineExceeded`).
pub const DEADLINE: Duration = Duration::from_secs(2 * 3600);
/// Requeue while a backup Job runs (its changes also wake the controller, which watches Jobs).
pub const JOB_POLL: Duration = Duration::from_secs(15);

/// What to do with a UnisonBackup, given its hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Not yet possible (the hub does not exist yet): stay Pending.
    Wait(String),
    /// Never possible: Failed with (reason, message).
    Fail(&'static str, String),
    /// Back up these namespaces through this HTTP endpoint: asked by the operator, or (`job`) by
    /// a Job per namespace, for hubs whose token or CA is in a Secret the operator does not read.
    Go {
        endpoint: String,
        namespaces: Vec<String>,
        job: bool,
    },
}

/// The hub's HTTP API, through its client Service (`https` when `tls` is set).
pub fn http_endpoint(hub: &Key, cluster_domain: &str, tls: bool) -> String {
    format!(
        "{}://{}.{}.svc.{cluster_domain}:{HTTP_PORT}",
        if tls { "https" } else { "http" },
        crate::build::names::client_service(&hub.name),
        hub.namespace
    )
}

/// Decides whether and what to back up (pure).
pub fn admit(
    spec: &UnisonBackupSpec,
    key: &Key,
    hub: Option<&UnisonHub>,
    cluster_domain: &str,
) -> Admission {
    let Some(hub) = hub else {
        return Admission::Wait(format!("UnisonHub {key} not found"));
    };
    if hub.spec.backup.is_none() {
        return Admission::Fail(
            "BackupNotConfigured",
            format!("UnisonHub {key} has no spec.backup: set spec.backup.objectStore on the hub, then create a new UnisonBackup"),
        );
    }
    let namespaces = if spec.namespaces.is_empty() {
        hub.spec.namespaces.clone()
    } else {
        spec.namespaces.clone()
    };
    let foreign: Vec<&String> = namespaces
        .iter()
        .filter(|n| !hub.spec.namespaces.contains(n))
        .collect();
    if !foreign.is_empty() {
        return Admission::Fail(
            "NamespaceNotOwned",
            format!(
                "namespaces {foreign:?} are not owned by UnisonHub {key} (owns {:?})",
                hub.spec.namespaces
            ),
        );
    }
    let tls = hub.spec.node.tls.as_ref().is_some_and(|t| t.http);
    Admission::Go {
        endpoint: http_endpoint(key, cluster_domain, tls),
        namespaces,
        job: job::needs_job(hub),
    }
}

fn final_conditions(phase: BackupPhase, reason: &str, message: &str, at: &str) -> Vec<Condition> {
    let c = |t: &str, on: bool| Condition {
        type_: t.to_string(),
        status: if on { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: at.to_string(),
        observed_generation: None,
    };
    vec![
        c("Completed", phase == BackupPhase::Completed),
        c("Failed", phase == BackupPhase::Failed),
    ]
}

/// `s` made final: phase, completion time, conditions, message.
pub fn finish(
    mut s: UnisonBackupStatus,
    phase: BackupPhase,
    reason: &str,
    message: String,
    at: &str,
) -> UnisonBackupStatus {
    s.phase = phase;
    s.completed_at = Some(at.to_string());
    s.conditions = final_conditions(phase, reason, &message, at);
    s.total_bytes = Some(s.backups.iter().map(|b| b.size_bytes).sum());
    s.message = Some(message);
    s.job = None;
    s
}

/// Whether a backup that started at `started` (RFC 3339) is past [`DEADLINE`] at `now`.
pub fn past_deadline(started: Option<&str>, now: &str) -> bool {
    let (Some(s), Ok(n)) = (started, now.parse::<jiff::Timestamp>()) else {
        return false;
    };
    s.parse::<jiff::Timestamp>()
        .is_ok_and(|s| n.duration_since(s).as_secs() >= DEADLINE.as_secs() as i64)
}

/// Patches the whole status (merge patch) when it changed.
async fn write(
    api: &Api<UnisonBackup>,
    name: &str,
    before: &UnisonBackupStatus,
    after: &UnisonBackupStatus,
) -> Result<(), Error> {
    if before == after {
        return Ok(());
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&status_patch(before, after)?),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

/// A merge patch taking `.status` from `before` to `after`: fields `after` omits are set to null
/// (a merge patch keeps fields it does not name).
pub fn status_patch<S: serde::Serialize>(
    before: &S,
    after: &S,
) -> Result<serde_json::Value, Error> {
    let mut new = serde_json::to_value(after)?;
    if let (Some(old), Some(n)) = (
        serde_json::to_value(before)?.as_object(),
        new.as_object_mut(),
    ) {
        for k in old.keys() {
            n.entry(k.clone()).or_insert(serde_json::Value::Null);
        }
    }
    Ok(json!({ "status": new }))
}

/// The controller's reconcile function for UnisonBackups.
pub async fn reconcile(obj: Arc<UnisonBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = run(&obj, &ctx).await;
    ctx.metrics.observe("UnisonBackup", started.elapsed());
    match &result {
        Ok(_) => ctx.reset_backoff(&object_key(obj.as_ref())),
        Err(e) => {
            ctx.event(obj.as_ref(), EventType::Warning, e.reason(), e.to_string())
                .await
        }
    }
    result
}

async fn run(obj: &UnisonBackup, ctx: &Context) -> Result<Action, Error> {
    let before = obj.status.clone().unwrap_or_default();
    if before.phase.is_final() {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().ok_or(Error::MissingNamespace)?;
    let name = obj.name_any();
    let api: Api<UnisonBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let key = Key::from_ref(&obj.spec.hub_ref, &ns);
    let hub = Api::<UnisonHub>::namespaced(ctx.client.clone(), &key.namespace)
        .get_opt(&key.name)
        .await
        .map_err(Error::Kube)?;
    let (endpoint, namespaces, by_job) =
        match admit(&obj.spec, &key, hub.as_ref(), &ctx.cluster_domain) {
            Admission::Wait(why) => {
                let mut s = before.clone();
                s.message = Some(why);
                write(&api, &name, &before, &s).await?;
                return Ok(Action::requeue(RETRY));
            }
            Admission::Fail(reason, why) => {
                let s = finish(
                    before.clone(),
                    BackupPhase::Failed,
                    reason,
                    why.clone(),
                    &now(),
                );
                write(&api, &name, &before, &s).await?;
                ctx.event(obj, EventType::Warning, reason, why).await;
                return Ok(Action::await_change());
            }
            Admission::Go {
                endpoint,
                namespaces,
                job,
            } => (endpoint, namespaces, job),
        };
    let plan = match (by_job, &hub) {
        (true, Some(h)) => Some(job::JobPlan::of(h, endpoint.clone(), &ctx.node_image)),
        _ => None,
    };
    let mut s = before.clone();
    if s.phase == BackupPhase::Pending {
        s.phase = BackupPhase::Running;
        s.started_at = Some(now());
        s.namespaces = namespaces.clone();
        s.message = Some(match &plan {
            Some(_) => {
                format!("backing up {namespaces:?} through {endpoint}, one Job per namespace")
            }
            None => format!("backing up {namespaces:?} through {endpoint}"),
        });
        write(&api, &name, &before, &s).await?;
        ctx.event(
            obj,
            EventType::Normal,
            "Started",
            format!("base backup of {namespaces:?} on UnisonHub {key}"),
        )
        .await;
    }
    // The namespaces fixed when the backup started (a hub edited since does not change them).
    let todo: Vec<String> = s
        .namespaces
        .iter()
        .filter(|n| !s.backups.iter().any(|b| &b.namespace == *n))
        .cloned()
        .collect();
    for namespace in todo {
        let prev = s.clone();
        let step = match &plan {
            Some(plan) => job_step(obj, ctx, &key, plan, &namespace, &mut s).await?,
            None => match ctx.backups.trigger(&endpoint, &namespace).await {
                Ok(b) => Step::Done(b),
                Err(TriggerError::Refused(why)) => {
                    Step::Fail("BackupRefused", format!("{namespace}: {why}"))
                }
                Err(TriggerError::Unavailable(why)) => Step::Later {
                    msg: format!("{namespace}: {why}"),
                    retry: true,
                },
            },
        };
        match step {
            Step::Done(b) => {
                ctx.event(
                    obj,
                    EventType::Normal,
                    "NamespaceBackedUp",
                    format!(
                        "{namespace}: {} at LSN {} ({} bytes)",
                        b.location, b.last_lsn, b.size_bytes
                    ),
                )
                .await;
                s.backups.push(b);
                s.job = None;
                if s.backups.len() == s.namespaces.len() {
                    let msg = format!("{} namespace(s) backed up", s.backups.len());
                    s = finish(
                        s,
                        BackupPhase::Completed,
                        "BackupCompleted",
                        msg.clone(),
                        &now(),
                    );
                    write(&api, &name, &prev, &s).await?;
                    ctx.event(obj, EventType::Normal, "Completed", msg).await;
                    return Ok(Action::await_change());
                }
                s.message = Some(format!(
                    "{}/{} namespaces backed up",
                    s.backups.len(),
                    s.namespaces.len()
                ));
                write(&api, &name, &prev, &s).await?;
            }
            Step::Fail(reason, msg) => {
                s = finish(s, BackupPhase::Failed, reason, msg.clone(), &now());
                write(&api, &name, &prev, &s).await?;
                ctx.event(obj, EventType::Warning, reason, msg).await;
                return Ok(Action::await_change());
            }
            Step::Later { msg, retry } => {
                let at = now();
                if past_deadline(s.started_at.as_deref(), &at) {
                    if let Some(j) = s.job.clone() {
                        delete_job(ctx, &ns, &j).await?;
                    }
                    let msg = format!("not completed within {}s: {msg}", DEADLINE.as_secs());
                    s = finish(s, BackupPhase::Failed, "DeadlineExceeded", msg.clone(), &at);
                    write(&api, &name, &prev, &s).await?;
                    ctx.event(obj, EventType::Warning, "DeadlineExceeded", msg)
                        .await;
                    return Ok(Action::await_change());
                }
                if !retry {
                    s.message = Some(msg);
                    write(&api, &name, &prev, &s).await?;
                    return Ok(Action::requeue(JOB_POLL));
                }
                s.message = Some(format!("will retry: {msg}"));
                write(&api, &name, &prev, &s).await?;
                ctx.event(obj, EventType::Warning, "HubUnavailable", msg)
                    .await;
                return Ok(Action::requeue(RETRY));
            }
        }
    }
    Ok(Action::await_change())
}

/// What one namespace's backup came to in this reconcile.
enum Step {
    Done(NamespaceBackup),
    /// Final: Failed with (reason, message).
    Fail(&'static str, String),
    /// Not done yet: a Job is running (wait for it, `msg` in status), or (`retry`) the hub was
    /// unreachable and is asked again after [`RETRY`]; both up to [`DEADLINE`].
    Later {
        msg: String,
        retry: bool,
    },
}

/// One namespace through its Job: create it (once: found again by name), or read its outcome.
/// A Job deleted before it reported is created again (`JobMissing`): a second base backup of
/// the namespace is harmless, a lost one is not.
async fn job_step(
    obj: &UnisonBackup,
    ctx: &Context,
    hub: &Key,
    plan: &job::JobPlan,
    namespace: &str,
    s: &mut UnisonBackupStatus,
) -> Result<Step, Error> {
    let ns = obj.namespace().ok_or(Error::MissingNamespace)?;
    let name = obj.name_any();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let jname = job::job_name(&name, namespace);
    let Some(found) = jobs.get_opt(&jname).await.map_err(Error::Kube)? else {
        let owner = obj.controller_owner_ref(&()).ok_or(Error::MissingUid)?;
        let j = job::build(&name, &ns, owner, &hub.name, namespace, plan);
        match jobs.create(&PostParams::default(), &j).await {
            Ok(_) => {}
            // created meanwhile (a reconcile racing this one): it is the same Job
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
        let missing = s.job.as_deref() == Some(jname.as_str());
        if missing {
            ctx.event(
                obj,
                EventType::Warning,
                "JobMissing",
                format!("{namespace}: Job {jname} was deleted before it reported; created again"),
            )
            .await;
        } else {
            ctx.event(
                obj,
                EventType::Normal,
                "JobCreated",
                format!("{namespace}: Job {jname} runs the backup"),
            )
            .await;
        }
        s.job = Some(jname.clone());
        return Ok(Step::Later {
            msg: format!(
                "{namespace}: Job {jname} created{}",
                if missing { " again" } else { "" }
            ),
            retry: false,
        });
    };
    let ours = found
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| Some(&r.uid) == obj.metadata.uid.as_ref());
    if !ours {
        // e.g. the Job of an earlier UnisonBackup of the same name, not yet garbage-collected
        return Ok(Step::Later {
            msg: format!(
                "{namespace}: Job {jname} exists but is not this backup's; waiting for it to go"
            ),
            retry: false,
        });
    }
    s.job = Some(jname.clone());
    if job::state(&found) == job::JobState::Running {
        return Ok(Step::Later {
            msg: format!("{namespace}: waiting for Job {jname}"),
            retry: false,
        });
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let listed = pods
        .list(&ListParams::default().labels(&format!("{}={jname}", job::JOB_NAME_LABEL)))
        .await
        .map_err(Error::Kube)?;
    Ok(match job::outcome(namespace, &found, &listed.items) {
        job::Outcome::Running => Step::Later {
            msg: format!("{namespace}: waiting for Job {jname}"),
            retry: false,
        },
        job::Outcome::Done(b) => Step::Done(b),
        job::Outcome::Failed(reason, msg) => Step::Fail(reason, msg),
    })
}

/// Stops a backup Job (its pods go with it); absent is fine.
async fn delete_job(ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    match jobs.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Error policy of the backup kinds: count and back off per object.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = object_key(obj.as_ref());
    ctx.metrics.error(&K::kind(&()), err.reason());
    let delay = ctx.next_backoff(&key);
    tracing::warn!(object = %key, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(yaml: &str) -> UnisonHub {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: unisondb.io/v1alpha1\nkind: UnisonHub\nmetadata: {{name: h, namespace: p}}\nspec: {yaml}"
        ))
        .expect("hub parses")
    }

    fn spec(ns: &[&str]) -> UnisonBackupSpec {
        UnisonBackupSpec {
            hub_ref: crate::crd::ObjectRef {
                name: "h".into(),
                namespace: None,
            },
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
        }
    }

    const STORE: &str = "backup: {objectStore: {bucket: bkp, credentialsSecret: {name: s3}}}";

    #[test]
    fn admission_waits_fails_or_goes() {
        let key = Key::new("p", "h");
        assert!(
            matches!(admit(&spec(&[]), &key, None, "c.l"), Admission::Wait(m) if m.contains("p/h not found"))
        );
        let bare = hub("{namespaces: [a, b]}");
        assert!(matches!(
            admit(&spec(&[]), &key, Some(&bare), "c.l"),
            Admission::Fail("BackupNotConfigured", m) if m.contains("spec.backup")
        ));
        let with = hub(&format!("{{namespaces: [a, b], {STORE}}}"));
        assert_eq!(
            admit(&spec(&[]), &key, Some(&with), "c.l"),
            Admission::Go {
                endpoint: "http://h.p.svc.c.l:4000".into(),
                namespaces: vec!["a".into(), "b".into()],
                job: false,
            }
        );
        // a token the operator may not read, or a CA it does not hold: a Job asks instead
        let auth = hub(&format!(
            "{{namespaces: [a], {STORE}, httpAuth: {{secretName: tok}}}}"
        ));
        assert!(matches!(
            admit(&spec(&[]), &key, Some(&auth), "c.l"),
            Admission::Go { job: true, ref endpoint, .. } if endpoint == "http://h.p.svc.c.l:4000"
        ));
        let https = hub(&format!(
            "{{namespaces: [a], {STORE}, tls: {{secretName: t, http: true}}}}"
        ));
        assert!(matches!(
            admit(&spec(&[]), &key, Some(&https), "c.l"),
            Admission::Go { job: true, ref endpoint, .. } if endpoint == "https://h.p.svc.c.l:4000"
        ));
        assert!(matches!(
            admit(&spec(&["z"]), &key, Some(&with), "c.l"),
            Admission::Fail("NamespaceNotOwned", _)
        ));
        // archiving paused: base backups still go to the bucket
        let paused = hub(
            "{namespaces: [a], backup: {objectStore: {bucket: bkp, credentialsSecret: {name: s3}}, walArchiving: {enabled: false}}}",
        );
        assert!(!matches!(
            admit(&spec(&[]), &key, Some(&paused), "c.l"),
            Admission::Fail(..)
        ));
    }

    #[test]
    fn deadline_counts_from_the_start() {
        assert!(!past_deadline(None, "2026-01-01T10:00:00Z"));
        assert!(!past_deadline(
            Some("2026-01-01T09:00:00Z"),
            "2026-01-01T10:00:00Z"
        ));
        assert!(past_deadline(
            Some("2026-01-01T08:00:00Z"),
            "2026-01-01T10:00:00Z"
        ));
    }
}
