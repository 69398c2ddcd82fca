//! The change feed: model-level changes of a namespace from an LSN on, read from its WAL.
//!
//! One source for SSE `/watch` and (later) ZeroMQ notifications: records are read with a `WalReader` on a
//! blocking thread, decoded by `storage::events::changes`, and the stream then waits on the namespace's
//! LSN watch channel for more. Nothing is buffered beyond one read batch, so a slow consumer simply
//! reads the WAL later (back-pressure instead of unbounded queues).

use std::collections::VecDeque;

use futures::Stream;
use thiserror::Error;

use crate::engine::{EngineError, Namespace};
use crate::storage::batch::DecodeError;
use crate::storage::events::{self, Change};
use crate::wal::WalReader;

/// Records read per blocking call.
const READ_BATCH: usize = 256;

/// Why the feed stopped.
#[derive(Debug, Error)]
pub enum FeedError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("undecodable WAL record at LSN {lsn}: {source}")]
    Decode { lsn: u64, source: DecodeError },
    #[error("change feed reader task failed: {0}")]
    Task(String),
}

struct FeedState {
    ns: Namespace,
    next_lsn: u64,
    reader: Option<WalReader>,
    rx: tokio::sync::watch::Receiver<u64>,
    buf: VecDeque<Change>,
    failed: bool,
}

/// Reads up to `READ_BATCH` records from `next_lsn`; returns the reader to reuse and the changes.
fn read_some(
    ns: &Namespace,
    reader: Option<WalReader>,
    next_lsn: u64,
) -> Result<(Option<WalReader>, u64, Vec<Change>), FeedError> {
    let mut reader = match reader {
        Some(r) => r,
        None => ns.wal_reader(next_lsn)?,
    };
    let mut out = Vec::new();
    let mut next = next_lsn;
    for _ in 0..READ_BATCH {
        match reader.next_record().map_err(EngineError::from)? {
            Some(rec) => {
                if rec.lsn < next {
                    continue;
                }
                let ch = events::changes(rec.lsn, rec.hlc, &rec.payload).map_err(|source| {
                    FeedError::Decode {
                        lsn: rec.lsn,
                        source,
                    }
                })?;
                out.extend(ch);
                next = rec.lsn + 1;
            }
            None => {
                // At the published end: drop the reader (and its segment pins); reopen when woken.
                return Ok((None, next, out));
            }
        }
    }
    Ok((Some(reader), next, out))
}

/// Changes of `ns` with LSN >= `from_lsn`, in LSN order, following new writes forever.
/// The stream ends after yielding an error, or when the namespace's notifier closes.
pub fn changes_from(
    ns: Namespace,
    from_lsn: u64,
) -> impl Stream<Item = Result<Change, FeedError>> + Send + 'static {
    let rx = ns.subscribe();
    let state = FeedState {
        ns,
        next_lsn: from_lsn.max(1),
        reader: None,
        rx,
        buf: VecDeque::new(),
        failed: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.failed {
                return None;
            }
            if let Some(c) = st.buf.pop_front() {
                return Some((Ok(c), st));
            }
            if st.ns.latest_lsn() >= st.next_lsn {
                let ns = st.ns.clone();
                let reader = st.reader.take();
                let next = st.next_lsn;
                let res = tokio::task::spawn_blocking(move || read_some(&ns, reader, next)).await;
                match res {
                    Ok(Ok((reader, next, changes))) => {
                        st.reader = reader;
                        st.next_lsn = next;
                        st.buf.extend(changes);
                        continue;
                    }
                    Ok(Err(e)) => {
                        st.failed = true;
                        return Some((Err(e), st));
                    }
                    Err(e) => {
                        st.failed = true;
                        return Some((Err(FeedError::Task(e.to_string())), st));
                    }
                }
            }
            // Caught up: wait for the visible LSN to move.
            st.rx.borrow_and_update();
            if st.ns.latest_lsn() >= st.next_lsn {
                continue;
            }
            if st.rx.changed().await.is_err() {
                return None;
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
