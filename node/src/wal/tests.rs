//! Behavioural tests of the WAL through its public API plus direct file damage.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::segment::SEGMENT_HEADER_LEN;
use super::*;

fn tiny() -> WalOptions {
    WalOptions { segment_size: 200 }
}

fn payload(lsn: u64) -> Vec<u8> {
    format!("payload-{lsn}-{}", "x".repeat((lsn % 13) as usize)).into_bytes()
}

fn open(dir: &Path) -> (Wal, RecoveryReport) {
    Wal::open(dir, tiny()).expect("open")
}

/// Appends LSNs `from..=to` with deterministic payloads and publishes them.
fn fill(wal: &Wal, from: u64, to: u64) {
    for lsn in from..=to {
        wal.append(lsn, lsn * 100, &payload(lsn)).expect("append");
    }
    wal.sync().expect("sync");
    wal.publish(to);
}

fn read_all(wal: &Wal, from: u64) -> Vec<Record> {
    let mut r = wal.reader(from).expect("reader");
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().expect("next") {
        out.push(rec);
    }
    out
}

fn check_records(recs: &[Record], from: u64, to: u64) {
    let lsns: Vec<u64> = recs.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (from..=to).collect::<Vec<_>>());
    for r in recs {
        assert_eq!(r.hlc, r.lsn * 100);
        assert_eq!(&r.payload[..], &payload(r.lsn)[..]);
    }
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// Byte offsets (start, end) of every frame in a segment file.
fn frame_offsets(path: &Path) -> Vec<(u64, u64)> {
    let data = std::fs::read(path).expect("read");
    let mut off = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    while let Some(record::Decoded::Frame(f)) = data
        .get(off..)
        .map(|b| record::decode(b, super::segment::image_format(&data)))
    {
        out.push((off as u64, (off + f.len) as u64));
        off += f.len;
    }
    out
}

fn flip_byte(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).expect("read");
    b[0] ^= 0xA5;
    f.write_all_at(&b, offset).expect("write");
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open")
        .set_len(len)
        .expect("set_len");
}

fn assert_corrupt(dir: &Path) -> (String, u64, String) {
    match Wal::open(dir, tiny()) {
        Err(WalError::Corrupt {
            segment,
            offset,
            reason,
        }) => (segment, offset, reason),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok((w, r)) => panic!(
            "expected Corrupt, opened with last {} report {r:?}",
            w.last_lsn()
        ),
    }
}

#[test]
fn empty_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, rep) = open(dir.path());
    assert_eq!(rep.segments, 0);
    assert_eq!(rep.first_lsn, None);
    assert_eq!(wal.last_lsn(), 0);
    assert_eq!(wal.published_lsn(), 0);
    assert_eq!(wal.first_lsn(), None);
    assert!(wal.segments().is_empty());
    wal.sync().expect("sync on empty log");
    let mut r = wal.reader(0).expect("reader");
    assert_eq!(r.next_lsn(), 1);
    assert!(r.next_record().expect("next").is_none());
}

#[test]
fn out_of_sequence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    assert!(matches!(
        wal.append(2, 0, b"x"),
        Err(WalError::OutOfSequence {
            expected: 1,
            got: 2
        })
    ));
    assert!(matches!(
        wal.append(0, 0, b"x"),
        Err(WalError::OutOfSequence {
            expected: 1,
            got: 0
        })
    ));
    wal.append(1, 0, b"x").expect("append 1");
    assert!(matches!(
        wal.append(1, 0, b"x"),
        Err(WalError::OutOfSequence {
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        wal.append(3, 0, b"x"),
        Err(WalError::OutOfSequence {
            expected: 2,
            got: 3
        })
    ));
    assert_eq!(wal.last_lsn(), 1);
}

#[test]
fn append_reopen_read_across_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 50);
        let segs = wal.segments();
        assert!(
            segs.len() > 5,
            "expected several segments, got {}",
            segs.len()
        );
        for pair in segs.windows(2) {
            assert_eq!(pair[0].last_lsn + 1, pair[1].first_lsn);
        }
        assert_eq!(segs[0].first_lsn, 1);
        assert_eq!(segs.last().map(|s| s.last_lsn), Some(50));
        for s in &segs {
            assert!(
                s.size_bytes <= 200,
                "segment {} too big: {}",
                s.file_name,
                s.size_bytes
            );
            assert_eq!(s.file_name, segment::file_name(s.first_lsn));
        }
        check_records(&read_all(&wal, 0), 1, 50);
    }
    let (wal, rep) = open(dir.path());
    assert_eq!(rep.records, 50);
    assert_eq!(rep.last_lsn, 50);
    assert_eq!(rep.first_lsn, Some(1));
    assert_eq!(rep.truncated_bytes, 0);
    assert_eq!(wal.last_lsn(), 50);
    assert_eq!(wal.published_lsn(), 50);
    check_records(&read_all(&wal, 1), 1, 50);
    fill(&wal, 51, 60);
    check_records(&read_all(&wal, 0), 1, 60);
}

