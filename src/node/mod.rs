//! The node layer: threads and IO around the domain and consensus layers.
//!
//! - [`error`]: why a write failed in the node, and how that becomes a Nacos answer.
//! - [`raft`]: the raft thread (WAL appends, fdatasync, applying committed ops to the shards).

pub mod error;
pub mod raft;

pub use error::Error;
