//! A real S3-compatible server for tests: `moto_server` (moto in server mode, from the e2e venv
//! that `scripts/install-deps.sh` fills) on loopback, with one bucket and fixed credentials.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cache_dir, free_port, Error};

/// Access key the tests sign with (moto accepts any; nodes read it from [`MotoS3::credentials_file`]).
pub const S3_ACCESS_KEY: &str = "AKIAUNISONDBTEST";
pub const S3_SECRET_KEY: &str = "s3cr3t-unisondb-test-key";

/// One `moto_server` process on 127.0.0.1; killed on drop.
pub struct MotoS3 {
    child: Child,
    pub port: u16,
}

impl MotoS3 {
    /// The venv's `moto_server` (`$UNISONDB_E2E_VENV`, else the test cache's venv).
    pub fn binary() -> PathBuf {
        std::env::var_os("UNISONDB_E2E_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("venv"))
            .join("bin/moto_server")
    }

    /// Starts the server (not yet answering: see [`MotoS3::create_bucket`]).
    pub fn start() -> Result<MotoS3, Error> {
        let bin = Self::binary();
        if !bin.exists() {
            return Err(Error::Missing {
                path: bin,
                hint: "run `bash scripts/install-deps.sh` (e2e/loopback/install-deps.sh installs \
                       moto[server] into the venv)"
                    .into(),
            });
        }
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io(format!("starting {}", bin.display())))?;
        Ok(MotoS3 { child, port })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket`, retrying until the server answers (up to 30 s).
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), Error> {
        let c = reqwest::Client::new();
        let url = format!("{}/{bucket}", self.endpoint());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = match c.put(&url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("PUT {url}: {}", r.status()),
                Err(e) => format!("PUT {url}: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(Error::Http {
                    what: "moto_server did not create the bucket".into(),
                    detail: last,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes an AWS shared-credentials file with the test keys into `dir`; returns its path.
    pub fn credentials_file(dir: &Path) -> Result<PathBuf, Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let p = dir.join("s3-credentials");
        std::fs::write(
            &p,
            format!(
                "[default]\naws_access_key_id = {S3_ACCESS_KEY}\naws_secret_access_key = {S3_SECRET_KEY}\n"
            ),
        )
        .map_err(Error::io(format!("writing {}", p.display())))?;
        Ok(p)
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