#[test]
fn oversized_record_goes_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    wal.append(1, 0, b"small").expect("1");
    wal.append(2, 0, &[7u8; 1000]).expect("2");
    wal.append(3, 0, b"small").expect("3");
    wal.publish(3);
    let segs = wal.segments();
    assert_eq!(segs.len(), 3);
    assert_eq!((segs[1].first_lsn, segs[1].last_lsn), (2, 2));
    let recs = read_all(&wal, 1);
    assert_eq!(recs[1].payload.len(), 1000);
    drop(wal);
    let (wal, rep) = open(dir.path());
    assert_eq!(rep.records, 3);
    assert_eq!(read_all(&wal, 2).len(), 2);
}

#[test]
fn reader_from_every_lsn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    fill(&wal, 1, 40);
    for from in 1..=40 {
        check_records(&read_all(&wal, from), from, 40);
    }
    // Past the end: nothing yet, then exactly from that LSN once it exists.
    let mut r = wal.reader(43).expect("reader");
    assert!(r.next_record().expect("next").is_none());
    fill(&wal, 41, 45);
    let got: Vec<u64> = std::iter::from_fn(|| r.next_record().expect("next"))
        .map(|r| r.lsn)
        .collect();
    assert_eq!(got, vec![43, 44, 45]);
}

#[test]
fn reader_continues_after_appends_and_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    let mut r = wal.reader(0).expect("reader");
    let mut got = Vec::new();
    for batch in 0..20u64 {
        let from = batch * 3 + 1;
        fill(&wal, from, from + 2);
        while let Some(rec) = r.next_record().expect("next") {
            got.push(rec);
        }
        assert!(r.next_record().expect("caught up").is_none());
    }
    check_records(&got, 1, 60);
    assert_eq!(r.next_lsn(), 61);
}

#[test]
fn reader_does_not_see_unpublished() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    for lsn in 1..=10 {
        wal.append(lsn, lsn * 100, &payload(lsn)).expect("append");
    }
    let mut r = wal.reader(1).expect("reader");
    assert!(r.next_record().expect("next").is_none());
    wal.publish(4);
    let got: Vec<u64> = std::iter::from_fn(|| r.next_record().expect("next"))
        .map(|r| r.lsn)
        .collect();
    assert_eq!(got, vec![1, 2, 3, 4]);
    // Publishing backwards or beyond the end does not regress or overshoot.
    wal.publish(2);
    assert_eq!(wal.published_lsn(), 4);
    wal.publish(99);
    assert_eq!(wal.published_lsn(), 10);
    let got: Vec<u64> = std::iter::from_fn(|| r.next_record().expect("next"))
        .map(|r| r.lsn)
        .collect();
    assert_eq!(got, (5..=10).collect::<Vec<_>>());
}

#[test]
fn wait_published_wakes_and_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    let start = Instant::now();
    assert_eq!(wal.wait_published(0, Duration::from_millis(50)), 0);
    assert!(start.elapsed() >= Duration::from_millis(50));

    let w2 = wal.clone();
    let waiter = thread::spawn(move || {
        let t = Instant::now();
        let p = w2.wait_published(0, Duration::from_secs(10));
        (p, t.elapsed())
    });
    thread::sleep(Duration::from_millis(50));
    wal.append(1, 0, b"a").expect("append");
    wal.publish(1);
    let (p, waited) = waiter.join().expect("join");
    assert_eq!(p, 1);
    assert!(waited < Duration::from_secs(5));
    // Already satisfied: returns immediately.
    assert_eq!(wal.wait_published(0, Duration::from_secs(10)), 1);
}

#[test]
fn concurrent_reader_streams_while_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    const N: u64 = 2000;
    let w2 = wal.clone();
    let reader = thread::spawn(move || {
        let mut r = w2.reader(1).expect("reader");
        let mut got = Vec::new();
        while got.len() < N as usize {
            match r.next_record().expect("next") {
                Some(rec) => got.push(rec),
                None => {
                    w2.wait_published(r.next_lsn() - 1, Duration::from_millis(100));
                }
            }
        }
        got
    });
    for lsn in 1..=N {
        wal.append(lsn, lsn * 100, &payload(lsn)).expect("append");
        if lsn % 7 == 0 || lsn == N {
            wal.publish(lsn);
        }
    }
    let got = reader.join().expect("join");
    check_records(&got, 1, N);
}

#[test]
fn trimmed_after_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    fill(&wal, 1, 50);
    let before = wal.segments();
    let keep_all = RetentionPolicy::default();
    assert_eq!(wal.retain(50, &keep_all).expect("retain"), 0);
    let drop_all = RetentionPolicy {
        max_bytes: Some(0),
        max_age: None,
    };
    let n = wal.retain(50, &drop_all).expect("retain");
    assert_eq!(n, before.len() - 1, "all but the active segment");
    let first = wal.first_lsn().expect("first");
    assert_eq!(first, before.last().map(|s| s.first_lsn).unwrap_or(0));
    assert_eq!(segment_paths(dir.path()).len(), 1);
    match wal.reader(1) {
        Err(WalError::Trimmed { requested, oldest }) => {
            assert_eq!((requested, oldest), (1, first));
        }
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("expected Trimmed"),
    }
    assert!(matches!(wal.reader(0), Err(WalError::Trimmed { .. })));
    check_records(&read_all(&wal, first), first, 50);
    drop(wal);
    let (wal, rep) = open(dir.path());
    assert_eq!(rep.first_lsn, Some(first));
    assert_eq!(wal.first_lsn(), Some(first));
    fill(&wal, 51, 55);
    check_records(&read_all(&wal, first), first, 55);
}

