//! The binary's admin and client commands, kept in the library so they are testable.
//!
//! - [`wal`]: `unisondb wal list|inspect|stats DIR`, offline and read-only.
//! - [`client`]: `unisondb kv|row|lob|watch|backup`, a terminal client for the HTTP API.
//! - [`restore`]: `unisondb restore`, offline restore from a backup (optionally to a point in time).
//! - [`probe`]: `unisondb probe URL`, one HTTP GET checked for a status (Helm test hooks).

pub mod client;
pub mod probe;
pub mod restore;
pub mod wal;
