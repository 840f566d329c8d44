//! Recovery from real files: clean reopen, rotation, torn tails cut at every offset, corruption
//! refused with file and offset, IO errors fatal.

mod common;

use std::sync::Arc;

use common::*;
use muster_storage::format::{FrameError, SEGMENT_HEADER_LEN};
use muster_storage::sim::{Op, SimFs};
use muster_storage::wal::{Tail, Wal};
use muster_storage::{Corruption, Error};

/// Appended and synced records come back after reopen, in order, across rotations.
#[test]
fn reopen_replays_everything_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open(dir.path(), real()).unwrap();
        for i in 1..=60 {
            wal.append(&[entry(i, 1, 100)]).unwrap();
            if i % 10 == 0 {
                wal.append(&[hs(1, 1, i)]).unwrap();
                wal.sync().unwrap();
            }
        }
        assert!(wal.segments().len() > 1, "4 KiB segments must rotate");
    }
    let wal = Wal::open(dir.path(), real()).unwrap();
    assert_eq!(indexes(wal.state()), (1..=60).collect::<Vec<_>>());
    assert_eq!(wal.state().hard_state.commit, 60);
    assert!(wal.recovery().repaired.is_none());
    // Sealed segments are truncated to their last record; names carry first indexes.
    let names = segment_files(dir.path());
    assert!(names[0].starts_with("0000000000000001-0000000000000001"));
    let sealed = std::fs::metadata(dir.path().join(&names[0])).unwrap().len();
    assert!(sealed < 4096);
}

/// Raft overwrites: an entry at an existing index replaces the tail, also after replay.
#[test]
fn conflicting_append_truncates_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open(dir.path(), real()).unwrap();
        wal.append(&[entry(1, 1, 8), entry(2, 1, 8), entry(3, 1, 8)])
            .unwrap();
        wal.append(&[entry(2, 2, 8)]).unwrap();
        wal.sync().unwrap();
        assert_eq!(indexes(wal.state()), vec![1, 2]);
        let gap = wal.append(&[entry(9, 2, 8)]).unwrap_err();
        assert!(matches!(gap, Error::Invalid(_)), "{gap}");
    }
    let wal = Wal::open(dir.path(), real()).unwrap();
    assert_eq!(indexes(wal.state()), vec![1, 2]);
    assert_eq!(wal.state().entries[1].term, 2);
}

/// Builds a dir with entries 1..=5 synced, returns (dir, last segment path, offset and size of
/// the last record).
fn five_entries() -> (tempfile::TempDir, std::path::PathBuf, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), real()).unwrap();
    let mut last = 0;
    let mut end = wal.synced().offset as usize;
    for i in 1..=5 {
        last = end;
        end = wal.append(&[entry(i, 1, 600)]).unwrap().offset as usize;
    }
    wal.sync().unwrap();
    assert_eq!(wal.segments().len(), 1);
    drop(wal);
    let seg = dir.path().join(&segment_files(dir.path())[0]);
    (dir, seg, last, end - last)
}

/// The tail cut at every offset of the last record (file truncated there, as after a crash
/// mid-write of a non-preallocated file) is repaired at open: entries 1..=4 survive, a
/// `.broken` copy is kept, and the log is writable again.
#[test]
fn tail_cut_at_every_offset_of_last_record_is_repaired() {
    let (dir, seg, off, size) = five_entries();
    let pristine = std::fs::read(&seg).unwrap();
    for cut in off..off + size {
        // Reset the directory to the single damaged segment (the previous round may have
        // rotated into a second one).
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p != seg {
                std::fs::remove_file(p).unwrap();
            }
        }
        std::fs::write(&seg, &pristine[..cut]).unwrap();
        let mut wal = Wal::open(dir.path(), real()).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(indexes(wal.state()), vec![1, 2, 3, 4], "cut {cut}");
        let repaired = wal.recovery().repaired.clone();
        if cut == off {
            assert!(
                repaired.is_none(),
                "cut at a record boundary is a clean end"
            );
        } else {
            let (path, at, broken) = repaired.unwrap_or_else(|| panic!("cut {cut} not repaired"));
            assert_eq!((path, at), (seg.clone(), off as u64));
            assert_eq!(std::fs::read(&broken).unwrap(), pristine[..cut]);
        }
        // Writable again, and the rewritten record survives another reopen.
        wal.append(&[entry(5, 2, 10)]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), real()).unwrap();
        assert_eq!(indexes(wal.state()), vec![1, 2, 3, 4, 5]);
        assert_eq!(wal.state().entries[4].term, 2);
    }
}

