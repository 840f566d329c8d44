//! The `subscribe` scenario: M UDP push subscribers and one writer.
//!
//! Each subscriber binds a UDP socket on 127.0.0.1 and subscribes with
//! `GET instance/list?udpPort=<port>&clientIP=127.0.0.1` (refreshed every
//! `resubscribe`, since Nacos forgets clients idle for 10 s). The writer
//! registers marker instances `<marker ip>:<MARKER_BASE_PORT + seq>` at a fixed
//! rate; every datagram is acked with
//! `{"type":"push-ack","lastRefTime":"<n>","data":""}` and its instance list
//! is scanned for the highest marker `seq`. Push latency for write `seq` is
//! the time from the writer reading that write's `ok` to a subscriber
//! receiving the first datagram that contains it (one sample per write per
//! subscriber; 0 when the datagram beats the HTTP response). A second
//! histogram measures from the moment the write was sent. "Receiving" is the
//! kernel's receive timestamp of the datagram (`SO_TIMESTAMPNS`), so the time
//! this one-thread load generator spends draining, gunzipping and acking the
//! other subscribers' datagrams does not count as push latency. Writes a subscriber never saw within `grace` after the last
//! write are counted as `push_missing`.

use std::borrow::Cow;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::engine::{check_response, numbered_writes, Check, Progress, WriteTimes, NOT_YET};
use crate::http::Conn;
use crate::scenario::Naming;
use crate::stats::{ErrorKind, OpStats};

/// IP of the marker instances the writer registers unless configured
/// otherwise (see [`run_marker_ip`]).
pub const MARKER_IP: &str = "10.254.0.1";

/// A marker IP unique to this run (`10.254.x.y`), so markers left in the
/// server by an earlier run (ephemeral instances linger for ~30 s) are not
/// mistaken for this run's writes.
pub fn run_marker_ip() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0);
    let id = (nanos ^ std::process::id() as u64) % 65_000 + 1;
    format!("10.254.{}.{}", id >> 8, id & 255)
}
/// Port of marker `seq` is `MARKER_BASE_PORT + seq` (seq starts at 1).
pub const MARKER_BASE_PORT: u64 = 10000;
/// Most writes one run performs (ports stay below 65536).
pub const MAX_WRITES: u64 = 55_000;

/// Parameters of a subscribe run.
#[derive(Clone, Debug)]
pub struct SubscribeConfig {
    /// Request builder; `prefix` names the watched service `<prefix>-push`.
    pub naming: Naming,
    /// IP of the marker instances (e.g. [`run_marker_ip`]).
    pub marker_ip: String,
    /// Number of UDP subscribers.
    pub subscribers: usize,
    /// Writes per second.
    pub write_rate: f64,
    /// Time between subscribing and the first write.
    pub warmup: Duration,
    /// How long writes go on.
    pub duration: Duration,
    /// How long subscribers keep listening after the last write.
    pub grace: Duration,
    /// Interval between subscription refreshes (each subscriber).
    pub resubscribe: Duration,
    /// HTTP request timeout.
    pub timeout: Duration,
    /// Live counters (writes).
    pub progress: Option<Arc<Progress>>,
}

/// Outcome of a subscribe run.
#[derive(Clone, Debug)]
pub struct SubscribeResult {
    /// Marker writes (register), latency from intended send time.
    pub writes: OpStats,
    /// Subscription queries (`instance/list` with `udpPort`).
    pub queries: OpStats,
    /// Push latency samples (ns, from the write's `ok`) and push errors.
    pub push: OpStats,
    /// Push latency samples (ns) from the moment the write was sent; useful
    /// for servers that push before answering the write.
    pub push_from_send: OpStats,
    /// Datagrams received over all subscribers.
    pub datagrams: u64,
    /// Datagrams that arrived before the writer had read the write's `ok`
    /// (recorded as ~0 latency).
    pub early: u64,
    /// Length of the write window.
    pub measured: Duration,
}

