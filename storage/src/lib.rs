//! Muster storage (placeholder root; see FORMAT.md).
#![deny(missing_docs)]

pub mod error;
pub mod format;
pub mod record;

pub use error::{Corruption, Error, Position, Result};
