//! Golden fixtures: `tests/data/wal-v2/`, a small data directory written by this code (format 2,
//! state-machine domains), and `tests/data/wal-v1/`, the same content as format 1 wrote it
//! (before domains), kept as it was. The test rebuilds the v2 one and compares byte for byte, so
//! any format drift fails here, and opens the v1 one to show old data directories still read
//! (to the same entries and events). Regenerate only on purpose, after bumping the format
//! version in FORMAT.md (a new version gets a new twin; old fixtures stay):
//!
//! ```text
//! MUSTER_UPDATE_FIXTURES=1 cargo test -p muster-storage --test golden
//! ```

mod common;

use std::path::{Path, PathBuf};

use muster_storage::record::{ConfStateRecord, EntryRecord, Record};
use muster_storage::snapshot::SnapshotData;
use muster_storage::wal::Wal;
use muster_storage::Event;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/wal-v2")
}

fn v1_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/wal-v1")
}

/// The event of entry `i` (2..=24) of the fixtures.
fn event(i: u64) -> Event {
    let n = (i - 2) as usize;
    Event {
        domain: "naming".into(),
        service_key: SERVICES[n % 3].to_string(),
        kind: KINDS[(n / 3) % 3].to_string(),
        time_ms: 1_763_000_000_000 + i * 1_500,
        body: format!("{{\"ip\":\"10.0.0.{}\",\"port\":8080}}", n % 5 + 1).into_bytes(),
    }
}

const SERVICES: [&str; 3] = [
    "public##DEFAULT_GROUP@@orders",
    "public##DEFAULT_GROUP@@payments",
    "dev##DEFAULT_GROUP@@orders",
];
const KINDS: [&str; 3] = ["register", "update", "deregister"];

/// Writes the fixture's content into `dir`: conf state, 24 entries (a leader no-op and 23
/// events across 3 services), hard states, a snapshot at 12, and a rotation (4 KiB segments).
fn build(dir: &Path) {
    let mut wal = Wal::open(dir, common::real()).unwrap();
    wal.append(&[Record::ConfState(ConfStateRecord {
        voters: vec![1],
        ..Default::default()
    })])
    .unwrap();
    wal.append(&[common::hs(1, 1, 0)]).unwrap();
    for i in 1..=24u64 {
        let data = if i == 1 {
            Vec::new()
        } else {
            event(i).encode()
        };
        wal.append(&[Record::Entry(EntryRecord {
            index: i,
            term: 1,
            entry_type: 0,
            data,
            context: Vec::new(),
        })])
        .unwrap();
        if i % 6 == 0 {
            wal.append(&[common::hs(1, 1, i)]).unwrap();
            wal.sync().unwrap();
        }
        if i == 14 {
            let snap = SnapshotData {
                index: 12,
                term: 1,
                conf_state: ConfStateRecord {
                    voters: vec![1],
                    ..Default::default()
                },
                data: b"state machine image at 12".to_vec(),
            };
            wal.write_snapshot(&snap, false).unwrap();
        }
    }
    wal.sync().unwrap();
    assert_eq!(wal.segments().len(), 2, "the fixture must span a rotation");
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "LOCK")
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn golden_fixture_matches_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    build(tmp.path());
    let fresh = files(tmp.path());
    let golden = fixture_dir();
    if common::update_fixtures() {
        let _ = std::fs::remove_dir_all(&golden);
        std::fs::create_dir_all(&golden).unwrap();
        for (name, bytes) in &fresh {
            std::fs::write(golden.join(name), bytes).unwrap();
        }
        eprintln!("updated {}", golden.display());
    }
    let want = files(&golden);
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&fresh), names(&want), "fixture file set drifted");
    for ((name, got), (_, exp)) in fresh.iter().zip(&want) {
        if got != exp {
            let at = got
                .iter()
                .zip(exp)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(exp.len()));
            panic!(
                "format drift in {name} at byte {at} (set MUSTER_UPDATE_FIXTURES=1 only if the format version changed)"
            );
        }
    }

    // The checked-in bytes decode to the expected state (decoder drift).
    let copy = tempfile::tempdir().unwrap();
    for (name, bytes) in &want {
        std::fs::write(copy.path().join(name), bytes).unwrap();
    }
    let wal = Wal::open(copy.path(), common::real()).unwrap();
    let st = wal.state();
    assert_eq!(st.snapshot.as_ref().unwrap().index, 12);
    assert_eq!(common::indexes(st), (13..=24).collect::<Vec<_>>());
    assert_eq!(st.hard_state.commit, 24);
    assert_eq!(st.conf_state.voters, vec![1]);
    let ev = Event::decode(&st.entries[0].data).unwrap().unwrap();
    assert_eq!(ev, event(13));
    assert_eq!(
        wal.load_snapshot().unwrap().unwrap().data,
        b"state machine image at 12"
    );
}

/// A data directory written by format 1 (before domains) opens, replays to the same log as the
/// v2 fixture, its events read as `naming` events with the same content, and it stays writable
/// (new segments are format 2).
#[test]
fn format_1_fixture_still_opens_and_reads_the_same() {
    let copy = tempfile::tempdir().unwrap();
    for (name, bytes) in files(&v1_fixture_dir()) {
        std::fs::write(copy.path().join(name), bytes).unwrap();
    }
    let header_version = |dir: &Path| -> Vec<u32> {
        let mut segs = common::segment_files(dir);
        segs.sort();
        segs.iter()
            .map(|n| {
                let b = std::fs::read(dir.join(n)).unwrap();
                u32::from_le_bytes(b[8..12].try_into().unwrap())
            })
            .collect()
    };
    assert_eq!(
        header_version(copy.path()),
        vec![1, 1],
        "the fixture is format 1"
    );
    let mut wal = Wal::open(copy.path(), common::real()).unwrap();
    let st = wal.state();
    assert_eq!(st.snapshot.as_ref().unwrap().index, 12);
    assert_eq!(common::indexes(st), (13..=24).collect::<Vec<_>>());
    assert_eq!(st.hard_state.commit, 24);
    for e in &st.entries {
        assert!(e.data.starts_with(muster_storage::event::EVENT_MAGIC_V1));
        let ev = Event::decode(&e.data).unwrap().unwrap();
        assert_eq!(
            ev,
            event(e.index),
            "entry {} reads as the v2 fixture's",
            e.index
        );
    }
    assert_eq!(
        wal.load_snapshot().unwrap().unwrap().data,
        b"state machine image at 12"
    );
    // Writable: enough appends to rotate into a format-2 segment.
    for i in 25..=60u64 {
        wal.append(&[Record::Entry(EntryRecord {
            index: i,
            term: 1,
            entry_type: 0,
            data: event(2 + i % 20).encode(),
            context: Vec::new(),
        })])
        .unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let versions = header_version(copy.path());
    assert_eq!(versions[..2], [1, 1]);
    assert!(
        versions.len() > 2 && versions[2..].iter().all(|&v| v == 2),
        "{versions:?}"
    );
    let wal = Wal::open(copy.path(), common::real()).unwrap();
    assert_eq!(wal.state().last_index(), 60);
}
