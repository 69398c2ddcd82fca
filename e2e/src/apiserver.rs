//! A throwaway etcd + kube-apiserver (v1.20.2, RBAC authorization on) on loopback, in a temp dir.
//! Adapted from shared/k8s-local/start-k8s120.sh; the binaries are the ones the operator's e2e
//! caches under ~/.cache/unisondb-e2e/k8s-1.20.2/bin. `kubectl` talks to it through `kubeconfig`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cache_dir, run, stderr, stdout};

pub const K8S_INSTALLER: &str = "e2e/k8s/build-k8s120.sh (the operator's Kubernetes e2e installer)";

pub struct ApiServer {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    children: Vec<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn k8s_bin(name: &str) -> PathBuf {
    let dir = std::env::var("K8S_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache_dir().join("k8s-1.20.2/bin"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} missing: run {K8S_INSTALLER} to build/cache kube-apiserver and etcd",
        p.display()
    );
    p
}

fn sh(dir: &Path, script: &str) {
    let o = run(Command::new("bash").arg("-c").arg(script).current_dir(dir));
    assert!(o.status.success(), "{script}: {}", stderr(&o));
}

impl ApiServer {
    pub fn start() -> ApiServer {
        let apiserver = k8s_bin("kube-apiserver");
        let etcd = k8s_bin("etcd");
        assert!(
            Command::new("openssl")
                .arg("version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "openssl missing: run e2e/helm/install-deps.sh"
        );
        let base = std::env::temp_dir().join(format!(
            "unisondb-e2e-apiserver-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ (free_port() as u128)
        ));
        let pki = base.join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        sh(
            &pki,
            r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=test-ca" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
printf "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n" > ext.cnf
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 30 -extfile ext.cnf 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
echo "test-token,admin,admin,system:masters" > tokens.csv"#,
        );
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let log = |n: &str| std::fs::File::create(base.join(n)).unwrap();
        let mut children = Vec::new();
        children.push(
            Command::new(etcd)
                .args(["--name", "t", "--data-dir"])
                .arg(base.join("etcd-data"))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
                .arg(format!(
                    "--advertise-client-urls=http://127.0.0.1:{etcd_port}"
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
                ))
                .arg(format!("--initial-cluster=t=http://127.0.0.1:{peer_port}"))
                .stdout(log("etcd.log"))
                .stderr(log("etcd.err"))
                .spawn()
                .expect("start etcd"),
        );
        let p = |f: &str| pki.join(f).display().to_string();
        children.push(
            Command::new(apiserver)
                .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
                .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
                .arg(format!("--secure-port={api_port}"))
                .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
                .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
                .arg(format!("--client-ca-file={}", p("ca.crt")))
                .arg(format!("--token-auth-file={}", p("tokens.csv")))
                // RBAC, so `kubectl auth can-i --as system:serviceaccount:...` answers for real.
                .arg("--authorization-mode=RBAC")
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", p("sa.pub")))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    p("sa.key")
                ))
                .args([
                    "--service-cluster-ip-range=10.0.0.0/24",
                    "--endpoint-reconciler-type=none",
                ])
                .arg("--allow-privileged=true")
                .arg(format!("--cert-dir={}", base.join("certs").display()))
                .stdout(log("apiserver.log"))
                .stderr(log("apiserver.err"))
                .spawn()
                .expect("start kube-apiserver"),
        );
        let kubeconfig = base.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: local, cluster: {{server: \"https://127.0.0.1:{api_port}\", certificate-authority: {}}}}}]\nusers: [{{name: admin, user: {{token: test-token}}}}]\ncontexts: [{{name: local, context: {{cluster: local, user: admin}}}}]\ncurrent-context: local\n",
                p("ca.crt")
            ),
        )
        .unwrap();
        let mut s = ApiServer {
            dir: base,
            kubeconfig,
            children,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            for c in s.children.iter_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "control plane process exited ({st}); logs in {}: {}",
                        s.dir.display(),
                        std::fs::read_to_string(s.dir.join("apiserver.err")).unwrap_or_default()
                    );
                }
            }
            let o = s.kubectl_output(&["get", "--raw", "/readyz"]);
            // RBAC bootstrap roles must exist before can-i answers are meaningful.
            if o.status.success() && stdout(&o).trim() == "ok" {
                let r = s.kubectl_output(&["get", "clusterrole", "cluster-admin", "-o", "name"]);
                if r.status.success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "apiserver not ready in 90s; logs in {}",
                s.dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        s
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        c.args(args);
        c
    }

    pub fn kubectl_output(&self, args: &[&str]) -> std::process::Output {
        let mut c = self.kubectl_cmd(args);
        c.output()
            .unwrap_or_else(|e| panic!("kubectl missing ({e}): run e2e/helm/install-deps.sh"))
    }

    /// Runs kubectl and asserts success; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let o = self.kubectl_output(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// kubectl with a manifest on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        // kubectl may exit early on an error: a broken pipe here is reported through its stderr
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        child.wait_with_output().unwrap()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var("KEEP_APISERVER_DIR").is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
