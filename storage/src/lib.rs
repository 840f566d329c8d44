//! Muster's durable storage: the write-ahead log of the CP raft group, its snapshots, and
//! raft-rs's [`raft::Storage`] over them. The on-disk contract is `storage/FORMAT.md`.
//!
//! # Layers
//!
//! - [`format`]: segment names and headers, the 8-byte aligned record frame, the salted CRC.
//! - [`record`]: rkyv payloads (entry, hard state, conf state, snapshot marker).
//! - [`wal`]: [`wal::Wal`], segments on disk: preallocate, append, group-commit `sync`,
//!   rotate, recover, repair a torn tail, purge behind snapshots. [`wal::scan`] is the
//!   read-only path used by `muster-wal`.
//! - [`raft_store`]: [`RaftStore`], the raft log store the server's Ready loop drives.
//! - [`snapshot`]: atomic snapshot files. [`event`]: the [`Event`] envelope in entry data.
//! - [`fs`] / [`sim`] / [`failpoint`]: the filesystem seam, the fault-injecting simulator and
//!   named failpoints.
//!
//! # Tutorial: a Ready loop over `RaftStore`
//!
//! Open the store (this recovers: torn tails are repaired, corruption refuses to open with the
//! file and offset), bootstrap a fresh single-member group, then drive raft-rs in its Ready
//! order. An entry is durable, and may be acknowledged, only after [`RaftStore::sync`]: call
//! it once per Ready (group commit), never per entry.
//!
//! ```
//! use muster_storage::{Event, Options, RaftStore};
//! use raft::eraftpb::ConfState;
//! use raft::{Config, RawNode, Storage};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! # let data_dir = tmp.path();
//! let mut store = RaftStore::open(data_dir, Options::default())?;
//! let recovered = store.recovered()?; // hard state, conf state, snapshot, entries
//! // 1. Rebuild the state machine: load `recovered.snapshot`, then apply
//! //    `recovered.entries` up to `recovered.hard_state.commit`.
//! if !store.initial_state()?.initialized() {
//!     // A brand-new standalone node: a one-member group.
//!     let mut cs = ConfState::default();
//!     cs.voters = vec![1];
//!     store.set_conf_state(&cs)?;
//!     store.sync()?;
//! }
//! let cfg = Config { id: 1, applied: recovered.hard_state.commit, ..Config::default() };
//! let logger = slog::Logger::root(slog::Discard, slog::o!());
//! let mut node = RawNode::new(&cfg, store, &logger)?;
//! node.campaign()?;
//!
//! // 2. Propose: the state machine event travels in the entry data.
//! let ev = Event {
//!     domain: "naming".into(),
//!     service_key: "public##DEFAULT_GROUP@@orders".into(),
//!     kind: "register".into(),
//!     time_ms: 1_763_000_000_000,
//!     body: br#"{"ip":"10.0.0.1","port":8080}"#.to_vec(),
//! };
//! # for _ in 0..3 {
//! # if node.raft.state == raft::StateRole::Leader { break; }
//! # let mut rd = node.ready();
//! # node.mut_store().append(rd.entries())?;
//! # if let Some(hs) = rd.hs() { node.mut_store().set_hardstate(hs)?; }
//! # node.mut_store().sync()?;
//! # let _ = rd.take_committed_entries();
//! # let _ = node.advance(rd);
//! # node.advance_apply();
//! # }
//! node.propose(vec![], ev.encode())?;
//!
//! // 3. One Ready round (repeat while `node.has_ready()`).
//! let mut rd = node.ready();
//! // send rd.take_messages() to peers ...
//! if !rd.snapshot().is_empty() {
//!     node.mut_store().apply_snapshot(rd.snapshot())?; // durable on return
//! }
//! for e in rd.take_committed_entries() {
//!     if let Some(Ok(event)) = Event::decode(&e.data) { /* apply `event`, answer the client */ }
//! }
//! node.mut_store().append(rd.entries())?;
//! if let Some(hs) = rd.hs() {
//!     node.mut_store().set_hardstate(hs)?;
//! }
//! node.mut_store().sync()?; // group commit: fdatasync before acknowledging or voting
//! // only now send rd.take_persisted_messages() ...
//! let mut light = node.advance(rd);
//! if let Some(commit) = light.commit_index() {
//!     node.mut_store().set_commit(commit)?;
//! }
//! for _e in light.take_committed_entries() { /* apply */ }
//! node.advance_apply();
//!
//! // 4. Now and then: snapshot the state machine at the applied index, then compact.
//! let applied = node.raft.raft_log.applied;
//! let cs = node.store().initial_state()?.conf_state;
//! node.mut_store().create_snapshot(applied, &cs, b"state machine image".to_vec())?;
//! node.mut_store().compact(applied)?; // deletes whole segments behind the snapshot
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! [`Error::Corruption`] (file + byte offset: refuse to start), [`Error::Io`] (fatal; after a
//! failed sync the WAL is [`Error::Poisoned`] and the process must restart), and
//! [`Error::is_no_space`] (disk full at segment preallocation: nothing was written, retry later;
//! the server answers 500, as Nacos does for a failed write).
#![deny(missing_docs)]

pub mod error;
pub mod event;
pub mod failpoint;
pub mod format;
pub mod fs;
pub mod raft_store;
pub mod record;
pub mod sim;
pub mod snapshot;
pub mod wal;

pub use error::{Corruption, Error, Position, Result};
pub use event::Event;
pub use raft_store::{RaftStore, Recovered};
pub use wal::{Options, Wal};

/// raft-rs, re-exported so the server uses the exact version this crate implements.
pub use raft;
