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
