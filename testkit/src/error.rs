//! The one error type of the test kit: every variant says what was being done and carries the
//! process log or command output needed to understand a failure.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::wait::TimedOut;

/// Why a test-kit helper failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O step (spawning, writing a file) failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A binary or script the helper needs is not installed.
    #[error("{path} is missing: {hint}")]
    Missing { path: PathBuf, hint: String },
    /// A command ran but did not succeed.
    #[error("{command} failed ({status}):\nstdout:\n{stdout}\nstderr:\n{stderr}")]
    Command {
        command: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
    /// A process exited while it was expected to keep running.
    #[error("{name} exited early ({status}):\n{log}")]
    Exited {
        name: String,
        status: ExitStatus,
        log: String,
    },
    /// A process did not exit within `timeout` of SIGTERM (it was then killed).
    #[error("{name} did not exit within {timeout:?} of SIGTERM:\n{log}")]
    StopTimeout {
        name: String,
        timeout: Duration,
        log: String,
    },
    /// A process never became ready.
    #[error("{name} never came up: {source}\n{log}")]
    NotReady {
        name: String,
        #[source]
        source: TimedOut,
        log: String,
    },
    /// An HTTP request failed or was answered with an unexpected status or body.
    #[error("{what}: {detail}")]
    Http { what: String, detail: String },
    /// A polled condition did not hold in time.
    #[error(transparent)]
    TimedOut(#[from] TimedOut),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