/// A torn write in place (the last record's later sectors never reached the disk) is repaired;
/// the same damage in a sealed segment refuses to open.
#[test]
fn zeroed_sector_in_last_record_is_torn() {
    let (dir, seg, off, size) = five_entries();
    let mut bytes = std::fs::read(&seg).unwrap();
    let sector = (off / 512 + 1) * 512;
    assert!(sector < off + size);
    bytes[sector..(sector + 512).min(off + size)].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    let wal = Wal::open(dir.path(), real()).unwrap();
    assert_eq!(indexes(wal.state()), vec![1, 2, 3, 4]);
    assert_eq!(wal.recovery().repaired.as_ref().unwrap().1, off as u64);
}

/// A flipped bit mid-log refuses to open, naming the file and the record offset; nothing is
/// changed on disk.
#[test]
fn bit_flip_mid_log_refuses_with_file_and_offset() {
    let (dir, seg, _, _) = five_entries();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Second record: header at 64 + frame(first).
    let first = muster_storage::format::frame_len(
        muster_storage::format::decode_frame(1, &bytes[SEGMENT_HEADER_LEN..])
            .unwrap()
            .unwrap()
            .payload
            .len(),
    );
    let second = SEGMENT_HEADER_LEN + first;
    bytes[second + 100] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Wal::open(dir.path(), real()).unwrap_err();
    match &err {
        Error::Corruption {
            path,
            offset,
            reason: Corruption::Frame(FrameError::Checksum { .. }),
        } => {
            assert_eq!(path, &seg);
            assert_eq!(*offset, second as u64);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(
        err.to_string().contains(&format!("at byte {second}")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "refusal changes nothing"
    );
    assert!(!std::path::Path::new(&format!("{}.broken", seg.display())).exists());
}

/// Damage in a sealed (older) segment is corruption even when it looks torn.
#[test]
fn damage_in_sealed_segment_refuses() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open(dir.path(), real()).unwrap();
        for i in 1..=30 {
            wal.append(&[entry(i, 1, 200)]).unwrap();
        }
        wal.sync().unwrap();
    }
    let names = segment_files(dir.path());
    assert!(names.len() >= 2);
    let first = dir.path().join(&names[0]);
    let mut bytes = std::fs::read(&first).unwrap();
    let n = bytes.len();
    bytes.truncate(n - 3);
    std::fs::write(&first, &bytes).unwrap();
    let err = Wal::open(dir.path(), real()).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains(&names[0]), "{err}");
}

/// A missing middle segment (sequence gap) refuses to open.
#[test]
fn sequence_gap_refuses() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open(dir.path(), real()).unwrap();
        for i in 1..=60 {
            wal.append(&[entry(i, 1, 200)]).unwrap();
        }
        wal.sync().unwrap();
    }
    let names = segment_files(dir.path());
    assert!(names.len() >= 3);
    std::fs::remove_file(dir.path().join(&names[1])).unwrap();
    let err = Wal::open(dir.path(), real()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Corruption {
                reason: Corruption::SequenceGap {
                    expected: 2,
                    found: 3
                },
                ..
            }
        ),
        "{err}"
    );
}

/// An IO error while reading is returned as Io, never treated as a torn tail.
#[test]
fn read_error_is_fatal_not_corruption() {
    let fs = SimFs::new();
    {
        let mut wal = Wal::open("/d", opts(Arc::new(fs.clone()))).unwrap();
        wal.append(&[entry(1, 1, 10)]).unwrap();
        wal.sync().unwrap();
    }
    fs.fail(Op::Read, libc::EIO, 1);
    let err = Wal::open("/d", opts(Arc::new(fs.clone()))).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Io {
                op: "read segment",
                ..
            }
        ),
        "{err}"
    );
    let wal = Wal::open("/d", opts(Arc::new(fs))).unwrap();
    assert_eq!(indexes(wal.state()), vec![1]);
    assert!(wal.recovery().repaired.is_none());
}

/// A second writer is refused while the first holds the lock.
#[test]
fn second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let _w = Wal::open(dir.path(), real()).unwrap();
    let err = Wal::open(dir.path(), real()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}

/// `scan` reports a torn tail without changing anything (the read-only path of muster-wal).
#[test]
fn scan_is_read_only() {
    let (dir, seg, off, size) = five_entries();
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &bytes[..off + size / 2]).unwrap();
    let before = std::fs::read(&seg).unwrap();
    let scan = muster_storage::wal::scan(&muster_storage::fs::RealFs, dir.path()).unwrap();
    assert!(matches!(scan.segments[0].tail, Tail::Torn { offset, .. } if offset == off as u64));
    assert_eq!(std::fs::read(&seg).unwrap(), before);
}

