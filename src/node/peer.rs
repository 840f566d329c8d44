//! Peer links: node-to-node TCP on the peer port, authenticated with the cluster secret, and
//! the pings that keep every member's state ([`crate::cluster::Members`]) current.
//!
//! Threads, blocking sockets: one acceptor, one thread per accepted peer connection (at most
//! [`MAX_INBOUND_PER_MEMBER`] per member), and one link thread per other member that dials it,
//! pings it every `ping_ms` and records each answer or failure. No shard ever waits on a peer.
//! Outgoing connections are bound to this node's own member IP, so one address pair is exactly
//! one link (the cluster tests cut links with firewall rules on address pairs), and an accepted
//! connection must come from the IP of the member it claims to be.
//!
//! Frames: `u32` little-endian length of what follows, then a kind byte and the body. The
//! handshake, both sides proving the secret without sending it (HMAC-SHA256 over fresh nonces):
//! 1. dialer → `Hello { magic, ownership version, from, to, nonce_d }`
//! 2. acceptor checks `to` is itself, `from` a member whose IP the connection comes from, the
//!    version equal; → `Challenge { nonce_a, mac("acceptor", nonce_d, nonce_a, from, to) }`
//! 3. dialer checks that mac; → `Proof { mac("dialer", nonce_a, nonce_d, from, to) }`
//! 4. acceptor checks it (constant time); → `Welcome`, or `Refused { reason }` and a WARN log.
//!
//! Nothing trusts a User-Agent or a claimed address alone (CVE-2021-29441).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::wall_ms;
use crate::cluster::{peer_addr, MemberState, Members, Secret};
use crate::hash::OWNERSHIP_VERSION;

/// The first bytes of every `Hello`: the peer protocol and its version.
pub const MAGIC: &[u8; 8] = b"MUSTERP1";
/// Largest frame accepted, in bytes (handshake and pings are tiny; Distro batches will not be).
pub const MAX_FRAME: usize = 16 << 20;
/// Connections each member keeps to each other member: calls on one link run this many at
/// a time (a forwarded write does not wait behind another member's slow call).
pub const LINK_CONNECTIONS: usize = 4;
/// Most concurrent inbound connections per member (a dialer holds [`LINK_CONNECTIONS`];
/// reconnects overlap).
pub const MAX_INBOUND_PER_MEMBER: usize = 2 * (LINK_CONNECTIONS + 1);
/// Time allowed for the whole handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

const HELLO: u8 = 1;
const CHALLENGE: u8 = 2;
const PROOF: u8 = 3;
const WELCOME: u8 = 4;
const REFUSED: u8 = 5;
const PING: u8 = 6;
const PONG: u8 = 7;
const REQUEST: u8 = 8;
const RESPONSE: u8 = 9;
/// The answer to a request that arrived before this node could serve requests.
const UNAVAILABLE: u8 = 10;
/// Raft traffic (`node/transport.rs`): answered with `RESPONSE` by the raft handler.
const RAFT: u8 = 11;

/// How long a request waits for its answer, in total (dial included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

const NONCE: usize = 32;
const MAC: usize = 32;

/// Why a peer connection failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Socket IO failed (timeouts included).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The other side sent something the protocol does not allow here.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The dialer could not prove the cluster secret, or the acceptor could not.
    #[error("wrong cluster secret")]
    WrongSecret,
    /// The other side refused the connection, saying why.
    #[error("refused by the peer: {0}")]
    Refused(String),
}

impl PeerError {
    /// True when nothing listens at the address (the process is gone): DOWN at once.
    fn is_refused_connect(&self) -> bool {
        matches!(self, PeerError::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused)
    }
}

fn protocol(why: impl Into<String>) -> PeerError {
    PeerError::Protocol(why.into())
}

/// Writes one frame.
fn write_frame(w: &mut impl Write, kind: u8, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len() + 1).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut buf = Vec::with_capacity(5 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(body);
    w.write_all(&buf)
}

/// Reads one frame: its kind and body. A length of 0 or above [`MAX_FRAME`] is an error.
fn read_frame(r: &mut impl Read) -> Result<(u8, Vec<u8>), PeerError> {
    read_frame_max(r, MAX_FRAME)
}

