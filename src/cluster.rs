//! The cluster's members: who they are (the member list and its sources), the state each one is
//! in as this node sees it, the cluster secret, and which live member is responsible for a
//! service. No IO: `node/peer.rs` does the talking and records what it sees here.
//!
//! A member is named by its HTTP address `ip:port` (what clients and `cluster.conf` use). Its
//! peer port, for node-to-node traffic, is the HTTP port − [`PEER_PORT_OFFSET`], as Nacos's raft
//! port is.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// The port of a `cluster.conf` or `--members` entry that names none.
pub const DEFAULT_PORT: u16 = 8848;
/// A member's peer port is its HTTP port minus this.
pub const PEER_PORT_OFFSET: u16 = 1000;
/// Shortest cluster secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// The secret README shows as an example; start refuses it.
pub const EXAMPLE_SECRET: &str = "change-me-to-32-or-more-random-bytes";
/// Consecutive failed contacts after which a SUSPICIOUS member is DOWN (Nacos
/// `nacos.core.member.fail-access-cnt`, 3).
pub const MAX_FAILS: u32 = 3;

/// Why a member list does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberListError {
    /// An entry is not `ip` or `ip:port`.
    #[error("member {entry:?} is not ip or ip:port")]
    BadEntry {
        /// The entry as written.
        entry: String,
    },
    /// A port leaves no room for the peer port (HTTP port − 1000).
    #[error("member {0}: its port must be above {PEER_PORT_OFFSET} (the peer port is port - {PEER_PORT_OFFSET})")]
    LowPort(SocketAddr),
    /// The list names no member.
    #[error("the member list is empty")]
    Empty,
    /// A new list that leaves this node out (a member cannot remove itself this way: stop it).
    #[error("the new member list does not include this node ({0})")]
    NotListed(SocketAddr),
    /// Two members whose addresses give the same raft id.
    #[error("two members of the list have the same raft id; change one member's address")]
    SameRaftId,
}

/// Parses a member list in Nacos's `cluster.conf` form: `#` starts a comment anywhere on a
/// line; entries are separated by commas, whitespace or new lines; an entry without a port
/// means [`DEFAULT_PORT`]. The result is sorted and without duplicates.
pub fn parse_members(text: &str) -> Result<Vec<SocketAddr>, MemberListError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        for entry in line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let addr = parse_entry(entry).ok_or_else(|| MemberListError::BadEntry {
                entry: entry.to_string(),
            })?;
            if addr.port() <= PEER_PORT_OFFSET {
                return Err(MemberListError::LowPort(addr));
            }
            out.push(addr);
        }
    }
    if out.is_empty() {
        return Err(MemberListError::Empty);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn parse_entry(entry: &str) -> Option<SocketAddr> {
    if let Ok(a) = entry.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip: IpAddr = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry)
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, DEFAULT_PORT))
}

/// The peer address of a member: its IP, HTTP port − [`PEER_PORT_OFFSET`].
pub fn peer_addr(member: SocketAddr) -> SocketAddr {
    SocketAddr::new(member.ip(), member.port().saturating_sub(PEER_PORT_OFFSET))
}

/// The cluster secret peers prove to each other (HMAC-SHA256 key). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why a cluster secret is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Cluster mode without a secret.
    #[error(
        "cluster mode needs a cluster secret (MUSTER_CLUSTER_SECRET or --cluster-secret-file)"
    )]
    Missing,
    /// Fewer than [`MIN_SECRET_LEN`] bytes.
    #[error("the cluster secret is {0} bytes; it needs at least {MIN_SECRET_LEN}")]
    Short(usize),
    /// README's example.
    #[error("the cluster secret is the example from the README; generate one (e.g. `openssl rand -hex 32`)")]
    Example,
}

