//! Leader election through a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! reconcile at once. Optimistic concurrency (resourceVersion) decides races.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;

use crate::Error;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// Outcome of one acquire-or-renew attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Leader,
    /// Someone else holds an unexpired lease.
    Follower(Option<String>),
}

/// Pure: may `me` take a lease with this spec at `now`?
pub fn can_take(spec: &LeaseSpec, me: &str, now: Timestamp) -> bool {
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == me => true,
        Some(_) => {
            let dur = spec.lease_duration_seconds.unwrap_or(15) as i64;
            match &spec.renew_time {
                None => true,
                Some(MicroTime(t)) => t.as_second() + dur < now.as_second(),
            }
        }
    }
}

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// One round: create, renew, or take over an expired lease.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, Error> {
        let now = Timestamp::now();
        let me = self.cfg.identity.clone();
        let dur = self.cfg.lease_duration.as_secs() as i32;
        match self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(Error::Kube)?
        {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me),
                        lease_duration_seconds: Some(dur),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Attempt::Leader),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Follower(None)),
                    Err(e) => Err(Error::Kube(e)),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                if !can_take(&spec, &me, now) {
                    return Ok(Attempt::Follower(spec.holder_identity));
                }
                let was_mine = spec.holder_identity.as_deref() == Some(me.as_str());
                let mut new = spec.clone();
                new.holder_identity = Some(me);
                new.lease_duration_seconds = Some(dur);
                new.renew_time = Some(MicroTime(now));
                if !was_mine {
                    new.acquire_time = Some(MicroTime(now));
                    new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                lease.spec = Some(new);
                // replace carries resourceVersion: a concurrent writer makes this fail with 409
                match self
                    .api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(Attempt::Leader),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Follower(None)),
                    Err(e) => Err(Error::Kube(e)),
                }
            }
        }
    }

    /// Blocks until this replica is the leader.
    pub async fn acquire(&self) {
        let mut last_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leader) => {
                    tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.name, "acquired leadership");
                    return;
                }
                Ok(Attempt::Follower(h)) => {
                    if h != last_holder {
                        tracing::info!(holder = ?h, "standing by: lease held by another replica");
                        last_holder = h;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.cfg.renew_every).await;
        }
    }

    /// Renews until the lease is lost (returns then). Losing it means another replica may
    /// already reconcile, so the caller must stop at once.
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leader) => last_ok = tokio::time::Instant::now(),
                Ok(Attempt::Follower(h)) => {
                    tracing::error!(holder = ?h, "lost leadership");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease renewal failed");
                    // Stop before the lease can expire under us.
                    if last_ok.elapsed() + self.cfg.renew_every >= self.cfg.lease_duration {
                        tracing::error!("could not renew the lease in time");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up on shutdown so a standby takes over without waiting for expiry.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await {
            let mine = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.cfg.identity.as_str());
            if mine {
                if let Some(spec) = lease.spec.as_mut() {
                    spec.holder_identity = None;
                }
                if let Err(e) = self
                    .api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
                {
                    tracing::warn!(error = %e, "could not release the lease");
                }
            }
        }
    }
}