#[test]
fn retention_respects_checkpoint_bytes_and_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    fill(&wal, 1, 50);
    let segs = wal.segments();
    let all = RetentionPolicy {
        max_bytes: Some(0),
        max_age: None,
    };
    // Checkpoint below the end of the first segment: nothing deletable.
    assert_eq!(wal.retain(segs[0].last_lsn - 1, &all).expect("retain"), 0);
    // Checkpoint covering exactly the first two segments.
    assert_eq!(wal.retain(segs[1].last_lsn, &all).expect("retain"), 2);
    assert_eq!(wal.first_lsn(), Some(segs[2].first_lsn));
    // Under the byte budget: keep.
    let big = RetentionPolicy {
        max_bytes: Some(1 << 30),
        max_age: None,
    };
    assert_eq!(wal.retain(50, &big).expect("retain"), 0);
    // Byte budget: drop only until under it.
    let total: u64 = wal.segments().iter().map(|s| s.size_bytes).sum();
    let budget = total - segs[2].size_bytes; // dropping one segment suffices
    let some = RetentionPolicy {
        max_bytes: Some(budget),
        max_age: None,
    };
    assert_eq!(wal.retain(50, &some).expect("retain"), 1);
    // Age: young segments stay, an age of zero drops everything eligible.
    let old = RetentionPolicy {
        max_bytes: None,
        max_age: Some(Duration::from_secs(3600)),
    };
    assert_eq!(wal.retain(50, &old).expect("retain"), 0);
    let zero_age = RetentionPolicy {
        max_bytes: None,
        max_age: Some(Duration::ZERO),
    };
    let left = wal.segments().len();
    assert_eq!(wal.retain(50, &zero_age).expect("retain"), left - 1);
}

#[test]
fn retention_never_deletes_pinned_or_active() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    fill(&wal, 1, 50);
    let segs = wal.segments();
    let all = RetentionPolicy {
        max_bytes: Some(0),
        max_age: None,
    };
    // A reader positioned inside segment 3 pins segments 3.. (not 1 and 2).
    let pinned_lsn = segs[2].first_lsn + 1;
    let mut r = wal.reader(pinned_lsn).expect("reader");
    assert_eq!(wal.retain(50, &all).expect("retain"), 2);
    assert_eq!(wal.first_lsn(), Some(segs[2].first_lsn));
    // Reader still works after retention ran and after it advances.
    let first = r.next_record().expect("next").expect("record");
    assert_eq!(first.lsn, pinned_lsn);
    // A reader that has not started yet pins its start LSN too.
    let r2 = wal.reader(segs[3].first_lsn).expect("reader2");
    drop(r);
    assert_eq!(wal.retain(50, &all).expect("retain"), 1);
    assert_eq!(wal.first_lsn(), Some(segs[3].first_lsn));
    drop(r2);
    // Nothing pinned: everything but the active segment goes; the active one never does.
    let n = wal.retain(u64::MAX, &all).expect("retain");
    assert_eq!(n, segs.len() - 4);
    assert_eq!(wal.segments().len(), 1);
    assert_eq!(wal.retain(u64::MAX, &all).expect("retain"), 0);
    assert_eq!(wal.segments().len(), 1);
    // Records not covered by the checkpoint are never dropped.
    fill(&wal, 51, 80);
    let segs = wal.segments();
    assert_eq!(wal.retain(segs[0].last_lsn - 1, &all).expect("retain"), 0);
}

#[test]
fn reader_advancing_releases_pin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    fill(&wal, 1, 50);
    let segs = wal.segments();
    let mut r = wal.reader(1).expect("reader");
    let all = RetentionPolicy {
        max_bytes: Some(0),
        max_age: None,
    };
    assert_eq!(wal.retain(50, &all).expect("retain"), 0);
    // Read into the third segment: the first two are released.
    while r.next_lsn() <= segs[2].first_lsn {
        r.next_record().expect("next").expect("record");
    }
    assert_eq!(wal.retain(50, &all).expect("retain"), 2);
    let rest: Vec<u64> = std::iter::from_fn(|| r.next_record().expect("next"))
        .map(|r| r.lsn)
        .collect();
    assert_eq!(rest, ((segs[2].first_lsn + 1)..=50).collect::<Vec<_>>());
}

