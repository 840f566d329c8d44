//! [`RaftStore`]: raft-rs's [`Storage`] over the [`Wal`], plus the writes a Ready loop needs.
//!
//! Reads (`entries`, `term`, …) are served from memory (the entries after the compaction
//! point, replayed at open). Writes go to the WAL and are durable after [`RaftStore::sync`].
//! Errors follow raft-rs's `StorageError` contract:
//!
//! | call | condition | error |
//! |---|---|---|
//! | `entries(lo, hi)` | `lo <= compacted index` | `Compacted` |
//! | `entries(lo, hi)` | `hi > last_index + 1` | `Unavailable` |
//! | `term(i)` | `i < compacted index` | `Compacted` |
//! | `term(i)` | `i > last_index` | `Unavailable` |
//! | `snapshot(req, _)` | no snapshot, or its index `< req` | `SnapshotTemporarilyUnavailable` |
//! | `apply_snapshot(s)` | `s.index <= compacted index` | `SnapshotOutOfDate` |
//! | any | storage failure | `Other(Box<crate::Error>)` |

use std::path::Path;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::error::{Error, Result};
use crate::record::{ConfStateRecord, EntryRecord, HardStateRecord, Record};
use crate::snapshot::SnapshotData;
use crate::wal::{Options, Wal};

/// What [`RaftStore::open`] recovered, for the server to rebuild its state machine.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// Persisted hard state (term, vote, commit).
    pub hard_state: HardState,
    /// Persisted membership.
    pub conf_state: ConfState,
    /// The latest snapshot (metadata and data), if any: load it into the state machine first.
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, in index order (apply those `<= hard_state.commit`).
    pub entries: Vec<Entry>,
}

/// The raft log store. Own it inside the `RawNode` (`RawNode::new(&cfg, store, &logger)`) and
/// write through `raw_node.mut_store()`.
#[derive(Debug)]
pub struct RaftStore {
    wal: Wal,
}

