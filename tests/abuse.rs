//! Rows H1, H5 and A2 of the fault matrix against the real binary over raw TCP: an endless
//! chunked body, Content-Length together with Transfer-Encoding, 10k header lines, 10k idle
//! connections against the connection cap, and variants of request paths.
//!
//! Each test checks that the limit is enforced (the status, the close, the cap) and that a
//! well-behaved client is served afterwards. Correctness only: nothing here asserts how fast
//! anything happens (that belongs in benches). Every loop is bounded in count, and every wait
//! in time by a socket timeout or an attempt count.
//!
//! Slow heads (slowloris) are `tests/http.rs::slow_heads_are_closed_at_the_head_deadline` and
//! `::a_slowloris_address_cannot_lock_out_other_clients`.

mod common;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{read_response, rss_kib, Server, IO_TIMEOUT};
use serde_json::Value;

/// A connection to `s` from the loopback address `from` (any of 127.0.0.0/8).
fn connect_from(s: &Server, from: [u8; 4]) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::from((from, 0)).into())?;
    sock.connect_timeout(&s.addr.into(), IO_TIMEOUT)?;
    let c = TcpStream::from(sock);
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(c)
}

/// A well-behaved client: registers `ip` in `svc` and finds it listed.
fn well_behaved(s: &Server, svc: &str, ip: &str) {
    let (st, b) = s.request(
        "POST",
        &format!("/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port=80"),
        "",
    );
    assert_eq!((st, b.as_str()), (200, "ok"));
    let (st, b) = s.request(
        "GET",
        &format!("/nacos/v1/ns/instance/list?serviceName={svc}"),
        "",
    );
    assert_eq!(st, 200, "{b}");
    assert!(b.contains(ip), "{ip} not listed: {b}");
}

/// Reads until the server closes `c`: the bytes, and whether the close came (EOF or reset)
/// rather than the read timeout.
fn read_until_closed(c: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 << 10];
    // Bounded: a server that streams forever fails at 64 MiB.
    while out.len() < 64 << 20 {
        match c.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return (out, true)
            }
            Err(_) => return (out, false),
        }
    }
    panic!("more than 64 MiB without a close");
}

/// H1: a chunked body that never ends (8 KiB chunks, up to 16 MiB) is cut off with 413 once it
/// passes the body cap, the connection is closed, the server's memory stays far below what
/// was sent, and a well-behaved client is served.
#[test]
fn an_endless_chunked_body_gets_413_and_a_close() {
    let s = Server::start(&["--shards", "1", "--max-body-bytes", "65536"]);
    well_behaved(&s, "before", "127.0.0.1");
    let rss_before = rss_kib(s.child.id());
    let mut c = connect_from(&s, [127, 0, 0, 2]).unwrap();
    let reader = c.try_clone().unwrap();
    let answer = std::thread::spawn(move || {
        let mut r = BufReader::new(reader);
        read_response(&mut r)
    });
    c.write_all(
        b"POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
          Content-Type: application/x-www-form-urlencoded\r\n\r\n",
    )
    .unwrap();
    let chunk = {
        let mut v = b"2000\r\n".to_vec();
        v.extend(std::iter::repeat_n(b'a', 0x2000));
        v.extend_from_slice(b"\r\n");
        v
    };
    let mut sent = 0usize;
    // At most 2048 chunks (16 MiB); the server stops reading long before.
    for _ in 0..2048 {
        if c.write_all(&chunk).is_err() || answer.is_finished() {
            break;
        }
        sent += chunk.len();
    }
    let (status, _, body) = answer.join().unwrap();
    assert_eq!(status, 413, "{body}");
    let (_, closed) = read_until_closed(&mut c);
    assert!(closed, "the connection stays open after 413");
    // Memory: the server holds at most the cap of the body, not what was sent.
    let grown = rss_kib(s.child.id()).saturating_sub(rss_before);
    assert!(
        grown < 8 << 10,
        "RSS grew by {grown} KiB after {sent} bytes were sent"
    );
    well_behaved(&s, "after", "127.0.0.3");
}

/// H5: a request with both Content-Length and Transfer-Encoding is refused with 400 and the
/// connection is closed, so nothing behind it is read as a second (smuggled) request.
#[test]
fn content_length_with_transfer_encoding_is_refused_and_nothing_is_smuggled() {
    let s = Server::start(&["--shards", "1"]);
    let smuggled =
        "GET /nacos/v1/ns/instance/list?serviceName=smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let register = "POST /nacos/v1/ns/instance?serviceName=smuggled&ip=127.0.0.9&port=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    for (name, framing) in [
        (
            "CL then TE",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE then CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        ),
        (
            "CL 0 with TE",
            "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE with a space before the colon",
            "Content-Length: 4\r\nTransfer-Encoding : chunked\r\n",
        ),
    ] {
        for behind in [smuggled, register] {
            let mut c = connect_from(&s, [127, 0, 0, 4]).unwrap();
            let raw = format!(
                "POST /nacos/v1/ns/instance?serviceName=front&ip=127.0.0.8&port=1 HTTP/1.1\r\n\
                 Host: x\r\n{framing}\r\n0\r\n\r\n{behind}"
            );
            let _ = c.write_all(raw.as_bytes());
            let (out, closed) = read_until_closed(&mut c);
            let text = String::from_utf8_lossy(&out);
            assert!(closed, "{name}: the connection stays open");
            assert!(text.starts_with("HTTP/1.1 400 "), "{name}: {text}");
            assert_eq!(
                text.matches("HTTP/1.1 ").count(),
                1,
                "{name}: a second answer was smuggled: {text}"
            );
        }
    }
    let (st, b) = s.request("GET", "/nacos/v1/ns/instance/list?serviceName=smuggled", "");
    assert_eq!(st, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        v["hosts"],
        serde_json::json!([]),
        "a smuggled register landed"
    );
    let (_, b) = s.request("GET", "/nacos/v1/ns/instance/list?serviceName=front", "");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        v["hosts"],
        serde_json::json!([]),
        "a refused request landed"
    );
    well_behaved(&s, "after", "127.0.0.3");
}