#[test]
fn torn_tail_every_byte_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 20);
    }
    let last_seg = segment_paths(dir.path()).pop().expect("segments");
    let frames = frame_offsets(&last_seg);
    let (start, end) = *frames.last().expect("frames");
    let pristine = std::fs::read(&last_seg).expect("read");
    for cut in start..end {
        std::fs::write(&last_seg, &pristine[..cut as usize]).expect("write");
        let (wal, rep) = open(dir.path());
        assert_eq!(wal.last_lsn(), 19, "cut at {cut}");
        assert_eq!(rep.truncated_bytes, cut - start, "cut at {cut}");
        if cut > start {
            assert!(rep.truncated_segment.is_some());
        }
        check_records(&read_all(&wal, 1), 1, 19);
        assert_eq!(std::fs::metadata(&last_seg).expect("meta").len(), start);
        drop(wal);
    }
    // Append after repair continues at the right LSN and survives reopen.
    let (wal, _) = open(dir.path());
    fill(&wal, 20, 30);
    drop(wal);
    let (wal, rep) = open(dir.path());
    assert_eq!(rep.truncated_bytes, 0);
    check_records(&read_all(&wal, 1), 1, 30);
}

#[test]
fn torn_tail_flipped_byte_in_last_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 20);
    }
    let last_seg = segment_paths(dir.path()).pop().expect("segments");
    let (start, end) = *frame_offsets(&last_seg).last().expect("frames");
    let pristine = std::fs::read(&last_seg).expect("read");
    for off in start..end {
        std::fs::write(&last_seg, &pristine).expect("restore");
        flip_byte(&last_seg, off);
        let (wal, rep) = open(dir.path());
        assert_eq!(wal.last_lsn(), 19, "flip at {off}");
        assert_eq!(rep.truncated_bytes, end - start, "flip at {off}");
        drop(wal);
    }
}

#[test]
fn garbage_and_zeros_after_last_record_are_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 20);
    }
    let last_seg = segment_paths(dir.path()).pop().expect("segments");
    let len = std::fs::metadata(&last_seg).expect("meta").len();
    let f = OpenOptions::new()
        .write(true)
        .open(&last_seg)
        .expect("open");
    f.write_all_at(&[0u8; 4096], len).expect("zeros");
    drop(f);
    let (wal, rep) = open(dir.path());
    assert_eq!((wal.last_lsn(), rep.truncated_bytes), (20, 4096));
    drop(wal);

    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let junk: Vec<u8> = (0..777).map(|_| rng.gen()).collect();
    let f = OpenOptions::new()
        .write(true)
        .open(&last_seg)
        .expect("open");
    f.write_all_at(&junk, len).expect("junk");
    drop(f);
    let (wal, rep) = open(dir.path());
    assert_eq!((wal.last_lsn(), rep.truncated_bytes), (20, 777));
    check_records(&read_all(&wal, 1), 1, 20);
}

#[test]
fn damaged_last_segment_header_is_corrupt_but_creation_leftovers_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 20);
    }
    // Segments are created atomically: a final-named one with a partial or zeroed header is
    // damage (it used to be deleted as "torn during creation").
    let torn = dir.path().join(segment::file_name(21));
    for bad in [
        segment::encode_header(21)[..7].to_vec(),
        vec![0u8; SEGMENT_HEADER_LEN],
    ] {
        std::fs::write(&torn, &bad).expect("write");
        let err = Wal::open(dir.path(), tiny()).expect_err("must refuse");
        assert!(
            matches!(&err, WalError::Corrupt { segment, .. } if segment == &segment::file_name(21)),
            "{err}"
        );
        assert_eq!(std::fs::read(&torn).expect("kept"), bad, "left untouched");
    }
    std::fs::remove_file(&torn).expect("rm");
    // An interrupted creation leaves only `*.wal.tmp`: removed, nothing lost.
    let tmp = dir.path().join(format!("{}.tmp", segment::file_name(21)));
    std::fs::write(&tmp, [0u8; 3]).expect("write");
    let (wal, _) = open(dir.path());
    assert_eq!(wal.last_lsn(), 20);
    assert!(!tmp.exists());
    drop(wal);
    // Header-only segment is kept and the next append goes into it.
    std::fs::write(&torn, segment::encode_header(21)).expect("write");
    let (wal, rep) = open(dir.path());
    assert_eq!((wal.last_lsn(), rep.truncated_bytes), (20, 0));
    fill(&wal, 21, 21);
    assert_eq!(wal.segments().last().map(|s| s.first_lsn), Some(21));
    check_records(&read_all(&wal, 1), 1, 21);
}

/// The "37 acknowledged writes vanish" case: a whole last segment zeroed, longer than its header.
#[test]
fn zeroed_last_segment_with_data_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 40);
    }
    let last = segment_paths(dir.path()).pop().expect("segment");
    let len = std::fs::metadata(&last).expect("meta").len();
    assert!(len > SEGMENT_HEADER_LEN as u64);
    std::fs::write(&last, vec![0u8; len as usize]).expect("zero");
    let err = Wal::open(dir.path(), tiny()).expect_err("must refuse");
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
    assert_eq!(std::fs::metadata(&last).expect("kept").len(), len);
}

