//! Downstream acknowledgements: which LSN each direct replica has durably applied, per namespace.
//!
//! The gRPC service records acks as they arrive on `StreamWal`; the HTTP layer calls
//! [`AckTracker::wait`] for writes that ask for `acks=N`. Only direct downstream replicas count (a relayer
//! acks what it applied itself, not what its own downstream applied).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

/// Acknowledgement state of every namespace this node serves; cheap to clone.
#[derive(Clone, Default)]
pub struct AckRegistry {
    namespaces: Arc<Mutex<HashMap<String, AckTracker>>>,
}

impl AckRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The tracker of one namespace (created on first use).
    pub fn tracker(&self, namespace: &str) -> AckTracker {
        self.namespaces
            .lock()
            .entry(namespace.to_string())
            .or_default()
            .clone()
    }
}

struct ReplicaAck {
    lsn: u64,
    connected: bool,
}

#[derive(Default)]
struct Inner {
    replicas: Mutex<HashMap<String, ReplicaAck>>,
    changed: watch::Sender<u64>,
}

/// Acks of one namespace.
#[derive(Clone, Default)]
pub struct AckTracker {
    inner: Arc<Inner>,
}

/// A wait for acks ran out of time; the write itself is durable on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("only {acked} of {wanted} replicas acknowledged LSN {lsn} in time")]
pub struct AckTimeout {
    pub lsn: u64,
    pub wanted: usize,
    pub acked: usize,
}

impl AckTracker {
    /// Records that `replica` has durably applied everything up to `lsn` (acks never move back).
    pub fn record(&self, replica: &str, lsn: u64) {
        {
            let mut r = self.inner.replicas.lock();
            let e = r.entry(replica.to_string()).or_insert(ReplicaAck {
                lsn: 0,
                connected: true,
            });
            e.lsn = e.lsn.max(lsn);
            e.connected = true;
        }
        self.inner.changed.send_modify(|v| *v += 1);
    }

    /// Records an ack of (`epoch`, `lsn`) if that pair is in the writer's history: `lsn` is at most
    /// the writer's `latest` LSN and `epoch_at(lsn) == epoch`. Returns whether it counted.
    pub fn record_checked(
        &self,
        replica: &str,
        epoch: u64,
        lsn: u64,
        latest: u64,
        epoch_at: impl Fn(u64) -> u64,
    ) -> bool {
        let in_history = lsn == 0 || (lsn <= latest && epoch_at(lsn) == epoch);
        if in_history {
            self.record(replica, lsn);
        }
        in_history
    }

    /// Marks a replica's stream as gone (its past acks still count: they were durable).
    pub fn disconnected(&self, replica: &str) {
        if let Some(e) = self.inner.replicas.lock().get_mut(replica) {
            e.connected = false;
        }
        self.inner.changed.send_modify(|v| *v += 1);
    }

    /// How many replicas have acknowledged `lsn` or later.
    pub fn acked(&self, lsn: u64) -> usize {
        self.inner
            .replicas
            .lock()
            .values()
            .filter(|a| a.lsn >= lsn)
            .count()
    }

    /// Replicas with an open stream right now.
    pub fn connected(&self) -> usize {
        self.inner
            .replicas
            .lock()
            .values()
            .filter(|a| a.connected)
            .count()
    }

    /// `(replica id, acked LSN, connected)` for `/stats`, sorted by id.
    pub fn replicas(&self) -> Vec<(String, u64, bool)> {
        let mut v: Vec<_> = self
            .inner
            .replicas
            .lock()
            .iter()
            .map(|(k, a)| (k.clone(), a.lsn, a.connected))
            .collect();
        v.sort();
        v
    }

    /// Waits until `n` replicas acknowledged `lsn`; returns how many did, or times out saying how many.
    pub async fn wait(&self, lsn: u64, n: usize, timeout: Duration) -> Result<usize, AckTimeout> {
        let mut rx = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            let acked = self.acked(lsn);
            if acked >= n {
                return Ok(acked);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                // The sender lives in `self`, so it cannot close; treat it like a timeout anyway.
                Ok(Err(_)) | Err(_) => {
                    return Err(AckTimeout {
                        lsn,
                        wanted: n,
                        acked: self.acked(lsn),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_n_replicas_and_times_out_with_a_count() {
        let t = AckRegistry::new().tracker("ns");
        assert_eq!(t.wait(5, 0, Duration::from_millis(1)).await, Ok(0));
        t.record("a", 5);
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.wait(5, 2, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        t.record("b", 7);
        assert_eq!(waiter.await.unwrap(), Ok(2));
        let err = t.wait(8, 1, Duration::from_millis(30)).await.unwrap_err();
        assert_eq!(
            err,
            AckTimeout {
                lsn: 8,
                wanted: 1,
                acked: 0
            }
        );
        t.record("a", 3); // never moves back
        assert_eq!(t.acked(5), 2);
    }

    #[test]
    fn acks_count_only_in_the_writers_history() {
        let t = AckRegistry::new().tracker("ns");
        // Writer history: epoch 7 for LSNs 1..=10, epoch 9 from 11 on; writer at LSN 15.
        let epoch_at = |lsn: u64| if lsn <= 10 { 7 } else { 9 };
        // A diverged replica kept epoch 8 records up to 20: its stale position does not count.
        assert!(!t.record_checked("stale", 8, 20, 15, epoch_at));
        // Nor does an LSN the writer does not have, even with a matching epoch.
        assert!(!t.record_checked("stale", 9, 16, 15, epoch_at));
        assert_eq!(t.acked(12), 0);
        // After truncating to 10 and receiving 11..=12 of epoch 9, it counts.
        assert!(t.record_checked("stale", 7, 10, 15, epoch_at));
        assert!(t.record_checked("stale", 9, 12, 15, epoch_at));
        assert_eq!(t.acked(12), 1);
        assert!(t.record_checked("empty", 0, 0, 15, epoch_at));
    }
}
