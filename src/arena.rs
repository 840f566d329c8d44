//! The page arena: large cached response bodies kept in memfd pages, so a socket can
//! `sendfile` them instead of copying them from user memory on every reply.
//!
//! A body of at least [`MIN_BODY`] bytes is written once into a page-aligned region of a
//! sparse memfd and handed out as [`Bytes`] that point into a read-only mapping of it. When
//! the HTTP writer meets a slice that lies in an arena ([`locate`]), it sends it with
//! `sendfile(2)`: on loopback and real NICs alike the kernel then references the page-cache
//! pages instead of copying 25 KB per reply (the copy was the largest symbol of the
//! 100-instance list profile).
//!
//! Invariants:
//! - a region is written exactly once, before its `Bytes` exist, and never again: the offset
//!   only grows, so pages an in-flight `sendfile` still references are never modified;
//! - a dropped body punches its pages out of the memfd (memory returns to the system once the
//!   socket buffers holding them are freed);
//! - an arena (memfd + mapping) lives while any of its bodies does; a full arena is replaced,
//!   not reused.
//!
//! The pages are file pages (shmem), not anonymous memory: they show in the process RSS only
//! once read through the mapping. [`resident_bytes`] reports them (`muster_arena_bytes` in
//! `/metrics`) so memory figures can include them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

/// Smallest body worth a `sendfile` (below it one `sendmsg` with the copy is cheaper than the
/// extra system call). 16 KiB.
pub const MIN_BODY: usize = 16 * 1024;
/// Virtual size of one arena memfd and its mapping (sparse: only written pages use memory).
const ARENA_BYTES: usize = 1 << 30;
const PAGE: usize = 4096;

/// Bytes of arena pages currently holding live bodies (page-rounded).
static RESIDENT: AtomicU64 = AtomicU64::new(0);
/// The arena new bodies go to, and the next free offset in it.
static CURRENT: Mutex<Option<(Arc<Arena>, usize)>> = Mutex::new(None);
/// Every live arena's mapping, for [`locate`]: (start address, length, memfd).
static LIVE: RwLock<Vec<(usize, usize, RawFd)>> = RwLock::new(Vec::new());

struct Arena {
    fd: OwnedFd,
    base: *mut u8,
}

// SAFETY: the mapping is read-only and lives as long as the arena; the fd is only used for
// positional writes of disjoint regions and for `fallocate`.
unsafe impl Send for Arena {}
unsafe impl Sync for Arena {}

impl Arena {
    fn create() -> io::Result<Arena> {
        // SAFETY: plain system calls on a descriptor we own; the mapping is checked.
        unsafe {
            let fd = libc::memfd_create(c"muster-arena".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            if libc::ftruncate(fd.as_raw_fd(), ARENA_BYTES as libc::off_t) < 0 {
                return Err(io::Error::last_os_error());
            }
            let base = libc::mmap(
                std::ptr::null_mut(),
                ARENA_BYTES,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let arena = Arena {
                fd,
                base: base.cast(),
            };
            LIVE.write().unwrap_or_else(|e| e.into_inner()).push((
                arena.base as usize,
                ARENA_BYTES,
                arena.fd.as_raw_fd(),
            ));
            Ok(arena)
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        LIVE.write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(b, _, _)| *b != self.base as usize);
        // SAFETY: no body of this arena is alive any more (each holds the Arc).
        unsafe {
            libc::munmap(self.base.cast(), ARENA_BYTES);
        }
    }
}

/// One body in an arena; what a [`Bytes`] from [`store`] owns.
struct Body {
    arena: Arc<Arena>,
    offset: usize,
    len: usize,
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the region was fully written before this body existed, is never written
        // again, and stays mapped while `arena` lives.
        unsafe { std::slice::from_raw_parts(self.arena.base.add(self.offset), self.len) }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let span = round_up(self.len);
        // SAFETY: punches this body's own pages; errors only leave the pages allocated.
        unsafe {
            libc::fallocate(
                self.arena.fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                self.offset as libc::off_t,
                span as libc::off_t,
            );
        }
        RESIDENT.fetch_sub(span as u64, Ordering::Relaxed);
    }
}

fn round_up(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

/// Copies `data` into an arena and returns it as shared bytes that [`locate`] recognises.
/// `None` when `data` is shorter than [`MIN_BODY`] or the arena cannot be written (the
/// caller then keeps the bytes on the heap).
pub fn store(data: &[u8]) -> Option<Bytes> {
    if data.len() < MIN_BODY || data.len() > ARENA_BYTES {
        return None;
    }
    let span = round_up(data.len());
    let (arena, offset) = {
        let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        let full = cur
            .as_ref()
            .is_none_or(|(_, next)| next + span > ARENA_BYTES);
        if full {
            *cur = Some((Arc::new(Arena::create().ok()?), 0));
        }
        let (arena, next) = cur.as_mut().expect("arena just ensured");
        let offset = *next;
        *next += span;
        (arena.clone(), offset)
    };
    let mut done = 0;
    while done < data.len() {
        // SAFETY: writes into this body's own region, which nothing reads yet.
        let r = unsafe {
            libc::pwrite(
                arena.fd.as_raw_fd(),
                data[done..].as_ptr().cast(),
                data.len() - done,
                (offset + done) as libc::off_t,
            )
        };
        if r <= 0 {
            if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        done += r as usize;
    }
    RESIDENT.fetch_add(span as u64, Ordering::Relaxed);
    Some(Bytes::from_owner(Body {
        arena,
        offset,
        len: data.len(),
    }))
}

/// The memfd and file offset of `len` bytes at `ptr`, if they lie inside an arena. The
/// descriptor stays valid while the [`Bytes`] the slice came from is alive.
pub fn locate(ptr: *const u8, len: usize) -> Option<(RawFd, u64)> {
    let p = ptr as usize;
    LIVE.read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(base, size, _)| p >= *base && p + len <= base + size)
        .map(|(base, _, fd)| (*fd, (p - base) as u64))
}

/// Page-rounded bytes of live bodies (memory the process uses outside its anonymous RSS).
pub fn resident_bytes() -> u64 {
    RESIDENT.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_large_bodies_and_gives_pages_back() {
        assert!(store(&[1u8; 100]).is_none());
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let b = store(&data).expect("stored");
        assert_eq!(&b[..], &data[..]);
        assert!(resident_bytes() >= 40_960);
        let (fd, off) = locate(b[100..].as_ptr(), b.len() - 100).expect("located");
        // The memfd holds the same bytes at that offset.
        let mut back = vec![0u8; 16];
        let r = unsafe { libc::pread(fd, back.as_mut_ptr().cast(), 16, off as libc::off_t) };
        assert_eq!(r, 16);
        assert_eq!(&back[..], &data[100..116]);
        assert!(locate(data.as_ptr(), data.len()).is_none());
        let slice = b.slice(10..20);
        drop(b);
        assert_eq!(&slice[..], &data[10..20]);
        // The region still holds data while a slice of the body lives ...
        let data_at = |off: u64| unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_DATA) };
        let start = off - 100;
        assert_eq!(data_at(start), start as libc::off_t);
        // ... and its pages are punched out once the last one is dropped (later bodies, if
        // any, start past its end).
        drop(slice);
        let next = data_at(start);
        assert!(
            next < 0 || next >= (start + 40_960) as libc::off_t,
            "{next}"
        );
    }
}
