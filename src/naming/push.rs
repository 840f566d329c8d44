//! UDP push to subscribers: the Nacos 1.x `dom` packet path.
//!
//! An `instance/list` with `udpPort > 0` from a client that Nacos would push to registers (or
//! refreshes) a [`Target`] on the service's owner shard. When the owner applies a change it
//! pushes at once; changes that land while a round is being sent are merged into one follow-up
//! round carrying the newest revision. Every round gets a fresh `lastRefTime` (increasing,
//! below 2^53) shared by all its packets; acks are matched by address and `lastRefTime`. An
//! unacked packet is re-sent once after the ack timeout and counted failed after a second one;
//! a target whose packets fail [`MAX_MISSES`] times in a row is dropped (its client's next
//! query subscribes it afresh). A newer packet replaces an older pending one, so a target never
//! gets an older revision after a newer one. Targets expire 10 s after their last query; memory
//! is bounded by a target cap.
//!
//! Acks are matched through an index of the rounds still waiting for acks (`lastRefTime` →
//! service, and port → targets of that round), so a datagram costs a parse and a few hash
//! probes whatever the number of targets: junk, random or replayed acks cannot make the ack
//! socket scan the push table (rows P2–P4).

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;

use crate::naming::service::ServiceKey;
use crate::naming::view::{ListQuery, ServiceView};

/// `cacheMillis` told to push targets (Nacos `defaultPushCacheMillis`).
pub const PUSH_CACHE_MILLIS: u64 = 10_000;
/// Packets at or above this many bytes are gzipped.
pub const GZIP_THRESHOLD: usize = 1024;
/// Largest datagram read from the ack socket.
pub const MAX_ACK_BYTES: usize = 2048;
/// Consecutive failed packets (each sent twice, never acked) after which a target is dropped.
pub const MAX_MISSES: u32 = 3;

/// Push settings.
#[derive(Debug, Clone, Copy)]
pub struct PushConfig {
    /// Whether push is on. Default true.
    pub enabled: bool,
    /// A target expires this long after its last query (ms). Default 10 000.
    pub target_ttl_ms: u64,
    /// An unacked packet is re-sent after this long, and dropped after twice this (ms).
    /// Default 10 000.
    pub ack_timeout_ms: u64,
    /// Most targets one shard keeps. Default 100 000.
    pub max_targets: usize,
    /// Fault injection: drop this share of outgoing datagrams (0–100). Default 0.
    pub drop_percent: u8,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: true,
            target_ttl_ms: 10_000,
            ack_timeout_ms: 10_000,
            max_targets: 100_000,
            drop_percent: 0,
        }
    }
}

/// Whether Nacos would push to this User-Agent (`PushService.canEnablePush`): Java ≥ 0.1.0,
/// DNS ≥ 0.4.3, C ≥ 1.0.12, Go ≥ 0.1.0, C# ≥ 0.9.0. Node presents itself as Java 1.0.0.
pub fn agent_can_push(agent: &str) -> bool {
    const MIN: [(&str, [u64; 3]); 5] = [
        ("Nacos-Java-Client:v", [0, 1, 0]),
        ("Nacos-DNS:v", [0, 4, 3]),
        ("Nacos-C-Client:v", [1, 0, 12]),
        ("Nacos-Go-Client:v", [0, 1, 0]),
        ("Nacos-CSharp-Client:v", [0, 9, 0]),
    ];
    MIN.iter().any(|(prefix, min)| {
        agent
            .strip_prefix(prefix)
            .map(|v| version_tuple(v) >= *min)
            .unwrap_or(false)
    })
}

fn version_tuple(v: &str) -> [u64; 3] {
    let mut out = [0; 3];
    for (i, part) in v.split(['.', '-']).take(3).enumerate() {
        out[i] = part
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
    }
    out
}

