//! One segment file: naming, the fixed header, creation, and a pure scan of its contents.
//!
//! Header layout (20 bytes, little-endian):
//!
//! ```text
//! magic "UWAL" | version: u16 | flags: u16 (0) | first_lsn: u64 | crc32c(bytes 0..16): u32
//! ```
//!
//! The version selects the frame format of the whole segment ([`FrameFormat`]): 1 = frames without
//! an epoch (read as epoch 0), 2 = frames carrying their epoch. New segments are always version 2; a
//! data directory written before epochs existed keeps its version-1 segments readable, and the writer
//! rolls to a version-2 segment before its first append (one segment never mixes formats).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Decoded, FrameFormat};

/// Magic bytes at the start of every segment file.
pub const MAGIC: [u8; 4] = *b"UWAL";
/// On-disk format version written into the header of new segments (frames with epochs).
pub const FORMAT_VERSION: u16 = 2;
/// The pre-epoch format version, still read.
pub const FORMAT_VERSION_V1: u16 = 1;
/// Size of the segment header; records start at this offset.
pub const SEGMENT_HEADER_LEN: usize = 20;
/// File name extension of segment files.
pub const EXTENSION: &str = "wal";

/// File name for the segment whose first record has `first_lsn` (20-digit zero-padded).
pub fn file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.{EXTENSION}")
}

/// Parses a segment file name back into its first LSN; `None` for foreign files.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Encodes the header of a segment starting at `first_lsn`.
pub fn encode_header(first_lsn: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&0u16.to_le_bytes());
    h[8..16].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than `SEGMENT_HEADER_LEN` bytes: a segment torn while being created.
    Short,
    /// Header bytes present but wrong (magic, version or crc).
    Invalid(String),
}

/// Validates a segment header and returns its first LSN.
pub fn decode_header(buf: &[u8]) -> Result<u64, HeaderError> {
    let Some(h) = buf.get(..SEGMENT_HEADER_LEN) else {
        return Err(HeaderError::Short);
    };
    if h[0..4] != MAGIC {
        return Err(HeaderError::Invalid("bad segment magic".into()));
    }
    let crc = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
    if crc32c::crc32c(&h[0..16]) != crc {
        return Err(HeaderError::Invalid("segment header crc mismatch".into()));
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != FORMAT_VERSION && version != FORMAT_VERSION_V1 {
        return Err(HeaderError::Invalid(format!(
            "unsupported segment format version {version}"
        )));
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&h[8..16]);
    Ok(u64::from_le_bytes(lsn))
}

/// The frame format of a segment image whose header is valid (`decode_header` succeeded); v2 otherwise.
pub fn image_format(buf: &[u8]) -> FrameFormat {
    match buf.get(4..6).map(|v| u16::from_le_bytes([v[0], v[1]])) {
        Some(FORMAT_VERSION_V1) => FrameFormat::V1,
        _ => FrameFormat::V2,
    }
}

/// Reads the frame format of the segment file at `path` from its header.
pub fn file_format(file: &File) -> io::Result<FrameFormat> {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    file.read_exact_at(&mut h, 0)?;
    decode_header(&h).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
    Ok(image_format(&h))
}

/// Suffix of a segment being created; recovery removes leftovers (they never held records).
pub const CREATING_SUFFIX: &str = ".tmp";

/// Creates a segment file atomically: header written and fsynced under a temporary name, then
/// renamed into place and the directory fsynced. A file with a final segment name therefore
/// always had a valid header, so a damaged one is never mistaken for creation debris.
///
/// Callers (`roll`, `reset`) have made every record before `first_lsn` durable, so this also
/// raises the durable-LSN record (`durable.rs`) to `first_lsn - 1`.
pub fn create(dir: &Path, first_lsn: u64) -> io::Result<(File, PathBuf)> {
    let path = dir.join(file_name(first_lsn));
    let tmp = dir.join(format!("{}{CREATING_SUFFIX}", file_name(first_lsn)));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    file.write_all_at(&encode_header(first_lsn), 0)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    super::durable::write(dir, first_lsn.saturating_sub(1))?;
    Ok((file, path))
}

/// Opens an existing segment for appending (read+write; writes use explicit offsets).
pub fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// fsyncs a directory so that creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A record-level defect found while scanning a segment body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defect {
    /// File offset of the first byte that is not part of a valid record.
    pub offset: u64,
    pub reason: String,
    /// True if the defect is a complete, CRC-valid frame with the wrong LSN: never a torn write.
    pub definite: bool,
}

/// Result of scanning the records of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Number of valid, contiguous records found.
    pub records: u64,
    /// LSN of the last valid record, or `first_lsn - 1` if none.
    pub last_lsn: u64,
    /// File offset just past the last valid record.
    pub valid_end: u64,
    /// First defect after the valid prefix, if the segment does not end cleanly.
    pub defect: Option<Defect>,
}

