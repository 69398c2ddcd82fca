//! Test support shared by the node, operator and e2e tests, so each helper exists once:
//! [`free_port`], [`wait_for`] (poll with a deadline and a message), [`NodeProcess`] (one real
//! `unisondb` process), [`ControlPlane`] (a throwaway etcd + kube-apiserver v1.20.2), [`MotoS3`]
//! (a real S3-compatible server), [`KvLoad`] (KV writes with a model of what was acknowledged) and
//! [`TestCa`] (a throwaway CA for TLS tests).
//!
//! Helpers return [`Error`]; tests turn it into a failure with `?` or `expect`.

mod controlplane;
mod error;
mod kvmodel;
mod loopback;
mod node;
mod objstore;
mod paths;
mod pki;
mod port;
mod wait;

pub use controlplane::{ControlPlane, ControlPlaneOptions, K8S_INSTALLER};
pub use error::Error;
pub use kvmodel::{answer, call, state_at, KvLoad, Write};
pub use loopback::{loopback_config, small_node, LoopbackNode, Ports};
pub use node::NodeProcess;
pub use objstore::{MotoS3, S3_ACCESS_KEY, S3_SECRET_KEY};
pub use paths::{cache_dir, k8s_bin_dir, repo_root, venv_python};
pub use pki::TestCa;
pub use port::{free_port, free_port_pair, use_whole_port_range};
pub use wait::{wait_for, TimedOut, Wait};
