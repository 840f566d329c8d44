//! Recovery: open the WAL and rebuild the persistent state machine from the snapshot and the
//! committed entries, before the server reports ready.

use std::path::{Path, PathBuf};
use std::time::Instant;

use muster_storage::raft_store::RaftStore;
use muster_storage::wal::{Options, RecoveryMode};
use raft::eraftpb::ConfState;

use crate::consensus::state_machine::{Change, DecodeError, StateMachine};
use crate::consensus::Error;

/// The opened log and the state recovered from it.
pub struct Recovery {
    /// The opened log store.
    pub(crate) store: RaftStore,
    /// The persistent state, folded up to `sm.applied`.
    pub(crate) sm: StateMachine,
    /// Log entries folded in after the snapshot.
    pub(crate) tail: u64,
    /// The WAL directory (`DATA_DIR/raft`).
    pub(crate) dir: PathBuf,
    /// Segment size the store was opened with, in bytes.
    pub(crate) segment_bytes: u64,
}

/// Which raft group this node's log belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    /// A one-member group with node id 1.
    Standalone,
    /// A cluster member.
    Cluster {
        /// This member's raft id ([`crate::hash::raft_id`]).
        id: u64,
        /// Every listed member's raft id: a fresh data dir starts a new group of them.
        voters: Vec<u64>,
        /// A fresh data dir waits to be added to an existing group instead.
        join: bool,
    },
}

impl Group {
    /// This node's raft id.
    pub fn id(&self) -> u64 {
        match self {
            Group::Standalone => 1,
            Group::Cluster { id, .. } => *id,
        }
    }
}

/// Opens the WAL under `data_dir/raft` and rebuilds persistent state from the snapshot and
/// committed entries. Corruption refuses to start, naming the file and offset; `mode` says what
/// damage at the very end of the log may be dropped instead (every repair is logged at WARN).
///
/// The membership comes from the log; only a fresh log takes it from `group`:
/// - standalone: voters `{1}`; a log whose voters are not `{1}` (a cluster member's) is refused;
/// - cluster: voters = every listed member, or none with `join` (the leader adds this member);
///   a standalone log (voters `{1}`) becomes the first member of a new cluster: its membership
///   is rewritten to `{this member}` ([`RaftStore::reset_membership`]) and the leader it
///   becomes adds the other members one conf change at a time.
pub fn recover(
    data_dir: &Path,
    segment_bytes: u64,
    mode: RecoveryMode,
    group: &Group,
) -> Result<Recovery, Error> {
    let dir = data_dir.join("raft");
    let opts = Options {
        segment_size: segment_bytes,
        recovery: mode,
        ..Options::default()
    };
    let started = Instant::now();
    let mut store = RaftStore::open(&dir, opts).map_err(|source| Error::Open {
        dir: dir.clone(),
        source,
    })?;
    let rec = store.wal().recovery();
    if let Some(d) = &rec.dropped {
        tracing::warn!(
            data_dir = %data_dir.display(),
            segment = %d.segment.display(),
            offset = d.offset,
            dropped_entries = %d.index_range(),
            kept_last_index = d.kept_last_index,
            commit_lowered_from = d.commit_lowered_from,
            reason = %d.reason,
            "wal recovery (truncate-tail): dropped corrupt records at the end of the log"
        );
    }
    if let Some((seg, offset, broken)) = &rec.repaired {
        tracing::warn!(
            data_dir = %data_dir.display(),
            segment = %seg.display(),
            offset,
            broken = %broken.display(),
            "wal recovery: cut a damaged tail; the segment was kept as .broken"
        );
    }
    let (hard_state, conf_state) = {
        let st = store.wal().state();
        (st.hard_state, st.conf_state.clone())
    };
    let fresh = conf_state.voters.is_empty() && conf_state.learners.is_empty();
    let standalone_log = conf_state.voters == [1] && conf_state.learners.is_empty();
    let first = match group {
        Group::Standalone if fresh => Some(vec![1]),
        Group::Standalone if !standalone_log => {
            return Err(Error::Membership {
                dir: dir.clone(),
                why: format!(
                    "this data dir belongs to a cluster member (raft voters {:?}); start it \
                     with --members",
                    conf_state.voters
                ),
            })
        }
        Group::Cluster {
            join: false,
            voters,
            ..
        } if fresh => Some(voters.clone()),
        _ => None,
    };
    if let Some(voters) = first {
        let cs = ConfState {
            voters,
            ..Default::default()
        };
        store.set_conf_state(&cs).and_then(|_| store.sync())?;
    }
    let opened = started.elapsed();
    let mut sm = match store.take_opened_snapshot() {
        Some(s) => {
            let mut sm = StateMachine::decode(&s.data).map_err(|source| Error::Decode {
                what: format!("snapshot at index {}", s.index),
                dir: dir.clone(),
                source,
            })?;
            sm.applied = s.index;
            sm
        }
        None => StateMachine::default(),
    };
    // In a one-member group every persisted entry is committed (the quorum is this node), but
    // the commit index in the hard state may lag the entries synced with it. Raise it so that
    // everything acknowledged is folded in before the server reports ready.
    let mut commit = hard_state.commit;
    let last = store.wal().state().last_index();
    let single = conf_state.voters.len() <= 1 && conf_state.learners.is_empty();
    if single && last > commit {
        store.set_commit(last).and_then(|_| store.sync())?;
        commit = last;
    }
    let mut tail = 0;
    for e in &store.wal().state().entries {
        if e.index <= sm.applied || e.index > commit {
            continue;
        }
        tail += 1;
        // Recovery keeps no op: each moves into the state whole.
        let change =
            StateMachine::decode_entry(i32::from(e.entry_type), &e.data).map_err(|source| {
                Error::Decode {
                    what: format!("entry {}", e.index),
                    dir: dir.clone(),
                    source,
                }
            })?;
        match change {
            Some(c) => sm.apply_owned(e.index, c),
            None => sm.applied = sm.applied.max(e.index),
        }
    }
    if let (Group::Cluster { id, .. }, true) = (group, standalone_log) {
        let cs = ConfState {
            voters: vec![*id],
            ..Default::default()
        };
        store.reset_membership(&cs, sm.encode())?;
        tracing::warn!(
            data_dir = %data_dir.display(),
            index = commit,
            id,
            "converted a standalone data dir into the first member of a new cluster (raft \
             voters {{{id}}}); the leader adds the other members one at a time"
        );
    }
    tracing::info!(
        open_ms = opened.as_millis() as u64,
        fold_ms = (started.elapsed() - opened).as_millis() as u64,
        entries = store.wal().state().entries.len(),
        "read the write-ahead log"
    );
    Ok(Recovery {
        store,
        sm,
        tail,
        dir,
        segment_bytes,
    })
}

/// Folds one committed entry (`index`, raft entry type `kind`, `data`) into `sm`; returns the
/// change it carried, if any (the owner shards apply naming changes too).
pub(crate) fn fold(
    sm: &mut StateMachine,
    index: u64,
    kind: i32,
    data: &[u8],
) -> Result<Option<Change>, DecodeError> {
    let found = StateMachine::decode_entry(kind, data)?;
    match &found {
        Some(change) => sm.apply(index, change),
        None => sm.applied = sm.applied.max(index),
    }
    Ok(found)
}
