//! UnisonDB Kubernetes operator: `UnisonHub` and `UnisonRelayer` custom resources, reconciled by
//! one pipeline (see [`reconcile`]): dereference → validate → build → apply → status; and the
//! backup kinds `UnisonBackup` and `UnisonScheduledBackup` (see [`backup`]).

pub mod apply;
pub mod backup;
pub mod build;
pub mod changes;
pub mod connectivity;
pub mod controller;
pub mod crd;
pub mod dereference;
pub mod group;
pub mod kind;
pub mod leader;
pub mod metrics;
pub mod nodeconfig;
pub mod objectstore;
pub mod reconcile;
pub mod status;
pub mod topology;
pub mod validate;
pub mod volumes;

/// Errors of one reconcile; each maps to a metrics/event reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("object has no namespace")]
    MissingNamespace,
    #[error("object has no uid yet")]
    MissingUid,
    #[error("node config: {0}")]
    Config(#[from] nodeconfig::ConfigError),
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
}

impl Error {
    /// Short label for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 409 => "Conflict",
            Error::Kube(kube::Error::Api(e)) if e.code == 422 => "Invalid",
            Error::Kube(kube::Error::Api(_)) => "ApiError",
            Error::Kube(_) => "ClientError",
            Error::MissingNamespace => "MissingNamespace",
            Error::MissingUid => "MissingUid",
            Error::Config(_) => "InvalidConfig",
            Error::Serde(_) => "Serialization",
        }
    }
}
