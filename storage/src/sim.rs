//! [`SimFs`]: an in-memory [`FileSystem`] for fault tests. It keeps two images of everything, the
//! *current* one (what a running process sees: the page cache) and the *durable* one (what
//! survives power loss): file contents become durable on `sync`/`seal`/`write_synced`, directory
//! entries (create, rename, remove) only on `sync_dir`. On top it can:
//!
//! - lose power: [`SimFs::power_loss`] drops every un-synced byte and name change;
//!   [`SimFs::power_loss_torn`] keeps a seeded random subset of un-synced 512-byte sectors;
//! - run out of space: [`SimFs::set_space_limit`] makes `allocate`/`write_synced` fail with
//!   `ENOSPC` beyond a byte budget;
//! - fail operations: [`SimFs::fail`] makes the next `n` calls of an [`Op`] fail with an errno.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::format::SECTOR;
use crate::fs::{FileSystem, SegmentFile};

/// Operations that [`SimFs::fail`] can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `FileSystem::allocate`.
    Allocate,
    /// `SegmentFile::sync` and `seal`.
    Sync,
    /// `FileSystem::read`.
    Read,
    /// `FileSystem::write_synced`.
    Write,
    /// `FileSystem::rename`.
    Rename,
    /// `FileSystem::sync_dir`.
    SyncDir,
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<u64, SimFile>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    next_id: u64,
    space_limit: Option<u64>,
    faults: HashMap<Op, (i32, u32)>,
    locks: BTreeMap<PathBuf, ()>,
}

impl State {
    fn check(&mut self, op: Op) -> io::Result<()> {
        if let Some((errno, n)) = self.faults.get_mut(&op) {
            if *n > 0 {
                *n -= 1;
                return Err(io::Error::from_raw_os_error(*errno));
            }
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        let mut ids: Vec<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.iter()
            .map(|id| {
                let f = &self.files[id];
                f.current.len().max(f.durable.len()) as u64
            })
            .sum()
    }

    fn reserve(&self, extra: u64) -> io::Result<()> {
        match self.space_limit {
            Some(limit) if self.used() + extra > limit => {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            _ => Ok(()),
        }
    }

    fn new_file(&mut self, path: &Path, current: Vec<u8>, durable: Vec<u8>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.files.insert(id, SimFile { current, durable });
        self.names.insert(path.to_path_buf(), id);
        id
    }
}

/// The simulated filesystem. Clones share the same state.
#[derive(Debug, Default, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl SimFs {
    /// An empty filesystem with unlimited space.
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("simfs lock")
    }

    /// Limits the total bytes of all files to `limit` (`None`: unlimited).
    pub fn set_space_limit(&self, limit: Option<u64>) {
        self.lock_state().space_limit = limit;
    }

    /// Makes the next `times` calls of `op` fail with `errno` (e.g. `libc::EIO`).
    pub fn fail(&self, op: Op, errno: i32, times: u32) {
        self.lock_state().faults.insert(op, (errno, times));
    }

    /// Simulates power loss: a new filesystem holding only what was durable. Locks are released.
    /// The old handle must not be used afterwards (drop the WAL first or just forget it).
    pub fn power_loss(&self) -> SimFs {
        self.crash(|_, f| f.durable.clone())
    }

    /// Power loss where each un-synced 512-byte sector independently reached the disk or not,
    /// chosen by a seeded generator (deterministic for a seed).
    pub fn power_loss_torn(&self, seed: u64) -> SimFs {
        let mut rng = seed ^ 0x9E37_79B9_7F4A_7C15;
        self.crash(move |_, f| {
            let mut out = f.durable.clone();
            out.resize(f.current.len(), 0);
            for start in (0..f.current.len()).step_by(SECTOR) {
                let end = (start + SECTOR).min(f.current.len());
                // xorshift64*
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                if rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 63 == 1 {
                    out[start..end].copy_from_slice(&f.current[start..end]);
                }
            }
            out
        })
    }

