//! The load engine: many keep-alive connections, each replaying a pre-built
//! list of requests, in closed-loop or open-loop mode.
//!
//! * **Closed loop** (`rate: None`): each connection sends its next request as
//!   soon as the previous response arrives. Measures maximum throughput;
//!   latency is measured from the actual send time.
//! * **Open loop** (`rate: Some(r)`): requests are *scheduled* at a fixed total
//!   arrival rate of `r` requests/s, split evenly over the connections
//!   (connection `i` of `n` sends at `start + i/r + k*n/r`). Latency is measured
//!   from each request's **intended** send time, so queueing delay caused by a
//!   slow server is counted (no coordinated omission). The queueing is
//!   computed in virtual time ([`VirtualClock`]) so that the bench's own
//!   timer wake-up jitter (tokio timers have 1 ms granularity) is not charged
//!   to the server. Requests scheduled inside the measured window that are still
//!   unsent `timeout` after the window ends are counted as `backlog` errors.
//!
//! Only requests whose (intended) start falls inside the measured window
//! `[start + warmup, start + warmup + duration)` are recorded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{Conn, ExchangeError};
use crate::stats::{ErrorKind, OpStats};

/// How a response is judged successful.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Status 200 and body `ok` (naming writes).
    Ok,
    /// Status 200 and a JSON body containing `"code":10200` (beats).
    Beat,
    /// Status 200 and a JSON object with a `hosts` key (instance list).
    Hosts,
    /// Any 2xx status (calibration, config get).
    Status2xx,
    /// Status 200 and body `true` (config publish).
    True,
}

/// Judges a response; `Err` carries the error kind to count.
pub fn check_response(check: Check, status: u16, body: &[u8]) -> Result<(), ErrorKind> {
    match check {
        Check::Status2xx if (200..300).contains(&status) => Ok(()),
        Check::Status2xx => Err(ErrorKind::Status(status)),
        _ if status != 200 => Err(ErrorKind::Status(status)),
        Check::Ok if body.trim_ascii() == b"ok" => Ok(()),
        Check::True if body.trim_ascii() == b"true" => Ok(()),
        // Beat replies are small; search the whole body.
        Check::Beat if contains(body, b"\"code\":10200") => Ok(()),
        // Top-level keys before `hosts` are short scalars, so the key is always
        // near the front even for lists of thousands of instances.
        Check::Hosts
            if body.first() == Some(&b'{')
                && contains(&body[..body.len().min(4096)], b"\"hosts\"") =>
        {
            Ok(())
        }
        _ => Err(ErrorKind::BodyMismatch),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A named operation kind, with its success check.
#[derive(Clone, Debug)]
pub struct OpSpec {
    /// Stable name used in reports (e.g. `register`, `beat_light`).
    pub name: String,
    /// Success criterion.
    pub check: Check,
}

/// One pre-built request.
#[derive(Clone, Debug)]
pub struct Req {
    /// Complete request bytes (head, empty body).
    pub bytes: Vec<u8>,
    /// Index into [`Workload::ops`].
    pub op: usize,
}

/// What to send: one request list per connection, replayed cyclically.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Operation kinds.
    pub ops: Vec<OpSpec>,
    /// `per_conn[i]` is replayed in order, wrapping around, by connection `i`.
    /// Its length is the number of connections.
    pub per_conn: Vec<Vec<Req>>,
    /// When non-zero, the last `stamp` bytes of every request are overwritten before each
    /// send with a number unique to this send (zero-padded decimal: the connection index,
    /// then the connection's send count), so replayed requests still carry distinct bodies
    /// (config publish). 0 (the default): requests are sent as built.
    pub stamp: usize,
}

/// Writes `n` as zero-padded decimal into `out` (its most significant digits are dropped
/// when `n` needs more than `out.len()` digits).
pub fn write_stamp(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Live counters for a progress line (updated with relaxed atomics).
#[derive(Debug, Default)]
pub struct Progress {
    /// Successful responses so far (warm-up included).
    pub ok: AtomicU64,
    /// Failed requests so far (warm-up included).
    pub errors: AtomicU64,
}

/// Engine parameters.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Server address.
    pub addr: SocketAddr,
    /// More servers (a cluster's other members): connection `i` goes to `[addr, spread...][i %
    /// (1 + spread.len())]`. Empty: every connection goes to `addr`.
    pub spread: Vec<SocketAddr>,
    /// OS threads, each running a current-thread tokio runtime (default 1).
    pub threads: usize,
    /// Unrecorded warm-up before the measured window.
    pub warmup: Duration,
    /// Length of the measured window.
    pub duration: Duration,
    /// Open-loop total arrival rate in requests/s; `None` = closed loop.
    pub rate: Option<f64>,
    /// Per-request timeout (connect + send + full response); also the drain
    /// period after the window in open-loop mode.
    pub timeout: Duration,
    /// Optional live counters.
    pub progress: Option<Arc<Progress>>,
}

/// Result of one engine run.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Per-operation statistics, indexed like [`Workload::ops`].
    pub per_op: Vec<OpStats>,
    /// Everything merged.
    pub total: OpStats,
    /// Length of the measured window (the throughput denominator).
    pub measured: Duration,
}

