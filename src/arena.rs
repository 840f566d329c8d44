//! The page arena: large cached response bodies kept in memfd pages, so a socket can
//! `sendfile` them instead of copying them from user memory on every reply.
//!
//! A body of at least [`MIN_BODY`] bytes is written once into a region of a sparse memfd
//! (packed behind the previous body, [`ALIGN`]-aligned) and handed out as [`Bytes`] that point
//! into a read-only mapping of it. When
//! the HTTP writer meets a slice that lies in an arena ([`locate`]), it sends it with
//! `sendfile(2)`: on loopback and real NICs alike the kernel then references the page-cache
//! pages instead of copying 25 KB per reply (the copy was the largest symbol of the
//! 100-instance list profile).
//!
//! Invariants:
//! - a region is written exactly once, before its `Bytes` exist, and never again: the offset
//!   only grows, so pages an in-flight `sendfile` still references are never modified;
//! - every page counts the live bodies that touch it; a page is punched out of the memfd when
//!   its count drops to zero (memory returns to the system once the socket buffers holding it
//!   are freed). Counting and punching happen under the arena's lock, and a new body is
//!   counted before it is written, so a page is never punched after a live body's write;
//! - writing a body into a page that an earlier, live body also uses changes only bytes
//!   outside that body's range, which is all a `sendfile` of it reads;
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
/// Bodies start at multiples of this many bytes.
const ALIGN: usize = 64;

/// Bytes of arena pages touched by live bodies.
static RESIDENT: AtomicU64 = AtomicU64::new(0);
/// The arena new bodies go to, and the next free offset in it.
static CURRENT: Mutex<Option<(Arc<Arena>, usize)>> = Mutex::new(None);
/// Every live arena's mapping, for [`locate`]: (start address, length, memfd).
static LIVE: RwLock<Vec<(usize, usize, RawFd)>> = RwLock::new(Vec::new());

struct Arena {
    fd: OwnedFd,
    base: *mut u8,
    /// Live bodies touching each page.
    pages: Mutex<Vec<u32>>,
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
                pages: Mutex::new(vec![0; ARENA_BYTES / PAGE]),
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
        let mut pages = self.arena.pages.lock().unwrap_or_else(|e| e.into_inner());
        let mut run: Option<(usize, usize)> = None;
        let punch = |(first, last): (usize, usize)| {
            // SAFETY: punches pages no live body touches; errors only leave them allocated.
            unsafe {
                libc::fallocate(
                    self.arena.fd.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    (first * PAGE) as libc::off_t,
                    ((last - first + 1) * PAGE) as libc::off_t,
                );
            }
            RESIDENT.fetch_sub(((last - first + 1) * PAGE) as u64, Ordering::Relaxed);
        };
        for p in page_span(self.offset, self.len) {
            pages[p] -= 1;
            if pages[p] > 0 {
                continue;
            }
            run = match run {
                Some((first, last)) if last + 1 == p => Some((first, p)),
                Some(r) => {
                    punch(r);
                    Some((p, p))
                }
                None => Some((p, p)),
            };
        }
        if let Some(r) = run {
            punch(r);
        }
    }
}

/// The pages `len` bytes at `offset` touch.
fn page_span(offset: usize, len: usize) -> std::ops::RangeInclusive<usize> {
    offset / PAGE..=(offset + len - 1) / PAGE
}

/// Copies `data` into an arena and returns it as shared bytes that [`locate`] recognises.
/// `None` when `data` is shorter than [`MIN_BODY`] or the arena cannot be written (the
/// caller then keeps the bytes on the heap).
pub fn store(data: &[u8]) -> Option<Bytes> {
    if data.len() < MIN_BODY || data.len() > ARENA_BYTES {
        return None;
    }
    let (arena, offset) = {
        let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        let full = cur
            .as_ref()
            .is_none_or(|(_, next)| next.next_multiple_of(ALIGN) + data.len() > ARENA_BYTES);
        if full {
            *cur = Some((Arc::new(Arena::create().ok()?), 0));
        }
        let (arena, next) = cur.as_mut().expect("arena just ensured");
        let offset = next.next_multiple_of(ALIGN);
        *next = offset + data.len();
        (arena.clone(), offset)
    };
    // Counted before written: a page another body's drop finds at zero is punched before
    // this write, never after it.
    let body = Body {
        arena: arena.clone(),
        offset,
        len: data.len(),
    };
    {
        let mut pages = arena.pages.lock().unwrap_or_else(|e| e.into_inner());
        for p in page_span(offset, data.len()) {
            if pages[p] == 0 {
                RESIDENT.fetch_add(PAGE as u64, Ordering::Relaxed);
            }
            pages[p] += 1;
        }
    }
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
            // Dropping `body` uncounts (and punches) what was counted.
            return None;
        }
        done += r as usize;
    }
    Some(Bytes::from_owner(body))
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

/// Bytes of the pages live bodies touch (memory the process uses outside its anonymous RSS).
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
        // ... and the pages only it touched are punched out once the last one is dropped
        // (pages it shares with a neighbour stay while the neighbour lives).
        drop(slice);
        let (first, end) = owned_pages(start as usize, data.len());
        let next = data_at(first as u64);
        assert!(next < 0 || next >= end as libc::off_t, "{next}");
    }

    /// The byte range of the pages `len` bytes at `offset` cover entirely.
    fn owned_pages(offset: usize, len: usize) -> (usize, usize) {
        (offset.next_multiple_of(PAGE), (offset + len) / PAGE * PAGE)
    }

    #[test]
    fn bodies_share_pages_and_a_shared_page_outlives_either() {
        let a_data: Vec<u8> = (0..20_000u32).map(|i| (i % 241) as u8).collect();
        let b_data: Vec<u8> = (0..30_000u32).map(|i| (i % 239) as u8 | 1).collect();
        // Stored back to back (nothing else stores between them in this test's arena region
        // unless another test runs concurrently; the checks below hold either way).
        let a = store(&a_data).expect("stored a");
        let b = store(&b_data).expect("stored b");
        let (fd, a_off) = locate(a.as_ptr(), a.len()).unwrap();
        let (_, b_off) = locate(b.as_ptr(), b.len()).unwrap();
        assert!(
            b_off >= a_off + a_data.len() as u64,
            "packed in order, never overlapping"
        );
        assert_eq!(b_off % ALIGN as u64, 0);
        drop(a);
        // B reads back whole after its neighbour's pages went.
        assert_eq!(&b[..], &b_data[..]);
        let mut back = vec![0u8; b_data.len()];
        let r = unsafe {
            libc::pread(
                fd,
                back.as_mut_ptr().cast(),
                back.len(),
                b_off as libc::off_t,
            )
        };
        assert_eq!(r as usize, back.len());
        assert_eq!(back, b_data);
        drop(b);
    }
}
