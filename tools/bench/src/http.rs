//! Minimal HTTP/1.1 client pieces: target parsing, pre-built request bytes and
//! an incremental response parser (Content-Length, chunked, and read-to-EOF).
//!
//! Nothing here allocates per request once buffers have grown to the size of
//! the largest response seen.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Default `User-Agent`: a Java 1.4.6 client, so servers take the same code
/// paths as for real Nacos clients (and send UDP pushes to subscribers).
pub const DEFAULT_USER_AGENT: &str = "Nacos-Java-Client:v1.4.6";

/// Where requests go: a resolved socket address plus the `Host` header value.
#[derive(Clone, Debug)]
pub struct Target {
    /// Resolved address (first result of name resolution).
    pub addr: SocketAddr,
    /// `host:port` as written in the URL, sent as the `Host` header.
    pub host: String,
    /// Path prefix from the URL without trailing slash (usually empty).
    pub base_path: String,
}

impl Target {
    /// Parses `http://HOST:PORT[/prefix]`. The port defaults to 80. Of a comma-separated
    /// list (a cluster's members, see [`Target::members`]) the first.
    pub fn parse(url: &str) -> Result<Target, String> {
        let url = url.split(',').next().unwrap_or(url).trim();
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("only http:// URLs are supported, got {url:?}"))?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if hostport.is_empty() {
            return Err(format!("missing host in {url:?}"));
        }
        let with_port = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {hostport:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{hostport:?} resolved to no address"))?;
        Ok(Target {
            addr,
            host: hostport.to_string(),
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The address of every URL in a comma-separated list (`http://a:8848,http://b:8848`):
    /// the members a run spreads its connections over, round robin.
    pub fn members(urls: &str) -> Result<Vec<SocketAddr>, String> {
        urls.split(',')
            .map(|u| Target::parse(u.trim()).map(|t| t.addr))
            .collect()
    }

    /// Builds a complete request (head only, empty body) for `path_and_query`,
    /// which is appended to the URL's base path.
    pub fn request(&self, method: &str, path_and_query: &str, user_agent: &str) -> Vec<u8> {
        self.request_with(method, path_and_query, user_agent, &[], b"")
    }

    /// Builds a complete request with extra header lines (`(name, value)`) and a body. A
    /// non-empty body is sent as `application/x-www-form-urlencoded` (the Nacos clients' form
    /// posts); methods other than GET and HEAD always carry `Content-Length`.
    pub fn request_with(
        &self,
        method: &str,
        path_and_query: &str,
        user_agent: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Vec<u8> {
        let mut r = Vec::with_capacity(160 + path_and_query.len() + body.len());
        r.extend_from_slice(method.as_bytes());
        r.push(b' ');
        r.extend_from_slice(self.base_path.as_bytes());
        r.extend_from_slice(path_and_query.as_bytes());
        r.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        r.extend_from_slice(self.host.as_bytes());
        r.extend_from_slice(b"\r\nUser-Agent: ");
        r.extend_from_slice(user_agent.as_bytes());
        r.extend_from_slice(b"\r\nAccept: */*\r\n");
        for (name, value) in headers {
            r.extend_from_slice(name.as_bytes());
            r.extend_from_slice(b": ");
            r.extend_from_slice(value.as_bytes());
            r.extend_from_slice(b"\r\n");
        }
        if !body.is_empty() {
            r.extend_from_slice(b"Content-Type: application/x-www-form-urlencoded\r\n");
        }
        if method != "GET" && method != "HEAD" {
            r.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        r.extend_from_slice(b"\r\n");
        r.extend_from_slice(body);
        r
    }
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters kept).
pub fn urlencode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (1xx, 204, 304).
    Empty,
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Delimited by the server closing the connection.
    Eof,
}

/// A parsed response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Length of the head in bytes, including the blank line.
    pub len: usize,
    /// Body framing.
    pub body: BodyKind,
    /// False when the server asked to close the connection after this response.
    pub keep_alive: bool,
}

/// Parses a response head. `Ok(None)` means more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let mut keep_alive = resp.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| "bad content-length")?;
            length = Some(
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| "bad content-length")?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = contains_token(h.value, b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            if contains_token(h.value, b"close") {
                keep_alive = false;
            } else if contains_token(h.value, b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        BodyKind::Empty
    } else if chunked {
        BodyKind::Chunked
    } else if let Some(n) = length {
        BodyKind::Length(n)
    } else {
        keep_alive = false;
        BodyKind::Eof
    };
    Ok(Some(Head {
        status,
        len,
        body,
        keep_alive,
    }))
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Scans a chunked body (starting right after the head). Returns the total
/// encoded length including the trailer once complete, `Ok(None)` if more
/// bytes are needed. Chunk data ranges (relative to `buf`) are pushed to `chunks`.
pub fn scan_chunked(buf: &[u8], chunks: &mut Vec<Range<usize>>) -> Result<Option<usize>, String> {
    chunks.clear();
    let mut pos = 0;
    loop {
        let Some(eol) = find_crlf(&buf[pos..]) else {
            return Ok(None);
        };
        let line = &buf[pos..pos + eol];
        let size_part = line.split(|&b| b == b';').next().unwrap_or(b"");
        let size_str = std::str::from_utf8(size_part).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_str.trim(), 16).map_err(|_| "bad chunk size")?;
        pos += eol + 2;
        if size == 0 {
            // Trailer section: header lines until an empty line.
            loop {
                let Some(eol) = find_crlf(&buf[pos..]) else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        chunks.push(pos..pos + size);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err("bad chunk terminator".into());
        }
        pos += size + 2;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Why a request/response exchange failed (before any status was known).
#[derive(Debug)]
pub enum ExchangeError {
    /// I/O error or the peer closed the connection mid-response.
    Io(String),
    /// The response could not be parsed.
    Parse(String),
}

/// Where the body of the last response lives.
#[derive(Clone, Debug)]
enum BodyLoc {
    Buf(Range<usize>),
    Decoded,
}

/// A keep-alive client connection with reusable buffers.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    len: usize,
    consumed: usize,
    body: Vec<u8>,
    chunks: Vec<Range<usize>>,
    loc: BodyLoc,
}

impl Conn {
    /// Connects with `TCP_NODELAY` set.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Conn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: vec![0; 16 * 1024],
            len: 0,
            consumed: 0,
            body: Vec::new(),
            chunks: Vec::new(),
            loc: BodyLoc::Buf(0..0),
        })
    }

    /// Sends `req` and reads one full response. Returns its head; the body is
    /// available through [`Conn::body`] until the next call.
    pub async fn exchange(&mut self, req: &[u8]) -> Result<Head, ExchangeError> {
        // Drop the previous response, keeping any pipelined leftovers.
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.len, 0);
            self.len -= self.consumed;
            self.consumed = 0;
        }
        self.stream
            .write_all(req)
            .await
            .map_err(|e| ExchangeError::Io(e.to_string()))?;
        let mut head: Option<Head> = None;
        loop {
            if head.is_none() {
                head = parse_head(&self.buf[..self.len]).map_err(ExchangeError::Parse)?;
            }
            if let Some(h) = head {
                let avail = &self.buf[h.len..self.len];
                match h.body {
                    BodyKind::Empty => {
                        self.loc = BodyLoc::Buf(h.len..h.len);
                        self.consumed = h.len;
                        return Ok(h);
                    }
                    BodyKind::Length(n) if avail.len() >= n => {
                        self.loc = BodyLoc::Buf(h.len..h.len + n);
                        self.consumed = h.len + n;
                        return Ok(h);
                    }
                    BodyKind::Chunked => {
                        if let Some(total) =
                            scan_chunked(avail, &mut self.chunks).map_err(ExchangeError::Parse)?
                        {
                            self.body.clear();
                            for c in &self.chunks {
                                self.body.extend_from_slice(&avail[c.clone()]);
                            }
                            self.loc = BodyLoc::Decoded;
                            self.consumed = h.len + total;
                            return Ok(h);
                        }
                    }
                    _ => {}
                }
            }
            if self.len == self.buf.len() {
                let want = match head {
                    Some(Head {
                        len,
                        body: BodyKind::Length(n),
                        ..
                    }) => len + n,
                    _ => self.buf.len() * 2,
                };
                self.buf.resize(want.max(self.buf.len() * 2), 0);
            }
            let n = self
                .stream
                .read(&mut self.buf[self.len..])
                .await
                .map_err(|e| ExchangeError::Io(e.to_string()))?;
            if n == 0 {
                if let Some(h) = head.filter(|h| h.body == BodyKind::Eof) {
                    self.loc = BodyLoc::Buf(h.len..self.len);
                    self.consumed = self.len;
                    return Ok(h);
                }
                return Err(ExchangeError::Io("connection closed by server".into()));
            }
            self.len += n;
        }
    }

