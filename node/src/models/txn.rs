//! Transactions: stage KV, row and LOB operations, then commit them as one batch (one LSN) or abort.
//!
//! KV and row ops are held in memory (bounded by `max_staged_bytes`); LOB data is streamed to disk as
//! chunks of a fresh version (invisible until the commit batch writes its manifest). Abandoned
//! transactions are reaped after an idle timeout or a maximum lifetime. Finished ids are remembered for
//! a while so a late call gets 409 (committed) or 410 (aborted) instead of 404.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::RngCore;

use super::kv::{self, KvOp};
use super::lob::{self, LobWriter, Manifest};
use super::row::{self, RowOp};
use super::ModelError;
use crate::engine::{Commit, Namespace};
use crate::storage::batch::WriteBatch;

/// How long a finished transaction id is remembered (for 409/410 answers).
const REMEMBER_FINISHED: Duration = Duration::from_secs(600);
const MAX_REMEMBERED: usize = 100_000;

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Aborted(String),
}

/// Timeouts and bounds of transactions.
#[derive(Debug, Clone)]
pub struct TxnLimits {
    pub idle: Duration,
    pub lifetime: Duration,
    pub max_staged_bytes: usize,
}

impl Default for TxnLimits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(60),
            lifetime: Duration::from_secs(600),
            max_staged_bytes: 64 << 20,
        }
    }
}

enum LobEntry {
    Put(Box<LobWriter>),
    Delete,
}

/// One open transaction; locked (async) by the request using it.
pub struct Txn {
    pub id: String,
    pub namespace: String,
    ns: Namespace,
    batch: WriteBatch,
    staged_bytes: usize,
    lobs: BTreeMap<Vec<u8>, LobEntry>,
    created: Instant,
    last_used: Instant,
    /// Set once committed or aborted; later users get 409/410.
    outcome: Option<Outcome>,
    /// Operation named at begin (UnisonDB compatibility: ops default to it).
    pub default_delete: bool,
}

/// What a commit produced.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub commit: Option<Commit>,
    pub ops: usize,
    /// Manifests of LOBs written, by key.
    pub lobs: Vec<(Vec<u8>, Manifest)>,
}

impl Txn {
    fn touch(&mut self) {
        self.last_used = Instant::now();
    }

    /// Errors with 409/410 semantics when the transaction already ended.
    pub fn ensure_open(&self) -> Result<(), ModelError> {
        match &self.outcome {
            None => Ok(()),
            Some(Outcome::Committed) => Err(ModelError::TxnCommitted(self.id.clone())),
            Some(Outcome::Aborted(why)) => {
                Err(ModelError::TxnAborted(self.id.clone(), why.clone()))
            }
        }
    }

    fn charge(&mut self, bytes: usize, limit: usize) -> Result<(), ModelError> {
        if self.staged_bytes + bytes > limit {
            return Err(ModelError::TooLarge(format!(
                "transaction exceeds {limit} staged bytes"
            )));
        }
        self.staged_bytes += bytes;
        Ok(())
    }

    pub fn add_kv(&mut self, op: &KvOp, limits: &TxnLimits) -> Result<(), ModelError> {
        self.ensure_open()?;
        self.touch();
        let mut scratch = WriteBatch::new();
        kv::add_op(&mut scratch, op)?;
        let w = scratch.ops.iter().map(|o| o.weight()).sum();
        self.charge(w, limits.max_staged_bytes)?;
        self.batch.ops.append(&mut scratch.ops);
        Ok(())
    }

    pub fn add_row(&mut self, op: &RowOp, limits: &TxnLimits) -> Result<(), ModelError> {
        self.ensure_open()?;
        self.touch();
        let mut scratch = WriteBatch::new();
        row::add_op(&mut scratch, op)?;
        let w = scratch.ops.iter().map(|o| o.weight()).sum();
        self.charge(w, limits.max_staged_bytes)?;
        self.batch.ops.append(&mut scratch.ops);
        Ok(())
    }

    /// The LOB writer for `key` in this transaction (appending to data already sent for it).
    pub fn lob_writer(&mut self, key: &[u8], limit: u64) -> Result<&mut LobWriter, ModelError> {
        self.ensure_open()?;
        self.touch();
        let entry = match self.lobs.remove(key) {
            Some(LobEntry::Put(w)) => LobEntry::Put(w),
            Some(LobEntry::Delete) | None => {
                LobEntry::Put(Box::new(LobWriter::new(self.ns.clone(), key, limit)?))
            }
        };
        let slot = self.lobs.entry(key.to_vec()).or_insert(entry);
        match slot {
            LobEntry::Put(w) => Ok(&mut **w),
            LobEntry::Delete => Err(ModelError::Invalid("LOB staged for deletion".into())),
        }
    }

    /// Stages the deletion of a LOB (dropping data staged for it in this transaction).
    pub fn lob_delete(&mut self, key: &[u8]) -> Result<(), ModelError> {
        self.ensure_open()?;
        super::check_key(key)?;
        self.touch();
        if let Some(LobEntry::Put(w)) = self.lobs.insert(key.to_vec(), LobEntry::Delete) {
            w.abort()?;
        }
        Ok(())
    }