/// A decoded push packet.
#[derive(Clone, Debug, PartialEq)]
pub struct Push {
    /// `type` field (`dom` for instance lists).
    pub kind: String,
    /// `lastRefTime` exactly as sent (number or string), for the ack.
    pub last_ref_time: String,
    /// `data`: the instance-list JSON as a string.
    pub data: String,
}

/// Decodes a push datagram, gunzipping it when it starts with `1f 8b`.
///
/// The subscriber side must stay cheap (one bench thread serves every subscriber), so the
/// common shape `{"type":"dom","data":"...","lastRefTime":N}` is read by scanning; anything
/// else goes through a full JSON parse. `data` is then the still-escaped JSON string, which
/// [`max_marker_seq`] understands too.
pub fn decode_push(pkt: &[u8]) -> Result<Push, String> {
    let raw: Cow<[u8]> = if pkt.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(pkt.len() * 4);
        flate2::read::GzDecoder::new(pkt)
            .read_to_end(&mut out)
            .map_err(|e| format!("gunzip: {e}"))?;
        Cow::Owned(out)
    } else {
        Cow::Borrowed(pkt)
    };
    if let Some(p) = scan_push(&raw) {
        return Ok(p);
    }
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| format!("json: {e}"))?;
    let kind = v
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("")
        .to_string();
    let last_ref_time = match v.get("lastRefTime") {
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => return Err("no lastRefTime".into()),
    };
    let data = v
        .get("data")
        .and_then(|d| d.as_str())
        .unwrap_or("")
        .to_string();
    Ok(Push {
        kind,
        last_ref_time,
        data,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The fast path of [`decode_push`]: a `dom` packet whose `lastRefTime` is a number after the
/// data string. `None` for any other shape.
fn scan_push(raw: &[u8]) -> Option<Push> {
    const HEAD: &[u8] = b"{\"type\":\"dom\",\"data\":\"";
    const TAIL: &[u8] = b"\",\"lastRefTime\":";
    if !raw.starts_with(HEAD) {
        return None;
    }
    // The data string ends where the last `","lastRefTime":` begins (inside the string every
    // quote is escaped, so the pattern cannot occur there).
    let tail = raw.windows(TAIL.len()).rposition(|w| w == TAIL)?;
    let after = &raw[tail..];
    let num: String = after[TAIL.len()..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| b as char)
        .collect();
    if num.is_empty() {
        return None;
    }
    Some(Push {
        kind: "dom".into(),
        last_ref_time: num,
        data: String::from_utf8_lossy(&raw[HEAD.len()..tail]).into_owned(),
    })
}

/// The ack a Java client sends for a push.
pub fn ack(last_ref_time: &str) -> Vec<u8> {
    format!(r#"{{"type":"push-ack","lastRefTime":"{last_ref_time}","data":""}}"#).into_bytes()
}

/// Highest marker `seq` among the `hosts` of an instance-list JSON, plain or still escaped
/// inside the push packet's string (`\"ip\":\"M\",\"port\":N`). Hosts render `ip` then
/// `port`; other layouts fall back to a JSON parse.
pub fn max_marker_seq(data: &str, marker_ip: &str) -> Option<u64> {
    let plain = format!("\"ip\":\"{marker_ip}\",\"port\":");
    let escaped = format!("\\\"ip\\\":\\\"{marker_ip}\\\",\\\"port\\\":");
    let mut best: Option<u64> = None;
    let mut seen_ip = false;
    for pat in [plain.as_bytes(), escaped.as_bytes()] {
        let mut hay = data.as_bytes();
        while let Some(i) = find(hay, pat) {
            seen_ip = true;
            let rest = &hay[i + pat.len()..];
            let digits: String = rest
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|&b| b as char)
                .collect();
            if let Ok(p) = digits.parse::<u64>() {
                if p > MARKER_BASE_PORT {
                    best = Some(best.map_or(p - MARKER_BASE_PORT, |b| b.max(p - MARKER_BASE_PORT)));
                }
            }
            hay = &rest[digits.len()..];
        }
    }
    if seen_ip || !data.contains("ip") {
        return best;
    }
    let unescaped: Cow<str> = if data.starts_with('{') {
        Cow::Borrowed(data)
    } else {
        Cow::Owned(serde_json::from_str::<String>(&format!("\"{data}\"")).ok()?)
    };
    let v: serde_json::Value = serde_json::from_str(&unescaped).ok()?;
    v.get("hosts")?
        .as_array()?
        .iter()
        .filter(|h| h.get("ip").and_then(|i| i.as_str()) == Some(marker_ip))
        .filter_map(|h| h.get("port")?.as_u64())
        .filter(|&p| p > MARKER_BASE_PORT)
        .map(|p| p - MARKER_BASE_PORT)
        .max()
}

struct Shared {
    t0: Instant,
    /// Wall-clock ns (CLOCK_REALTIME, the clock of kernel receive timestamps) at `t0`.
    t0_wall_ns: u64,
    /// When each write was sent and its `ok` read, after `t0`.
    times: WriteTimes,
}

/// Runs the scenario. Setup (registering the watched service) must be done
/// by the caller; see [`setup`].
pub fn run(cfg: &SubscribeConfig) -> Result<SubscribeResult, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run_async(cfg))
}

