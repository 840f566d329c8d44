//! Rows P2 and P4 on the server's side of the push socket: duplicated and stale (reordered)
//! acks, a huge datagram, an ack from the wrong port, and a flood of random datagrams. Each is
//! counted as junk and matches nothing; the server keeps pushing and matching real acks.
//!
//! Correctness only (counters and what arrives), no timing assertions. Every wait is bounded.

mod common;

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

const JAVA: (&str, &str) = ("User-Agent", "Nacos-Java-Client:v1.4.6");

fn subscriber() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// Subscribes `sock` to `svc` with a list query.
fn subscribe(s: &Server, sock: &UdpSocket, svc: &str) {
    let port = sock.local_addr().unwrap().port();
    let (st, _) = s.request_with(
        "GET",
        &format!("/nacos/v1/ns/instance/list?serviceName={svc}&udpPort={port}&clientIP=127.0.0.1"),
        &[JAVA],
        "",
    );
    assert_eq!(st, 200);
}

/// The next push on `sock` within `within`: (decoded JSON, source).
fn recv(sock: &UdpSocket, within: Duration) -> Option<(Value, SocketAddr)> {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < within {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let raw = &buf[..n];
            let mut json = Vec::new();
            if raw.starts_with(&[0x1f, 0x8b]) {
                flate2::read::GzDecoder::new(raw)
                    .read_to_end(&mut json)
                    .unwrap();
            } else {
                json.extend_from_slice(raw);
            }
            return Some((serde_json::from_slice(&json).unwrap(), from));
        }
    }
    None
}

fn ack_text(ref_time: u64) -> String {
    format!("{{\"type\":\"push-ack\",\"lastRefTime\":\"{ref_time}\",\"data\":\"\"}}")
}

fn metric(s: &Server, name: &str) -> u64 {
    let (_, m) = s.request("GET", "/metrics", "");
    m.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

/// Polls `cond` every 20 ms until it holds; fails naming `what` after `within` (or 10 000 polls).
fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        if start.elapsed() >= within {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within {within:?}");
}

/// Registers an instance in `svc` and returns the push it causes on `sock`.
fn push_after_register(s: &Server, sock: &UdpSocket, svc: &str, ip: &str) -> (u64, SocketAddr) {
    let (st, b) = s.request(
        "POST",
        &format!("/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port=80"),
        "",
    );
    assert_eq!((st, b.as_str()), (200, "ok"));
    // The push for this change (a re-send of an earlier one would carry an older time).
    let (p, from) = recv(sock, Duration::from_secs(10)).expect("a push after the register");
    (p["lastRefTime"].as_u64().unwrap(), from)
}

#[test]
fn duplicate_stale_huge_wrong_port_and_random_acks_match_nothing() {
    let s = Server::start(&["--shards", "1", "--push-ack-timeout-ms", "60000"]);
    let sock = subscriber();
    subscribe(&s, &sock, "j");

    // A push, acked twice: one ack counts, the duplicate is junk.
    let (t1, from) = push_after_register(&s, &sock, "j", "10.0.0.1");
    sock.send_to(ack_text(t1).as_bytes(), from).unwrap();
    sock.send_to(ack_text(t1).as_bytes(), from).unwrap();
    wait_until("ack and duplicate handled", Duration::from_secs(10), || {
        metric(&s, "muster_push_acked_total") + metric(&s, "muster_push_junk_total") >= 2
    });
    assert_eq!(
        metric(&s, "muster_push_acked_total"),
        1,
        "the duplicate counted"
    );
    let mut junk = 1;
    assert_eq!(metric(&s, "muster_push_junk_total"), junk);

    // Two more pushes, acked in reverse order: the stale ack (for the older, already replaced
    // packet) matches nothing; the newest is acked.
    let (t2, _) = push_after_register(&s, &sock, "j", "10.0.0.2");
    let (t3, _) = push_after_register(&s, &sock, "j", "10.0.0.3");
    assert!(t3 > t2 && t2 > t1, "push times go forward: {t1} {t2} {t3}");
    sock.send_to(ack_text(t3).as_bytes(), from).unwrap();
    sock.send_to(ack_text(t2).as_bytes(), from).unwrap();
    junk += 1;
    wait_until("reordered acks handled", Duration::from_secs(10), || {
        metric(&s, "muster_push_junk_total") >= junk
    });
    assert_eq!(metric(&s, "muster_push_acked_total"), 2);

    // A huge datagram (over the 2 KiB ack limit, valid JSON inside), and a right ack from the
    // wrong port: junk, nothing acked.
    let t4 = push_after_register(&s, &sock, "j", "10.0.0.4").0;
    let padded = format!(
        "{{\"type\":\"push-ack\",\"lastRefTime\":\"{t4}\",\"data\":\"{}\"}}",
        "x".repeat(60_000)
    );
    sock.send_to(padded.as_bytes(), from).unwrap();
    let other = subscriber();
    other.send_to(ack_text(t4).as_bytes(), from).unwrap();
    junk += 2;
    wait_until(
        "huge and wrong-port acks handled",
        Duration::from_secs(10),
        || metric(&s, "muster_push_junk_total") >= junk,
    );
    assert_eq!(
        metric(&s, "muster_push_acked_total"),
        2,
        "junk matched a push"
    );

    // 2,000 random datagrams (xorshift, 1–1400 bytes): all junk, none acks anything.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..2000 {
        let len = 1 + (next() % 1400) as usize;
        let d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = other.send_to(&d, from);
    }
    // Loopback may drop datagrams under load: at least some arrive, none ack anything.
    wait_until("random datagrams counted", Duration::from_secs(10), || {
        metric(&s, "muster_push_junk_total") > junk
    });
    assert_eq!(metric(&s, "muster_push_acked_total"), 2);

    // The pending push still takes its real ack, and pushes go on.
    sock.send_to(ack_text(t4).as_bytes(), from).unwrap();
    wait_until("the real ack counted", Duration::from_secs(10), || {
        metric(&s, "muster_push_acked_total") == 3
    });
    let (t5, from5) = push_after_register(&s, &sock, "j", "10.0.0.5");
    sock.send_to(ack_text(t5).as_bytes(), from5).unwrap();
    wait_until("a later push acked", Duration::from_secs(10), || {
        metric(&s, "muster_push_acked_total") == 4
    });
    assert_eq!(metric(&s, "muster_push_failed_total"), 0);
}