    fn discard(&mut self) {
        self.batch = WriteBatch::new();
        for (_, e) in std::mem::take(&mut self.lobs) {
            if let LobEntry::Put(w) = e {
                if let Err(e) = w.abort() {
                    tracing::warn!(txn = %self.id, error = %e, "could not remove staged LOB chunks");
                }
            }
        }
    }
}

struct State {
    open: HashMap<String, Arc<tokio::sync::Mutex<Txn>>>,
    finished: HashMap<String, (Outcome, Instant)>,
}

/// The open transactions of a node.
pub struct TxnManager {
    limits: TxnLimits,
    state: Mutex<State>,
    /// Signalled when a transaction begins, so the reaper sleeps while there is none.
    began: tokio::sync::Notify,
}

impl TxnManager {
    pub fn new(limits: TxnLimits) -> TxnManager {
        TxnManager {
            limits,
            state: Mutex::new(State {
                open: HashMap::new(),
                finished: HashMap::new(),
            }),
            began: tokio::sync::Notify::new(),
        }
    }

    /// Whether the reaper has nothing to watch: no open transaction, no remembered outcome.
    pub fn is_idle(&self) -> bool {
        let st = self.state.lock();
        st.open.is_empty() && st.finished.is_empty()
    }

    /// Resolves once a transaction has begun since the last call (a begin between an
    /// [`TxnManager::is_idle`] check and this wait is not missed: `Notify` keeps one permit).
    pub async fn began(&self) {
        self.began.notified().await
    }

    pub fn limits(&self) -> &TxnLimits {
        &self.limits
    }

    pub fn open_count(&self) -> usize {
        self.state.lock().open.len()
    }

