//! Runs the real `unisondb` binary on a free port with a temp data dir; killed on drop.
//! The process handling is `unisondb_testkit::NodeProcess`; this adds the single-server defaults.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use unisondb_testkit::{free_port, NodeProcess};

pub const BIN: &str = env!("CARGO_BIN_EXE_unisondb");

pub struct Server {
    pub node: NodeProcess,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub scheme: &'static str,
}

impl Server {
    /// Starts a server whose config is the defaults plus `extra_yaml` sections (may be empty).
    pub async fn start(extra_yaml: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, extra_yaml).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra_yaml: &str) -> Server {
        let port = free_port();
        let node = NodeProcess::new(BIN, "unisondb", dir.path(), extra_yaml)
            .config_file("unisondb.yaml")
            .env("UNISONDB_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "UNISONDB_SERVER_DATA_DIR",
                dir.path().join("data").display().to_string(),
            )
            // Tests run in parallel: gRPC and ZeroMQ on ephemeral ports, not the defaults.
            .env("UNISONDB_GRPC_LISTEN", "127.0.0.1:0")
            .env("UNISONDB_NOTIFY_BIND", "tcp://127.0.0.1:0")
            .env("UNISONDB_LOG_LEVEL", "info");
        let mut s = Server {
            node,
            port,
            dir,
            scheme: if extra_yaml.contains("tls_cert_file") {
                "https"
            } else {
                "http"
            },
        };
        s.node.start().expect("spawn unisondb");
        s.wait_ready().await;
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        self.node.log()
    }

    pub fn pid(&self) -> u32 {
        self.node.pid().unwrap_or(0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub async fn wait_ready(&mut self) {
        if self.scheme == "https" {
            // TLS servers are probed by the test itself; give the listener a moment.
            let port = self.port;
            unisondb_testkit::Wait::new("the TLS listener", Duration::from_secs(20))
                .every(Duration::from_millis(50))
                .until_async(async || {
                    self.node.check_running()?;
                    Ok::<_, unisondb_testkit::Error>(
                        std::net::TcpStream::connect(("127.0.0.1", port))
                            .ok()
                            .map(|_| ()),
                    )
                })
                .await
                .unwrap_or_else(|e| panic!("server not ready in time: {e}\n{}", self.log()));
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
        let url = self.url("/readyz");
        if let Err(e) = self
            .node
            .wait_http_ok(&reqwest::Client::new(), &url, Duration::from_secs(20))
            .await
        {
            panic!("server not ready in time: {e}");
        }
    }

    /// SIGTERM and wait for exit (bounded).
    pub fn terminate(&mut self) -> ExitStatus {
        match self.node.terminate(Duration::from_secs(30)) {
            Ok(Some(status)) => status,
            Ok(None) => panic!("server not running"),
            Err(e) => panic!("server did not exit after SIGTERM: {e}"),
        }
    }

    /// Starts the binary again on the same data dir and port.
    pub async fn restart(&mut self) {
        if self.node.is_started() {
            self.terminate();
        }
        self.node.start().expect("spawn unisondb");
        self.wait_ready().await;
    }

    /// Peak resident set size of the server process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

pub fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

pub fn run_cli(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run unisondb")
}