fn other(e: Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

fn to_snapshot(s: &SnapshotData) -> Snapshot {
    let mut snap = Snapshot {
        data: s.data.clone().into(),
        ..Snapshot::default()
    };
    let meta = snap.mut_metadata();
    meta.index = s.index;
    meta.term = s.term;
    meta.set_conf_state(s.conf_state.to_conf_state());
    snap
}

impl RaftStore {
    /// Opens or creates the store in `dir` (see [`Wal::open`] for recovery and repair).
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<RaftStore> {
        Ok(RaftStore {
            wal: Wal::open(dir, opts)?,
        })
    }

    /// What was recovered at open: hard state, conf state, snapshot and entries.
    pub fn recovered(&self) -> Result<Recovered> {
        let st = self.wal.state();
        Ok(Recovered {
            hard_state: st.hard_state.to_hard_state(),
            conf_state: st.conf_state.to_conf_state(),
            snapshot: self.wal.load_snapshot()?.as_ref().map(to_snapshot),
            entries: st.entries.iter().map(EntryRecord::to_entry).collect(),
        })
    }

    /// The snapshot validated at open, moved out (see [`Wal::take_opened_snapshot`]); `None`
    /// after the first call or when the log names none.
    pub fn take_opened_snapshot(&mut self) -> Option<SnapshotData> {
        self.wal.take_opened_snapshot()
    }

    /// Appends entries (raft's `Ready::entries`); entries at or below the last index replace
    /// the conflicting tail. Not durable until [`RaftStore::sync`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let recs: Vec<Record> = entries
            .iter()
            .map(|e| Record::Entry(EntryRecord::from(e)))
            .collect();
        self.wal.append(&recs).map(drop)
    }

    /// Records the hard state (raft's `Ready::hs`). Not durable until [`RaftStore::sync`].
    pub fn set_hardstate(&mut self, hs: &HardState) -> Result<()> {
        let rec = HardStateRecord::from(hs);
        if rec == self.wal.state().hard_state {
            return Ok(());
        }
        self.wal.append(&[Record::HardState(rec)]).map(drop)
    }

    /// Records the commit index only (raft's `LightReady::commit_index`).
    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        let mut hs = self.wal.state().hard_state;
        hs.commit = commit;
        self.set_hardstate(&hs.to_hard_state())
    }

    /// Records the membership after applying a conf change. Not durable until
    /// [`RaftStore::sync`].
    pub fn set_conf_state(&mut self, cs: &ConfState) -> Result<()> {
        let rec = ConfStateRecord::from(cs);
        if rec == self.wal.state().conf_state {
            return Ok(());
        }
        self.wal.append(&[Record::ConfState(rec)]).map(drop)
    }

    /// Group commit: makes every write so far durable (fdatasync). Acknowledge clients and send
    /// `persisted_messages` only after this returns `Ok`.
    pub fn sync(&mut self) -> Result<()> {
        self.wal.sync()
    }

    /// Installs a snapshot received from the leader (raft's `Ready::snapshot`): writes the
    /// snapshot file atomically, replaces the log with it, sets commit and term, syncs.
    /// Returns `SnapshotOutOfDate` when it is not newer than what we have.
    pub fn apply_snapshot(&mut self, snap: &Snapshot) -> raft::Result<()> {
        let meta = snap.get_metadata();
        let st = self.wal.state();
        if meta.index <= st.compacted_index {
            return Err(raft::Error::Store(StorageError::SnapshotOutOfDate));
        }
        let data = SnapshotData {
            index: meta.index,
            term: meta.term,
            conf_state: ConfStateRecord::from(meta.get_conf_state()),
            data: snap.data.to_vec(),
        };
        let mut hs = st.hard_state;
        hs.term = hs.term.max(meta.term);
        hs.commit = meta.index;
        crate::failpoint::hit(crate::failpoint::SNAPSHOT_INSTALL)
            .map_err(|e| other(Error::io("install snapshot", self.wal.dir(), e)))?;
        self.wal.write_snapshot(&data, true).map_err(other)?;
        self.wal
            .append(&[
                Record::HardState(hs),
                Record::ConfState(data.conf_state.clone()),
            ])
            .map_err(other)?;
        self.wal.sync().map_err(other)?;
        self.wal.purge().map_err(other)?;
        Ok(())
    }

    /// Saves a snapshot of the local state machine taken at applied index `index` (which must
    /// be in the log, and `<=` commit). The log is not compacted; call [`RaftStore::compact`]
    /// afterwards (perhaps keeping some entries for slow followers).
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: &ConfState,
        data: Vec<u8>,
    ) -> Result<()> {
        let st = self.wal.state();
        if index > st.hard_state.commit {
            return Err(Error::Invalid(format!(
                "snapshot index {index} is beyond the commit index {}",
                st.hard_state.commit
            )));
        }
        let term = st.term(index).ok_or_else(|| {
            Error::Invalid(format!(
                "snapshot index {index} is outside the log [{}, {}]",
                st.compacted_index,
                st.last_index()
            ))
        })?;
        if st.snapshot.as_ref().is_some_and(|s| s.index >= index) {
            return Err(Error::Invalid(format!(
                "snapshot index {index} is not newer than the current snapshot"
            )));
        }
        let snap = SnapshotData {
            index,
            term,
            conf_state: ConfStateRecord::from(conf_state),
            data,
        };
        self.wal.write_snapshot(&snap, false)
    }

    /// Rewrites the log's membership to `conf_state`, once, when a standalone data dir becomes
    /// the first member of a cluster: a snapshot of `image` (the state machine at the last
    /// index, which must be committed and applied) carrying the new membership replaces the
    /// whole log, and the vote is cleared (the old vote names the standalone id). Durable when
    /// it returns.
    pub fn reset_membership(&mut self, conf_state: &ConfState, image: Vec<u8>) -> Result<()> {
        let st = self.wal.state();
        let index = st.last_index();
        let mut hs = st.hard_state;
        if index != hs.commit {
            return Err(Error::Invalid(format!(
                "membership reset needs every entry committed: last index {index}, commit {}",
                hs.commit
            )));
        }
        hs.vote = 0;
        let cs = ConfStateRecord::from(conf_state);
        if index > 0 {
            let term = st.term(index).ok_or_else(|| {
                Error::Invalid(format!("membership reset: no term for index {index}"))
            })?;
            let snap = SnapshotData {
                index,
                term,
                conf_state: cs.clone(),
                data: image,
            };
            self.wal.write_snapshot(&snap, true)?;
        }
        self.wal
            .append(&[Record::HardState(hs), Record::ConfState(cs)])?;
        self.wal.sync()?;
        self.wal.purge().map(drop)
    }

    /// Discards entries at or below `index` (which must be `<=` the snapshot index) and deletes
    /// whole segments behind it. Returns the number of segments deleted.
    pub fn compact(&mut self, index: u64) -> Result<usize> {
        self.wal.compact(index)
    }

    /// The underlying WAL (positions, segments, recovery report).
    pub fn wal(&self) -> &Wal {
        &self.wal
    }
}

impl Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let st = self.wal.state();
        Ok(RaftState::new(
            st.hard_state.to_hard_state(),
            st.conf_state.to_conf_state(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let st = self.wal.state();
        if low <= st.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > st.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let base = st.compacted_index + 1;
        let mut out: Vec<Entry> = st
            .entries
            .range((low - base) as usize..(high - base) as usize)
            .map(EntryRecord::to_entry)
            .collect();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let st = self.wal.state();
        if idx < st.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        st.term(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.wal.state().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.wal.state().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match self.wal.load_snapshot().map_err(other)? {
            Some(s) if s.index >= request_index => Ok(to_snapshot(&s)),
            _ => Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            )),
        }
    }
}
