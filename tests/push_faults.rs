//! Rows P2 and P4 on the server's side of the push socket: duplicated and stale (reordered)
//! acks, a huge datagram, an ack from the wrong port, and a flood of random datagrams. Each is
//! counted as junk and matches nothing; the server keeps pushing and matching real acks.
//! 10k dead subscribers are re-sent to once per packet and dropped after three missed packets
//! in a row, with memory bounded, while a live subscriber beside them gets and acks every push.
//! Row P3: a 2k-instance service's push is one gzipped datagram holding the whole list.
//! Row P1 at 20% and 50% loss: a lossy UDP proxy between the server and the subscriber drops
//! datagrams both ways; every packet is sent at most twice, the pushes that arrive are whole and
//! in order, and each change reaches the client by push or by its next poll.
//!
//! Correctness only (counters and what arrives), no timing assertions. Every wait is bounded.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cpu_ticks, read_response, rss_kib, Server};
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

/// Sends `reqs` (whole requests) over one keep-alive connection, one write each, and returns
/// the statuses.
fn pipeline(s: &Server, reqs: impl Iterator<Item = String>) -> Vec<u16> {
    let conn = TcpStream::connect(s.addr).unwrap();
    conn.set_nodelay(true).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    reqs.map(|req| {
        w.write_all(req.as_bytes()).unwrap();
        read_response(&mut r).0
    })
    .collect()
}

#[test]
fn a_two_thousand_instance_push_is_one_gzipped_datagram_with_every_host() {
    let s = Server::start(&["--shards", "1", "--push-ack-timeout-ms", "60000"]);
    let sock = subscriber();
    let statuses = pipeline(
        &s,
        (0..2000).map(|i| {
            format!(
                "POST /nacos/v1/ns/instance?serviceName=big&ip=10.1.{}.{}&port=8080&\
                 metadata=%7B%22zone%22%3A%22z{}%22%7D HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                i / 250,
                i % 250,
                i % 7
            )
        }),
    );
    assert!(statuses.iter().all(|&st| st == 200), "a register failed");
    subscribe(&s, &sock, "big");
    let st = pipeline(
        &s,
        std::iter::once(
            "POST /nacos/v1/ns/instance?serviceName=big&ip=10.9.9.9&port=8080 HTTP/1.1\r\n\
             Host: x\r\nContent-Length: 0\r\n\r\n"
                .to_string(),
        ),
    );
    assert_eq!(st, [200]);
    let mut buf = vec![0u8; 65536];
    let (n, _) = sock.recv_from(&mut buf).expect("the push");
    assert!(buf.starts_with(&[0x1f, 0x8b]), "a large push is gzipped");
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&buf[..n])
        .read_to_end(&mut json)
        .expect("a whole gzip stream");
    let p: Value = serde_json::from_slice(&json).expect("whole JSON");
    let data: Value = serde_json::from_str(p["data"].as_str().unwrap()).unwrap();
    eprintln!(
        "2001 hosts: {} bytes of JSON in a {n}-byte datagram",
        json.len()
    );
    assert_eq!(data["hosts"].as_array().unwrap().len(), 2001);
    assert_eq!(metric(&s, "muster_push_send_errors_total"), 0);
}

/// Dead subscribers of the 10k test: `127.77.x.y`, where nothing listens.
const DEAD: u32 = 10_000;

#[test]
fn ten_thousand_dead_subscribers_are_dropped_after_three_misses_and_memory_stays_bounded() {
    let s = Server::start(&[
        "--shards",
        "1",
        "--push-ack-timeout-ms",
        "100",
        "--push-target-ttl-ms",
        "600000",
    ]);
    let pid = s.child.id();
    // The dead targets' port is held by `live` on 127.0.0.1, so no socket of another test can
    // bind it on 0.0.0.0 and receive their datagrams.
    let live = subscriber();
    let port = live.local_addr().unwrap().port();
    subscribe(&s, &live, "dead");
    let rss_start = rss_kib(pid);
    let statuses = pipeline(
        &s,
        (0..DEAD).map(|i| {
            let ip = format!("127.77.{}.{}", i >> 8, i & 255);
            format!(
                "GET /nacos/v1/ns/instance/list?serviceName=dead&udpPort={port}&clientIP={ip} HTTP/1.1\r\n\
                 Host: x\r\nUser-Agent: {}\r\n\r\n",
                JAVA.1
            )
        }),
    );
    assert!(statuses.iter().all(|&st| st == 200), "a list failed");
    wait_until("10k dead targets", Duration::from_secs(10), || {
        metric(&s, "muster_push_targets") == u64::from(DEAD) + 1
    });
    let rss_subscribed = rss_kib(pid);
    let cpu_start = cpu_ticks(pid);

    // Three changes, each after the last one's packets failed: every dead target misses three
    // packets (each sent twice), the live one acks all three.
    for round in 1..=3u64 {
        let (t, from) = push_after_register(&s, &live, "dead", &format!("10.0.0.{round}"));
        live.send_to(ack_text(t).as_bytes(), from).unwrap();
        wait_until(
            "the round's packets failed",
            Duration::from_secs(30),
            || metric(&s, "muster_push_failed_total") >= round * u64::from(DEAD),
        );
        assert_eq!(metric(&s, "muster_push_acked_total"), round);
        assert!(
            metric(&s, "muster_push_resent_total") <= round * u64::from(DEAD),
            "more than one re-send per packet"
        );
    }
    wait_until("dead targets dropped", Duration::from_secs(10), || {
        metric(&s, "muster_push_targets") == 1
    });
    assert_eq!(metric(&s, "muster_push_dropped_total"), u64::from(DEAD));
    assert_eq!(metric(&s, "muster_push_failed_total"), 3 * u64::from(DEAD));
    let rss_end = rss_kib(pid);
    let cpu = cpu_ticks(pid) - cpu_start;
    eprintln!(
        "RSS {rss_start} KiB at start, {rss_subscribed} KiB with 10k targets, {rss_end} KiB after \
         three rounds and the drop; {cpu} CPU ticks for 60k datagrams and the sweeps"
    );
    // A target and its pending packet are a few hundred bytes: 10k of them well under 64 MiB.
    assert!(
        rss_end.saturating_sub(rss_start) < 64 * 1024,
        "RSS grew from {rss_start} to {rss_end} KiB"
    );

    // The live subscriber is still pushed to, and junk from the dead range matches nothing.
    let (t, from) = push_after_register(&s, &live, "dead", "10.0.0.9");
    live.send_to(ack_text(t).as_bytes(), from).unwrap();
    wait_until("the live target acked", Duration::from_secs(10), || {
        metric(&s, "muster_push_acked_total") == 4
    });
}

