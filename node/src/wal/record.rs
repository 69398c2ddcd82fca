//! Record framing: pure encode/decode of one WAL frame, no I/O.
//!
//! Two frame formats exist, chosen per segment by the segment header's version (see `segment.rs`):
//!
//! ```text
//! v1 (24-byte header): len: u32 | crc32c: u32 | lsn: u64 | hlc: u64 | payload[len]
//! v2 (32-byte header): len: u32 | crc32c: u32 | lsn: u64 | hlc: u64 | epoch: u64 | payload[len]
//! ```
//!
//! All little-endian. `len` is the payload length only; `crc32c` covers every byte after it
//! (`lsn | hlc | payload` in v1, `lsn | hlc | epoch | payload` in v2), so the epoch of a v2 record is
//! as protected as its LSN. The length is not covered by the CRC, but a wrong length makes the CRC
//! window wrong, so it is detected as a CRC mismatch (or as a frame running past end of file).
//! New segments are always v2; v1 segments (written before epochs existed) stay readable and
//! their records have epoch 0.

/// Size of the fixed v1 frame header (kept for the v1 reader and tests).
pub const FRAME_HEADER_LEN: usize = 24;
/// Size of the fixed v2 frame header.
pub const FRAME_HEADER_LEN_V2: usize = 32;

/// Largest payload a frame can carry (the length field is a `u32`).
pub const MAX_PAYLOAD_LEN: usize = u32::MAX as usize;

/// The frame layout of one segment, from its header's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    /// No epoch: records read back with epoch 0.
    V1,
    /// Epoch after the HLC, covered by the CRC.
    V2,
}

impl FrameFormat {
    /// Bytes of the fixed header preceding the payload.
    pub fn header_len(self) -> usize {
        match self {
            FrameFormat::V1 => FRAME_HEADER_LEN,
            FrameFormat::V2 => FRAME_HEADER_LEN_V2,
        }
    }

    /// Total on-disk size of a frame carrying `payload_len` bytes.
    pub fn frame_len(self, payload_len: usize) -> usize {
        self.header_len() + payload_len
    }
}

/// CRC of one v1 frame: covers the LSN, HLC and payload so a record cannot be misattributed.
pub fn frame_crc_v1(lsn: u64, hlc: u64, payload: &[u8]) -> u32 {
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&lsn.to_le_bytes());
    head[8..].copy_from_slice(&hlc.to_le_bytes());
    let crc = crc32c::crc32c(&head);
    crc32c::crc32c_append(crc, payload)
}

/// CRC of one v2 frame (and of a record on the wire): covers LSN, HLC, epoch and payload.
pub fn frame_crc(lsn: u64, hlc: u64, epoch: u64, payload: &[u8]) -> u32 {
    let mut head = [0u8; 24];
    head[..8].copy_from_slice(&lsn.to_le_bytes());
    head[8..16].copy_from_slice(&hlc.to_le_bytes());
    head[16..].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32c::crc32c(&head);
    crc32c::crc32c_append(crc, payload)
}

/// Total on-disk size of a v2 frame carrying `payload_len` bytes (what the writer appends).
pub fn frame_len(payload_len: usize) -> usize {
    FrameFormat::V2.frame_len(payload_len)
}

/// Appends one encoded v2 frame to `out`. Caller guarantees `payload.len() <= MAX_PAYLOAD_LEN`.
pub fn encode_into(out: &mut Vec<u8>, lsn: u64, hlc: u64, epoch: u64, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD_LEN);
    out.reserve(frame_len(payload.len()));
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame_crc(lsn, hlc, epoch, payload).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&hlc.to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends one encoded v1 frame (no epoch): only for tests of reading pre-epoch data.
#[cfg(test)]
pub fn encode_v1_into(out: &mut Vec<u8>, lsn: u64, hlc: u64, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame_crc_v1(lsn, hlc, payload).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&hlc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The fixed header fields of a frame, readable before the payload is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub lsn: u64,
    pub hlc: u64,
    /// 0 for v1 frames.
    pub epoch: u64,
    pub format: FrameFormat,
}

impl FrameHeader {
    /// Total frame size (header + payload) as u64, for file offset arithmetic.
    pub fn frame_len(&self) -> u64 {
        self.format.header_len() as u64 + u64::from(self.payload_len)
    }
}

fn u64_at(h: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Parses the fixed header at the start of `buf`; `None` if fewer bytes are available.
pub fn parse_header(buf: &[u8], format: FrameFormat) -> Option<FrameHeader> {
    let h = buf.get(..format.header_len())?;
    Some(FrameHeader {
        payload_len: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        crc: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
        lsn: u64_at(h, 8),
        hlc: u64_at(h, 16),
        epoch: match format {
            FrameFormat::V1 => 0,
            FrameFormat::V2 => u64_at(h, 24),
        },
        format,
    })
}

/// A successfully decoded frame borrowing its payload from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub lsn: u64,
    pub hlc: u64,
    pub epoch: u64,
    pub payload: &'a [u8],
    /// Bytes consumed from the buffer (header + payload).
    pub len: usize,
}

