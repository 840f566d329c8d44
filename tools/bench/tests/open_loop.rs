//! Open-loop latency must be measured from intended send times: against a
//! server that serves one request at a time and takes 50 ms each, a rate far
//! above 20 req/s must report latencies far above 50 ms (queueing counted),
//! while closed loop reports about the service time.
//!
//! Only loopback traffic; every loop is bounded in count and time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use muster_bench::engine::{self, Check, EngineConfig, OpSpec, Req, Workload};
use muster_bench::http::Target;

const SERVICE_TIME: Duration = Duration::from_millis(50);
/// Hard cap on how long a test server lives.
const SERVER_LIFETIME: Duration = Duration::from_secs(20);
/// Hard cap on requests a test server answers.
const MAX_REQUESTS: u64 = 1000;

struct SlowServer {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl SlowServer {
    /// Serves connections one after another, each request serially, sleeping
    /// SERVICE_TIME before answering `ok`.
    fn start() -> SlowServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (served2, stop2) = (served.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + SERVER_LIFETIME;
            while Instant::now() < deadline && !stop2.load(Ordering::Relaxed) {
                let mut s = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut buf = [0u8; 4096];
                let mut pending = Vec::new();
                while Instant::now() < deadline
                    && !stop2.load(Ordering::Relaxed)
                    && served2.load(Ordering::Relaxed) < MAX_REQUESTS
                {
                    // Answer every complete request head already received.
                    if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        std::thread::sleep(SERVICE_TIME);
                        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .is_err()
                        {
                            break;
                        }
                        served2.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                }
            }
        });
        SlowServer {
            addr,
            served,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for SlowServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn workload(addr: SocketAddr) -> Workload {
    let t = Target::parse(&format!("http://{addr}")).unwrap();
    Workload {
        ops: vec![OpSpec {
            name: "slow".into(),
            check: Check::Ok,
        }],
        per_conn: vec![vec![Req {
            bytes: t.request(
                "POST",
                "/nacos/v1/ns/instance?serviceName=s&ip=10.0.0.1&port=1",
                "test",
            ),
            op: 0,
        }]],
    }
}

fn config(addr: SocketAddr, rate: Option<f64>) -> EngineConfig {
    EngineConfig {
        addr,
        threads: 1,
        warmup: Duration::ZERO,
        duration: Duration::from_millis(1000),
        rate,
        timeout: Duration::from_millis(1000),
        progress: None,
    }
}

#[test]
fn closed_loop_reports_service_time() {
    let server = SlowServer::start();
    let started = Instant::now();
    let r = engine::run(&config(server.addr, None), workload(server.addr));
    assert!(started.elapsed() < Duration::from_secs(5));
    let l = r.total.latency();
    eprintln!("closed loop: ok {} {l:?}", r.total.ok);
    assert_eq!(r.total.error_count(), 0, "{:?}", r.total.errors);
    // ~20 requests in 1 s at 50 ms each.
    assert!((10..=25).contains(&r.total.ok), "ok = {}", r.total.ok);
    assert!(
        l.p50 >= 45_000.0 && l.p50 < 80_000.0,
        "closed-loop p50 {} us",
        l.p50
    );
    assert!(l.max < 150_000.0, "closed-loop max {} us", l.max);
    assert!(server.served.load(Ordering::Relaxed) <= MAX_REQUESTS);
}

#[test]
fn open_loop_counts_queueing_delay() {
    let server = SlowServer::start();
    let started = Instant::now();
    // 100 req/s against a server that can do 20 req/s, for 1 s (+1 s drain).
    let r = engine::run(&config(server.addr, Some(100.0)), workload(server.addr));
    assert!(started.elapsed() < Duration::from_secs(5));
    let l = r.total.latency();
    eprintln!(
        "open loop 100/s: ok {} errors {:?} {l:?}",
        r.total.ok, r.total.errors
    );
    // About 40 requests get served within the window plus the drain period.
    assert!(r.total.ok >= 20, "ok = {}", r.total.ok);
    // Queueing delay grows linearly: the median waits hundreds of ms and the
    // worst about a second, far beyond the 50 ms service time.
    assert!(
        l.p50 > 300_000.0,
        "open-loop p50 {} us should include queueing",
        l.p50
    );
    assert!(
        l.max > 700_000.0,
        "open-loop max {} us should include queueing",
        l.max
    );
    // The requests scheduled in the window that never went out are reported.
    let backlog = r
        .total
        .errors
        .get(&muster_bench::stats::ErrorKind::Backlog)
        .copied()
        .unwrap_or(0);
    assert!(
        backlog >= 30,
        "backlog = {backlog}, errors {:?}",
        r.total.errors
    );
    assert_eq!(r.total.requests(), r.total.ok + backlog);
    // Every request scheduled in the window is accounted for.
    assert!(
        (95..=101).contains(&r.total.requests()),
        "requests = {}",
        r.total.requests()
    );
}

#[test]
fn open_loop_below_capacity_reports_service_time() {
    let server = SlowServer::start();
    // 10 req/s against 20 req/s capacity: no queueing, latency ~ service time.
    let r = engine::run(&config(server.addr, Some(10.0)), workload(server.addr));
    let l = r.total.latency();
    assert_eq!(r.total.error_count(), 0, "{:?}", r.total.errors);
    assert!((8..=11).contains(&r.total.ok), "ok = {}", r.total.ok);
    assert!(l.p50 >= 45_000.0 && l.p50 < 80_000.0, "p50 {} us", l.p50);
}
