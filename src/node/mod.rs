//! The node layer: threads and IO around the domain and consensus layers.
//!
//! - [`shard`]: one pinned glommio executor owning a disjoint set of services: its mailbox,
//!   ticks, push sockets and probes.
//! - [`mailbox`]: what a shard's inbox carries (writes, committed ops, restores, barriers).
//! - [`listener`]: the listening address: a live listener refuses start, leftovers never do.
//! - [`metrics`]: counters and histograms of every shard, rendered for Prometheus.
//! - [`probe`], [`udp`]: the IO of health probes and of push datagrams.
//! - [`error`]: why a write failed in the node, and how that becomes a Nacos answer.
//! - [`ownership`]: who owns a service (member and shard): every routing decision asks it.
//! - [`distro`]: forwarding a write to the member responsible for its service, replication,
//!   verify rounds, hand-overs and the startup load.
//! - [`outbox`]: one replication queue per peer, with coalescing, batches, retries and
//!   backoff, and the per-peer Distro counters.
//! - [`membership`]: the member list at run time (SIGHUP, the admin endpoint).
//! - [`peer`]: peer links (authenticated node-to-node TCP) and the pings behind member states.
//! - [`raft`]: the raft thread (WAL appends, fdatasync, applying committed ops to the shards).
//! - [`transport`]: raft messages between members (batches, chunked snapshots).
//! - [`config`]: the config center's proposal queue, replies and change notices (held polls).

pub mod config;
pub mod distro;
pub(crate) mod error;
pub(crate) mod listener;
pub(crate) mod mailbox;
pub mod membership;
pub(crate) mod metrics;
pub(crate) mod outbox;
pub(crate) mod ownership;
pub mod peer;
pub(crate) mod probe;
pub(crate) mod raft;
pub(crate) mod shard;
pub mod transport;
pub mod udp;

pub use error::Error;
