//! Tests of the epoch-era WAL: reading version-1 segments, rolling to version 2, truncation and the
//! durable LSN.

use std::path::Path;

use super::record::{self, FrameFormat};
use super::segment::{self, FORMAT_VERSION_V1, SEGMENT_HEADER_LEN};
use super::*;

fn opts() -> WalOptions {
    WalOptions { segment_size: 300 }
}

fn read_all(wal: &Wal, from: u64) -> Vec<Record> {
    let mut r = wal.reader(from).expect("reader");
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().expect("next") {
        out.push(rec);
    }
    out
}

/// Writes a version-1 segment (pre-epoch format) holding LSNs `first..first + n`.
fn write_v1_segment(dir: &Path, first: u64, n: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut img = segment::encode_header(first).to_vec();
    img[4..6].copy_from_slice(&FORMAT_VERSION_V1.to_le_bytes());
    let crc = crc32c::crc32c(&img[0..16]);
    img[16..20].copy_from_slice(&crc.to_le_bytes());
    for lsn in first..first + n {
        record::encode_v1_into(&mut img, lsn, lsn * 10, format!("v1-{lsn}").as_bytes());
    }
    std::fs::write(dir.join(segment::file_name(first)), img).unwrap();
}

fn format_of(dir: &Path, first: u64) -> FrameFormat {
    let f = std::fs::File::open(dir.join(segment::file_name(first))).unwrap();
    segment::file_format(&f).unwrap()
}

#[test]
fn version_1_segments_open_read_as_epoch_0_and_appends_roll_to_version_2() {
    let d = tempfile::tempdir().unwrap();
    write_v1_segment(d.path(), 1, 3);
    let (wal, report) = Wal::open(d.path(), opts()).unwrap();
    assert_eq!((report.records, report.last_lsn), (3, 3));
    let old = read_all(&wal, 1);
    assert_eq!(
        old.iter().map(|r| (r.lsn, r.epoch)).collect::<Vec<_>>(),
        vec![(1, 0), (2, 0), (3, 0)]
    );
    assert_eq!(&old[2].payload[..], b"v1-3");
    // The next record carries an epoch: it cannot go into the v1 segment.
    wal.append_record(4, 40, 77, b"v2-4").unwrap();
    wal.sync().unwrap();
    wal.publish(4);
    assert_eq!(format_of(d.path(), 1), FrameFormat::V1);
    assert_eq!(format_of(d.path(), 4), FrameFormat::V2);
    drop(wal);
    let (wal, report) = Wal::open(d.path(), opts()).unwrap();
    assert_eq!(report.last_lsn, 4);
    let all = read_all(&wal, 1);
    assert_eq!(
        all.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        vec![0, 0, 0, 77]
    );
}

#[test]
fn an_empty_version_1_segment_is_recreated_as_version_2() {
    let d = tempfile::tempdir().unwrap();
    write_v1_segment(d.path(), 5, 0);
    let (wal, report) = Wal::open(d.path(), opts()).unwrap();
    assert_eq!(report.last_lsn, 4);
    wal.append_record(5, 50, 3, b"x").unwrap();
    wal.publish(5);
    assert_eq!(format_of(d.path(), 5), FrameFormat::V2);
    assert_eq!(wal.segments().len(), 1);
    assert_eq!(read_all(&wal, 5)[0].epoch, 3);
}

#[test]
fn truncate_after_cuts_across_segments_and_survives_reopen() {
    let d = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(d.path(), opts()).unwrap();
    for lsn in 1..=40u64 {
        let epoch = if lsn <= 20 { 5 } else { 9 };
        wal.append_record(lsn, lsn, epoch, format!("r{lsn}").as_bytes())
            .unwrap();
    }
    wal.sync().unwrap();
    wal.publish(40);
    assert!(wal.segments().len() > 3);
    assert_eq!(wal.truncate_after(12).unwrap(), 28);
    assert_eq!(
        (wal.last_lsn(), wal.published_lsn(), wal.durable_lsn()),
        (12, 12, 12)
    );
    assert_eq!(read_all(&wal, 1).len(), 12);
    assert!(wal.segments().iter().all(|s| s.first_lsn <= 12));
    // The log continues at 13 with another history.
    wal.append_record(13, 13, 11, b"new-13").unwrap();
    wal.sync().unwrap();
    wal.publish(13);
    drop(wal);
    let (wal, report) = Wal::open(d.path(), opts()).unwrap();
    assert_eq!((report.last_lsn, report.truncated_bytes), (13, 0));
    let recs = read_all(&wal, 12);
    assert_eq!(
        recs.iter().map(|r| (r.lsn, r.epoch)).collect::<Vec<_>>(),
        vec![(12, 5), (13, 11)]
    );
    assert_eq!(&recs[1].payload[..], b"new-13");
    // Truncating at a segment boundary and to nothing.
    let first_of_last = wal.segments().last().unwrap().first_lsn;
    wal.truncate_after(first_of_last - 1).unwrap();
    assert_eq!(wal.last_lsn(), first_of_last - 1);
    assert_eq!(wal.truncate_after(0).unwrap(), first_of_last - 1);
    assert_eq!((wal.last_lsn(), wal.first_lsn()), (0, None));
    wal.append_record(1, 1, 12, b"again").unwrap();
    assert_eq!(wal.last_lsn(), 1);
    assert!(
        std::fs::metadata(d.path().join(segment::file_name(1)))
            .unwrap()
            .len()
            > SEGMENT_HEADER_LEN as u64
    );
}

#[test]
fn truncating_below_the_oldest_segment_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(d.path(), opts()).unwrap();
    wal.reset(10).unwrap();
    for lsn in 10..=15u64 {
        wal.append_record(lsn, lsn, 1, b"r").unwrap();
    }
    wal.publish(15);
    assert!(matches!(
        wal.truncate_after(5),
        Err(WalError::Trimmed { .. })
    ));
    assert_eq!(wal.truncate_after(9).unwrap(), 6);
    assert_eq!(wal.last_lsn(), 9);
}

#[test]
fn durable_lsn_follows_fsyncs_and_wakes_subscribers() {
    let d = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(d.path(), opts()).unwrap();
    let mut rx = wal.subscribe_durable();
    wal.append_record(1, 1, 1, b"a").unwrap();
    wal.append_record(2, 2, 1, b"b").unwrap();
    wal.publish(2);
    assert_eq!(
        wal.durable_lsn(),
        0,
        "appended and visible, not yet durable"
    );
    wal.sync().unwrap();
    assert_eq!(wal.durable_lsn(), 2);
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 2);
}
