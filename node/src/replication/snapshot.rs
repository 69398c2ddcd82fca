//! Snapshot wire format, shared by both ends: the server ([`super::snapshot_serve`]) streams a
//! consistent copy of a namespace at one LSN; a follower whose next LSN was trimmed from the upstream
//! WAL installs it ([`super::bootstrap`]) and continues the WAL after that LSN.
//!
//! Wire order: one header (LSN, HLC, the epoch history up to the LSN), entry chunks in key order, one
//! trailer (count + CRC32C over all entries). The follower installs while receiving; a bad count or CRC aborts the install, which then
//! leaves the namespace as it was.

/// Entries per chunk message.
pub(crate) const CHUNK_ENTRIES: usize = 512;
/// Approximate bytes per chunk message.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// Running checksum over entries, identical on both ends.
#[derive(Default)]
pub(crate) struct EntryCrc {
    pub(crate) crc: u32,
    pub(crate) count: u64,
}

impl EntryCrc {
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, &(key.len() as u32).to_le_bytes());
        self.crc = crc32c::crc32c_append(self.crc, key);
        self.crc = crc32c::crc32c_append(self.crc, &(value.len() as u32).to_le_bytes());
        self.crc = crc32c::crc32c_append(self.crc, value);
        self.count += 1;
    }
}
