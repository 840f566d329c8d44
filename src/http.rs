//! HTTP/1.1 connections on glommio sockets.
//!
//! A connection is one task on the shard that accepted it: read into a per-connection buffer,
//! parse the head with `httparse` (borrowed slices, no allocation), take the body (declared
//! length or chunked, under the configured cap), answer through the application's
//! [`Handler`] (the Nacos API; this module knows nothing of it), and
//! write the reply head and body with one `sendmsg` (a large cached body goes out with
//! `sendfile` from the [`crate::arena`]). Requests on a keep-alive connection are answered in
//! order, pipelined ones included.
//!
//! Why not hyper (which served here before): under the register load its general path (`http`
//! types, header maps, a body channel, a dispatcher task, several allocations per request) was
//! ~7% of the shard's cycles, on a path where the kernel takes over half; this loop took
//! register throughput from ~65k to ~76k req/s on the same machine (`perf/ANALYSIS.md`). The
//! wire is still parsed by a well-kept library: `httparse` (hyper's own parser) reads heads and
//! chunk-size lines; what is written here is framing and connection state.
//!
//! Protocol rules kept here (what a general HTTP server would do, and what hyper did before):
//! - HTTP/1.1 keeps the connection unless the request says `Connection: close`; HTTP/1.0
//!   closes it unless the request says `Connection: keep-alive`.
//! - A head larger than `max_header_bytes` (or with more than [`MAX_HEADERS`] fields) is 431;
//!   a malformed head, a bad `Content-Length`, `chunked` not last or applied twice, or broken
//!   chunking is 400; any transfer coding other than `chunked` is 501; a body over
//!   `max_body_bytes` is 413. Each of these closes the connection after the answer, with a
//!   bounded lingering read so the client sees the answer rather than a reset.
//! - A request head must arrive whole within `head_timeout_ms` (default 10 s) of its first
//!   byte, or of accept for a connection's first request, however slowly it trickles; else the
//!   connection is closed without an answer (`muster_http_head_timeouts_total`). Between
//!   requests the separate `idle_timeout_ms` applies. Bodies are read under the idle timeout.
//! - `Expect: 100-continue` is answered with `100 Continue` before the body is read.
//! - A client may shut its write side after a request and still read the answer.
//! - At shutdown ([`Connections::stop`]), idle connections close at once; a connection in the
//!   middle of a request finishes it and closes after the answer.
//!
//! Every reply carries `Content-Length` (never chunked) and `Date`.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use hashbrown::HashMap;

use crate::error::ApiError;

/// Content type of protocol-level refusals.
const TEXT: &str = "text/plain;charset=UTF-8";

/// Limits the HTTP layer enforces on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line + headers) in bytes; larger is 431.
    pub max_header_bytes: usize,
    /// Largest request body in bytes; larger is 413.
    pub max_body_bytes: usize,
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// A request head must arrive whole within this long of its first byte (of accept for a
    /// connection's first request).
    pub head_timeout: Duration,
}

/// A response: status, content type and body (`Content-Length` framed).
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Chunks,
}

/// What the HTTP layer needs from the application that answers requests: its limits, the
/// registry of open connections (closed at shutdown), the answer to each request, and where to
/// count what the protocol layer refused on its own.
pub trait Handler: 'static {
    /// Limits for connections of this handler.
    fn limits(&self) -> Limits;
    /// The open connections of this executor.
    fn connections(&self) -> &Connections;
    /// The address listened on (the local address when a socket cannot tell its own).
    fn listen_addr(&self) -> SocketAddr;
    /// Answers one request. Never fails: errors are answers too.
    fn handle<'a>(
        self: &'a Rc<Self>,
        req: &'a Request<'a>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> impl std::future::Future<Output = Response> + 'a;
    /// Counts a request refused by the HTTP layer (400, 413, 431, 501) before [`Handler::handle`].
    fn refused(&self);
    /// Counts a connection closed because its head missed the head deadline.
    fn head_timed_out(&self);
}