/// A hard state committing more than the log holds refuses to open (it would make raft-rs
/// panic).
#[test]
fn commit_beyond_log_refuses() {
    let fs = SimFs::new();
    {
        let mut wal = Wal::open("/d", opts(Arc::new(fs.clone()))).unwrap();
        wal.append(&[entry(1, 1, 10), entry(2, 1, 10), hs(1, 1, 5)])
            .unwrap();
        wal.sync().unwrap();
    }
    let err = Wal::open("/d", opts(Arc::new(fs))).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Corruption {
                reason: Corruption::CommitBeyondLog { commit: 5, last: 2 },
                ..
            }
        ),
        "{err}"
    );
}

/// Offsets of every record in the only segment of `dir` (after the segment header).
fn record_offsets(seg: &std::path::Path) -> Vec<usize> {
    let bytes = std::fs::read(seg).unwrap();
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    while let Ok(Some(f)) = muster_storage::format::decode_frame(1, &bytes[off..]) {
        out.push(off);
        off += f.size;
    }
    out
}

/// A CRC mismatch in the final record that is not a whole zero sector (so not a torn write):
/// `strict` refuses with the file and the record's offset and changes nothing; `truncate-tail`
/// drops it, keeps the damaged segment as `.broken`, reports the dropped index range, and the
/// log is clean and writable afterwards (a strict reopen agrees).
#[test]
fn corrupt_final_record_refuses_strict_and_is_dropped_by_truncate_tail() {
    let (dir, seg, off, size) = five_entries();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[off + size / 2] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    let err = Wal::open(dir.path(), real()).unwrap_err();
    match &err {
        Error::Corruption {
            path,
            offset,
            reason: Corruption::Frame(FrameError::Checksum { .. }),
        } => assert_eq!((path, *offset), (&seg, off as u64)),
        other => panic!("strict must refuse with a checksum error, got {other}"),
    }
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "refusal changes nothing"
    );

    let mut wal = Wal::open(dir.path(), truncating()).unwrap();
    assert_eq!(indexes(wal.state()), vec![1, 2, 3, 4]);
    let d = wal
        .recovery()
        .dropped
        .clone()
        .expect("a dropped tail is reported");
    assert_eq!((d.segment.as_path(), d.offset), (seg.as_path(), off as u64));
    assert_eq!(d.kept_last_index, 4);
    assert_eq!(
        d.claimed,
        vec![5],
        "the damaged record still names its index"
    );
    assert_eq!(d.index_range(), "5..=5");
    assert!(matches!(
        d.reason,
        Corruption::Frame(FrameError::Checksum { .. })
    ));
    assert_eq!(d.commit_lowered_from, None);
    let broken = std::path::PathBuf::from(format!("{}.broken", seg.display()));
    assert_eq!(
        std::fs::read(&broken).unwrap(),
        bytes,
        ".broken keeps the damage"
    );
    wal.append(&[entry(5, 2, 50)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), real()).unwrap();
    assert_eq!(indexes(wal.state()), vec![1, 2, 3, 4, 5]);
    assert_eq!(wal.state().entries[4].term, 2);
}

/// Damage spread over the last two records (nothing valid after it) is dropped whole, and the
/// range names both indexes.
#[test]
fn corrupt_final_records_are_dropped_together() {
    let (dir, seg, _, _) = five_entries();
    let offs = record_offsets(&seg);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offs[3] + 200] ^= 0x01;
    bytes[offs[4] + 200] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    assert!(Wal::open(dir.path(), real()).unwrap_err().is_corruption());
    let wal = Wal::open(dir.path(), truncating()).unwrap();
    assert_eq!(indexes(wal.state()), vec![1, 2, 3]);
    let d = wal.recovery().dropped.clone().unwrap();
    assert_eq!(
        (d.offset, d.index_range().as_str()),
        (offs[3] as u64, "4..=5")
    );
}

/// A bad record followed by a good one is corruption in the middle of the log: both modes
/// refuse with the bad record's offset, and nothing changes on disk.
#[test]
fn bad_record_followed_by_a_good_one_refuses_in_both_modes() {
    let (dir, seg, _, _) = five_entries();
    let offs = record_offsets(&seg);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offs[3] + 200] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    for (mode, o) in [("strict", real()), ("truncate-tail", truncating())] {
        match Wal::open(dir.path(), o).unwrap_err() {
            Error::Corruption { path, offset, .. } => {
                assert_eq!((path, offset), (seg.clone(), offs[3] as u64), "{mode}")
            }
            other => panic!("{mode}: expected corruption, got {other}"),
        }
        assert_eq!(
            std::fs::read(&seg).unwrap(),
            bytes,
            "{mode} changes nothing"
        );
    }
    assert!(!std::path::Path::new(&format!("{}.broken", seg.display())).exists());
}

