//! UDP push, checked with a raw subscriber socket: packet format and gzip, acks and the single
//! re-send, revision order under bursts, target expiry, and convergence by pull when every
//! datagram is lost.

mod common;

use std::io::Read;
use std::net::UdpSocket;
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

/// Subscribes `sock` to `svc` with a list query; returns the list reply.
fn subscribe(s: &Server, sock: &UdpSocket, svc: &str) -> Value {
    let port = sock.local_addr().unwrap().port();
    let (st, b) = s.request_with(
        "GET",
        &format!("/nacos/v1/ns/instance/list?serviceName={svc}&udpPort={port}&clientIP=127.0.0.1"),
        &[JAVA],
        "",
    );
    assert_eq!(st, 200);
    serde_json::from_str(&b).unwrap()
}

/// A received packet: (raw bytes, decoded JSON, source).
fn recv(sock: &UdpSocket, within: Duration) -> Option<(Vec<u8>, Value, std::net::SocketAddr)> {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < within {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let raw = buf[..n].to_vec();
            let json = if raw.starts_with(&[0x1f, 0x8b]) {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&raw[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            } else {
                raw.clone()
            };
            return Some((raw, serde_json::from_slice(&json).unwrap(), from));
        }
    }
    None
}

fn data(packet: &Value) -> Value {
    assert_eq!(packet["type"], "dom");
    serde_json::from_str(packet["data"].as_str().unwrap()).unwrap()
}

fn ack(sock: &UdpSocket, to: std::net::SocketAddr, packet: &Value) {
    let msg = format!(
        "{{\"type\":\"push-ack\",\"lastRefTime\":\"{}\",\"data\":\"\"}}",
        packet["lastRefTime"].as_u64().unwrap()
    );
    sock.send_to(msg.as_bytes(), to).unwrap();
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

#[test]
fn packet_format_gzip_and_cache_millis() {
    let s = Server::start(&["--shards", "2"]);
    let sock = subscriber();
    let reply = subscribe(&s, &sock, "p");
    assert_eq!(reply["cacheMillis"], 10000, "push targets poll every 10 s");
    let (st, _) = s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=p&ip=10.0.0.1&port=80",
        "",
    );
    assert_eq!(st, 200);
    let (raw, pkt, from) = recv(&sock, Duration::from_secs(5)).expect("a push after the register");
    assert!(
        !raw.starts_with(&[0x1f, 0x8b]),
        "small packets are plain JSON"
    );
    let d = data(&pkt);
    assert_eq!(d["name"], "DEFAULT_GROUP@@p");
    assert_eq!(
        d["dom"], "DEFAULT_GROUP@@p",
        "grouped for a Java ≥ 1.0 subscriber"
    );
    assert_eq!(d["cacheMillis"], 10000);
    assert_eq!(d["hosts"][0]["ip"], "10.0.0.1");
    let r1 = pkt["lastRefTime"].as_u64().unwrap();
    assert!(r1 < 1 << 53, "lastRefTime stays below 2^53");
    ack(&sock, from, &pkt);
    // Grow the list past 1 KiB: the packet is gzipped.
    let md = "%7B%22k%22%3A%22".to_string() + &"v".repeat(300) + "%22%7D";
    let (st, _) = s.request(
        "POST",
        &format!("/nacos/v1/ns/instance?serviceName=p&ip=10.0.0.2&port=80&metadata={md}"),
        "",
    );
    assert_eq!(st, 200);
    // Bounded: at most 20 packets and 10 s.
    let mut last = None;
    let start = Instant::now();
    for _ in 0..20 {
        let Some(p) = recv(&sock, Duration::from_secs(2)) else {
            break;
        };
        ack(&sock, p.2, &p.1);
        let n = data(&p.1)["hosts"].as_array().unwrap().len();
        last = Some(p);
        if n == 2 || start.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let (raw, pkt, _) = last.expect("a push for the second register");
    assert!(
        raw.starts_with(&[0x1f, 0x8b]),
        "≥ 1 KiB is gzipped ({} bytes)",
        raw.len()
    );
    assert!(pkt["lastRefTime"].as_u64().unwrap() > r1);
    assert_eq!(data(&pkt)["hosts"].as_array().unwrap().len(), 2);
    // The subscriber is listed.
    let (_, b) = s.request("GET", "/nacos/v1/ns/service/subscribers?serviceName=p", "");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["count"], 1);
    assert_eq!(
        v["subscribers"][0]["addrStr"],
        sock.local_addr().unwrap().to_string()
    );
    assert_eq!(v["subscribers"][0]["agent"], "Nacos-Java-Client:v1.4.6");
    // Python's client is not a push target (Nacos's UA rule).
    let py = subscriber();
    let port = py.local_addr().unwrap().port();
    let (_, b) = s.request_with(
        "GET",
        &format!("/nacos/v1/ns/instance/list?serviceName=p&udpPort={port}&clientIP=127.0.0.1"),
        &[("User-Agent", "Nacos-Python-Client:v0.1.17")],
        "",
    );
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["cacheMillis"],
        3000
    );
}