    /// Body of the last response (de-chunked).
    pub fn body(&self) -> &[u8] {
        match &self.loc {
            BodyLoc::Buf(r) => &self.buf[r.clone()],
            BodyLoc::Decoded => &self.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_target() {
        let t = Target::parse("http://127.0.0.1:8848").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8848".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8848");
        assert_eq!(t.base_path, "");
        let t = Target::parse("http://127.0.0.1/x/").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.base_path, "/x");
        assert!(Target::parse("https://a:1").is_err());
    }

    #[test]
    fn builds_request() {
        let t = Target::parse("http://127.0.0.1:9").unwrap();
        let r = String::from_utf8(t.request("POST", "/a?b=c", "ua")).unwrap();
        assert_eq!(
            r,
            "POST /a?b=c HTTP/1.1\r\nHost: 127.0.0.1:9\r\nUser-Agent: ua\r\nAccept: */*\r\nContent-Length: 0\r\n\r\n"
        );
        let r = t.request_with(
            "POST",
            "/l",
            "ua",
            &[("Long-Pulling-Timeout", "30000")],
            b"a=b",
        );
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /l HTTP/1.1\r\nHost: 127.0.0.1:9\r\nUser-Agent: ua\r\nAccept: */*\r\nLong-Pulling-Timeout: 30000\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=b"
        );
    }

    #[test]
    fn encodes() {
        assert_eq!(urlencode(r#"{"ip":"1.2"}"#), "%7B%22ip%22%3A%221.2%22%7D");
        assert_eq!(urlencode("a-b_c.d~"), "a-b_c.d~");
    }

    #[test]
    fn head_content_length() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let h = parse_head(r).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.body, BodyKind::Length(2));
        assert!(h.keep_alive);
        assert_eq!(&r[h.len..], b"ok");
        assert_eq!(parse_head(&r[..10]).unwrap(), None);
    }

    #[test]
    fn head_close_and_eof() {
        let h = parse_head(b"HTTP/1.1 503 X\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.body, BodyKind::Eof);
        assert!(!h.keep_alive);
        let h = parse_head(b"HTTP/1.1 204 No\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.body, BodyKind::Empty);
    }

    #[test]
    fn chunked_scan() {
        let body = b"2\r\nok\r\n3;x=y\r\nabc\r\n0\r\n\r\n";
        let mut chunks = Vec::new();
        assert_eq!(scan_chunked(body, &mut chunks).unwrap(), Some(body.len()));
        assert_eq!(chunks, vec![3..5, 14..17]);
        for cut in 0..body.len() {
            assert_eq!(
                scan_chunked(&body[..cut], &mut chunks).unwrap(),
                None,
                "cut {cut}"
            );
        }
        assert!(scan_chunked(b"zz\r\n", &mut chunks).is_err());
    }

    #[test]
    fn exchange_over_loopback() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 1024];
            // Three requests, answered with CL, chunked split in pieces, CL.
            for i in 0..3 {
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0);
                    got.extend_from_slice(&buf[..n]);
                }
                match i {
                    0 => s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .unwrap(),
                    1 => {
                        s.write_all(
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a",
                        )
                        .unwrap();
                        s.flush().unwrap();
                        std::thread::sleep(Duration::from_millis(20));
                        s.write_all(b"\"\r\n2\r\n:1\r\n1\r\n}\r\n0\r\n\r\n")
                            .unwrap();
                    }
                    _ => {
                        let big = vec![b'x'; 100_000];
                        write!(s, "HTTP/1.1 500 E\r\nContent-Length: {}\r\n\r\n", big.len())
                            .unwrap();
                        s.write_all(&big).unwrap();
                    }
                }
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let t = Target::parse(&format!("http://{addr}")).unwrap();
            let req = t.request("GET", "/", "ua");
            let mut c = Conn::connect(addr, Duration::from_secs(2)).await.unwrap();
            let h = c.exchange(&req).await.unwrap();
            assert_eq!((h.status, c.body()), (200, &b"ok"[..]));
            let h = c.exchange(&req).await.unwrap();
            assert_eq!((h.status, c.body()), (200, &b"{\"a\":1}"[..]));
            let h = c.exchange(&req).await.unwrap();
            assert_eq!(h.status, 500);
            assert_eq!(c.body().len(), 100_000);
        });
        server.join().unwrap();
    }
}
