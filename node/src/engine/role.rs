//! Who may write a namespace here: the node that owns it, or nobody (a follower).
//!
//! A follower's WAL is a copy of its upstream's, LSN for LSN. A local record would take an LSN the
//! upstream hands out for a different record, so the upstream's record would never be applied and
//! chained followers would copy the local one. The engine therefore refuses local writes on a
//! follower ([`super::EngineError::Follower`]); replicated records and snapshot installs still apply,
//! and maintenance that writes (LOB orphan collection, upload cleanup) runs only where the namespace is
//! owned and reaches followers as the owner's replicated records.

/// The part this node plays for one namespace; fixed when the namespace is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// This node writes the namespace's history (a hub's own namespace).
    #[default]
    Owner,
    /// The history is copied from an upstream (relayer mode, or a namespace a hub mirrors).
    Follower,
    /// A member of the namespace's Raft group (cluster mode): writes go through the group's
    /// proposer and reach the WAL as Raft log entries on every member (see `engine/cluster.rs`).
    Member,
}

impl Role {
    /// Whether local writes and writing maintenance may run here.
    pub fn owns(self) -> bool {
        self == Role::Owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineError, EngineOptions, Namespace};
    use crate::storage::batch::WriteBatch;

    fn batch(key: &[u8]) -> WriteBatch {
        let mut b = WriteBatch::new();
        b.put(key.to_vec(), b"v".to_vec());
        b
    }

    #[test]
    fn follower_refuses_local_writes_and_applies_replicated_ones() {
        let d = tempfile::tempdir().unwrap();
        let owner = Namespace::open(&d.path().join("o"), "o", EngineOptions::default()).unwrap();
        assert_eq!(owner.role(), Role::Owner);
        owner.write(batch(b"a")).unwrap();
        let rec = owner.wal_reader(1).unwrap().next_record().unwrap().unwrap();

        let f = Namespace::open_as(
            &d.path().join("f"),
            "f",
            EngineOptions::default(),
            Role::Follower,
        )
        .unwrap();
        assert!(matches!(
            f.write(batch(b"local")),
            Err(EngineError::Follower { .. })
        ));
        assert_eq!(f.latest_lsn(), 0, "a refused write takes no LSN");
        let c = f.apply_replicated(vec![rec]).unwrap();
        assert_eq!(c.lsn, 1);
        assert_eq!(f.get(b"a").unwrap(), Some(b"v".to_vec()));
    }
}
