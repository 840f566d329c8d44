//! The naming domain: the data model, its validation and the registry that applies writes to
//! it. No IO and no executor here: the node layer drives it.
//!
//! - [`service`], [`instance`]: the model (service keys, clusters, instances, leases' timing).
//! - [`params`]: request parameters and their validation rules.
//! - [`command`]: the writes a service's owner applies, and their answers; [`op`]: the
//!   persistent ones, as raft carries them.
//! - [`registry`]: a shard's services, instances and leases; [`wheel`] keeps lease deadlines.
//! - [`view`]: immutable published services every shard reads without a hop; a service's
//!   instances are a [`roster`] of shared copy-on-write chunks.
//! - [`push`]: subscribers, push rounds and the `dom` packets (the sockets are the node's).
//! - [`probe`]: health-probe schedules of persistent instances (the probes run in the node).

pub mod instance;
pub mod op;
pub(crate) mod params;
pub(crate) mod probe;
pub mod push;
pub mod registry;
pub mod roster;
pub mod service;
pub mod view;
pub(crate) mod wheel;
pub mod write;
