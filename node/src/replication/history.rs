//! The history check run on every resume: up to which LSN do a follower and its upstream hold the same
//! records? Pure; the service calls it with both epoch histories (see `engine::epoch`).
//!
//! An epoch is started by one owner start and never reused, and followers copy records verbatim, so
//! within one epoch two nodes hold the same records from the epoch's start up to wherever each stopped.
//!
//! - If the upstream's history is a prefix of the follower's (same entries up to the upstream's last
//!   LSN, nothing else there), the upstream merely lags (a relayer behind its own upstream, or an empty
//!   one): the follower's records are records the upstream will get. They agree on everything the
//!   follower holds; the stream waits, and re-checks while it waits (`stream::pump`), because the
//!   upstream may instead receive a history that contradicts the follower's.
//! - Otherwise take the largest epoch `E` both contain. If the upstream has a later epoch, `E` is closed
//!   there: they agree up to `min(follower's end of E, start of the upstream's next epoch − 1)`. If `E`
//!   is the upstream's newest, they agree up to the follower's end of `E` (the follower stopped earlier
//!   in `E`, or continued with an epoch the upstream never had).
//! - No common epoch: 0, and the follower must bootstrap.
//!
//! An owner passes its current epoch even before its first record (starting at its last LSN + 1), so
//! a restarted hub never looks like a lagging one: its previous epoch is closed. (Kafka's
//! OffsetsForLeaderEpoch, computed on the upstream.)

use crate::engine::EpochEntry;

/// Last LSN of `epoch` in `history` (sorted, entries up to `last_lsn`), or `None` if absent.
fn end_of(history: &[EpochEntry], last_lsn: u64, epoch: u64) -> Option<u64> {
    let i = history.iter().position(|e| e.epoch == epoch)?;
    let end = match history.get(i + 1) {
        Some(next) => next.start_lsn.saturating_sub(1),
        None => last_lsn,
    };
    Some(end.min(last_lsn))
}

/// The last LSN where a follower (`follower`, ending at `follower_last`) and its upstream (`upstream`,
/// ending at `upstream_last`, including an owner's current epoch that has no record yet) hold the
/// same records, or will once the upstream catches up within an open epoch. Histories are lists of
/// `(epoch, start_lsn)` in ascending order as sent on the wire (epoch 0 from LSN 1 explicit when it
/// has records).
pub fn agreed_lsn(
    follower: &[EpochEntry],
    follower_last: u64,
    upstream: &[EpochEntry],
    upstream_last: u64,
) -> u64 {
    if follower_last == 0 {
        return 0;
    }
    if lags_behind(upstream, upstream_last, follower, follower_last) {
        return follower_last;
    }
    for f in follower.iter().rev() {
        if f.start_lsn > follower_last {
            continue;
        }
        let Some(i) = upstream.iter().position(|u| u.epoch == f.epoch) else {
            continue;
        };
        let Some(f_end) = end_of(follower, follower_last, f.epoch) else {
            continue;
        };
        return match upstream.get(i + 1) {
            // Closed on the upstream: what the follower holds beyond its end is another history.
            Some(next) => f_end.min(next.start_lsn.saturating_sub(1).min(upstream_last)),
            // The upstream's newest: it holds more of it than the follower, or the follower went on
            // with an epoch the upstream never had.
            None => f_end.min(upstream_last),
        };
    }
    0
}