/// Outcome of decoding at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete frame whose CRC matches.
    Frame(Frame<'a>),
    /// The buffer ends before the frame does; `needed` is the full frame size if known.
    Incomplete { needed: Option<u64> },
    /// The frame is complete but its CRC does not match.
    CrcMismatch { lsn: u64 },
}

/// Decodes one frame of `format` at the start of `buf` without allocating; never panics on any input.
pub fn decode(buf: &[u8], format: FrameFormat) -> Decoded<'_> {
    let Some(h) = parse_header(buf, format) else {
        return Decoded::Incomplete { needed: None };
    };
    let total = h.frame_len();
    if (buf.len() as u64) < total {
        return Decoded::Incomplete {
            needed: Some(total),
        };
    }
    // total <= buf.len() so it fits in usize.
    let payload = &buf[format.header_len()..total as usize];
    let crc = match format {
        FrameFormat::V1 => frame_crc_v1(h.lsn, h.hlc, payload),
        FrameFormat::V2 => frame_crc(h.lsn, h.hlc, h.epoch, payload),
    };
    if crc != h.crc {
        return Decoded::CrcMismatch { lsn: h.lsn };
    }
    Decoded::Frame(Frame {
        lsn: h.lsn,
        hlc: h.hlc,
        epoch: h.epoch,
        payload,
        len: total as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use FrameFormat::{V1, V2};

    fn enc(lsn: u64, hlc: u64, p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_into(&mut v, lsn, hlc, 3, p);
        v
    }

    fn enc_v1(lsn: u64, hlc: u64, p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_v1_into(&mut v, lsn, hlc, p);
        v
    }

    #[test]
    fn roundtrip() {
        for payload in [&b""[..], b"x", b"hello world", &[0u8; 1000][..]] {
            let buf = enc(42, 7, payload);
            assert_eq!(buf.len(), frame_len(payload.len()));
            match decode(&buf, V2) {
                Decoded::Frame(f) => {
                    assert_eq!(f.lsn, 42);
                    assert_eq!(f.hlc, 7);
                    assert_eq!(f.epoch, 3);
                    assert_eq!(f.payload, payload);
                    assert_eq!(f.len, buf.len());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn v1_frames_decode_with_epoch_zero() {
        let buf = enc_v1(9, 8, b"old record");
        assert_eq!(buf.len(), V1.frame_len(10));
        match decode(&buf, V1) {
            Decoded::Frame(f) => {
                assert_eq!(
                    (f.lsn, f.hlc, f.epoch, f.payload),
                    (9, 8, 0, &b"old record"[..])
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // Read with the wrong format, a frame is never accepted.
        assert!(!matches!(decode(&buf, V2), Decoded::Frame(_)));
        assert!(!matches!(
            decode(&enc(9, 8, b"old record"), V1),
            Decoded::Frame(_)
        ));
    }

    #[test]
    fn the_crc_covers_the_epoch() {
        let mut buf = enc(5, 9, b"payload");
        buf[24] ^= 1; // lowest byte of the epoch
        assert_eq!(decode(&buf, V2), Decoded::CrcMismatch { lsn: 5 });
        assert_ne!(frame_crc(5, 9, 1, b"p"), frame_crc(5, 9, 2, b"p"));
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut buf = enc(1, 10, b"a");
        encode_into(&mut buf, 2, 20, 4, b"bb");
        let Decoded::Frame(f1) = decode(&buf, V2) else {
            panic!("first")
        };
        let Decoded::Frame(f2) = decode(&buf[f1.len..], V2) else {
            panic!("second")
        };
        assert_eq!(
            (f1.lsn, f2.lsn, f2.epoch, f2.payload),
            (1, 2, 4, &b"bb"[..])
        );
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        for (buf, format) in [
            (enc(5, 9, b"some payload bytes"), V2),
            (enc_v1(5, 9, b"some payload bytes"), V1),
        ] {
            for i in 0..buf.len() {
                for bit in 0..8 {
                    let mut b = buf.clone();
                    b[i] ^= 1 << bit;
                    match decode(&b, format) {
                        Decoded::Frame(_) => panic!("flip at byte {i} bit {bit} undetected"),
                        Decoded::Incomplete { .. } | Decoded::CrcMismatch { .. } => {}
                    }
                }
            }
        }
    }

    #[test]
    fn crc_mismatch_reported() {
        let mut buf = enc(5, 9, b"payload");
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        assert_eq!(decode(&buf, V2), Decoded::CrcMismatch { lsn: 5 });
    }

    #[test]
    fn truncation_is_incomplete() {
        let buf = enc(5, 9, b"payload");
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut], V2), Decoded::Incomplete { .. }),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn zeros_are_not_a_frame() {
        assert!(!matches!(decode(&[0u8; 64], V2), Decoded::Frame(_)));
        assert!(!matches!(decode(&[0u8; 64], V1), Decoded::Frame(_)));
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..10_000 {
            let n = rng.gen_range(0..80);
            let b: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let _ = decode(&b, V1);
            let _ = decode(&b, V2);
        }
    }
}
