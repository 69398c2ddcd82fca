//! The leader's own fsync in parallel with its followers' (Raft thesis §10.2.1).
//!
//! openraft 0.9's core awaits the flush of every log append before it sends the entries to the
//! followers, so a leader's write paid its own fsync, then the follower's, in series. The log store
//! therefore reports an append *of the leader's own term* flushed as soon as it is written, and
//! fsyncs it on its sync thread meanwhile. openraft then counts the leader in the quorum before its
//! copy is durable, so nothing that follows from "committed" may leave the leader until its copy is:
//!
//! 1. the state machine applies an entry only once it is durable here (so a client's answer, a
//!    linearizable read and everything readers and relayers see wait for the leader's fsync);
//! 2. the commit index sent to followers is at most the durable index here (so no follower applies
//!    an entry that is durable on fewer than a majority);
//! 3. the committed index saved in the Raft state is at most the durable index here;
//! 4. a vote change first fsyncs every appended entry (so a deposed or re-elected leader never
//!    answers "I hold it" for a copy that is not on disk).
//!
//! When an entry becomes visible anywhere, the leader and the followers openraft counted have it on
//! disk: a majority. Followers' appends are reported only after their fsync, as before.

use std::time::Duration;

use openraft::LogId;

use super::entry;
use crate::engine::{EngineError, Namespace};

/// How long a gate waits for the leader's in-flight fsync before it forces one itself.
const PATIENCE: Duration = Duration::from_secs(1);

/// How far this member's log is on disk.
#[derive(Clone)]
pub struct Durability {
    ns: Namespace,
    durable: tokio::sync::watch::Receiver<u64>,
}

impl Durability {
    pub fn new(ns: Namespace) -> Durability {
        let durable = ns.subscribe_durable();
        Durability { ns, durable }
    }

    /// The WAL's durable LSN (lowered by truncation, raised by every fsync).
    pub fn lsn(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Waits until the record at `lsn` is on disk. The sync thread normally gets there first; if it
    /// has not within [`PATIENCE`], this fsyncs itself, which also reports a poisoned namespace.
    pub async fn reach(&self, lsn: u64) -> Result<(), EngineError> {
        // Only what this member's log holds (a storage test may apply entries it never appended).
        let lsn = lsn.min(self.ns.last_appended_lsn());
        let mut rx = self.durable.clone();
        loop {
            let waited = tokio::time::timeout(PATIENCE, rx.wait_for(|d| *d >= lsn))
                .await
                .map(|r| r.is_ok());
            match waited {
                Ok(true) => return Ok(()),
                Ok(false) => return Err(EngineError::Closed),
                Err(_) => {
                    let ns = self.ns.clone();
                    tokio::task::spawn_blocking(move || ns.raft_sync())
                        .await
                        .map_err(|e| EngineError::Io(std::io::Error::other(e)))??;
                    if *rx.borrow() >= lsn {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// `committed`, lowered to the last durable entry when it is past it (gates 2 and 3).
    pub fn clamp(&self, committed: Option<LogId<u64>>) -> Option<LogId<u64>> {
        let c = committed?;
        let durable = self.lsn();
        let lsn = entry::lsn_of(c.index);
        // Past this member's log the index says nothing about its copy (a storage test's value).
        if lsn <= durable || lsn > self.ns.last_appended_lsn() {
            return Some(c);
        }
        (durable > 0).then(|| entry::log_id(self.ns.epoch_at(durable), durable))
    }

    /// `committed` once the leader's copy of it is durable, waiting up to `patience` for the
    /// in-flight fsync; lowered to the durable entry if it is not there by then.
    pub async fn settle(
        &self,
        committed: Option<LogId<u64>>,
        patience: Duration,
    ) -> Option<LogId<u64>> {
        if let Some(c) = committed {
            let lsn = entry::lsn_of(c.index);
            if self.lsn() < lsn {
                let mut rx = self.durable.clone();
                let _ = tokio::time::timeout(patience, rx.wait_for(|d| *d >= lsn)).await;
            }
        }
        self.clamp(committed)
    }
}
