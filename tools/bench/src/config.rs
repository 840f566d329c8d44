//! Nacos 1.x config-center scenarios (`/nacos/v1/cs`): request builders, the `config-get`
//! and `config-publish` workloads for the engine, and `config-listen`, which holds N long
//! polls and measures how long a publish takes to answer the polls listening to its config.
//!
//! Configs are `<prefix>-<k>` in group [`GROUP`] of the public namespace. Publishes are form
//! posts, as the stock clients send them; r-nacos and Nacos read the same form.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use crate::engine::{numbered_writes, Check, OpSpec, Progress, Req, Workload, WriteTimes, NOT_YET};
use crate::http::{urlencode, Conn, Target};
use crate::stats::{ErrorKind, OpStats};

/// Group of every bench config.
pub const GROUP: &str = "DEFAULT_GROUP";
/// Digits of the per-send stamp that ends every `config-publish` content (see
/// [`Workload::stamp`]), so that no publish repeats the config's current content (a server
/// may skip an unchanged publish).
pub const STAMP_DIGITS: usize = 18;
/// `Long-Pulling-Timeout` the listeners send, in ms: the stock Java client's 30 s, so a
/// server holds each poll ~29.5 s (polls that end empty are sent again at once).
pub const LONG_POLL_MS: u64 = 30_000;

/// Config API request builder.
#[derive(Clone, Debug)]
pub struct ConfigApi {
    /// Where requests go.
    pub target: Target,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Data ids are `<prefix>-<k>`.
    pub prefix: String,
}

impl ConfigApi {
    /// Data id of config `k`.
    pub fn data_id(&self, k: usize) -> String {
        format!("{}-{k}", self.prefix)
    }

    /// `GET /nacos/v1/cs/configs?dataId=..&group=..` (200 with the content).
    pub fn get(&self, data_id: &str) -> Vec<u8> {
        let q = format!(
            "/nacos/v1/cs/configs?dataId={}&group={GROUP}",
            urlencode(data_id)
        );
        self.target.request("GET", &q, &self.user_agent)
    }

    /// `POST /nacos/v1/cs/configs` with a form body whose last field is `content` (200
    /// `true`). The content is sent as is: callers use form-safe bytes.
    pub fn publish(&self, data_id: &str, content: &str) -> Vec<u8> {
        let body = format!(
            "dataId={}&group={GROUP}&content={content}",
            urlencode(data_id)
        );
        self.target.request_with(
            "POST",
            "/nacos/v1/cs/configs",
            &self.user_agent,
            &[],
            body.as_bytes(),
        )
    }

    /// `POST /nacos/v1/cs/configs/listener` for one config whose content the client has md5
    /// `md5` (`""`: none), held up to [`LONG_POLL_MS`].
    pub fn listen(&self, data_id: &str, md5: &str) -> Vec<u8> {
        let line = format!("{data_id}\x02{GROUP}\x02{md5}\x01");
        let body = format!("Listening-Configs={}", urlencode(&line));
        let timeout = LONG_POLL_MS.to_string();
        self.target.request_with(
            "POST",
            "/nacos/v1/cs/configs/listener",
            &self.user_agent,
            &[("Long-Pulling-Timeout", timeout.as_str())],
            body.as_bytes(),
        )
    }
}

/// A content of `size` bytes (at least [`STAMP_DIGITS`]): `x` padding, then digits.
pub fn content(size: usize) -> String {
    let size = size.max(STAMP_DIGITS);
    let mut s = "x".repeat(size - STAMP_DIGITS);
    s.push_str(&"0".repeat(STAMP_DIGITS));
    s
}

/// Hex md5 of `s`, as Nacos computes `Content-MD5`.
pub fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Setup for `config-get`: publishes configs `0..configs` with `size`-byte contents.
pub fn get_setup(api: &ConfigApi, configs: usize, size: usize) -> Vec<(Vec<u8>, Check)> {
    let body = content(size);
    (0..configs)
        .map(|k| (api.publish(&api.data_id(k), &body), Check::True))
        .collect()
}

/// `config-get`: GET of configs `0..configs`, round-robin (connection `c` starts at `c`).
pub fn get(api: &ConfigApi, conns: usize, configs: usize) -> Workload {
    Workload {
        ops: vec![OpSpec {
            name: "config_get".into(),
            check: Check::Status2xx,
        }],
        per_conn: (0..conns)
            .map(|c| {
                (0..configs)
                    .map(|k| Req {
                        bytes: api.get(&api.data_id((c + k) % configs)),
                        op: 0,
                    })
                    .collect()
            })
            .collect(),
        stamp: 0,
    }
}

