//! Many services spread over shards, written concurrently from many connections, must read
//! back identically from every connection.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;

/// Most header lines a response head may have.
const MAX_HEAD_LINES: usize = 64;
/// Longest a response head may take to arrive.
const HEAD_WITHIN: Duration = Duration::from_secs(30);

/// A keep-alive HTTP/1.1 connection that sends one request at a time.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(s: &Server) -> Conn {
        let t = TcpStream::connect(s.addr).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        t.set_nodelay(true).unwrap();
        Conn {
            r: BufReader::new(t.try_clone().unwrap()),
            w: t,
        }
    }

    fn send(&mut self, method: &str, path: &str) -> (u16, String) {
        write!(
            self.w,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut line = String::new();
        let n = self.r.read_line(&mut line).unwrap();
        assert!(n > 0, "{method} {path}: the server closed before answering");
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut len = 0usize;
        // Bounded: at most MAX_HEAD_LINES header lines and HEAD_WITHIN for the head; each read
        // is bounded by the socket's read timeout.
        let start = Instant::now();
        let mut ended = false;
        for _ in 0..MAX_HEAD_LINES {
            let mut h = String::new();
            let n = self.r.read_line(&mut h).unwrap();
            assert!(
                n > 0,
                "{method} {path}: the server closed inside the response head"
            );
            if h == "\r\n" {
                ended = true;
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            assert!(
                start.elapsed() < HEAD_WITHIN,
                "{method} {path}: the response head took over {HEAD_WITHIN:?}"
            );
        }
        assert!(
            ended,
            "{method} {path}: no end of the response head after {MAX_HEAD_LINES} lines"
        );
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }
}

#[test]
fn concurrent_writers_read_back_consistently_everywhere() {
    const SERVICES: usize = 40;
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 60;
    let s = Server::start(&["--shards", "2"]);
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let s = &s;
            scope.spawn(move || {
                let mut c = Conn::open(s);
                for i in 0..PER_WRITER {
                    let svc = (w * PER_WRITER + i) % SERVICES;
                    let (st, b) = c.send(
                        "POST",
                        &format!(
                            "/nacos/v1/ns/instance?serviceName=svc-{svc}&ip=10.{w}.{}.{}&port=80",
                            i / 256,
                            i % 256
                        ),
                    );
                    assert_eq!((st, b.as_str()), (200, "ok"));
                    // Read-your-writes on the same connection, whichever shard owns it.
                    let (st, b) = c.send(
                        "GET",
                        &format!("/nacos/v1/ns/instance/list?serviceName=svc-{svc}"),
                    );
                    assert_eq!(st, 200);
                    assert!(
                        b.contains(&format!("\"10.{w}.{}.{}\"", i / 256, i % 256)),
                        "own write missing"
                    );
                }
            });
        }
    });
    // Every connection sees the same, complete state.
    let mut views = Vec::new();
    for _ in 0..6 {
        let mut c = Conn::open(&s);
        let mut total = 0;
        let mut snapshot = Vec::new();
        for svc in 0..SERVICES {
            let (_, b) = c.send(
                "GET",
                &format!("/nacos/v1/ns/instance/list?serviceName=svc-{svc}"),
            );
            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
            let ips = common::host_ips(&v);
            total += ips.len();
            snapshot.push(ips);
        }
        assert_eq!(total, WRITERS * PER_WRITER);
        views.push(snapshot);
    }
    assert!(views.windows(2).all(|w| w[0] == w[1]));
    let (_, b) = s.request("GET", "/nacos/v1/ns/operator/metrics", "");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["serviceCount"], SERVICES);
    assert_eq!(v["instanceCount"], WRITERS * PER_WRITER);
    // Both shards own services and writes crossed between them.
    let (_, m) = s.request("GET", "/metrics", "");
    for shard in 0..2 {
        let line = m
            .lines()
            .find(|l| l.starts_with(&format!("muster_services{{shard=\"{shard}\"}}")))
            .unwrap();
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n > 5, "shard {shard} owns too few services: {line}");
    }
}