/// Records below the durable bound (written at roll and clean close) are never truncated away.
#[test]
fn data_lost_below_the_durable_bound_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 30);
        wal.close().expect("close");
    }
    assert_eq!(durable::read(dir.path()).expect("durable"), 30);
    let last = segment_paths(dir.path()).pop().expect("segment");
    let len = std::fs::metadata(&last).expect("meta").len();
    // zeroed data after a valid header: looks like a torn tail, but it was durable
    let img = std::fs::read(&last).expect("read");
    let mut zeroed = img.clone();
    zeroed[SEGMENT_HEADER_LEN..].fill(0);
    std::fs::write(&last, &zeroed).expect("write");
    let err = Wal::open(dir.path(), tiny()).expect_err("zeroed data must be refused");
    assert!(err.to_string().contains("durable"), "{err}");
    // truncated at a record boundary (no defect at all): still fewer records than durable
    std::fs::write(&last, &img[..SEGMENT_HEADER_LEN]).expect("write");
    let err = Wal::open(dir.path(), tiny()).expect_err("truncation must be refused");
    assert!(err.to_string().contains("durable"), "{err}");
    // a missing last segment too
    std::fs::remove_file(&last).expect("rm");
    assert!(Wal::open(dir.path(), tiny()).is_err());
    std::fs::write(&last, &img).expect("restore");
    assert_eq!(std::fs::metadata(&last).expect("meta").len(), len);
    let (wal, _) = open(dir.path());
    assert_eq!(wal.last_lsn(), 30);
    // A torn tail past the bound (a crash after more appends, no close) is still repaired.
    fill(&wal, 31, 33);
    drop(wal);
    let last = segment_paths(dir.path()).pop().expect("segment");
    let l = std::fs::metadata(&last).expect("meta").len();
    set_len(&last, l - 3);
    let (wal, rep) = open(dir.path());
    assert_eq!(wal.last_lsn(), 32);
    assert!(rep.truncated_bytes > 0);
}

/// `inspect` scans without changing a byte; `--repair` truncates a torn tail only.
#[test]
fn read_only_scan_reports_and_repair_truncates() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 25);
    }
    let last = segment_paths(dir.path()).pop().expect("segment");
    let l = std::fs::metadata(&last).expect("meta").len();
    set_len(&last, l - 2);
    let before = std::fs::read(&last).expect("read");
    let (rep, segs) = inspect(dir.path(), false).expect("inspect");
    assert_eq!(rep.last_lsn, 24);
    assert_eq!(rep.truncated_bytes, 0);
    assert!(rep.torn_tail.is_some());
    assert!(!segs.is_empty());
    assert_eq!(std::fs::read(&last).expect("read"), before);
    let (rep, _) = inspect(dir.path(), true).expect("repair");
    assert!(rep.truncated_bytes > 0);
    assert!(std::fs::metadata(&last).expect("meta").len() < l - 2);
    let missing = dir.path().join("nope");
    assert_eq!(inspect(&missing, false).expect("empty").0.last_lsn, 0);
    assert!(!missing.exists());
}

#[test]
fn only_segment_with_all_records_torn_keeps_next_lsn() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 30);
        let all = RetentionPolicy {
            max_bytes: Some(0),
            max_age: None,
        };
        wal.retain(30, &all).expect("retain");
        assert_eq!(wal.segments().len(), 1);
    }
    let seg = segment_paths(dir.path()).pop().expect("segment");
    let first = segment::parse_file_name(seg.file_name().and_then(|n| n.to_str()).expect("name"))
        .expect("lsn");
    // Tear the first record of the only remaining segment.
    set_len(&seg, SEGMENT_HEADER_LEN as u64 + 5);
    let (wal, rep) = open(dir.path());
    assert_eq!(wal.last_lsn(), first - 1);
    assert_eq!(wal.first_lsn(), None);
    assert_eq!(rep.records, 0);
    assert!(matches!(
        wal.append(1, 0, b"x"),
        Err(WalError::OutOfSequence { .. })
    ));
    fill(&wal, first, first + 2);
    check_records(&read_all(&wal, first), first, first + 2);
}

#[test]
fn mid_segment_corruption_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        let mut lsn = 0;
        // Grow until the last segment holds at least three records.
        while wal
            .segments()
            .last()
            .is_none_or(|s| s.last_lsn < s.first_lsn + 2)
            || lsn < 10
        {
            lsn += 1;
            fill(&wal, lsn, lsn);
        }
    }
    let last_seg = segment_paths(dir.path()).pop().expect("segments");
    let frames = frame_offsets(&last_seg);
    assert!(frames.len() >= 3, "need three records in the last segment");
    let pristine = std::fs::read(&last_seg).expect("read");
    let (start, end) = frames[frames.len() - 2];
    // Every single-byte flip in a record followed by a good record is corruption.
    for off in start..end {
        std::fs::write(&last_seg, &pristine).expect("restore");
        flip_byte(&last_seg, off);
        let (seg, offset, _) = assert_corrupt(dir.path());
        assert_eq!(offset, start, "flip at {off}");
        assert!(last_seg.ends_with(&seg));
    }
    // Zeroing a middle record is corruption too.
    std::fs::write(&last_seg, &pristine).expect("restore");
    let f = OpenOptions::new()
        .write(true)
        .open(&last_seg)
        .expect("open");
    f.write_all_at(&vec![0u8; (end - start) as usize], start)
        .expect("zero");
    drop(f);
    assert_corrupt(dir.path());
}

