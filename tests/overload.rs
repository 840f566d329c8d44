//! Row L2 in part: a burst of persistent writes against a full proposal queue. With every fsync
//! held 4 s (`FAILPOINTS=wal::before_sync=sleep(4000)`, a `failpoints` build; startup's syncs
//! too, so the server takes several seconds to become ready) and the queues one deep
//! (`--inbox-capacity 1`), writes that cannot be queued within the 2 s queue wait are answered
//! 503 with `Retry-After`, change nothing, and ephemeral reads keep being served.
//!
//! The 503s follow from the bounds, not from a race: a first write puts the raft thread into a
//! 4 s sync; half a second later the others arrive, one fits in the queue and the rest wait out
//! the 2 s queue wait while the sync still holds. No assertion is on time.

mod common;

use std::collections::BTreeSet;
use std::io::{BufReader, Write};
use std::net::TcpStream;

use common::{read_response, Server, IO_TIMEOUT};
use serde_json::Value;

/// Concurrent writers in the burst, after the first.
const WRITERS: u32 = 12;
/// How long a writer waits for its answer.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An answer: status, lower-cased header lines, body.
type Answer = (u16, Vec<String>, String);

/// One persistent register of `ip`.
fn register(s: &Server, ip: &str) -> Answer {
    let mut c = TcpStream::connect_timeout(&s.addr, IO_TIMEOUT).unwrap();
    // Two held syncs and the queue wait fit well inside this.
    c.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let req = format!(
        "POST /nacos/v1/ns/instance?serviceName=burst&ip={ip}&port=80&ephemeral=false HTTP/1.1\r\n\
         Host: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    c.write_all(req.as_bytes()).unwrap();
    read_response(&mut BufReader::new(c))
}

#[test]
fn a_write_burst_on_a_full_queue_gets_503_with_retry_after_and_changes_nothing() {
    let s = Server::start_with_env(
        &["--shards", "2", "--inbox-capacity", "1"],
        &[("FAILPOINTS", "wal::before_sync=sleep(4000)")],
    );
    let (st, _) = s.request(
        "POST",
        "/nacos/v1/ns/instance?serviceName=reads&ip=127.0.0.1&port=80",
        "",
    );
    assert_eq!(st, 200);
    let answers: Vec<(String, Answer)> = std::thread::scope(|scope| {
        let first = scope.spawn(|| ("127.0.3.100".to_string(), register(&s, "127.0.3.100")));
        // The first write's sync is under way well before the burst: a head start, not an
        // assertion.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let mut handles: Vec<_> = (0..WRITERS)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let ip = format!("127.0.3.{}", i + 1);
                    let a = register(s, &ip);
                    (ip, a)
                })
            })
            .collect();
        // Ephemeral reads are served while the writers wait on the held sync.
        for _ in 0..5 {
            let (st, b) = s.request("GET", "/nacos/v1/ns/instance/list?serviceName=reads", "");
            assert_eq!(st, 200, "{b}");
        }
        handles.push(first);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut acked = BTreeSet::new();
    let mut busy = 0;
    for (ip, (st, headers, body)) in &answers {
        match st {
            200 => {
                assert_eq!(body, "ok");
                acked.insert(format!("{ip}:80"));
            }
            503 => {
                busy += 1;
                assert!(
                    headers.iter().any(|h| h == "retry-after: 1"),
                    "503 without Retry-After: {headers:?}"
                );
                assert!(body.contains("busy"), "{body}");
            }
            other => panic!("{ip}: {other} {body}"),
        }
    }
    eprintln!("{} accepted, {busy} refused with 503", acked.len());
    assert!(busy > 0, "no write was refused: {answers:?}");
    assert!(!acked.is_empty(), "no write was accepted");
    let (st, b) = s.request(
        "GET",
        "/nacos/v1/ns/instance/list?serviceName=burst&healthyOnly=false",
        "",
    );
    assert_eq!(st, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    let listed: BTreeSet<String> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{}:{}", h["ip"].as_str().unwrap(), h["port"]))
        .collect();
    assert_eq!(
        listed, acked,
        "a refused write landed, or an accepted one is missing"
    );
}
