//! End-to-end check of the `subscribe` scenario against a tiny fake Nacos
//! server on loopback that pushes (gzipped once large) instance lists over
//! UDP after every register and counts the acks it gets back.
//!
//! Bounded: at most 8 connections and 20 s of server lifetime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_bench::http::{Target, DEFAULT_USER_AGENT};
use muster_bench::scenario::Naming;
use muster_bench::stats::ErrorKind;
use muster_bench::subscribe::{self, SubscribeConfig, MARKER_IP};

#[derive(Default)]
struct State {
    subscribers: Vec<u16>,
    hosts: Vec<(String, u16)>,
    pushes: u64,
}

fn param<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let q = target.split_once('?')?.1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn hosts_json(st: &State) -> String {
    let hosts: Vec<String> = st
        .hosts
        .iter()
        .map(|(ip, port)| {
            format!(r#"{{"ip":"{ip}","port":{port},"healthy":true,"metadata":{{}}}}"#)
        })
        .collect();
    format!(
        r#"{{"name":"DEFAULT_GROUP@@x","cacheMillis":10000,"hosts":[{}]}}"#,
        hosts.join(",")
    )
}

fn serve(mut s: TcpStream, state: Arc<Mutex<State>>, udp: Arc<UdpSocket>, deadline: Instant) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_string();
            pending.drain(..end + 4);
            let line = head.lines().next().unwrap_or("");
            let mut parts = line.split(' ');
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let body = if method == "GET" {
                let mut st = state.lock().unwrap();
                if let Some(p) = param(target, "udpPort").and_then(|p| p.parse().ok()) {
                    if !st.subscribers.contains(&p) {
                        st.subscribers.push(p);
                    }
                }
                hosts_json(&st)
            } else {
                let ip = param(target, "ip").unwrap_or("").to_string();
                let port: u16 = param(target, "port")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let mut st = state.lock().unwrap();
                st.hosts.push((ip, port));
                // Push to every subscriber (before answering, like a fast server).
                let data = hosts_json(&st);
                st.pushes += 1;
                let pkt = serde_json::json!({"type":"dom","data":data,"lastRefTime":912345678901234567u64 + st.pushes})
                    .to_string()
                    .into_bytes();
                let pkt = if pkt.len() >= 1024 {
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(&pkt).unwrap();
                    gz.finish().unwrap()
                } else {
                    pkt
                };
                for p in &st.subscribers {
                    let _ = udp.send_to(&pkt, ("127.0.0.1", *p));
                }
                "ok".to_string()
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

#[test]
fn subscribe_measures_push_latency_and_acks() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    udp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let state = Arc::new(Mutex::new(State::default()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (st2, udp2) = (state.clone(), udp.clone());
    std::thread::spawn(move || {
        for s in listener.incoming().take(8) {
            let Ok(s) = s else { break };
            let (st, udp) = (st2.clone(), udp2.clone());
            std::thread::spawn(move || serve(s, st, udp, deadline));
            if Instant::now() >= deadline {
                break;
            }
        }
    });
    let acks = Arc::new(AtomicU64::new(0));
    let (acks2, udp3) = (acks.clone(), udp.clone());
    let ack_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok((n, _)) = udp3.recv_from(&mut buf) {
                let s = String::from_utf8_lossy(&buf[..n]);
                assert!(
                    s.starts_with(r#"{"type":"push-ack","lastRefTime":"9123456789012345"#),
                    "{s}"
                );
                if acks2.fetch_add(1, Ordering::Relaxed) + 1 >= 60 {
                    break;
                }
            }
        }
    });

    let naming = Naming {
        target: Target::parse(&format!("http://{addr}")).unwrap(),
        user_agent: DEFAULT_USER_AGENT.into(),
        prefix: "t".into(),
        ip_octet: 10,
        ephemeral: true,
    };
    let cfg = SubscribeConfig {
        naming,
        marker_ip: MARKER_IP.into(),
        subscribers: 3,
        write_rate: 20.0,
        warmup: Duration::from_millis(300),
        duration: Duration::from_millis(1000),
        grace: Duration::from_millis(500),
        resubscribe: Duration::from_millis(500),
        timeout: Duration::from_secs(2),
        progress: None,
    };
    let r = subscribe::run(&cfg).unwrap();
    assert_eq!(r.writes.error_count(), 0, "{:?}", r.writes.errors);
    assert_eq!(r.writes.ok, 20);
    // One sample per write per subscriber, none missing.
    assert_eq!(r.push.ok, 60, "push errors {:?}", r.push.errors);
    assert!(!r.push.errors.contains_key(&ErrorKind::PushMissing));
    assert_eq!(r.datagrams, 60);
    // Later lists exceed 1 KiB, so some pushes were gzipped and still decoded.
    assert!(state.lock().unwrap().hosts.len() >= 20);
    assert!(hosts_json(&state.lock().unwrap()).len() > 1024);
    assert_eq!(r.push_from_send.ok, 60);
    // A push leaves the server after the write reached it: measured from the send, it takes
    // some time.
    let (push, from_send) = (r.push.latency(), r.push_from_send.latency());
    eprintln!(
        "push from ok {push:?}, from send {from_send:?}, {} early",
        r.early
    );
    assert!(from_send.p50 > 0.0, "{from_send:?}");
    // Measured from the write's `ok`, it takes no longer than from the send, sample by sample
    // (the `ok` comes after the send; a datagram that beats the `ok` counts as ~0): every
    // quantile is at most the from-send one.
    for (q, a, b) in [
        ("p50", push.p50, from_send.p50),
        ("p99", push.p99, from_send.p99),
        ("max", push.max, from_send.max),
    ] {
        assert!(
            a <= b,
            "push {q} {a} us from the ok exceeds {b} us from the send: {push:?} vs {from_send:?}"
        );
    }
    // This server pushes before it answers, so most datagrams beat the `ok` and the median
    // latency from the `ok` is below the median from the send.
    assert!(
        push.p50 < from_send.p50,
        "pushes sent before the answer: {push:?} vs {from_send:?} ({} early)",
        r.early
    );
    ack_thread.join().unwrap();
    assert_eq!(acks.load(Ordering::Relaxed), 60);
    let markers = state
        .lock()
        .unwrap()
        .hosts
        .iter()
        .filter(|(ip, _)| ip == MARKER_IP)
        .count();
    assert_eq!(markers, 20); // setup is not run here: just the 20 writes
}