/// Largest frame of the handshake (hello, challenge, proof, welcome, refused): nothing is
/// allocated for an unauthenticated peer beyond this.
const HANDSHAKE_FRAME: usize = 4096;

/// Reads a frame of at most `max` bytes (kind byte included).
fn read_frame_max(r: &mut impl Read, max: usize) -> Result<(u8, Vec<u8>), PeerError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > max {
        return Err(protocol(format!("frame length {len}")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    let kind = buf.remove(0);
    Ok((kind, buf))
}

/// A cursor over a frame body.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PeerError> {
        if self.0.len() < n {
            return Err(protocol("frame cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PeerError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn addr(&mut self) -> Result<SocketAddr, PeerError> {
        let n = u16::from_le_bytes(self.array()?) as usize;
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| protocol("address not UTF-8"))?;
        s.parse()
            .map_err(|_| protocol(format!("bad address {s:?}")))
    }
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    let s = a.to_string();
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn nonce() -> io::Result<[u8; NONCE]> {
    let mut n = [0u8; NONCE];
    getrandom::getrandom(&mut n).map_err(io::Error::other)?;
    Ok(n)
}

/// The HMAC both sides compute: `role`, 0x00, the two nonces, `from`, 0x00, `to`.
fn mac(
    secret: &Secret,
    role: &[u8],
    a: &[u8; NONCE],
    b: &[u8; NONCE],
    from: SocketAddr,
    to: SocketAddr,
) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes any key length");
    m.update(role);
    m.update(&[0]);
    m.update(a);
    m.update(b);
    m.update(from.to_string().as_bytes());
    m.update(&[0]);
    m.update(to.to_string().as_bytes());
    m
}

/// Dials `to`'s peer port from this node's member IP and runs the dialer's side of the
/// handshake. `timeout` bounds the connect and each read.
pub fn dial(
    this: SocketAddr,
    to: SocketAddr,
    secret: &Secret,
    timeout: Duration,
) -> Result<TcpStream, PeerError> {
    let target = peer_addr(to);
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.bind(&SocketAddr::new(this.ip(), 0).into())?;
    sock.connect_timeout(&target.into(), timeout)?;
    let mut s: TcpStream = sock.into();
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout.min(HANDSHAKE_TIMEOUT)))?;
    s.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let nonce_d = nonce()?;
    let mut hello = Vec::with_capacity(128);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&OWNERSHIP_VERSION.to_le_bytes());
    put_addr(&mut hello, this);
    put_addr(&mut hello, to);
    hello.extend_from_slice(&nonce_d);
    write_frame(&mut s, HELLO, &hello)?;
    let (kind, body) = read_frame_max(&mut s, HANDSHAKE_FRAME)?;
    match kind {
        CHALLENGE => {}
        REFUSED => return Err(PeerError::Refused(String::from_utf8_lossy(&body).into())),
        k => return Err(protocol(format!("expected a challenge, got kind {k}"))),
    }
    let mut b = Body(&body);
    let nonce_a: [u8; NONCE] = b.array()?;
    let their: [u8; MAC] = b.array()?;
    mac(secret, b"acceptor", &nonce_d, &nonce_a, this, to)
        .verify_slice(&their)
        .map_err(|_| PeerError::WrongSecret)?;
    let proof = mac(secret, b"dialer", &nonce_a, &nonce_d, this, to)
        .finalize()
        .into_bytes();
    write_frame(&mut s, PROOF, &proof)?;
    let (kind, body) = read_frame_max(&mut s, HANDSHAKE_FRAME)?;
    match kind {
        WELCOME => Ok(s),
        REFUSED => Err(PeerError::Refused(String::from_utf8_lossy(&body).into())),
        k => Err(protocol(format!("expected welcome, got kind {k}"))),
    }
}