/// Setup requests: one plain instance so the watched service exists.
pub fn setup(n: &Naming, marker_ip: &str) -> Vec<(Vec<u8>, Check)> {
    vec![(n.register(&service(n), marker_ip, 9), Check::Ok)]
}

/// The watched service.
pub fn service(n: &Naming) -> String {
    format!("{}-push", n.prefix)
}

async fn run_async(cfg: &SubscribeConfig) -> Result<SubscribeResult, String> {
    let n = &cfg.naming;
    let svc = service(n);
    let addr = n.target.addr;
    let writes_planned =
        ((cfg.write_rate * cfg.duration.as_secs_f64()).ceil() as u64).clamp(1, MAX_WRITES);
    let t0 = Instant::now();
    let t0_wall_ns = wall_ns();
    let shared = Arc::new(Shared {
        t0,
        t0_wall_ns,
        times: WriteTimes::new(t0, writes_planned),
    });
    let write_start = t0 + cfg.warmup;
    let write_end = write_start + cfg.duration;
    let listen_end = write_end + cfg.grace;

    let mut sockets = Vec::with_capacity(cfg.subscribers);
    let mut ports = Vec::with_capacity(cfg.subscribers);
    for _ in 0..cfg.subscribers {
        let s = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("udp bind: {e}"))?;
        ports.push(s.local_addr().map_err(|e| e.to_string())?.port());
        enable_timestamps(&s).map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
        sockets.push(s);
    }

    // Subscription refresher: one keep-alive connection, all subscribers in turn.
    let sub_reqs: Vec<Vec<u8>> = ports.iter().map(|&p| n.subscribe(&svc, p)).collect();
    let (resub, timeout) = (cfg.resubscribe, cfg.timeout);
    let refresher = tokio::spawn(async move {
        let mut st = OpStats::default();
        let mut conn: Option<Conn> = None;
        let mut round = Instant::now();
        while round < listen_end {
            for req in &sub_reqs {
                let t = Instant::now();
                let r = tokio::time::timeout(timeout, query(&mut conn, addr, timeout, req)).await;
                match r {
                    Ok(Ok(())) => st.record_ok(t.elapsed().as_nanos() as u64),
                    Ok(Err(k)) => st.record_err(k, 1),
                    Err(_) => {
                        conn = None;
                        st.record_err(ErrorKind::Timeout, 1)
                    }
                }
            }
            round += resub;
            tokio::time::sleep_until(round.min(listen_end).into()).await;
        }
        st
    });

    let subs: Vec<_> = sockets
        .into_iter()
        .map(|s| {
            tokio::spawn(subscriber(
                s,
                shared.clone(),
                cfg.marker_ip.clone(),
                listen_end,
            ))
        })
        .collect();

    // Writer: open loop at write_rate, latency from intended send time.
    let writer = {
        let shared = shared.clone();
        let n = n.clone();
        let progress = cfg.progress.clone();
        let marker = cfg.marker_ip.clone();
        let window = (write_start, write_end, cfg.write_rate);
        tokio::spawn(async move {
            numbered_writes(
                addr,
                timeout,
                window,
                Check::Ok,
                &shared.times,
                progress.as_deref(),
                |seq| n.register(&svc, &marker, (MARKER_BASE_PORT + seq) as u16),
            )
            .await
        })
    };

    let writes = writer.await.map_err(|e| format!("writer: {e}"))?;
    let mut push = OpStats::default();
    let mut push_from_send = OpStats::default();
    let (mut datagrams, mut early) = (0, 0);
    let max_ok = (1..=writes_planned as usize)
        .filter(|&s| shared.times.ok_ns[s].load(Ordering::Acquire) != NOT_YET)
        .collect::<Vec<_>>();
    for s in subs {
        let r = s.await.map_err(|e| format!("subscriber: {e}"))?;
        push.merge(&r.stats);
        push_from_send.merge(&r.from_send);
        datagrams += r.datagrams;
        early += r.early;
        let missing = max_ok
            .iter()
            .filter(|&&seq| seq as u64 > r.last_seen)
            .count() as u64;
        push.record_err(ErrorKind::PushMissing, missing);
    }
    let queries = refresher.await.map_err(|e| format!("refresher: {e}"))?;
    Ok(SubscribeResult {
        writes,
        queries,
        push,
        push_from_send,
        datagrams,
        early,
        measured: cfg.duration,
    })
}

