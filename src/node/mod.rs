//! The node layer: threads and IO around the domain and consensus layers.
//!
//! - [`raft`]: the raft thread (WAL appends, fdatasync, applying committed ops to the shards).

pub mod raft;