/// The acceptor's side of the handshake on `s`, from TCP source `src`. Returns the member
/// address the dialer proved, or why it was refused (after telling it).
fn accept_handshake(
    s: &mut TcpStream,
    src: IpAddr,
    members: &Members,
    secret: &Secret,
) -> Result<SocketAddr, PeerError> {
    let this = members.this();
    let (kind, body) = read_frame_max(s, HANDSHAKE_FRAME)?;
    if kind != HELLO {
        return Err(protocol(format!("expected hello, got kind {kind}")));
    }
    let mut b = Body(&body);
    if b.take(MAGIC.len())? != MAGIC {
        return Err(protocol("not a Muster peer (bad magic)"));
    }
    let version = u32::from_le_bytes(b.array()?);
    let from = b.addr()?;
    let to = b.addr()?;
    let nonce_d: [u8; NONCE] = b.array()?;
    let refuse = |s: &mut TcpStream, why: String| -> PeerError {
        let _ = write_frame(s, REFUSED, why.as_bytes());
        PeerError::Refused(why)
    };
    if version != OWNERSHIP_VERSION {
        return Err(refuse(
            s,
            format!("ownership version {version}, this node runs {OWNERSHIP_VERSION}"),
        ));
    }
    if to != this {
        return Err(refuse(s, format!("this node is {this}, not {to}")));
    }
    if from == this || members.get(from).is_none() {
        return Err(refuse(s, format!("{from} is not a member of this cluster")));
    }
    if from.ip() != src {
        return Err(refuse(
            s,
            format!("connection from {src} claims to be member {from}"),
        ));
    }
    let nonce_a = nonce()?;
    let mut challenge = Vec::with_capacity(NONCE + MAC);
    challenge.extend_from_slice(&nonce_a);
    challenge.extend_from_slice(
        &mac(secret, b"acceptor", &nonce_d, &nonce_a, from, to)
            .finalize()
            .into_bytes(),
    );
    write_frame(s, CHALLENGE, &challenge)?;
    let (kind, body) = read_frame_max(s, HANDSHAKE_FRAME)?;
    if kind != PROOF || body.len() != MAC {
        return Err(protocol(format!("expected a proof, got kind {kind}")));
    }
    if mac(secret, b"dialer", &nonce_a, &nonce_d, from, to)
        .verify_slice(&body)
        .is_err()
    {
        let _ = write_frame(s, REFUSED, b"wrong cluster secret");
        return Err(PeerError::WrongSecret);
    }
    write_frame(s, WELCOME, &[])?;
    Ok(from)
}

/// Serves a request from a peer (its body) and returns the answer's body. Runs on the peer
/// connection's thread: it may block (bounded by the caller's [`CALL_TIMEOUT`]).
pub type Handler = Arc<dyn Fn(Vec<u8>) -> Vec<u8> + Send + Sync>;

/// A request to a peer: its body and where its answer (or why there is none) goes.
#[derive(Debug)]
pub struct Call {
    /// The request body.
    pub body: Vec<u8>,
    /// The answer's body, or why the call failed.
    pub reply: flume::Sender<Result<Vec<u8>, String>>,
}

/// This node's peer links: a queue of calls per other member, and the handler that serves
/// calls from them (set once the node can serve; until then they are answered "unavailable").
pub struct Peers {
    links: RwLock<Vec<(SocketAddr, flume::Sender<Call>)>>,
    handlers: Arc<Handlers>,
    settings: PeerSettings,
    members: Arc<Members>,
    stop: Arc<AtomicBool>,
}

/// What serves peers' requests, by frame kind; each is set once the node can serve it.
#[derive(Default)]
struct Handlers {
    /// `REQUEST` frames: Distro (`node/distro.rs`).
    distro: OnceLock<Handler>,
    /// `RAFT` frames: raft messages (`node/transport.rs`).
    raft: OnceLock<Handler>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("links", &self.read().len())
            .finish()
    }
}

impl Peers {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<(SocketAddr, flume::Sender<Call>)>> {
        self.links.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Where calls to member `to` are queued (none for this node or a stranger).
    pub fn link(&self, to: SocketAddr) -> Option<flume::Sender<Call>> {
        self.read()
            .iter()
            .find(|(a, _)| *a == to)
            .map(|(_, s)| s.clone())
    }

