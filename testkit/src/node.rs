//! One real `unisondb` process: its config file, log and data live in a directory the test owns.
//! The binary belongs to another package, so the caller passes its path
//! (`env!("CARGO_BIN_EXE_unisondb")`). The process is SIGKILLed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::wait::Wait;

/// A `unisondb server --config <dir>/<config file>` process with stderr appended to
/// `<dir>/server.log`. Not running until [`NodeProcess::start`].
#[derive(Debug)]
pub struct NodeProcess {
    name: String,
    bin: PathBuf,
    dir: PathBuf,
    config_file: String,
    config: String,
    env: Vec<(String, String)>,
    prefix: Vec<String>,
    dump_log_on_panic: bool,
    /// Behind a lock so readiness checks (`try_wait`) work through `&self`.
    child: Mutex<Option<Child>>,
}

impl NodeProcess {
    /// A node named `name` (for messages) run from `bin` with `config_yaml`, its files in `dir`.
    pub fn new(
        bin: impl Into<PathBuf>,
        name: &str,
        dir: impl Into<PathBuf>,
        config_yaml: impl Into<String>,
    ) -> NodeProcess {
        NodeProcess {
            name: name.to_string(),
            bin: bin.into(),
            dir: dir.into(),
            config_file: "config.yaml".to_string(),
            config: config_yaml.into(),
            env: Vec::new(),
            prefix: Vec::new(),
            dump_log_on_panic: false,
            child: Mutex::new(None),
        }
    }

    /// Names the config file inside the directory (default `config.yaml`).
    pub fn config_file(mut self, file: &str) -> NodeProcess {
        self.config_file = file.to_string();
        self
    }

    /// Sets an environment variable for the process (e.g. `UNISONDB_HTTP_LISTEN`).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> NodeProcess {
        self.set_env(key, value);
        self
    }

    /// Like [`NodeProcess::env`], for a process already built; applies from the next start.
    pub fn set_env(&mut self, key: &str, value: impl Into<String>) {
        self.env.push((key.to_string(), value.into()));
    }

    /// Runs the binary through a wrapper command, e.g. `["ip", "netns", "exec", NS]`.
    pub fn wrapped_in(mut self, prefix: &[&str]) -> NodeProcess {
        self.prefix = prefix.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Prints the server log to stderr when dropped during a panic (a failing test).
    pub fn dump_log_on_panic(mut self) -> NodeProcess {
        self.dump_log_on_panic = true;
        self
    }

    /// The node's name, as used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory holding the config file and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config text written on every [`NodeProcess::start`].
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Replaces the config; takes effect at the next start.
    pub fn set_config(&mut self, yaml: impl Into<String>) {
        self.config = yaml.into();
    }

    /// Path of the config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(&self.config_file)
    }

    /// Path of the log (the process's stderr, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The log so far ("" when there is none yet).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(Child::id)
    }

    /// Whether a process was started and not yet stopped by this handle.
    pub fn is_started(&self) -> bool {
        self.lock_child().is_some()
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding the lock leaves the Option intact: keep using it.
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the config and spawns the process (does not wait for readiness).
    pub fn start(&mut self) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir)
            .map_err(Error::io(format!("creating {}", self.dir.display())))?;
        let cfg = self.config_path();
        std::fs::write(&cfg, &self.config)
            .map_err(Error::io(format!("writing {}", cfg.display())))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(Error::io(format!("opening {}", self.log_path().display())))?;
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let child = cmd
            .args(["server", "--config"])
            .arg(&cfg)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(Error::io(format!(
                "spawning {} for {}",
                self.bin.display(),
                self.name
            )))?;
        *self.lock_child() = Some(child);
        Ok(())
    }

    /// Errors with the log if the process has exited by itself.
    pub fn check_running(&self) -> Result<(), Error> {
        let mut child = self.lock_child();
        if let Some(c) = child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                *child = None;
                drop(child);
                return Err(Error::Exited {
                    name: self.name.clone(),
                    status,
                    log: self.log(),
                });
            }
        }
        Ok(())
    }

    /// SIGKILL and reap (no-op when not running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.lock_child().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait up to `timeout` for the exit status; on timeout the process is killed
    /// and the error carries the log. `Ok(None)` when it was not running.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
        let Some(mut c) = self.lock_child().take() else {
            return Ok(None);
        };
        if let Ok(pid) = libc::pid_t::try_from(c.id()) {
            // SAFETY: kill(2) on our own child's pid; it is not reaped yet, so the pid is ours.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return Err(Error::StopTimeout {
                    name: self.name.clone(),
                    timeout,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `GET url` every 50 ms until it answers 2xx; fails early, with the log, if the
    /// process exits, and with the log after `timeout`.
    /// Starts the process and waits (30 s at most) until `url` answers 2xx: the usual first step
    /// of a process test.
    pub async fn start_ready(&mut self, url: &str) -> Result<(), Error> {
        self.start()?;
        self.wait_http_ok(&reqwest::Client::new(), url, Duration::from_secs(30))
            .await
    }

    pub async fn wait_http_ok(
        &self,
        client: &reqwest::Client,
        url: &str,
        timeout: Duration,
    ) -> Result<(), Error> {
        let what = format!("{} to answer 2xx on {url}", self.name);
        // An exit ends the wait at once (as `Some(Err)`): it is final, unlike a refused connection.
        let res = Wait::new(what, timeout)
            .every(Duration::from_millis(50))
            .until_async(async || {
                if let Err(e) = self.check_running() {
                    return Ok(Some(Err(e)));
                }
                match client.get(url).send().await {
                    Ok(r) if r.status().is_success() => Ok(Some(Ok(()))),
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        match res {
            Ok(done) => done,
            Err(source) => Err(Error::NotReady {
                name: self.name.clone(),
                source,
                log: self.log(),
            }),
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        if self.dump_log_on_panic && std::thread::panicking() {
            eprintln!("----- {} log -----\n{}", self.name, self.log());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that exits at once fails the readiness wait at once, with its exit status.
    #[tokio::test]
    async fn an_early_exit_ends_the_wait() {
        let dir = std::env::temp_dir().join(format!("testkit-node-{}", std::process::id()));
        let mut node = NodeProcess::new("false", "quitter", &dir, "");
        node.start().expect("spawn false");
        let t = Instant::now();
        let err = node
            .wait_http_ok(
                &reqwest::Client::new(),
                "http://127.0.0.1:9/readyz",
                Duration::from_secs(30),
            )
            .await
            .expect_err("false never serves HTTP");
        assert!(matches!(err, Error::Exited { .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(node.config_path().exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
