//! `RaftStore` against raft-rs's `Storage` contract, and a real single-node `RawNode` Ready
//! loop that restarts from disk.

mod common;

use std::sync::Arc;

use muster_storage::event::Event;
use muster_storage::raft_store::RaftStore;
use muster_storage::sim::SimFs;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{Config, GetEntriesContext, RawNode, Storage, StorageError};

fn ent(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("e{index}").into_bytes().into(),
        ..Entry::default()
    }
}

fn voters(ids: &[u64]) -> ConfState {
    ConfState {
        voters: ids.to_vec(),
        ..ConfState::default()
    }
}

fn store_err(e: raft::Error) -> StorageError {
    match e {
        raft::Error::Store(s) => s,
        other => panic!("not a storage error: {other}"),
    }
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

/// raft-rs's StorageError contract: Compacted below the first index, Unavailable past the last,
/// SnapshotTemporarilyUnavailable / SnapshotOutOfDate around snapshots.
#[test]
fn storage_error_contract() {
    let fs = SimFs::new();
    let mut s = RaftStore::open("/r", common::opts(Arc::new(fs.clone()))).unwrap();
    assert_eq!(s.first_index().unwrap(), 1);
    assert_eq!(s.last_index().unwrap(), 0);
    assert_eq!(s.term(0).unwrap(), 0);
    assert!(!s.initial_state().unwrap().initialized());
    s.set_conf_state(&voters(&[1])).unwrap();
    let ents: Vec<Entry> = (1..=10).map(|i| ent(i, 1 + i / 5)).collect();
    s.append(&ents).unwrap();
    let hs = HardState {
        term: 3,
        vote: 1,
        commit: 8,
        ..HardState::default()
    };
    s.set_hardstate(&hs).unwrap();
    s.sync().unwrap();

    assert_eq!(s.entries(1, 11, None, ctx()).unwrap(), ents);
    assert_eq!(s.entries(3, 5, None, ctx()).unwrap(), ents[2..4].to_vec());
    assert_eq!(
        s.entries(3, 9, Some(0), ctx()).unwrap().len(),
        1,
        "max_size returns >= 1"
    );
    assert_eq!(
        store_err(s.entries(0, 2, None, ctx()).unwrap_err()),
        StorageError::Compacted
    );
    assert_eq!(
        store_err(s.entries(2, 12, None, ctx()).unwrap_err()),
        StorageError::Unavailable
    );
    assert_eq!(
        store_err(s.term(11).unwrap_err()),
        StorageError::Unavailable
    );
    assert_eq!(
        store_err(s.snapshot(1, 2).unwrap_err()),
        StorageError::SnapshotTemporarilyUnavailable
    );

    // Snapshot at 5 and compaction.
    assert!(
        s.create_snapshot(9, &voters(&[1]), vec![]).is_err(),
        "beyond commit"
    );
    s.create_snapshot(5, &voters(&[1]), b"img5".to_vec())
        .unwrap();
    s.compact(5).unwrap();
    assert_eq!(s.first_index().unwrap(), 6);
    assert_eq!(s.last_index().unwrap(), 10);
    assert_eq!(s.term(5).unwrap(), 2);
    assert_eq!(store_err(s.term(4).unwrap_err()), StorageError::Compacted);
    assert_eq!(
        store_err(s.entries(5, 7, None, ctx()).unwrap_err()),
        StorageError::Compacted
    );
    let snap = s.snapshot(5, 2).unwrap();
    assert_eq!(snap.get_metadata().index, 5);
    assert_eq!(snap.get_metadata().term, 2);
    assert_eq!(&snap.data[..], b"img5");
    assert_eq!(
        store_err(s.snapshot(6, 2).unwrap_err()),
        StorageError::SnapshotTemporarilyUnavailable
    );

    // Leader snapshots: older ones are out of date; a newer one replaces the log.
    let mut old = Snapshot::default();
    old.mut_metadata().index = 4;
    old.mut_metadata().term = 1;
    assert_eq!(
        store_err(s.apply_snapshot(&old).unwrap_err()),
        StorageError::SnapshotOutOfDate
    );
    let mut new = Snapshot::default();
    new.mut_metadata().index = 20;
    new.mut_metadata().term = 4;
    new.mut_metadata().set_conf_state(voters(&[1, 2, 3]));
    new.data = b"img20".to_vec().into();
    s.apply_snapshot(&new).unwrap();
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (21, 20)
    );
    assert_eq!(s.term(20).unwrap(), 4);
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state.commit, 20);
    assert_eq!(st.hard_state.term, 4);
    assert_eq!(st.conf_state.voters, vec![1, 2, 3]);

    // All of it survives power loss.
    let after = fs.power_loss();
    drop(s);
    let s = RaftStore::open("/r", common::opts(Arc::new(after))).unwrap();
    let rec = s.recovered().unwrap();
    assert_eq!(rec.hard_state.commit, 20);
    assert_eq!(rec.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(&rec.snapshot.unwrap().data[..], b"img20");
    assert!(rec.entries.is_empty());
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (21, 20)
    );
}

