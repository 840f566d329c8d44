//! Muster: a Nacos 1.x compatible service registry on a thread-per-core io_uring runtime.
//!
//! Layers, each depending only on the ones before it (ARCHITECTURE.md; `tests/layers.rs`
//! checks it):
//! 1. Leaves: [`clock`], `hash` (stable ownership hash), `status`, [`arena`] (memfd pages
//!    for cached bodies), `error` (Nacos-style answers).
//! 2. [`naming`]: the domain (model, validation, registry, leases, views, push and probe
//!    schedules). No IO, no executor. [`config`]: the config center's parameter rules and
//!    long-poll registry, likewise without IO.
//! 3. [`settings`]: the server's settings (flags, TOML, environment).
//! 4. [`consensus`]: the raft driver without IO, the replicated state machine and its domains,
//!    recovery from the WAL.
//! 5. [`node`] and [`http`]: shards, their mailboxes and IO, the raft thread, ownership,
//!    metrics; HTTP/1.1 connections, generic over a handler.
//! 6. `api`: the Nacos HTTP surface (the one place domain errors become Nacos answers).
//! 7. [`server`]: process lifecycle — start, accept everywhere, shut down gracefully.
//!
//! `fuzz` (hidden) holds the entry points of the cargo-fuzz targets and their corpus replay;
//! it calls the decoders above and is not used by the server.

pub(crate) mod api;
pub mod arena;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod consensus;
pub(crate) mod error;
#[doc(hidden)]
pub mod fuzz;
pub(crate) mod hash;
pub mod http;
pub mod naming;
pub mod node;
pub mod server;
pub mod settings;
pub(crate) mod status;