/// Scans a whole segment image (header included) whose first record must have `first_lsn`.
pub fn scan(image: &[u8], first_lsn: u64) -> Scan {
    let format = image_format(image);
    let mut off = SEGMENT_HEADER_LEN.min(image.len());
    let mut expected = first_lsn;
    let mut records = 0u64;
    let defect = loop {
        let rest = &image[off..];
        if rest.is_empty() {
            break None;
        }
        match record::decode(rest, format) {
            // u64::MAX is reserved so `expected + 1` can never overflow on any file content.
            Decoded::Frame(f) if f.lsn == expected && expected < u64::MAX => {
                off += f.len;
                expected += 1;
                records += 1;
            }
            Decoded::Frame(f) => {
                break Some(Defect {
                    offset: off as u64,
                    reason: format!("record has LSN {} but {expected} was expected", f.lsn),
                    definite: true,
                })
            }
            Decoded::Incomplete { needed } => {
                let reason = match needed {
                    Some(n) => format!(
                        "record LSN {expected} needs {n} bytes but only {} remain",
                        rest.len()
                    ),
                    None => format!(
                        "partial record header for LSN {expected} ({} bytes)",
                        rest.len()
                    ),
                };
                break Some(Defect {
                    offset: off as u64,
                    reason,
                    definite: false,
                });
            }
            Decoded::CrcMismatch { lsn } => {
                break Some(Defect {
                    offset: off as u64,
                    reason: format!(
                        "crc mismatch in record expected LSN {expected} (header says {lsn})"
                    ),
                    definite: false,
                })
            }
        }
    };
    Scan {
        records,
        last_lsn: expected - 1,
        valid_end: off as u64,
        defect,
    }
}

/// Looks for a CRC-valid frame starting strictly after `bad_offset` that could follow `last_good_lsn`.
///
/// Used to tell a torn tail (nothing valid after the defect) from mid-log corruption. Candidate
/// LSNs are bounded by how many minimal frames fit in between, which keeps random garbage cheap.
pub fn find_later_frame(image: &[u8], bad_offset: u64, last_good_lsn: u64) -> Option<(u64, u64)> {
    let format = image_format(image);
    let header_len = format.header_len();
    let start = usize::try_from(bad_offset).ok()?.checked_add(1)?;
    let mut off = start;
    while off + header_len <= image.len() {
        let rest = &image[off..];
        if let Some(h) = record::parse_header(rest, format) {
            let max_skipped = (off - start) as u64 / header_len as u64 + 1;
            let plausible = h.lsn > last_good_lsn
                && h.lsn <= last_good_lsn.saturating_add(max_skipped + 1)
                && h.frame_len() <= rest.len() as u64;
            if plausible {
                if let Decoded::Frame(f) = record::decode(rest, format) {
                    return Some((off as u64, f.lsn));
                }
            }
        }
        off += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(first: u64, n: u64) -> Vec<u8> {
        let mut v = encode_header(first).to_vec();
        for lsn in first..first + n {
            record::encode_into(
                &mut v,
                lsn,
                lsn * 10,
                1,
                format!("payload-{lsn}").as_bytes(),
            );
        }
        v
    }

    #[test]
    fn names_roundtrip() {
        assert_eq!(file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_file_name(&file_name(1)), Some(1));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("1.wal"), None);
        assert_eq!(parse_file_name("0000000000000000000x.wal"), None);
        assert_eq!(parse_file_name("00000000000000000001.tmp"), None);
        assert_eq!(parse_file_name("99999999999999999999.wal"), None);
    }

    #[test]
    fn header_roundtrip_and_corruption() {
        let h = encode_header(77);
        assert_eq!(decode_header(&h), Ok(77));
        assert_eq!(decode_header(&h[..10]), Err(HeaderError::Short));
        for i in 0..SEGMENT_HEADER_LEN {
            let mut b = h;
            b[i] ^= 0x10;
            assert!(
                matches!(decode_header(&b), Err(HeaderError::Invalid(_))),
                "byte {i}"
            );
        }
    }

    #[test]
    fn scan_clean_segment() {
        let img = image(5, 3);
        let s = scan(&img, 5);
        assert_eq!((s.records, s.last_lsn, s.defect), (3, 7, None));
        assert_eq!(s.valid_end, img.len() as u64);
    }

    #[test]
    fn scan_stops_at_torn_tail_without_later_frame() {
        let img = image(1, 3);
        let cut = &img[..img.len() - 3];
        let s = scan(cut, 1);
        assert_eq!(s.records, 2);
        let d = s.defect.expect("defect");
        assert!(!d.definite);
        assert_eq!(find_later_frame(cut, d.offset, s.last_lsn), None);
    }

    #[test]
    fn scan_finds_later_frame_after_mid_corruption() {
        let mut img = image(1, 4);
        // Corrupt record 2's length field so the scanner cannot skip it.
        let off2 = SEGMENT_HEADER_LEN + record::frame_len("payload-1".len());
        img[off2] ^= 0x55;
        let s = scan(&img, 1);
        assert_eq!(s.records, 1);
        let d = s.defect.expect("defect");
        let (_, lsn) = find_later_frame(&img, d.offset, s.last_lsn).expect("later frame");
        assert_eq!(lsn, 3);
    }

    #[test]
    fn version_1_segments_scan_with_v1_frames() {
        let mut img = encode_header(3).to_vec();
        img[4..6].copy_from_slice(&FORMAT_VERSION_V1.to_le_bytes());
        let crc = crc32c::crc32c(&img[0..16]);
        img[16..20].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_header(&img), Ok(3));
        assert_eq!(image_format(&img), FrameFormat::V1);
        record::encode_v1_into(&mut img, 3, 30, b"x");
        record::encode_v1_into(&mut img, 4, 40, b"y");
        let s = scan(&img, 3);
        assert_eq!((s.records, s.last_lsn, s.defect), (2, 4, None));
        assert_eq!(image_format(&encode_header(1)), FrameFormat::V2);
    }

    #[test]
    fn wrong_lsn_is_definite() {
        let mut img = encode_header(1).to_vec();
        record::encode_into(&mut img, 1, 0, 1, b"a");
        record::encode_into(&mut img, 3, 0, 1, b"b");
        let s = scan(&img, 1);
        assert!(s.defect.expect("defect").definite);
    }
}
