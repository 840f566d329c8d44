//! The raft thread: drives the consensus [`Driver`] over the WAL-backed store, carries out its
//! actions (append, fdatasync, apply, snapshot) and hands committed ops to the owner shards.
//!
//! Persistent writes go propose → persist → commit → apply → answer: a shard sends a
//! [`Proposal`]; this thread proposes it, appends and fdatasyncs the Ready's entries (one sync
//! per Ready: group commit), and once raft commits the entry it folds the op into the [`StateMachine`]
//! and hands it to the owner shard, which applies it to the registry and answers the client.
//! Only this thread touches the WAL, so no shard ever waits on its IO.
//!
//! Standalone Muster runs a one-member group (node id 1). A storage failure fails every
//! pending proposal with 500 and reopens the store from disk, so nothing unsynced is ever
//! acknowledged and writes resume once the cause (e.g. a full disk) is gone.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_storage::raft_store::RaftStore;
use muster_storage::wal::Options;
use raft::eraftpb::Entry;

use crate::clock::wall_ms;
use crate::consensus;
use crate::consensus::driver::{Action, Driver, Ticks};
use crate::consensus::recover::{fold, Recovery};
use crate::consensus::state_machine::{Change, StateMachine};
use crate::error::ApiResult;
use crate::naming::op::PersistentOp;
use crate::naming::service::ServiceKey;
use crate::naming::write::{Reply, Restore};
use crate::node::mailbox::{Message, Op};
use crate::node::shard::Shared;
use crate::node::Error;

/// Raft tick period.
const TICK: Duration = Duration::from_millis(100);
/// Most proposals taken into one Ready (one fdatasync).
const MAX_BATCH: usize = 4096;

/// A persistent change waiting for consensus.
#[derive(Debug)]
pub struct Proposal {
    /// The service.
    pub key: ServiceKey,
    /// The change.
    pub op: PersistentOp,
    /// Answered by the owner shard after it applied the committed change.
    pub reply: flume::Sender<ApiResult<Reply>>,
}

/// Settings of the raft thread.
#[derive(Debug, Clone, Copy)]
pub struct RaftSettings {
    /// Take a snapshot (and truncate the log behind it) every this many applied entries, or
    /// every as many entries as the persistent state has records, whichever is more.
    pub snapshot_entries: u64,
}

/// Starts the raft thread: replays recovered state to the owner shards, marks the server
/// ready once they applied it, then serves proposals until every sender is gone.
pub fn spawn(
    rec: Recovery,
    shared: Arc<Shared>,
    proposals: flume::Receiver<Proposal>,
    settings: RaftSettings,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("muster-raft".into())
        .spawn(move || run(rec, shared, proposals, settings))
}

/// Sends `op` for `key` to its owner shard's mailbox (blocking while the inbox is full: the
/// raft thread never drops committed work). A stopped shard answers `reply` with 503.
fn dispatch(
    shared: &Shared,
    key: ServiceKey,
    op: Op,
    reply: Option<flume::Sender<ApiResult<Reply>>>,
) {
    let owner = shared.ownership.shard(&key);
    if let Err(e) = shared.inboxes[owner].send(Message::Apply { key, op, reply }) {
        if let Message::Apply { reply: Some(r), .. } = e.into_inner() {
            let _ = r.send(Err(Error::ShuttingDown("shutting down".into()).into()));
        }
    }
}

