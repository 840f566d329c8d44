//! Failpoints at the persistence boundaries (`muster_storage::failpoint`, the `fail` crate),
//! in process on [`SimFs`]: a crash (panic) or an `EIO` at each point, then a restart from what
//! a power loss would leave. Every synced entry survives, and a failed write is never made to
//! look durable.
//!
//! Built only with the `failpoints` feature (`cargo test --workspace --features failpoints`).
//! The `fail` registry is global to the process, so every test first takes
//! `fail::FailScenario::setup()`: the tests run one at a time, and each ends with every point
//! disarmed.

mod common;

use std::sync::Arc;

use common::*;
use muster_storage::failpoint;
use muster_storage::sim::SimFs;
use muster_storage::snapshot::SnapshotData;
use muster_storage::wal::Wal;
use muster_storage::Error;

const DIR: &str = "/data";

/// Appends 200-byte entries `from..=to` in term 1, commits them and syncs.
fn fill(wal: &mut Wal, from: u64, to: u64) {
    for i in from..=to {
        wal.append(&[entry(i, 1, 200)]).unwrap();
    }
    wal.append(&[hs(1, 1, to)]).unwrap();
    wal.sync().unwrap();
}

/// Runs `f`, which must panic at the armed `panic` point `point` (fail's message names it), not
/// anywhere else.
fn crashes(point: &str, f: impl FnOnce()) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let payload = outcome.expect_err("the armed point did not fire");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains(point),
        "panicked elsewhere than {point}: {msg}"
    );
}

/// A rotation is not durable until its directory fsync: power loss right before the rename
/// leaves the old segment (sealed) and no new one; everything synced survives and appends go on.
#[test]
fn crash_during_rotation_before_rename() {
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    let mut o = opts(Arc::new(fs.clone()));
    let mut wal = Wal::open(DIR, o.clone()).unwrap();
    // Fill the first (4 KiB) segment until it rotates: about 18 entries of 200 bytes; bounded
    // at 1000 appends and 10 s.
    let mut i = 1;
    let start = std::time::Instant::now();
    while wal.segments().len() == 1 {
        assert!(
            i <= 1000 && start.elapsed() < std::time::Duration::from_secs(10),
            "no rotation after {} appends of 200 bytes to 4 KiB segments ({:?})",
            i - 1,
            start.elapsed()
        );
        wal.append(&[entry(i, 1, 200)]).unwrap();
        wal.sync().unwrap();
        i += 1;
    }
    let written = i - 1;
    fail::cfg(failpoint::ROTATE_BEFORE_RENAME, "return").unwrap();
    let mut err = None;
    let limit = i + 40;
    while i < limit {
        if let Err(e) = wal.append(&[entry(i, 1, 200)]) {
            err = Some(e);
            break;
        }
        wal.sync().unwrap();
        i += 1;
    }
    assert!(err.is_some(), "rotation must hit the failpoint");
    // The WAL is poisoned after a failure in the middle of rotation.
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
    let after = fs.power_loss();
    drop(wal);
    fail::remove(failpoint::ROTATE_BEFORE_RENAME);
    o.fs = Arc::new(after);
    let mut wal = Wal::open(DIR, o).unwrap();
    let got = indexes(wal.state());
    assert!(got.len() as u64 >= written);
    assert_eq!(got, (1..i).collect::<Vec<_>>());
    wal.append(&[entry(i, 1, 200)]).unwrap();
    wal.sync().unwrap();
}

/// `wal::before_sync` and `wal::after_append` failpoints: a crash after append but before sync
/// loses the un-synced entry under power loss, never a synced one.
#[test]
fn failpoints_at_append_and_sync() {
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    let o = opts(Arc::new(fs.clone()));
    let mut wal = Wal::open(DIR, o.clone()).unwrap();
    wal.append(&[entry(1, 1, 10)]).unwrap();
    wal.sync().unwrap();
    fail::cfg(failpoint::AFTER_APPEND, "panic").unwrap();
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = wal.append(&[entry(2, 1, 10)]);
    }));
    assert!(crashed.is_err());
    fail::remove(failpoint::AFTER_APPEND);
    let after = fs.power_loss();
    drop(wal);
    let mut o2 = o.clone();
    o2.fs = Arc::new(after.clone());
    let mut wal = Wal::open(DIR, o2).unwrap();
    assert_eq!(indexes(wal.state()), vec![1]);
    fail::cfg(failpoint::BEFORE_SYNC, "return").unwrap();
    wal.append(&[entry(2, 1, 10)]).unwrap();
    assert!(wal.sync().is_err());
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
}

