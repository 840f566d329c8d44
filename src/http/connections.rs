//! Admission of new connections (the cap and the per-IP share) and the registry of open
//! connections that shutdown closes.

use super::*;

/// Set while a connection waits for its next request.
pub(super) type Idle = Rc<Cell<bool>>;

/// Admission of new connections over all shards: the `max_connections` cap, and a per-IP
/// share once the cap is near, so one address flooding cannot lock every other client out.
///
/// Rule: a connection is refused when `max` are open; and once three quarters of `max` are
/// open, also when its IP already holds half of `max` (at least 1). One address flooding thus
/// gets at most three quarters of the connections, and at least a quarter stays for everyone
/// else. Clients behind one NAT or proxy address share its share: such a deployment can use
/// three quarters of `max`, so size `max_connections` for it.
///
/// Invariant: `open` equals the sum of `per_ip`'s counts, which has no zero entries.
#[derive(Debug, Default)]
pub struct Admission {
    open: std::sync::atomic::AtomicUsize,
    per_ip: std::sync::Mutex<HashMap<std::net::IpAddr, usize>>,
}

impl Admission {
    /// Admits a connection from `ip` under the rule above; the caller must [`Self::release`]
    /// it when it closes.
    pub fn admit(&self, ip: std::net::IpAddr, max: usize) -> bool {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let open = self.open.load(Ordering::Relaxed);
        let held = per_ip.get(&ip).copied().unwrap_or(0);
        if open >= max || (open >= max - max / 4 && held >= (max / 2).max(1)) {
            return false;
        }
        *per_ip.entry(ip).or_insert(0) += 1;
        self.open.store(open + 1, Ordering::Relaxed);
        true
    }

    /// Releases a connection [`Self::admit`] admitted.
    pub fn release(&self, ip: std::net::IpAddr) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// The open connections of one shard, so that shutdown can close the idle ones.
#[derive(Debug, Default)]
pub struct Connections {
    /// By connection id: the socket, and whether the connection is between requests.
    open: RefCell<HashMap<u64, (RawFd, Idle)>>,
    next: Cell<u64>,
    stopping: Cell<bool>,
}

impl Connections {
    /// Registers a connection; the returned flag says whether it is idle (between requests).
    pub(super) fn add(&self, fd: RawFd) -> (u64, Idle) {
        let id = self.next.get();
        self.next.set(id + 1);
        let idle = Rc::new(Cell::new(true));
        self.open.borrow_mut().insert(id, (fd, idle.clone()));
        (id, idle)
    }

    pub(super) fn remove(&self, id: u64) {
        self.open.borrow_mut().remove(&id);
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Begins shutdown: every idle connection's read side is shut (its pending read returns
    /// end-of-file, so it closes); busy ones finish their request and close after the answer.
    pub fn stop(&self) {
        self.stopping.set(true);
        for (fd, idle) in self.open.borrow().values() {
            if idle.get() {
                // SAFETY: the descriptor is open: a connection is removed from `open` before
                // its socket is closed, and both happen on this thread.
                unsafe {
                    libc::shutdown(*fd, libc::SHUT_RD);
                }
            }
        }
    }
}

/// Removes a connection from [`Connections`] when its task ends.
pub(super) struct Registered<'a> {
    pub(super) conns: &'a Connections,
    pub(super) id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.conns.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ip_gets_a_share_once_the_cap_is_near() {
        let a = Admission::default();
        let (x, y): (std::net::IpAddr, std::net::IpAddr) =
            ("127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap());
        // Below 3/4 of the cap anyone is admitted; from there on, x (holding 75 ≥ 50) is not,
        // and y is, up to the cap.
        assert_eq!((0..100).filter(|_| a.admit(x, 100)).count(), 75);
        assert_eq!((0..100).filter(|_| a.admit(y, 100)).count(), 25);
        assert_eq!(a.open(), 100);
        for _ in 0..50 {
            a.release(x);
        }
        assert_eq!(a.open(), 50);
        assert!(a.admit(x, 100));
        // Others first: x may still take its half, not more.
        let c = Admission::default();
        assert_eq!((0..60).filter(|_| c.admit(y, 100)).count(), 60);
        assert_eq!((0..100).filter(|_| c.admit(x, 100)).count(), 40);
        let d = Admission::default();
        assert_eq!((0..50).filter(|_| d.admit(y, 100)).count(), 50);
        assert_eq!((0..100).filter(|_| d.admit(x, 100)).count(), 50);
        // The total cap holds whatever the addresses.
        let b = Admission::default();
        let n = (0..200u8)
            .filter(|i| b.admit(std::net::IpAddr::from([10, 0, 0, *i]), 100))
            .count();
        assert_eq!(n, 100);
    }
}
