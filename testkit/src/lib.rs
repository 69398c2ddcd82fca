//! Test support shared by the node, operator and e2e tests, so each helper exists once:
//! [`free_port`], [`wait_for`] (poll with a deadline and a message), [`NodeProcess`] (one real
//! `unisondb` process) and [`ControlPlane`] (a throwaway etcd + kube-apiserver v1.20.2).
//!
//! Helpers return [`Error`]; tests turn it into a failure with `?` or `expect`.

mod controlplane;
mod error;
mod loopback;
mod node;
mod paths;
mod port;
mod wait;

pub use controlplane::{ControlPlane, ControlPlaneOptions, K8S_INSTALLER};
pub use error::Error;
pub use loopback::{loopback_config, LoopbackNode, Ports};
pub use node::NodeProcess;
pub use paths::{cache_dir, k8s_bin_dir, repo_root, venv_python};
pub use port::{free_port, free_port_pair};
pub use wait::{wait_for, TimedOut, Wait};