async fn query(
    conn: &mut Option<Conn>,
    addr: std::net::SocketAddr,
    timeout: Duration,
    req: &[u8],
) -> Result<(), ErrorKind> {
    query_check(conn, addr, timeout, req, Check::Hosts).await
}

async fn query_check(
    conn: &mut Option<Conn>,
    addr: std::net::SocketAddr,
    timeout: Duration,
    req: &[u8],
    check: Check,
) -> Result<(), ErrorKind> {
    if conn.is_none() {
        *conn = Some(
            Conn::connect(addr, timeout)
                .await
                .map_err(|_| ErrorKind::Connect)?,
        );
    }
    let c = conn.as_mut().expect("connected");
    match c.exchange(req).await {
        Ok(h) => {
            let r = check_response(check, h.status, c.body());
            if !h.keep_alive {
                *conn = None;
            }
            r
        }
        Err(_) => {
            *conn = None;
            Err(ErrorKind::Io)
        }
    }
}

struct SubResult {
    stats: OpStats,
    from_send: OpStats,
    datagrams: u64,
    early: u64,
    last_seen: u64,
}

/// CLOCK_REALTIME now, in ns.
fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Receives one datagram with the kernel's receive timestamp (CLOCK_REALTIME ns), when the
/// socket has `SO_TIMESTAMPNS` on.
async fn recv_stamped(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, std::net::SocketAddr, Option<u64>)> {
    use std::os::fd::AsRawFd;
    loop {
        sock.readable().await?;
        match sock.try_io(tokio::io::Interest::READABLE, || {
            recvmsg_stamped(sock.as_raw_fd(), buf)
        }) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

fn recvmsg_stamped(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
) -> std::io::Result<(usize, std::net::SocketAddr, Option<u64>)> {
    // SAFETY: recvmsg into our own buffers; control messages are walked with the libc macros
    // within `controllen`, and the timestamp is read unaligned.
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as _;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut stamp = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        let from = std::net::SocketAddr::from((
            std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
            u16::from_be(addr.sin_port),
        ));
        Ok((n as usize, from, stamp))
    }
}

/// Turns on kernel receive timestamps (`SO_TIMESTAMPNS`) for `sock`.
fn enable_timestamps(sock: &UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int option value on a socket we own.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as _,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

async fn subscriber(
    sock: UdpSocket,
    shared: Arc<Shared>,
    marker_ip: String,
    until: Instant,
) -> SubResult {
    let mut r = SubResult {
        stats: OpStats::default(),
        from_send: OpStats::default(),
        datagrams: 0,
        early: 0,
        last_seen: 0,
    };
    let mut buf = vec![0u8; 65536];
    loop {
        let got = tokio::time::timeout_at(until.into(), recv_stamped(&sock, &mut buf)).await;
        let (len, from, stamp) = match got {
            Err(_) => break,
            Ok(Err(_)) => continue,
            Ok(Ok(x)) => x,
        };
        let now_ns = match stamp {
            Some(at) => at.saturating_sub(shared.t0_wall_ns),
            None => shared.t0.elapsed().as_nanos() as u64,
        };
        r.datagrams += 1;
        let push = match decode_push(&buf[..len]) {
            Ok(p) => p,
            Err(_) => {
                r.stats.record_err(ErrorKind::PushDecode, 1);
                continue;
            }
        };
        let _ = sock.send_to(&ack(&push.last_ref_time), from).await;
        if push.kind != "dom" {
            continue;
        }
        let Some(max) = max_marker_seq(&push.data, &marker_ip) else {
            continue;
        };
        let max = max.min(shared.times.ok_ns.len() as u64 - 1);
        for seq in r.last_seen + 1..=max {
            let sent = shared.times.sent_ns[seq as usize].load(Ordering::Acquire);
            if sent != NOT_YET {
                r.from_send.record_ok(now_ns.saturating_sub(sent));
            }
            match shared.times.ok_ns[seq as usize].load(Ordering::Acquire) {
                // The write failed or has not been read back yet: a datagram
                // that beats the HTTP response counts as ~0 latency.
                NOT_YET => {
                    r.early += 1;
                    r.stats.record_ok(1);
                }
                ok => r.stats.record_ok(now_ns.saturating_sub(ok)),
            }
        }
        r.last_seen = r.last_seen.max(max);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn packet(data: &str) -> Vec<u8> {
        serde_json::json!({"type":"dom","data":data,"lastRefTime":912345678901234567u64})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn the_fast_path_reads_dom_packets_without_parsing() {
        let data = r#"{"hosts":[{"ip":"127.9.9.9","port":40007}],"name":"x"}"#;
        // Muster's field order (serde_json may sort `json!` keys, so build it by hand).
        let pkt = format!(
            r#"{{"type":"dom","data":{},"lastRefTime":912345678901234567}}"#,
            serde_json::to_string(data).unwrap()
        );
        let p = scan_push(pkt.as_bytes()).expect("fast path");
        assert_eq!(p.last_ref_time, "912345678901234567");
        assert_eq!(
            max_marker_seq(&p.data, "127.9.9.9"),
            Some(40007 - MARKER_BASE_PORT)
        );
    }

    #[test]
    fn decodes_plain_and_gzip() {
        let data = format!(
            r#"{{"hosts":[{{"ip":"{MARKER_IP}","port":10003}},{{"ip":"{MARKER_IP}","port":10007}},{{"ip":"10.0.0.1","port":10009}},{{"ip":"{MARKER_IP}","port":9}}],"name":"x"}}"#
        );
        let plain = packet(&data);
        let p = decode_push(&plain).unwrap();
        assert_eq!(p.kind, "dom");
        assert_eq!(p.last_ref_time, "912345678901234567");
        assert_eq!(max_marker_seq(&p.data, MARKER_IP), Some(7));
        assert_eq!(max_marker_seq(&p.data, "10.254.9.9"), None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        assert_eq!(decode_push(&gz).unwrap(), p);
        assert!(decode_push(b"\x1f\x8bgarbage").is_err());
        assert_eq!(max_marker_seq(r#"{"hosts":[]}"#, MARKER_IP), None);
        let ip = run_marker_ip();
        assert!(
            ip.starts_with("10.254.") && ip.split('.').count() == 4,
            "{ip}"
        );
    }

    #[test]
    fn ack_format() {
        assert_eq!(
            String::from_utf8(ack("42")).unwrap(),
            r#"{"type":"push-ack","lastRefTime":"42","data":""}"#
        );
        let p = decode_push(br#"{"type":"dom","data":"{}","lastRefTime":"7"}"#).unwrap();
        assert_eq!(p.last_ref_time, "7");
    }
}