    fn crash(&self, mut image: impl FnMut(&Path, &SimFile) -> Vec<u8>) -> SimFs {
        let st = self.lock_state();
        let mut next = State {
            next_id: st.next_id,
            space_limit: st.space_limit,
            ..State::default()
        };
        for (path, id) in &st.durable_names {
            let bytes = image(path, &st.files[id]);
            next.files.insert(
                *id,
                SimFile {
                    current: bytes.clone(),
                    durable: bytes,
                },
            );
            next.names.insert(path.clone(), *id);
            next.durable_names.insert(path.clone(), *id);
        }
        SimFs {
            state: Arc::new(Mutex::new(next)),
        }
    }

    /// Current contents of `path` (what a process would read), if it exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock_state();
        st.names.get(path).map(|id| st.files[id].current.clone())
    }

    /// Replaces the contents of `path` (current and durable), e.g. to corrupt it in a test.
    pub fn set_contents(&self, path: &Path, bytes: Vec<u8>) {
        let mut st = self.lock_state();
        let id = match st.names.get(path) {
            Some(id) => *id,
            None => st.new_file(path, Vec::new(), Vec::new()),
        };
        st.durable_names.insert(path.to_path_buf(), id);
        st.files.insert(
            id,
            SimFile {
                current: bytes.clone(),
                durable: bytes,
            },
        );
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock_state();
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut st = self.lock_state();
        st.check(Op::Read)?;
        let id = *st.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(st.files[&id].current.clone())
    }

    fn write_synced(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut st = self.lock_state();
        st.check(Op::Write)?;
        let old = st
            .names
            .get(path)
            .map_or(0, |id| st.files[id].current.len() as u64);
        st.reserve((data.len() as u64).saturating_sub(old))?;
        match st.names.get(path).copied() {
            Some(id) => {
                let f = st.files.get_mut(&id).expect("file");
                f.current = data.to_vec();
                f.durable = data.to_vec();
            }
            None => {
                st.new_file(path, data.to_vec(), data.to_vec());
            }
        }
        Ok(())
    }

    fn allocate(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        let mut st = self.lock_state();
        st.check(Op::Allocate)?;
        if st.names.contains_key(path) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        st.reserve(len)?;
        let zeros = vec![0u8; len as usize];
        let id = st.new_file(path, zeros.clone(), zeros.clone());
        Ok(Box::new(SimSegment {
            fs: self.clone(),
            id,
            buf: zeros,
        }))
    }

    fn open_mapped(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let st = self.lock_state();
        let id = *st.names.get(path).ok_or_else(|| not_found(path))?;
        let buf = st.files[&id].current.clone();
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty file",
            ));
        }
        Ok(Box::new(SimSegment {
            fs: self.clone(),
            id,
            buf,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock_state();
        st.check(Op::Rename)?;
        let id = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock_state();
        st.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock_state();
        st.check(Op::SyncDir)?;
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        let current: Vec<(PathBuf, u64)> = st
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        st.durable_names.extend(current);
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send>> {
        let mut st = self.lock_state();
        if st.locks.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        st.locks.insert(path.to_path_buf(), ());
        Ok(Box::new(SimLock {
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }
}

struct SimLock {
    fs: SimFs,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        if let Ok(mut st) = self.fs.state.lock() {
            st.locks.remove(&self.path);
        }
    }
}

struct SimSegment {
    fs: SimFs,
    id: u64,
    buf: Vec<u8>,
}

impl SegmentFile for SimSegment {
    fn len(&self) -> usize {
        self.buf.len()
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) {
        self.buf[offset..offset + data.len()].copy_from_slice(data);
        let mut st = self.fs.lock_state();
        if let Some(f) = st.files.get_mut(&self.id) {
            f.current[offset..offset + data.len()].copy_from_slice(data);
        }
    }

    fn sync(&mut self, offset: usize, len: usize) -> io::Result<()> {
        let mut st = self.fs.lock_state();
        st.check(Op::Sync)?;
        if let Some(f) = st.files.get_mut(&self.id) {
            let end = offset + len;
            f.durable[offset..end].copy_from_slice(&f.current[offset..end]);
        }
        Ok(())
    }

    fn seal(&mut self, len: usize) -> io::Result<()> {
        let mut st = self.fs.lock_state();
        st.check(Op::Sync)?;
        self.buf.truncate(len);
        if let Some(f) = st.files.get_mut(&self.id) {
            f.current.truncate(len);
            f.durable = f.current.clone();
        }
        Ok(())
    }
}
