//! UnisonDB node library: storage engine (WAL, memtable, B+Tree), data models, servers.
//!
//! Data flows one way: API → engine → WAL → memtable → B+Tree; WAL → replication and notifications.

pub mod btree;
pub mod config;
pub mod db;
pub mod engine;
pub mod feed;
pub mod http;
pub mod inspect;
pub mod memtable;
pub mod metrics;
pub mod models;
pub mod notify;
pub mod replication;
pub mod storage;
pub mod wal;
