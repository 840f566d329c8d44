//! The push socket's sends: datagrams in batches of one non-blocking `sendmmsg`, and single
//! non-blocking sends for what a full buffer refused. What to send is the naming layer's
//! (`naming::push`).

use crate::naming::push::Outgoing;

/// Most datagrams one `sendmmsg` takes.
pub const SEND_BATCH: usize = 128;

/// Sends a prefix of `batch` with one non-blocking `sendmmsg`; returns how many went out
/// (0 when the socket buffer is full or the call failed: the caller sends the rest singly,
/// which reports the error or waits for room).
pub fn send_batch(fd: std::os::fd::RawFd, batch: &[&Outgoing]) -> usize {
    if batch.is_empty() {
        return 0;
    }
    let addrs: Vec<socket2::SockAddr> = batch.iter().map(|o| o.addr.into()).collect();
    let mut iovs: Vec<libc::iovec> = batch
        .iter()
        .map(|o| libc::iovec {
            iov_base: o.packet.as_ptr() as *mut libc::c_void,
            iov_len: o.packet.len(),
        })
        .collect();
    // SAFETY: every header points at an iovec, address and packet that outlive the call.
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(&addrs)
        .map(|(iov, a)| {
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = a.as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = a.len();
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: `msgs` holds `msgs.len()` initialised headers; `fd` is a UDP socket.
    let r = unsafe {
        libc::sendmmsg(
            fd,
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(r).unwrap_or(0)
}

/// A non-blocking `sendto`; `None` when it would block.
pub fn send_now(
    fd: std::os::fd::RawFd,
    buf: &[u8],
    to: std::net::SocketAddr,
) -> Option<std::io::Result<usize>> {
    let addr = socket2::SockAddr::from(to);
    // SAFETY: `buf` and `addr` outlive the call; `fd` is a UDP socket.
    let r = unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            addr.as_ptr().cast(),
            addr.len(),
        )
    };
    if r >= 0 {
        return Some(Ok(r as usize));
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        None
    } else {
        Some(Err(e))
    }
}
