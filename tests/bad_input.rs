//! Hostile and malformed requests: each gets a 4xx (or a closed connection for bytes that are
//! not HTTP at all), nothing changes, and the server stays healthy.

mod common;

use common::Server;

fn state(s: &Server) -> String {
    let (st, b) = s.request("GET", "/nacos/v1/ns/instance/list?serviceName=keep", "");
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let (_, svc) = s.request(
        "GET",
        "/nacos/v1/ns/service/list?pageNo=1&pageSize=1000&groupName=*",
        "",
    );
    format!("{} {}", v["hosts"], svc)
}

#[test]
fn malformed_requests_get_4xx_and_change_nothing() {
    let s = Server::start(&["--shards", "2", "--max-body-bytes", "4096"]);
    let (st, _) = s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=keep&ip=1.1.1.1&port=1",
        "",
    );
    assert_eq!(st, 200);
    let before = state(&s);

    let big_body = format!(
        "serviceName=x&ip=1.1.1.1&port=1&metadata={}",
        "a".repeat(8000)
    );
    let big_header = "x".repeat(40_000);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("invalid UTF-8 in query", b"POST /nacos/v1/ns/instance?serviceName=%ff%fe&ip=1.1.1.1&port=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("raw invalid UTF-8 in form", [&b"POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 34\r\n\r\nserviceName=\xff\xfe&ip=1.1.1.1&port=1"[..]].concat(), 400),
        ("NUL byte", b"POST /nacos/v1/ns/instance?serviceName=a%00b&ip=1.1.1.1&port=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("NUL in ip", b"POST /nacos/v1/ns/instance?serviceName=ab&ip=1.1.1.1%00&port=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("broken chunking", b"POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nzz\r\nserviceName=x\r\n0\r\n\r\n".to_vec(), 400),
        ("body over the cap (declared)", format!("POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{big_body}", big_body.len()).into_bytes(), 413),
        ("body over the cap (chunked)", format!("POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n{:x}\r\n{big_body}\r\n0\r\n\r\n", big_body.len()).into_bytes(), 413),
        ("header over the cap", format!("GET /nacos/v1/ns/instance/list?serviceName=keep HTTP/1.1\r\nHost: x\r\nX-Big: {big_header}\r\n\r\n").into_bytes(), 431),
        ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n".to_vec(), 400),
        ("bad method token", b"G@T /nacos/v1/ns/instance/list HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("huge port", b"POST /nacos/v1/ns/instance?serviceName=x&ip=1.1.1.1&port=99999999999 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("negative weight", b"POST /nacos/v1/ns/instance?serviceName=x&ip=1.1.1.1&port=1&weight=-0.5 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("NaN weight", b"POST /nacos/v1/ns/instance?serviceName=x&ip=1.1.1.1&port=1&weight=NaN HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("metadata JSON array", b"POST /nacos/v1/ns/instance?serviceName=x&ip=1.1.1.1&port=1&metadata=%5B1%2C2%5D HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("nested metadata", b"POST /nacos/v1/ns/instance?serviceName=x&ip=1.1.1.1&port=1&metadata=%7B%22a%22%3A%7B%7D%7D HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("beat JSON not an object", b"PUT /nacos/v1/ns/instance/beat?serviceName=x&beat=%5B%5D HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("beat with a bad port", b"PUT /nacos/v1/ns/instance/beat?serviceName=x&beat=%7B%22ip%22%3A%221.1.1.1%22%2C%22port%22%3A-4%7D HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("service name with spaces", b"POST /nacos/v1/ns/instance?serviceName=a+b&ip=1.1.1.1&port=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("overlong service name", format!("POST /nacos/v1/ns/instance?serviceName={}&ip=1.1.1.1&port=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "s".repeat(600)).into_bytes(), 400),
        ("overlong namespace", format!("POST /nacos/v1/ns/instance?serviceName=x&namespaceId={}&ip=1.1.1.1&port=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "n".repeat(100)).into_bytes(), 400),
        ("ip with a space", b"POST /nacos/v1/ns/instance?serviceName=x&ip=1.1.1.1+2&port=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("too many parameters", format!("POST /nacos/v1/ns/instance?{}serviceName=x&ip=1.1.1.1&port=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "a=1&".repeat(300)).into_bytes(), 400),
        ("protect threshold out of range", b"POST /nacos/v1/ns/service?serviceName=x&protectThreshold=7 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("bad selector", b"POST /nacos/v1/ns/service?serviceName=x&selector=%7Bnope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
        ("bad checker", b"PUT /nacos/v1/ns/cluster?serviceName=keep&clusterName=DEFAULT&checkPort=1&useInstancePort4Check=true&healthChecker=%7B%22type%22%3A%22X%22%7D HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400),
    ];
    for (name, raw, want) in &cases {
        let (st, body) = s.raw(raw);
        assert_eq!(
            st,
            *want,
            "{name}: got {st} {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(state(&s), before, "a rejected request changed state");
    assert_eq!(
        s.request("GET", "/nacos/v1/console/health/liveness", ""),
        (200, "OK".into())
    );
}

#[test]
fn truncated_and_random_bytes_never_kill_the_server() {
    let s = Server::start(&["--shards", "2"]);
    let full = b"POST /nacos/v1/ns/instance?serviceName=t&ip=1.1.1.1&port=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcdefghij";
    // Every prefix of a valid request, then a deterministic pseudo-random byte soup.
    for cut in 0..full.len() {
        let _ = s.raw(&full[..cut]);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200 {
        let mut buf = Vec::with_capacity(256);
        for _ in 0..256 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.push((x & 0xff) as u8);
        }
        let _ = s.raw(&buf);
    }
    let (st, b) = s.request("GET", "/nacos/v1/ns/instance/list?serviceName=t", "");
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        v["hosts"].as_array().map(Vec::len),
        Some(0),
        "only the full request may register: {b}"
    );
}

#[test]
fn connection_cap_closes_extra_connections() {
    use std::io::{BufReader, ErrorKind, Read, Write};
    use std::time::Duration;
    let s = Server::start(&["--shards", "1", "--max-connections", "4"]);
    // Four keep-alive connections, each answered once: the server has accepted and counts all
    // four (they stay open, idle).
    let held: Vec<_> = (0..4)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(s.addr).unwrap();
            c.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
            c.write_all(b"GET /nacos/v1/console/health/liveness HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let (st, _, _) = common::read_response(&mut BufReader::new(c.try_clone().unwrap()));
            assert_eq!(st, 200);
            c
        })
        .collect();
    // The 5th is closed by the server without an answer: end of file or a reset, never the
    // client's own read timeout running out.
    let mut fifth = std::net::TcpStream::connect(s.addr).unwrap();
    let timeout = Duration::from_secs(10);
    fifth.set_read_timeout(Some(timeout)).unwrap();
    let _ = fifth.write_all(b"GET /nacos/v1/console/health/liveness HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = Vec::new();
    match fifth.read_to_end(&mut out) {
        Ok(0) => {}
        Ok(n) => panic!(
            "the 5th connection got {n} bytes: {}",
            String::from_utf8_lossy(&out)
        ),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("the 5th connection was left open: no close from the server within {timeout:?}")
        }
        Err(e) => panic!("the 5th connection failed otherwise: {e}"),
    }
    drop(held);
    let mut ok = false;
    for _ in 0..50 {
        if s.request("GET", "/nacos/v1/console/health/liveness", "").0 == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "connections are accepted again once others close");
}
