//! Record framing: pure encode/decode of one WAL frame, no I/O.
//!
//! Frame layout (all little-endian), 24-byte header then the payload:
//!
//! ```text
//! len: u32 | crc32c: u32 | lsn: u64 | hlc: u64 | payload[len]
//! ```
//!
//! `len` is the payload length only; `crc32c` covers `lsn | hlc | payload` (bytes 8..).
//! The length is not covered by the CRC, but a wrong length makes the CRC window wrong,
//! so it is detected as a CRC mismatch (or as a frame running past end of file).

/// Size of the fixed frame header preceding every payload.
pub const FRAME_HEADER_LEN: usize = 24;

/// Largest payload a frame can carry (the length field is a `u32`).
pub const MAX_PAYLOAD_LEN: usize = u32::MAX as usize;

/// CRC of one frame: covers the LSN, HLC and payload so a record cannot be misattributed.
pub fn frame_crc(lsn: u64, hlc: u64, payload: &[u8]) -> u32 {
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&lsn.to_le_bytes());
    head[8..].copy_from_slice(&hlc.to_le_bytes());
    let crc = crc32c::crc32c(&head);
    crc32c::crc32c_append(crc, payload)
}

/// Total on-disk size of a frame carrying `payload_len` bytes.
pub fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + payload_len
}

/// Appends one encoded frame to `out`. Caller guarantees `payload.len() <= MAX_PAYLOAD_LEN`.
pub fn encode_into(out: &mut Vec<u8>, lsn: u64, hlc: u64, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD_LEN);
    out.reserve(frame_len(payload.len()));
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame_crc(lsn, hlc, payload).to_le_bytes());
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
}

impl FrameHeader {
    /// Total frame size (header + payload) as u64, for file offset arithmetic.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.payload_len)
    }
}

/// Parses the 24-byte header at the start of `buf`; `None` if fewer bytes are available.
pub fn parse_header(buf: &[u8]) -> Option<FrameHeader> {
    let h = buf.get(..FRAME_HEADER_LEN)?;
    Some(FrameHeader {
        payload_len: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        crc: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
        lsn: u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
        hlc: u64::from_le_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]),
    })
}

/// A successfully decoded frame borrowing its payload from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub lsn: u64,
    pub hlc: u64,
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

/// Decodes one frame at the start of `buf` without allocating; never panics on any input.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some(h) = parse_header(buf) else {
        return Decoded::Incomplete { needed: None };
    };
    let total = h.frame_len();
    if (buf.len() as u64) < total {
        return Decoded::Incomplete {
            needed: Some(total),
        };
    }
    // total <= buf.len() so it fits in usize.
    let payload = &buf[FRAME_HEADER_LEN..total as usize];
    if frame_crc(h.lsn, h.hlc, payload) != h.crc {
        return Decoded::CrcMismatch { lsn: h.lsn };
    }
    Decoded::Frame(Frame {
        lsn: h.lsn,
        hlc: h.hlc,
        payload,
        len: total as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(lsn: u64, hlc: u64, p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_into(&mut v, lsn, hlc, p);
        v
    }

    #[test]
    fn roundtrip() {
        for payload in [&b""[..], b"x", b"hello world", &[0u8; 1000][..]] {
            let buf = enc(42, 7, payload);
            assert_eq!(buf.len(), frame_len(payload.len()));
            match decode(&buf) {
                Decoded::Frame(f) => {
                    assert_eq!(f.lsn, 42);
                    assert_eq!(f.hlc, 7);
                    assert_eq!(f.payload, payload);
                    assert_eq!(f.len, buf.len());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut buf = enc(1, 10, b"a");
        encode_into(&mut buf, 2, 20, b"bb");
        let Decoded::Frame(f1) = decode(&buf) else {
            panic!("first")
        };
        let Decoded::Frame(f2) = decode(&buf[f1.len..]) else {
            panic!("second")
        };
        assert_eq!((f1.lsn, f2.lsn, f2.payload), (1, 2, &b"bb"[..]));
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let buf = enc(5, 9, b"some payload bytes");
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                match decode(&b) {
                    Decoded::Frame(_) => panic!("flip at byte {i} bit {bit} undetected"),
                    Decoded::Incomplete { .. } | Decoded::CrcMismatch { .. } => {}
                }
            }
        }
    }

    #[test]
    fn crc_mismatch_reported() {
        let mut buf = enc(5, 9, b"payload");
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        assert_eq!(decode(&buf), Decoded::CrcMismatch { lsn: 5 });
    }

    #[test]
    fn truncation_is_incomplete() {
        let buf = enc(5, 9, b"payload");
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut]), Decoded::Incomplete { .. }),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn zeros_are_not_a_frame() {
        assert!(!matches!(decode(&[0u8; 64]), Decoded::Frame(_)));
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..10_000 {
            let n = rng.gen_range(0..80);
            let b: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let _ = decode(&b);
        }
    }
}