/// Most header fields in one request head.
pub const MAX_HEADERS: usize = 64;
/// Initial size of a connection's read buffer, in bytes; it grows as a request needs (up to
/// the head and body caps) and shrinks back once idle.
const INITIAL_BUFFER: usize = 4 * 1024;
/// An idle buffer larger than this is given back.
const KEEP_BUFFER: usize = 64 * 1024;
/// Most slices one `sendmsg` takes (a head and up to five body chunks).
const MAX_IOV: usize = 6;
/// Longest chunk-size line (with extensions) accepted in a chunked body, in bytes.
const MAX_CHUNK_LINE: usize = 1024;
/// Lingering close after an error: at most this many bytes are read and dropped...
const LINGER_BYTES: usize = 1 << 20;
/// ...for at most this long.
const LINGER_TIME: Duration = Duration::from_millis(500);

/// A request method. Anything else is [`Method::Other`], which no route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD` (answered like GET, without the body)
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `PATCH`
    Patch,
    /// Any other token.
    Other,
}

impl Method {
    /// The method named by `token` (case-sensitive, as RFC 9110 says).
    pub fn parse(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// One request, borrowing the connection's buffers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The method token as sent (for error messages).
    pub method_name: &'a str,
    /// The path, not percent-decoded; `/` for an absolute-form target without one.
    pub path: &'a str,
    /// The query string after `?`, if any.
    pub query: Option<&'a str>,
    /// `User-Agent`, falling back to `Client-Version`; empty when neither is sent.
    pub agent: &'a str,
    /// Whether the body is form-encoded (no `Content-Type`, or form or plain text).
    pub form: bool,
    /// The body (de-chunked).
    pub body: &'a [u8],
}

/// A response body made of up to five shared chunks, written with one `sendmsg` and no copy
/// in user space (a cached host list goes to the socket as it is).
#[derive(Debug, Default)]
pub struct Chunks {
    parts: [Bytes; 5],
}

impl Chunks {
    /// A body of one chunk.
    pub fn one(b: Bytes) -> Chunks {
        let mut c = Chunks::default();
        c.parts[0] = b;
        c
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
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunks, in order (some may be empty).
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }
}

pub use crate::status::reason;

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed head: where its parts lie, as offsets from the start of the head, so the buffer
/// may move (grow, compact) while the body arrives.
#[derive(Debug, Clone)]
pub struct Head {
    method: Method,
    method_name: (usize, usize),
    path: (usize, usize),
    query: Option<(usize, usize)>,
    agent: (usize, usize),
    form: bool,
    keep_alive: bool,
    /// HTTP/1.0 client that asked to keep the connection (the answer must say so).
    keep_alive_10: bool,
    expect_continue: bool,
    framing: Framing,
    /// Length of the head in bytes.
    len: usize,
}

/// A refused request: 400 with `msg`.
fn malformed(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// `(start, end)` of `part` inside `whole` (`part` must be a subslice of it).
fn span(whole: &[u8], part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    (start, start + part.len())
}

/// Whether the comma-separated header value `v` lists `token` (ASCII case-insensitive).
fn lists(v: &[u8], token: &str) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

impl Head {
    /// Length of the head in bytes (where the body starts).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the head is empty (never, for a parsed one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Parses the head at the start of `buf`. `Ok(None)`: incomplete, read more. `Err`: the
/// answer to send (431 or 400) before closing.
pub fn parse_head(buf: &[u8], max_header: usize) -> Result<Option<Head>, ApiError> {
    let too_large = || ApiError {
        status: 431,
        msg: format!(
            "request head exceeds the limit of {max_header} bytes or {MAX_HEADERS} fields"
        ),
        kind: crate::error::ErrorKind::Caused,
    };
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max_header => n,
        Ok(httparse::Status::Complete(_)) => return Err(too_large()),
        Ok(httparse::Status::Partial) if buf.len() > max_header => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
        Err(e) => return Err(malformed(format!("malformed request head: {e}"))),
    };
    let method_name = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let http10 = req.version == Some(0);
    // Origin form `/p?q`, absolute form `http://host/p?q`, or `*`.
    let (path, query) = {
        let local = if target.starts_with('/') || target == "*" {
            target
        } else if let Some(rest) = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))
        {
            rest.find('/').map_or("/", |i| &rest[i..])
        } else {
            return Err(malformed(format!("malformed request target: {target}")));
        };
        let local = local.split('#').next().unwrap_or(local);
        match local.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (local, None),
        }
    };
    let mut head = Head {
        method: Method::parse(method_name),
        method_name: span(buf, method_name.as_bytes()),
        path: if path.is_empty() {
            (0, 0)
        } else {
            span(buf, path.as_bytes())
        },
        query: query.map(|q| span(buf, q.as_bytes())),
        agent: (0, 0),
        form: true,
        keep_alive: !http10,
        keep_alive_10: false,
        expect_continue: false,
        framing: Framing::Empty,
        len,
    };
    let mut length: Option<usize> = None;
    // Every Transfer-Encoding field's codings, in order (repeated fields are one list).
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut version_agent = None;
    for f in req.headers.iter() {
        let v = f.value;
        let name = f.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(v)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| malformed("malformed Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(malformed("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if http10 {
                return Err(malformed("Transfer-Encoding in an HTTP/1.0 request"));
            }
            codings.extend(
                v.split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|t| !t.is_empty()),
            );
        } else if name.eq_ignore_ascii_case("connection") {
            if lists(v, "close") {
                head.keep_alive = false;
            } else if http10 && lists(v, "keep-alive") {
                head.keep_alive = true;
                head.keep_alive_10 = true;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = !http10 && v.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("content-type") {
            let ct = v.trim_ascii_start();
            let starts = |p: &[u8]| ct.len() >= p.len() && ct[..p.len()].eq_ignore_ascii_case(p);
            head.form = starts(b"application/x-www-form-urlencoded") || starts(b"text/plain");
        } else if name.eq_ignore_ascii_case("user-agent") {
            if std::str::from_utf8(v).is_ok() {
                head.agent = span(buf, v);
            }
        } else if name.eq_ignore_ascii_case("client-version") && std::str::from_utf8(v).is_ok() {
            version_agent = Some(span(buf, v));
        }
    }
    if head.agent == (0, 0) {
        if let Some(a) = version_agent {
            head.agent = a;
        }
    }
    let chunked = transfer_codings(&codings)?;
    head.framing = match (chunked, length) {
        (true, Some(_)) => {
            return Err(malformed(
                "both Transfer-Encoding and Content-Length are set",
            ))
        }
        (true, None) => Framing::Chunked,
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    Ok(Some(head))
}

/// Judges a request's transfer codings (RFC 9112 §6.1, §7): `Ok(true)` for exactly one
/// `chunked`, last; `Ok(false)` for none. Chunked not last, or applied twice, leaves the body
/// length unknowable: 400. Any other coding (`gzip, chunked`) is one we do not implement:
/// 501, rather than reading the body as if it were not encoded.
fn transfer_codings(codings: &[&[u8]]) -> Result<bool, ApiError> {
    let is_chunked = |t: &[u8]| t.eq_ignore_ascii_case(b"chunked");
    let Some(&last) = codings.last() else {
        return Ok(false);
    };
    let list = || {
        codings
            .iter()
            .map(|t| String::from_utf8_lossy(t))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !is_chunked(last) || codings.iter().filter(|t| is_chunked(t)).count() > 1 {
        return Err(malformed(format!(
            "Transfer-Encoding must end with exactly one chunked: {}",
            list()
        )));
    }
    if codings.len() > 1 {
        return Err(ApiError {
            status: 501,
            msg: format!("unsupported transfer coding: {}", list()),
            kind: crate::error::ErrorKind::Caused,
        });
    }
    Ok(true)
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes to go.
    Data(usize),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// Reading trailer lines after the last chunk.
    Trailer,
    /// The body is complete.
    Done,
}

/// An incremental `Transfer-Encoding: chunked` decoder (RFC 9112 §7.1): chunk-size lines are
/// parsed by `httparse`; this walks the data, the CRLFs and the trailer section.
#[derive(Debug)]
struct Dechunker {
    state: ChunkState,
    limit: usize,
}

/// What [`Dechunker::feed`] found wrong.
#[derive(Debug, PartialEq, Eq)]
enum ChunkError {
    Malformed(&'static str),
    TooLarge,
}

impl Dechunker {
    fn new(limit: usize) -> Dechunker {
        Dechunker {
            state: ChunkState::Size,
            limit,
        }
    }

    /// Decodes what it can of `input` into `out`; returns how many input bytes it consumed.
    /// Call again with the unconsumed rest plus new bytes until the state is `Done`.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        at += n;
                        let size = usize::try_from(size).unwrap_or(usize::MAX);
                        if size == 0 {
                            self.state = ChunkState::Trailer;
                        } else if size > self.limit.saturating_sub(out.len()) {
                            return Err(ChunkError::TooLarge);
                        } else {
                            self.state = ChunkState::Data(size);
                        }
                    }
                    Ok(httparse::Status::Partial) if rest.len() > MAX_CHUNK_LINE => {
                        return Err(ChunkError::Malformed("chunk line too long"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(at),
                    Err(_) => return Err(ChunkError::Malformed("bad chunk size")),
                },
                ChunkState::Trailer => {
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err(ChunkError::Malformed("trailer line too long"));
                        }
                        return Ok(at);
                    };
                    if !rest[..nl].ends_with(b"\r") {
                        return Err(ChunkError::Malformed("trailer line without CRLF"));
                    }
                    at += nl + 1;
                    if nl == 1 {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let n = left.min(rest.len());
                    out.extend_from_slice(&rest[..n]);
                    at += n;
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(at);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ChunkError::Malformed("chunk data not followed by CRLF"));
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
            }
        }
    }
}