/// `snapshot::before_rename`: a crash leaves only a `.tmp` file, which is ignored and removed;
/// the log is unchanged. After the rename but before the marker, the orphan snapshot is removed.
#[test]
fn snapshot_crash_points() {
    let _scenario = fail::FailScenario::setup();
    for point in [
        failpoint::SNAPSHOT_BEFORE_RENAME,
        failpoint::SNAPSHOT_AFTER_RENAME,
    ] {
        let fs = SimFs::new();
        let o = opts(Arc::new(fs.clone()));
        let mut wal = Wal::open(DIR, o.clone()).unwrap();
        for i in 1..=5 {
            wal.append(&[entry(i, 1, 10)]).unwrap();
        }
        wal.sync().unwrap();
        fail::cfg(point, "return").unwrap();
        let snap = SnapshotData {
            index: 3,
            term: 1,
            data: b"image".to_vec(),
            ..Default::default()
        };
        assert!(wal.write_snapshot(&snap, false).is_err(), "{point}");
        fail::remove(point);
        drop(wal);
        let wal = Wal::open(DIR, o.clone()).unwrap();
        assert!(wal.state().snapshot.is_none(), "{point}");
        assert_eq!(indexes(wal.state()), vec![1, 2, 3, 4, 5]);
        let names = muster_storage::fs::FileSystem::list(&fs, std::path::Path::new(DIR)).unwrap();
        assert!(
            names
                .iter()
                .all(|n| !n.ends_with(".snap") && !n.ends_with(".tmp")),
            "{point}: {names:?}"
        );
    }
}

/// `wal::before_append` with an `EIO`: the append fails with nothing written, the error names
/// the segment, and after a restart the log holds exactly the synced entries.
#[test]
fn eio_before_append_writes_nothing() {
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    let o = opts(Arc::new(fs.clone()));
    let mut wal = Wal::open(DIR, o.clone()).unwrap();
    fill(&mut wal, 1, 3);
    fail::cfg(failpoint::BEFORE_APPEND, "return(eio)").unwrap();
    let err = wal.append(&[entry(4, 1, 10)]).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains(".wal"), "{err}");
    fail::remove(failpoint::BEFORE_APPEND);
    assert_eq!(indexes(wal.state()), vec![1, 2, 3]);
    drop(wal);
    let mut o2 = o.clone();
    o2.fs = Arc::new(fs.power_loss());
    let wal = Wal::open(DIR, o2).unwrap();
    assert_eq!(indexes(wal.state()), vec![1, 2, 3]);
}

/// `wal::after_sync`: a crash after the sync, before anyone is answered, keeps the synced
/// entry through a power loss (it is durable, so answering it after a restart is right).
#[test]
fn crash_after_sync_keeps_the_entry() {
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    let o = opts(Arc::new(fs.clone()));
    let mut wal = Wal::open(DIR, o.clone()).unwrap();
    fill(&mut wal, 1, 2);
    wal.append(&[entry(3, 1, 10)]).unwrap();
    fail::cfg(failpoint::AFTER_SYNC, "panic").unwrap();
    crashes(failpoint::AFTER_SYNC, || {
        let _ = wal.sync();
    });
    fail::remove(failpoint::AFTER_SYNC);
    drop(wal);
    let mut o2 = o.clone();
    o2.fs = Arc::new(fs.power_loss());
    let wal = Wal::open(DIR, o2).unwrap();
    assert_eq!(indexes(wal.state()), vec![1, 2, 3]);
}

/// EIO from msync (`wal::before_sync` returning `EIO`) poisons the WAL: every later append and
/// sync fails without touching the disk (an fsync is never retried), and a restart keeps
/// exactly what was synced before.
#[test]
fn eio_on_sync_poisons_and_is_never_retried() {
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    let o = opts(Arc::new(fs.clone()));
    let mut wal = Wal::open(DIR, o.clone()).unwrap();
    fill(&mut wal, 1, 2);
    wal.append(&[entry(3, 1, 10)]).unwrap();
    fail::cfg(failpoint::BEFORE_SYNC, "1*return(eio)").unwrap();
    assert!(matches!(wal.sync(), Err(Error::Io { .. })));
    // The point is spent: a retry would now succeed if the WAL tried; it must not.
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
    assert!(matches!(
        wal.append(&[entry(4, 1, 10)]),
        Err(Error::Poisoned { .. })
    ));
    fail::remove(failpoint::BEFORE_SYNC);
    drop(wal);
    let mut o2 = o.clone();
    o2.fs = Arc::new(fs.power_loss());
    let wal = Wal::open(DIR, o2).unwrap();
    assert_eq!(indexes(wal.state()), vec![1, 2]);
}

/// A slow fsync (`sleep(300)` before each msync) changes nothing but time: every entry is
/// durable and recovered.
#[test]
fn slow_sync_is_still_durable() {
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    let o = opts(Arc::new(fs.clone()));
    let mut wal = Wal::open(DIR, o.clone()).unwrap();
    fail::cfg(failpoint::BEFORE_SYNC, "sleep(300)").unwrap();
    fill(&mut wal, 1, 3);
    fail::remove(failpoint::BEFORE_SYNC);
    drop(wal);
    let mut o2 = o.clone();
    o2.fs = Arc::new(fs.power_loss());
    let wal = Wal::open(DIR, o2).unwrap();
    assert_eq!(indexes(wal.state()), vec![1, 2, 3]);
}

