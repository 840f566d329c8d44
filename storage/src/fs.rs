//! The filesystem seam (raft-engine's `env/`): everything the WAL and snapshots do to disk goes
//! through [`FileSystem`], so tests can swap in [`crate::sim::SimFs`] to drop un-synced bytes
//! (power loss), run out of space or fail with `EIO`. [`RealFs`] is the production
//! implementation: real files, `fallocate`, `mmap`, `msync`, `fsync`, `flock`.

use std::any::Any;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use memmap2::MmapMut;

/// Directory and file operations used by storage. Implementations must be safe to share between
/// threads; storage itself calls them from the one writer thread.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// File names (not paths) in `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Reads the whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The whole file's bytes, mapped read-only where the implementation can (no copy, no
    /// fresh pages); by default the same as [`FileSystem::read`]. Only for files under a
    /// directory lock this process holds: a mapping of a file another process truncates faults.
    fn read_locked(&self, path: &Path) -> io::Result<Box<dyn std::ops::Deref<Target = [u8]>>> {
        self.read(path)
            .map(|v| Box::new(v) as Box<dyn std::ops::Deref<Target = [u8]>>)
    }
    /// Creates or truncates `path`, writes `data` and fsyncs the file (not the directory).
    fn write_synced(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Creates the new file `path` (it must not exist) with `len` bytes whose blocks are all
    /// allocated (fallocate) and zero, and maps it read-write. Out of space is `ENOSPC` here,
    /// never later.
    fn allocate(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>>;
    /// Maps an existing file read-write. Its length must be non-zero.
    fn open_mapped(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Renames `from` to `to`, replacing `to`. Durable only after [`FileSystem::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Durable only after [`FileSystem::sync_dir`].
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// fsyncs the directory, making creates, renames and removes in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created if missing) without blocking; the lock is held
    /// until the returned guard is dropped. A held lock is `ErrorKind::WouldBlock`.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send>>;
}

/// A preallocated, writable file (a mapped segment).
pub trait SegmentFile: Send {
    /// Length in bytes.
    fn len(&self) -> usize;
    /// True when the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The file's current contents (including writes not yet synced).
    fn bytes(&self) -> &[u8];
    /// Copies `data` to `offset`. Not durable until [`SegmentFile::sync`].
    ///
    /// # Panics
    /// If the range is outside the file: callers check space first.
    fn write_at(&mut self, offset: usize, data: &[u8]);
    /// Makes `[offset, offset + len)` durable (`msync(MS_SYNC)`, i.e. fdatasync of the range).
    fn sync(&mut self, offset: usize, len: usize) -> io::Result<()>;
    /// Syncs everything, shrinks the file to `len` bytes and fsyncs it. The file must not be
    /// written afterwards.
    fn seal(&mut self, len: usize) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

fn errno_result(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Allocates `len` bytes of real blocks for `file`: `fallocate(2)`, falling back to
/// `posix_fallocate(3)` on filesystems without it.
fn fallocate(file: &File, len: u64) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: plain syscall on an owned, open fd.
    let r = unsafe { libc::fallocate(fd, 0, 0, len as libc::off_t) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(e);
    }
    // SAFETY: as above; posix_fallocate returns the error number instead of setting errno.
    match unsafe { libc::posix_fallocate(fd, 0, len as libc::off_t) } {
        0 => Ok(()),
        n => Err(io::Error::from_raw_os_error(n)),
    }
}

impl FileSystem for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut f = File::open(path)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)?;
        Ok(v)
    }

    fn read_locked(&self, path: &Path) -> io::Result<Box<dyn std::ops::Deref<Target = [u8]>>> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(Box::new(Vec::new()));
        }
        // SAFETY: the caller holds the directory lock, so no other process truncates or writes
        // the file while the map lives; this process only appends to the active segment past
        // what it reads here, and drops the map before sealing anything.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Box::new(map))
    }

    fn write_synced(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut f = File::create(path)?;
        f.write_all(data)?;
        f.sync_all()
    }

    fn allocate(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        fallocate(&file, len)?;
        RealSegment::map(file).map(|s| Box::new(s) as Box<dyn SegmentFile>)
    }

    fn open_mapped(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        RealSegment::map(file).map(|s| Box::new(s) as Box<dyn SegmentFile>)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // SAFETY: plain syscall on an owned, open fd. The lock lives as long as the fd.
        errno_result(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })?;
        Ok(Box::new(f))
    }
}

/// A real mapped segment.
struct RealSegment {
    file: File,
    map: Option<MmapMut>,
}

impl RealSegment {
    fn map(file: File) -> io::Result<RealSegment> {
        let len = file.metadata()?.len();
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty file",
            ));
        }
        // SAFETY: the data directory is flock'ed by this process, so no other writer changes or
        // truncates the file while it is mapped; every block is allocated (fallocate or existing
        // data), so stores cannot fault for lack of space.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(RealSegment {
            file,
            map: Some(map),
        })
    }
}

impl SegmentFile for RealSegment {
    fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) {
        let map = self.map.as_mut().expect("segment is sealed");
        map[offset..offset + data.len()].copy_from_slice(data);
    }

    fn sync(&mut self, offset: usize, len: usize) -> io::Result<()> {
        match &self.map {
            Some(m) if len > 0 => m.flush_range(offset, len),
            _ => Ok(()),
        }
    }

    fn seal(&mut self, len: usize) -> io::Result<()> {
        if let Some(m) = self.map.take() {
            m.flush()?;
        }
        self.file.set_len(len as u64)?;
        self.file.sync_all()
    }
}