impl Secret {
    /// The secret, with surrounding whitespace (a file's final newline) trimmed.
    pub fn new(raw: &str) -> Result<Secret, SecretError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(SecretError::Missing);
        }
        if s == EXAMPLE_SECRET {
            return Err(SecretError::Example);
        }
        if s.len() < MIN_SECRET_LEN {
            return Err(SecretError::Short(s.len()));
        }
        Ok(Secret(s.as_bytes().to_vec()))
    }

    /// Whether `given` is the secret (for the admin endpoint's header).
    pub fn matches(&self, given: &[u8]) -> bool {
        // Constant time in the secret's length: the comparison never stops at the first
        // differing byte.
        given.len() == self.0.len()
            && given
                .iter()
                .zip(&self.0)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A member's state as this node sees it (Nacos `NodeState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MemberState {
    /// Not contacted yet.
    Starting = 0,
    /// The last contact succeeded.
    Up = 1,
    /// 1 to [`MAX_FAILS`] contacts in a row failed.
    Suspicious = 2,
    /// More than [`MAX_FAILS`] contacts in a row failed, or the connection was refused.
    Down = 3,
}

impl MemberState {
    /// Nacos's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Starting => "STARTING",
            MemberState::Up => "UP",
            MemberState::Suspicious => "SUSPICIOUS",
            MemberState::Down => "DOWN",
        }
    }

    fn from_u8(v: u8) -> MemberState {
        match v {
            1 => MemberState::Up,
            2 => MemberState::Suspicious,
            3 => MemberState::Down,
            _ => MemberState::Starting,
        }
    }

    /// Counted among the members that share responsibility (Nacos: UP or SUSPICIOUS).
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Up | MemberState::Suspicious)
    }
}

/// One member and what this node has seen of it. Written by its peer link only; read by
/// anyone.
#[derive(Debug)]
pub struct Member {
    /// The member's HTTP address.
    pub addr: SocketAddr,
    /// `addr` as text, what [`crate::hash::member_score`] hashes (kept to hash without
    /// formatting on every write).
    label: String,
    state: AtomicU8,
    fails: AtomicU32,
    /// Wall-clock ms of the last successful contact (0: never).
    last_ok_ms: AtomicU64,
    /// Round trip of the last answered ping, in µs.
    rtt_us: AtomicU64,
    /// Failed contacts since start.
    failures_total: AtomicU64,
    /// Authenticated connections made to it since start.
    connects_total: AtomicU64,
}

impl Member {
    fn new(addr: SocketAddr, state: MemberState) -> Member {
        Member {
            addr,
            label: addr.to_string(),
            state: AtomicU8::new(state as u8),
            fails: AtomicU32::new(0),
            last_ok_ms: AtomicU64::new(0),
            rtt_us: AtomicU64::new(0),
            failures_total: AtomicU64::new(0),
            connects_total: AtomicU64::new(0),
        }
    }

    /// Records an answered ping's round trip, in µs.
    pub fn record_rtt(&self, micros: u64) {
        self.rtt_us.store(micros, Ordering::Relaxed);
    }

