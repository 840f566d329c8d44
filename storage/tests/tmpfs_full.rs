//! Disk full on a real filesystem: a 2 MiB tmpfs (needs root and CAP_SYS_ADMIN; the test
//! skips with a message when it cannot mount). fallocate fails with ENOSPC at rotation, the
//! writer gets an error (never SIGBUS), nothing acknowledged is lost, and writes resume once
//! space is freed.

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

fn mount_tmpfs(size: &str) -> Option<Mount> {
    let dir = tempfile::tempdir().ok()?;
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(Mount(dir))
}

#[test]
fn real_tmpfs_disk_full_then_resume() {
    let Some(mnt) = mount_tmpfs("2m") else {
        eprintln!("skipped: cannot mount a tmpfs here (not root or no CAP_SYS_ADMIN)");
        return;
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
