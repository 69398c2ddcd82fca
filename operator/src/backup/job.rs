//! Backups the operator cannot ask for itself: a hub with `httpAuth` (its token is in a Secret the
//! operator may not read) or with `tls.http` (its certificate is verified with a CA in a Secret).
//! A Job runs `unisondb backup --object-store` in the hub's own image, one per namespace; its pod
//! reads the Secrets, and leaves the node's answer as its termination message, which the operator
//! reads from the pod status. Building the Job and reading it back are pure.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, KeyToPath, LocalObjectReference, Pod, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;

use crate::build::statefulset::{container_security, RUN_AS};
use crate::crd::{HttpAuthSpec, NamespaceBackup, UnisonHub};

use super::trigger::parse_answer;

/// Where the container leaves its result (the kubelet's default termination message path).
pub const RESULT_PATH: &str = "/dev/termination-log";
/// The Job's only container.
pub const CONTAINER: &str = "backup";
/// The pod's tries at one namespace (a hub restarting meanwhile is worth a retry, no more).
pub const BACKOFF_LIMIT: i32 = 2;
/// How long one namespace's Job may run (as the operator's own request, `trigger::BACKUP_TIMEOUT`).
pub const ACTIVE_DEADLINE_SECONDS: i64 = 3600;
/// Finished Jobs (and their pods, with the message) stay a day for `kubectl describe`.
pub const TTL_SECONDS_AFTER_FINISHED: i32 = 86_400;
/// Where the hub's CA (`ca.crt` only, from its TLS Secret) is mounted for an https hub.
pub const CA_DIR: &str = "/etc/unisondb/ca";
/// Annotations naming what a Job backs up (names may not fit a label value).
pub const BACKUP_ANNOTATION: &str = "unisondb.io/backup";
pub const NAMESPACE_ANNOTATION: &str = "unisondb.io/namespace";
/// Label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "job-name";
/// Labels every backup Job carries (the operator watches Jobs with these only).
pub const SELECTOR: &str =
    "app.kubernetes.io/managed-by=unisondb-operator,app.kubernetes.io/component=backup";

/// Whether backups of `hub` run as Jobs rather than as the operator's own HTTP request.
pub fn needs_job(hub: &UnisonHub) -> bool {
    hub.spec.node.http_auth.is_some() || hub.spec.node.tls.as_ref().is_some_and(|t| t.http)
}

/// What a backup Job of one hub needs, read from the hub once.
#[derive(Clone, Debug, PartialEq)]
pub struct JobPlan {
    /// The hub's HTTP API (client Service; `https` with `tls.http`).
    pub endpoint: String,
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub image_pull_secrets: Vec<String>,
    /// Secret and key of the bearer token, given to the container as `UNISONDB_TOKEN`.
    pub auth: Option<HttpAuthSpec>,
    /// The hub's TLS Secret, whose `ca.crt` verifies the hub (`tls.http`).
    pub ca_secret: Option<String>,
}

impl JobPlan {
    /// The plan for `hub` (`default_image` when its spec names none).
    pub fn of(hub: &UnisonHub, endpoint: String, default_image: &str) -> JobPlan {
        let n = &hub.spec.node;
        let ca_secret = n
            .tls
            .as_ref()
            .filter(|t| t.http)
            .and_then(|t| t.secret_for(&hub.metadata.name.clone().unwrap_or_default()));
        JobPlan {
            endpoint,
            image: n.image.clone().unwrap_or_else(|| default_image.to_string()),
            image_pull_policy: n.image_pull_policy.map(|p| p.as_str().to_string()),
            image_pull_secrets: n.image_pull_secrets.clone(),
            auth: n.http_auth.clone(),
            ca_secret,
        }
    }
}

/// The Job of `namespace` in the backup `backup`: `<backup>-<namespace>` when that is a valid
/// name of at most 63 characters (the Job controller copies it into a pod label), else a
/// shortened backup name and a hash of both.
pub fn job_name(backup: &str, namespace: &str) -> String {
    let plain = format!("{backup}-{namespace}");
    let ok = plain.len() <= 63
        && plain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && plain.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        return plain;
    }
    let hash = crate::nodeconfig::hash(&format!("{backup}/{namespace}"));
    let head: String = backup
        .chars()
        .take(63 - 1 - 8)
        .map(|c| if c == '.' { '-' } else { c })
        .collect();
    format!("{}-{}", head.trim_end_matches('-'), &hash[..8])
}

fn labels(hub: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "unisondb".into()),
        ("app.kubernetes.io/instance".into(), hub.to_string()),
        ("app.kubernetes.io/component".into(), "backup".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "unisondb-operator".into(),
        ),
        ("app.kubernetes.io/part-of".into(), "unisondb".into()),
    ])
}

