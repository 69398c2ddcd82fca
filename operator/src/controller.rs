//! Wires the two controllers: owned-object watches, and topology watches that re-reconcile every
//! relayer downstream of a changed hub or relayer (and hubs mirroring a changed hub).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::backup;
use crate::crd::{UnisonBackup, UnisonHub, UnisonRelayer, UnisonScheduledBackup};
use crate::metrics::KindLabel;
use crate::reconcile::{self, error_policy, Context};
use crate::topology::{downstream_of, Key, Snapshot, Upstream};

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// An untyped API (PDBs, cert-manager Certificates).
fn dynamic_api(client: &Client, ns: Option<&str>, ar: &ApiResource) -> Api<DynamicObject> {
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// Relayers downstream of `changed`, from the relayer controller's cache.
fn downstream(store: &Store<UnisonRelayer>, changed: Upstream) -> Vec<ObjectRef<UnisonRelayer>> {
    let mut snap = Snapshot::default();
    for r in store.state() {
        snap.add_relayer(&r);
    }
    downstream_of(&changed, &snap)
        .into_iter()
        .map(|k| ObjectRef::new(&k.name).within(&k.namespace))
        .collect()
}

/// Hubs whose mirrors reference `changed`.
fn mirroring(store: &Store<UnisonHub>, changed: &Key) -> Vec<ObjectRef<UnisonHub>> {
    store
        .state()
        .iter()
        .filter(|h| {
            let ns = h.namespace().unwrap_or_default();
            h.spec.mirrors.iter().any(|m| {
                m.hub_ref
                    .as_ref()
                    .is_some_and(|r| &Key::from_ref(r, &ns) == changed)
            })
        })
        .map(|h| ObjectRef::from_obj(h.as_ref()))
        .collect()
}

/// The hub a pod belongs to (its `app.kubernetes.io/instance` label).
fn hub_of_pod(p: Pod) -> Option<ObjectRef<UnisonHub>> {
    let instance = p.labels().get("app.kubernetes.io/instance")?.clone();
    Some(ObjectRef::new(&instance).within(&p.namespace()?))
}

fn key_of<K: ResourceExt>(o: &K) -> Key {
    Key::new(o.namespace().unwrap_or_default(), o.name_any())
}

/// Runs both controllers until `shutdown` is cancelled.
pub async fn run(
    client: Client,
    ctx: Arc<Context>,
    watch_ns: Option<String>,
    shutdown: CancellationToken,
) {
    let ns = watch_ns.as_deref();
    let all = watcher::Config::default();
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=unisondb-operator");

    // Owned cert-manager Certificates are watched when cert-manager is installed at start (a
    // Certificate edited or deleted by hand is put back); without it nothing is watched, and a
    // reconcile asking for one reports `CertManagerMissing`.
    let certificates = match crate::dereference::serves_certificates(&client).await {
        Ok(true) => Some(crate::build::certificate::api_resource()),
        Ok(false) => None,
        Err(e) => {
            tracing::warn!(error = %e, "could not discover cert-manager; Certificates not watched");
            None
        }
    };
    let mut hub_ctrl = Controller::new(api::<UnisonHub>(&client, ns), all.clone());
    // Hub groups own a PDB like relayers do.
    if let Some(ar) = ctx.pdb.resource(&client).await {
        hub_ctrl = hub_ctrl.owns_with(dynamic_api(&client, ns, &ar), ar, owned.clone());
    }
    if let Some(ar) = &certificates {
        hub_ctrl = hub_ctrl.owns_with(dynamic_api(&client, ns, ar), ar.clone(), owned.clone());
    }
    let hub_store = hub_ctrl.store();
    let hs = hub_store.clone();
    let hubs = hub_ctrl
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<ServiceAccount>(&client, ns), owned.clone())
        .watches(api::<UnisonHub>(&client, ns), all.clone(), move |h| {
            mirroring(&hs, &key_of(&h))
        })
        // Hub pods (owned by the StatefulSet, not the hub): a pod going away or becoming ready
        // re-labels a hub group's leader at once, not at the next resync.
        .watches(
            api::<Pod>(&client, ns),
            watcher::Config::default().labels(&format!(
                "app.kubernetes.io/managed-by=unisondb-operator,app.kubernetes.io/component={}",
                crate::build::Component::Hub.as_str()
            )),
            hub_of_pod,
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile::reconcile, error_policy, ctx.clone())
        .for_each({
            let ctx = ctx.clone();
            move |res| {
                ctx.metrics
                    .managed
                    .get_or_create(&KindLabel {
                        kind: "UnisonHub".into(),
                    })
                    .set(hub_store.state().len() as i64);
                if let Err(e) = res {
                    tracing::debug!(error = %e, "hub controller event");
                }
                futures::future::ready(())
            }
        });

    let mut rel_ctrl = Controller::new(api::<UnisonRelayer>(&client, ns), all.clone());
    // Relayers own a PDB (more than one replica) in whichever policy API the server serves: a
    // PDB deleted or edited by hand is put back.
    if let Some(ar) = ctx.pdb.resource(&client).await {
        rel_ctrl = rel_ctrl.owns_with(dynamic_api(&client, ns, &ar), ar, owned.clone());
    }
    if let Some(ar) = certificates {
        rel_ctrl = rel_ctrl.owns_with(dynamic_api(&client, ns, &ar), ar, owned.clone());
    }
    let rel_store = rel_ctrl.store();
    let (s1, s2) = (rel_store.clone(), rel_store.clone());
    let relayers = rel_ctrl
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<ServiceAccount>(&client, ns), owned)
        .watches(api::<UnisonHub>(&client, ns), all.clone(), move |h| {
            downstream(&s1, Upstream::Hub(key_of(&h)))
        })
        .watches(api::<UnisonRelayer>(&client, ns), all.clone(), move |r| {
            downstream(&s2, Upstream::Relayer(key_of(&r)))
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile::reconcile, error_policy, ctx.clone())
        .for_each({
            let ctx = ctx.clone();
            move |res| {
                ctx.metrics
                    .managed
                    .get_or_create(&KindLabel {
                        kind: "UnisonRelayer".into(),
                    })
                    .set(rel_store.state().len() as i64);
                if let Err(e) = res {
                    tracing::debug!(error = %e, "relayer controller event");
                }
                futures::future::ready(())
            }
        });

    // Backup Jobs (hubs with httpAuth or tls.http): one finishing wakes its UnisonBackup.
    let backup_jobs = watcher::Config::default().labels(backup::job::SELECTOR);
    let backups = Controller::new(api::<UnisonBackup>(&client, ns), all.clone())
        .owns(api::<Job>(&client, ns), backup_jobs)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(backup::reconcile, backup::error_policy, ctx.clone())
        .for_each(|res| {
            if let Err(e) = res {
                tracing::debug!(error = %e, "backup controller event");
            }
            futures::future::ready(())
        });
    // A schedule owns its UnisonBackups: one completing re-reconciles it (history pruning).
    let schedules = Controller::new(api::<UnisonScheduledBackup>(&client, ns), all.clone())
        .owns(api::<UnisonBackup>(&client, ns), all)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(
            backup::schedule::reconcile,
            backup::error_policy,
            ctx.clone(),
        )
        .for_each(|res| {
            if let Err(e) = res {
                tracing::debug!(error = %e, "scheduled backup controller event");
            }
            futures::future::ready(())
        });

    tracing::info!(namespace = ?watch_ns, "controllers started");
    futures::join!(hubs, relayers, backups, schedules);
    tracing::info!("controllers stopped");
}