/// A UDP proxy that drops `loss_percent` of the datagrams each way (a fixed xorshift sequence):
/// the server pushes to its address, it forwards to `client`; what `client` sends back to it
/// goes to the server. Runs until `stop` is set (or 120 s), on its own thread.
fn lossy_proxy(
    client: SocketAddr,
    loss_percent: u64,
    stop: Arc<AtomicBool>,
) -> (SocketAddr, std::thread::JoinHandle<(u64, u64)>) {
    let p = UdpSocket::bind("127.0.0.1:0").unwrap();
    p.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = p.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut server = None;
        let (mut forwarded, mut dropped) = (0, 0);
        let mut buf = vec![0u8; 65536];
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
            let Ok((n, from)) = p.recv_from(&mut buf) else {
                continue;
            };
            let to = if from == client {
                match server {
                    Some(s) => s,
                    None => continue,
                }
            } else {
                server = Some(from);
                client
            };
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 100 < loss_percent {
                dropped += 1;
            } else {
                let _ = p.send_to(&buf[..n], to);
                forwarded += 1;
            }
        }
        (forwarded, dropped)
    });
    (addr, handle)
}

/// Subscribes the proxy's address (`udpPort` is its port) to `svc`; returns the list.
fn subscribe_at(s: &Server, port: u16, svc: &str) -> Value {
    let (st, b) = s.request_with(
        "GET",
        &format!("/nacos/v1/ns/instance/list?serviceName={svc}&udpPort={port}&clientIP=127.0.0.1"),
        &[JAVA],
        "",
    );
    assert_eq!(st, 200);
    serde_json::from_str(&b).unwrap()
}

#[test]
fn with_20_and_50_percent_loss_each_packet_is_sent_at_most_twice_and_changes_still_arrive() {
    for loss in [20u64, 50] {
        let s = Server::start(&["--shards", "1", "--push-ack-timeout-ms", "100"]);
        let client = subscriber();
        let stop = Arc::new(AtomicBool::new(false));
        let (proxy, handle) = lossy_proxy(client.local_addr().unwrap(), loss, stop.clone());
        let svc = format!("lossy{loss}");
        subscribe_at(&s, proxy.port(), &svc);
        let (mut by_push, mut by_poll) = (0, 0);
        let mut latencies = Vec::new();
        let mut last_ref = 0;
        for k in 1..=20u64 {
            let failed = metric(&s, "muster_push_failed_total");
            let changed = Instant::now();
            let (st, _) = s.request(
                "POST",
                &format!("/nacos/v1/ns/instance?serviceName={svc}&ip=10.0.0.{k}&port=80"),
                "",
            );
            assert_eq!(st, 200);
            // Until the push with all k hosts arrives (acked back through the proxy), or the
            // server gives the packet up (both sends lost): then the client's poll gets it.
            let mut arrived = false;
            for _ in 0..200 {
                if let Some((p, from)) = recv(&client, Duration::from_millis(50)) {
                    let t = p["lastRefTime"].as_u64().unwrap();
                    assert!(t >= last_ref, "a push older than one already seen");
                    last_ref = t;
                    client.send_to(ack_text(t).as_bytes(), from).unwrap();
                    let data: Value = serde_json::from_str(p["data"].as_str().unwrap()).unwrap();
                    if data["hosts"].as_array().unwrap().len() as u64 == k {
                        arrived = true;
                        latencies.push(changed.elapsed());
                        break;
                    }
                }
                if metric(&s, "muster_push_failed_total") > failed {
                    break;
                }
            }
            if arrived {
                by_push += 1;
            } else {
                let v = subscribe_at(&s, proxy.port(), &svc);
                assert_eq!(
                    common::host_ips(&v).len() as u64,
                    k,
                    "the poll has change {k}"
                );
                by_poll += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let (forwarded, dropped) = handle.join().unwrap();
        let sent = metric(&s, "muster_push_sent_total");
        let resent = metric(&s, "muster_push_resent_total");
        latencies.sort();
        eprintln!(
            "{loss}% loss: {by_push} of 20 changes by push (p50 {:?}), {by_poll} by poll; \
             {sent} sent, {resent} re-sent; proxy forwarded {forwarded}, dropped {dropped}",
            latencies.get(latencies.len() / 2)
        );
        assert_eq!(by_push + by_poll, 20);
        assert!(resent <= sent, "a packet sent more than twice");
        assert!(dropped > 0, "the proxy dropped nothing");
    }
}
