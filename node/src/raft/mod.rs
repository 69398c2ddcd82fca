//! Hub high availability (cluster mode): one openraft group per namespace over the WAL.
//!
//! The WAL is the Raft log (`engine/cluster.rs`): entry index `i` is LSN `i + 1`, its term is the
//! record's epoch. `store.rs` adapts a member namespace to openraft's storage-v2 traits, `entry.rs`
//! converts entries to and from WAL records, `durable.rs` lets the leader's fsync run in parallel with its followers', `state.rs` keeps the vote, committed index and
//! membership crash-safely, `network.rs`/`service.rs` carry the RPCs over the node's gRPC listener,
//! `group.rs` runs the groups a process serves, `batcher.rs` merges concurrent writes into one entry, `members.rs` changes a group's membership,
//! `join.rs` lets a new member ask to be added, `handoff.rs` moves the leadership away, and
//! `prevote.rs` decides when a member campaigns.

// openraft's trait signatures fix the error types (`StorageError`, `RaftError`, `RPCError`), which
// are large by design; boxing them here would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

pub mod batcher;
pub mod durable;
pub mod entry;
pub mod group;
pub mod handoff;
pub mod join;
pub mod link;
pub mod members;
pub mod network;
pub mod prevote;
pub mod proto;
pub mod service;
pub mod snapshot;
pub mod state;
pub mod store;

/// A member as the group knows it: where to reach its Raft service and its HTTP API.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// `host:port` of the member's gRPC listener (Raft RPCs).
    pub grpc: String,
    /// `host:port` of the member's HTTP API (followers proxy writes there).
    pub http: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "grpc={} http={}", self.grpc, self.http)
    }
}

/// A proposed write: the encoded `WriteBatch` and the HLC the leader gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    pub hlc: u64,
    /// As one byte string: the same bincode layout as a sequence of bytes, copied at once.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// What applying an entry produced: its LSN and HLC.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    pub lsn: u64,
    pub hlc: u64,
}

openraft::declare_raft_types!(
    /// openraft's types for a UnisonDB namespace group.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of one namespace group.
pub type RaftHandle = openraft::Raft<TypeConfig>;
/// Storage errors as openraft takes them.
pub type StorageError = openraft::StorageError<u64>;