    /// Every other member and its call queue.
    pub fn all(&self) -> Vec<(SocketAddr, flume::Sender<Call>)> {
        self.read().clone()
    }

    /// Starts the link to a member that joined the list (nothing when it has one already).
    /// Returns its call queue.
    pub fn add(&self, to: SocketAddr) -> io::Result<flume::Sender<Call>> {
        if let Some(l) = self.link(to) {
            return Ok(l);
        }
        let tx = spawn_link(to, &self.members, &self.settings, &self.stop)?;
        self.links
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((to, tx.clone()));
        Ok(tx)
    }

    /// Ends the link to a member that left the list: its threads finish the call they carry
    /// and stop.
    pub fn remove(&self, to: SocketAddr) {
        self.links
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(a, _)| *a != to);
    }

    /// Starts serving calls from peers with `handler` (once; later calls are ignored).
    pub fn serve(&self, handler: Handler) {
        let _ = self.handlers.distro.set(handler);
    }

    /// Starts serving raft traffic from peers with `handler` (once).
    pub fn serve_raft(&self, handler: Handler) {
        let _ = self.handlers.raft.set(handler);
    }
}

/// Most calls queued per peer link; a full queue fails the call at once.
pub const CALL_QUEUE: usize = 4096;

/// What the peer threads need.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// Where to accept peer connections.
    pub listen: SocketAddr,
    /// The cluster secret.
    pub secret: Secret,
    /// Ping period (also the connect and answer timeout).
    pub ping: Duration,
}

/// Binds the peer port (a failure refuses start) and starts the acceptor and one link per
/// other member. The threads run until the process exits or `stop` is set (links check it
/// every ping; the acceptor on its next connection). Returns the bound address and the links.
pub fn start(
    settings: PeerSettings,
    members: Arc<Members>,
    stop: Arc<AtomicBool>,
) -> io::Result<(SocketAddr, Peers)> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(settings.listen),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.bind(&settings.listen.into())?;
    sock.listen(128)?;
    let listener: TcpListener = sock.into();
    let bound = listener.local_addr()?;
    let handler: Arc<Handlers> = Arc::default();
    {
        let (members, settings, stop, handler) = (
            members.clone(),
            settings.clone(),
            stop.clone(),
            handler.clone(),
        );
        std::thread::Builder::new()
            .name("muster-peer-accept".into())
            .spawn(move || accept_loop(listener, members, settings, stop, handler))?;
    }
    let mut links = Vec::new();
    for peer in members.peers() {
        links.push((
            peer.addr,
            spawn_link(peer.addr, &members, &settings, &stop)?,
        ));
    }
    Ok((
        bound,
        Peers {
            links: RwLock::new(links),
            handlers: handler,
            settings,
            members,
            stop,
        },
    ))
}

/// Starts the [`LINK_CONNECTIONS`] threads of member `to`'s link; returns its call queue.
/// They end when the queue's last sender is dropped ([`Peers::remove`]) or at `stop`.
fn spawn_link(
    to: SocketAddr,
    members: &Arc<Members>,
    settings: &PeerSettings,
    stop: &Arc<AtomicBool>,
) -> io::Result<flume::Sender<Call>> {
    let (tx, rx) = flume::bounded(CALL_QUEUE);
    for conn in 0..LINK_CONNECTIONS {
        let (members, settings, stop, rx) =
            (members.clone(), settings.clone(), stop.clone(), rx.clone());
        std::thread::Builder::new()
            .name(format!("muster-peer-{to}-{conn}"))
            .spawn(move || link(to, conn == 0, members, settings, stop, rx))?;
    }
    Ok(tx)
}

