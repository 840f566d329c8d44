//! Hostile and malformed requests: each gets a 4xx (or a closed connection for bytes that are
//! not HTTP at all), nothing changes, and the server stays healthy.

mod common;

use common::cs::{self, export, get, import, publish, send, zip_of, CS};
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
    // Four keep-alive connections from four addresses (so only the total cap applies: one
    // address would get three, its share once the cap is near), each answered once: the
    // server has accepted and counts all four (they stay open, idle).
    let held: Vec<_> = (0..4u8)
        .map(|i| {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 10 + i], 0)).into())
                .unwrap();
            sock.connect(&s.addr.into()).unwrap();
            let mut c = std::net::TcpStream::from(sock);
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

/// A metadata JSON object with `keys` distinct keys (hex, so 100k keys stay under 1 MiB).
fn wide_metadata(keys: usize) -> String {
    let mut m = String::with_capacity(keys * 10 + 2);
    m.push('{');
    for i in 0..keys {
        if i > 0 {
            m.push(',');
        }
        m.push_str(&format!("\"{i:x}\":0"));
    }
    m.push('}');
    m
}

/// A form POST/PUT of `form` (sent unencoded: `{`, `"`, `:` and `,` need no escaping in our
/// form parser, so a 1 MB metadata stays 1 MB on the wire).
fn form(method: &str, path: &str, form: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .into_bytes()
}

