//! Muster: a Nacos 1.x compatible service registry on a thread-per-core io_uring runtime.
//!
//! Reading order:
//! - [`server`]: process lifecycle — shards, accept loops, graceful shutdown.
//! - [`listener`]: the listening address: a live listener refuses start, leftovers never do.
//! - [`shard`]: one pinned glommio executor owning a disjoint set of services; cross-shard writes.
//! - [`http`]: HTTP/1.1 connections on glommio sockets (`httparse` heads, borrowed requests);
//!   large cached bodies go out with `sendfile` from the [`arena`].
//! - [`api`]: the Nacos 1.x HTTP surface, one module per resource.
//! - [`registry`]: a shard's services, instances and leases; [`wheel`] keeps lease deadlines.
//! - [`view`]: immutable published services that every shard reads without a hop; a service's
//!   instances are a [`roster`] of shared copy-on-write chunks.
//! - [`push`]: UDP push of changes to subscribers, with acks and one re-send.
//! - [`probe`]: TCP and HTTP health probes of persistent instances.
//! - [`service`], [`instance`], [`command`]: the data model and the writes.
//! - [`consensus`], [`persistent`]: the raft group over the WAL and the persistent state it folds.
//! - [`params`], [`error`]: request decoding and Nacos-style errors.
//! - [`config`], [`clock`], [`hash`], [`metrics`]: settings, time, ownership, observability.

pub mod api;
pub mod arena;
pub mod clock;
pub mod config;
pub mod consensus;
pub mod error;
pub mod hash;
pub mod http;
pub mod naming;
pub mod node;
pub mod server;
pub mod status;