/// Accepts peer connections. A connection from an address that is no member's is refused
/// at once (one `Refused` frame, no thread, nothing read), and each member's address holds at
/// most [`MAX_INBOUND_PER_MEMBER`] connections, handshakes included: a stranger that can reach
/// the peer port cannot take the slots the members need.
fn accept_loop(
    listener: TcpListener,
    members: Arc<Members>,
    settings: PeerSettings,
    stop: Arc<AtomicBool>,
    handler: Arc<Handlers>,
) {
    let inbound: Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>> =
        Default::default();
    let mut strangers = 0u64;
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut s) = conn else { continue };
        let Ok(src) = s.peer_addr().map(|a| a.ip()) else {
            continue;
        };
        if members.by_ip(src).is_none() {
            // Logged at the first and then every 1000th, so a flood cannot fill the log.
            if strangers.is_multiple_of(1000) {
                tracing::warn!(%src, refused = strangers + 1, "peer connection refused: not a member's address");
            }
            strangers += 1;
            let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = write_frame(&mut s, REFUSED, b"not a member of this cluster");
            continue;
        }
        {
            let mut held = inbound.lock().unwrap_or_else(|e| e.into_inner());
            let n = held.entry(src).or_insert(0);
            if *n >= MAX_INBOUND_PER_MEMBER {
                tracing::warn!(%src, cap = MAX_INBOUND_PER_MEMBER, "peer connection refused: too many connections from this member's address");
                continue;
            }
            *n += 1;
        }
        let release = {
            let inbound = inbound.clone();
            move || {
                let mut held = inbound.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = held.get_mut(&src) {
                    *n = n.saturating_sub(1);
                }
            }
        };
        let (members, settings, stop, handler) = (
            members.clone(),
            settings.clone(),
            stop.clone(),
            handler.clone(),
        );
        let release_here = release.clone();
        let spawned = std::thread::Builder::new()
            .name("muster-peer-in".into())
            .spawn(move || {
                serve_inbound(&mut s, src, &members, &settings, &stop, &handler);
                release();
            });
        if spawned.is_err() {
            tracing::error!("cannot start a thread for a peer connection");
            release_here();
        }
    }
}

fn serve_inbound(
    s: &mut TcpStream,
    src: IpAddr,
    members: &Members,
    settings: &PeerSettings,
    stop: &AtomicBool,
    handlers: &Handlers,
) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let _ = s.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
    let from = match accept_handshake(s, src, members, &settings.secret) {
        Ok(from) => from,
        Err(e) => {
            tracing::warn!(%src, error = %e, "refused a peer connection");
            return;
        }
    };
    tracing::debug!(peer = %from, "peer connected");
    // A dialer pings every `ping`; three silent periods end the connection.
    let _ = s.set_read_timeout(Some(settings.ping * 3 + Duration::from_millis(500)));
    while !stop.load(Ordering::Relaxed) {
        match read_frame(s) {
            Ok((PING, body)) => {
                if write_frame(s, PONG, &body).is_err() {
                    return;
                }
            }
            Ok((kind @ (REQUEST | RAFT), body)) if body.len() >= 8 => {
                let (id, payload) = body.split_at(8);
                let handler = if kind == RAFT {
                    &handlers.raft
                } else {
                    &handlers.distro
                };
                let answer = match handler.get() {
                    Some(h) => {
                        let mut out = id.to_vec();
                        out.extend_from_slice(&h(payload.to_vec()));
                        write_frame(s, RESPONSE, &out)
                    }
                    None => write_frame(s, UNAVAILABLE, id),
                };
                if answer.is_err() {
                    return;
                }
            }
            Ok((kind, _)) => {
                tracing::warn!(peer = %from, kind, "unexpected peer frame; closing");
                return;
            }
            Err(_) => return,
        }
    }
}