    /// Records a new authenticated connection to it.
    pub fn record_connect(&self) {
        self.connects_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Last ping round trip (µs), failed contacts and connections since start.
    pub fn counters(&self) -> (u64, u64, u64) {
        (
            self.rtt_us.load(Ordering::Relaxed),
            self.failures_total.load(Ordering::Relaxed),
            self.connects_total.load(Ordering::Relaxed),
        )
    }

    /// Current state.
    pub fn state(&self) -> MemberState {
        MemberState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Consecutive failed contacts.
    pub fn fails(&self) -> u32 {
        self.fails.load(Ordering::Relaxed)
    }

    /// Wall-clock ms of the last successful contact (0: never).
    pub fn last_ok_ms(&self) -> u64 {
        self.last_ok_ms.load(Ordering::Relaxed)
    }

    /// A contact succeeded at wall-clock `now_ms`: UP. Returns the state before.
    pub fn contact_ok(&self, now_ms: u64) -> MemberState {
        self.fails.store(0, Ordering::Relaxed);
        self.last_ok_ms.store(now_ms, Ordering::Relaxed);
        MemberState::from_u8(self.state.swap(MemberState::Up as u8, Ordering::AcqRel))
    }

    /// A contact failed; `refused` when the connection was actively refused (nothing listens:
    /// the process is gone). SUSPICIOUS, then DOWN after more than [`MAX_FAILS`] in a row or at
    /// once when refused. Returns the state before and after.
    pub fn contact_failed(&self, refused: bool) -> (MemberState, MemberState) {
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        let fails = self.fails.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let next = if refused || fails > MAX_FAILS {
            MemberState::Down
        } else {
            MemberState::Suspicious
        };
        let before = MemberState::from_u8(self.state.swap(next as u8, Ordering::AcqRel));
        (before, next)
    }
}

/// The members of this node's cluster, sorted by address, this node included. The list can
/// change at run time ([`Members::update`]: SIGHUP or the admin endpoint); readers take a
/// snapshot ([`Members::all`]) and a member keeps its state for as long as it stays listed.
#[derive(Debug)]
pub struct Members {
    this: SocketAddr,
    all: RwLock<Arc<Vec<Arc<Member>>>>,
}

/// What [`Members::update`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListChange {
    /// Members that joined the list.
    pub added: Vec<SocketAddr>,
    /// Members that left it.
    pub removed: Vec<SocketAddr>,
}

impl Members {
    /// The table for `this` among `members` (sorted, `this` included). This node is UP; every
    /// other member starts as STARTING.
    pub fn new(this: SocketAddr, members: &[SocketAddr]) -> Members {
        debug_assert!(members.contains(&this));
        let all = members
            .iter()
            .map(|&a| {
                let state = if a == this {
                    MemberState::Up
                } else {
                    MemberState::Starting
                };
                Arc::new(Member::new(a, state))
            })
            .collect();
        Members {
            this,
            all: RwLock::new(Arc::new(all)),
        }
    }

    /// Replaces the list with `members` (which must include this node and give every member
    /// its own raft id): members that stay keep their state, new ones start as STARTING.
    pub fn update(&self, members: &[SocketAddr]) -> Result<ListChange, MemberListError> {
        if !members.contains(&self.this) {
            return Err(MemberListError::NotListed(self.this));
        }
        let mut ids: Vec<u64> = members.iter().map(|&m| Self::raft_id(m)).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != members.len() {
            return Err(MemberListError::SameRaftId);
        }
        let mut sorted = members.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut w = self.all.write().unwrap_or_else(|e| e.into_inner());
        let old = w.clone();
        let change = ListChange {
            added: sorted
                .iter()
                .filter(|a| !old.iter().any(|m| m.addr == **a))
                .copied()
                .collect(),
            removed: old
                .iter()
                .map(|m| m.addr)
                .filter(|a| !sorted.contains(a))
                .collect(),
        };
        let all = sorted
            .iter()
            .map(|&a| match old.iter().find(|m| m.addr == a) {
                Some(m) => m.clone(),
                None => Arc::new(Member::new(a, MemberState::Starting)),
            })
            .collect();
        *w = Arc::new(all);
        Ok(change)
    }

    /// This node's member address.
    pub fn this(&self) -> SocketAddr {
        self.this
    }

    /// Every member, sorted by address, this node included (a snapshot of the list).
    pub fn all(&self) -> Arc<Vec<Arc<Member>>> {
        self.all.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The members other than this node.
    pub fn peers(&self) -> Vec<Arc<Member>> {
        self.all()
            .iter()
            .filter(|m| m.addr != self.this)
            .cloned()
            .collect()
    }

    /// The member with HTTP address `addr`.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<Member>> {
        self.all().iter().find(|m| m.addr == addr).cloned()
    }

    /// The raft node id of the member at `addr` ([`crate::hash::raft_id`]).
    pub fn raft_id(addr: SocketAddr) -> u64 {
        crate::hash::raft_id(&addr.to_string())
    }

    /// This node's raft id.
    pub fn this_id(&self) -> u64 {
        Self::raft_id(self.this)
    }

    /// Every member's raft id, in member order.
    pub fn raft_ids(&self) -> Vec<u64> {
        self.all().iter().map(|m| Self::raft_id(m.addr)).collect()
    }

    /// The member whose raft id is `id`.
    pub fn by_raft_id(&self, id: u64) -> Option<Arc<Member>> {
        self.all()
            .iter()
            .find(|m| Self::raft_id(m.addr) == id)
            .cloned()
    }