/// H5: 10,000 header lines, and one 64 KiB header, are refused with 431 and a close; the
/// server keeps serving.
#[test]
fn ten_thousand_headers_get_431() {
    let s = Server::start(&["--shards", "1"]);
    let mut many =
        String::from("GET /nacos/v1/ns/instance/list?serviceName=a HTTP/1.1\r\nHost: x\r\n");
    for i in 0..10_000 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let big = format!(
        "GET /nacos/v1/ns/instance/list?serviceName=a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(64 << 10)
    );
    for (name, raw) in [("10k headers", many), ("64 KiB header", big)] {
        let mut c = connect_from(&s, [127, 0, 0, 5]).unwrap();
        // The server may close before all of it is written: a failed write is expected.
        let _ = c.write_all(raw.as_bytes());
        let (out, closed) = read_until_closed(&mut c);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 431 "), "{name}: {text}");
        assert!(closed, "{name}: the connection stays open");
    }
    well_behaved(&s, "after", "127.0.0.3");
}

/// H5: 10,000 connections that never send a byte, from 50 addresses, against a cap of 400
/// (and a head deadline far beyond the test, so no slot frees while they connect): the server
/// admits at most the cap and closes every other at accept. Once a few of them close, a client
/// on another address is served.
#[test]
fn ten_thousand_idle_connections_never_pass_the_cap() {
    const CAP: usize = 400;
    const CONNECTIONS: usize = 10_000;
    let cap = CAP.to_string();
    let s = Server::start(&[
        "--shards",
        "1",
        "--max-connections",
        &cap,
        "--head-timeout-ms",
        "600000",
        "--idle-timeout-ms",
        "600000",
    ]);
    let mut idle = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        // A full accept queue may refuse a connect: that is the cap working too.
        if let Ok(c) = connect_from(&s, [127, 0, 1, 1 + (i % 50) as u8]) {
            idle.push(c);
        }
    }
    let connected = idle.len();
    assert!(connected > CAP, "only {connected} connects succeeded");
    // Free a few slots: the first connections were admitted; the server sees them close and
    // releases their slots.
    idle.drain(..50);
    let mut open = None;
    for _ in 0..300 {
        if let Some((200, body)) = common::Client::new(s.addr).request("GET", "/metrics", "") {
            open = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut body = open.expect("a well-behaved client was never served");
    let gauge = |body: &str, name: &str| -> f64 {
        body.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // Connections still in the kernel's accept queue are neither admitted nor rejected yet:
    // read until the rejected count stops moving (bounded: 30 reads, 200 ms apart).
    let mut rejected = gauge(&body, "muster_connections_rejected_total") as usize;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(200));
        let Some((200, next)) = common::Client::new(s.addr).request("GET", "/metrics", "") else {
            continue;
        };
        let now = gauge(&next, "muster_connections_rejected_total") as usize;
        body = next;
        if now == rejected {
            break;
        }
        rejected = now;
    }
    let open_now = gauge(&body, "muster_connections_open") as usize;
    eprintln!("{connected} connected, server: {open_now} open, {rejected} rejected at accept");
    // Nothing was freed by a deadline, so everything admitted is still counted: admitted is
    // what connected less what was rejected, and it never passed the cap.
    assert!(open_now <= CAP, "{open_now} open, over the cap of {CAP}");
    assert!(
        connected - rejected <= CAP,
        "{connected} connected, {rejected} rejected: more than {CAP} admitted"
    );
    well_behaved_retrying(&s);
}

