//! One connection: its buffer, reads with deadlines, and the request loop ([`serve`]).

use super::*;

/// One connection's socket and buffers.
pub(super) struct Conn {
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
pub(super) enum ReadEnd {
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
pub(super) fn grow_zeroed(buf: &mut Vec<u8>, len: usize) {
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
                head: h,
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
            &reply.headers,
        );
        let head_only = head.method == Method::Head;
        if c.send(&reply.body, head_only).await.is_err() || !keep {
            return;
        }
    }
}

/// The path at `r` of a head, for error bodies (`/` when the head has none).
pub(super) fn head_str(head: &[u8], r: (usize, usize)) -> String {
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
            &[],
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
