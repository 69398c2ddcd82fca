//! A member's Raft state beside its namespace: `<ns>/raft-state` (JSON), rewritten crash-safely
//! (temp, fsync, rename, fsync dir: `fsutil::write_atomic`).
//!
//! Holds the vote (durable before it is answered), the committed log id (an optimisation: the engine
//! replays up to it at open; saved at most every 200 ms, since a stale value only means Raft applies
//! a little more again), the last purged log id, and the membership of the last applied membership
//! entry (applied state = applied LSN, read from the engine, plus this).

use std::path::{Path, PathBuf};
use std::time::Instant;

use openraft::{LogId, StoredMembership, Vote};

use super::Member;

/// File name inside the namespace directory.
pub const FILE: &str = "raft-state";

/// What is persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Persisted {
    pub vote: Option<Vote<u64>>,
    pub committed: Option<LogId<u64>>,
    pub purged: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, Member>,
}

/// The state plus where it lives and when it was last written.
#[derive(Debug)]
pub struct RaftState {
    path: PathBuf,
    pub data: Persisted,
    saved_at: Option<Instant>,
    dirty: bool,
}

impl RaftState {
    /// Loads the state of the namespace in `dir` (absent: empty).
    pub fn load(dir: &Path) -> std::io::Result<RaftState> {
        let path = dir.join(FILE);
        let data = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::other(format!("{} is damaged: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => return Err(e),
        };
        Ok(RaftState {
            path,
            data,
            saved_at: None,
            dirty: false,
        })
    }

    /// Writes the state now (crash-safe).
    pub fn save(&mut self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.data).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&self.path, &bytes)?;
        self.saved_at = Some(Instant::now());
        self.dirty = false;
        Ok(())
    }

    /// Whether [`RaftState::save_lazily`] would write now (else it only marks the state dirty).
    pub fn save_due(&self) -> bool {
        self.saved_at.is_none_or(|t| t.elapsed().as_millis() >= 200)
    }

    /// Writes the state if the last write is older than 200 ms; otherwise marks it dirty.
    pub fn save_lazily(&mut self) -> std::io::Result<()> {
        if self.save_due() {
            self.save()
        } else {
            self.dirty = true;
            Ok(())
        }
    }

    /// Writes a state left dirty by [`RaftState::save_lazily`].
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.save()?;
        }
        Ok(())
    }
}