    /// The member whose peer connections come from `ip` (each member has its own address).
    pub fn by_ip(&self, ip: IpAddr) -> Option<Arc<Member>> {
        self.all().iter().find(|m| m.addr.ip() == ip).cloned()
    }

    /// The live member (UP or SUSPICIOUS; this node always counts) responsible for a service:
    /// the highest [`crate::hash::member_score`] ([`crate::hash::OWNERSHIP_VERSION`]).
    pub fn responsible(&self, namespace: &str, grouped: &str) -> SocketAddr {
        let all = self.all.read().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|m| m.addr == self.this || m.state().is_live())
            .max_by_key(|m| crate::hash::member_score(&m.label, namespace, grouped))
            .map_or(self.this, |m| m.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cluster_conf_is_read_as_nacos_reads_it() {
        let text = "# the cluster\n127.0.0.3:8848\n127.0.0.1:8848,127.0.0.2 # two on a line\n\n  127.0.0.1:8848\n[::1]:9000\n";
        assert_eq!(
            parse_members(text).unwrap(),
            vec![
                a("127.0.0.1:8848"),
                a("127.0.0.2:8848"),
                a("127.0.0.3:8848"),
                a("[::1]:9000")
            ]
        );
        assert_eq!(parse_members("# nobody\n"), Err(MemberListError::Empty));
        assert_eq!(
            parse_members("127.0.0.1:8848,host.example:8848"),
            Err(MemberListError::BadEntry {
                entry: "host.example:8848".into()
            })
        );
        assert_eq!(
            parse_members("127.0.0.1:900"),
            Err(MemberListError::LowPort(a("127.0.0.1:900")))
        );
        assert_eq!(peer_addr(a("127.0.0.2:8848")), a("127.0.0.2:7848"));
    }

    #[test]
    fn secrets_must_be_long_and_not_the_example() {
        assert_eq!(Secret::new("  \n"), Err(SecretError::Missing));
        assert_eq!(Secret::new("short"), Err(SecretError::Short(5)));
        assert_eq!(Secret::new(EXAMPLE_SECRET), Err(SecretError::Example));
        let s = Secret::new("0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(s.bytes().len(), 32);
        assert_eq!(format!("{s:?}"), "Secret(32 bytes)");
    }

    #[test]
    fn states_follow_contacts() {
        let ms = [a("127.0.0.1:8848"), a("127.0.0.2:8848")];
        let t = Members::new(ms[0], &ms);
        let peer = t.get(ms[1]).unwrap();
        assert_eq!(peer.state(), MemberState::Starting);
        assert_eq!(peer.contact_ok(5), MemberState::Starting);
        assert_eq!(peer.state(), MemberState::Up);
        for _ in 0..MAX_FAILS {
            assert_eq!(peer.contact_failed(false).1, MemberState::Suspicious);
        }
        assert_eq!(peer.contact_failed(false).1, MemberState::Down);
        peer.contact_ok(6);
        assert_eq!((peer.state(), peer.fails()), (MemberState::Up, 0));
        assert_eq!(peer.contact_failed(true).1, MemberState::Down);
        assert_eq!(t.get(ms[0]).unwrap().state(), MemberState::Up);
    }

    #[test]
    fn responsibility_moves_only_off_a_dead_member() {
        let ms = [
            a("127.0.0.1:8848"),
            a("127.0.0.2:8848"),
            a("127.0.0.3:8848"),
        ];
        let t = Members::new(ms[0], &ms);
        // Before any contact, peers are not live: this node is responsible for everything.
        assert_eq!(t.responsible("public", "DEFAULT_GROUP@@orders"), ms[0]);
        for m in t.peers() {
            m.contact_ok(1);
        }
        let before: Vec<_> = (0..300)
            .map(|i| t.responsible("public", &format!("g@@s{i}")))
            .collect();
        assert!(ms.iter().all(|m| before.contains(m)));
        t.get(ms[2]).unwrap().contact_failed(true);
        for (i, was) in before.iter().enumerate() {
            let now = t.responsible("public", &format!("g@@s{i}"));
            if *was != ms[2] {
                assert_eq!(now, *was);
            } else {
                assert_ne!(now, ms[2]);
            }
        }
    }
}