impl RunResult {
    /// Requests per second over the measured window (successes and failures).
    pub fn throughput(&self) -> f64 {
        self.total.requests() as f64 / self.measured.as_secs_f64()
    }
}

/// Open-loop latency accounting in *virtual time*: the latency of a request
/// is the time it would have taken had every send happened exactly when the
/// schedule (or, if the connection was still busy, the completion of the
/// previous request) allowed it:
///
/// `start = max(intended, free)`, `latency = (start - intended) + service`,
/// `free = start + service`, with `service = done - sent`.
///
/// Queueing behind slow responses accumulates through `free` (so a stalled
/// server is charged for every request scheduled during the stall: no
/// coordinated omission), while the bench's own lateness in sending (timer
/// granularity, scheduling) is not charged to the server.
#[derive(Clone, Copy, Debug)]
pub struct VirtualClock {
    free: Instant,
}

impl VirtualClock {
    /// A connection that is free from `start` on.
    pub fn new(start: Instant) -> VirtualClock {
        VirtualClock { free: start }
    }

    /// Latency of a request scheduled at `intended`, actually sent at `sent`
    /// and completed (or failed) at `done`.
    pub fn latency(&mut self, intended: Instant, sent: Instant, done: Instant) -> Duration {
        let start = intended.max(self.free);
        let service = done.saturating_duration_since(sent);
        self.free = start + service;
        (start - intended) + service
    }
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_start: Instant,
    end: Instant,
    drain_end: Instant,
    interval: Option<Duration>,
    timeout: Duration,
    stamp: usize,
}

/// Runs a workload to completion (warm-up + duration + at most one timeout of
/// drain) and returns the merged statistics.
pub fn run(cfg: &EngineConfig, workload: Workload) -> RunResult {
    let nconn = workload.per_conn.len();
    assert!(nconn > 0, "at least one connection");
    assert!(
        workload.per_conn.iter().all(|r| !r.is_empty()),
        "empty request list"
    );
    let threads = cfg.threads.clamp(1, nconn);
    let checks: Arc<Vec<Check>> = Arc::new(workload.ops.iter().map(|o| o.check).collect());
    // Give every thread time to start before the clock begins.
    let start = Instant::now() + Duration::from_millis(50);
    let measure_start = start + cfg.warmup;
    let end = measure_start + cfg.duration;
    let interval = cfg
        .rate
        .map(|r| Duration::from_secs_f64(nconn as f64 / r.max(1e-9)));
    let slot = cfg.rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1e-9)));
    let w = Window {
        start,
        measure_start,
        end,
        drain_end: end + cfg.timeout,
        interval,
        timeout: cfg.timeout,
        stamp: workload.stamp,
    };

    let mut buckets: Vec<Vec<(usize, Vec<Req>)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, reqs) in workload.per_conn.into_iter().enumerate() {
        buckets[i % threads].push((i, reqs));
    }
    let handles: Vec<_> = buckets
        .into_iter()
        .map(|conns| {
            let checks = checks.clone();
            let progress = cfg.progress.clone();
            let addrs: Vec<SocketAddr> = std::iter::once(cfg.addr)
                .chain(cfg.spread.iter().copied())
                .collect();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let tasks: Vec<_> = conns
                        .into_iter()
                        .map(|(ix, reqs)| {
                            let offset = slot.map(|s| s * ix as u32).unwrap_or_default();
                            tokio::spawn(conn_task(
                                addrs[ix % addrs.len()],
                                w,
                                (ix, offset),
                                reqs,
                                checks.clone(),
                                progress.clone(),
                            ))
                        })
                        .collect();
                    let mut out: Vec<OpStats> = vec![OpStats::default(); checks.len()];
                    for t in tasks {
                        let s = t.await.expect("connection task panicked");
                        for (o, s) in out.iter_mut().zip(&s) {
                            o.merge(s);
                        }
                    }
                    out
                })
            })
        })
        .collect();

    let mut per_op: Vec<OpStats> = vec![OpStats::default(); workload.ops.len()];
    for h in handles {
        let s = h.join().expect("worker thread panicked");
        for (o, s) in per_op.iter_mut().zip(&s) {
            o.merge(s);
        }
    }
    let mut total = OpStats::default();
    for s in &per_op {
        total.merge(s);
    }
    RunResult {
        per_op,
        total,
        measured: cfg.duration,
    }
}

