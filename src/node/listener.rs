//! The listening address: who else listens there, and the shards' own listening sockets.
//!
//! Every shard listens on the same address with `SO_REUSEPORT`, so the kernel spreads
//! connections across them. Two rules make a restart on the same port just work:
//! - Each listener also sets `SO_REUSEADDR`. Accepted sockets inherit it, so the `TIME_WAIT`,
//!   `FIN_WAIT` and `CLOSE_WAIT` sockets a stopped (or killed) process leaves behind never block
//!   the next bind of the port.
//! - A second server on a live address is detected by looking for a *listener* in the kernel's
//!   socket table ([`find_listener`]), not by a trial bind: a trial bind also fails on the
//!   leftovers above, which is what made a restart fail for about a minute. A listener that
//!   no process holds any more (a killed server's io_uring instance, torn down by the kernel
//!   just after the process is gone) is waited for, at most [`ORPHAN_WAIT`].
//!
//! The data directory's `LOCK` stays the guard against two servers on one data dir.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};

/// Listen backlog of each shard's socket (the kernel caps it at `net.core.somaxconn`).
pub const BACKLOG: i32 = 4096;

/// Why the listening address cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Some process already listens on the address (or on the wildcard of its port).
    #[error(
        "cannot listen on {addr}: another process is already listening on {found} \
         (is another server running?)"
    )]
    InUse {
        /// The address asked for.
        addr: SocketAddr,
        /// The listening socket found in the kernel's table.
        found: SocketAddr,
    },
    /// A socket call failed.
    #[error("cannot {op} {addr}: {source}")]
    Io {
        /// What was being done, e.g. `"bind"`.
        op: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ListenError {
    fn io(op: &'static str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> ListenError {
        move |source| ListenError::Io { op, addr, source }
    }
}

/// How long a start waits for a listening socket that no process holds any more: a killed
/// server's io_uring instance is torn down by the kernel after the process is gone, and holds
/// the socket (still in `LISTEN`) until then, usually for milliseconds.
pub const ORPHAN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Fails with [`ListenError::InUse`] when a socket in `LISTEN` state in this network namespace
/// would share connections with a listener on `addr`: same port, and the same address or a
/// wildcard on either side. Port 0 never conflicts. Sockets in any other state (`TIME_WAIT`,
/// `FIN_WAIT`, established connections) are ignored: they do not accept connections.
///
/// A listener held by a live process refuses at once. One that no process holds (the
/// leftover of a server killed a moment ago, see [`ORPHAN_WAIT`]) is waited for: binding next
/// to it with `SO_REUSEPORT` would let it take connections it never accepts.
pub fn ensure_free(addr: SocketAddr) -> Result<(), ListenError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut logged = false;
    loop {
        let Some((found, inode)) = find_listener(addr) else {
            return Ok(());
        };
        if held_by_a_process(inode) || started.elapsed() >= ORPHAN_WAIT {
            return Err(ListenError::InUse { addr, found });
        }
        if !logged {
            tracing::info!(%addr, "waiting for the listening socket a stopped server left to close");
            logged = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The first listening socket that overlaps `addr` (see [`ensure_free`]), with its inode,
/// read from `/proc/net/tcp` and `/proc/net/tcp6`. A table that cannot be read counts as
/// empty (the shards' bind still fails on a listener without `SO_REUSEPORT`).
pub fn find_listener(addr: SocketAddr) -> Option<(SocketAddr, u64)> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|table| listeners(&table))
        .find(|(l, _)| overlaps(*l, addr))
}

/// Whether some process has socket `inode` open (`/proc/*/fd/*` → `socket:[inode]`). True
/// when it cannot tell (an unreadable `/proc`), so that a doubt refuses rather than waits.
fn held_by_a_process(inode: u64) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    let want = format!("socket:[{inode}]");
    procs
        .flatten()
        .filter(|p| {
            p.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|p| std::fs::read_dir(p.path().join("fd")).ok())
        .flat_map(|fds| fds.flatten())
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
}

/// Local addresses and inodes of the `LISTEN` (state `0A`) rows of a `/proc/net/tcp{,6}`
/// table.
fn listeners(table: &str) -> Vec<(SocketAddr, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (cols.get(1)?, cols.get(3)?);
            let inode = cols.get(9)?.parse().ok()?;
            (*state == "0A")
                .then(|| parse_proc_addr(local))
                .flatten()
                .map(|a| (a, inode))
        })
        .collect()
}

