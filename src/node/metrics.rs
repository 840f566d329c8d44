//! Prometheus metrics.
//!
//! Each shard writes only its own block of relaxed atomics (no shared cache lines on the hot
//! path); `/metrics` sums nothing and labels every series by shard or endpoint. The text
//! exposition format is simple enough that writing it here beats pulling in a registry crate
//! whose global locks would sit on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::naming::push::PushStats;
use crate::naming::registry::Stats;

/// Status codes tracked individually; anything else counts as `other`.
const STATUSES: [u16; 11] = [200, 304, 400, 403, 404, 413, 431, 500, 501, 503, 0];
/// Latency bucket upper bounds in microseconds.
const BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

fn status_index(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUSES.len() - 1)
}

/// A latency histogram with fixed buckets ([`BUCKETS_US`] plus +Inf) and a sum, in
/// microseconds. Written by one shard, read by `/metrics`.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..=BUCKETS_US.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation of `micros` microseconds.
    pub fn record(&self, micros: u64) {
        let b = BUCKETS_US
            .iter()
            .position(|&ub| micros <= ub)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[b].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(micros, Relaxed);
    }

    /// Writes the sum of `hists` as one Prometheus histogram series `name{labels}`; writes
    /// nothing when it is empty.
    fn write<'a>(
        out: &mut String,
        name: &str,
        labels: &str,
        hists: impl Iterator<Item = &'a Histogram> + Clone,
    ) {
        let count = |b: usize| {
            hists
                .clone()
                .map(|h| h.buckets[b].load(Relaxed))
                .sum::<u64>()
        };
        let counts: Vec<u64> = (0..=BUCKETS_US.len()).map(count).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return;
        }
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (b, ub) in BUCKETS_US.iter().enumerate() {
            cum += counts[b];
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cum}",
                *ub as f64 / 1e6
            );
        }
        let sum: u64 = hists.map(|h| h.sum_us.load(Relaxed)).sum();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {}", sum as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braced} {total}");
    }
}

/// One shard's counters.
#[derive(Debug)]
pub struct ShardMetrics {
    requests: Vec<AtomicU64>,
    latency: Vec<Histogram>,
    /// Connections currently open.
    pub connections_open: AtomicU64,
    /// Connections closed at accept because of the cap (total, or the per-IP share near it).
    pub connections_rejected: AtomicU64,
    /// Connections closed because a request head did not arrive whole within the head
    /// deadline (`head_timeout_ms`).
    pub head_timeouts: AtomicU64,
    /// Requests refused by the HTTP layer (400, 413, 431) before reaching an endpoint.
    pub http_refused: AtomicU64,
    /// Writes sent to another shard.
    pub cross_shard_sent: AtomicU64,
    /// Writes refused because the owner's inbox stayed full.
    pub cross_shard_rejected: AtomicU64,
    services: AtomicU64,
    healthy: AtomicU64,
    unhealthy: AtomicU64,
    expired: AtomicU64,
    beat_timeouts: AtomicU64,
    empty_removed: AtomicU64,
    ephemeral: AtomicU64,
    ephemeral_sick: AtomicU64,
    expiry_deferred: AtomicU64,
    expiry_paused: AtomicU64,
    /// Current depth of this shard's inbox.
    pub inbox_depth: AtomicU64,
    push: [AtomicU64; 8],
    push_latency: Histogram,
}

impl ShardMetrics {
    /// Counters for `n` endpoints (labels given to [`Metrics::new`]).
    fn new(n: usize) -> Self {
        let zeros = |k: usize| (0..k).map(|_| AtomicU64::new(0)).collect();
        ShardMetrics {
            requests: zeros(n * STATUSES.len()),
            latency: (0..n).map(|_| Histogram::default()).collect(),
            connections_open: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            head_timeouts: AtomicU64::new(0),
            http_refused: AtomicU64::new(0),
            cross_shard_sent: AtomicU64::new(0),
            cross_shard_rejected: AtomicU64::new(0),
            services: AtomicU64::new(0),
            healthy: AtomicU64::new(0),
            unhealthy: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            beat_timeouts: AtomicU64::new(0),
            empty_removed: AtomicU64::new(0),
            ephemeral: AtomicU64::new(0),
            ephemeral_sick: AtomicU64::new(0),
            expiry_deferred: AtomicU64::new(0),
            expiry_paused: AtomicU64::new(0),
            inbox_depth: AtomicU64::new(0),
            push: Default::default(),
            push_latency: Histogram::default(),
        }
    }
}