async fn conn_task(
    addr: SocketAddr,
    w: Window,
    (ix, offset): (usize, Duration),
    mut reqs: Vec<Req>,
    checks: Arc<Vec<Check>>,
    progress: Option<Arc<Progress>>,
) -> Vec<OpStats> {
    // Stamps: the connection index in the high digits, the send count in the low 12.
    let mut stamp = (ix as u64) * 1_000_000_000_000;
    let mut stats: Vec<OpStats> = vec![OpStats::default(); checks.len()];
    let mut conn: Option<Conn> = None;
    let mut next = w.start + offset;
    let mut vclock = VirtualClock::new(w.start);
    let mut i = 0usize;
    tokio::time::sleep_until(w.start.into()).await;
    loop {
        let now = Instant::now();
        let intended = match w.interval {
            Some(iv) => {
                let t = next;
                if t >= w.end {
                    break;
                }
                if t > now {
                    tokio::time::sleep_until(t.into()).await;
                } else if now >= w.drain_end {
                    // Everything still scheduled inside the window never went out.
                    let from = t.max(w.measure_start);
                    let unsent = (w.end - from).as_nanos().div_ceil(iv.as_nanos()) as u64;
                    let op = reqs[i].op;
                    stats[op].record_err(ErrorKind::Backlog, unsent);
                    break;
                }
                next += iv;
                t
            }
            None => {
                if now >= w.end {
                    break;
                }
                now
            }
        };
        if w.stamp > 0 {
            let b = &mut reqs[i].bytes;
            let at = b.len().saturating_sub(w.stamp);
            write_stamp(&mut b[at..], stamp);
            stamp += 1;
        }
        let req = &reqs[i];
        i += 1;
        if i == reqs.len() {
            i = 0;
        }
        let sent = Instant::now();
        let res = tokio::time::timeout(
            w.timeout,
            exchange(&mut conn, addr, w.timeout, &req.bytes, checks[req.op]),
        )
        .await;
        let done = Instant::now();
        let latency = match w.interval {
            Some(_) => vclock.latency(intended, sent, done),
            None => done - sent,
        };
        let outcome = match res {
            Ok(r) => r,
            Err(_) => {
                conn = None;
                Err(ErrorKind::Timeout)
            }
        };
        let measured = intended >= w.measure_start;
        match outcome {
            Ok(()) => {
                if measured {
                    stats[req.op].record_ok(latency.as_nanos() as u64);
                }
                if let Some(p) = &progress {
                    p.ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(kind) => {
                if measured {
                    stats[req.op].record_err(kind, 1);
                }
                if let Some(p) = &progress {
                    p.errors.fetch_add(1, Ordering::Relaxed);
                }
                if kind == ErrorKind::Connect {
                    // Don't spin on a refused port.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    stats
}

/// One exchange on a (re)connected connection. Drops the connection on any
/// transport error or when the server asks to close.
async fn exchange(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    connect_timeout: Duration,
    req: &[u8],
    check: Check,
) -> Result<(), ErrorKind> {
    if conn.is_none() {
        *conn = Some(
            Conn::connect(addr, connect_timeout)
                .await
                .map_err(|_| ErrorKind::Connect)?,
        );
    }
    let c = conn.as_mut().expect("connected above");
    let head = match c.exchange(req).await {
        Ok(h) => h,
        Err(e) => {
            *conn = None;
            return Err(match e {
                ExchangeError::Io(_) => ErrorKind::Io,
                ExchangeError::Parse(_) => ErrorKind::Parse,
            });
        }
    };
    let r = check_response(check, head.status, c.body());
    if !head.keep_alive {
        *conn = None;
    }
    r
}

/// "Not yet" in [`WriteTimes`].
pub const NOT_YET: u64 = u64::MAX;

/// When each numbered write of [`numbered_writes`] was sent and when its success was read, in
/// ns after `t0`, indexed by the write's number (from 1; index 0 unused); [`NOT_YET`] until
/// then (and for good when the write failed).
#[derive(Debug)]
pub struct WriteTimes {
    /// The origin of every time.
    pub t0: Instant,
    /// Just before the write was sent.
    pub sent_ns: Vec<AtomicU64>,
    /// When its successful answer was read.
    pub ok_ns: Vec<AtomicU64>,
}

impl WriteTimes {
    /// Room for writes `1..=planned`.
    pub fn new(t0: Instant, planned: u64) -> WriteTimes {
        let slots = || (0..=planned).map(|_| AtomicU64::new(NOT_YET)).collect();
        WriteTimes {
            t0,
            sent_ns: slots(),
            ok_ns: slots(),
        }
    }

    /// Writes there is room for.
    pub fn planned(&self) -> u64 {
        self.ok_ns.len() as u64 - 1
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.t0).as_nanos() as u64
    }
}

/// Open-loop numbered writes on one keep-alive connection: write `seq` (1, 2, … up to
/// `times.planned()`) is due at `start + (seq − 1) / rate` while that is before `end`; when it
/// is due `make(seq)` builds it (so state the caller keeps per write is set at that moment),
/// then it is sent and judged by `check`. Records `times`; returns the writes' statistics,
/// latency from the intended send time in virtual time (as the engine's open loop).
#[allow(clippy::too_many_arguments)]
pub async fn numbered_writes(
    addr: SocketAddr,
    timeout: Duration,
    (start, end, rate): (Instant, Instant, f64),
    check: Check,
    times: &WriteTimes,
    progress: Option<&Progress>,
    mut make: impl FnMut(u64) -> Vec<u8>,
) -> OpStats {
    let mut st = OpStats::default();
    let mut conn: Option<Conn> = None;
    let mut vclock = VirtualClock::new(start);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    for seq in 1..=times.planned() {
        let intended = start + interval * (seq - 1) as u32;
        if intended >= end {
            break;
        }
        tokio::time::sleep_until(intended.into()).await;
        let req = make(seq);
        let sent = Instant::now();
        times.sent_ns[seq as usize].store(times.ns(sent), Ordering::Release);
        let r =
            tokio::time::timeout(timeout, exchange(&mut conn, addr, timeout, &req, check)).await;
        let done = Instant::now();
        let latency = vclock.latency(intended, sent, done);
        let r = r.unwrap_or_else(|_| {
            conn = None;
            Err(ErrorKind::Timeout)
        });
        match r {
            Ok(()) => {
                times.ok_ns[seq as usize].store(times.ns(done), Ordering::Release);
                st.record_ok(latency.as_nanos() as u64);
                if let Some(p) = progress {
                    p.ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(kind) => {
                st.record_err(kind, 1);
                if let Some(p) = progress {
                    p.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    st
}

/// Sends every request exactly once over `concurrency` connections (setup
/// phases). Returns per-request outcomes merged into one [`OpStats`].
pub fn run_once(
    addr: SocketAddr,
    reqs: Vec<(Vec<u8>, Check)>,
    concurrency: usize,
    timeout: Duration,
) -> OpStats {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let concurrency = concurrency.clamp(1, reqs.len().max(1));
    let mut shares: Vec<Vec<(Vec<u8>, Check)>> = (0..concurrency).map(|_| Vec::new()).collect();
    for (i, r) in reqs.into_iter().enumerate() {
        shares[i % concurrency].push(r);
    }
    rt.block_on(async move {
        let tasks: Vec<_> = shares
            .into_iter()
            .map(|share| {
                tokio::spawn(async move {
                    let mut st = OpStats::default();
                    let mut conn = None;
                    for (bytes, check) in share {
                        let t = Instant::now();
                        let r = tokio::time::timeout(
                            timeout,
                            exchange(&mut conn, addr, timeout, &bytes, check),
                        )
                        .await;
                        match r {
                            Ok(Ok(())) => st.record_ok(t.elapsed().as_nanos() as u64),
                            Ok(Err(k)) => st.record_err(k, 1),
                            Err(_) => {
                                conn = None;
                                st.record_err(ErrorKind::Timeout, 1)
                            }
                        }
                    }
                    st
                })
            })
            .collect();
        let mut total = OpStats::default();
        for t in tasks {
            total.merge(&t.await.expect("setup task panicked"));
        }
        total
    })
}

/// Sends one request on a fresh connection and returns status and body.
pub fn fetch(addr: SocketAddr, req: &[u8], timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        tokio::time::timeout(timeout, async {
            let mut c = Conn::connect(addr, timeout)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let h = c.exchange(req).await.map_err(|e| format!("{e:?}"))?;
            Ok((h.status, c.body().to_vec()))
        })
        .await
        .map_err(|_| "timeout".to_string())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_counts_queueing_not_timer_slop() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Server takes 50 ms, schedule every 10 ms: queueing grows by 40 ms each.
        let mut v = VirtualClock::new(t0);
        let mut sent = t0;
        for k in 0..5u32 {
            let intended = t0 + ms(10) * k;
            sent = sent.max(intended);
            let done = sent + ms(50);
            assert_eq!(v.latency(intended, sent, done), ms(40) * k + ms(50));
            sent = done;
        }
        // Fast server (50 us), but every send is 1 ms late because of our timer:
        // latency stays at the service time.
        let mut v = VirtualClock::new(t0);
        for k in 0..5u32 {
            let intended = t0 + ms(1) * k;
            let sent = intended + ms(1);
            let done = sent + Duration::from_micros(50);
            assert_eq!(v.latency(intended, sent, done), Duration::from_micros(50));
        }
    }

    #[test]
    fn checks() {
        assert_eq!(check_response(Check::Ok, 200, b"ok"), Ok(()));
        assert_eq!(check_response(Check::Ok, 200, b"ok\n"), Ok(()));
        assert_eq!(
            check_response(Check::Ok, 200, b"caused: x;"),
            Err(ErrorKind::BodyMismatch)
        );
        assert_eq!(
            check_response(Check::Ok, 400, b"ok"),
            Err(ErrorKind::Status(400))
        );
        let beat = br#"{"clientBeatInterval":5000,"code":10200,"lightBeatEnabled":true}"#;
        assert_eq!(check_response(Check::Beat, 200, beat), Ok(()));
        let miss = br#"{"clientBeatInterval":5000,"code":20404}"#;
        assert_eq!(
            check_response(Check::Beat, 200, miss),
            Err(ErrorKind::BodyMismatch)
        );
        assert_eq!(
            check_response(Check::Hosts, 200, br#"{"name":"a","hosts":[]}"#),
            Ok(())
        );
        assert_eq!(
            check_response(Check::Hosts, 200, b"ok"),
            Err(ErrorKind::BodyMismatch)
        );
        assert_eq!(check_response(Check::Status2xx, 204, b""), Ok(()));
        assert_eq!(
            check_response(Check::Status2xx, 301, b""),
            Err(ErrorKind::Status(301))
        );
    }
}