/// When the dropped records held entries a hard state had already committed, the commit is
/// lowered to the last kept entry (raft-rs panics on a commit beyond the log) and that is made
/// durable, so a strict reopen agrees.
#[test]
fn truncate_tail_lowers_a_commit_beyond_the_shortened_log() {
    let dir = tempfile::tempdir().unwrap();
    let seg;
    {
        let mut wal = Wal::open(dir.path(), real()).unwrap();
        wal.append(&[
            entry(1, 1, 100),
            entry(2, 1, 100),
            hs(1, 1, 3),
            entry(3, 1, 300),
        ])
        .unwrap();
        wal.sync().unwrap();
        seg = dir.path().join(&segment_files(dir.path())[0]);
    }
    let offs = record_offsets(&seg);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offs[3] + 100] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    assert!(Wal::open(dir.path(), real()).unwrap_err().is_corruption());
    {
        let wal = Wal::open(dir.path(), truncating()).unwrap();
        assert_eq!(indexes(wal.state()), vec![1, 2]);
        assert_eq!(wal.state().hard_state.commit, 2);
        let d = wal.recovery().dropped.clone().unwrap();
        assert_eq!(d.commit_lowered_from, Some(3));
    }
    let wal = Wal::open(dir.path(), real()).unwrap();
    assert_eq!(wal.state().hard_state.commit, 2);
    assert!(wal.recovery().dropped.is_none());
}

/// Row S6, an empty last segment: a segment file that exists under its final name but is all
/// zeros (its header never reached the disk) is removed at open, as ZooKeeper does for an empty
/// last log (ZK-2332); every entry before it is kept and appends go on in a fresh segment.
#[test]
fn an_all_zero_last_segment_is_removed_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let next = {
        let mut wal = Wal::open(dir.path(), real()).unwrap();
        for i in 1..=30 {
            wal.append(&[entry(i, 1, 200)]).unwrap();
        }
        wal.append(&[hs(1, 1, 30)]).unwrap();
        wal.sync().unwrap();
        let last = *wal.segments().last().unwrap();
        muster_storage::format::SegmentId {
            seq: last.seq + 1,
            first_index: 31,
        }
    };
    // The state a rotation leaves when the new segment's header is lost: the old segment
    // sealed (cut at its last record, as rotation does before the rename), the new one zeros.
    let scan = muster_storage::wal::scan(&muster_storage::fs::RealFs, dir.path()).unwrap();
    let old = scan.segments.last().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&old.path)
        .unwrap()
        .set_len(old.end)
        .unwrap();
    let empty = dir.path().join(next.file_name());
    std::fs::write(&empty, vec![0u8; 4096]).unwrap();
    let mut wal = Wal::open(dir.path(), real()).unwrap();
    assert_eq!(indexes(wal.state()), (1..=30).collect::<Vec<_>>());
    assert_eq!(wal.state().hard_state.commit, 30);
    wal.append(&[entry(31, 1, 200)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), real()).unwrap();
    assert_eq!(indexes(wal.state()), (1..=31).collect::<Vec<_>>());
}

/// Row S6, an empty middle segment: a sealed segment that is all zeros is corruption, never
/// skipped: open refuses, names the file, and changes nothing on disk.
#[test]
fn an_all_zero_middle_segment_refuses() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut wal = Wal::open(dir.path(), real()).unwrap();
        for i in 1..=60 {
            wal.append(&[entry(i, 1, 200)]).unwrap();
        }
        wal.sync().unwrap();
    }
    let names = segment_files(dir.path());
    assert!(names.len() >= 3, "{names:?}");
    let middle = dir.path().join(&names[1]);
    let len = std::fs::metadata(&middle).unwrap().len() as usize;
    std::fs::write(&middle, vec![0u8; len]).unwrap();
    let before: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(dir.path().join(n)).unwrap())
        .collect();
    let err = Wal::open(dir.path(), real()).unwrap_err();
    assert!(
        matches!(&err, Error::Corruption { path, .. } if path.ends_with(&names[1])),
        "{err}"
    );
    let after: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(dir.path().join(n)).unwrap())
        .collect();
    assert_eq!(before, after, "a refused open changed the files");
}