/// Keeps a connection to `to`: dial, ping every period and carry the queued calls, redial
/// after a failure. [`LINK_CONNECTIONS`] of these share a member's call queue, each taking the
/// next call when it is free: calls start in the order they were queued and run that many at
/// a time. Only the `primary` one records answers and failures in the member's state, so a
/// member's state moves at the pace of one connection's pings (the others ping only to keep
/// their connection open).
fn link(
    to: SocketAddr,
    primary: bool,
    members: Arc<Members>,
    settings: PeerSettings,
    stop: Arc<AtomicBool>,
    calls: flume::Receiver<Call>,
) {
    let Some(member) = members.get(to) else {
        return;
    };
    let mut l = Link {
        this: members.this(),
        to,
        primary,
        member: &member,
        settings: &settings,
        conn: None,
        seq: 0,
        last_error: String::new(),
    };
    let mut next_ping = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let wait = next_ping.saturating_duration_since(Instant::now());
        match calls.recv_timeout(wait) {
            Ok(call) => {
                let r = l.exchange(REQUEST, &call.body, CALL_TIMEOUT);
                let _ = call.reply.send(r.map_err(|e| e.to_string()));
                continue;
            }
            Err(flume::RecvTimeoutError::Timeout) => {}
            // The member left the list (`Peers::remove` dropped the queue): this link ends.
            Err(flume::RecvTimeoutError::Disconnected) => return,
        }
        next_ping = Instant::now() + settings.ping;
        let ping = l.seq.wrapping_add(1).to_le_bytes();
        let sent = Instant::now();
        if let Ok(pong) = l.exchange(PING, &ping, settings.ping) {
            if pong == ping && primary {
                member.record_rtt(sent.elapsed().as_micros() as u64);
            }
        }
    }
}

/// One member's link as its thread holds it.
struct Link<'a> {
    this: SocketAddr,
    to: SocketAddr,
    /// Records contacts in the member's state (one connection per member does).
    primary: bool,
    member: &'a crate::cluster::Member,
    settings: &'a PeerSettings,
    conn: Option<TcpStream>,
    seq: u64,
    last_error: String,
}

impl Link<'_> {
    /// Sends a ping or a request (dialing first if needed) and returns the answer's body.
    /// Records the contact in the member's state either way; a failure drops the connection.
    fn exchange(&mut self, kind: u8, body: &[u8], timeout: Duration) -> Result<Vec<u8>, PeerError> {
        self.seq = self.seq.wrapping_add(1);
        let member = self.member;
        let r = request(
            &mut self.conn,
            (self.this, self.to),
            self.settings,
            (kind, self.seq),
            body,
            timeout,
            || member.record_connect(),
        );
        if !self.primary {
            if r.is_err() && !matches!(r, Err(PeerError::Refused(_))) {
                self.conn = None;
            }
            return r;
        }
        match &r {
            Ok(_) | Err(PeerError::Refused(_)) if self.conn.is_some() => {
                let before = self.member.contact_ok(wall_ms());
                if before != MemberState::Up {
                    tracing::info!(peer = %self.to, from = before.as_str(), "peer is UP");
                }
                self.last_error.clear();
            }
            Ok(_) => {}
            Err(e) => {
                self.conn = None;
                let (before, after) = self.member.contact_failed(e.is_refused_connect());
                let why = e.to_string();
                if before != after || why != self.last_error {
                    match e {
                        PeerError::WrongSecret | PeerError::Refused(_) => {
                            tracing::warn!(peer = %self.to, state = after.as_str(), error = %why, "peer link refused")
                        }
                        _ => {
                            tracing::info!(peer = %self.to, state = after.as_str(), error = %why, "peer unreachable")
                        }
                    }
                }
                self.last_error = why;
            }
        }
        r
    }
}

/// Sends one frame of `kind` (a ping, or a request numbered `seq`) on `conn`, dialing `to`
/// from `this` first when there is no connection (then `on_dial` runs), and returns the
/// answer's body, waiting at most `timeout` for it.
fn request(
    conn: &mut Option<TcpStream>,
    (this, to): (SocketAddr, SocketAddr),
    settings: &PeerSettings,
    (kind, seq): (u8, u64),
    body: &[u8],
    timeout: Duration,
    on_dial: impl FnOnce(),
) -> Result<Vec<u8>, PeerError> {
    if conn.is_none() {
        *conn = Some(dial(this, to, &settings.secret, settings.ping)?);
        on_dial();
    }
    let s = conn.as_mut().expect("connected");
    s.set_read_timeout(Some(timeout))?;
    if kind == PING {
        write_frame(s, PING, body)?;
        let (k, pong) = read_frame(s)?;
        if k != PONG || pong != body {
            return Err(protocol(format!("expected pong {seq}, got kind {k}")));
        }
        return Ok(pong);
    }
    let mut req = seq.to_le_bytes().to_vec();
    req.extend_from_slice(body);
    write_frame(s, kind, &req)?;
    let (k, answer) = read_frame(s)?;
    match k {
        RESPONSE if answer.len() >= 8 && answer[..8] == seq.to_le_bytes() => {
            Ok(answer[8..].to_vec())
        }
        // The peer is up but not serving yet: the connection is fine.
        UNAVAILABLE => Err(PeerError::Refused("the peer is still starting".into())),
        k => Err(protocol(format!("expected response {seq}, got kind {k}"))),
    }
}