/// Parses `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6). The kernel prints each 32-bit
/// word of the address with `%08X` in host byte order.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// True when a listener on `l` would take connections meant for `addr`.
fn overlaps(l: SocketAddr, addr: SocketAddr) -> bool {
    if l.port() != addr.port() {
        return false;
    }
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let (a, b) = (canon(l.ip()), canon(addr.ip()));
    a.is_unspecified() || b.is_unspecified() || a == b
}

/// A TCP socket bound to `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`, not yet listening.
/// Binding port 0 picks a free port; read it with `local_addr`.
pub fn bind(addr: SocketAddr) -> Result<socket2::Socket, ListenError> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(ListenError::io("create a socket for", addr))?;
    sock.set_reuse_address(true)
        .and_then(|_| sock.set_reuse_port(true))
        .map_err(ListenError::io("set SO_REUSEADDR/SO_REUSEPORT on", addr))?;
    sock.bind(&addr.into())
        .map_err(ListenError::io("bind", addr))?;
    Ok(sock)
}

/// A shard's listener on `addr` ([`bind`], then `listen` with [`BACKLOG`]). Must be called on
/// the shard's executor, which the listener is tied to.
pub fn listen(addr: SocketAddr) -> Result<glommio::net::TcpListener, ListenError> {
    let sock = bind(addr)?;
    sock.listen(BACKLOG)
        .map_err(ListenError::io("listen on", addr))?;
    // SAFETY: the descriptor is a bound, listening TCP socket whose ownership moves into the
    // listener (`into_raw_fd` gives it up), which is what `from_raw_fd` requires.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(sock.into_raw_fd()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:D0A4 06 00000000:00000000 03:00000F3C 00000000     0        0 0 3 0000000000000000\n\
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0\n";
        let l = listeners(table);
        assert_eq!(
            l,
            vec![
                ("127.0.0.1:8080".parse::<SocketAddr>().unwrap(), 1),
                ("0.0.0.0:22".parse().unwrap(), 2)
            ],
            "the TIME_WAIT row (06) is not a listener"
        );
        let v6 = "  sl  local_address                         remote_address                        st tx rx tr retr uid timeout inode\n\
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0 0 0 0 0 7\n\
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0 0 0 0 0 8\n";
        assert_eq!(
            listeners(v6),
            vec![
                ("[::1]:8080".parse::<SocketAddr>().unwrap(), 7),
                ("[::]:80".parse().unwrap(), 8)
            ]
        );
    }

    #[test]
    fn overlap_is_same_port_and_same_or_wildcard_address() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("127.0.0.1:8848"), a("127.0.0.1:8848")));
        assert!(overlaps(a("0.0.0.0:8848"), a("127.0.0.5:8848")));
        assert!(overlaps(a("127.0.0.5:8848"), a("0.0.0.0:8848")));
        assert!(overlaps(a("[::]:8848"), a("127.0.0.1:8848")));
        assert!(overlaps(a("[::ffff:127.0.0.1]:8848"), a("127.0.0.1:8848")));
        assert!(!overlaps(a("127.0.0.2:8848"), a("127.0.0.1:8848")));
        assert!(!overlaps(a("127.0.0.1:8849"), a("127.0.0.1:8848")));
    }

    #[test]
    fn finds_a_live_listener_and_ignores_a_closed_one() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(find_listener(addr).map(|(a, _)| a), Some(addr));
        // This process holds it: refused at once, without waiting for it.
        let asked = std::time::Instant::now();
        match ensure_free(addr) {
            Err(ListenError::InUse { found, .. }) => assert_eq!(found, addr),
            other => panic!("expected InUse, got {other:?}"),
        }
        assert!(asked.elapsed() < ORPHAN_WAIT);
        // A connection through it leaves the port held by non-listening sockets once the
        // listener is gone.
        let c = std::net::TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        drop(l);
        drop(s);
        assert_eq!(find_listener(addr), None);
        ensure_free(addr).unwrap();
        drop(c);
    }
}
