//! The member list at run time: a new list (SIGHUP re-reads `cluster.conf`; or
//! `PUT /nacos/v1/core/cluster/members` behind the cluster secret) updates this node's
//! [`crate::cluster::Members`], starts the peer link, the Distro outbox and the raft sender of
//! every member that joined, and ends those of every member that left. Distro re-hashes with
//! the same change (responsibility is computed from the list on every write), and the raft
//! leader moves the raft membership towards the list one conf change at a time
//! (`node/raft.rs`, `Thread::reconcile`): a joining member is added once its link is UP, and a
//! member that left is removed. Each member applies its own list: an operator changes it on
//! every member.

use std::net::SocketAddr;

use crate::cluster::{ListChange, MemberListError};
use crate::node::shard::Shared;

/// Why a new member list was not applied. Nothing changed then.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// This node is standalone.
    #[error("this node is standalone: it has no member list")]
    Standalone,
    /// The members came from `--members`, which cannot be re-read.
    #[error("the members came from --members; start with --cluster-conf to reload them")]
    NoFile,
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The list does not parse or is not acceptable.
    #[error("member list: {0}")]
    List(#[from] MemberListError),
    /// A thread for a new member could not be started.
    #[error("cannot start the threads of member {member}: {source}")]
    Spawn {
        /// The member.
        member: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Re-reads `cluster.conf` and applies it ([`apply`]).
pub fn reload(shared: &Shared) -> Result<ListChange, MembershipError> {
    let cluster = shared
        .config
        .cluster
        .as_ref()
        .ok_or(MembershipError::Standalone)?;
    let path = cluster.conf_file.as_ref().ok_or(MembershipError::NoFile)?;
    let text = std::fs::read_to_string(path).map_err(|source| MembershipError::Read {
        path: path.clone(),
        source,
    })?;
    apply(shared, &crate::cluster::parse_members(&text)?)
}

/// Makes `list` this node's member list (it must include this node).
pub fn apply(shared: &Shared, list: &[SocketAddr]) -> Result<ListChange, MembershipError> {
    let (Some(members), Some(peers)) = (&shared.members, &shared.peers) else {
        return Err(MembershipError::Standalone);
    };
    let change = members.update(list)?;
    for &member in &change.added {
        let spawn = |source| MembershipError::Spawn { member, source };
        let link = peers.add(member).map_err(spawn)?;
        crate::node::distro::add_outbox(shared, member, link).map_err(spawn)?;
        if let Some(t) = &shared.transport {
            t.add(member).map_err(spawn)?;
        }
    }
    for &member in &change.removed {
        shared.outboxes.remove(member);
        peers.remove(member);
        if let Some(t) = &shared.transport {
            t.remove(member);
        }
    }
    if change.added.is_empty() && change.removed.is_empty() {
        tracing::info!(members = ?list, "member list unchanged");
    } else {
        tracing::info!(added = ?change.added, removed = ?change.removed, "member list changed");
    }
    Ok(change)
}
