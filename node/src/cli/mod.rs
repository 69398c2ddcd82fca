//! The binary's admin and client commands, kept in the library so they are testable.
//!
//! - [`wal`]: `unisondb wal list|inspect|stats DIR`, offline and read-only.
//! - [`client`]: `unisondb kv|row|lob|watch`, a terminal client for the HTTP API.
//! - [`probe`]: `unisondb probe URL`, one HTTP GET checked for a status (Helm test hooks).

pub mod client;
pub mod probe;
pub mod wal;