/// `wal::purge::before_remove`: a crash after the snapshot and its marker are durable, before
/// the old segments are deleted, restarts to the same log (snapshot, then the later entries);
/// the next purge deletes the leftovers.
#[test]
fn crash_before_purge_restarts_to_the_same_log() {
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    let o = opts(Arc::new(fs.clone()));
    let mut wal = Wal::open(DIR, o.clone()).unwrap();
    fill(&mut wal, 1, 60);
    assert!(wal.segments().len() >= 3, "{:?}", wal.segments());
    let snap = SnapshotData {
        index: 40,
        term: 1,
        data: b"image@40".to_vec(),
        ..Default::default()
    };
    wal.write_snapshot(&snap, false).unwrap();
    fail::cfg(failpoint::PURGE_BEFORE_REMOVE, "panic").unwrap();
    crashes(failpoint::PURGE_BEFORE_REMOVE, || {
        let _ = wal.compact(40);
    });
    fail::remove(failpoint::PURGE_BEFORE_REMOVE);
    drop(wal);
    let mut o2 = o.clone();
    o2.fs = Arc::new(fs.power_loss());
    let mut wal = Wal::open(DIR, o2).unwrap();
    assert_eq!(wal.state().snapshot.as_ref().map(|s| s.index), Some(40));
    assert_eq!(indexes(wal.state()), (41..=60).collect::<Vec<_>>());
    let before = wal.segments().len();
    assert!(wal.compact(40).unwrap() >= 1, "leftovers purged");
    assert!(wal.segments().len() < before);
    fill(&mut wal, 61, 62);
}

/// Every point fires where it is placed: arming it as `panic` and running append, sync, a
/// rotation, a snapshot and a purge on a fresh log crashes at that point.
#[test]
fn every_wal_point_is_reached() {
    let _scenario = fail::FailScenario::setup();
    for point in failpoint::ALL {
        if point == failpoint::SNAPSHOT_INSTALL {
            continue; // RaftStore::apply_snapshot: tests/raft_store.rs covers the install.
        }
        let fs = SimFs::new();
        let mut wal = Wal::open(DIR, opts(Arc::new(fs.clone()))).unwrap();
        fail::cfg(point, "panic").unwrap();
        crashes(point, || {
            fill(&mut wal, 1, 60);
            let snap = SnapshotData {
                index: 50,
                term: 1,
                data: b"image".to_vec(),
                ..Default::default()
            };
            wal.write_snapshot(&snap, false).unwrap();
            wal.compact(50).unwrap();
        });
        fail::remove(point);
    }
}

/// `snapshot::install`: a snapshot from a leader that fails to install (EIO, or a crash at the
/// point) leaves the store as it was: after a restart it holds the same entries and no
/// snapshot, and a second install succeeds.
#[test]
fn failed_snapshot_install_changes_nothing() {
    use muster_storage::RaftStore;
    use raft::eraftpb::{ConfState, Entry, Snapshot};
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    let o = opts(Arc::new(fs.clone()));
    let mut store = RaftStore::open(DIR, o.clone()).unwrap();
    let cs = ConfState {
        voters: vec![1],
        ..ConfState::default()
    };
    store.set_conf_state(&cs).unwrap();
    let ents: Vec<Entry> = (1..=3)
        .map(|i| Entry {
            index: i,
            term: 1,
            data: vec![i as u8; 8].into(),
            ..Entry::default()
        })
        .collect();
    store.append(&ents).unwrap();
    store.sync().unwrap();
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 10;
    snap.mut_metadata().term = 2;
    snap.mut_metadata().set_conf_state(cs.clone());
    snap.data = b"leader image".to_vec().into();
    for action in ["return(eio)", "panic"] {
        fail::cfg(failpoint::SNAPSHOT_INSTALL, action).unwrap();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.apply_snapshot(&snap)));
        match outcome {
            Ok(r) => assert!(r.is_err(), "{action}: install must fail"),
            Err(_) => assert_eq!(action, "panic"),
        }
        fail::remove(failpoint::SNAPSHOT_INSTALL);
        drop(store);
        let mut o2 = o.clone();
        o2.fs = Arc::new(fs.power_loss());
        store = RaftStore::open(DIR, o2).unwrap();
        assert_eq!(indexes(store.wal().state()), vec![1, 2, 3], "{action}");
        assert!(store.wal().state().snapshot.is_none(), "{action}");
    }
    store.apply_snapshot(&snap).unwrap();
    assert_eq!(
        store.wal().state().snapshot.as_ref().map(|s| s.index),
        Some(10)
    );
}
