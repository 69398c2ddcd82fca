//! UnisonHub: read → validate → build → apply → status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::{apply_all, object_key, Context, RESYNC};
use crate::build::{names, selector_string, Component, NodeBuild};
use crate::crd::UnisonHub;
use crate::nodeconfig::{self, ConfigInput};
use crate::status::{self, Observed, Problem};
use crate::{validate, Error};

/// Resolves `mirrors` to `namespace -> gRPC URL`, reading referenced hubs.
async fn resolve_mirrors(
    ctx: &Context,
    hub: &UnisonHub,
    ns: &str,
) -> Result<Result<BTreeMap<String, String>, Problem>, Error> {
    let mut out = BTreeMap::new();
    for m in &hub.spec.mirrors {
        if let Some(addr) = &m.address {
            out.insert(m.namespace.clone(), addr.clone());
            continue;
        }
        let Some(r) = &m.hub_ref else { continue };
        let owner_ns = r.namespace.clone().unwrap_or_else(|| ns.to_string());
        if owner_ns == ns && r.name == hub.name_any() {
            return Ok(Err(Problem {
                reason: "UpstreamCycle".into(),
                message: format!("mirror {:?} references this hub itself", m.namespace),
            }));
        }
        let api: Api<UnisonHub> = Api::namespaced(ctx.client.clone(), &owner_ns);
        match api.get_opt(&r.name).await.map_err(Error::Kube)? {
            None => {
                return Ok(Err(Problem {
                    reason: "UpstreamNotFound".into(),
                    message: format!(
                        "mirror {:?}: UnisonHub {owner_ns}/{} not found",
                        m.namespace, r.name
                    ),
                }))
            }
            Some(owner) if !owner.spec.namespaces.contains(&m.namespace) => {
                return Ok(Err(Problem {
                    reason: "NamespaceNotInUpstream".into(),
                    message: format!(
                        "mirror {:?}: UnisonHub {owner_ns}/{} does not own it",
                        m.namespace, r.name
                    ),
                }))
            }
            Some(owner) => {
                let url = names::grpc_endpoint(
                    &r.name,
                    &owner_ns,
                    &ctx.cluster_domain,
                    owner.spec.tls.is_some(),
                );
                out.insert(m.namespace.clone(), url);
            }
        }
    }
    Ok(Ok(out))
}

pub async fn reconcile(hub: Arc<UnisonHub>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = run(&hub, &ctx).await;
    ctx.metrics.observe("UnisonHub", started.elapsed());
    match &result {
        Ok(_) => ctx.reset_backoff(&object_key(hub.as_ref())),
        Err(e) => {
            ctx.event(hub.as_ref(), EventType::Warning, e.reason(), e.to_string())
                .await
        }
    }
    result
}

async fn run(hub: &UnisonHub, ctx: &Context) -> Result<Action, Error> {
    let ns = hub.namespace().ok_or(Error::MissingNamespace)?;
    let name = hub.name_any();
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);

    // read
    let existing = sts_api
        .get_opt(&names::statefulset(&name))
        .await
        .map_err(Error::Kube)?;

    // validate
    let mut problem: Option<Problem> = validate::hub(&hub.spec)
        .and_then(|_| validate::check_storage_unchanged(&hub.spec.storage, existing.as_ref()))
        .err()
        .map(|i| Problem {
            reason: i.reason.into(),
            message: i.message,
        });
    let mut mirrors = BTreeMap::new();
    if problem.is_none() {
        match resolve_mirrors(ctx, hub, &ns).await? {
            Ok(m) => mirrors = m,
            Err(p) => problem = Some(p),
        }
    }

    let mut observed = Observed {
        generation: hub.metadata.generation,
        desired_replicas: 1,
        selector: selector_string(&name, Component::Hub),
        grpc_endpoint: Some(names::grpc_endpoint(
            &name,
            &ns,
            &ctx.cluster_domain,
            hub.spec.tls.is_some(),
        )),
        depth: Some(0),
        ..Default::default()
    };

    // build + apply
    let applied;
    if problem.is_none() {
        let config = nodeconfig::render(&ConfigInput {
            mode: Component::Hub.mode(),
            namespaces: hub.spec.namespaces.clone(),
            spec: hub.spec.view(),
            upstream: None,
            mirrors,
        })?;
        let b = NodeBuild::for_hub(hub, &config).ok_or(Error::MissingUid)?;
        let (sts, notes) = apply_all(ctx, &b).await?;
        applied = Some(sts);
        observed.notes = notes;
        observed.config_hash = Some(config.hash.clone());
    } else {
        applied = existing;
    }
    observed.statefulset = applied.as_ref();
    observed.problem = problem.clone();

    // status
    let new = status::compute(hub.status.as_ref(), &observed, &status::now());
    let api: Api<UnisonHub> = Api::namespaced(ctx.client.clone(), &ns);
    if status::patch_if_changed(&api, &name, hub.status.as_ref(), &new).await? {
        ctx.metrics
            .status_writes
            .get_or_create(&crate::metrics::KindLabel {
                kind: "UnisonHub".into(),
            })
            .inc();
        if let Some(p) = &problem {
            ctx.event(hub, EventType::Warning, &p.reason, p.message.clone())
                .await;
        }
    }
    Ok(Action::requeue(RESYNC))
}
