//! Polling with a deadline: the one loop every test uses to wait for a condition, failing with
//! what it waited for and the last thing it saw.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// The condition named `what` did not hold within `timeout`; `last` is the probe's last error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for {what}; last state: {last}")]
pub struct TimedOut {
    pub what: String,
    pub timeout: Duration,
    pub last: String,
}

/// How long and how often to poll; `what` names the condition in the timeout message.
#[derive(Debug, Clone)]
pub struct Wait {
    what: String,
    timeout: Duration,
    every: Duration,
}

impl Wait {
    /// Polls every 250 ms until `timeout`.
    pub fn new(what: impl Into<String>, timeout: Duration) -> Wait {
        Wait {
            what: what.into(),
            timeout,
            every: Duration::from_millis(250),
        }
    }

    /// Sets the pause between two probes.
    pub fn every(mut self, every: Duration) -> Wait {
        self.every = every;
        self
    }

    /// Calls `probe` until it returns `Ok(Some(v))` and returns `v`. `Ok(None)` means "not yet";
    /// `Err(e)` too, and `e` is reported if the deadline passes. The probe runs at least once.
    pub fn until<T, E: Display>(
        &self,
        mut probe: impl FnMut() -> Result<Option<T>, E>,
    ) -> Result<T, TimedOut> {
        let deadline = Instant::now() + self.timeout;
        let mut last = String::from("(no error)");
        loop {
            match probe() {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                return Err(self.timed_out(last));
            }
            std::thread::sleep(self.every);
        }
    }

    /// [`Wait::until`] for an async probe, sleeping on the tokio timer between probes.
    pub async fn until_async<T, E: Display>(
        &self,
        mut probe: impl AsyncFnMut() -> Result<Option<T>, E>,
    ) -> Result<T, TimedOut> {
        let deadline = Instant::now() + self.timeout;
        let mut last = String::from("(no error)");
        loop {
            match probe().await {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                return Err(self.timed_out(last));
            }
            tokio::time::sleep(self.every).await;
        }
    }

    fn timed_out(&self, last: String) -> TimedOut {
        TimedOut {
            what: self.what.clone(),
            timeout: self.timeout,
            last,
        }
    }
}

/// Polls `probe` every 250 ms until it returns `Ok(Some(v))`, or fails after `timeout` naming
/// `what` and the probe's last error. See [`Wait`] for another interval or an async probe.
pub fn wait_for<T, E: Display>(
    what: &str,
    timeout: Duration,
    probe: impl FnMut() -> Result<Option<T>, E>,
) -> Result<T, TimedOut> {
    Wait::new(what, timeout).until(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let v = Wait::new("n to reach 3", Duration::from_secs(5))
            .every(Duration::from_millis(1))
            .until(|| {
                n += 1;
                Ok::<_, String>((n == 3).then_some(n))
            });
        assert_eq!(v.ok(), Some(3));
    }

    #[test]
    fn times_out_with_the_last_error() {
        let e = wait_for("never", Duration::from_millis(20), || {
            Err::<Option<()>, _>("still no")
        })
        .unwrap_err();
        assert_eq!(e.what, "never");
        assert_eq!(e.last, "still no");
        assert!(e
            .to_string()
            .contains("waiting for never; last state: still no"));
    }
}
