//! The pods' own ServiceAccount: nodes never call the Kubernetes API, so no token is mounted, and
//! a per-node account lets a cluster admin grant it nothing (or bind policies to it) explicitly
//! instead of sharing the namespace's `default` account.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::{names, NodeBuild};

pub fn build(b: &NodeBuild<'_>) -> ServiceAccount {
    ServiceAccount {
        metadata: b.meta(names::service_account(&b.name)),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}