impl ShardMetrics {
    /// Records one answered request of endpoint number `e` (an index into the labels given to
    /// [`Metrics::new`]).
    pub fn record(&self, e: usize, status: u16, micros: u64) {
        self.requests[e * STATUSES.len() + status_index(status)].fetch_add(1, Relaxed);
        self.latency[e].record(micros);
    }

    /// Copies the registry's counters.
    /// Copies the registry counters; `paused`: the mass-expiry guard holds back removals.
    pub fn set_registry(&self, s: Stats, paused: bool) {
        self.ephemeral.store(s.ephemeral, Relaxed);
        self.ephemeral_sick.store(s.ephemeral_sick, Relaxed);
        self.expiry_deferred.store(s.expiry_deferred, Relaxed);
        self.expiry_paused.store(u64::from(paused), Relaxed);
        self.services.store(s.services, Relaxed);
        self.healthy.store(s.healthy, Relaxed);
        self.unhealthy.store(s.unhealthy, Relaxed);
        self.expired.store(s.expired, Relaxed);
        self.beat_timeouts.store(s.beat_timeouts, Relaxed);
        self.empty_removed.store(s.empty_services_removed, Relaxed);
    }

    /// Copies the push counters.
    pub fn set_push(&self, s: PushStats) {
        for (slot, v) in self.push.iter().zip([
            s.sent,
            s.acked,
            s.resent,
            s.failed,
            s.send_errors,
            s.junk,
            s.targets,
            s.dropped,
        ]) {
            slot.store(v, Relaxed);
        }
    }

    /// Records one push's time from applying the change to sending the datagram.
    pub fn record_push_latency(&self, micros: u64) {
        self.push_latency.record(micros);
    }

    /// Registry counters as last copied.
    pub fn registry(&self) -> Stats {
        Stats {
            services: self.services.load(Relaxed),
            healthy: self.healthy.load(Relaxed),
            unhealthy: self.unhealthy.load(Relaxed),
            expired: self.expired.load(Relaxed),
            beat_timeouts: self.beat_timeouts.load(Relaxed),
            empty_services_removed: self.empty_removed.load(Relaxed),
            ephemeral: self.ephemeral.load(Relaxed),
            ephemeral_sick: self.ephemeral_sick.load(Relaxed),
            expiry_deferred: self.expiry_deferred.load(Relaxed),
        }
    }
}

/// All shards' metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Indexed by shard id.
    pub shards: Vec<ShardMetrics>,
    /// The `endpoint` label of each endpoint number.
    endpoints: &'static [&'static str],
}