fn run(
    rec: Recovery,
    shared: Arc<Shared>,
    proposals: flume::Receiver<Proposal>,
    settings: RaftSettings,
) {
    let Recovery {
        store,
        mut sm,
        tail,
        dir,
        segment_bytes,
    } = rec;
    // Rebuild the owners' registries, one message per service, then wait until every shard
    // has applied them.
    let restoring = Instant::now();
    tracing::info!(
        services = sm.naming.service_count(),
        instances = sm.naming.instance_count(),
        applied = sm.applied,
        "recovered persistent state"
    );
    for (key, s) in sm.naming.services() {
        let restore = Restore {
            settings: s.settings.clone(),
            clusters: s
                .clusters
                .iter()
                .map(|(n, m)| (n.clone(), m.clone()))
                .collect(),
            instances: s.instances().cloned().collect(),
        };
        dispatch(&shared, key.clone(), Op::Restore(Box::new(restore)), None);
    }
    let mut barriers = Vec::new();
    for shard in 0..shared.inboxes.len() {
        let (tx, rx) = flume::bounded(1);
        let _ = shared.inboxes[shard].send(Message::Barrier { reply: tx });
        barriers.push(rx);
    }
    for b in barriers {
        let _ = b.recv();
    }
    tracing::info!(
        restore_ms = restoring.elapsed().as_millis() as u64,
        "the shards hold the recovered state"
    );
    let mut node = match new_node(store, sm.applied) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("cannot start the raft node: {e}");
            return;
        }
    };
    let mut pending: Pending = HashMap::new();
    // Entries replayed from the log count towards the next snapshot, so a long log left by the
    // last run is folded into one soon after startup (never before ready: snapshots are taken
    // only in the serving loop).
    let mut since_snapshot = tail;
    // Become leader (a one-member group elects itself on its first Ready) before opening the
    // gate, so the first write after readiness does not meet "no leader yet".
    for _ in 0..100 {
        if node.is_leader() {
            break;
        }
        if let Err(e) = on_ready(
            &mut node,
            &shared,
            &mut sm,
            &mut pending,
            &mut since_snapshot,
        ) {
            tracing::error!("raft failed while electing itself: {e}");
            return;
        }
        if !node.is_leader() {
            node.tick();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    shared.recovered.store(true, Ordering::SeqCst);
    shared.ready.store(true, Ordering::SeqCst);
    tracing::info!("persistent state is ready");

    let mut next_id: u64 = 1;
    let mut last_tick = Instant::now();
    let mut batch = Vec::new();
    let mut config_batch = Vec::new();
    loop {
        let wait = TICK.saturating_sub(last_tick.elapsed());
        // Naming and config proposals share the Ready (one fdatasync for both).
        let got = flume::Selector::new()
            .recv(&proposals, |r| r.map(Some))
            .recv(&shared.configs.rx, |r| {
                r.map(|p| {
                    config_batch.push(p);
                    None
                })
            })
            .wait_timeout(wait);
        match got {
            Ok(Ok(first)) => {
                batch.extend(first);
                while batch.len() < MAX_BATCH {
                    match proposals.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                while config_batch.len() < MAX_BATCH {
                    match shared.configs.rx.try_recv() {
                        Ok(p) => config_batch.push(p),
                        Err(_) => break,
                    }
                }
            }
            Err(flume::select::SelectError::Timeout) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
            }
            Ok(Err(flume::RecvError::Disconnected)) => break,
        }
        if last_tick.elapsed() >= TICK {
            node.tick();
            last_tick = Instant::now();
        }
        for p in batch.drain(..) {
            if !node.is_leader() {
                let _ = p.reply.send(Err(Error::NotLeader.into()));
                continue;
            }
            let change = Change::Naming {
                key: p.key.clone(),
                op: p.op,
            };
            let ev = change.to_event(wall_ms());
            let id = next_id;
            next_id += 1;
            match node.propose(id.to_le_bytes().to_vec(), ev.encode()) {
                Ok(()) => {
                    pending.insert(id, (p.key, p.reply));
                }
                Err(e) => {
                    let _ = p.reply.send(Err(Error::Rejected(e.to_string()).into()));
                }
            }
        }
        for p in config_batch.drain(..) {
            if !node.is_leader() {
                let _ = p.reply.send(Err(Error::NotLeader.into()));
                continue;
            }
            let ev = Change::Config(p.op).to_event(wall_ms());
            let id = next_id;
            next_id += 1;
            match node.propose(id.to_le_bytes().to_vec(), ev.encode()) {
                Ok(()) => shared.configs.proposed(id, p.reply),
                Err(e) => {
                    let _ = p.reply.send(Err(Error::Rejected(e.to_string()).into()));
                }
            }
        }
        let step = on_ready(
            &mut node,
            &shared,
            &mut sm,
            &mut pending,
            &mut since_snapshot,
        )
        .and_then(|()| maybe_snapshot(&mut node, &sm, &mut since_snapshot, settings));
        match step {
            Ok(()) => {}
            Err(e) => {
                if e.is_disk_failure() {
                    stop_on_disk_failure(&dir, &e);
                }
                tracing::error!(dir = %dir.display(), "{e}; failing pending writes and reopening the log");
                for (_, (_, reply)) in pending.drain() {
                    let _ = reply.send(Err(Error::storage(&e).into()));
                }
                shared.configs.fail_pending(&Error::storage(&e).into());
                // The old store holds the directory lock: drop it before reopening.
                let old = node;
                drop(old);
                match reopen(&dir, segment_bytes, &mut sm, &shared) {
                    Ok(n) => node = n,
                    Err(e) => {
                        tracing::error!(
                            "cannot reopen the write-ahead log: {e}; persistent writes stop"
                        );
                        shared.ready.store(false, Ordering::SeqCst);
                        fail_forever(&proposals, &e.to_string());
                        return;
                    }
                }
            }
        }
    }
}

/// The disk failed a write or a sync (row S8): exit with [`EXIT_DISK_FAILED`] at once. Nothing
/// unsynced was acknowledged, and the writes in flight never will be (their connections close
/// with the process). A failed fsync is never retried and the log is not reopened in this
/// process, since the page cache may no longer match the disk; the restart recovers from disk.
fn stop_on_disk_failure(dir: &Path, e: &consensus::Error) -> ! {
    tracing::error!(dir = %dir.display(), "{e}: the disk failed; stopping (exit {EXIT_DISK_FAILED})");
    std::process::exit(EXIT_DISK_FAILED)
}

/// Exit status after a disk failure on the log (`EX_IOERR`).
pub const EXIT_DISK_FAILED: i32 = 74;

/// Answers every further proposal with 500 after an unrecoverable storage failure.
fn fail_forever(proposals: &flume::Receiver<Proposal>, why: &str) {
    while let Ok(p) = proposals.recv() {
        let _ = p
            .reply
            .send(Err(Error::StorageGone(why.to_string()).into()));
    }
}

/// The raft driver of this one-member group (node id 1), campaigning at once.
fn new_node(store: RaftStore, applied: u64) -> Result<Node, consensus::Error> {
    let mut node = Driver::new(1, store, applied, Ticks::default())?;
    node.campaign()?;
    Ok(node)
}

type Node = Driver<RaftStore>;

/// Reopens the store after a failure: unsynced bytes are dropped by recovery, and entries that
/// are committed on disk but not yet folded are applied now.
fn reopen(
    dir: &Path,
    segment_bytes: u64,
    sm: &mut StateMachine,
    shared: &Shared,
) -> Result<Node, consensus::Error> {
    let opts = Options {
        segment_size: segment_bytes,
        ..Options::default()
    };
    let store = RaftStore::open(dir, opts).map_err(|source| consensus::Error::Open {
        dir: dir.to_path_buf(),
        source,
    })?;
    let st = store.wal().state();
    for e in &st.entries {
        if e.index > sm.applied && e.index <= st.hard_state.commit {
            let folded = fold(sm, e.index, i32::from(e.entry_type), &e.data).map_err(|source| {
                consensus::Error::Decode {
                    what: format!("entry {}", e.index),
                    dir: dir.to_path_buf(),
                    source,
                }
            })?;
            match folded {
                Some(Change::Naming { key, op }) => dispatch(shared, key, Op::Committed(op), None),
                Some(Change::Config(op)) => shared.configs.committed(None, &op),
                None => {}
            }
        }
    }
    new_node(store, sm.applied)
}

type Pending = HashMap<u64, (ServiceKey, flume::Sender<ApiResult<Reply>>)>;

fn apply_entries(
    entries: Vec<Entry>,
    shared: &Shared,
    sm: &mut StateMachine,
    pending: &mut Pending,
    since_snapshot: &mut u64,
) -> Result<(), consensus::Error> {
    for e in entries {
        let id = (e.context.len() == 8).then(|| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&e.context);
            u64::from_le_bytes(b)
        });
        let reply = id.and_then(|id| pending.remove(&id)).map(|(_, r)| r);
        *since_snapshot += 1;
        match fold(sm, e.index, e.get_entry_type() as i32, &e.data) {
            Ok(Some(Change::Naming { key, op })) => dispatch(shared, key, Op::Committed(op), reply),
            Ok(Some(Change::Config(op))) => shared.configs.committed(id, &op),
            Ok(None) => {
                if let Some(r) = reply {
                    let _ = r.send(Ok(Reply::Ok));
                }
            }
            Err(source) => {
                if let Some(r) = reply {
                    let _ = r.send(Err(Error::Unreadable {
                        index: e.index,
                        why: source.to_string(),
                    }
                    .into()));
                }
                return Err(consensus::Error::Decode {
                    what: format!("committed entry {}", e.index),
                    dir: node_dir(shared),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Takes a snapshot and truncates the log behind it when enough entries were applied since the
/// last one: at least `snapshot_entries`, and at least half as many as the state holds records.
/// A snapshot costs O(state), so the second bound keeps that O(1) per entry (about 0.7 µs of
/// encoding per entry at 1M records) while the log a restart replays after the snapshot stays
/// under half the state (recovery folds a logged op about 3× slower than a snapshotted record).
fn maybe_snapshot(
    node: &mut Node,
    sm: &StateMachine,
    since_snapshot: &mut u64,
    settings: RaftSettings,
) -> Result<(), consensus::Error> {
    let min = settings.snapshot_entries.max(1);
    let records = sm.records();
    if *since_snapshot < min || *since_snapshot < records / 2 {
        return Ok(());
    }
    *since_snapshot = 0;
    let started = Instant::now();
    let applied = sm.applied;
    let cs = node.conf_state();
    node.store_mut().sync()?;
    let image = sm.encode();
    let encoded = started.elapsed();
    match node.store_mut().create_snapshot(applied, &cs, image) {
        Ok(()) => {
            let removed = node.store_mut().compact(applied)?;
            tracing::info!(
                index = applied,
                segments_removed = removed,
                encode_ms = encoded.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "snapshot taken"
            );
        }
        Err(e) => tracing::warn!("snapshot at {applied} skipped: {e}"),
    }
    Ok(())
}

/// Carries out everything raft has ready, in the driver's order: committed entries go to the
/// owner shards, appends and the hard state are synced once per Ready (group commit).
fn on_ready(
    node: &mut Node,
    shared: &Shared,
    sm: &mut StateMachine,
    pending: &mut Pending,
    since_snapshot: &mut u64,
) -> Result<(), consensus::Error> {
    node.drive(|store, action| match action {
        // A one-member group has no peers to send to.
        Action::Send(_) | Action::SendPersisted(_) => Ok(()),
        Action::InstallSnapshot(snap) => Ok(store.apply_snapshot(&snap)?),
        Action::Apply(entries) => apply_entries(entries, shared, sm, pending, since_snapshot),
        Action::Append(entries) => Ok(store.append(&entries)?),
        Action::SetHardState(hs) => Ok(store.set_hardstate(&hs)?),
        Action::Sync => Ok(store.sync()?),
        Action::SetCommit(commit) => Ok(store.set_commit(commit)?),
        Action::SetConfState(cs) => Ok(store.set_conf_state(&cs)?),
        Action::ReadStates(_) => Ok(()),
    })
    .map(|_| ())
}

/// The WAL directory, for errors that name it.
fn node_dir(shared: &Shared) -> std::path::PathBuf {
    shared.config.data_dir.join("raft")
}