/// A subscriber registered by a list query.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    /// Where datagrams go (`clientIP` or the peer address, and `udpPort`).
    pub addr: SocketAddr,
    /// `clusters` exactly as queried.
    pub clusters: String,
    /// The client's User-Agent.
    pub agent: String,
    /// Whether the client sees grouped names (Java ≥ 1.0.0).
    pub grouped: bool,
    /// `app`.
    pub app: String,
}

#[derive(Debug)]
struct Pending {
    ref_time: u64,
    packet: Bytes,
    sent_at: u64,
    resent: bool,
}

#[derive(Debug)]
struct Target {
    sub: Subscription,
    last_query: u64,
    pending: Option<Pending>,
    /// Packets failed in a row (reset by an ack); at [`MAX_MISSES`] the target is dropped.
    misses: u32,
}

/// A round still waiting for acks: its service, and the targets it was sent to by port
/// (address, position in the service's target list, whether still unacked). The round leaves
/// the index when its last ack arrives; the index is rebuilt from the targets' pending
/// packets at every sweep (the only place positions change), and a service's newer round
/// replaces its older one.
#[derive(Debug)]
struct Round {
    key: ServiceKey,
    by_port: HashMap<u16, Vec<Waiting>>,
    /// Entries of `by_port` still unacked.
    unacked: usize,
}

/// One target of a [`Round`].
#[derive(Debug)]
struct Waiting {
    addr: SocketAddr,
    at: usize,
    unacked: bool,
}

/// Counters the push path exports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushStats {
    /// Datagrams sent (first sends).
    pub sent: u64,
    /// Acks matched.
    pub acked: u64,
    /// Datagrams re-sent after the ack timeout.
    pub resent: u64,
    /// Packets given up on after the re-send went unacked.
    pub failed: u64,
    /// Targets dropped after [`MAX_MISSES`] failed packets in a row.
    pub dropped: u64,
    /// Datagrams that failed to send, or were dropped by fault injection.
    pub send_errors: u64,
    /// Datagrams on the ack socket that were not a matching ack.
    pub junk: u64,
    /// Current targets.
    pub targets: u64,
}

/// One datagram to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Destination.
    pub addr: SocketAddr,
    /// The packet bytes (gzipped if large).
    pub packet: Bytes,
    /// Whether this is a re-send.
    pub resend: bool,
}

/// A shard's push state: targets of the services it owns.
#[derive(Debug)]
pub struct Push {
    cfg: PushConfig,
    targets: HashMap<ServiceKey, Vec<Target>>,
    count: usize,
    /// Services with a round being sent, and when the first change that arrived during it was
    /// published (that change needs one more round).
    in_flight: HashMap<ServiceKey, Option<Instant>>,
    /// Rounds waiting for acks, by `lastRefTime`: each service's latest, plus (until the next
    /// sweep drops them) older ones still pending at expired targets. At most one entry per
    /// target with a pending packet.
    rounds: HashMap<u64, Round>,
    /// Each service's latest round in `rounds`.
    round_of: HashMap<ServiceKey, u64>,
    last_ref: u64,
    stats: PushStats,
}

impl Push {
    /// Empty push state. `wall_ms` seeds `lastRefTime` (microsecond-scaled, below 2^53).
    pub fn new(cfg: PushConfig, wall_ms: u64) -> Self {
        Push {
            cfg,
            targets: HashMap::new(),
            count: 0,
            in_flight: HashMap::new(),
            rounds: HashMap::new(),
            round_of: HashMap::new(),
            last_ref: wall_ms.saturating_mul(1000),
            stats: PushStats::default(),
        }
    }

