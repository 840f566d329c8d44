//! Disk full on a real filesystem: a 2 MiB tmpfs (needs root and CAP_SYS_ADMIN; without them
//! the test fails, unless `MUSTER_ALLOW_SKIP=1` lets it pass with a message). fallocate fails
//! with ENOSPC at rotation, the writer gets an error (never SIGBUS), nothing acknowledged is
//! lost, and writes resume once space is freed.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use muster_storage::wal::{Options, Wal};

struct Mount(tempfile::TempDir);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// Mounts a tmpfs of `size`, or says why it could not.
fn mount_tmpfs(size: &str) -> Result<Mount, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir.path())
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mount exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Mount(dir))
}

#[test]
fn real_tmpfs_disk_full_then_resume() {
    let mnt = match mount_tmpfs("2m") {
        Ok(m) => m,
        Err(why) if allow_skip() => {
            eprintln!("skipped (MUSTER_ALLOW_SKIP=1): cannot mount a tmpfs here: {why}");
            return;
        }
        Err(why) => panic!(
            "cannot mount a 2 MiB tmpfs ({why}): this test needs root with CAP_SYS_ADMIN; \
             MUSTER_ALLOW_SKIP=1 lets it pass where that is impossible (never in CI)"
        ),
    };
    let root = mnt.0.path();
    let dir = root.join("wal");
    let filler = root.join("filler");
    std::fs::write(&filler, vec![1u8; 1 << 20]).unwrap();
    let opts = || Options {
        segment_size: 256 << 10,
        ..real()
    };
    let mut wal = Wal::open(&dir, opts()).unwrap();
    let mut acked = 0u64;
    let mut err = None;
    for i in 1..=10_000u64 {
        match wal.append(&[entry(i, 1, 1000)]).and_then(|_| wal.sync()) {
            Ok(()) => acked = i,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("2 MiB fills up");
    assert!(err.is_no_space(), "{err}");
    assert!(acked > 100, "acked {acked}");
    // No stray tmp segment is left behind.
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
    // Free space; the same WAL resumes.
    std::fs::remove_file(&filler).unwrap();
    wal.append(&[entry(acked + 1, 1, 1000)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(&dir, opts()).unwrap();
    assert_eq!(indexes(wal.state()), (1..=acked + 1).collect::<Vec<_>>());
    assert!(Path::new(&dir).exists());
}