/// `config-publish`: publishes to configs `0..configs` (connection `c` cycles over configs
/// `c, c+conns, …`; with fewer configs than connections, config `c % configs`), each with a
/// `size`-byte content whose last [`STAMP_DIGITS`] bytes differ on every send.
pub fn publish(api: &ConfigApi, conns: usize, configs: usize, size: usize) -> Workload {
    assert!(configs > 0 && conns > 0);
    let body = content(size);
    let per_conn = (0..conns)
        .map(|c| {
            let keys: Vec<usize> = if c >= configs {
                vec![c % configs]
            } else {
                (c..configs).step_by(conns).collect()
            };
            keys.into_iter()
                .map(|k| Req {
                    bytes: api.publish(&api.data_id(k), &body),
                    op: 0,
                })
                .collect()
        })
        .collect();
    Workload {
        ops: vec![OpSpec {
            name: "config_publish".into(),
            check: Check::True,
        }],
        per_conn,
        stamp: STAMP_DIGITS,
    }
}

/// Parameters of a `config-listen` run.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    /// Request builder.
    pub api: ConfigApi,
    /// Held polls, one connection each.
    pub listeners: usize,
    /// Configs they listen to: poll `i` listens to config `i % keys`, so one publish answers
    /// `listeners / keys` polls (`keys == listeners`: exactly one).
    pub keys: usize,
    /// Publishes per second (open loop); write `seq` (from 1) goes to config `(seq-1) % keys`.
    pub write_rate: f64,
    /// Time between opening the polls and the first publish (every poll is sent by then).
    pub warmup: Duration,
    /// How long publishes go on.
    pub duration: Duration,
    /// How long polls stay open after the last publish (to collect late answers).
    pub grace: Duration,
    /// Timeout of a publish, and of connecting a poll.
    pub timeout: Duration,
    /// Live counters (publishes).
    pub progress: Option<Arc<Progress>>,
}

/// Outcome of a `config-listen` run.
#[derive(Clone, Debug)]
pub struct ListenResult {
    /// Publishes, latency from the intended send time.
    pub writes: OpStats,
    /// Wake-up latency (ns): a publish's `ok` read → a poll on its config answered (0 when the
    /// answer came first), one sample per answered poll; `wake_missing` errors count polls a
    /// publish never answered.
    pub wake: OpStats,
    /// Wake-up latency (ns) from the publish's send time.
    pub wake_from_send: OpStats,
    /// Answers read before the publish's `ok` was (recorded as 0 in `wake`).
    pub early: u64,
    /// Polls sent before the first publish (each then held, unless the server refused).
    pub held: u64,
    /// Polls that ended with an empty answer (hold expired) and were sent again.
    pub expired: u64,
    /// Poll exchanges that failed (connect, I/O, status, or an answer naming another config).
    pub poll_errors: OpStats,
}

struct Shared {
    /// When each publish was sent and its `true` read.
    times: WriteTimes,
    /// `last_seq[k]`: the newest write sent to config `k` (0: none).
    last_seq: Vec<AtomicU64>,
    /// Polls sent at least once.
    sent_polls: AtomicU64,
}

/// What one poll connection saw: `(seq, answered ns after t0)` per answer.
struct PollOutcome {
    answers: Vec<(u64, u64)>,
    expired: u64,
    errors: OpStats,
}

/// Runs `config-listen` (no setup: the polls listen to configs that do not exist yet with an
/// empty md5, which every server holds; the first publish of a config creates it and answers
/// them). Give `cfg.api` a prefix unique to the run ([`run_prefix`]) so that configs left by
/// an earlier run on the same server do not answer the first polls at once.
pub fn run_listen(cfg: &ListenConfig) -> Result<ListenResult, String> {
    if cfg.keys == 0 || cfg.listeners == 0 || cfg.keys > cfg.listeners {
        return Err("need 1 <= --keys <= --listeners".into());
    }
    raise_nofile(cfg.listeners as u64 + 64)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(listen_async(cfg))
}

/// Raises `RLIMIT_NOFILE` to at least `want` (up to the hard limit).
fn raise_nofile(want: u64) -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err("getrlimit(RLIMIT_NOFILE) failed".into());
        }
        if lim.rlim_cur >= want {
            return Ok(());
        }
        if lim.rlim_max < want {
            return Err(format!(
                "{want} file descriptors needed, the hard limit is {} (ulimit -Hn)",
                lim.rlim_max
            ));
        }
        lim.rlim_cur = want;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err("setrlimit(RLIMIT_NOFILE) failed".into());
        }
    }
    Ok(())
}