/// Drives a one-member RawNode through raft-rs's Ready order with real files, proposes
/// events, restarts from disk, and finds every committed event again.
#[test]
fn single_node_ready_loop_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let cfg = Config {
        id: 1,
        election_tick: 10,
        heartbeat_tick: 1,
        ..Default::default()
    };
    let mut applied: Vec<Event> = Vec::new();
    {
        let mut store = RaftStore::open(dir.path(), common::real()).unwrap();
        store.set_conf_state(&voters(&[1])).unwrap();
        store.sync().unwrap();
        let mut node = RawNode::new(&cfg, store, &logger).unwrap();
        node.campaign().unwrap();
        let mut proposed = 0;
        for round in 0..200 {
            if node.raft.state == raft::StateRole::Leader && proposed < 20 {
                let ev = Event {
                    domain: "naming".into(),
                    service_key: format!("public##DEFAULT_GROUP@@svc{}", proposed % 3),
                    kind: "register".into(),
                    time_ms: 1_000 + proposed,
                    body: b"{}".to_vec(),
                };
                node.propose(vec![], ev.encode()).unwrap();
                proposed += 1;
            }
            drive(&mut node, &mut applied);
            if proposed == 20 && applied.len() == 20 {
                break;
            }
            assert!(round < 199, "did not converge");
        }
    }
    assert_eq!(applied.len(), 20);
    // Restart: recover, rebuild the state machine from committed entries, become leader again.
    let store = RaftStore::open(dir.path(), common::real()).unwrap();
    let rec = store.recovered().unwrap();
    let replayed: Vec<Event> = rec
        .entries
        .iter()
        .filter(|e| e.index <= rec.hard_state.commit)
        .filter_map(|e| Event::decode(&e.data))
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(replayed, applied);
    let cfg = Config {
        applied: rec.hard_state.commit,
        ..cfg
    };
    let mut node = RawNode::new(&cfg, store, &logger).unwrap();
    node.campaign().unwrap();
    let mut more = Vec::new();
    for _ in 0..20 {
        drive(&mut node, &mut more);
    }
    assert_eq!(node.raft.state, raft::StateRole::Leader);
    assert!(node.raft.term >= 2);
}

/// One Ready round in raft-rs's order: persist entries and hard state, sync, apply, advance.
fn drive(node: &mut RawNode<RaftStore>, applied: &mut Vec<Event>) {
    if !node.has_ready() {
        return;
    }
    let mut rd = node.ready();
    assert!(rd.messages().is_empty(), "single node sends nothing");
    if !rd.snapshot().is_empty() {
        node.mut_store().apply_snapshot(rd.snapshot()).unwrap();
    }
    apply(rd.take_committed_entries(), applied);
    node.mut_store().append(rd.entries()).unwrap();
    if let Some(hs) = rd.hs() {
        node.mut_store().set_hardstate(hs).unwrap();
    }
    node.mut_store().sync().unwrap();
    let mut light = node.advance(rd);
    if let Some(commit) = light.commit_index() {
        node.mut_store().set_commit(commit).unwrap();
        node.mut_store().sync().unwrap();
    }
    apply(light.take_committed_entries(), applied);
    node.advance_apply();
}

fn apply(entries: Vec<Entry>, applied: &mut Vec<Event>) {
    for e in entries {
        if let Some(ev) = Event::decode(&e.data) {
            applied.push(ev.unwrap());
        }
    }
}

/// A crash right after a leader snapshot's marker became durable, before the hard state
/// record that follows it: replay raises commit to the snapshot index, so raft-rs accepts the
/// recovered state (it panics on `commit < snapshot index`).
#[test]
fn snapshot_marker_without_following_hard_state_recovers() {
    use muster_storage::record::ConfStateRecord;
    use muster_storage::snapshot::SnapshotData;
    use muster_storage::wal::Wal;
    let fs = SimFs::new();
    {
        let mut wal = Wal::open("/r", common::opts(Arc::new(fs.clone()))).unwrap();
        wal.append(&[common::entry(1, 1, 8), common::hs(1, 1, 1)])
            .unwrap();
        let snap = SnapshotData {
            index: 50,
            term: 3,
            conf_state: ConfStateRecord {
                voters: vec![1],
                ..Default::default()
            },
            data: b"img".to_vec(),
        };
        wal.write_snapshot(&snap, true).unwrap();
    }
    let store = RaftStore::open("/r", common::opts(Arc::new(fs.power_loss()))).unwrap();
    let st = store.initial_state().unwrap();
    assert_eq!((st.hard_state.commit, st.hard_state.term), (50, 3));
    assert_eq!(st.conf_state.voters, vec![1]);
    assert_eq!(
        (store.first_index().unwrap(), store.last_index().unwrap()),
        (51, 50)
    );
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let cfg = Config {
        id: 1,
        applied: 50,
        ..Default::default()
    };
    let node = RawNode::new(&cfg, store, &logger).unwrap();
    assert_eq!(node.raft.raft_log.committed, 50);
}
