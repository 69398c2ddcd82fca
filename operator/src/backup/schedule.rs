//! `UnisonScheduledBackup`: creates an owned UnisonBackup `<name>-<unix time>` at each cron time
//! (UTC), requeues itself for the next one, and deletes Completed UnisonBackups beyond
//! `successfulBackupsHistoryLimit`. A missed time (operator down) is made up once, not per miss.
//! The schedule arithmetic ([`plan`]) and the pruning choice ([`to_prune`]) are pure.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::build::FIELD_MANAGER;
use crate::crd::{BackupPhase, Condition, UnisonBackup, UnisonBackupSpec, UnisonScheduledBackup};
use crate::reconcile::{object_key, Context, RESYNC};
use crate::Error;

/// Label on UnisonBackups a schedule created: the schedule's name.
pub const SCHEDULE_LABEL: &str = "unisondb.io/scheduled-backup";

/// Parses a cron schedule (5 fields, or 6 with seconds first).
pub fn parse(schedule: &str) -> Result<Cron, String> {
    Cron::from_str(schedule).map_err(|e| format!("schedule {schedule:?}: {e}"))
}

/// What a reconcile at `now` should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// A scheduled time in `(since, now]` not yet backed up: create its UnisonBackup.
    pub due: Option<Timestamp>,
    /// The first scheduled time after `now`.
    pub next: Option<Timestamp>,
}

/// `since` is the last scheduled time taken (or the object's creation).
pub fn plan(cron: &Cron, since: Timestamp, now: Timestamp) -> Plan {
    let at = |t: Timestamp| t.to_zoned(TimeZone::UTC);
    let due = cron
        .find_previous_occurrence(&at(now), true)
        .ok()
        .map(|z| z.timestamp())
        .filter(|t| *t > since);
    let next = cron
        .find_next_occurrence(&at(now), false)
        .ok()
        .map(|z| z.timestamp());
    Plan { due, next }
}

/// Name of the UnisonBackup for the scheduled time `t`.
pub fn backup_name(schedule: &str, t: Timestamp) -> String {
    format!("{schedule}-{}", t.as_second())
}

/// Completed backups beyond the newest `limit` (by scheduled time, from the name), oldest first.
/// Pending, Running and Failed ones are never pruned here.
pub fn to_prune(backups: &[UnisonBackup], limit: u32) -> Vec<String> {
    let mut done: Vec<(i64, String)> = backups
        .iter()
        .filter(|b| {
            b.status
                .as_ref()
                .is_some_and(|s| s.phase == BackupPhase::Completed)
        })
        .map(|b| {
            let name = b.name_any();
            let t = name
                .rsplit_once('-')
                .and_then(|(_, t)| t.parse::<i64>().ok())
                .unwrap_or(i64::MIN);
            (t, name)
        })
        .collect();
    done.sort();
    let keep = limit as usize;
    let excess = done.len().saturating_sub(keep);
    done.into_iter().take(excess).map(|(_, n)| n).collect()
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The UnisonBackup a schedule creates for `t`, owned by the schedule.
pub fn backup_for(sb: &UnisonScheduledBackup, t: Timestamp) -> Option<UnisonBackup> {
    let owner = sb.controller_owner_ref(&())?;
    let name = backup_name(&sb.name_any(), t);
    Some(UnisonBackup {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sb.namespace(),
            labels: Some(BTreeMap::from([(
                SCHEDULE_LABEL.to_string(),
                sb.name_any(),
            )])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: UnisonBackupSpec {
            hub_ref: sb.spec.hub_ref.clone(),
            namespaces: sb.spec.namespaces.clone(),
        },
        status: None,
    })
}

fn degraded(prev: &[Condition], problem: Option<&str>, at: &str) -> Vec<Condition> {
    let status = if problem.is_some() { "True" } else { "False" };
    let last = prev
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| at.to_string());
    vec![Condition {
        type_: "Degraded".into(),
        status: status.into(),
        reason: if problem.is_some() {
            "InvalidSchedule"
        } else {
            "AsExpected"
        }
        .into(),
        message: problem.unwrap_or("scheduled").to_string(),
        last_transition_time: last,
        observed_generation: None,
    }]
}

/// The controller's reconcile function for UnisonScheduledBackups.
pub async fn reconcile(
    obj: Arc<UnisonScheduledBackup>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = run(&obj, &ctx, Timestamp::now()).await;
    ctx.metrics
        .observe("UnisonScheduledBackup", started.elapsed());
    match &result {
        Ok(_) => ctx.reset_backoff(&object_key(obj.as_ref())),
        Err(e) => {
            ctx.event(obj.as_ref(), EventType::Warning, e.reason(), e.to_string())
                .await
        }
    }
    result
}

/// One reconcile at `now`.
pub async fn run(
    obj: &UnisonScheduledBackup,
    ctx: &Context,
    now_ts: Timestamp,
) -> Result<Action, Error> {
    let ns = obj.namespace().ok_or(Error::MissingNamespace)?;
    let name = obj.name_any();
    let api: Api<UnisonScheduledBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let before = obj.status.clone().unwrap_or_default();
    let mut s = before.clone();
    let at = rfc3339(now_ts);
    let mut requeue = RESYNC;
    match parse(&obj.spec.schedule) {
        Err(why) => {
            s.next_schedule_time = None;
            s.conditions = degraded(&before.conditions, Some(&why), &at);
            if before.conditions != s.conditions {
                ctx.event(obj, EventType::Warning, "InvalidSchedule", why)
                    .await;
            }
        }
        Ok(cron) => {
            s.conditions = degraded(&before.conditions, None, &at);
            let since = before
                .last_schedule_time
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .or_else(|| obj.meta().creation_timestamp.as_ref().map(|t| t.0))
                .unwrap_or(now_ts);
            let p = plan(&cron, since, now_ts);
            if obj.spec.suspend {
                s.next_schedule_time = None;
            } else {
                if let Some(due) = p.due {
                    let backup = backup_for(obj, due).ok_or(Error::MissingUid)?;
                    let bname = backup.name_any();
                    let backups: Api<UnisonBackup> = Api::namespaced(ctx.client.clone(), &ns);
                    backups
                        .patch(
                            &bname,
                            &PatchParams::apply(FIELD_MANAGER).force(),
                            &Patch::Apply(&backup),
                        )
                        .await
                        .map_err(Error::Kube)?;
                    s.last_schedule_time = Some(rfc3339(due));
                    s.last_backup = Some(bname.clone());
                    ctx.event(
                        obj,
                        EventType::Normal,
                        "BackupCreated",
                        format!("UnisonBackup {bname} for {}", rfc3339(due)),
                    )
                    .await;
                }
                s.next_schedule_time = p.next.map(rfc3339);
                if let Some(next) = p.next {
                    let secs = next.duration_since(now_ts).as_secs().max(1) as u64;
                    requeue = Duration::from_secs(secs).min(RESYNC);
                }
            }
        }
    }
    prune(obj, ctx, &ns, &name).await?;
    if s != before {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&super::status_patch(&before, &s)?),
        )
        .await
        .map_err(Error::Kube)?;
    }
    Ok(Action::requeue(requeue))
}