#[test]
fn corruption_in_non_last_segment_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 30);
    }
    let paths = segment_paths(dir.path());
    let victim = &paths[1];
    let pristine = std::fs::read(victim).expect("read");
    // Torn tail in a sealed segment.
    let (start, end) = *frame_offsets(victim).last().expect("frames");
    set_len(victim, end - 1);
    let (_, offset, _) = assert_corrupt(dir.path());
    assert_eq!(offset, start);
    // Bad header.
    std::fs::write(victim, &pristine).expect("restore");
    flip_byte(victim, 2);
    let (seg, offset, _) = assert_corrupt(dir.path());
    assert_eq!((offset, victim.ends_with(&seg)), (0, true));
    // Header-only (empty) sealed segment.
    std::fs::write(victim, &pristine[..SEGMENT_HEADER_LEN]).expect("write");
    assert_corrupt(dir.path());
    std::fs::write(victim, &pristine).expect("restore");
    assert_eq!(open(dir.path()).0.last_lsn(), 30);
}

#[test]
fn missing_middle_segment_is_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 30);
    }
    let paths = segment_paths(dir.path());
    std::fs::remove_file(&paths[2]).expect("remove");
    let (seg, _, reason) = assert_corrupt(dir.path());
    assert!(paths[3].ends_with(&seg), "{seg}");
    assert!(reason.contains("gap"), "{reason}");
}

#[test]
fn header_name_mismatch_and_bad_last_header_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 30);
    }
    let last = segment_paths(dir.path()).pop().expect("segments");
    let pristine = std::fs::read(&last).expect("read");
    // A bad header on a last segment that has records is not a creation tear.
    flip_byte(&last, 0);
    assert_corrupt(dir.path());
    std::fs::write(&last, &pristine).expect("restore");
    // Rename a segment so its name disagrees with its header.
    let renamed = dir.path().join(segment::file_name(1000));
    std::fs::rename(&last, &renamed).expect("rename");
    assert_corrupt(dir.path());
}

#[test]
fn foreign_files_are_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = open(dir.path());
        fill(&wal, 1, 5);
    }
    std::fs::write(dir.path().join("README"), b"hello").expect("write");
    std::fs::write(dir.path().join("1.wal"), b"junk").expect("write");
    let (wal, _) = open(dir.path());
    assert_eq!(wal.last_lsn(), 5);
}

#[test]
fn random_file_contents_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for round in 0..200 {
        let dir = tempfile::tempdir().expect("tempdir");
        let nseg = rng.gen_range(1..4);
        for i in 0..nseg {
            let first = 1 + i * 3;
            let mut data = Vec::new();
            if rng.gen_bool(0.7) {
                data.extend_from_slice(&segment::encode_header(first));
            }
            if rng.gen_bool(0.5) {
                for lsn in first..first + 3 {
                    record::encode_into(&mut data, lsn, 0, 0, b"ok");
                }
            }
            let n = rng.gen_range(0..300);
            data.extend((0..n).map(|_| rng.gen::<u8>()));
            if rng.gen_bool(0.3) && !data.is_empty() {
                let i = rng.gen_range(0..data.len());
                data[i] ^= rng.gen::<u8>() | 1;
            }
            std::fs::write(dir.path().join(segment::file_name(first)), &data).expect("write");
        }
        // Must not panic; on success the log must be readable end to end.
        if let Ok((wal, _)) = Wal::open(dir.path(), tiny()) {
            let last = wal.last_lsn();
            let first = wal.first_lsn().unwrap_or(last + 1);
            let n = read_all(&wal, first).len() as u64;
            assert_eq!(n, last + 1 - first, "round {round}");
            wal.append(last + 1, 0, b"after")
                .expect("append after open");
        }
    }
}

