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
        stamp: 0,
    }
}

fn config(addr: SocketAddr, rate: Option<f64>) -> EngineConfig {
    EngineConfig {
        addr,
        spread: Vec::new(),
        threads: 1,
        warmup: Duration::ZERO,
        duration: Duration::from_millis(1000),
        rate,
        timeout: Duration::from_millis(1000),
        progress: None,
    }
}

/// Slack for values read back from the latency histogram (3 significant digits: within 0.1%).
const HIST_SLACK: f64 = 1.01;

/// One engine run against its own [`SlowServer`].
struct Measured {
    r: engine::RunResult,
    /// Wall time of `engine::run`.
    elapsed: Duration,
    /// Requests the server answered.
    served: u64,
}

/// Runs one engine per rate (`None`: closed loop), each against its own server, all at the same
/// time, so that relations between them hold whatever the machine's load does to both.
fn measure_together(rates: &[Option<f64>]) -> Vec<Measured> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = rates
            .iter()
            .map(|&rate| {
                scope.spawn(move || {
                    let server = SlowServer::start();
                    let started = Instant::now();
                    let r = engine::run(&config(server.addr, rate), workload(server.addr));
                    let elapsed = started.elapsed();
                    Measured {
                        r,
                        elapsed,
                        served: server.served.load(Ordering::Relaxed),
                    }
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[test]
fn closed_loop_reports_service_time() {
    let m = measure_together(&[None]).pop().unwrap();
    let (r, elapsed) = (&m.r, m.elapsed);
    let l = r.total.latency();
    eprintln!("closed loop: ok {} in {elapsed:?}, {l:?}", r.total.ok);
    assert_eq!(r.total.error_count(), 0, "{:?}", r.total.errors);
    // ~20 requests in 1 s at 50 ms each (at most 1 s / 50 ms, plus the one in flight at the end).
    assert!((10..=25).contains(&r.total.ok), "ok = {}", r.total.ok);
    assert!(
        m.served >= r.total.ok,
        "served {} < ok {}",
        m.served,
        r.total.ok
    );
    assert!(m.served <= MAX_REQUESTS);
    // Every answer took at least the service time.
    assert!(l.p50 >= 45_000.0, "closed-loop p50 {} us", l.p50);
    // Closed loop on one connection: requests run one after another, so their latencies are
    // disjoint slices of the run, each at least the service time. What is measured is service
    // time, never time spent waiting for a turn: the latencies add up to at most the run's
    // wall time, and the slowest plus the others' service times fit in it too.
    let n = r.total.ok as f64;
    assert!(
        l.mean * n <= us(elapsed) * HIST_SLACK,
        "latencies add up to {} us in a {elapsed:?} run",
        l.mean * n
    );
    assert!(
        l.max + (n - 1.0) * us(SERVICE_TIME) <= us(elapsed) * HIST_SLACK,
        "closed-loop max {} us with {} other requests of at least {SERVICE_TIME:?} in {elapsed:?}",
        l.max,
        n - 1.0
    );
}

#[test]
fn open_loop_counts_queueing_delay() {
    // 100 req/s against a server that can do 20 req/s, for 1 s (+1 s drain), next to a closed
    // loop against a server of its own.
    let mut runs = measure_together(&[Some(100.0), None]);
    let closed = runs.pop().unwrap();
    let open = runs.pop().unwrap();
    let r = &open.r;
    let l = r.total.latency();
    let c = closed.r.total.latency();
    eprintln!(
        "open loop 100/s: ok {} errors {:?} {l:?}; closed loop: ok {} {c:?}",
        r.total.ok, r.total.errors, closed.r.total.ok
    );
    // About 40 requests get served within the window plus the drain period.
    assert!(r.total.ok >= 20, "ok = {}", r.total.ok);
    assert!(open.served <= MAX_REQUESTS);
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
    // The same service times measured closed loop are not charged any queueing: under this
    // overload, the open-loop median is many service times above the closed-loop one (about
    // 15x: the k-th request waits behind k others that arrive 5x faster than they are served).
    assert_eq!(
        closed.r.total.error_count(),
        0,
        "{:?}",
        closed.r.total.errors
    );
    assert!(
        l.p50 >= 4.0 * c.p50,
        "open-loop p50 {} us is not far above closed-loop p50 {} us",
        l.p50,
        c.p50
    );
    assert!(
        l.p50 > c.max,
        "open-loop p50 {} us is not above the slowest closed-loop answer {} us",
        l.p50,
        c.max
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
    // 10 req/s against 20 req/s capacity: no queueing, latency ~ service time, as a closed loop
    // against a server of its own measures it at the same time.
    let mut runs = measure_together(&[Some(10.0), None]);
    let closed = runs.pop().unwrap();
    let below = runs.pop().unwrap();
    let r = &below.r;
    let l = r.total.latency();
    let c = closed.r.total.latency();
    eprintln!(
        "open loop 10/s: ok {} {l:?}; closed loop: ok {} {c:?}",
        r.total.ok, closed.r.total.ok
    );
    assert_eq!(r.total.error_count(), 0, "{:?}", r.total.errors);
    assert!((8..=11).contains(&r.total.ok), "ok = {}", r.total.ok);
    assert!(l.p50 >= 45_000.0, "p50 {} us", l.p50);
    // No queueing is charged: the median is the service time the closed loop sees (within a
    // factor 2), not a multiple of it.
    assert_eq!(
        closed.r.total.error_count(),
        0,
        "{:?}",
        closed.r.total.errors
    );
    assert!(
        l.p50 <= 2.0 * c.p50,
        "below capacity, open-loop p50 {} us vs closed-loop p50 {} us",
        l.p50,
        c.p50
    );
}

#[test]
fn connections_spread_over_a_clusters_members() {
    let (a, b) = (SlowServer::start(), SlowServer::start());
    let mut w = workload(a.addr);
    w.per_conn = vec![w.per_conn[0].clone(); 2];
    let mut cfg = config(a.addr, None);
    cfg.spread = vec![b.addr];
    cfg.duration = Duration::from_millis(300);
    let r = engine::run(&cfg, w);
    assert_eq!(r.total.error_count(), 0, "{:?}", r.total.errors);
    // Connection 0 goes to the first member, connection 1 to the second: both served.
    assert!(a.served.load(Ordering::Relaxed) > 0);
    assert!(b.served.load(Ordering::Relaxed) > 0);
}
