//! Named failpoints (`module::what`, as in raft-engine) at the persistence boundaries, on the
//! [`fail`](https://docs.rs/fail) crate behind this crate's `failpoints` feature.
//!
//! Without the feature (every release build, and the default) [`hit`] is an empty inline
//! function and the `fail` crate is not compiled in: a release binary carries no failpoint code
//! (`.ci/run` checks its symbols with `nm`). With it, points are armed per process, from the
//! `FAILPOINTS` environment variable (`FAILPOINTS="wal::after_sync=return(abort)"`, read by
//! `fail::FailScenario::setup`, which the server calls first thing in a failpoints build) or
//! from a test with `fail::cfg`. The registry is global to the process, so in-process tests
//! that arm points live in their own test binary and serialise through `FailScenario`.
//!
//! Actions, in `fail`'s syntax, with what a point does:
//! - `panic`: panics (an in-process crash, caught by `catch_unwind` in tests);
//! - `return` or `return(eio)`: the operation fails with `EIO`;
//! - `return(abort)`: the process aborts on the spot, as a `kill -9` there would leave it (the
//!   page cache keeps what was written);
//! - `sleep(ms)`: the operation is delayed, then goes on (a slow disk);
//! - counts and chances combine as in `fail`: `20*off->return(abort)` aborts at the 21st hit.
//!
//! Points: [`BEFORE_APPEND`], [`AFTER_APPEND`], [`BEFORE_SYNC`], [`AFTER_SYNC`],
//! [`ROTATE_BEFORE_RENAME`], [`SNAPSHOT_BEFORE_RENAME`], [`SNAPSHOT_AFTER_RENAME`],
//! [`SNAPSHOT_INSTALL`], [`PURGE_BEFORE_REMOVE`].

use std::io;

/// Before a batch is copied into the segment (nothing of it written).
pub const BEFORE_APPEND: &str = "wal::before_append";
/// After a batch is copied into the segment, before `append` returns (nothing synced).
pub const AFTER_APPEND: &str = "wal::after_append";
/// At the start of `sync`, before msync. An error here poisons the WAL.
pub const BEFORE_SYNC: &str = "wal::before_sync";
/// After a successful msync, before `sync` returns: the data is durable, nobody was answered.
pub const AFTER_SYNC: &str = "wal::after_sync";
/// During rotation: new segment allocated and synced, old one sealed, before the rename.
pub const ROTATE_BEFORE_RENAME: &str = "wal::rotate::before_rename";
/// Snapshot file written and synced as `.tmp`, before the rename.
pub const SNAPSHOT_BEFORE_RENAME: &str = "snapshot::before_rename";
/// Snapshot file renamed and directory synced, before the WAL marker is written.
pub const SNAPSHOT_AFTER_RENAME: &str = "snapshot::after_rename";
/// A snapshot received from a leader is about to be installed (`RaftStore::apply_snapshot`).
pub const SNAPSHOT_INSTALL: &str = "snapshot::install";
/// Before whole segments behind a snapshot are deleted.
pub const PURGE_BEFORE_REMOVE: &str = "wal::purge::before_remove";

/// Every point, for tests that walk them all.
pub const ALL: [&str; 9] = [
    BEFORE_APPEND,
    AFTER_APPEND,
    BEFORE_SYNC,
    AFTER_SYNC,
    ROTATE_BEFORE_RENAME,
    SNAPSHOT_BEFORE_RENAME,
    SNAPSHOT_AFTER_RENAME,
    SNAPSHOT_INSTALL,
    PURGE_BEFORE_REMOVE,
];

/// Evaluates point `name`: `Ok` when unarmed (always, without the `failpoints` feature), else
/// what its action says (see the module doc).
#[inline(always)]
pub(crate) fn hit(name: &'static str) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |arg: Option<String>| armed(name, arg.as_deref()));
    let _ = name;
    Ok(())
}

/// The `return(...)` actions.
#[cfg(feature = "failpoints")]
fn armed(name: &'static str, arg: Option<&str>) -> io::Result<()> {
    match arg {
        Some("abort") => {
            eprintln!("failpoint {name}: abort");
            std::process::abort()
        }
        None | Some("") | Some("eio") => Err(io::Error::new(
            io::Error::from_raw_os_error(libc::EIO).kind(),
            format!("failpoint {name}: injected EIO"),
        )),
        Some(other) => panic!("failpoint {name}: unknown return({other})"),
    }
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use super::*;

    #[test]
    fn arm_hit_clear() {
        let _s = fail::FailScenario::setup();
        assert!(hit(BEFORE_SYNC).is_ok());
        fail::cfg(BEFORE_SYNC, "return").unwrap();
        assert!(hit(BEFORE_SYNC).is_err());
        assert!(hit(AFTER_SYNC).is_ok());
        fail::remove(BEFORE_SYNC);
        assert!(hit(BEFORE_SYNC).is_ok());
        fail::cfg(AFTER_APPEND, "panic").unwrap();
        assert!(std::panic::catch_unwind(|| hit(AFTER_APPEND)).is_err());
        fail::cfg(AFTER_APPEND, "1*off->return(eio)").unwrap();
        assert!(hit(AFTER_APPEND).is_ok());
        assert!(hit(AFTER_APPEND).is_err());
    }
}