mod model {
    //! Random appends, reopens and tail truncations checked against a `Vec` model.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<u8>),
        Sync,
        Reopen,
        /// Crash: cut `n` bytes off the end of the last segment (unsynced data may vanish).
        TruncateTail(u16),
        Retain(u8),
        ReadFrom(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Op::Append),
            1 => Just(Op::Sync),
            1 => Just(Op::Reopen),
            1 => any::<u16>().prop_map(Op::TruncateTail),
            1 => any::<u8>().prop_map(Op::Retain),
            2 => any::<u8>().prop_map(Op::ReadFrom),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn wal_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let opts = WalOptions { segment_size: 256 };
            let (mut wal, _) = Wal::open(dir.path(), opts.clone()).expect("open");
            // model[i] is the payload of LSN first + i.
            let mut model: Vec<Vec<u8>> = Vec::new();
            let mut first = 1u64;
            for op in ops {
                match op {
                    Op::Append(p) => {
                        let lsn = first + model.len() as u64;
                        wal.append(lsn, lsn ^ 0xABCD, &p).expect("append");
                        wal.publish(lsn);
                        model.push(p);
                    }
                    Op::Sync => wal.sync().expect("sync"),
                    Op::Reopen => {
                        drop(wal);
                        wal = Wal::open(dir.path(), opts.clone()).expect("reopen").0;
                    }
                    Op::TruncateTail(n) => {
                        drop(wal);
                        let last = segment_paths(dir.path()).pop();
                        if let Some(last) = last {
                            let len = std::fs::metadata(&last).expect("meta").len();
                            // Headers are fsynced at creation, so a crash never tears them.
                            let body = len - SEGMENT_HEADER_LEN as u64;
                            let cut = u64::from(n) % (body + 1);
                            set_len(&last, len - cut);
                            // Records whose frames are cut at all are lost.
                            let frames = frame_offsets(&last);
                            let seg_first: u64 = segment::parse_file_name(
                                last.file_name().and_then(|n| n.to_str()).expect("name"),
                            ).expect("lsn");
                            let kept = frames.iter().filter(|(_, e)| *e <= len - cut).count() as u64;
                            let keep_total = (seg_first + kept).saturating_sub(first);
                            model.truncate(keep_total as usize);
                        }
                        let (w, rep) = Wal::open(dir.path(), opts.clone()).expect("open after truncation");
                        prop_assert_eq!(rep.last_lsn, first + model.len() as u64 - 1);
                        wal = w;
                    }
                    Op::Retain(k) => {
                        let last = first + model.len() as u64 - 1;
                        let cp = first + u64::from(k) % (model.len() as u64 + 1);
                        let cp = cp.min(last);
                        let pol = RetentionPolicy { max_bytes: Some(0), max_age: None };
                        wal.retain(cp, &pol).expect("retain");
                        let new_first = wal.segments().first().map(|s| s.first_lsn).unwrap_or(first);
                        prop_assert!(new_first <= cp + 1);
                        let drop_n = (new_first - first) as usize;
                        model.drain(..drop_n);
                        first = new_first;
                    }
                    Op::ReadFrom(k) => {
                        let from = first + u64::from(k) % (model.len() as u64 + 1);
                        let recs = read_all(&wal, from);
                        let want = &model[(from - first) as usize..];
                        prop_assert_eq!(recs.len(), want.len());
                        for (i, (r, w)) in recs.iter().zip(want).enumerate() {
                            prop_assert_eq!(r.lsn, from + i as u64);
                            prop_assert_eq!(r.hlc, r.lsn ^ 0xABCD);
                            prop_assert_eq!(&r.payload[..], &w[..]);
                        }
                    }
                }
                prop_assert_eq!(wal.last_lsn(), first + model.len() as u64 - 1);
            }
        }
    }
}

#[test]
fn handles_are_shareable() {
    fn send_static<T: Send + 'static>() {}
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    send_static::<WalReader>();
    send_sync::<Wal>();
}

#[test]
fn next_record_timeout_waits_for_publish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    let mut r = wal.reader(1).expect("reader");
    let t = Instant::now();
    assert!(r
        .next_record_timeout(Duration::from_millis(30))
        .expect("next")
        .is_none());
    assert!(t.elapsed() >= Duration::from_millis(30));
    let w2 = wal.clone();
    let h = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        fill(&w2, 1, 1);
    });
    let rec = r
        .next_record_timeout(Duration::from_secs(10))
        .expect("next")
        .expect("record");
    assert_eq!(rec.lsn, 1);
    h.join().expect("join");
}

#[test]
fn large_records_stream_through_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), WalOptions { segment_size: 4096 }).expect("open");
    let sizes = [0usize, 1, 5000, 3 << 20, 10, 600 << 10, 7];
    for (i, n) in sizes.iter().enumerate() {
        let p: Vec<u8> = (0..*n).map(|j| (j as u8) ^ (i as u8)).collect();
        wal.append(i as u64 + 1, 0, &p).expect("append");
    }
    wal.publish(sizes.len() as u64);
    let mut r = wal.reader(0).expect("reader");
    for (i, n) in sizes.iter().enumerate() {
        let rec = r.next_record().expect("next").expect("record");
        assert_eq!(rec.payload.len(), *n);
        assert!(rec
            .payload
            .iter()
            .enumerate()
            .all(|(j, b)| *b == (j as u8) ^ (i as u8)));
    }
    assert!(r.next_record().expect("end").is_none());
    // Starting in the middle skips the big payloads without reading them.
    let mut r = wal.reader(5).expect("reader");
    assert_eq!(r.next_record().expect("next").map(|r| r.lsn), Some(5));
}

#[test]
fn reader_outlives_wal_handle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    fill(&wal, 1, 30);
    let mut r = wal.reader(1).expect("reader");
    drop(wal);
    let got: Vec<u64> = std::iter::from_fn(|| r.next_record().expect("next"))
        .map(|r| r.lsn)
        .collect();
    assert_eq!(got, (1..=30).collect::<Vec<_>>());
}