/// Set while a connection waits for its next request.
type Idle = Rc<Cell<bool>>;

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
    fn add(&self, fd: RawFd) -> (u64, Idle) {
        let id = self.next.get();
        self.next.set(id + 1);
        let idle = Rc::new(Cell::new(true));
        self.open.borrow_mut().insert(id, (fd, idle.clone()));
        (id, idle)
    }

    fn remove(&self, id: u64) {
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
struct Registered<'a> {
    conns: &'a Connections,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.conns.remove(self.id);
    }
}

/// One connection's socket and buffers.
struct Conn {
    stream: glommio::net::TcpStream,
    /// Read buffer; every byte is initialised (glommio reads into `&mut [u8]`).
    buf: Vec<u8>,
    /// Unconsumed input is `buf[start..end]`.
    start: usize,
    end: usize,
    /// A de-chunked body.
    body: Vec<u8>,
    /// The reply head being written.
    out: Vec<u8>,
}

/// Why reading stopped.
enum ReadEnd {
    /// The peer closed (or shutdown shut our read side).
    Eof,
    /// The socket failed or idled out.
    Failed,
}

impl Conn {
    /// Reads more input, making room first (compacting, or growing up to `cap` bytes of
    /// unconsumed input). `Ok(n)` with n > 0 bytes read.
    async fn fill(&mut self, cap: usize) -> Result<usize, ReadEnd> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.buf.len();
                let want = (len * 2).min(cap.max(len + 1));
                grow_zeroed(&mut self.buf, want.max(len + 1));
            }
        }
        match self.stream.read(&mut self.buf[self.end..]).await {
            Ok(0) => Err(ReadEnd::Eof),
            Ok(n) => {
                self.end += n;
                Ok(n)
            }
            Err(_) => Err(ReadEnd::Failed),
        }
    }

    /// Writes the reply head in `out`, then `body` (skipped when `head_only`), whole.
    async fn send(&mut self, body: &Chunks, head_only: bool) -> io::Result<()> {
        let mut slices: [&[u8]; MAX_IOV] = [&[]; MAX_IOV];
        slices[0] = &self.out;
        if !head_only {
            for (s, p) in slices[1..].iter_mut().zip(body.parts()) {
                *s = p;
            }
        }
        let mut first = 0;
        loop {
            while first < MAX_IOV && slices[first].is_empty() {
                first += 1;
            }
            if first == MAX_IOV {
                return Ok(());
            }
            let n = match write_some(self.stream.as_raw_fd(), &slices[first..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The socket is full: wait for room through glommio (io_uring), writing
                    // what fits of the first slice.
                    let n = self.stream.write(slices[first]).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    n
                }
                Err(e) => return Err(e),
            };
            let mut left = n;
            while left > 0 && first < MAX_IOV {
                let s = slices[first];
                if left >= s.len() {
                    left -= s.len();
                    slices[first] = &[];
                    first += 1;
                } else {
                    slices[first] = &s[left..];
                    left = 0;
                }
            }
        }
    }

    /// After an error answer: shut the write side, then read and drop what the client is
    /// still sending (bounded in bytes and time), so closing does not reset the connection
    /// before the client has read the answer.
    async fn linger(&mut self) {
        // SAFETY: shutdown of a descriptor this connection owns.
        unsafe {
            libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_WR);
        }
        let _ = self.stream.set_read_timeout(Some(LINGER_TIME));
        let deadline = std::time::Instant::now() + LINGER_TIME;
        let mut dropped = 0;
        let mut scratch = [0u8; 4096];
        while dropped < LINGER_BYTES && std::time::Instant::now() < deadline {
            match self.stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    }
}