async fn listen_async(cfg: &ListenConfig) -> Result<ListenResult, String> {
    let writes_planned = ((cfg.write_rate * cfg.duration.as_secs_f64()).ceil() as u64).max(1);
    let t0 = Instant::now();
    let shared = Arc::new(Shared {
        times: WriteTimes::new(t0, writes_planned),
        last_seq: (0..cfg.keys).map(|_| AtomicU64::new(0)).collect(),
        sent_polls: AtomicU64::new(0),
    });
    let write_start = t0 + cfg.warmup;
    let write_end = write_start + cfg.duration;
    let listen_end = write_end + cfg.grace;

    let polls: Vec<_> = (0..cfg.listeners)
        .map(|i| {
            tokio::spawn(poll_task(
                cfg.api.clone(),
                i % cfg.keys,
                shared.clone(),
                cfg.timeout,
                listen_end,
            ))
        })
        .collect();

    let writer = {
        let shared = shared.clone();
        let api = cfg.api.clone();
        let progress = cfg.progress.clone();
        let (keys, timeout) = (cfg.keys, cfg.timeout);
        let window = (write_start, write_end, cfg.write_rate);
        tokio::spawn(async move {
            numbered_writes(
                api.target.addr,
                timeout,
                window,
                Check::True,
                &shared.times,
                progress.as_deref(),
                |seq| {
                    let k = (seq as usize - 1) % keys;
                    shared.last_seq[k].store(seq, Ordering::Release);
                    api.publish(&api.data_id(k), &write_content(seq))
                },
            )
            .await
        })
    };
    // Held = polls sent when the first publish goes out.
    tokio::time::sleep_until(write_start.into()).await;
    let held = shared.sent_polls.load(Ordering::Acquire);
    let writes = writer.await.map_err(|e| format!("writer: {e}"))?;

    let mut wake = OpStats::default();
    let mut wake_from_send = OpStats::default();
    let mut poll_errors = OpStats::default();
    let (mut early, mut expired) = (0, 0);
    // Answers per write, to count the polls a publish never answered.
    let mut answered = vec![0u64; writes_planned as usize + 1];
    for p in polls {
        let out = p.await.map_err(|e| format!("poll: {e}"))?;
        expired += out.expired;
        poll_errors.merge(&out.errors);
        for (seq, at) in out.answers {
            let ok = shared.times.ok_ns[seq as usize].load(Ordering::Acquire);
            let sent = shared.times.sent_ns[seq as usize].load(Ordering::Acquire);
            if ok == NOT_YET {
                // The publish failed (counted in `writes`) yet a poll was answered.
                continue;
            }
            answered[seq as usize] += 1;
            if at < ok {
                early += 1;
            }
            wake.record_ok(at.saturating_sub(ok));
            wake_from_send.record_ok(at.saturating_sub(sent));
        }
    }
    for (seq, got) in answered.iter().enumerate().skip(1) {
        if shared.times.ok_ns[seq].load(Ordering::Acquire) == NOT_YET {
            continue;
        }
        let k = (seq - 1) % cfg.keys;
        let expected = (k..cfg.listeners).step_by(cfg.keys).count() as u64;
        wake.record_err(ErrorKind::WakeMissing, expected.saturating_sub(*got));
    }
    Ok(ListenResult {
        writes,
        wake,
        wake_from_send,
        early,
        held,
        expired,
        poll_errors,
    })
}

/// `<prefix>-<id>`, with an id unique to this run (time and pid), for `config-listen`.
pub fn run_prefix(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() ^ u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    format!(
        "{prefix}-{:x}",
        (t ^ u64::from(std::process::id())) & 0xff_ffff
    )
}

/// The content of write `seq` (distinct per write).
pub fn write_content(seq: u64) -> String {
    format!("bench-write-{seq}")
}

fn ns_since(t0: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(t0).as_nanos() as u64
}

