//! The node layer: threads and IO around the domain and consensus layers.
//!
//! - [`error`]: why a write failed in the node, and how that becomes a Nacos answer.
//! - [`ownership`]: who owns a service (member and shard): every routing decision asks it.
//! - [`raft`]: the raft thread (WAL appends, fdatasync, applying committed ops to the shards).

pub mod error;
pub mod ownership;
pub mod raft;

pub use error::Error;
