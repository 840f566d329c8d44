//! HTTP/1.1 framing against the real binary: chunked bodies, `Expect: 100-continue`, HTTP/1.0,
//! HEAD, pipelined requests with bodies, half-closed clients and the reply head.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{read_response, Server};

const TIMEOUT: Duration = Duration::from_secs(10);

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect_timeout(&s.addr, TIMEOUT).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.set_write_timeout(Some(TIMEOUT)).unwrap();
    c
}

fn hosts(s: &Server, service: &str) -> usize {
    let (st, b) = s.request(
        "GET",
        &format!("/nacos/v1/ns/instance/list?serviceName={service}"),
        "",
    );
    assert_eq!(st, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    v["hosts"].as_array().unwrap().len()
}

#[test]
fn chunked_bodies_are_decoded() {
    let s = Server::start(&["--shards", "1"]);
    let body = "serviceName=chunky&ip=10.0.0.1&port=80";
    let (a, b) = body.split_at(11);
    let raw = format!(
        "POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n{:x};name=v\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nX-Trailer: 1\r\n\r\n",
        a.len(),
        b.len()
    );
    // Byte by byte, so every decoder state waits for more input at least once.
    let mut c = connect(&s);
    for byte in raw.as_bytes() {
        c.write_all(std::slice::from_ref(byte)).unwrap();
        c.flush().unwrap();
    }
    let mut r = BufReader::new(c);
    let (st, _, b) = read_response(&mut r);
    assert_eq!((st, b.as_str()), (200, "ok"));
    assert_eq!(hosts(&s, "chunky"), 1);
}

#[test]
fn expect_continue_gets_an_interim_answer_before_the_body() {
    let s = Server::start(&["--shards", "1"]);
    let body = "serviceName=patient&ip=10.0.0.2&port=80";
    let mut c = connect(&s);
    write!(
        c,
        "POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "\r\n");
    c.write_all(body.as_bytes()).unwrap();
    let (st, _, b) = read_response(&mut r);
    assert_eq!((st, b.as_str()), (200, "ok"));
    assert_eq!(hosts(&s, "patient"), 1);
}

#[test]
fn pipelined_requests_with_bodies_are_answered_in_order() {
    let s = Server::start(&["--shards", "2"]);
    let mut wire = String::new();
    for i in 0..5 {
        let body = format!("serviceName=piped&ip=10.0.1.{i}&port=80");
        wire.push_str(&format!(
            "POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    wire.push_str("GET /nacos/v1/ns/instance/list?serviceName=piped HTTP/1.1\r\nHost: x\r\n\r\n");
    wire.push_str("GET /nacos/v1/console/health/liveness HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut c = connect(&s);
    c.write_all(wire.as_bytes()).unwrap();
    let mut r = BufReader::new(c);
    for _ in 0..5 {
        let (st, _, b) = read_response(&mut r);
        assert_eq!((st, b.as_str()), (200, "ok"));
    }
    let (st, _, b) = read_response(&mut r);
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["hosts"].as_array().unwrap().len(), 5);
    let (st, _, b) = read_response(&mut r);
    assert_eq!((st, b.as_str()), (200, "OK"));
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    let s = Server::start(&["--shards", "1"]);
    // Plain HTTP/1.0: one answer, then the server closes.
    let mut c = connect(&s);
    c.write_all(b"GET /nacos/v1/console/health/liveness HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
    // HTTP/1.0 keep-alive: said back, and the connection serves a second request.
    let c = connect(&s);
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    for _ in 0..2 {
        w.write_all(
            b"GET /nacos/v1/console/health/liveness HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        )
        .unwrap();
        let (st, head, b) = read_response(&mut r);
        assert_eq!((st, b.as_str()), (200, "OK"));
        assert!(
            head.iter().any(|l| l == "connection: keep-alive"),
            "{head:?}"
        );
    }
}

#[test]
fn replies_carry_length_type_and_date_and_head_has_no_body() {
    let s = Server::start(&["--shards", "1"]);
    let c = connect(&s);
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    w.write_all(b"GET /nacos/v1/console/health/liveness HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (st, head, b) = read_response(&mut r);
    assert_eq!((st, b.as_str()), (200, "OK"));
    assert!(head.iter().any(|l| l == "content-length: 2"), "{head:?}");
    assert!(
        head.iter()
            .any(|l| l == "content-type: text/plain;charset=utf-8"),
        "{head:?}"
    );
    let date = head
        .iter()
        .find_map(|l| l.strip_prefix("date: "))
        .expect("a Date header");
    assert!(date.ends_with(" gmt") && date.len() == 29, "{date}");
    // HEAD: the same head, no body; the next answer on the connection is intact.
    w.write_all(b"HEAD /nacos/v1/console/health/liveness HTTP/1.1\r\nHost: x\r\n\r\nGET /nacos/v1/console/health/liveness HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut line = String::new();
    let mut head_lines = Vec::new();
    for _ in 0..16 {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head_lines.push(line.trim_end().to_ascii_lowercase());
    }
    assert_eq!(head_lines[0], "http/1.1 200 ok", "{head_lines:?}");
    assert!(
        head_lines.iter().any(|l| l == "content-length: 2"),
        "{head_lines:?}"
    );
    let (st, _, b) = read_response(&mut r);
    assert_eq!((st, b.as_str()), (200, "OK"));
}

#[test]
fn a_half_closed_client_still_gets_its_answer() {
    let s = Server::start(&["--shards", "1"]);
    let body = "serviceName=half&ip=10.0.0.3&port=80";
    let (st, b) = s.raw(
        format!(
            "POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!((st, String::from_utf8_lossy(&b).as_ref()), (200, "ok"));
    // A body cut short by the close is refused, and nothing is registered.
    let (st, b) = s.raw(
        b"POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nserviceName=cut&ip=10.0.0.4&port=80",
    );
    let b = String::from_utf8_lossy(&b);
    assert_eq!(st, 400, "{b}");
    assert!(b.starts_with("caused: cannot read request body"), "{b}");
    // The same for a chunked body that never ends.
    let (st, b) = s.raw(
        b"POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n23\r\nserviceName=cut&ip=10.0.0.4&port=80\r\n",
    );
    let b = String::from_utf8_lossy(&b);
    assert_eq!(st, 400, "{b}");
    assert!(b.starts_with("caused: cannot read request body"), "{b}");
    assert_eq!(hosts(&s, "cut"), 0);
    // Both refusals are counted.
    let (_, m) = s.request("GET", "/metrics", "");
    assert!(
        m.lines()
            .any(|l| l == "muster_http_refused_total{shard=\"0\"} 2"),
        "{m}"
    );
}

/// A connection to `s` from the loopback address `from` (any of 127.0.0.0/8), so tests can
/// play several client addresses.
fn connect_from(s: &Server, from: [u8; 4]) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&std::net::SocketAddr::from((from, 0)).into())?;
    sock.connect_timeout(&s.addr.into(), TIMEOUT)?;
    Ok(sock.into())
}

/// The start of a head that is never finished; one byte of it is sent per second.
const SLOW_HEAD: &[u8] = b"GET /nacos/v1/ns/instance/list?serviceName=slow HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// One slowloris connection: when it opened, how much of its head it sent, and when the
/// server closed it.
struct Slow {
    conn: TcpStream,
    opened: std::time::Instant,
    sent: usize,
    closed: Option<Duration>,
}

impl Slow {
    fn open(s: &Server, from: [u8; 4]) -> Option<Slow> {
        let conn = connect_from(s, from).ok()?;
        conn.set_nonblocking(true).ok()?;
        Some(Slow {
            conn,
            opened: std::time::Instant::now(),
            sent: 0,
            closed: None,
        })
    }

    /// Notes whether the server has closed the connection.
    fn check(&mut self) {
        let mut b = [0u8; 64];
        if self.closed.is_none() {
            match self.conn.read(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => self.closed = Some(self.opened.elapsed()),
            }
        }
    }

    /// Sends the next byte of the head (a closed connection sends nothing).
    fn trickle(&mut self) {
        if self.closed.is_none() && self.sent < SLOW_HEAD.len() {
            if self
                .conn
                .write_all(&SLOW_HEAD[self.sent..self.sent + 1])
                .is_ok()
            {
                self.sent += 1;
            } else {
                self.closed = Some(self.opened.elapsed());
            }
        }
    }
}

/// Runs slow connections for `secs` seconds: every 100 ms notes closes, every second trickles
/// one byte on each open one. Pacing the trickle is the behaviour under test, not a wait.
fn trickle_for(slow: &mut [Slow], secs: u32, mut between: impl FnMut()) {
    for tick in 0..secs * 10 {
        for c in slow.iter_mut() {
            c.check();
            if tick % 10 == 0 {
                c.trickle();
            }
        }
        between();
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn prom(s: &Server, name: &str) -> u64 {
    let (_, m) = s.request("GET", "/metrics", "");
    m.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

/// Issue 17: heads trickled at one byte a second held connections forever (each byte restarted
/// the idle timeout). With every connection slot taken by such heads from distinct addresses,
/// each is closed at the head deadline, not before, while still trickling, and fresh clients
/// are served again.
#[test]
fn slow_heads_are_closed_at_the_head_deadline() {
    const DEADLINE_MS: u64 = 1500;
    let s = Server::start_with_env(
        &[
            "--shards",
            "1",
            "--max-connections",
            "8",
            "--idle-timeout-ms",
            "60000",
        ],
        &[("MUSTER_HEAD_TIMEOUT_MS", "1500")],
    );
    // Eight addresses, one connection each: the per-IP share never applies.
    let mut slow: Vec<Slow> = (0..8u8)
        .map(|i| Slow::open(&s, [127, 0, 0, 10 + i]).expect("connect"))
        .collect();
    // Bounded: at most 12 s of trickling, stopping once all are closed.
    for _ in 0..12 {
        trickle_for(&mut slow, 1, || {});
        if slow.iter().all(|c| c.closed.is_some()) {
            break;
        }
    }
    for c in &slow {
        let life = c
            .closed
            .expect("closed by the server while still trickling");
        assert!(
            life >= Duration::from_millis(DEADLINE_MS),
            "closed after {life:?}, before the deadline"
        );
        assert!(c.sent < SLOW_HEAD.len(), "the head was never finished");
        eprintln!(
            "slow connection closed after {life:?}, {} bytes sent",
            c.sent
        );
    }
    // A fresh client is served (poll: the server notices closes asynchronously).
    let start = std::time::Instant::now();
    let mut served = false;
    while !served && start.elapsed() < TIMEOUT {
        served = s.request("GET", "/nacos/v1/console/health/liveness", "").0 == 200;
    }
    assert!(served);
    assert_eq!(prom(&s, "muster_http_head_timeouts_total"), 8);
}

/// Issue 17: one address opening slow heads in a loop (replacing each one the server closes)
/// while the connection cap is small. Its connections are closed at the head deadline, it
/// gets no more than its share, and a client on another address keeps being served
/// throughout (297 of 388 fresh clients were refused before).
#[test]
fn a_slowloris_address_cannot_lock_out_other_clients() {
    let s = Server::start(&[
        "--shards",
        "1",
        "--max-connections",
        "40",
        "--idle-timeout-ms",
        "60000",
        "--head-timeout-ms",
        "1500",
    ]);
    let attacker = [127, 0, 0, 2];
    let mut slow: Vec<Slow> = Vec::new();
    let (mut served, mut refused) = (0u32, 0u32);
    let mut opened = 0u32;
    // Bounded: 8 s; the attacker keeps 60 connections attempted at all times (at most 600).
    for _ in 0..8 {
        while slow.iter().filter(|c| c.closed.is_none()).count() < 60 && opened < 600 {
            if let Some(c) = Slow::open(&s, attacker) {
                slow.push(c);
            }
            opened += 1;
        }
        trickle_for(&mut slow, 1, || {
            match common::Client::new(s.addr).request(
                "GET",
                "/nacos/v1/console/health/liveness",
                "",
            ) {
                Some((200, _)) => served += 1,
                _ => refused += 1,
            }
        });
    }
    let long_lived: Vec<Duration> = slow
        .iter()
        .filter_map(|c| c.closed)
        .filter(|l| *l >= Duration::from_millis(1500))
        .collect();
    let still_open = slow.iter().filter(|c| c.closed.is_none()).count();
    eprintln!(
        "attacker: {opened} opened, {} closed at the deadline, {still_open} open at the end; fresh client: {served} served, {refused} refused",
        long_lived.len()
    );
    assert_eq!(refused, 0, "the other address was always served");
    assert!(served >= 60);
    assert!(
        still_open <= 30,
        "at most three quarters of the cap: {still_open}"
    );
    assert!(!long_lived.is_empty());
    assert!(
        slow.iter().all(|c| c.closed.is_none_or(|l| l < TIMEOUT)),
        "no slow head outlived the deadline by much"
    );
    assert!(prom(&s, "muster_connections_rejected_total") > 0);
    assert!(prom(&s, "muster_http_head_timeouts_total") >= long_lived.len() as u64);
}

/// Found by the `http_head` fuzz target: one request with an absolute-form target and no path
/// (`GET http://x`) panicked the shard that read it, and the server stopped answering. Now it
/// is answered like `/` (404, no such api), with and without a query, and the server keeps
/// serving on the same shard.
#[test]
fn an_absolute_target_without_a_path_is_answered() {
    let s = Server::start(&["--shards", "1"]);
    for target in ["http://x", "http://x?serviceName=a", "https://17D"] {
        let (st, body) = s.raw(
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(st, 404, "{target}: {}", String::from_utf8_lossy(&body));
        assert_eq!(
            s.request("GET", "/nacos/v1/console/health/liveness", ""),
            (200, "OK".into()),
            "after {target}"
        );
    }
}
