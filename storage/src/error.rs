//! One error type for the crate. Every variant says what failed, where (file and byte offset) and
//! why. **Corruption and IO are different things** (the raft-engine rule): recovery may repair a
//! torn tail, but an [`Error::Io`] is always returned to the caller and never treated as damage.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::format::FrameError;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system call failed. Never tolerated as corruption; after a failed sync the
    /// WAL is poisoned (see [`Error::Poisoned`]).
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation, e.g. `"fallocate"`, `"msync"`, `"rename"`.
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Bytes on disk do not decode. `offset` is the byte offset of the damaged record (or 0 for a
    /// segment or snapshot header) inside `path`.
    #[error("corrupt {} at byte {offset}: {reason}", path.display())]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the first bad record or header inside `path`.
        offset: u64,
        /// What is wrong there.
        reason: Corruption,
    },
    /// Another process holds the data directory's `LOCK`.
    #[error("data directory {} is locked by another process (LOCK held)", path.display())]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// A previous sync failed: the state of the page cache is unknown, so the WAL refuses all
    /// further work. Restart the process and recover from disk.
    #[error("wal is poisoned by an earlier failed {op}; restart and recover")]
    Poisoned {
        /// The operation that failed first.
        op: &'static str,
    },
    /// The caller broke an API precondition (e.g. appended entries with a gap). Nothing was
    /// written.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl Error {
    /// True when this is an out-of-space error (`ENOSPC`, or `EDQUOT`). The WAL stays usable:
    /// nothing was written, the caller may retry once space is freed (the server answers 500
    /// `the write was not persisted (no space left): …`).
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT)
            ),
            _ => false,
        }
    }

    /// True when the disk failed a write, sync, rename or remove ([`Error::Io`] other than a full
    /// disk), or the WAL is [`Error::Poisoned`] by such a failure. The process must stop: after
    /// a failed fsync the page cache may already have dropped the data, so neither a retry nor
    /// a reopen that reads the files back can tell what is durable.
    pub fn is_disk_failure(&self) -> bool {
        match self {
            Error::Io { .. } => !self.is_no_space(),
            Error::Poisoned { .. } => true,
            _ => false,
        }
    }

    /// True for [`Error::Corruption`].
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: Corruption) -> Self {
        Error::Corruption {
            path: path.into(),
            offset,
            reason,
        }
    }
}

/// What is wrong with damaged bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// A record frame does not decode.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// A segment or snapshot header is invalid.
    #[error("bad header: {0}")]
    Header(crate::format::HeaderError),
    /// A sealed (not last) segment has an end-of-data marker before its end of file.
    #[error("sealed segment ends early: zero header with {remaining} bytes before end of file")]
    EarlyEnd {
        /// Bytes between the zero header and the end of the file.
        remaining: u64,
    },
    /// Raft entry indexes skip a value.
    #[error("log gap: expected entry index <= {expected}, found {found}")]
    Gap {
        /// Highest index that may come next.
        expected: u64,
        /// Index found.
        found: u64,
    },
    /// The hard state commits entries the log does not hold.
    #[error("hard state commit {commit} is beyond the last entry {last}")]
    CommitBeyondLog {
        /// Commit index in the hard state.
        commit: u64,
        /// Last index in the log.
        last: u64,
    },
    /// The segment sequence numbers are not consecutive.
    #[error("segment sequence gap: expected {expected}, found {found}")]
    SequenceGap {
        /// Sequence that should come next.
        expected: u64,
        /// Sequence found.
        found: u64,
    },
    /// A snapshot named by the log is missing or does not match.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// A position in the log: segment sequence and byte offset inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Position {
    /// Segment sequence number (the `seq` of `{seq:016x}-{first_index:016x}.wal`).
    pub seq: u64,
    /// Byte offset inside the segment.
    pub offset: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.seq, self.offset)
    }
}
