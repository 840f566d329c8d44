//! HTTP/1.1 on glommio sockets, through hyper.
//!
//! hyper does the protocol (keep-alive, chunked bodies, header limits, 400/431 on malformed
//! requests); [`Io`] adapts glommio's `TcpStream` to hyper's IO traits. Each connection runs as
//! a task on the shard that accepted it and is closed gracefully at shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::shard::Shard;

/// Largest slice handed to a socket read (and zeroed first); hyper's buffer may be larger.
const READ_CHUNK: usize = 8 * 1024;
/// Largest slice a waiting read (nothing buffered yet) zeroes and hands to glommio: a
/// request usually fits; the rest, if any, is read directly on the next poll.
const WAIT_CHUNK: usize = 1024;
/// Most slices one `sendmsg` takes.
const MAX_IOV: usize = 64;

/// A response body made of up to five shared chunks, written with one `sendmsg` and no copy
/// in user space (a cached host list goes to the socket as it is).
#[derive(Debug, Default)]
pub struct Chunks {
    parts: [Bytes; 5],
    next: usize,
}

impl Chunks {
    /// A body of one chunk.
    pub fn one(b: Bytes) -> Chunks {
        Chunks {
            parts: [b, Bytes::new(), Bytes::new(), Bytes::new(), Bytes::new()],
            next: 0,
        }
    }

    /// A body of up to five chunks, in order.
    pub fn many(parts: Vec<Bytes>) -> Chunks {
        debug_assert!(parts.len() <= 5);
        let mut c = Chunks::default();
        for (slot, p) in c.parts.iter_mut().zip(parts) {
            *slot = p;
        }
        c
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.parts[self.next..].iter().map(Bytes::len).sum()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        while self.next < self.parts.len() {
            let i = self.next;
            self.next += 1;
            let b = std::mem::take(&mut self.parts[i]);
            if !b.is_empty() {
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(b))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len() as u64)
    }
}

/// A glommio `TcpStream` speaking hyper's IO traits.
pub struct Io(pub glommio::net::TcpStream);

impl hyper::rt::Read for Io {
    /// First a non-blocking `recv` straight into hyper's uninitialised buffer (the kernel
    /// initialises what it fills, so nothing is zeroed); only when the socket has nothing yet
    /// does it zero a small slice and wait through glommio's read.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        use std::os::fd::AsRawFd;
        // SAFETY: `recv` writes at most `len` bytes into the buffer and reports how many; we
        // advance the cursor by exactly that many. The fallback initialises the prefix it hands
        // out before viewing it as `[u8]`.
        unsafe {
            let uninit = buf.as_mut();
            let n = uninit.len().min(READ_CHUNK);
            let r = libc::recv(
                self.0.as_raw_fd(),
                uninit.as_mut_ptr().cast(),
                n,
                libc::MSG_DONTWAIT,
            );
            if r >= 0 {
                buf.advance(r as usize);
                return Poll::Ready(Ok(()));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock && err.kind() != io::ErrorKind::Interrupted {
                return Poll::Ready(Err(err));
            }
            let slice: &mut [MaybeUninit<u8>] = &mut uninit[..n.min(WAIT_CHUNK)];
            slice.iter_mut().for_each(|b| {
                b.write(0);
            });
            let bytes = &mut *(slice as *mut [MaybeUninit<u8>] as *mut [u8]);
            match Pin::new(&mut self.0).poll_read(cx, bytes) {
                Poll::Ready(Ok(read)) => {
                    buf.advance(read);
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    /// One non-blocking `sendmsg` of every slice (no copy into a flat buffer), except that a
    /// large cached body living in the [`crate::arena`] goes out with `sendfile`: the slices
    /// before it first (`MSG_MORE`, so headers and body share segments), then the body, each
    /// as one call (hyper calls again with what is left). When the socket is full, falls back
    /// to glommio's write of the first slice, which waits for room.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        use std::os::fd::AsRawFd;
        let fd = self.0.as_raw_fd();
        let n = bufs.len().min(MAX_IOV);
        let filed = bufs[..n].iter().enumerate().find_map(|(k, b)| {
            (b.len() >= crate::arena::MIN_BODY)
                .then(|| crate::arena::locate(b.as_ptr(), b.len()))
                .flatten()
                .map(|at| (k, at))
        });
        let r = match filed {
            Some((0, (file, offset))) => {
                let mut off = offset as libc::off_t;
                // SAFETY: the socket is non-blocking (see `serve`); `file` stays open while
                // hyper holds the slice's `Bytes`.
                unsafe { libc::sendfile(fd, file, &mut off, bufs[0].len()) }
            }
            // The slices before the arena body, corked so they share segments with it.
            Some((k, _)) => sendmsg(fd, &bufs[..k], libc::MSG_MORE),
            None => sendmsg(fd, &bufs[..n], 0),
        };
        if r >= 0 {
            return Poll::Ready(Ok(r as usize));
        }
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::WouldBlock {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return Pin::new(&mut self.0).poll_write(cx, first);
        }
        Poll::Ready(Err(err))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// One non-blocking `sendmsg` of `bufs` with `flags` added; the raw result.
fn sendmsg(fd: std::os::fd::RawFd, bufs: &[io::IoSlice<'_>], flags: libc::c_int) -> isize {
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix; the slices outlive the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len() as _;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | flags)
    }
}

/// Serves one connection until the client closes it, it idles out, or `shutdown` fires (then
/// the in-flight request is finished and the connection closed).
pub async fn serve(
    shard: Rc<Shard>,
    stream: glommio::net::TcpStream,
    shutdown: flume::Receiver<()>,
) {
    let cfg = &shard.shared.config;
    let _ = stream.set_nodelay(true);
    // Non-blocking, so `sendfile` (which has no MSG_DONTWAIT) never parks the shard on a full
    // socket. glommio is unaffected: it tries every read and write with MSG_DONTWAIT first and
    // waits through io_uring, which polls sockets whatever their O_NONBLOCK flag.
    {
        use std::os::fd::AsRawFd;
        let fd = stream.as_raw_fd();
        // SAFETY: flag changes on a descriptor this task owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
    }
    let _ = stream.set_read_timeout(Some(Duration::from_millis(cfg.idle_timeout_ms.max(1))));
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let local = stream.local_addr().unwrap_or(shard.shared.listen);
    let svc_shard = shard.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shard = svc_shard.clone();
        async move {
            Ok::<Response<Chunks>, Infallible>(crate::api::handle(&shard, req, peer, local).await)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // A client may shut its write side after sending a request and still wait for the
        // answer; without this hyper drops the request when it sees the EOF.
        .half_close(true)
        .max_buf_size(cfg.max_header_bytes)
        .serve_connection(Io(stream), service);
    let mut conn = pin!(conn);
    let mut stop = pin!(shutdown.recv_async());
    let finished = std::future::poll_fn(|cx| {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(true);
        }
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await;
    if !finished {
        conn.as_mut().graceful_shutdown();
        let grace = Duration::from_millis(shard.shared.config.shutdown_grace_ms);
        let _ = glommio::timer::timeout(grace, async {
            let _ = conn.as_mut().await;
            Ok(())
        })
        .await;
    }
}
