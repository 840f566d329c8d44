//! The CP layer: a raft driver that does no IO ([`driver`]), the replicated state machine with
//! its domains ([`state_machine`]; the naming domain in [`naming`], the config center in
//! [`config`]) and recovery from the WAL
//! ([`recover`]).
//!
//! The raft thread that carries out the driver's actions lives in the node layer (`node::raft`).

pub mod config;
pub(crate) mod driver;
pub(crate) mod error;
#[cfg(test)]
mod harness;
pub mod naming;
pub(crate) mod recover;
pub mod state_machine;

pub use driver::describe_conf_change;
pub use error::Error;
pub use recover::{recover, Group, Recovery};
