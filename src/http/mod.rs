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
//!
//! Files: [`head`] (parsing and framing rules), [`chunked`] (the de-chunker), [`connections`]
//! (admission and the open-connection registry), [`conn`] (one connection's request loop,
//! [`serve`]), [`write`] (status line, headers, `sendmsg`/`sendfile`). This file holds the
//! types the application sees: [`Handler`], [`Limits`], [`Request`], [`Response`], [`Chunks`].

mod chunked;
mod conn;
mod connections;
mod head;
mod write;

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

#[doc(hidden)]
pub use chunked::dechunk_pieces;
use chunked::*;
pub use conn::serve;
use connections::*;
pub use connections::{Admission, Connections};
pub use head::parse_head;
use head::*;
pub use write::imf_fixdate;
use write::*;

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

/// A response: status, content type, extra headers and body (`Content-Length` framed).
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Chunks,
    /// Headers besides `Content-Type`, `Content-Length`, `Date` and `Connection` (names and
    /// values must not hold CR or LF). Empty for most answers (no allocation).
    pub headers: Vec<(&'static str, String)>,
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
    /// The whole request head (request line and header fields), for [`Request::header`].
    pub head: &'a [u8],
}

impl<'a> Request<'a> {
    /// The first value of header `name` (ASCII case-insensitive), trimmed; `None` when absent
    /// or not UTF-8. Scans the head: for the few headers an endpoint reads.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        let head: &'a [u8] = self.head;
        // Bounded by the head's line count (at most MAX_HEADERS + 1 lines were accepted).
        for line in head.split(|&b| b == b'\n').skip(1) {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            if line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
                return std::str::from_utf8(&line[colon + 1..])
                    .ok()
                    .map(|v| v.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r'));
            }
        }
        None
    }
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