impl Metrics {
    /// Metrics for `n` shards, counting requests per endpoint; `endpoints[e]` labels
    /// endpoint number `e` (the API layer's numbering).
    pub fn new(n: usize, endpoints: &'static [&'static str]) -> Self {
        Metrics {
            shards: (0..n).map(|_| ShardMetrics::new(endpoints.len())).collect(),
            endpoints,
        }
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(16 * 1024);
        s.push_str("# HELP muster_http_requests_total HTTP requests answered, by endpoint and status.\n# TYPE muster_http_requests_total counter\n");
        for (ep, name) in self.endpoints.iter().enumerate() {
            for (si, st) in STATUSES.iter().enumerate() {
                let n: u64 = self
                    .shards
                    .iter()
                    .map(|m| m.requests[ep * STATUSES.len() + si].load(Relaxed))
                    .sum();
                if n > 0 {
                    let st = if *st == 0 {
                        "other".to_string()
                    } else {
                        st.to_string()
                    };
                    let _ = writeln!(
                        s,
                        "muster_http_requests_total{{endpoint=\"{name}\",status=\"{st}\"}} {n}"
                    );
                }
            }
        }
        s.push_str("# HELP muster_http_request_duration_seconds Time from request head to response, by endpoint.\n# TYPE muster_http_request_duration_seconds histogram\n");
        for (ep, name) in self.endpoints.iter().enumerate() {
            let labels = format!("endpoint=\"{name}\"");
            let hists = self.shards.iter().map(|m| &m.latency[ep]);
            Histogram::write(
                &mut s,
                "muster_http_request_duration_seconds",
                &labels,
                hists,
            );
        }
        s.push_str("# HELP muster_push_latency_seconds Time from applying a change to sending its push datagram.\n# TYPE muster_push_latency_seconds histogram\n");
        let hists = self.shards.iter().map(|m| &m.push_latency);
        Histogram::write(&mut s, "muster_push_latency_seconds", "", hists);
        type Getter = fn(&ShardMetrics) -> u64;
        let per_shard: [(&str, &str, &str, Getter); 22] = [
            (
                "muster_services",
                "gauge",
                "Services owned by the shard.",
                |m| m.services.load(Relaxed),
            ),
            (
                "muster_instances_healthy",
                "gauge",
                "Healthy instances owned by the shard.",
                |m| m.healthy.load(Relaxed),
            ),
            (
                "muster_instances_unhealthy",
                "gauge",
                "Unhealthy instances owned by the shard.",
                |m| m.unhealthy.load(Relaxed),
            ),
            (
                "muster_instance_expirations_total",
                "counter",
                "Instances removed because their beats stopped.",
                |m| m.expired.load(Relaxed),
            ),
            (
                "muster_instance_beat_timeouts_total",
                "counter",
                "Instances marked unhealthy because a beat was missed.",
                |m| m.beat_timeouts.load(Relaxed),
            ),
            (
                "muster_expiry_paused",
                "gauge",
                "1 while the mass-expiry guard holds back removals: more than expiry_guard_percent of the shard's ephemeral instances are unhealthy.",
                |m| m.expiry_paused.load(Relaxed),
            ),
            (
                "muster_expiry_deferred_total",
                "counter",
                "Removals the mass-expiry guard held back (each re-check counts).",
                |m| m.expiry_deferred.load(Relaxed),
            ),
            (
                "muster_empty_services_removed_total",
                "counter",
                "Services removed after staying empty.",
                |m| m.empty_removed.load(Relaxed),
            ),
            (
                "muster_cross_shard_queue_depth",
                "gauge",
                "Writes waiting in the shard's cross-shard inbox.",
                |m| m.inbox_depth.load(Relaxed),
            ),
            (
                "muster_cross_shard_sent_total",
                "counter",
                "Writes forwarded to the owning shard.",
                |m| m.cross_shard_sent.load(Relaxed),
            ),
            (
                "muster_connections_open",
                "gauge",
                "Open client connections.",
                |m| m.connections_open.load(Relaxed),
            ),
            (
                "muster_connections_rejected_total",
                "counter",
                "Connections closed at accept because of the connection cap, or because their IP already held its share of connections near the cap.",
                |m| m.connections_rejected.load(Relaxed),
            ),
            (
                "muster_http_head_timeouts_total",
                "counter",
                "Connections closed because a request head did not arrive whole within the head deadline (head_timeout_ms).",
                |m| m.head_timeouts.load(Relaxed),
            ),
            (
                "muster_http_refused_total",
                "counter",
                "Requests refused by the HTTP layer before reaching an endpoint (malformed head or framing: 400; body over the cap: 413; head over the cap: 431; a transfer coding other than chunked: 501); the connection is closed after the answer.",
                |m| m.http_refused.load(Relaxed),
            ),
            (
                "muster_push_sent_total",
                "counter",
                "Push datagrams sent (first sends).",
                |m| m.push[0].load(Relaxed),
            ),
            (
                "muster_push_acked_total",
                "counter",
                "Push datagrams acknowledged by the subscriber.",
                |m| m.push[1].load(Relaxed),
            ),
            (
                "muster_push_resent_total",
                "counter",
                "Push datagrams re-sent after the ack timeout.",
                |m| m.push[2].load(Relaxed),
            ),
            (
                "muster_push_failed_total",
                "counter",
                "Pushes given up on after the re-send went unacknowledged.",
                |m| m.push[3].load(Relaxed),
            ),
            (
                "muster_push_send_errors_total",
                "counter",
                "Push datagrams that could not be sent (or were dropped by fault injection).",
                |m| m.push[4].load(Relaxed),
            ),
            (
                "muster_push_junk_total",
                "counter",
                "Datagrams on the push socket that were not a matching ack.",
                |m| m.push[5].load(Relaxed),
            ),
            ("muster_push_targets", "gauge", "Live push targets.", |m| {
                m.push[6].load(Relaxed)
            }),
            (
                "muster_push_dropped_total",
                "counter",
                "Push targets dropped after 3 failed packets in a row (a later query subscribes them again).",
                |m| m.push[7].load(Relaxed),
            ),
        ];
        for (name, kind, help, get) in per_shard {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, m) in self.shards.iter().enumerate() {
                let _ = writeln!(s, "{name}{{shard=\"{i}\"}} {}", get(m));
            }
        }
        let _ = writeln!(
            s,
            "# HELP muster_arena_bytes Bytes of the memfd pages that cached list bodies (kept there for sendfile) touch; not part of the anonymous RSS.\n# TYPE muster_arena_bytes gauge\nmuster_arena_bytes {}",
            crate::arena::resident_bytes()
        );
        s
    }
}