/// Deletes this schedule's Completed UnisonBackups beyond the history limit.
async fn prune(
    obj: &UnisonScheduledBackup,
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<(), Error> {
    let api: Api<UnisonBackup> = Api::namespaced(ctx.client.clone(), ns);
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let list = api
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
        .await
        .map_err(Error::Kube)?;
    let owned: Vec<UnisonBackup> = list
        .items
        .into_iter()
        .filter(|b| b.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    for old in to_prune(&owned, obj.spec.successful_backups_history_limit) {
        match api.delete(&old, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.event(
                    obj,
                    EventType::Normal,
                    "BackupPruned",
                    format!(
                        "UnisonBackup {old} deleted (history limit {})",
                        obj.spec.successful_backups_history_limit
                    ),
                )
                .await
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn due_is_the_latest_missed_time_and_next_follows_now() {
        let cron = parse("0 */6 * * *").expect("parses");
        let p = plan(
            &cron,
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-01T13:05:00Z"),
        );
        assert_eq!(
            p.due,
            Some(ts("2026-01-01T12:00:00Z")),
            "one make-up run, the latest"
        );
        assert_eq!(p.next, Some(ts("2026-01-01T18:00:00Z")));
        let p = plan(
            &cron,
            ts("2026-01-01T12:00:00Z"),
            ts("2026-01-01T13:05:00Z"),
        );
        assert_eq!(p.due, None, "already taken");
        let p = plan(
            &cron,
            ts("2026-01-01T12:00:00Z"),
            ts("2026-01-01T18:00:00Z"),
        );
        assert_eq!(
            p.due,
            Some(ts("2026-01-01T18:00:00Z")),
            "a time equal to now is due"
        );
        assert!(parse("61 * * * *").is_err());
        assert!(parse("every day").is_err());
        let six = parse("30 0 3 * * *").expect("seconds first");
        let p = plan(&six, ts("2026-01-01T00:00:00Z"), ts("2026-01-01T04:00:00Z"));
        assert_eq!(p.due, Some(ts("2026-01-01T03:00:30Z")));
    }

    fn backup(name: &str, phase: BackupPhase) -> UnisonBackup {
        let mut b = UnisonBackup::new(
            name,
            UnisonBackupSpec {
                hub_ref: Default::default(),
                namespaces: vec![],
            },
        );
        b.status = Some(crate::crd::UnisonBackupStatus {
            phase,
            ..Default::default()
        });
        b
    }

    #[test]
    fn prunes_only_completed_beyond_the_limit_oldest_first() {
        let list = vec![
            backup("nightly-300", BackupPhase::Completed),
            backup("nightly-100", BackupPhase::Completed),
            backup("nightly-50", BackupPhase::Failed),
            backup("nightly-200", BackupPhase::Completed),
            backup("nightly-400", BackupPhase::Running),
        ];
        assert_eq!(to_prune(&list, 1), vec!["nightly-100", "nightly-200"]);
        assert_eq!(to_prune(&list, 3), Vec::<String>::new());
    }
}