/// Issue 17: with the shard's target table full a query gets no push, so it is told the pull
/// interval (3000), as Nacos does when adding its push client fails; a target already in the
/// table keeps 10000 when it refreshes.
#[test]
fn a_full_target_table_tells_the_client_to_pull() {
    let s = Server::start(&["--shards", "1", "--push-max-targets", "2"]);
    let socks: Vec<UdpSocket> = (0..3).map(|_| subscriber()).collect();
    assert_eq!(subscribe(&s, &socks[0], "full")["cacheMillis"], 10000);
    assert_eq!(subscribe(&s, &socks[1], "full")["cacheMillis"], 10000);
    assert_eq!(
        subscribe(&s, &socks[2], "full")["cacheMillis"],
        3000,
        "no room for a third target: poll every 3 s"
    );
    assert_eq!(
        subscribe(&s, &socks[0], "full")["cacheMillis"],
        10000,
        "a refresh of a target already held still gets pushes"
    );
    let (_, b) = s.request(
        "GET",
        "/nacos/v1/ns/service/subscribers?serviceName=full",
        "",
    );
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["count"], 2);
}

#[test]
fn unacked_pushes_are_resent_exactly_once() {
    let s = Server::start(&["--shards", "2", "--push-ack-timeout-ms", "300"]);
    let quiet = subscriber();
    let acking = subscriber();
    subscribe(&s, &quiet, "r");
    subscribe(&s, &acking, "r");
    s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=r&ip=10.0.0.1&port=80",
        "",
    );
    let (_, first, from) =
        recv(&acking, Duration::from_secs(5)).expect("push to the acking subscriber");
    ack(&acking, from, &first);
    let (raw1, p1, _) = recv(&quiet, Duration::from_secs(5)).expect("first send");
    let (raw2, p2, _) = recv(&quiet, Duration::from_secs(5)).expect("the single re-send");
    assert_eq!(raw1, raw2, "the re-send is the same packet");
    assert_eq!(p1["lastRefTime"], p2["lastRefTime"]);
    assert!(
        recv(&quiet, Duration::from_millis(1500)).is_none(),
        "never a third send"
    );
    assert!(
        recv(&acking, Duration::from_millis(300)).is_none(),
        "acked packets are not re-sent"
    );
    assert_eq!(metric(&s, "muster_push_acked_total"), 1);
    assert_eq!(metric(&s, "muster_push_resent_total"), 1);
    assert_eq!(metric(&s, "muster_push_failed_total"), 1);
    assert!(metric(&s, "muster_push_latency_seconds_count") >= 2);
    // Junk on the push socket is counted and ignored.
    quiet.send_to(b"\x00garbage", from).unwrap();
    quiet
        .send_to(b"{\"type\":\"push-ack\",\"lastRefTime\":\"1\"}", from)
        .unwrap();
    wait_until(
        "both junk datagrams are counted",
        Duration::from_secs(10),
        || metric(&s, "muster_push_junk_total") >= 2,
    );
    assert_eq!(
        metric(&s, "muster_push_acked_total"),
        1,
        "a junk ack matches nothing"
    );
}

