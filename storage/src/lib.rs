//! Muster storage (see FORMAT.md).
#![deny(missing_docs)]

pub mod error;
pub mod event;
pub mod failpoint;
pub mod format;
pub mod fs;
pub mod raft_store;
pub mod record;
pub mod sim;
pub mod snapshot;
pub mod wal;

pub use error::{Corruption, Error, Position, Result};