/// One connection to a member for raft traffic, dialed on demand and redialed after a
/// failure. It never moves the member's state (the primary Distro link does). Raft's transport
/// holds one per member, so raft messages to a member leave in order and never wait behind
/// Distro calls.
pub struct Channel {
    this: SocketAddr,
    to: SocketAddr,
    settings: PeerSettings,
    conn: Option<TcpStream>,
    seq: u64,
}

impl Channel {
    /// A raft channel from `this` to member `to` (nothing is dialed yet).
    pub fn raft(this: SocketAddr, to: SocketAddr, settings: PeerSettings) -> Channel {
        Channel {
            this,
            to,
            settings,
            conn: None,
            seq: 0,
        }
    }

    /// Sends `body` as a raft frame and returns the answer's body (at most `timeout` later).
    /// A failure drops the connection; the next call redials.
    pub fn call(&mut self, body: &[u8], timeout: Duration) -> Result<Vec<u8>, PeerError> {
        self.exchange(RAFT, body, timeout)
    }

    /// Pings the member, keeping an idle connection open (the other end closes one that is
    /// silent for three ping periods).
    pub fn ping(&mut self) -> Result<(), PeerError> {
        let body = self.seq.wrapping_add(1).to_le_bytes();
        self.exchange(PING, &body, self.settings.ping).map(drop)
    }

    fn exchange(&mut self, kind: u8, body: &[u8], timeout: Duration) -> Result<Vec<u8>, PeerError> {
        self.seq = self.seq.wrapping_add(1);
        let r = request(
            &mut self.conn,
            (self.this, self.to),
            &self.settings,
            (kind, self.seq),
            body,
            timeout,
            || {},
        );
        if r.is_err() {
            self.conn = None;
        }
        r
    }
}