    /// Settings.
    pub fn config(&self) -> PushConfig {
        self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> PushStats {
        PushStats {
            targets: self.count as u64,
            ..self.stats
        }
    }

    /// Registers or refreshes a target at monotonic time `now` (ms). Returns false when the
    /// shard is at its target cap and this is a new target.
    pub fn subscribe(&mut self, key: &ServiceKey, sub: Subscription, now: u64) -> bool {
        let list = self.targets.entry(key.clone()).or_default();
        if let Some(t) = list
            .iter_mut()
            .find(|t| t.sub.addr == sub.addr && t.sub.clusters == sub.clusters)
        {
            t.last_query = now;
            t.sub = sub;
            return true;
        }
        if self.count >= self.cfg.max_targets {
            if list.is_empty() {
                self.targets.remove(key);
            }
            return false;
        }
        list.push(Target {
            sub,
            last_query: now,
            pending: None,
            misses: 0,
        });
        self.count += 1;
        true
    }

    /// The live targets of a service.
    pub fn subscribers(&self, key: &ServiceKey, now: u64) -> Vec<Subscription> {
        self.targets
            .get(key)
            .map(|l| {
                l.iter()
                    .filter(|t| now.saturating_sub(t.last_query) <= self.cfg.target_ttl_ms)
                    .map(|t| t.sub.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A change to `key` was published at `at`. Returns true if the caller should start a push
    /// round now; false if there are no targets, or a round is in flight (it will pick this up).
    pub fn changed(&mut self, key: &ServiceKey, at: Instant) -> bool {
        if !self.cfg.enabled || !self.targets.contains_key(key) {
            return false;
        }
        match self.in_flight.get_mut(key) {
            Some(again) => {
                again.get_or_insert(at);
                false
            }
            None => {
                self.in_flight.insert(key.clone(), None);
                true
            }
        }
    }

    /// Ends a round. If changes arrived meanwhile, another round is due: returns when the first
    /// of them was published.
    pub fn round_done(&mut self, key: &ServiceKey) -> Option<Instant> {
        match self.in_flight.get_mut(key) {
            Some(again @ Some(_)) => again.take(),
            _ => {
                self.in_flight.remove(key);
                None
            }
        }
    }

    /// Builds one round for `view` (or an empty list if the service is gone) at monotonic `now`
    /// and wall-clock `wall_ms`: one packet per distinct (clusters, naming) among live targets.
    pub fn prepare(
        &mut self,
        key: &ServiceKey,
        view: Option<&ServiceView>,
        now: u64,
        wall_ms: u64,
    ) -> Vec<Outgoing> {
        let ttl = self.cfg.target_ttl_ms;
        let Some(list) = self.targets.get_mut(key) else {
            return Vec::new();
        };
        self.last_ref = (self.last_ref + 1).max(wall_ms.saturating_mul(1000));
        let ref_time = self.last_ref;
        let mut rendered: HashMap<(String, bool), Bytes> = HashMap::new();
        let mut out = Vec::new();
        let mut by_port: HashMap<u16, Vec<Waiting>> = HashMap::new();
        for (at, t) in list.iter_mut().enumerate() {
            if now.saturating_sub(t.last_query) > ttl {
                continue;
            }
            let variant = (t.sub.clusters.clone(), t.sub.grouped);
            let packet = rendered
                .entry(variant)
                .or_insert_with(|| {
                    let data = render_data(key, view, &t.sub, wall_ms);
                    packet(&data, ref_time)
                })
                .clone();
            // A newer packet supersedes any older one still waiting for its ack.
            t.pending = Some(Pending {
                ref_time,
                packet: packet.clone(),
                sent_at: now,
                resent: false,
            });
            by_port.entry(t.sub.addr.port()).or_default().push(Waiting {
                addr: t.sub.addr,
                at,
                unacked: true,
            });
            out.push(Outgoing {
                addr: t.sub.addr,
                packet,
                resend: false,
            });
        }
        // This round supersedes the service's previous one: its live targets' pending packets
        // were just replaced (an expired target still holding an older packet is not waited
        // for: its ack counts as junk and the sweep fails it).
        if let Some(old) = self.round_of.remove(key) {
            self.rounds.remove(&old);
        }
        if !by_port.is_empty() {
            self.round_of.insert(key.clone(), ref_time);
            self.rounds.insert(
                ref_time,
                Round {
                    key: key.clone(),
                    by_port,
                    unacked: out.len(),
                },
            );
        }
        out
    }

    /// Counts a first send (or its failure).
    pub fn record_send(&mut self, ok: bool, resend: bool) {
        match (ok, resend) {
            (true, false) => self.stats.sent += 1,
            (true, true) => self.stats.resent += 1,
            (false, _) => self.stats.send_errors += 1,
        }
    }

    /// Handles one datagram from `from`: a matching `push-ack` clears that target's pending
    /// packet. Anything else counts as junk. A parse and a few hash probes: the round by
    /// `lastRefTime`, then its targets on `from`'s port (a list longer than one only when
    /// targets of one service share a port on several hosts).
    pub fn ack(&mut self, from: SocketAddr, datagram: &[u8]) -> bool {
        if self.take_ack(from, datagram) {
            self.stats.acked += 1;
            true
        } else {
            self.stats.junk += 1;
            false
        }
    }

    fn take_ack(&mut self, from: SocketAddr, datagram: &[u8]) -> bool {
        let Some(ref_time) = parse_ack(datagram) else {
            return false;
        };
        let Some(round) = self.rounds.get_mut(&ref_time) else {
            return false;
        };
        let Some(on_port) = round.by_port.get_mut(&from.port()) else {
            return false;
        };
        // Nacos matches ip, port and lastRefTime. A client whose reported `clientIP` is not the
        // address its ack leaves from (another local interface, NAT) still acks the right
        // packet: fall back to port and lastRefTime, which is unique per round on this shard.
        // The fallback is only for an address the round was not sent to: a duplicate from an
        // acked target never clears another target's packet.
        let w = match on_port.iter_mut().position(|w| w.addr == from) {
            Some(i) => &mut on_port[i],
            None => match on_port.iter_mut().find(|w| w.unacked) {
                Some(w) => w,
                None => return false,
            },
        };
        if !w.unacked {
            return false;
        }
        w.unacked = false;
        let (addr, at) = (w.addr, w.at);
        round.unacked -= 1;
        let key = round.key.clone();
        if round.unacked == 0 {
            self.rounds.remove(&ref_time);
            self.round_of.remove(&key);
        }
        let Some(t) = self.targets.get_mut(&key).and_then(|l| l.get_mut(at)) else {
            return false;
        };
        if t.sub.addr != addr || t.pending.as_ref().is_none_or(|p| p.ref_time != ref_time) {
            return false;
        }
        t.pending = None;
        t.misses = 0;
        true
    }

    /// Periodic upkeep at monotonic `now`: expires idle targets and returns the re-sends due.
    /// A packet unacked for the ack timeout is re-sent once; unacked again, it is dropped and
    /// counted failed.
    pub fn sweep(&mut self, now: u64) -> Vec<Outgoing> {
        let ttl = self.cfg.target_ttl_ms;
        let timeout = self.cfg.ack_timeout_ms;
        let mut out = Vec::new();
        let mut removed = 0;
        let stats = &mut self.stats;
        self.targets.retain(|_, list| {
            list.retain_mut(|t| {
                if let Some(p) = &mut t.pending {
                    if now.saturating_sub(p.sent_at) >= timeout {
                        if p.resent {
                            stats.failed += 1;
                            t.pending = None;
                            t.misses += 1;
                            if t.misses >= MAX_MISSES {
                                stats.dropped += 1;
                                removed += 1;
                                return false;
                            }
                        } else {
                            p.resent = true;
                            p.sent_at = now;
                            out.push(Outgoing {
                                addr: t.sub.addr,
                                packet: p.packet.clone(),
                                resend: true,
                            });
                        }
                    }
                }
                let live = now.saturating_sub(t.last_query) <= ttl || t.pending.is_some();
                if !live {
                    removed += 1;
                }
                live
            });
            !list.is_empty()
        });
        self.count -= removed;
        self.reindex();
        out
    }

    /// Rebuilds the ack index from the targets' pending packets (positions changed).
    fn reindex(&mut self) {
        self.rounds.clear();
        self.round_of.clear();
        for (key, list) in &self.targets {
            for (at, t) in list.iter().enumerate() {
                let Some(p) = &t.pending else { continue };
                let round = self.rounds.entry(p.ref_time).or_insert_with(|| Round {
                    key: key.clone(),
                    by_port: HashMap::new(),
                    unacked: 0,
                });
                round.unacked += 1;
                round
                    .by_port
                    .entry(t.sub.addr.port())
                    .or_default()
                    .push(Waiting {
                        addr: t.sub.addr,
                        at,
                        unacked: true,
                    });
                let latest = self.round_of.entry(key.clone()).or_insert(p.ref_time);
                *latest = (*latest).max(p.ref_time);
            }
        }
    }

    /// Whether the fault-injection knob drops datagram number `n`.
    pub fn drops(&self, n: u64) -> bool {
        let p = u64::from(self.cfg.drop_percent.min(100));
        p > 0 && (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % 100 < p
    }
}

/// The `instance/list` body a target would get, with `cacheMillis` 10000 and all hosts.
fn render_data(
    key: &ServiceKey,
    view: Option<&ServiceView>,
    sub: &Subscription,
    wall_ms: u64,
) -> Vec<u8> {
    let q = ListQuery {
        clusters_raw: &sub.clusters,
        clusters: sub
            .clusters
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect(),
        healthy_only: false,
        grouped: sub.grouped,
        cache_millis: PUSH_CACHE_MILLIS,
        env: "",
        is_check: false,
        now_wall_ms: wall_ms,
    };
    match view.map(|v| v.render_list(&q)) {
        Some(Ok(chunks)) => chunks.concat(),
        _ => crate::naming::view::render_missing(&key.grouped, &q).to_vec(),
    }
}

/// `{"type":"dom","data":"<json string>","lastRefTime":N}`, gzipped at ≥ 1 KiB.
pub fn packet(data: &[u8], ref_time: u64) -> Bytes {
    let data = String::from_utf8_lossy(data);
    let mut json = Vec::with_capacity(data.len() + 64);
    json.extend_from_slice(b"{\"type\":\"dom\",\"data\":");
    json.extend_from_slice(serde_json::to_string(&*data).unwrap_or_default().as_bytes());
    json.extend_from_slice(b",\"lastRefTime\":");
    json.extend_from_slice(itoa::Buffer::new().format(ref_time).as_bytes());
    json.push(b'}');
    if json.len() < GZIP_THRESHOLD {
        return Bytes::from(json);
    }
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::fast(),
    );
    match gz.write_all(&json).and_then(|_| gz.finish()) {
        Ok(z) => Bytes::from(z),
        Err(_) => Bytes::from(json),
    }
}

/// Parses `{"type":"push-ack","lastRefTime":"<n>"|n,...}`.
pub fn parse_ack(d: &[u8]) -> Option<u64> {
    if d.len() > MAX_ACK_BYTES {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(d).ok()?;
    if v.get("type")?.as_str()? != "push-ack" {
        return None;
    }
    match v.get("lastRefTime")? {
        serde_json::Value::String(s) => s.trim().parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// The push address of a query: `clientIP` if it parses, else the peer's address.
pub fn target_addr(client_ip: Option<&str>, peer: IpAddr, udp_port: u16) -> SocketAddr {
    let ip = client_ip
        .and_then(|c| c.parse::<IpAddr>().ok())
        .unwrap_or(peer);
    SocketAddr::new(ip, udp_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::instance::{Instance, InstanceSpec, Timing};
    use crate::naming::service::ServiceMeta;
    use std::io::Read;
    use std::sync::Arc;

    fn key() -> ServiceKey {
        ServiceKey::new("public", "DEFAULT_GROUP@@orders")
    }

    fn sub(port: u16) -> Subscription {
        Subscription {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            clusters: String::new(),
            agent: "Nacos-Java-Client:v1.4.6".into(),
            grouped: true,
            app: String::new(),
        }
    }

    fn view(n: usize, rev: u64) -> ServiceView {
        let inst = (0..n)
            .map(|i| {
                let s = InstanceSpec::new(&format!("10.0.{}.{}", i / 256, i % 256), 80);
                Arc::new(Instance::build(
                    &s,
                    "DEFAULT".into(),
                    s.ip.as_str().into(),
                    Some(i as u32),
                    true,
                    Timing::default(),
                ))
            })
            .collect();
        ServiceView::new(key(), rev, Arc::new(ServiceMeta::default()), inst)
    }

    /// A push table with ack timeout `ack_timeout_ms` and a target on each of `ports`,
    /// subscribed at time 0.
    fn table(ack_timeout_ms: u64, ports: &[u16]) -> Push {
        let mut p = Push::new(
            PushConfig {
                ack_timeout_ms,
                ..PushConfig::default()
            },
            1,
        );
        for &port in ports {
            assert!(p.subscribe(&key(), sub(port), 0));
        }
        p
    }

    fn decode(p: &[u8]) -> serde_json::Value {
        let raw = if p.starts_with(&[0x1f, 0x8b]) {
            let mut s = Vec::new();
            flate2::read::GzDecoder::new(p).read_to_end(&mut s).unwrap();
            s
        } else {
            p.to_vec()
        };
        serde_json::from_slice(&raw).unwrap()
    }

    #[test]
    fn agents_that_nacos_pushes_to() {
        assert!(agent_can_push("Nacos-Java-Client:v1.4.6"));
        assert!(agent_can_push("Nacos-Java-Client:v1.0.0"));
        assert!(agent_can_push("Nacos-Go-Client:v1.0.0"));
        assert!(!agent_can_push("Nacos-DNS:v0.4.2"));
        assert!(agent_can_push("Nacos-C-Client:v1.0.12"));
        assert!(!agent_can_push("Nacos-Python-Client:v0.1.17"));
        assert!(!agent_can_push("curl/8.0"));
    }

    #[test]
    fn packets_are_dom_json_and_gzipped_above_1k() {
        let mut p = Push::new(PushConfig::default(), 1_700_000_000_000);
        p.subscribe(&key(), sub(9000), 0);
        assert!(p.changed(&key(), Instant::now()));
        let small = p.prepare(&key(), Some(&view(1, 1)), 0, 1_700_000_000_000);
        assert_eq!(small.len(), 1);
        assert!(!small[0].packet.starts_with(&[0x1f, 0x8b]));
        let v = decode(&small[0].packet);
        assert_eq!(v["type"], "dom");
        let data: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["cacheMillis"], 10000);
        assert_eq!(data["hosts"].as_array().unwrap().len(), 1);
        let r1 = v["lastRefTime"].as_u64().unwrap();
        assert!(r1 < (1 << 53));
        let big = p.prepare(&key(), Some(&view(20, 2)), 0, 1_700_000_000_000);
        assert!(
            big[0].packet.starts_with(&[0x1f, 0x8b]),
            "≥1 KiB is gzipped"
        );
        let v = decode(&big[0].packet);
        assert!(
            v["lastRefTime"].as_u64().unwrap() > r1,
            "lastRefTime increases per target"
        );
    }

    #[test]
    fn acks_clear_and_unacked_packets_are_resent_once() {
        let mut p = table(100, &[9000, 9001]);
        let out = p.prepare(&key(), Some(&view(1, 1)), 0, 1);
        let r = decode(&out[0].packet)["lastRefTime"].as_u64().unwrap();
        let ack = format!("{{\"type\":\"push-ack\",\"lastRefTime\":\"{r}\",\"data\":\"\"}}");
        assert!(p.ack(sub(9000).addr, ack.as_bytes()));
        assert!(
            !p.ack(sub(9000).addr, ack.as_bytes()),
            "an ack matches once"
        );
        assert!(!p.ack(sub(9001).addr, b"junk"));
        assert_eq!(p.sweep(50).len(), 0);
        let again = p.sweep(100);
        assert_eq!(again.len(), 1, "only the unacked target is re-sent");
        assert_eq!(again[0].addr, sub(9001).addr);
        assert!(again[0].resend);
        assert_eq!(p.sweep(150).len(), 0);
        assert_eq!(p.sweep(200).len(), 0, "never a third send");
        assert_eq!(p.stats().failed, 1);
        assert_eq!(p.stats().acked, 1);
        // Numeric lastRefTime (Node) matches too.
        let out = p.prepare(&key(), Some(&view(1, 2)), 300, 1);
        let r = decode(&out[1].packet)["lastRefTime"].as_u64().unwrap();
        assert!(p.ack(
            sub(9001).addr,
            format!("{{\"type\":\"push-ack\",\"lastRefTime\":{r}}}").as_bytes()
        ));
        // An ack from another local address with the target's port still matches.
        let out = p.prepare(&key(), Some(&view(1, 3)), 400, 1);
        let r = decode(&out[0].packet)["lastRefTime"].as_u64().unwrap();
        let other = SocketAddr::from(([192, 0, 2, 7], 9000));
        let ack = format!("{{\"type\":\"push-ack\",\"lastRefTime\":\"{r}\"}}");
        assert!(p.ack(other, ack.as_bytes()));
    }

    fn ack_of(out: &Outgoing) -> String {
        let r = decode(&out.packet)["lastRefTime"].as_u64().unwrap();
        format!("{{\"type\":\"push-ack\",\"lastRefTime\":\"{r}\"}}")
    }

    #[test]
    fn acks_still_match_after_a_sweep_moved_the_targets() {
        let mut p = Push::new(
            PushConfig {
                ack_timeout_ms: 1_000,
                target_ttl_ms: 100,
                ..PushConfig::default()
            },
            1,
        );
        for port in [9000, 9001, 9002] {
            p.subscribe(&key(), sub(port), 0);
        }
        let first = p.prepare(&key(), Some(&view(1, 1)), 0, 1);
        assert!(p.ack(sub(9000).addr, ack_of(&first[0]).as_bytes()));
        // 9000 acked and idle: the sweep removes it, and 9001 and 9002 move up one place.
        p.subscribe(&key(), sub(9001), 150);
        p.subscribe(&key(), sub(9002), 150);
        assert!(p.sweep(200).is_empty());
        assert_eq!(p.stats().targets, 2);
        assert!(p.ack(sub(9002).addr, ack_of(&first[2]).as_bytes()));
        assert!(p.ack(sub(9001).addr, ack_of(&first[1]).as_bytes()));
        assert_eq!(p.stats().acked, 3);
        // A round superseded by a newer one is no longer waited for.
        let old = p.prepare(&key(), Some(&view(1, 2)), 200, 1);
        let new = p.prepare(&key(), Some(&view(1, 3)), 200, 1);
        assert!(!p.ack(sub(9001).addr, ack_of(&old[0]).as_bytes()));
        assert!(p.ack(sub(9001).addr, ack_of(&new[0]).as_bytes()));
    }

    #[test]
    fn a_target_is_dropped_after_max_misses_in_a_row_and_an_ack_resets_the_count() {
        let mut p = table(100, &[9000, 9001]);
        let mut now = 0;
        // Both keep querying (so neither expires); 9000 acks every packet, 9001 none.
        for round in 0..u64::from(MAX_MISSES) {
            let out = p.prepare(&key(), Some(&view(1, round + 1)), now, 1);
            assert_eq!(out.len(), 2, "round {round}");
            assert!(p.ack(sub(9000).addr, ack_of(&out[0]).as_bytes()));
            for _ in 0..2 {
                now += 100;
                p.subscribe(&key(), sub(9000), now);
                p.subscribe(&key(), sub(9001), now);
                p.sweep(now);
            }
        }
        let s = p.stats();
        assert_eq!(s.failed, u64::from(MAX_MISSES));
        assert_eq!(s.dropped, 1);
        assert_eq!(s.targets, 1);
        let subs = p.subscribers(&key(), now);
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].addr, sub(9000).addr);
        // Its next query subscribes it afresh.
        assert!(p.subscribe(&key(), sub(9001), now));
        assert_eq!(p.stats().targets, 2);
    }

    #[test]
    fn every_one_of_10k_targets_acks_once_and_junk_matches_nothing() {
        let mut p = Push::new(PushConfig::default(), 1);
        let addr =
            |i: u32| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 9000 + (i % 7) as u16));
        for i in 0..10_000 {
            let s = Subscription {
                addr: addr(i),
                ..sub(0)
            };
            assert!(p.subscribe(&key(), s, 0));
        }
        let out = p.prepare(&key(), Some(&view(1, 1)), 0, 1);
        assert_eq!(out.len(), 10_000);
        let ack = ack_of(&out[0]);
        for o in out.iter().rev() {
            assert!(!p.ack(SocketAddr::from(([10, 9, 9, 9], 1)), ack.as_bytes()));
            assert!(p.ack(o.addr, ack.as_bytes()), "{}", o.addr);
            assert!(
                !p.ack(o.addr, ack.as_bytes()),
                "a duplicate matches nothing"
            );
        }
        assert_eq!(p.stats().acked, 10_000);
        assert_eq!(p.stats().junk, 20_000);
        assert!(
            p.rounds.is_empty() && p.round_of.is_empty(),
            "a fully acked round leaves the index"
        );
    }

    #[test]
    fn a_newer_packet_replaces_the_pending_older_one() {
        let mut p = table(100, &[9000]);
        p.prepare(&key(), Some(&view(1, 1)), 0, 1);
        let newer = p.prepare(&key(), Some(&view(2, 2)), 50, 1);
        let resent = p.sweep(160);
        assert_eq!(resent.len(), 1);
        assert_eq!(
            resent[0].packet, newer[0].packet,
            "only the newest revision is re-sent"
        );
    }

    #[test]
    fn rounds_merge_changes_that_arrive_in_flight() {
        let mut p = Push::new(PushConfig::default(), 1);
        let t0 = Instant::now();
        assert!(!p.changed(&key(), t0), "no targets, no push");
        p.subscribe(&key(), sub(9000), 0);
        assert!(p.changed(&key(), t0), "the first change is never held back");
        let t1 = Instant::now();
        assert!(!p.changed(&key(), t1));
        assert!(!p.changed(&key(), Instant::now()));
        assert_eq!(p.round_done(&key()), Some(t1), "one merged follow-up round");
        assert_eq!(p.round_done(&key()), None);
        assert!(p.changed(&key(), Instant::now()));
    }

    #[test]
    fn targets_expire_and_are_capped() {
        let mut p = Push::new(
            PushConfig {
                max_targets: 2,
                target_ttl_ms: 1000,
                ..PushConfig::default()
            },
            1,
        );
        assert!(p.subscribe(&key(), sub(1), 0));
        assert!(p.subscribe(&key(), sub(2), 0));
        assert!(!p.subscribe(&key(), sub(3), 0), "cap reached");
        assert!(
            p.subscribe(&key(), sub(2), 900),
            "refresh is not a new target"
        );
        p.sweep(1500);
        assert_eq!(p.subscribers(&key(), 1500).len(), 1);
        assert_eq!(p.stats().targets, 1);
        p.sweep(2000);
        assert_eq!(p.stats().targets, 0);
    }
}