#[test]
fn concurrent_writer_readers_and_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), WalOptions { segment_size: 1024 }).expect("open");
    const N: u64 = 3000;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for k in 0..3u64 {
        let w = wal.clone();
        readers.push(thread::spawn(move || {
            // Each reader starts when some records exist, from the oldest still retained.
            let mut r = loop {
                match w.reader(1 + k * 10) {
                    Ok(r) => break r,
                    Err(WalError::Trimmed { oldest, .. }) => match w.reader(oldest) {
                        Ok(r) => break r,
                        Err(WalError::Trimmed { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    },
                    Err(e) => panic!("{e}"),
                }
            };
            let mut expect = r.next_lsn();
            while expect <= N {
                match r
                    .next_record_timeout(Duration::from_millis(50))
                    .expect("next")
                {
                    Some(rec) => {
                        assert_eq!(rec.lsn, expect);
                        assert_eq!(&rec.payload[..], &payload(rec.lsn)[..]);
                        expect += 1;
                    }
                    None => continue,
                }
            }
        }));
    }
    let w = wal.clone();
    let s = stop.clone();
    let retainer = thread::spawn(move || {
        let pol = RetentionPolicy {
            max_bytes: Some(0),
            max_age: None,
        };
        let mut deleted = 0;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            deleted += w.retain(w.published_lsn(), &pol).expect("retain");
            let _ = w.segments();
            thread::sleep(Duration::from_millis(1));
        }
        deleted
    });
    for lsn in 1..=N {
        wal.append(lsn, lsn * 100, &payload(lsn)).expect("append");
        if lsn % 10 == 0 {
            wal.sync().expect("sync");
            wal.publish(lsn);
        }
    }
    for r in readers {
        r.join().expect("reader");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(retainer.join().expect("retainer") > 0);
    let segs = wal.segments();
    for pair in segs.windows(2) {
        assert_eq!(pair[0].last_lsn + 1, pair[1].first_lsn);
    }
    drop(wal);
    let (wal, rep) = Wal::open(dir.path(), WalOptions { segment_size: 1024 }).expect("reopen");
    assert_eq!((rep.last_lsn, rep.truncated_bytes), (N, 0));
    let first = wal.first_lsn().expect("first");
    check_records(&read_all(&wal, first), first, N);
}

/// Rough throughput check: `cargo test --release -p unisondb-node --lib wal::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("open");
    const N: u64 = 500_000;
    let p = [0x5Au8; 200];
    let t = Instant::now();
    for lsn in 1..=N {
        wal.append(lsn, lsn, &p).expect("append");
        if lsn % 1000 == 0 {
            wal.publish(lsn);
        }
    }
    wal.sync().expect("sync");
    let dt = t.elapsed();
    println!(
        "append: {:.0} rec/s ({:?} for {N})",
        N as f64 / dt.as_secs_f64(),
        dt
    );
    let t = Instant::now();
    let mut r = wal.reader(1).expect("reader");
    let mut n = 0;
    while r.next_record().expect("next").is_some() {
        n += 1;
    }
    let dt = t.elapsed();
    println!(
        "stream: {:.0} rec/s ({n} records)",
        n as f64 / dt.as_secs_f64()
    );
    let t = Instant::now();
    drop(r);
    drop(wal);
    let (_, rep) = Wal::open(dir.path(), WalOptions::default()).expect("reopen");
    println!("recover: {:?} for {} records", t.elapsed(), rep.records);
}

#[test]
fn extreme_lsns_in_files_do_not_panic() {
    for first in [u64::MAX, u64::MAX - 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut data = segment::encode_header(first).to_vec();
        record::encode_into(&mut data, first, 0, 0, b"a");
        if first < u64::MAX {
            record::encode_into(&mut data, first + 1, 0, 0, b"b");
        }
        std::fs::write(dir.path().join(segment::file_name(first)), &data).expect("write");
        match Wal::open(dir.path(), tiny()) {
            Ok((wal, _)) => {
                assert!(wal.last_lsn() < u64::MAX);
                assert!(wal.append(u64::MAX, 0, b"x").is_err());
                let _ = read_all(&wal, wal.first_lsn().unwrap_or(1));
            }
            Err(WalError::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

#[test]
fn append_records_writes_a_batch_across_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path());
    fill(&wal, 1, 2);
    let recs: Vec<Record> = (3..=20)
        .map(|lsn| Record {
            lsn,
            hlc: lsn * 100,
            epoch: 0,
            payload: payload(lsn).into(),
        })
        .collect();
    wal.append_records(&recs).expect("append batch");
    assert_eq!(wal.last_lsn(), 20);
    assert!(
        segment_paths(dir.path()).len() > 3,
        "a 200-byte segment size makes the batch span segments"
    );
    // Out of sequence: refused, nothing appended.
    let gap = [Record {
        lsn: 22,
        hlc: 2200,
        epoch: 0,
        payload: payload(22).into(),
    }];
    assert!(matches!(
        wal.append_records(&gap),
        Err(WalError::OutOfSequence {
            expected: 21,
            got: 22
        })
    ));
    // A gap inside a batch: the records before it are appended, the rest refused.
    let mut partial: Vec<Record> = (21..=22)
        .map(|lsn| Record {
            lsn,
            hlc: lsn * 100,
            epoch: 0,
            payload: payload(lsn).into(),
        })
        .collect();
    partial[1].lsn = 23;
    assert!(wal.append_records(&partial).is_err());
    assert_eq!(wal.last_lsn(), 21);
    wal.sync().expect("sync");
    wal.publish(21);
    check_records(&read_all(&wal, 1), 1, 21);
    drop(wal);
    let (wal, _) = open(dir.path());
    check_records(&read_all(&wal, 1), 1, 21);
}