/// Grows `buf` to `len` bytes, the new ones zero, with one `memset`. (`Vec::resize` is a byte
/// loop in unoptimised builds: reading a 1 MB body spent ~10 ms there, 75% of a debug shard
/// under a looping 1 MB client.)
fn grow_zeroed(buf: &mut Vec<u8>, len: usize) {
    let old = buf.len();
    if len <= old {
        return;
    }
    buf.reserve(len - old);
    // SAFETY: `reserve` made room for `len` bytes; `write_bytes` initialises `old..len` before
    // `set_len` exposes them.
    unsafe {
        buf.as_mut_ptr().add(old).write_bytes(0, len - old);
        buf.set_len(len);
    }
}

/// One non-blocking write of `slices` (the first one non-empty), with `sendfile` for a body
/// that lives in the [`crate::arena`]: the slices before it go first (`MSG_MORE`, so head and
/// body share segments), then the body; each is one call and the caller loops.
fn write_some(fd: RawFd, slices: &[&[u8]]) -> io::Result<usize> {
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
fn sendmsg(fd: RawFd, slices: &[&[u8]], flags: libc::c_int) -> isize {
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
fn push_date(out: &mut Vec<u8>) {
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
fn imf_fixdate(secs: i64) -> String {
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
fn write_head(out: &mut Vec<u8>, status: u16, content_type: &str, len: usize, conn: Connection) {
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
    out.extend_from_slice(b"\r\n\r\n");
}

/// What the reply says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    /// HTTP/1.1 default: nothing to say.
    Keep,
    /// An HTTP/1.0 keep-alive: `Connection: keep-alive`.
    KeepAlive10,
    /// `Connection: close`.
    Close,
}

/// Serves one connection until the client closes it, it idles out (`idle_timeout_ms`), a head
/// misses its deadline (`head_timeout_ms`), a request is refused at the protocol level, or
/// shutdown closes it.
pub async fn serve<H: Handler>(app: Rc<H>, stream: glommio::net::TcpStream) {
    let limits = app.limits();
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    // Non-blocking, so `sendfile` (which has no MSG_DONTWAIT) never parks the shard on a full
    // socket. glommio is unaffected: it tries every read and write with MSG_DONTWAIT first and
    // waits through io_uring, which polls sockets whatever their O_NONBLOCK flag.
    // SAFETY: flag changes on a descriptor this task owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    let idle_timeout = limits.idle_timeout.max(Duration::from_millis(1));
    let head_timeout = limits.head_timeout.max(Duration::from_millis(1));
    // A fresh connection's first head must arrive whole within the head deadline of accept;
    // later heads within it of their first byte. Between requests the idle timeout applies.
    let _ = stream.set_read_timeout(Some(idle_timeout.min(head_timeout)));
    let mut head_deadline = Some(Instant::now() + head_timeout);
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let local = stream.local_addr().unwrap_or_else(|_| app.listen_addr());
    let conns = app.connections();
    let (id, idle) = conns.add(fd);
    let _registered = Registered { conns, id };
    let mut c = Conn {
        stream,
        buf: vec![0; INITIAL_BUFFER],
        start: 0,
        end: 0,
        body: Vec::new(),
        out: Vec::with_capacity(256),
    };
    let (max_header, max_body) = (limits.max_header_bytes, limits.max_body_bytes);
    loop {
        // Between requests: close at shutdown, otherwise wait for the next head.
        if c.start == c.end {
            if conns.stopping() {
                return;
            }
            c.start = 0;
            c.end = 0;
            if c.buf.len() > KEEP_BUFFER {
                c.buf = vec![0; INITIAL_BUFFER];
            }
            idle.set(true);
            let got = c.fill(max_header + 1).await;
            idle.set(false);
            if got.is_err() {
                if head_deadline.is_some_and(|d| Instant::now() >= d) {
                    app.head_timed_out();
                }
                return;
            }
        }
        let deadline = *head_deadline.get_or_insert_with(|| Instant::now() + head_timeout);
        let head = loop {
            match parse_head(&c.buf[c.start..c.end], max_header) {
                Ok(Some(h)) => break h,
                Ok(None) => {
                    // Each read waits at most until the deadline, so a head trickled a byte
                    // at a time cannot hold the connection past it.
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        app.head_timed_out();
                        return;
                    }
                    let _ = c.stream.set_read_timeout(Some(left.min(idle_timeout)));
                    if c.fill(max_header + 1).await.is_err() {
                        if Instant::now() >= deadline {
                            app.head_timed_out();
                        }
                        return;
                    }
                }
                Err(e) => return c.refuse(&*app, e, "/").await,
            }
        };
        head_deadline = None;
        let _ = c.stream.set_read_timeout(Some(idle_timeout));
        let path = |c: &Conn| head_str(&c.buf[c.start..], head.path);
        let body_at = c.start + head.len;
        let consumed = match head.framing {
            Framing::Empty => head.len,
            Framing::Length(n) => {
                if n > max_body {
                    let p = path(&c);
                    return c.refuse(&*app, ApiError::too_large(max_body), &p).await;
                }
                if head.expect_continue && c.end - body_at < n && c.send_continue().await.is_err() {
                    return;
                }
                while c.end - c.start < head.len + n {
                    match c.fill(head.len + n).await {
                        Ok(_) => {}
                        Err(ReadEnd::Eof) => {
                            // A half-closed client still reads the answer.
                            let p = path(&c);
                            let e = malformed(format!(
                                "cannot read request body: the client closed after {} of {n} bytes",
                                c.end - body_at
                            ));
                            return c.refuse(&*app, e, &p).await;
                        }
                        Err(ReadEnd::Failed) => return,
                    }
                }
                head.len + n
            }
            Framing::Chunked => {
                let mut dechunk = Dechunker::new(max_body);
                c.body.clear();
                let head_end = body_at;
                let mut raw = head_end;
                let mut continued = false;
                loop {
                    match dechunk.feed(&c.buf[raw..c.end], &mut c.body) {
                        Ok(n) => raw += n,
                        Err(e) => {
                            let err = match e {
                                ChunkError::TooLarge => ApiError::too_large(max_body),
                                ChunkError::Malformed(m) => {
                                    malformed(format!("cannot read the chunked request body: {m}"))
                                }
                            };
                            let p = path(&c);
                            return c.refuse(&*app, err, &p).await;
                        }
                    }
                    if dechunk.state == ChunkState::Done {
                        break;
                    }
                    // Drop the decoded framing: the buffer keeps the head and what is not yet
                    // decoded (at most a partial chunk line), so it stays small.
                    c.buf.copy_within(raw..c.end, head_end);
                    c.end = head_end + (c.end - raw);
                    raw = head_end;
                    if head.expect_continue && !continued {
                        continued = true;
                        if c.send_continue().await.is_err() {
                            return;
                        }
                    }
                    match c.fill(head.len + MAX_CHUNK_LINE + INITIAL_BUFFER).await {
                        Ok(_) => {}
                        Err(ReadEnd::Eof) => {
                            // A half-closed client still reads the answer.
                            let p = path(&c);
                            let e = malformed(
                                "cannot read request body: the client closed inside the chunked body",
                            );
                            return c.refuse(&*app, e, &p).await;
                        }
                        Err(ReadEnd::Failed) => return,
                    }
                }
                raw - c.start
            }
        };
        let reply = {
            let h = &c.buf[c.start..c.start + head.len];
            let text = |r: (usize, usize)| std::str::from_utf8(&h[r.0..r.1]).unwrap_or("");
            let req = Request {
                method: head.method,
                method_name: text(head.method_name),
                path: if head.path == (0, 0) {
                    "/"
                } else {
                    text(head.path)
                },
                query: head.query.map(text),
                agent: text(head.agent),
                form: head.form,
                body: match head.framing {
                    Framing::Empty => &[],
                    Framing::Length(n) => &c.buf[body_at..body_at + n],
                    Framing::Chunked => &c.body,
                },
            };
            app.handle(&req, peer, local).await
        };
        c.start += consumed;
        // A request that arrives while shutdown begins is still answered; then the connection
        // closes.
        let keep = head.keep_alive && !conns.stopping();
        let conn = match (keep, head.keep_alive_10) {
            (false, _) => Connection::Close,
            (true, true) => Connection::KeepAlive10,
            (true, false) => Connection::Keep,
        };
        write_head(
            &mut c.out,
            reply.status,
            reply.content_type,
            reply.body.len(),
            conn,
        );
        let head_only = head.method == Method::Head;
        if c.send(&reply.body, head_only).await.is_err() || !keep {
            return;
        }
    }
}

/// The path at `r` of a head, for error bodies (`/` when the head has none).
fn head_str(head: &[u8], r: (usize, usize)) -> String {
    if r == (0, 0) {
        return "/".into();
    }
    String::from_utf8_lossy(&head[r.0..r.1]).into_owned()
}

impl Conn {
    /// Answers a request refused at the protocol level with `err` (rendered for `path`), then
    /// closes with a lingering read. Counted in `muster_http_refused_total`.
    async fn refuse(&mut self, app: &impl Handler, err: ApiError, path: &str) {
        app.refused();
        let body = Chunks::one(Bytes::from(err.body(path)));
        write_head(
            &mut self.out,
            err.status,
            TEXT,
            body.len(),
            Connection::Close,
        );
        if self.send(&body, false).await.is_ok() {
            self.linger().await;
        }
    }

    /// Writes the interim `100 Continue`.
    async fn send_continue(&mut self) -> io::Result<()> {
        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.send(&Chunks::default(), true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, ApiError> {
        parse_head(raw.as_bytes(), 16 << 10)
    }

    #[test]
    fn parses_origin_and_absolute_targets() {
        let raw = "GET /nacos/v1/ns/instance/list?serviceName=a HTTP/1.1\r\nHost: x\r\nUser-Agent: Nacos-Java-Client:v1.4.6\r\n\r\n";
        let h = head(raw).unwrap().unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(&raw[h.path.0..h.path.1], "/nacos/v1/ns/instance/list");
        let q = h.query.unwrap();
        assert_eq!(&raw[q.0..q.1], "serviceName=a");
        assert_eq!(&raw[h.agent.0..h.agent.1], "Nacos-Java-Client:v1.4.6");
        assert!(h.keep_alive && h.form);
        assert_eq!(h.len, raw.len());
        let raw = "POST http://127.0.0.1:8848/nacos/v1/ns/instance HTTP/1.1\r\nContent-Length: 3\r\nContent-Type: application/json\r\n\r\nabc";
        let h = head(raw).unwrap().unwrap();
        assert_eq!(&raw[h.path.0..h.path.1], "/nacos/v1/ns/instance");
        assert_eq!(h.framing, Framing::Length(3));
        assert!(!h.form);
    }

    #[test]
    fn keep_alive_follows_the_version() {
        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive && h.keep_alive_10);
        let h = head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
    }

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

    #[test]
    fn refuses_bad_heads() {
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert_eq!(head("G@T / HTTP/1.1\r\n\r\n").unwrap_err().status, 400);
        assert_eq!(
            head("GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            head("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        for (te, status) in [
            ("gzip, chunked", 501),
            ("deflate,chunked", 501),
            ("chunked, chunked", 400),
            ("chunked, gzip", 400),
            ("chunked\r\nTransfer-Encoding: chunked", 400),
            ("gzip\r\nTransfer-Encoding: chunked", 501),
        ] {
            let h = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(head(&h).unwrap_err().status, status, "{te}");
        }
        assert!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")
                .unwrap()
                .is_some()
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(20_000));
        assert_eq!(head(&big).unwrap_err().status, 431);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X{i}: 1\r\n"))
            .collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n"))
                .unwrap_err()
                .status,
            431
        );
    }

    #[test]
    fn dechunks_across_any_split() {
        let wire =
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for cut in 0..wire.len() {
            let mut d = Dechunker::new(1 << 20);
            let mut out = Vec::new();
            let mut pending = wire[..cut].to_vec();
            let n = d.feed(&pending, &mut out).unwrap();
            pending.drain(..n);
            pending.extend_from_slice(&wire[cut..]);
            let n2 = d.feed(&pending, &mut out).unwrap();
            assert_eq!(d.state, ChunkState::Done, "cut {cut}");
            assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
            assert_eq!(&pending[n2..], b"NEXT", "cut {cut}");
        }
    }

    #[test]
    fn dechunk_refuses_garbage_and_oversize() {
        let mut out = Vec::new();
        assert_eq!(
            Dechunker::new(100).feed(b"zz\r\nab\r\n", &mut out),
            Err(ChunkError::Malformed("bad chunk size"))
        );
        assert_eq!(
            Dechunker::new(100).feed(b"2\r\nabX\r\n", &mut out),
            Err(ChunkError::Malformed("chunk data not followed by CRLF"))
        );
        assert_eq!(
            Dechunker::new(4).feed(b"5\r\nabcde\r\n", &mut out),
            Err(ChunkError::TooLarge)
        );
        let long = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert!(matches!(
            Dechunker::new(100).feed(&long, &mut out),
            Err(ChunkError::Malformed(_))
        ));
    }

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(imf_fixdate(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(imf_fixdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(imf_fixdate(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn heads_carry_length_date_and_connection() {
        let mut out = Vec::new();
        write_head(&mut out, 503, "text/plain", 7, Connection::Close);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nDate: "));
        assert!(
            s.ends_with("GMT\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"),
            "{s}"
        );
    }
}
