//! UnisonDB node library: storage engine (WAL, memtable, B+Tree), data models, servers.
//!
//! Data flows one way: API → engine → WAL → memtable → B+Tree; WAL → [`engine::Tail`] → replication,
//! the change feed ([`feed`]) and through it ZeroMQ notifications ([`notify`]).
//!
//! Public surface: the engine ([`engine`], [`db`]), the data models ([`models`]), the encodings they
//! share ([`storage`]), the WAL's record and options types ([`wal`]), configuration ([`config`]), the
//! process wiring ([`server`]) and the servers it starts ([`http`], [`replication`], [`notify`]), plus
//! offline [`inspect`]. Page and segment machinery (B+Tree pages, WAL framing, memtables) is private.

pub mod backup;
mod btree;
pub mod cli;
pub mod config;
pub mod db;
pub mod engine;
pub mod feed;
pub mod fsutil;
pub mod http;
pub mod inspect;
mod memtable;
pub mod metrics;
pub mod models;
pub mod notify;
pub mod objstore;
pub mod raft;
pub mod replication;
pub mod resp;
pub mod server;
pub mod storage;
pub mod tls;
pub mod wal;

pub use btree::{BTreeError, BTreeOptions, CheckReport, TreeStats};
pub use db::Database;
pub use engine::{
    Commit, EngineError, EngineOptions, FsyncPolicy, Namespace, NamespaceStats, Snapshot, Tail,
    TailError, TailLimits,
};
pub use storage::batch::WriteBatch;
pub use wal::{Record, RetentionPolicy, WalError, WalOptions, WalReader};