/// Appends the per-peer series of a cluster member (nothing when standalone): state
/// (0 STARTING, 1 UP, 2 SUSPICIOUS, 3 DOWN), the last ping round trip, failed contacts and
/// authenticated connections, labelled `peer="ip:port"`.
pub fn render_members(s: &mut String, members: &crate::cluster::Members) {
    type Getter = fn(&crate::cluster::Member) -> String;
    let series: [(&str, &str, &str, Getter); 4] = [
        (
            "muster_peer_state",
            "gauge",
            "The peer's state as this node sees it: 0 STARTING, 1 UP, 2 SUSPICIOUS, 3 DOWN.",
            |m| (m.state() as u8).to_string(),
        ),
        (
            "muster_peer_ping_rtt_seconds",
            "gauge",
            "Round trip of the last answered ping.",
            |m| format!("{:.6}", m.counters().0 as f64 / 1e6),
        ),
        (
            "muster_peer_failures_total",
            "counter",
            "Failed contacts (connect, handshake or ping).",
            |m| m.counters().1.to_string(),
        ),
        (
            "muster_peer_connects_total",
            "counter",
            "Authenticated connections made to the peer.",
            |m| m.counters().2.to_string(),
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for m in members.peers() {
            let _ = writeln!(s, "{name}{{peer=\"{}\"}} {}", m.addr, get(&m));
        }
    }
}

/// Renders the Distro counters of every peer's outbox (cluster mode).
pub fn render_distro(s: &mut String, outboxes: &[Arc<crate::node::outbox::Outbox>]) {
    use std::sync::atomic::Ordering::Relaxed;
    type Getter = fn(&crate::node::outbox::Traffic) -> u64;
    let series: [(&str, &str, &str, Getter); 6] = [
        (
            "muster_distro_replicated_total",
            "counter",
            "Replicas the peer acknowledged.",
            |t| t.replicated.load(Relaxed),
        ),
        (
            "muster_distro_retries_total",
            "counter",
            "Replication batches sent again after a failure (with backoff).",
            |t| t.retries.load(Relaxed),
        ),
        (
            "muster_distro_dropped_total",
            "counter",
            "Replicas dropped because the peer's outbox was full (verify repairs them).",
            |t| t.dropped.load(Relaxed),
        ),
        (
            "muster_distro_forwards_total",
            "counter",
            "Writes forwarded to the peer as the responsible member.",
            |t| t.forwards.load(Relaxed),
        ),
        (
            "muster_distro_verify_mismatches_total",
            "counter",
            "Services a verify round found the peer lacking, older or different.",
            |t| t.mismatches.load(Relaxed),
        ),
        (
            "muster_distro_queue_depth",
            "gauge",
            "Services waiting in the peer's replication outbox.",
            |t| t.depth.load(Relaxed) as u64,
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for o in outboxes {
            let _ = writeln!(s, "{name}{{peer=\"{}\"}} {}", o.member, get(&o.traffic));
        }
    }
    let name = "muster_distro_replication_lag_seconds";
    let _ = writeln!(
        s,
        "# HELP {name} Time from a change entering the peer's outbox to the peer's acknowledgement, since start.\n# TYPE {name} summary"
    );
    for o in outboxes {
        for q in [0.5, 0.99] {
            let (v, _) = o.traffic.lag(q);
            let _ = writeln!(s, "{name}{{peer=\"{}\",quantile=\"{q}\"}} {v:.6}", o.member);
        }
        let (_, n) = o.traffic.lag(0.5);
        let _ = writeln!(s, "{name}_count{{peer=\"{}\"}} {n}", o.member);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new(2, &["instance_register", "instance_list"]);
        m.shards[0].record(1, 200, 120);
        m.shards[1].record(1, 200, 3_000_000);
        m.shards[1].record(0, 400, 10);
        let t = m.render();
        assert!(
            t.contains("muster_http_requests_total{endpoint=\"instance_list\",status=\"200\"} 2")
        );
        assert!(t.contains(
            "muster_http_requests_total{endpoint=\"instance_register\",status=\"400\"} 1"
        ));
        assert!(t.contains("muster_http_request_duration_seconds_bucket{endpoint=\"instance_list\",le=\"0.00025\"} 1"));
        assert!(
            t.contains("muster_http_request_duration_seconds_count{endpoint=\"instance_list\"} 2")
        );
        assert!(t.contains("muster_services{shard=\"1\"} 0"));
    }
}
