//! Named failpoints (`module::what`, as in raft-engine) at the persistence boundaries.
//!
//! A [`FailPoints`] registry travels in [`crate::Options`], so each test arms its own points
//! without global state. A process can also arm them from the environment with
//! [`FailPoints::from_env`] (`MUSTER_FAILPOINTS="wal::after_append=panic;wal::before_sync=error"`)
//! for crash tests against a real server. Unarmed points cost one relaxed atomic load.
//!
//! Points: [`AFTER_APPEND`], [`BEFORE_SYNC`], [`AFTER_SYNC`], [`ROTATE_BEFORE_RENAME`],
//! [`SNAPSHOT_BEFORE_RENAME`], [`SNAPSHOT_AFTER_RENAME`], [`PURGE_BEFORE_REMOVE`].

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// After a batch is copied into the segment, before `append` returns (nothing synced).
pub const AFTER_APPEND: &str = "wal::after_append";
/// At the start of `sync`, before msync.
pub const BEFORE_SYNC: &str = "wal::before_sync";
/// After a successful msync, before `sync` returns.
pub const AFTER_SYNC: &str = "wal::after_sync";
/// During rotation: new segment allocated and synced, old one sealed, before the rename.
pub const ROTATE_BEFORE_RENAME: &str = "wal::rotate::before_rename";
/// Snapshot file written and synced as `.tmp`, before the rename.
pub const SNAPSHOT_BEFORE_RENAME: &str = "snapshot::before_rename";
/// Snapshot file renamed and directory synced, before the WAL marker is written.
pub const SNAPSHOT_AFTER_RENAME: &str = "snapshot::after_rename";
/// Before whole segments behind a snapshot are deleted.
pub const PURGE_BEFORE_REMOVE: &str = "wal::purge::before_remove";

/// What an armed failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Panic (simulates a crash at that point).
    Panic,
    /// Return an `EIO` error from the operation.
    Error,
}

/// A registry of armed failpoints.
#[derive(Debug, Default)]
pub struct FailPoints {
    armed: AtomicBool,
    points: Mutex<HashMap<String, Action>>,
}

impl FailPoints {
    /// An empty registry (nothing armed).
    pub fn new() -> FailPoints {
        FailPoints::default()
    }

    /// Parses `MUSTER_FAILPOINTS` (`name=panic|error` separated by `;`). Unknown actions are
    /// ignored with a message on stderr.
    pub fn from_env() -> FailPoints {
        let fp = FailPoints::new();
        if let Ok(spec) = std::env::var("MUSTER_FAILPOINTS") {
            for item in spec.split(';').filter(|s| !s.is_empty()) {
                match item.split_once('=') {
                    Some((name, "panic")) => fp.set(name, Action::Panic),
                    Some((name, "error")) => fp.set(name, Action::Error),
                    _ => eprintln!("MUSTER_FAILPOINTS: ignoring {item:?}"),
                }
            }
        }
        fp
    }

    /// Arms `name`.
    pub fn set(&self, name: &str, action: Action) {
        let mut p = self.points.lock().expect("failpoint lock");
        p.insert(name.to_string(), action);
        self.armed.store(true, Ordering::Release);
    }

    /// Disarms `name`.
    pub fn clear(&self, name: &str) {
        let mut p = self.points.lock().expect("failpoint lock");
        p.remove(name);
        self.armed.store(!p.is_empty(), Ordering::Release);
    }

    /// Evaluates point `name`: `Ok` when unarmed, a panic or an `EIO` error when armed.
    pub fn hit(&self, name: &'static str) -> io::Result<()> {
        if !self.armed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let action = self
            .points
            .lock()
            .expect("failpoint lock")
            .get(name)
            .copied();
        match action {
            None => Ok(()),
            Some(Action::Panic) => panic!("failpoint {name} panic"),
            Some(Action::Error) => Err(io::Error::new(
                io::Error::from_raw_os_error(libc::EIO).kind(),
                format!("failpoint {name}: injected EIO"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_hit_clear() {
        let fp = FailPoints::new();
        assert!(fp.hit(BEFORE_SYNC).is_ok());
        fp.set(BEFORE_SYNC, Action::Error);
        assert!(fp.hit(BEFORE_SYNC).is_err());
        assert!(fp.hit(AFTER_SYNC).is_ok());
        fp.clear(BEFORE_SYNC);
        assert!(fp.hit(BEFORE_SYNC).is_ok());
        fp.set(AFTER_APPEND, Action::Panic);
        assert!(std::panic::catch_unwind(|| fp.hit(AFTER_APPEND)).is_err());
    }
}
