//! Writing answers: the status line and headers (`Date` cached per second), and
//! `sendmsg`/`sendfile` of the body chunks.

use super::*;

/// One non-blocking write of `slices` (the first one non-empty), with `sendfile` for a body
/// that lives in the [`crate::arena`]: the slices before it go first (`MSG_MORE`, so head and
/// body share segments), then the body; each is one call and the caller loops.
pub(super) fn write_some(fd: RawFd, slices: &[&[u8]]) -> io::Result<usize> {
    let filed = slices.iter().enumerate().find_map(|(k, b)| {
        (b.len() >= crate::arena::MIN_BODY)
            .then(|| crate::arena::locate(b.as_ptr(), b.len()))
            .flatten()
            .map(|at| (k, at))
    });
    let r = match filed {
        Some((0, (file, offset))) => {
            let mut off = offset as libc::off_t;
            // SAFETY: the socket is non-blocking (see `serve`); `file` stays open while the
            // caller holds the slice's `Bytes`.
            unsafe { libc::sendfile(fd, file, &mut off, slices[0].len()) }
        }
        Some((k, _)) => sendmsg(fd, &slices[..k], libc::MSG_MORE),
        None => sendmsg(fd, slices, 0),
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// One non-blocking `sendmsg` of the non-empty `slices` with `flags` added; the raw result.
pub(super) fn sendmsg(fd: RawFd, slices: &[&[u8]], flags: libc::c_int) -> isize {
    let mut iov: [libc::iovec; MAX_IOV] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOV];
    let mut n = 0;
    for s in slices.iter().filter(|s| !s.is_empty()).take(MAX_IOV) {
        iov[n] = libc::iovec {
            iov_base: s.as_ptr() as *mut libc::c_void,
            iov_len: s.len(),
        };
        n += 1;
    }
    // SAFETY: `iov` points at `n` live slices for the duration of the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = n as _;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | flags)
    }
}

thread_local! {
    /// The `Date` value of the current second: (Unix second, formatted).
    static DATE: RefCell<(i64, [u8; 29])> = const { RefCell::new((i64::MIN, [0; 29])) };
}

/// Appends the IMF-fixdate of now (RFC 9110 §5.6.7), formatted at most once per second.
pub(super) fn push_date(out: &mut Vec<u8>) {
    // SAFETY: clock_gettime fills a local timespec.
    let secs = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts);
        ts.tv_sec as i64
    };
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let s = imf_fixdate(secs);
            d.1.copy_from_slice(s.as_bytes());
            d.0 = secs;
        }
        out.extend_from_slice(&d.1);
    });
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for a Unix time in seconds.
pub fn imf_fixdate(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = crate::clock::civil_from_days(days);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes a reply head into `out` (cleared first).
pub(super) fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    len: usize,
    conn: Connection,
    extra: &[(&'static str, String)],
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    push_date(out);
    match conn {
        Connection::Keep => {}
        Connection::KeepAlive10 => out.extend_from_slice(b"\r\nConnection: keep-alive"),
        Connection::Close => out.extend_from_slice(b"\r\nConnection: close"),
    }
    if status == 503 {
        out.extend_from_slice(b"\r\nRetry-After: 1");
    }
    for (name, value) in extra {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// What the reply says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Connection {
    /// HTTP/1.1 default: nothing to say.
    Keep,
    /// An HTTP/1.0 keep-alive: `Connection: keep-alive`.
    KeepAlive10,
    /// `Connection: close`.
    Close,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(imf_fixdate(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(imf_fixdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(imf_fixdate(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn heads_carry_length_date_and_connection() {
        let mut out = Vec::new();
        write_head(&mut out, 503, "text/plain", 7, Connection::Close, &[]);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nDate: "));
        assert!(
            s.ends_with("GMT\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"),
            "{s}"
        );
    }
}
