//! Helpers shared by the UnisonDB benchmark programs (`benches/kv.rs`, `benches/http.rs`,
//! `bin/bench-fanout.rs`, `bin/bench-repl.rs`), written once here instead of once per program.
//!
//! Ports, node processes and waits come from the workspace's test-support crate `unisondb-testkit`.

pub mod client;
pub mod locate;
pub mod process;
pub mod stats;