/// The upstream's history (up to `upstream_last`, plus an owner's current epoch without records) is
/// a prefix of the follower's: the same entries, and the follower holds at least as much.
fn lags_behind(
    upstream: &[EpochEntry],
    upstream_last: u64,
    follower: &[EpochEntry],
    follower_last: u64,
) -> bool {
    if upstream_last > follower_last {
        return false;
    }
    let held = |h: &[EpochEntry], last: u64| -> Vec<EpochEntry> {
        h.iter().copied().filter(|e| e.start_lsn <= last).collect()
    };
    // An entry past the upstream's last LSN is an owner's new epoch: the follower cannot have it.
    let pending = upstream.iter().any(|e| e.start_lsn > upstream_last);
    !pending && held(upstream, upstream_last) == held(follower, upstream_last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(v: &[(u64, u64)]) -> Vec<EpochEntry> {
        v.iter()
            .map(|&(epoch, start_lsn)| EpochEntry { epoch, start_lsn })
            .collect()
    }

    #[test]
    fn examples() {
        // Same history, follower behind: everything it has agrees.
        assert_eq!(agreed_lsn(&h(&[(5, 1)]), 10, &h(&[(5, 1)]), 20), 10);
        // Hub restored from an old copy: follower has epoch 9 from 11, hub started epoch 12 at 11.
        assert_eq!(
            agreed_lsn(&h(&[(5, 1), (9, 11)]), 20, &h(&[(5, 1), (12, 11)]), 15),
            10
        );
        // Hub lost its unsynced tail (ended at 8) and restarted with epoch 9 at 9.
        assert_eq!(agreed_lsn(&h(&[(5, 1)]), 12, &h(&[(5, 1), (9, 9)]), 30), 8);
        // Nothing in common: bootstrap.
        assert_eq!(agreed_lsn(&h(&[(3, 1)]), 12, &h(&[(4, 1)]), 30), 0);
        // An empty follower agrees with anything.
        assert_eq!(agreed_lsn(&[], 0, &h(&[(4, 1)]), 30), 0);
        // Pre-epoch data on both sides (epoch 0): taken as agreeing.
        assert_eq!(agreed_lsn(&h(&[(0, 1)]), 7, &h(&[(0, 1), (4, 9)]), 30), 7);
        // Follower ahead of an upstream in the same history (a lagging relayer): no truncation;
        // the stream waits for the upstream to catch up. Also across a newer epoch the upstream
        // has not received yet, and for an empty upstream relayer.
        assert_eq!(agreed_lsn(&h(&[(5, 1)]), 40, &h(&[(5, 1)]), 30), 40);
        assert_eq!(
            agreed_lsn(&h(&[(5, 1), (9, 21)]), 40, &h(&[(5, 1)]), 10),
            40
        );
        assert_eq!(agreed_lsn(&h(&[(5, 1)]), 40, &[], 0), 40);
        // ... but a hub restarted from an older copy has closed epoch 5 at its last LSN (its new
        // epoch is passed before it has any record).
        assert_eq!(
            agreed_lsn(&h(&[(5, 1)]), 40, &h(&[(5, 1), (9, 31)]), 30),
            30
        );
        assert_eq!(agreed_lsn(&h(&[(5, 1)]), 40, &h(&[(9, 1)]), 0), 0);
        // ... and a lagging relayer that went on with another epoch is no prefix.
        assert_eq!(
            agreed_lsn(&h(&[(5, 1), (9, 21)]), 40, &h(&[(5, 1), (8, 16)]), 30),
            15
        );
    }

    /// The records of a history as the epoch of each LSN, 1-based.
    fn expand(epochs: &[u64]) -> (Vec<EpochEntry>, u64) {
        let mut out: Vec<EpochEntry> = Vec::new();
        for (i, &e) in epochs.iter().enumerate() {
            if out.last().map(|l| l.epoch) != Some(e) {
                out.push(EpochEntry {
                    epoch: e,
                    start_lsn: i as u64 + 1,
                });
            }
        }
        (out, epochs.len() as u64)
    }

    /// A shared prefix, then each side's own continuation: at most one side continues the prefix's
    /// last epoch (one owner writes one epoch), new epochs are larger and never shared.
    fn branches() -> impl Strategy<Value = (Vec<u64>, Vec<u64>, u64)> {
        (
            prop::collection::vec((1u64..4, 1usize..5), 0..4),
            prop::collection::vec((1u64..4, 1usize..5), 0..4),
            prop::collection::vec((1u64..4, 1usize..5), 0..4),
            0usize..5,
            any::<bool>(),
        )
            .prop_map(|(common, a, b, extend, a_extends)| {
                // Expected answer for (follower = fa, upstream = fb): the longest common prefix,
                // except when fb is a prefix of fa (the upstream lags): everything fa holds.
                let mut epoch = 0u64;
                let mut prefix = Vec::new();
                for (step, n) in common {
                    epoch += step;
                    prefix.extend(std::iter::repeat_n(epoch, n));
                }
                let last_common = prefix.last().copied();
                let (mut fa, mut fb) = (prefix.clone(), prefix.clone());
                if let Some(e) = last_common {
                    let side = if a_extends { &mut fa } else { &mut fb };
                    side.extend(std::iter::repeat_n(e, extend));
                }
                // Disjoint new epochs: odd offsets on one side, even on the other.
                let base = epoch + 100;
                let mut ea = base;
                for (step, n) in a {
                    ea += step * 2;
                    fa.extend(std::iter::repeat_n(ea | 1, n));
                }
                let mut eb = base;
                for (step, n) in b {
                    eb += step * 2;
                    fb.extend(std::iter::repeat_n(eb & !1, n));
                }
                let lcp = fa.iter().zip(&fb).take_while(|(x, y)| x == y).count() as u64;
                let expected = if fb.len() as u64 == lcp {
                    fa.len() as u64
                } else {
                    lcp
                };
                (fa, fb, expected)
            })
    }

    proptest! {
        #[test]
        fn agreement_is_the_common_prefix_or_the_open_epoch((follower, upstream, expected) in branches()) {
            let (fh, fl) = expand(&follower);
            let (uh, ul) = expand(&upstream);
            prop_assert_eq!(agreed_lsn(&fh, fl, &uh, ul), expected);
        }
    }
}