/// Issue 17's bad-input table: CPU-amplifying metadata (80k and 100k keys, deep nesting) on
/// every endpoint that takes metadata or JSON, transfer codings, and misspelled ips. Each row
/// is a 4xx, nothing changes, and the server stays healthy (deep nesting never overflows a
/// stack).
#[test]
fn hostile_payloads_get_4xx_and_change_nothing() {
    let s = Server::start(&["--shards", "2"]);
    let (st, _) = s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=keep&ip=1.1.1.1&port=1",
        "",
    );
    assert_eq!(st, 200);
    let before = state(&s);
    let m80k = wide_metadata(80_000);
    let m100k = wide_metadata(100_000);
    assert!(m100k.len() < 1 << 20, "under the default body cap");
    let deep = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let deep_small = format!("{}1{}", "{\"a\":".repeat(3000), "}".repeat(3000));
    let arrays = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let inst = "serviceName=keep&ip=1.1.1.1&port=1&metadata=";
    let svc = "serviceName=hostile&metadata=";
    let beat = |m: &str| {
        format!("serviceName=keep&beat={{\"ip\":\"1.1.1.1\",\"port\":1,\"metadata\":{m}}}")
    };
    let te = |codings: &str| {
        format!("POST /nacos/v1/ns/instance HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: {codings}\r\n\r\n5\r\nab=cd\r\n0\r\n\r\n").into_bytes()
    };
    let ip = |ip: &str| {
        form(
            "POST",
            "/nacos/v1/ns/instance",
            &format!("serviceName=keep&port=2&ip={ip}"),
        )
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("register, 80k-key metadata", form("POST", "/nacos/v1/ns/instance", &format!("{inst}{m80k}")), 400),
        ("register, 100k-key metadata", form("POST", "/nacos/v1/ns/instance", &format!("{inst}{m100k}")), 400),
        ("register, metadata nested 100k deep", form("POST", "/nacos/v1/ns/instance", &format!("{inst}{deep}")), 400),
        ("register, metadata nested 3000 deep", form("POST", "/nacos/v1/ns/instance", &format!("{inst}{deep_small}")), 400),
        ("update, 80k-key metadata", form("PUT", "/nacos/v1/ns/instance", &format!("{inst}{m80k}")), 400),
        ("patch, 80k-key metadata", form("PATCH", "/nacos/v1/ns/instance", &format!("{inst}{m80k}")), 400),
        ("beat, 80k-key metadata", form("PUT", "/nacos/v1/ns/instance/beat", &beat(&m80k)), 400),
        ("beat, nested 100k deep", form("PUT", "/nacos/v1/ns/instance/beat", &beat(&deep)), 400),
        ("beat, arrays nested 3000 deep", form("PUT", "/nacos/v1/ns/instance/beat", &beat(&"[".repeat(3000))), 400),
        ("metadata batch, 80k keys", form("PUT", "/nacos/v1/ns/instance/metadata/batch", &format!("serviceName=keep&instances=[]&metadata={m80k}")), 400),
        ("metadata batch, instances nested 200k deep", form("PUT", "/nacos/v1/ns/instance/metadata/batch", &format!("serviceName=keep&metadata={{}}&instances={arrays}")), 400),
        ("POST /service, 80k-key metadata", form("POST", "/nacos/v1/ns/service", &format!("{svc}{m80k}")), 400),
        ("POST /service, 100k-key metadata", form("POST", "/nacos/v1/ns/service", &format!("{svc}{m100k}")), 400),
        ("POST /service, metadata nested 100k deep", form("POST", "/nacos/v1/ns/service", &format!("{svc}{deep}")), 400),
        ("POST /service, selector nested 200k deep", form("POST", "/nacos/v1/ns/service", &format!("serviceName=hostile&selector={arrays}")), 400),
        ("PUT /service, 80k-key metadata", form("PUT", "/nacos/v1/ns/service", &format!("serviceName=keep&protectThreshold=0&{}", &format!("metadata={m80k}"))), 400),
        ("PUT /service, metadata nested 3000 deep", form("PUT", "/nacos/v1/ns/service", &format!("serviceName=keep&protectThreshold=0&metadata={deep_small}")), 400),
        ("PUT /cluster, checker nested 200k deep", form("PUT", "/nacos/v1/ns/cluster", &format!("serviceName=keep&clusterName=DEFAULT&checkPort=1&useInstancePort4Check=true&healthChecker={arrays}")), 400),
        ("PUT /cluster, 80k-key metadata", form("PUT", "/nacos/v1/ns/cluster", &format!("serviceName=keep&clusterName=DEFAULT&checkPort=1&useInstancePort4Check=true&healthChecker={{\"type\":\"TCP\"}}&metadata={m80k}")), 400),
        ("Transfer-Encoding: gzip, chunked", te("gzip, chunked"), 501),
        ("Transfer-Encoding: chunked, chunked", te("chunked, chunked"), 400),
        ("Transfer-Encoding: chunked then chunked", te("chunked\r\nTransfer-Encoding: chunked"), 400),
        ("ip 1.2.3.4.5", ip("1.2.3.4.5"), 400),
        ("ip 1.2.3.4:80", ip("1.2.3.4:80"), 400),
        ("ip a#b", ip("a%23b"), 400),
    ];
    for (name, raw, want) in &cases {
        let started = std::time::Instant::now();
        let (st, body) = s.raw(raw);
        // Reported, not asserted (timing depends on the machine): each row costs about its
        // transfer time, not a parse of the whole payload.
        eprintln!("{name}: {st} in {:?}", started.elapsed());
        assert_eq!(
            st,
            *want,
            "{name}: got {st} {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    assert_eq!(state(&s), before, "a rejected request changed state");
    assert_eq!(
        s.request("GET", "/nacos/v1/console/health/liveness", ""),
        (200, "OK".into())
    );
}

/// Issue 17: two clients looping 80k-key registers (1 MB each) must not starve an unrelated
/// list client on the same shard. Before the fix each such request cost ~0.4 s of shard CPU
/// in a release build (seconds in a debug one) and list p50 went from 0.5 ms to 384 ms.
///
/// The project forbids timed assertions in general; this one is kept because latency is the
/// property under test, with a bound (1 s p99) hundreds of times what a debug build on a loaded
/// 2-core machine shows (p99 about 2 ms) and far below what the unfixed server gives (seconds
/// per attacker request in a debug build), so it does not flake on load yet still catches the
/// regression. The release figure, against the 10 ms, is in perf/ANALYSIS.md.
#[test]
fn a_looping_metadata_attacker_does_not_starve_lists() {
    use std::io::{BufReader, Write};
    let s = Server::start(&["--shards", "1"]);
    for i in 0..10 {
        let (st, _) = s.request(
            "POST",
            &format!("/nacos/v1/ns/instance?serviceName=victim&ip=10.0.0.{i}&port=80"),
            "",
        );
        assert_eq!(st, 200);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attack = form(
        "POST",
        "/nacos/v1/ns/instance",
        &format!(
            "serviceName=a&ip=1.1.1.1&port=1&metadata={}",
            wide_metadata(80_000)
        ),
    );
    let attackers: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop, attack) = (s.addr, stop.clone(), attack.clone());
            std::thread::spawn(move || {
                let mut sent = 0u32;
                let t = std::net::TcpStream::connect(addr).unwrap();
                t.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
                let mut r = BufReader::new(t.try_clone().unwrap());
                let mut w = t;
                // Bounded: at most 2000 requests, and the list client stops us.
                while sent < 2000 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    w.write_all(&attack).unwrap();
                    let (st, _, _) = common::read_response(&mut r);
                    assert_eq!(st, 400);
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let t = std::net::TcpStream::connect(s.addr).unwrap();
    t.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    t.set_nodelay(true).unwrap();
    let mut r = BufReader::new(t.try_clone().unwrap());
    let mut w = t;
    let mut lat = Vec::with_capacity(1000);
    let list = b"GET /nacos/v1/ns/instance/list?serviceName=victim HTTP/1.1\r\nHost: x\r\n\r\n";
    let started = std::time::Instant::now();
    // Bounded: 1000 lists or 20 s, whichever comes first.
    while lat.len() < 1000 && started.elapsed() < std::time::Duration::from_secs(20) {
        let at = std::time::Instant::now();
        w.write_all(list).unwrap();
        let (st, _, body) = common::read_response(&mut r);
        lat.push(at.elapsed());
        assert_eq!(st, 200);
        assert!(body.contains("10.0.0.9"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: u32 = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    eprintln!(
        "lists: {} in {:?}, p50 {:?}, p99 {:?}, max {:?}; attacker requests refused meanwhile: {sent}",
        lat.len(),
        started.elapsed(),
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
    assert!(sent > 0, "the attackers ran");
    assert!(
        p(0.99) < std::time::Duration::from_secs(1),
        "list p99 {:?} under attack",
        p(0.99)
    );
}

/// What a bad config request must leave unchanged: the config's content and its history.
fn config_snapshot(s: &Server) -> (String, String, String) {
    let c = get(s, &[("dataId", "keep"), ("group", "G")]);
    let h = send(
        s,
        "GET",
        "/nacos/v1/cs/history?search=accurate&dataId=keep&group=G",
        &[],
        "",
    );
    let all = send(
        s,
        "GET",
        &format!("{CS}?search=accurate&pageNo=1&pageSize=500"),
        &[],
        "",
    );
    (c.body, h.body, all.body)
}

#[test]
fn config_bad_input_gets_4xx_and_changes_nothing() {
    let s = Server::start(&["--shards", "2", "--max-body-bytes", "33554432"]);
    publish(&s, &[("dataId", "keep"), ("group", "G"), ("content", "v1")]);
    let before = config_snapshot(&s);
    let ten_mib_plus_one = "a".repeat((10 << 20) + 1);
    let many_keys: String = (0..10_001).map(|i| format!("d{i}\x02G\x02m\x01")).collect();
    let long_id = "k".repeat(256);
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "over-long dataId",
            "POST",
            cs::form(&[("dataId", &long_id), ("group", "G"), ("content", "x")]),
            "too long dataId, over 255",
        ),
        (
            "illegal dataId",
            "POST",
            cs::form(&[("dataId", "a/b"), ("group", "G"), ("content", "x")]),
            "invalid dataId : a/b",
        ),
        (
            "illegal dataId over keep",
            "POST",
            cs::form(&[("dataId", "keep?"), ("group", "G"), ("content", "x")]),
            "invalid dataId : keep?",
        ),
        (
            "illegal group",
            "POST",
            cs::form(&[("dataId", "keep"), ("group", "G G"), ("content", "x")]),
            "invalid group : G G",
        ),
        (
            "blank content",
            "POST",
            cs::form(&[("dataId", "keep"), ("group", "G"), ("content", "  \n ")]),
            "content is blank",
        ),
        (
            "missing content",
            "POST",
            cs::form(&[("dataId", "keep"), ("group", "G")]),
            "Required String parameter 'content' is not present",
        ),
        (
            "10 MiB + 1 content",
            "POST",
            cs::form(&[
                ("dataId", "keep"),
                ("group", "G"),
                ("content", &ten_mib_plus_one),
            ]),
            "invalid content, over 10485760",
        ),
        (
            "tag too long",
            "POST",
            cs::form(&[
                ("dataId", "keep"),
                ("group", "G"),
                ("content", "x"),
                ("tag", &"t".repeat(17)),
            ]),
            "too long tag, over 16",
        ),
        (
            "bad tenant",
            "POST",
            cs::form(&[
                ("dataId", "keep"),
                ("group", "G"),
                ("content", "x"),
                ("tenant", "a/b"),
            ]),
            "invalid tenant",
        ),
        (
            "illegal dataId delete",
            "DELETE",
            cs::form(&[("dataId", "a/b"), ("group", "G")]),
            "invalid dataId",
        ),
        (
            "10001 listening keys",
            "LISTEN",
            cs::form(&[("Listening-Configs", &many_keys)]),
            "invalid probeModify",
        ),
        (
            "5-field listening line",
            "LISTEN",
            cs::form(&[("Listening-Configs", "keep\x02G\x02m\x02t\x02x\x01")]),
            "invalid probeModify",
        ),
        (
            "2-field listening line",
            "LISTEN",
            cs::form(&[("Listening-Configs", "keep\x02G\x01")]),
            "invalid probeModify",
        ),
        (
            "blank listening",
            "LISTEN",
            cs::form(&[("Listening-Configs", " ")]),
            "invalid probeModify",
        ),
    ];
    for (name, method, body, want) in &cases {
        let r = match *method {
            "LISTEN" => send(
                &s,
                "POST",
                &format!("{CS}/listener"),
                &[("Long-Pulling-Timeout", "30000")],
                body,
            ),
            "DELETE" => send(&s, "DELETE", &format!("{CS}?{body}"), &[], ""),
            m => send(&s, m, CS, &[], body),
        };
        assert!(
            (400..500).contains(&r.status),
            "{name}: status {} body {:?}",
            r.status,
            r.body
        );
        assert!(
            r.body.contains(want),
            "{name}: body {:?} lacks {want:?}",
            r.body
        );
        assert_eq!(config_snapshot(&s), before, "{name} changed something");
    }
}

/// Broken and hostile import zips: each a 4xx with Nacos's code, and the export unchanged.
#[test]
fn config_bad_zips_get_4xx_and_change_nothing() {
    let b = Server::start(&["--shards", "1"]);
    publish(
        &b,
        &[("dataId", "app.yaml"), ("group", "G"), ("content", "kept")],
    );
    let before = export(&b, "tenant=");
    let cases: Vec<(&str, Vec<u8>, &str, u64)> = vec![
        (
            "broken zip",
            b"PK\x03\x04 this is not a zip".to_vec(),
            "",
            100004,
        ),
        (
            "zip slip",
            zip_of(&[("G/ok", "x"), ("../x", "evil")]),
            "",
            100004,
        ),
        ("absolute path", zip_of(&[("/etc/x", "evil")]), "", 100004),
        (
            "bad metadata",
            zip_of(&[("G/a", "x"), (".meta.yml", "no equals sign")]),
            "",
            100002,
        ),
        ("empty zip", zip_of(&[]), "", 100005),
        (
            "unknown namespace",
            zip_of(&[("G/a", "x")]),
            "namespace=nope",
            100001,
        ),
    ];
    for (name, zip, query, code) in cases {
        let (status, v) = import(&b, query, &zip);
        assert!((400..500).contains(&status), "{name}: {status} {v}");
        assert_eq!(v["code"], code, "{name}: {v}");
        assert_eq!(export(&b, "tenant="), before, "{name} changed something");
    }
    let (status, _) = import(&b, "", &zip_of(&[("G/ok", "x"), ("G/a b", "bad id")]));
    assert_eq!(status, 400, "a bad data id refuses the whole import");
    assert_eq!(export(&b, "tenant="), before);
}