/// [`well_behaved`] with bounded retries while the cap may still be nearly full.
fn well_behaved_retrying(s: &Server) {
    for _ in 0..300 {
        let c = common::Client::new(s.addr);
        if let Some((200, b)) = c.request(
            "POST",
            "/nacos/v1/ns/instance?serviceName=after&ip=127.0.0.3&port=80",
            "",
        ) {
            assert_eq!(b, "ok");
            if let Some((200, b)) =
                c.request("GET", "/nacos/v1/ns/instance/list?serviceName=after", "")
            {
                assert!(b.contains("127.0.0.3"), "{b}");
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("a well-behaved client was never served");
}

/// H5: idle connections (never a byte, and idle after a request) are closed by the server at
/// the head and idle deadlines, not left open, while other clients are served.
#[test]
fn idle_connections_are_closed_by_the_server() {
    let s = Server::start(&[
        "--shards",
        "1",
        "--head-timeout-ms",
        "1000",
        "--idle-timeout-ms",
        "1000",
    ]);
    let mut idle = Vec::new();
    for i in 0..200u32 {
        let mut c = connect_from(&s, [127, 0, 2, 1 + (i % 20) as u8]).unwrap();
        if i % 2 == 1 {
            // Idle after one answered request (keep-alive).
            c.write_all(b"GET /nacos/v1/console/health/liveness HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let (st, _, _) = read_response(&mut BufReader::new(c.try_clone().unwrap()));
            assert_eq!(st, 200);
        }
        idle.push(c);
    }
    well_behaved(&s, "during", "127.0.0.7");
    for c in &mut idle {
        let (out, closed) = read_until_closed(c);
        assert!(out.is_empty(), "an idle connection got bytes: {out:?}");
        assert!(closed, "an idle connection was left open");
    }
    well_behaved(&s, "after", "127.0.0.3");
}

/// A body with what changes between two reads of the same thing removed: the time of a list
/// answer (`lastRefTime`) and the load figures of the operator metrics.
fn comparable(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(mut m)) => {
            for volatile in ["lastRefTime", "cpu", "load", "mem"] {
                m.remove(volatile);
            }
            Value::Object(m).to_string()
        }
        _ => body.to_string(),
    }
}

/// A refusal: a 4xx, or Nacos's answer to an unknown path under `/nacos` (501 `no such api`).
fn denied(status: u16, body: &str) -> bool {
    (400..500).contains(&status) || (status == 501 && body.contains("no such api"))
}

/// A2: variants of a path (trailing `/`, `//`, `/./`, `/../`, `%2F`, `%2e`, `;x=y`, upper
/// case, `%00`) get the canonical path's answer or a refusal ([`denied`]), never another
/// endpoint's; a write through a refused variant changed nothing.
#[test]
fn path_variants_get_the_canonical_answer_or_a_4xx() {
    let s = Server::start(&["--shards", "2"]);
    well_behaved(&s, "a", "127.0.0.1");
    let variants = |p: &str| -> Vec<String> {
        let tail = p.trim_start_matches("/nacos/");
        vec![
            format!("{p}/"),
            format!("{p}//"),
            format!("/nacos//{tail}"),
            format!("//nacos/{tail}"),
            format!("/nacos/./{tail}"),
            format!("/nacos/v1/../{tail}"),
            format!("/nacos%2F{tail}"),
            format!("/nacos%2f{tail}"),
            format!("/nacos/%2e/{tail}"),
            format!("{p};x=y"),
            format!("/NACOS/{tail}"),
            p.to_uppercase(),
            format!("{p}%00"),
            format!("{p}/."),
        ]
    };
    let reads = [
        ("GET", "/nacos/v1/ns/instance/list", "serviceName=a"),
        ("GET", "/nacos/v1/ns/operator/metrics", ""),
        ("GET", "/nacos/v1/ns/service/list", "pageNo=1&pageSize=10"),
        ("GET", "/nacos/v1/console/health/liveness", ""),
    ];
    for (method, path, query) in reads {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        let canonical = s.request(method, &format!("{path}{q}"), "");
        assert_eq!(canonical.0, 200, "{path}: {}", canonical.1);
        for v in variants(path) {
            let (st, body) = s.request(method, &format!("{v}{q}"), "");
            let same = st == canonical.0 && comparable(&body) == comparable(&canonical.1);
            assert!(
                same || denied(st, &body),
                "{method} {v}: {st} {body}, canonical {path}: {}",
                canonical.0
            );
        }
    }
    // Writes: each variant registers its own ip. Only variants answered exactly as the
    // canonical path (200 ok) may have registered.
    let write = "/nacos/v1/ns/instance";
    let mut allowed = vec!["127.0.2.1:80".to_string()];
    let canonical = s.request(
        "POST",
        &format!("{write}?serviceName=w&ip=127.0.2.1&port=80"),
        "",
    );
    assert_eq!(canonical, (200, "ok".into()));
    for (i, v) in variants(write).iter().enumerate() {
        let ip = format!("127.0.2.{}", 2 + i);
        let (st, body) = s.request("POST", &format!("{v}?serviceName=w&ip={ip}&port=80"), "");
        if (st, body.as_str()) == (200, "ok") {
            allowed.push(format!("{ip}:80"));
        } else {
            assert!(denied(st, &body), "POST {v}: {st} {body}");
        }
    }
    let (_, b) = s.request("GET", "/nacos/v1/ns/instance/list?serviceName=w", "");
    let v: Value = serde_json::from_str(&b).unwrap();
    let mut listed: Vec<String> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{}:{}", h["ip"].as_str().unwrap(), h["port"]))
        .collect();
    listed.sort();
    allowed.sort();
    assert_eq!(listed, allowed, "a write through a refused variant landed");
}