/// `unisondb backup --object-store` against the hub; the token only ever as an env reference.
fn args(plan: &JobPlan, namespace: &str) -> Vec<String> {
    let mut a: Vec<String> = [
        "backup",
        "--object-store",
        "--url",
        &plan.endpoint,
        "--namespace",
        namespace,
        "--result-file",
        RESULT_PATH,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if plan.ca_secret.is_some() {
        a.push("--ca-file".into());
        a.push(format!("{CA_DIR}/ca.crt"));
    }
    a
}

fn container(plan: &JobPlan, namespace: &str) -> Container {
    let env = plan.auth.as_ref().map(|auth| {
        vec![EnvVar {
            name: "UNISONDB_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: auth.secret_name.clone(),
                    key: auth.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    let mounts = plan.ca_secret.as_ref().map(|_| {
        vec![VolumeMount {
            name: "ca".into(),
            mount_path: CA_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]
    });
    Container {
        name: CONTAINER.into(),
        image: Some(plan.image.clone()),
        image_pull_policy: plan.image_pull_policy.clone(),
        command: Some(vec!["unisondb".into()]),
        args: Some(args(plan, namespace)),
        env,
        volume_mounts: mounts,
        termination_message_path: Some(RESULT_PATH.into()),
        termination_message_policy: Some("File".into()),
        // An HTTP client waiting for one answer.
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("10m".into())),
                ("memory".to_string(), Quantity("32Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("128Mi".into()),
            )])),
            ..Default::default()
        }),
        security_context: Some(container_security()),
        ..Default::default()
    }
}

/// The Job backing up `namespace` of `hub` for the UnisonBackup `owner` (its controller).
pub fn build(
    backup: &str,
    backup_namespace: &str,
    owner: OwnerReference,
    hub: &str,
    namespace: &str,
    plan: &JobPlan,
) -> Job {
    let labels = labels(hub);
    let volumes = plan.ca_secret.as_ref().map(|secret| {
        vec![Volume {
            name: "ca".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![KeyToPath {
                    key: "ca.crt".into(),
                    path: "ca.crt".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    let pull_secrets = (!plan.image_pull_secrets.is_empty()).then(|| {
        plan.image_pull_secrets
            .iter()
            .map(|n| LocalObjectReference { name: n.clone() })
            .collect()
    });
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(backup, namespace)),
            namespace: Some(backup_namespace.to_string()),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([
                (BACKUP_ANNOTATION.to_string(), backup.to_string()),
                (NAMESPACE_ANNOTATION.to_string(), namespace.to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(BACKOFF_LIMIT),
            active_deadline_seconds: Some(ACTIVE_DEADLINE_SECONDS),
            ttl_seconds_after_finished: Some(TTL_SECONDS_AFTER_FINISHED),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    // The pod never calls the Kubernetes API.
                    automount_service_account_token: Some(false),
                    containers: vec![container(plan, namespace)],
                    volumes,
                    image_pull_secrets: pull_secrets,
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Where a Job is, from its conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    /// Failed, with the Job's reason and message (`BackoffLimitExceeded`, `DeadlineExceeded`).
    Failed(String),
}

pub fn state(job: &Job) -> JobState {
    let status = job.status.as_ref();
    let conds = status.and_then(|s| s.conditions.as_ref());
    let on = |t: &str| {
        conds.and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == t && c.status == "True")
                .cloned()
        })
    };
    if let Some(c) = on("Failed") {
        let reason = c.reason.unwrap_or_default();
        let msg = c.message.unwrap_or_default();
        return JobState::Failed(
            format!("{reason}: {msg}")
                .trim_matches([':', ' '])
                .to_string(),
        );
    }
    if on("Complete").is_some() {
        return JobState::Succeeded;
    }
    JobState::Running
}

/// The backup container's termination message in the newest of the Job's pods that has one
/// (pods of the Job with uid `job_uid`; a retried Job has one pod per try).
pub fn termination_message(pods: &[Pod], job_uid: &str) -> Option<String> {
    let mut found: Vec<(String, String)> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| o.iter().any(|r| r.uid == job_uid))
        })
        .filter_map(|p| {
            let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
            let t = statuses
                .iter()
                .find(|c| c.name == CONTAINER)?
                .state
                .as_ref()?
                .terminated
                .as_ref()?;
            let at = t
                .finished_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            Some((at, t.message.clone()?.trim().to_string()))
        })
        .filter(|(_, m)| !m.is_empty())
        .collect();
    found.sort();
    found.pop().map(|(_, m)| m)
}

/// What a finished Job means for the backup of `namespace`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Running,
    Done(NamespaceBackup),
    /// (reason, message) for the Failed phase.
    Failed(&'static str, String),
}

/// Reads a Job and its pods' termination message into an [`Outcome`].
pub fn outcome(namespace: &str, job: &Job, pods: &[Pod]) -> Outcome {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let message = termination_message(pods, &uid);
    match state(job) {
        JobState::Running => Outcome::Running,
        JobState::Failed(why) => Outcome::Failed(
            "JobFailed",
            format!(
                "{namespace}: Job {name} failed ({why}): {}",
                message.as_deref().unwrap_or("no termination message")
            ),
        ),
        JobState::Succeeded => {
            let Some(m) = message else {
                return Outcome::Failed(
                    "JobResultMissing",
                    format!("{namespace}: Job {name} succeeded but its pod left no result"),
                );
            };
            match serde_json::from_str::<Value>(&m)
                .map_err(|e| format!("not JSON ({e}): {m}"))
                .and_then(|v| parse_answer(namespace, &v))
            {
                Ok(b) => Outcome::Done(b),
                Err(e) => Outcome::Failed(
                    "JobResultUnreadable",
                    format!("{namespace}: Job {name}: {e}"),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_a_label_value() {
        assert_eq!(
            job_name("nightly-1767229200", "orders"),
            "nightly-1767229200-orders"
        );
        let long = job_name(&"b".repeat(80), "Orders_2026");
        assert!(long.len() <= 63, "{long}");
        assert!(long.starts_with("bbbb"), "{long}");
        assert_ne!(
            long,
            job_name(&"b".repeat(80), "orders"),
            "namespaces differ"
        );
        let dotted = job_name("backup.one", "orders");
        assert!(!dotted.contains('.') && dotted.len() <= 63, "{dotted}");
    }
}
