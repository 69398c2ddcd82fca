//! A throwaway Kubernetes v1.20.2 control plane on loopback for one test: etcd, kube-apiserver and
//! optionally kube-controller-manager, started by `e2e/k8s/start-k8s120.sh` (the same script
//! `e2e/cluster/up.sh` uses) in a fresh run directory on free ports, stopped by
//! `e2e/k8s/stop-k8s120.sh` on drop. `kubectl` talks to it through [`ControlPlane::kubeconfig`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::error::Error;
use crate::paths::{k8s_bin_dir, repo_root};
use crate::port::free_port;
use crate::wait::Wait;

/// What builds and caches the Kubernetes binaries; named when they are missing.
pub const K8S_INSTALLER: &str = "e2e/k8s/install-deps.sh";

/// Which control plane to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct ControlPlaneOptions {
    /// Also run kube-controller-manager (StatefulSets create pods, garbage collection).
    pub controller_manager: bool,
    /// `--authorization-mode=RBAC` (so `kubectl auth can-i --as ...` answers for real) instead of
    /// `AlwaysAllow`.
    pub rbac: bool,
}

/// A running control plane; stopped on drop, its run directory removed unless the test is
/// failing or `KEEP_APISERVER_DIR` is set.
#[derive(Debug)]
pub struct ControlPlane {
    /// State, pid files and logs (`apiserver.log`, `etcd.log`, `kcm.log`).
    pub run_dir: PathBuf,
    /// Admin kubeconfig (static token, `system:masters`).
    pub kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts the control plane and waits until it serves `/readyz` and, with RBAC, until the
    /// bootstrap roles exist (up to 90 s).
    pub fn start(opts: ControlPlaneOptions) -> Result<ControlPlane, Error> {
        let bin = k8s_bin_dir();
        let mut needed = vec!["etcd", "kube-apiserver"];
        if opts.controller_manager {
            needed.push("kube-controller-manager");
        }
        for b in needed {
            let p = bin.join(b);
            if !p.exists() {
                return Err(Error::Missing {
                    path: p,
                    hint: format!(
                        "run `bash {K8S_INSTALLER}` (builds Kubernetes v1.20.2 once and caches it) \
                         or point K8S_BIN at the binaries"
                    ),
                });
            }
        }
        for tool in ["kubectl", "openssl", "curl", "ss"] {
            require_tool(tool)?;
        }
        let run_dir = std::env::temp_dir().join(format!(
            "unisondb-controlplane-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)
            .map_err(Error::io(format!("creating {}", run_dir.display())))?;
        let cp = ControlPlane {
            kubeconfig: run_dir.join("kubeconfig"),
            run_dir,
        };
        let script = repo_root().join("e2e/k8s/start-k8s120.sh");
        let out = Command::new("bash")
            .arg(&script)
            .env("RUN_DIR", &cp.run_dir)
            .env("K8S_BIN", &bin)
            .env("ETCD_PORT", free_port().to_string())
            .env("PEER_PORT", free_port().to_string())
            .env("API_PORT", free_port().to_string())
            .env("WITH_KCM", if opts.controller_manager { "1" } else { "0" })
            .env("AUTHZ", if opts.rbac { "RBAC" } else { "AlwaysAllow" })
            .output()
            .map_err(Error::io(format!("running {}", script.display())))?;
        if !out.status.success() {
            return Err(command_error(
                &format!("{} (logs in {})", script.display(), cp.run_dir.display()),
                &out,
            ));
        }
        // The script waited for /readyz. With RBAC on, the bootstrap roles must also exist before
        // `can-i` answers are meaningful (AlwaysAllow creates none).
        if opts.rbac {
            Wait::new("the apiserver's bootstrap roles", Duration::from_secs(90))
                .every(Duration::from_millis(200))
                .until(|| {
                    cp.kubectl(&["get", "clusterrole", "cluster-admin", "-o", "name"])
                        .map(|_| Some(()))
                })?;
        }
        Ok(cp)
    }

    /// A `kubectl --kubeconfig=<this> ARGS` command, for callers that need to adjust it.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        c.args(args);
        c
    }

    /// Runs kubectl (with `stdin` piped in when given) and returns its output, whatever its status.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, Error> {
        let mut cmd = self.kubectl_cmd(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(Error::io(format!("spawning kubectl (run {K8S_INSTALLER})")))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // kubectl may exit early on an error: a broken pipe is then reported through stderr.
            let _ = pipe.write_all(input.as_bytes());
        }
        child
            .wait_with_output()
            .map_err(Error::io(format!("waiting for kubectl {}", args.join(" "))))
    }

    /// Runs kubectl and returns stdout; an unsuccessful exit is an error carrying its output.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, Error> {
        let out = self.kubectl_output(args, None)?;
        checked(args, out)
    }

    /// Like [`ControlPlane::kubectl`] with `input` (a manifest) on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Result<String, Error> {
        let out = self.kubectl_output(args, Some(input))?;
        checked(args, out)
    }
}

fn checked(args: &[&str], out: Output) -> Result<String, Error> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(command_error(&format!("kubectl {}", args.join(" ")), &out))
    }
}

fn command_error(command: &str, out: &Output) -> Error {
    Error::Command {
        command: command.to_string(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn require_tool(tool: &str) -> Result<(), Error> {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        Ok(())
    } else {
        Err(Error::Missing {
            path: Path::new(tool).to_path_buf(),
            hint: format!("run `bash {K8S_INSTALLER}` (or scripts/install-deps.sh)"),
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("e2e/k8s/stop-k8s120.sh"))
            .env("RUN_DIR", &self.run_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if std::thread::panicking() || std::env::var_os("KEEP_APISERVER_DIR").is_some() {
            eprintln!("control plane logs kept in {}", self.run_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}
