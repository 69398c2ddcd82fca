//! Encodings shared by the engine, the data models and replication: keys, batches, clocks, change events.

pub mod batch;
pub mod events;
pub mod hlc;
pub mod keys;
