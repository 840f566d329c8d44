//! UDP push to subscribers: the Nacos 1.x `dom` packet path.
//!
//! An `instance/list` with `udpPort > 0` from a client that Nacos would push to registers (or
//! refreshes) a [`Target`] on the service's owner shard. When the owner applies a change it
//! pushes at once; changes that land while a round is being sent are merged into one follow-up
//! round carrying the newest revision. Every round gets a fresh `lastRefTime` (increasing,
//! below 2^53) shared by all its packets; acks are matched by address and `lastRefTime`. An
//! unacked packet is re-sent once after the ack timeout and counted failed after a second one.
//! A newer packet replaces an older pending one, so a target never gets an older revision after
//! a newer one. Targets expire 10 s after their last query; memory is bounded by a target cap.

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
        for t in list.iter_mut() {
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
            out.push(Outgoing {
                addr: t.sub.addr,
                packet,
                resend: false,
            });
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
    /// packet. Anything else counts as junk. O(targets of services with pending packets at
    /// `from`) at worst; bounded by the target cap.
    pub fn ack(&mut self, from: SocketAddr, datagram: &[u8]) -> bool {
        let Some(ref_time) = parse_ack(datagram) else {
            self.stats.junk += 1;
            return false;
        };
        // Nacos matches ip, port and lastRefTime. A client whose reported `clientIP` is not the
        // address its ack leaves from (another local interface, NAT) still acks the right
        // packet: fall back to port and lastRefTime, which is unique per round on this shard.
        for exact in [true, false] {
            for list in self.targets.values_mut() {
                for t in list.iter_mut() {
                    let addr_ok = if exact {
                        t.sub.addr == from
                    } else {
                        t.sub.addr.port() == from.port()
                    };
                    if addr_ok && t.pending.as_ref().is_some_and(|p| p.ref_time == ref_time) {
                        t.pending = None;
                        self.stats.acked += 1;
                        return true;
                    }
                }
            }
        }
        self.stats.junk += 1;
        false
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
        out
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
        let mut p = Push::new(
            PushConfig {
                ack_timeout_ms: 100,
                ..PushConfig::default()
            },
            1,
        );
        p.subscribe(&key(), sub(9000), 0);
        p.subscribe(&key(), sub(9001), 0);
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

    #[test]
    fn a_newer_packet_replaces_the_pending_older_one() {
        let mut p = Push::new(
            PushConfig {
                ack_timeout_ms: 100,
                ..PushConfig::default()
            },
            1,
        );
        p.subscribe(&key(), sub(9000), 0);
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