/// Fuzz entry (`muster::fuzz::peer`): reads frames off `bytes` as a connection reads them (at
/// most 64), and each hello's fields as the acceptor reads them. Returns the frames read.
#[doc(hidden)]
pub fn decode_frames_for_fuzz(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    while n < 64 {
        let Ok((kind, body)) = read_frame(&mut bytes) else {
            break;
        };
        n += 1;
        if kind == HELLO {
            let mut b = Body(&body);
            let _ = (|| -> Result<_, PeerError> {
                Ok((
                    b.take(MAGIC.len())?,
                    b.array::<4>()?,
                    b.addr()?,
                    b.addr()?,
                    b.array::<NONCE>()?,
                ))
            })();
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(&format!("{s:-<40}")).unwrap()
    }

    /// Runs the acceptor's handshake on a loopback connection and the dialer's against it.
    fn handshake(
        dialer_secret: &str,
        acceptor_secret: &str,
        dialer: &str,
    ) -> (Result<(), String>, Result<SocketAddr, String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Member addresses whose peer port (HTTP − 1000) is the listener's.
        let http = |ip: &str| SocketAddr::new(ip.parse().unwrap(), port + 1000);
        let acceptor = http("127.0.0.1");
        let members = Members::new(acceptor, &[acceptor, http("127.0.0.2")]);
        let a_secret = secret(acceptor_secret);
        let t = std::thread::spawn(move || {
            let (mut s, src) = listener.accept().unwrap();
            accept_handshake(&mut s, src.ip(), &members, &a_secret).map_err(|e| e.to_string())
        });
        let d = dial(
            http(dialer),
            acceptor,
            &secret(dialer_secret),
            Duration::from_secs(2),
        )
        .map(|_| ())
        .map_err(|e| e.to_string());
        (d, t.join().unwrap())
    }

    #[test]
    fn peers_with_the_same_secret_connect() {
        let (d, a) = handshake("same", "same", "127.0.0.2");
        assert_eq!(d, Ok(()));
        assert_eq!(a.unwrap().ip().to_string(), "127.0.0.2");
    }

    #[test]
    fn a_wrong_secret_is_refused_on_both_sides() {
        let (d, a) = handshake("mine", "theirs", "127.0.0.2");
        // The dialer sees that the acceptor cannot prove the secret and stops there.
        assert_eq!(d, Err("wrong cluster secret".into()));
        assert!(a.is_err(), "{a:?}");
    }

    #[test]
    fn a_non_member_is_refused() {
        let (d, a) = handshake("same", "same", "127.0.0.9");
        assert!(
            d.as_ref()
                .is_err_and(|e| e.contains("not a member of this cluster")),
            "{d:?}"
        );
        assert!(a.is_err());
    }

    /// A `RAFT` frame reaches the raft handler only on a connection that finished the
    /// handshake with the cluster secret: sent from a member's address in place of the hello
    /// it is not answered and never served, and a dialer with the wrong secret gets no
    /// connection to send it on.
    #[test]
    fn raft_frames_are_served_only_after_the_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let http = |ip: &str| SocketAddr::new(ip.parse().unwrap(), port + 1000);
        let acceptor = http("127.0.0.1");
        let members = Members::new(acceptor, &[acceptor, http("127.0.0.2")]);
        let settings = PeerSettings {
            listen: listener.local_addr().unwrap(),
            secret: secret("right"),
            ping: Duration::from_millis(200),
        };
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handlers = Arc::new(Handlers::default());
        let count = served.clone();
        let _ = handlers.raft.set(Arc::new(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
            b"ok".to_vec()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor_thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let (mut s, src) = listener.accept().unwrap();
                    serve_inbound(&mut s, src.ip(), &members, &settings, &stop, &handlers);
                }
            })
        };
        // A request number, then an empty raft batch.
        let mut frame = 7u64.to_le_bytes().to_vec();
        frame.extend_from_slice(&[1, 0, 0, 0, 0]);

        // From a member's address, a raft frame instead of the hello: closed, not served.
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        sock.bind(&SocketAddr::new("127.0.0.2".parse().unwrap(), 0).into())
            .unwrap();
        sock.connect(&peer_addr(acceptor).into()).unwrap();
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write_frame(&mut s, RAFT, &frame).unwrap();
        assert!(read_frame(&mut s).is_err(), "answered without a handshake");

        // The wrong secret: no connection to send on.
        let wrong = dial(
            http("127.0.0.2"),
            acceptor,
            &secret("wrong"),
            Duration::from_secs(2),
        );
        assert!(wrong.is_err());
        assert_eq!(served.load(Ordering::SeqCst), 0);

        // The right secret: the same frame is served.
        let mut s = dial(
            http("127.0.0.2"),
            acceptor,
            &secret("right"),
            Duration::from_secs(2),
        )
        .unwrap();
        write_frame(&mut s, RAFT, &frame).unwrap();
        let (kind, body) = read_frame(&mut s).unwrap();
        assert_eq!(kind, RESPONSE);
        assert_eq!(&body[8..], b"ok");
        assert_eq!(served.load(Ordering::SeqCst), 1);
        stop.store(true, Ordering::SeqCst);
        drop(s);
        acceptor_thread.join().unwrap();
    }

    #[test]
    fn frames_reject_bad_lengths() {
        let mut buf = Vec::new();
        write_frame(&mut buf, PING, b"12345678").unwrap();
        assert_eq!(
            read_frame(&mut buf.as_slice()).unwrap(),
            (PING, b"12345678".to_vec())
        );
        assert!(read_frame(&mut [0u8, 0, 0, 0].as_slice()).is_err());
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(read_frame(&mut huge.as_slice()).is_err());
        assert!(read_frame(&mut [9u8, 0, 0, 0, 1].as_slice()).is_err());
    }
}
