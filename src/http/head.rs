//! Request heads: parsing with `httparse`, framing (length or chunked), keep-alive and
//! transfer-coding rules.

use super::*;

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
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
    pub(super) method: Method,
    pub(super) method_name: (usize, usize),
    pub(super) path: (usize, usize),
    pub(super) query: Option<(usize, usize)>,
    pub(super) agent: (usize, usize),
    pub(super) form: bool,
    pub(super) keep_alive: bool,
    /// HTTP/1.0 client that asked to keep the connection (the answer must say so).
    pub(super) keep_alive_10: bool,
    pub(super) expect_continue: bool,
    pub(super) framing: Framing,
    /// Length of the head in bytes.
    pub(super) len: usize,
}

/// A refused request: 400 with `msg`.
pub(super) fn malformed(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// `(start, end)` of `part` inside `whole`. Invariant: `part` is a subslice of `whole` (a
/// string that is not, such as a literal, would give a meaningless span).
pub(super) fn span(whole: &[u8], part: &[u8]) -> (usize, usize) {
    let whole_range = whole.as_ptr_range();
    assert!(
        whole_range.start <= part.as_ptr() && part.as_ptr_range().end <= whole_range.end,
        "span of a slice outside the buffer"
    );
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    (start, start + part.len())
}

/// Whether the comma-separated header value `v` lists `token` (ASCII case-insensitive).
pub(super) fn lists(v: &[u8], token: &str) -> bool {
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
            // The path and query after the authority. Without either (`http://host`) this is
            // the empty tail of the target, which still lies inside `buf` (every span below
            // must: `span` measures offsets into it); an empty path is answered as `/`.
            rest.find(['/', '?'])
                .map_or(&rest[rest.len()..], |i| &rest[i..])
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
pub(super) fn transfer_codings(codings: &[&[u8]]) -> Result<bool, ApiError> {
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

    /// Found by the `http_head` fuzz target: an absolute-form target with no path took its
    /// span from a string literal outside the buffer, and the subtraction overflowed (a panic
    /// that killed the shard). Now the path is empty (answered as `/`) and a query is kept.
    #[test]
    fn absolute_targets_without_a_path() {
        for (raw, query) in [
            ("GET http://x HTTP/1.1\r\nHost: x\r\n\r\n", None),
            ("GET https://17D HTTP/1.1\r\n\r\n", None),
            ("GET http://x?a=b HTTP/1.1\r\n\r\n", Some("a=b")),
            ("GET http:// HTTP/1.1\r\n\r\n", None),
        ] {
            let h = head(raw).unwrap().unwrap();
            assert_eq!(h.path, (0, 0), "{raw}");
            assert_eq!(h.query.map(|q| &raw[q.0..q.1]), query, "{raw}");
        }
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
}
