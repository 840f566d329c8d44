//! Health probes of persistent instances against real local listeners: a TCP port that goes
//! away and comes back, and an HTTP endpoint that answers 503 then 200. Also manual health for
//! the NONE checker.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

/// How long a flip may take: first probe within 7 s, then three probes about a second apart.
const FLIP_WITHIN: Duration = Duration::from_secs(20);

fn health(s: &Server, svc: &str, port: u16) -> Option<bool> {
    let (st, b) = s.request(
        "GET",
        &format!("/nacos/v1/ns/instance?serviceName={svc}&ip=127.0.0.1&port={port}"),
        "",
    );
    if st != 200 {
        return None;
    }
    serde_json::from_str::<Value>(&b).ok()?["healthy"].as_bool()
}

fn wait_health(s: &Server, svc: &str, port: u16, want: bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < FLIP_WITHIN {
        if health(s, svc, port) == Some(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn tcp_probe_flips_on_refused_and_recovers_after_three_oks() {
    let s = Server::start(&["--shards", "2"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener); // refused from now on
    let (st, _) = s.request(
        "POST",
        &format!(
            "/nacos/v1/ns/instance?serviceName=tcpdb&ip=127.0.0.1&port={port}&ephemeral=false"
        ),
        "",
    );
    assert_eq!(st, 200);
    assert_eq!(health(&s, "tcpdb", port), Some(true), "registered healthy");
    assert!(
        wait_health(&s, "tcpdb", port, false),
        "a refused connect flips it unhealthy at once"
    );
    let back = TcpListener::bind(("127.0.0.1", port)).expect("rebind the probed port");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    back.set_nonblocking(true).unwrap();
    let acceptor = std::thread::spawn(move || {
        // Bounded: until told to stop, at most 60 s.
        let start = Instant::now();
        while !stop2.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
            let _ = back.accept();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    assert!(
        wait_health(&s, "tcpdb", port, true),
        "three OKs bring it back"
    );
    stop.store(true, Ordering::Relaxed);
    acceptor.join().unwrap();
    // Only `healthy` changed.
    let (_, b) = s.request("GET", "/nacos/v1/ns/instance/list?serviceName=tcpdb", "");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["hosts"][0]["weight"], 1.0);
    assert_eq!(v["hosts"][0]["ephemeral"], false);
}

#[test]
fn http_probe_follows_status_codes() {
    let s = Server::start(&["--shards", "2"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = Arc::new(AtomicU16::new(503));
    let stop = Arc::new(AtomicBool::new(false));
    let (code2, stop2) = (code.clone(), stop.clone());
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        // Bounded: until told to stop, at most 60 s.
        let start = Instant::now();
        while !stop2.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
            match listener.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    let mut buf = [0u8; 1024];
                    let n = c.read(&mut buf).unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let st = if req.starts_with("GET /health ") {
                        code2.load(Ordering::Relaxed)
                    } else {
                        404
                    };
                    let _ = write!(
                        c,
                        "HTTP/1.1 {st} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let (st, _) = s.request(
        "POST",
        &format!(
            "/nacos/v1/ns/instance?serviceName=httpdb&ip=127.0.0.1&port={port}&ephemeral=false"
        ),
        "",
    );
    assert_eq!(st, 200);
    let checker =
        "%7B%22type%22%3A%22HTTP%22%2C%22path%22%3A%22%2Fhealth%22%2C%22headers%22%3A%22%22%7D";
    let (st, b) = s.request("PUT", &format!("/nacos/v1/ns/cluster?serviceName=httpdb&clusterName=DEFAULT&checkPort=80&useInstancePort4Check=true&healthChecker={checker}"), "");
    assert_eq!((st, b.as_str()), (200, "ok"));
    assert!(
        wait_health(&s, "httpdb", port, false),
        "three 503s flip it unhealthy"
    );
    code.store(200, Ordering::Relaxed);
    assert!(
        wait_health(&s, "httpdb", port, true),
        "three 200s flip it back"
    );
    code.store(500, Ordering::Relaxed);
    assert!(
        wait_health(&s, "httpdb", port, false),
        "an unexpected status flips it at once"
    );
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

/// Longest first-probe delay after an instance appears (2–7 s, `probe::Prober::track`).
const FIRST_PROBE_MAX: Duration = Duration::from_secs(7);

#[test]
fn manual_health_needs_the_none_checker() {
    let s = Server::start(&["--shards", "2"]);
    // The instance's port listens and counts connections: a TCP probe of it would succeed (and
    // three of them would make the instance healthy again), so a probe that runs is seen.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let connections = Arc::new(AtomicU16::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let (connections, stop) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: until told to stop, at most 60 s.
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                match listener.accept() {
                    Ok(_) => {
                        connections.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    let registered = Instant::now();
    let (st, _) = s.request(
        "POST",
        &format!(
            "/nacos/v1/ns/instance?serviceName=manual&ip=127.0.0.1&port={port}&ephemeral=false"
        ),
        "",
    );
    assert_eq!(st, 200);
    let (st, b) = s.request(
        "PUT",
        &format!(
            "/nacos/v1/ns/health/instance?serviceName=manual&ip=127.0.0.1&port={port}&healthy=false"
        ),
        "",
    );
    assert_eq!(
        (st, b.as_str()),
        (
            400,
            "caused: health check is still working, service: DEFAULT_GROUP@@manual;"
        )
    );
    let none = "%7B%22type%22%3A%22NONE%22%7D";
    assert_eq!(s.request("PUT", &format!("/nacos/v1/ns/cluster?serviceName=manual&clusterName=DEFAULT&checkPort=80&useInstancePort4Check=true&healthChecker={none}"), "").0, 200);
    assert_eq!(
        s.request(
            "PUT",
            &format!("/nacos/v1/ns/health/instance?serviceName=manual&ip=127.0.0.1&port={port}&healthy=false"),
            ""
        )
        .0,
        200
    );
    assert_eq!(health(&s, "manual", port), Some(false));
    // From now on the checker is NONE: no connection may arrive. (The first probe is due 2 s or
    // more after the register, so normally none came before either.)
    let before = connections.load(Ordering::SeqCst);
    // Watch until every probe the instance would have had is due, and then some: the first
    // at most 7 s after the register, then about one a second.
    let watch_until = registered + FIRST_PROBE_MAX + Duration::from_secs(3);
    for _ in 0..200 {
        if Instant::now() >= watch_until {
            break;
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            before,
            "no probe runs for NONE: the instance's port was connected to"
        );
        assert_eq!(
            health(&s, "manual", port),
            Some(false),
            "no probe runs for NONE: health changed from what was set by hand"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        Instant::now() >= watch_until,
        "the watch ended before every probe would have been due"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        before,
        "no probe runs for NONE: the instance's port was connected to"
    );
    assert_eq!(
        health(&s, "manual", port),
        Some(false),
        "health stays as set"
    );
    stop.store(true, Ordering::Relaxed);
    acceptor.join().unwrap();
}