/// One exchange on a (re)connected connection; the body of a 200, else the error kind.
async fn send(
    conn: &mut Option<Conn>,
    api: &ConfigApi,
    timeout: Duration,
    req: &[u8],
) -> Result<Vec<u8>, ErrorKind> {
    if conn.is_none() {
        *conn = Some(
            Conn::connect(api.target.addr, timeout)
                .await
                .map_err(|_| ErrorKind::Connect)?,
        );
    }
    let c = conn.as_mut().expect("connected above");
    match c.exchange(req).await {
        Ok(h) => {
            let body = c.body().to_vec();
            if !h.keep_alive {
                *conn = None;
            }
            if h.status != 200 {
                return Err(ErrorKind::Status(h.status));
            }
            Ok(body)
        }
        Err(_) => {
            *conn = None;
            Err(ErrorKind::Io)
        }
    }
}

/// One listener: polls config `k` until `end`. An answer naming the config records
/// `(newest write to k, now)` and polls again with that write's md5, as a client does after
/// reading the new content; an empty answer (the hold expired) polls again unchanged.
async fn poll_task(
    api: ConfigApi,
    k: usize,
    shared: Arc<Shared>,
    timeout: Duration,
    end: Instant,
) -> PollOutcome {
    let data_id = api.data_id(k);
    // How the answer names the config: `dataId%02group…`.
    let answer_key = format!("{}%02", urlencode(&data_id)).into_bytes();
    let mut md5 = String::new();
    let mut conn: Option<Conn> = None;
    let mut out = PollOutcome {
        answers: Vec::new(),
        expired: 0,
        errors: OpStats::default(),
    };
    let mut counted = false;
    // Bounded by `end`: every turn is one exchange cut off at `end`.
    while Instant::now() < end {
        let req = api.listen(&data_id, &md5);
        if !counted {
            counted = true;
            shared.sent_polls.fetch_add(1, Ordering::Relaxed);
        }
        let r = tokio::time::timeout_at(end.into(), send(&mut conn, &api, timeout, &req)).await;
        let at = ns_since(shared.times.t0, Instant::now());
        match r {
            Err(_) => break,
            Ok(Ok(body)) if body.trim_ascii().is_empty() => out.expired += 1,
            Ok(Ok(body)) if contains(&body, &answer_key) => {
                let seq = shared.last_seq[k].load(Ordering::Acquire);
                if seq > 0 {
                    out.answers.push((seq, at));
                    md5 = md5_hex(&write_content(seq));
                } else {
                    // Answered before any publish to the config: not a wake-up.
                    out.errors.record_err(ErrorKind::BodyMismatch, 1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Ok(Ok(_)) => out.errors.record_err(ErrorKind::BodyMismatch, 1),
            Ok(Err(kind)) => {
                out.errors.record_err(kind, 1);
                // Don't spin on a refusing server.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> ConfigApi {
        ConfigApi {
            target: Target::parse("http://127.0.0.1:8848").unwrap(),
            user_agent: "ua".into(),
            prefix: "c".into(),
        }
    }

    fn text(r: &[u8]) -> String {
        String::from_utf8(r.to_vec()).unwrap()
    }

    #[test]
    fn requests() {
        let a = api();
        assert!(text(&a.get("c-1"))
            .starts_with("GET /nacos/v1/cs/configs?dataId=c-1&group=DEFAULT_GROUP HTTP/1.1\r\n"));
        let p = text(&a.publish("c-1", "abc"));
        assert!(
            p.starts_with("POST /nacos/v1/cs/configs HTTP/1.1\r\n"),
            "{p}"
        );
        assert!(
            p.ends_with("\r\n\r\ndataId=c-1&group=DEFAULT_GROUP&content=abc"),
            "{p}"
        );
        let l = text(&a.listen("c-1", "m"));
        assert!(l.contains("Long-Pulling-Timeout: 30000\r\n"), "{l}");
        assert!(
            l.ends_with("Listening-Configs=c-1%02DEFAULT_GROUP%02m%01"),
            "{l}"
        );
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn publish_contents_are_stamped_per_send() {
        let w = publish(&api(), 3, 2, 100);
        assert_eq!(w.stamp, STAMP_DIGITS);
        assert_eq!(w.per_conn.len(), 3);
        let body = text(&w.per_conn[0][0].bytes);
        let content = body.rsplit("content=").next().unwrap();
        assert_eq!(content.len(), 100);
        assert!(content.ends_with(&"0".repeat(STAMP_DIGITS)));
        let mut b = w.per_conn[0][0].bytes.clone();
        let at = b.len() - STAMP_DIGITS;
        crate::engine::write_stamp(&mut b[at..], 1_000_000_000_007);
        assert!(text(&b).ends_with("000001000000000007"));
        // More connections than configs: every connection still has a config.
        assert!(w.per_conn.iter().all(|r| r.len() == 1));
    }
}