    /// Starts a transaction on `ns`; returns its id.
    pub fn begin(&self, ns: Namespace, default_delete: bool) -> String {
        let mut raw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut raw);
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let txn = Txn {
            id: id.clone(),
            namespace: ns.name().to_string(),
            ns,
            batch: WriteBatch::new(),
            staged_bytes: 0,
            lobs: BTreeMap::new(),
            created: now,
            last_used: now,
            outcome: None,
            default_delete,
        };
        self.state
            .lock()
            .open
            .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(txn)));
        self.began.notify_one();
        id
    }

    /// Finds an open transaction of `namespace`; 404/409/410 semantics otherwise.
    pub fn get(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Arc<tokio::sync::Mutex<Txn>>, ModelError> {
        let st = self.state.lock();
        if let Some(t) = st.open.get(id) {
            // The namespace is immutable after begin; try_lock only fails while another request uses it.
            if let Ok(g) = t.try_lock() {
                if g.namespace != namespace {
                    return Err(ModelError::NotFound("transaction".into()));
                }
            }
            return Ok(t.clone());
        }
        match st.finished.get(id) {
            Some((Outcome::Committed, _)) => Err(ModelError::TxnCommitted(id.to_string())),
            Some((Outcome::Aborted(why), _)) => {
                Err(ModelError::TxnAborted(id.to_string(), why.clone()))
            }
            None => Err(ModelError::NotFound("transaction".into())),
        }
    }

    fn close(&self, txn: &mut Txn, outcome: Outcome) {
        txn.outcome = Some(outcome.clone());
        let mut st = self.state.lock();
        st.open.remove(&txn.id);
        if st.finished.len() < MAX_REMEMBERED {
            st.finished
                .insert(txn.id.clone(), (outcome, Instant::now()));
        }
    }

    /// Commits every staged op as one batch (blocking).
    pub fn commit(&self, txn: &mut Txn) -> Result<CommitInfo, ModelError> {
        txn.ensure_open()?;
        if let Some(why) = self.expired(txn, Instant::now()) {
            txn.discard();
            self.close(txn, Outcome::Aborted(why.clone()));
            return Err(ModelError::TxnAborted(txn.id.clone(), why));
        }
        let result = self.commit_inner(txn);
        match &result {
            Ok(_) => self.close(txn, Outcome::Committed),
            Err(e) => {
                txn.discard();
                self.close(txn, Outcome::Aborted(format!(" (commit failed: {e})")));
            }
        }
        result
    }

    fn commit_inner(&self, txn: &mut Txn) -> Result<CommitInfo, ModelError> {
        let mut batch = std::mem::take(&mut txn.batch);
        let mut staged = Vec::new();
        let mut deletes = Vec::new();
        for (key, e) in std::mem::take(&mut txn.lobs) {
            match e {
                LobEntry::Put(w) => staged.push(w.seal()?),
                LobEntry::Delete => deletes.push(key),
            }
        }
        let ops = batch.len() + staged.len() + deletes.len();
        if ops == 0 {
            return Ok(CommitInfo {
                commit: None,
                ops: 0,
                lobs: Vec::new(),
            });
        }
        let _guard = lob::commit_lock(&txn.ns);
        let snap = txn.ns.snapshot()?;
        let mut lobs = Vec::new();
        for s in staged.iter_mut() {
            let old = lob::read_manifest(&snap, s.key())?;
            s.add_commit_ops(&mut batch, old);
            lobs.push((s.key().to_vec(), s.manifest()));
        }
        for key in &deletes {
            match lob::add_delete_ops(&snap, key, &mut batch) {
                Ok(()) | Err(ModelError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let commit = txn.ns.write(batch)?;
        for s in staged.iter_mut() {
            s.mark_committed();
        }
        Ok(CommitInfo {
            commit: Some(commit),
            ops,
            lobs,
        })
    }

    /// Aborts and discards staged data (blocking: removes staged LOB chunks).
    pub fn abort(&self, txn: &mut Txn) -> Result<(), ModelError> {
        txn.ensure_open()?;
        txn.discard();
        self.close(txn, Outcome::Aborted(String::new()));
        Ok(())
    }

    fn expired(&self, txn: &Txn, now: Instant) -> Option<String> {
        if now.duration_since(txn.created) > self.limits.lifetime {
            Some(format!(
                " (exceeded the maximum lifetime of {}s)",
                self.limits.lifetime.as_secs()
            ))
        } else if now.duration_since(txn.last_used) > self.limits.idle {
            Some(format!(
                " (idle for more than {}s)",
                self.limits.idle.as_secs()
            ))
        } else {
            None
        }
    }

    /// Aborts expired transactions not in use right now (blocking); returns how many.
    pub fn reap(&self) -> usize {
        let now = Instant::now();
        let candidates: Vec<_> = {
            let mut st = self.state.lock();
            st.finished
                .retain(|_, (_, at)| now.duration_since(*at) < REMEMBER_FINISHED);
            st.open.values().cloned().collect()
        };
        let mut n = 0;
        for t in candidates {
            let Ok(mut g) = t.try_lock() else { continue };
            if g.outcome.is_some() {
                continue;
            }
            if let Some(why) = self.expired(&g, now) {
                tracing::info!(txn = %g.id, namespace = %g.namespace, reason = %why.trim(), "transaction reaped");
                g.discard();
                self.close(&mut g, Outcome::Aborted(why));
                n += 1;
            }
        }
        n
    }

    /// Aborts every open transaction (shutdown; blocking).
    pub fn abort_all(&self) {
        let all: Vec<_> = self.state.lock().open.values().cloned().collect();
        for t in all {
            if let Ok(mut g) = t.try_lock() {
                if g.outcome.is_none() {
                    g.discard();
                    self.close(&mut g, Outcome::Aborted(" (server shutting down)".into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testutil::namespace;

    #[test]
    fn commit_is_atomic_and_final() {
        let (_d, ns) = namespace();
        let m = TxnManager::new(TxnLimits::default());
        let id = m.begin(ns.clone(), false);
        let t = m.get("t", &id).unwrap();
        let mut g = t.try_lock().unwrap();
        g.add_kv(
            &KvOp::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            m.limits(),
        )
        .unwrap();
        g.add_row(
            &RowOp::Upsert {
                row: b"r".to_vec(),
                columns: [(b"c".to_vec(), b"1".to_vec())].into(),
            },
            m.limits(),
        )
        .unwrap();
        g.lob_writer(b"blob", 1 << 30)
            .unwrap()
            .write(&[9u8; 200_000])
            .unwrap();
        assert_eq!(kv::get(&ns, b"k").unwrap(), None);
        let info = m.commit(&mut g).unwrap();
        assert_eq!(info.ops, 3);
        assert_eq!(info.lobs[0].1.size, 200_000);
        assert_eq!(kv::get(&ns, b"k").unwrap(), Some(b"v".to_vec()));
        assert!(row::get(&ns, b"r", None).unwrap().is_some());
        assert_eq!(lob::stat(&ns, b"blob").unwrap().unwrap().size, 200_000);
        drop(g);
        assert!(matches!(m.get("t", &id), Err(ModelError::TxnCommitted(_))));
        assert_eq!(m.open_count(), 0);
    }

    #[test]
    fn abort_and_timeouts() {
        let (_d, ns) = namespace();
        let m = TxnManager::new(TxnLimits {
            idle: Duration::from_millis(50),
            ..TxnLimits::default()
        });
        let id = m.begin(ns.clone(), false);
        {
            let t = m.get("t", &id).unwrap();
            let mut g = t.try_lock().unwrap();
            g.add_kv(
                &KvOp::Put {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                },
                m.limits(),
            )
            .unwrap();
            m.abort(&mut g).unwrap();
        }
        assert!(matches!(m.get("t", &id), Err(ModelError::TxnAborted(..))));
        assert_eq!(kv::get(&ns, b"k").unwrap(), None);
        let id2 = m.begin(ns.clone(), false);
        assert!(matches!(m.get("other", &id2), Err(ModelError::NotFound(_))));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(m.reap(), 1);
        assert!(matches!(m.get("t", &id2), Err(ModelError::TxnAborted(..))));
        assert!(matches!(m.get("t", "nope"), Err(ModelError::NotFound(_))));
    }
}
