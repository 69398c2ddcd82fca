//! The change feed: model-level changes of a namespace from an LSN on, read from its WAL.
//!
//! The one source for SSE `/watch` and ZeroMQ notifications: records come from the namespace's WAL
//! tailer ([`crate::engine::Tail`], which owns batching, wake-ups and trimmed segments), are decoded by
//! `storage::events::changes`, and yielded one change at a time. Nothing is buffered beyond one read
//! batch, so a slow consumer simply reads the WAL later (back-pressure instead of unbounded queues).
//! LSNs the WAL no longer holds are reported as [`FeedError::Gap`].

use std::collections::VecDeque;

use futures::Stream;
use thiserror::Error;

use crate::engine::{Namespace, Tail, TailError, TailLimits};
use crate::storage::batch::DecodeError;
use crate::storage::events::{self, Change};

/// Records read per batch.
const READ_BATCH: usize = 256;

/// Why the feed stopped.
#[derive(Debug, Error)]
pub enum FeedError {
    /// The changes from `requested` on are gone (WAL retention or an installed snapshot): the consumer
    /// missed them and must resync (or resume from `oldest`).
    #[error("changes from LSN {requested} are gone from the WAL (oldest available is {oldest})")]
    Gap { requested: u64, oldest: u64 },
    #[error(transparent)]
    Tail(TailError),
    #[error("undecodable WAL record at LSN {lsn}: {source}")]
    Decode { lsn: u64, source: DecodeError },
}

impl From<TailError> for FeedError {
    fn from(e: TailError) -> Self {
        match e {
            TailError::Trimmed { requested, oldest } => FeedError::Gap { requested, oldest },
            other => FeedError::Tail(other),
        }
    }
}

struct FeedState {
    tail: Tail,
    /// Decoded changes of the last batch (and the error that ended it, last).
    buf: VecDeque<Result<Change, FeedError>>,
    failed: bool,
}

/// Changes of `ns` with LSN >= `from_lsn`, in LSN order, following new writes forever.
/// The stream ends after yielding an error, or when the namespace's notifier closes.
pub fn changes_from(
    ns: Namespace,
    from_lsn: u64,
) -> impl Stream<Item = Result<Change, FeedError>> + Send + 'static {
    let limits = TailLimits {
        max_records: READ_BATCH,
        ..TailLimits::default()
    };
    let state = FeedState {
        tail: ns.tail_with(from_lsn, limits),
        buf: VecDeque::new(),
        failed: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.buf.pop_front() {
                return Some((item, st));
            }
            if st.failed {
                return None;
            }
            let records = match st.tail.read().await {
                Ok(r) => r,
                Err(e) => {
                    st.failed = true;
                    return Some((Err(e.into()), st));
                }
            };
            if records.is_empty() {
                if !st.tail.changed().await {
                    return None;
                }
                continue;
            }
            for rec in records {
                match events::changes(rec.lsn, rec.hlc, &rec.payload) {
                    Ok(ch) => st.buf.extend(ch.into_iter().map(Ok)),
                    Err(source) => {
                        // Changes decoded before the bad record still go out first.
                        st.failed = true;
                        st.buf.push_back(Err(FeedError::Decode {
                            lsn: rec.lsn,
                            source,
                        }));
                        break;
                    }
                }
            }
        }
    })
}

/// The JSON payload of one change, shared by SSE `/watch` and ZeroMQ notifications: the user's key in
/// base64 (never the internal encoding), the real LSN and the HLC with its wall-clock milliseconds.
pub fn change_json(namespace: &str, c: &Change) -> serde_json::Value {
    use base64::Engine as _;
    serde_json::json!({
        "namespace": namespace,
        "model": c.model.as_str(),
        "op": c.op,
        "key": base64::engine::general_purpose::STANDARD.encode(&c.key),
        "lsn": c.lsn,
        "hlc": c.hlc,
        "timestampMs": crate::storage::hlc::physical_ms(c.hlc),
        "columns": c.columns.iter().map(|col| String::from_utf8_lossy(col).into_owned()).collect::<Vec<_>>(),
    })
}

/// Changes from the current end of the log on (new writes only).
pub fn changes_from_now(
    ns: Namespace,
) -> impl Stream<Item = Result<Change, FeedError>> + Send + 'static {
    let from = ns.latest_lsn() + 1;
    changes_from(ns, from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{kv, row, testutil::namespace};
    use futures::StreamExt;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn yields_history_then_live_changes_in_order() {
        let (_d, ns) = namespace();
        kv::put(&ns, b"a", b"1").unwrap();
        let start = ns.latest_lsn();
        let mut feed = Box::pin(changes_from(ns.clone(), start));
        let first = feed.next().await.unwrap().unwrap();
        assert_eq!(first.key, b"a");
        let ns2 = ns.clone();
        tokio::task::spawn_blocking(move || {
            kv::put(&ns2, b"b", b"2").unwrap();
            row::upsert(&ns2, b"r", [(b"c".to_vec(), b"x".to_vec())].into()).unwrap();
        });
        let b = tokio::time::timeout(Duration::from_secs(5), feed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(b.key, b"b");
        let r = tokio::time::timeout(Duration::from_secs(5), feed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((r.key.as_slice(), r.columns.len()), (b"r".as_slice(), 1));
        assert!(r.lsn > b.lsn && b.lsn > first.lsn);
    }
}
