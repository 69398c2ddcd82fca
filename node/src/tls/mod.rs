//! TLS for both listeners (HTTP API and gRPC replication), with certificates that can change under
//! a running node.
//!
//! cert-manager renews certificates and Kubernetes updates a mounted Secret in place; a database
//! must pick the new files up without a restart (a restart of a hub is a replication gap for every
//! relayer). [`ServerCerts`] re-reads its PEM files when a handshake starts, at most once per
//! [`RECHECK`], and switches to them when their content changed and is a valid pair; open
//! connections (and the WAL streams on them) keep the session they negotiated. A broken new pair is
//! refused with an error log and a metric, and the old one stays in use. No timer: an idle node does
//! not wake to look at its certificates.

mod certs;
mod listener;

pub use certs::{CertError, Pem, ServerCerts, TlsFiles, RECHECK};
pub use listener::TlsListener;
