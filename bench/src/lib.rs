//! Helpers shared by the UnisonDB benchmark programs (`benches/kv.rs`, `benches/http.rs`,
//! `bin/bench-fanout.rs`, `bin/bench-repl.rs`), written once here instead of once per program.
//!
//! LOCAL COPY: [`ports::free_port`], [`process`] (node spawner, readiness wait) and [`locate`] overlap
//! with the workspace test-support crate `testkit/` being written in parallel. Until this crate can
//! depend on it, this is the single copy the bench programs use; replace it with `testkit` then.

pub mod client;
pub mod locate;
pub mod ports;
pub mod process;
pub mod stats;
