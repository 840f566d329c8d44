//! Errors of the CP layer: what failed (the log, raft, or decoding persisted bytes), where (the
//! WAL directory, the entry index) and why.

use std::path::PathBuf;

use crate::consensus::state_machine::DecodeError;

/// A consensus or persistence failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The write-ahead log in `dir` could not be opened (damage, IO, or another process's lock).
    #[error("cannot open the write-ahead log in {}: {source}", dir.display())]
    Open {
        /// The WAL directory (`DATA_DIR/raft`).
        dir: PathBuf,
        /// What storage reported.
        source: muster_storage::Error,
    },
    /// Writing, syncing or compacting the open log failed. Nothing unsynced was acknowledged.
    #[error("write-ahead log: {0}")]
    Log(#[from] muster_storage::Error),
    /// raft-rs refused a step (a store error it passed through, or a bad configuration).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A committed entry or the snapshot image does not decode: the log holds bytes this
    /// version cannot apply, so applying stops.
    #[error("{what} in {}: {source}", dir.display())]
    Decode {
        /// The entry or snapshot, e.g. `entry 17` or `snapshot at index 12`.
        what: String,
        /// The WAL directory.
        dir: PathBuf,
        /// Why it does not decode.
        source: DecodeError,
    },
    /// The log's raft membership does not fit how this node was started.
    #[error("raft membership in {}: {why}", dir.display())]
    Membership {
        /// The WAL directory.
        dir: PathBuf,
        /// What does not fit, and what to do.
        why: String,
    },
}

impl Error {
    /// True when the disk is full (`ENOSPC`/`EDQUOT`): writes resume once space is freed.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Open { source, .. } | Error::Log(source) => source.is_no_space(),
            _ => false,
        }
    }

    /// True when the disk failed an operation on the open log (see
    /// `muster_storage::Error::is_disk_failure`), also when it reached raft-rs through the
    /// store: the node stops rather than retry or reopen.
    pub fn is_disk_failure(&self) -> bool {
        match self {
            Error::Log(source) => source.is_disk_failure(),
            Error::Raft(raft::Error::Store(raft::StorageError::Other(e))) => e
                .downcast_ref::<muster_storage::Error>()
                .is_some_and(muster_storage::Error::is_disk_failure),
            _ => false,
        }
    }

    /// True when bytes on disk are damaged (as opposed to an IO failure).
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Open { source, .. } | Error::Log(source) => source.is_corruption(),
            Error::Decode { .. } => true,
            Error::Raft(_) | Error::Membership { .. } => false,
        }
    }
}
