//! Hybrid logical clock: 48 bits of wall-clock milliseconds, 16 bits of logical counter.
//!
//! Timestamps stay monotonic when the wall clock steps back, and relayers keep the hub's HLC verbatim, so
//! "now − HLC of the last applied record" measures replication lag in seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const LOGICAL_BITS: u32 = 16;

/// Monotonic HLC source, shared by the writers of one namespace.
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

impl Hlc {
    pub fn new() -> Self {
        Self::default()
    }

    /// Never returns a value <= one it returned or observed before.
    pub fn now(&self) -> u64 {
        let wall = wall_ms() << LOGICAL_BITS;
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = if wall > prev { wall } else { prev + 1 };
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }

    /// Moves the clock past a timestamp seen in a log or from a peer.
    pub fn observe(&self, ts: u64) {
        self.last.fetch_max(ts, Ordering::AcqRel);
    }
}

/// Milliseconds since the Unix epoch encoded in an HLC timestamp.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// Current wall-clock milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_even_after_observing_the_future() {
        let h = Hlc::new();
        let a = h.now();
        let future = (wall_ms() + 60_000) << LOGICAL_BITS;
        h.observe(future);
        let b = h.now();
        assert!(b > future && b > a);
        assert!(physical_ms(a) <= wall_ms());
    }
}
