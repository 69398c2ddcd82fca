//! Runs the real `unisondb` binary on a free port with a temp data dir; killed on drop.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_unisondb");

pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub scheme: &'static str,
    extra_yaml: String,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Server {
    /// Starts a server whose config is the defaults plus `extra_yaml` sections (may be empty).
    pub async fn start(extra_yaml: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, extra_yaml).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra_yaml: &str) -> Server {
        let mut s = Server {
            child: None,
            port: free_port(),
            dir,
            scheme: if extra_yaml.contains("tls_cert_file") {
                "https"
            } else {
                "http"
            },
            extra_yaml: extra_yaml.to_string(),
        };
        s.spawn();
        s.wait_ready().await;
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("unisondb.yaml")
    }

    fn spawn(&mut self) {
        let cfg = self.config_path();
        std::fs::write(&cfg, &self.extra_yaml).expect("write config");
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        let child = Command::new(BIN)
            .args(["server", "--config"])
            .arg(&cfg)
            .env("UNISONDB_HTTP_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("UNISONDB_SERVER_DATA_DIR", self.data_dir())
            // Tests run in parallel: gRPC and ZeroMQ on ephemeral ports, not the defaults.
            .env("UNISONDB_GRPC_LISTEN", "127.0.0.1:0")
            .env("UNISONDB_NOTIFY_BIND", "tcp://127.0.0.1:0")
            .env("UNISONDB_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn unisondb");
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("server exited early ({status}):\n{}", self.log());
                }
            }
            if self.scheme == "https" {
                // TLS servers are probed by the test itself; give the listener a moment.
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    return;
                }
            } else if let Ok(r) = client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in time:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM and wait for exit (bounded).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the binary again on the same data dir and port.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.spawn();
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

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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
