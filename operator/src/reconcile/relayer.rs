//! UnisonRelayer: read (the upstream chain) → validate → resolve topology → build → apply → status.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::{apply_all, object_key, Context, RESYNC};
use crate::build::{names, selector_string, Component, NodeBuild};
use crate::crd::{UnisonHub, UnisonRelayer};
use crate::nodeconfig::{self, ConfigInput};
use crate::status::{self, Observed, Problem};
use crate::topology::{self, Key, Snapshot, Upstream, MAX_DEPTH};
use crate::{validate, Error};

/// Reads the objects along the upstream chain (strongly consistent GETs, not a cache), stopping
/// at a hub, an address, a missing object or a repeat.
async fn load_chain(ctx: &Context, rel: &UnisonRelayer) -> Result<Snapshot, Error> {
    let mut snap = Snapshot::default();
    snap.add_relayer(rel);
    let mut seen: HashSet<Key> = HashSet::new();
    let mut next = Upstream::of(rel);
    for _ in 0..=MAX_DEPTH {
        match next.take() {
            None | Some(Upstream::Address(_)) => break,
            Some(Upstream::Hub(k)) => {
                let api: Api<UnisonHub> = Api::namespaced(ctx.client.clone(), &k.namespace);
                if let Some(h) = api.get_opt(&k.name).await.map_err(Error::Kube)? {
                    snap.add_hub(&h);
                }
                break;
            }
            Some(Upstream::Relayer(k)) => {
                if snap.relayers.contains_key(&k) || !seen.insert(k.clone()) {
                    break;
                }
                let api: Api<UnisonRelayer> = Api::namespaced(ctx.client.clone(), &k.namespace);
                match api.get_opt(&k.name).await.map_err(Error::Kube)? {
                    Some(r) => {
                        snap.add_relayer(&r);
                        next = Upstream::of(&r);
                    }
                    None => break,
                }
            }
        }
    }
    Ok(snap)
}

pub async fn reconcile(rel: Arc<UnisonRelayer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = run(&rel, &ctx).await;
    ctx.metrics.observe("UnisonRelayer", started.elapsed());
    match &result {
        Ok(_) => ctx.reset_backoff(&object_key(rel.as_ref())),
        Err(e) => {
            ctx.event(rel.as_ref(), EventType::Warning, e.reason(), e.to_string())
                .await
        }
    }
    result
}

async fn run(rel: &UnisonRelayer, ctx: &Context) -> Result<Action, Error> {
    let ns = rel.namespace().ok_or(Error::MissingNamespace)?;
    let name = rel.name_any();
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);

    // read
    let existing = sts_api
        .get_opt(&names::statefulset(&name))
        .await
        .map_err(Error::Kube)?;

    // validate + resolve
    let mut problem: Option<Problem> = validate::relayer(&rel.spec)
        .and_then(|_| validate::check_storage_unchanged(&rel.spec.storage, existing.as_ref()))
        .err()
        .map(|i| Problem {
            reason: i.reason.into(),
            message: i.message,
        });
    let mut resolved = None;
    let mut namespaces = Vec::new();
    if problem.is_none() {
        let snap = load_chain(ctx, rel).await?;
        match topology::resolve(&Key::new(&ns, &name), &snap, &ctx.cluster_domain) {
            Ok(r) => {
                match validate::effective_namespaces(
                    &rel.spec.namespaces,
                    r.upstream_namespaces.as_deref(),
                ) {
                    Ok(n) => namespaces = n,
                    Err(i) => {
                        problem = Some(Problem {
                            reason: i.reason.into(),
                            message: i.message,
                        })
                    }
                }
                resolved = Some(r);
            }
            Err(e) => {
                problem = Some(Problem {
                    reason: e.reason().into(),
                    message: e.to_string(),
                })
            }
        }
    }

    let mut observed = Observed {
        generation: rel.metadata.generation,
        desired_replicas: rel.spec.replicas,
        selector: selector_string(&name, Component::Relayer),
        grpc_endpoint: Some(names::grpc_endpoint(
            &name,
            &ns,
            &ctx.cluster_domain,
            rel.spec.tls.is_some(),
        )),
        depth: resolved.as_ref().map(|r| r.depth),
        upstream: resolved.as_ref().map(|r| r.endpoint.clone()),
        upstream_ref: resolved.as_ref().map(|r| r.upstream_ref.clone()),
        ..Default::default()
    };

    // build + apply (skipped when blocked: a broken reference must not tear down what serves reads)
    let applied;
    match (&problem, &resolved) {
        (None, Some(r)) => {
            let config = nodeconfig::render(&ConfigInput {
                mode: Component::Relayer.mode(),
                namespaces,
                spec: rel.spec.view(),
                upstream: Some(r.endpoint.clone()),
                mirrors: Default::default(),
            })?;
            let b = NodeBuild::for_relayer(rel, &config).ok_or(Error::MissingUid)?;
            let (sts, notes) = apply_all(ctx, &b).await?;
            applied = Some(sts);
            observed.notes = notes;
            observed.config_hash = Some(config.hash.clone());
        }
        _ => applied = existing,
    }
    observed.statefulset = applied.as_ref();
    observed.problem = problem.clone();

    // status
    let new = status::compute(rel.status.as_ref(), &observed, &status::now());
    let api: Api<UnisonRelayer> = Api::namespaced(ctx.client.clone(), &ns);
    if status::patch_if_changed(&api, &name, rel.status.as_ref(), &new).await? {
        ctx.metrics
            .status_writes
            .get_or_create(&crate::metrics::KindLabel {
                kind: "UnisonRelayer".into(),
            })
            .inc();
        if let Some(p) = &problem {
            ctx.event(rel, EventType::Warning, &p.reason, p.message.clone())
                .await;
        }
    }
    Ok(Action::requeue(RESYNC))
}
