//! Why the node could not carry out a write, and the one place such a failure becomes a Nacos
//! answer ([`From<Error> for ApiError`]).

use crate::error::ApiError;

/// A write the node could not carry out. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Persistent storage failed; `kind` says how, `why` names the file and cause.
    #[error("the write was not persisted ({kind}): {why}")]
    Storage {
        /// The kind of failure.
        kind: StorageFailure,
        /// What storage reported.
        why: String,
    },
    /// Persistent storage stopped after an unrecoverable failure; a restart is needed.
    #[error("persistent storage is unavailable: {0}")]
    StorageGone(String),
    /// No raft leader took the write in time: none is elected (an election, or this member is
    /// on the minority side of a partition), or the one known did not commit it. `why` says
    /// which; whether a write that reached a leader commits later is unknown.
    #[error("no raft leader {0}, please try again later")]
    NoLeader(String),
    /// This member is not a voter of the raft group (removed, or not yet added): it takes no
    /// persistent writes.
    #[error("this member is not in the raft group ({0}); it takes no persistent writes")]
    NotVoter(String),
    /// raft refused the proposal.
    #[error("raft rejected the proposal: {0}")]
    Rejected(String),
    /// A committed entry could not be decoded, so it was not applied.
    #[error("committed entry {index} is unreadable: {why}")]
    Unreadable {
        /// The entry's raft index.
        index: u64,
        /// Why it does not decode.
        why: String,
    },
    /// A bounded queue stayed full for its whole wait: `queue` names it.
    #[error("server is busy: {queue} is full, please try again later")]
    Busy {
        /// E.g. `the raft proposal queue`, `shard 1's inbox`.
        queue: String,
    },
    /// The server is stopping: retry on another server or later.
    #[error("{0}")]
    ShuttingDown(String),
    /// The member responsible for the service (Distro) did not answer a forwarded write;
    /// whether it applied it is unknown. Stock clients then try another server.
    #[error("the responsible member {member} is unreachable: {why}")]
    Unreachable {
        /// The responsible member's address.
        member: std::net::SocketAddr,
        /// Why the call failed.
        why: String,
    },
    /// The part that took the write stopped without answering; whether it was applied is
    /// unknown to this request.
    #[error("{0}")]
    Dropped(String),
}

/// How persistent storage failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFailure {
    /// The disk is full: writes resume once space is freed.
    NoSpace,
    /// Bytes on disk are damaged.
    Corruption,
    /// Any other IO failure.
    Io,
}

impl std::fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageFailure::NoSpace => "no space left",
            StorageFailure::Corruption => "corruption",
            StorageFailure::Io => "io error",
        })
    }
}

impl Error {
    /// A storage failure, classified from the consensus error.
    pub fn storage(e: &crate::consensus::Error) -> Error {
        let kind = if e.is_no_space() {
            StorageFailure::NoSpace
        } else if e.is_corruption() {
            StorageFailure::Corruption
        } else {
            StorageFailure::Io
        };
        Error::Storage {
            kind,
            why: e.to_string(),
        }
    }
}

impl From<Error> for ApiError {
    /// Nacos answers a failed write with 500 (`caused: …;`) and asks a retry with 503. A full
    /// disk is a 500 like any storage failure: Nacos clients treat 5xx alike and retry.
    fn from(e: Error) -> ApiError {
        match &e {
            Error::NoLeader(_) | Error::NotVoter(_) => ApiError::unavailable_caused(e.to_string()),
            Error::Busy { .. } | Error::ShuttingDown(_) | Error::Unreachable { .. } => {
                ApiError::unavailable(e.to_string())
            }
            Error::Storage { .. }
            | Error::StorageGone(_)
            | Error::Rejected(_)
            | Error::Unreadable { .. }
            | Error::Dropped(_) => ApiError::server(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_errors_become_nacos_answers() {
        let busy = ApiError::from(Error::Busy {
            queue: "the raft proposal queue".into(),
        });
        assert_eq!(busy.status, 503);
        assert_eq!(
            busy.msg,
            "server is busy: the raft proposal queue is full, please try again later"
        );
        let none = ApiError::from(Error::NoLeader("elected within 1500 ms".into()));
        assert_eq!(none.status, 503);
        assert_eq!(
            none.body("/"),
            "caused: no raft leader elected within 1500 ms, please try again later;"
        );
        let full = ApiError::from(Error::Storage {
            kind: StorageFailure::NoSpace,
            why: "fallocate x: No space left on device".into(),
        });
        assert_eq!(full.status, 500);
        assert_eq!(
            full.body("/"),
            "caused: the write was not persisted (no space left): fallocate x: No space left on device;"
        );
    }
}