#[test]
fn bursts_arrive_in_revision_order() {
    let s = Server::start(&["--shards", "2"]);
    let sock = subscriber();
    subscribe(&s, &sock, "burst");
    const N: usize = 60;
    std::thread::scope(|scope| {
        for w in 0..4 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..N / 4 {
                    let (st, _) = s.request(
                        "POST",
                        &format!("/nacos/v1/ns/instance?serviceName=burst&ip=10.1.{w}.{i}&port=80"),
                        "",
                    );
                    assert_eq!(st, 200);
                }
            });
        }
    });
    let mut last_ref = 0;
    let mut last_count = 0;
    let mut packets = 0;
    // Bounded: one packet per change at most (more fails below), and 30 s.
    let start = Instant::now();
    while packets <= N && start.elapsed() < Duration::from_secs(30) {
        let Some((_, p, from)) = recv(&sock, Duration::from_millis(1500)) else {
            break;
        };
        ack(&sock, from, &p);
        let r = p["lastRefTime"].as_u64().unwrap();
        let n = data(&p)["hosts"].as_array().unwrap().len();
        assert!(r > last_ref, "lastRefTime went backwards");
        assert!(
            n >= last_count,
            "an older revision ({n} hosts) after a newer one ({last_count})"
        );
        last_ref = r;
        last_count = n;
        packets += 1;
        if n == N {
            break;
        }
    }
    assert_eq!(last_count, N, "the last push carries every instance");
    assert!(
        packets < N,
        "bursts are merged: {packets} packets for {N} changes"
    );
}

#[test]
fn targets_expire_after_queries_stop() {
    let s = Server::start(&["--shards", "2", "--push-target-ttl-ms", "400"]);
    let sock = subscriber();
    subscribe(&s, &sock, "x");
    let (_, b) = s.request("GET", "/nacos/v1/ns/service/subscribers?serviceName=x", "");
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["count"], 1);
    let count = || {
        let (_, b) = s.request("GET", "/nacos/v1/ns/service/subscribers?serviceName=x", "");
        serde_json::from_str::<Value>(&b).unwrap()["count"].clone()
    };
    wait_until(
        "the target expires once queries stop",
        Duration::from_secs(10),
        || count() == 0,
    );
    s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=x&ip=10.0.0.1&port=80",
        "",
    );
    assert!(
        recv(&sock, Duration::from_millis(800)).is_none(),
        "expired targets get nothing"
    );
    assert_eq!(metric(&s, "muster_push_targets"), 0);
}

#[test]
fn with_every_datagram_lost_subscribers_converge_by_pull() {
    let s = Server::start(&["--shards", "2", "--push-drop-percent", "100"]);
    let sock = subscriber();
    sock.set_nonblocking(true).unwrap();
    let before = subscribe(&s, &sock, "lossy");
    let cache_millis = before["cacheMillis"].as_u64().unwrap();
    assert_eq!(cache_millis, 10000, "push targets poll every 10 s");
    let poll_bound = Duration::from_millis(cache_millis);
    // No checksum yet while the service does not exist.
    let mut checksum = before["checksum"].as_str().unwrap_or("").to_string();
    let mut want = Vec::new();
    // Two changes in turn, each pushed (and dropped), each reached by the client's polls alone
    // within one poll interval of the change.
    for (i, ip) in ["10.0.0.1", "10.0.0.2"].into_iter().enumerate() {
        let errors = metric(&s, "muster_push_send_errors_total");
        let changed = Instant::now();
        let (st, _) = s.request(
            "POST",
            &format!("/nacos/v1/ns/instance?serviceName=lossy&ip={ip}&port=80"),
            "",
        );
        assert_eq!(st, 200);
        want.push(ip.to_string());
        // The push for this change was sent, and dropped.
        wait_until(
            &format!("change {i}: the push is attempted and dropped"),
            poll_bound,
            || metric(&s, "muster_push_send_errors_total") > errors,
        );
        // Poll as the client does (more often, to see when the list gets there), bounded by
        // one poll interval from the change; no datagram may ever arrive.
        let mut reached = None;
        for _ in 0..500 {
            let mut buf = [0u8; 65536];
            assert!(
                sock.recv_from(&mut buf).is_err(),
                "change {i}: a datagram arrived although every push is dropped"
            );
            let v = subscribe(&s, &sock, "lossy");
            let ips = common::host_ips(&v);
            let sum = v["checksum"].as_str().unwrap().to_string();
            if ips == want {
                assert_ne!(
                    sum, checksum,
                    "change {i}: a new list under the old checksum"
                );
                checksum = sum;
                reached = Some(changed.elapsed());
                break;
            }
            if changed.elapsed() > poll_bound {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = reached.unwrap_or_else(|| {
            panic!("change {i}: polls did not reach {want:?} within {poll_bound:?}")
        });
        assert!(took <= poll_bound, "change {i}: reached after {took:?}");
    }
    assert!(metric(&s, "muster_push_send_errors_total") >= 2);
    assert_eq!(metric(&s, "muster_push_sent_total"), 0, "nothing was sent");
}
