//! Distro replication outboxes: one per peer, each drained by its own thread.
//!
//! A shard that published a change puts the service's replica in every peer's outbox and
//! goes on; it never waits on a peer. An outbox holds at most one replica per service (a
//! newer one replaces the one waiting, so a flapping service costs one send, and the queue is
//! bounded by [`MAX_PENDING`] services), and its thread sends what waits in batches of at most
//! [`MAX_BATCH`] replicas over the peer link. A batch that fails (no link, no answer within the
//! call timeout, a refusal) goes back in, unless newer replicas replaced its entries meanwhile,
//! and is retried after a backoff that doubles from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]. When
//! the outbox is full, a replica for a service not already waiting is dropped and counted; a
//! verify round repairs what was dropped.
//!
//! [`Traffic`] counts, per peer: replicas sent, retries, drops, forwards, verify mismatches, the
//! queue depth, and the replication lag (from the replica entering the outbox to the peer's
//! answer that it queued it on its owner shard), as a histogram in µs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hashbrown::HashMap;

use crate::naming::registry::Replica;
use crate::naming::service::ServiceKey;
use crate::node::peer::{Call, CALL_TIMEOUT};

/// Most services waiting in one peer's outbox.
pub const MAX_PENDING: usize = 65_536;
/// Most replicas in one call.
pub const MAX_BATCH: usize = 256;
/// Most instances (summed over its replicas) in one call, so a batch stays far below the
/// peer frame limit.
pub const MAX_BATCH_INSTANCES: usize = 20_000;
/// First retry delay after a failed batch.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Distro traffic with one peer, for `/metrics`.
#[derive(Debug)]
pub struct Traffic {
    /// Replicas the peer acknowledged.
    pub replicated: AtomicU64,
    /// Batches sent again after a failure.
    pub retries: AtomicU64,
    /// Replicas dropped because the outbox was full.
    pub dropped: AtomicU64,
    /// Writes forwarded to the peer (it was responsible).
    pub forwards: AtomicU64,
    /// Services a verify round found the peer lacking, older or different.
    pub mismatches: AtomicU64,
    /// Services waiting in the outbox.
    pub depth: AtomicUsize,
    /// Replication lag in µs (1 µs to 60 s, 2 significant digits).
    lag: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            replicated: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            forwards: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            depth: AtomicUsize::new(0),
            lag: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2)
                    .expect("static histogram bounds"),
            ),
        }
    }
}

impl Traffic {
    /// Records the lag of one replicated replica.
    fn record_lag(&self, lag: Duration) {
        let us = (lag.as_micros() as u64).clamp(1, 60_000_000);
        let mut h = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        let _ = h.record(us);
    }

    /// The replication lag at quantile `q` (0–1), in seconds, and the number recorded.
    pub fn lag(&self, q: f64) -> (f64, u64) {
        let h = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        (h.value_at_quantile(q) as f64 / 1e6, h.len())
    }
}

/// A replica waiting in an outbox, and when it entered.
struct Waiting {
    replica: Arc<Replica>,
    since: Instant,
}

/// Every peer's outbox; members join and leave the list at run time.
#[derive(Debug, Default)]
pub struct Outboxes(std::sync::RwLock<Vec<Arc<Outbox>>>);

impl Outboxes {
    /// The outboxes of the members at start.
    pub fn new(all: Vec<Arc<Outbox>>) -> Outboxes {
        Outboxes(std::sync::RwLock::new(all))
    }

    /// Every outbox (a snapshot).
    pub fn all(&self) -> Vec<Arc<Outbox>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Member `to`'s outbox.
    pub fn get(&self, to: SocketAddr) -> Option<Arc<Outbox>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|o| o.member == to)
            .cloned()
    }

    /// Adds a new member's outbox.
    pub fn add(&self, o: Arc<Outbox>) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).push(o);
    }

    /// Stops and drops the outbox of a member that left the list.
    pub fn remove(&self, to: SocketAddr) {
        let mut w = self.0.write().unwrap_or_else(|e| e.into_inner());
        for o in w.iter().filter(|o| o.member == to) {
            o.stop();
        }
        w.retain(|o| o.member != to);
    }
}

/// One peer's outbox.
pub struct Outbox {
    /// The peer (its HTTP member address).
    pub member: SocketAddr,
    /// Its counters.
    pub traffic: Traffic,
    pending: Mutex<HashMap<ServiceKey, Waiting>>,
    wake: Condvar,
    stop: AtomicBool,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("member", &self.member)
            .field("traffic", &self.traffic)
            .finish()
    }
}

/// Encodes a batch of replicas as a peer request body (`None`: it does not encode).
pub type Encode = Box<dyn Fn(&[Arc<Replica>]) -> Option<Vec<u8>> + Send>;

impl Outbox {
    /// An outbox for `member`, drained by a new thread over `link` (the peer's call queue);
    /// `encode` makes a request body of a batch.
    pub fn start(
        member: SocketAddr,
        link: flume::Sender<Call>,
        encode: Encode,
    ) -> std::io::Result<Arc<Outbox>> {
        let outbox = Arc::new(Outbox {
            member,
            traffic: Traffic::default(),
            pending: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let drainer = outbox.clone();
        std::thread::Builder::new()
            .name(format!("muster-outbox-{member}"))
            .spawn(move || drainer.drain(&link, &encode))?;
        Ok(outbox)
    }

    /// Queues `replicas` for the peer, each replacing an older one of its service that is
    /// still waiting. Never blocks on the peer.
    pub fn push(&self, replicas: &[Arc<Replica>]) {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for r in replicas {
            let key = ServiceKey::new(&r.namespace, &r.grouped);
            let full = pending.len() >= MAX_PENDING;
            match pending.get_mut(&key) {
                Some(w) if w.replica.version >= r.version => {}
                // Keeps the time the first unsent change entered: the lag counts from there.
                Some(w) => w.replica = r.clone(),
                None if full => {
                    self.traffic.dropped.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    pending.insert(
                        key,
                        Waiting {
                            replica: r.clone(),
                            since: now,
                        },
                    );
                }
            }
        }
        self.traffic.depth.store(pending.len(), Ordering::Relaxed);
        drop(pending);
        self.wake.notify_one();
    }

    /// Stops the drainer thread (what waits is dropped).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Takes the next batch out of the outbox, waiting up to `wait` for one.
    fn next_batch(&self, wait: Duration) -> Vec<(ServiceKey, Waiting)> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (mut pending, _) = self
            .wake
            .wait_timeout_while(pending, wait, |p| {
                p.is_empty() && !self.stop.load(Ordering::Acquire)
            })
            .unwrap_or_else(|e| e.into_inner());
        let mut batch = Vec::new();
        let mut instances = 0;
        let keys: Vec<ServiceKey> = pending.keys().take(MAX_BATCH).cloned().collect();
        for key in keys {
            let n = pending.get(&key).map_or(0, |w| w.replica.instances.len());
            if !batch.is_empty() && instances + n > MAX_BATCH_INSTANCES {
                break;
            }
            instances += n;
            if let Some(w) = pending.remove(&key) {
                batch.push((key, w));
            }
        }
        self.traffic.depth.store(pending.len(), Ordering::Relaxed);
        batch
    }

    /// Puts a failed batch back, except entries a newer replica replaced meanwhile.
    fn put_back(&self, batch: Vec<(ServiceKey, Waiting)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (key, w) in batch {
            match pending.get_mut(&key) {
                Some(newer) => newer.since = newer.since.min(w.since),
                None => {
                    pending.insert(key, w);
                }
            }
        }
        self.traffic.depth.store(pending.len(), Ordering::Relaxed);
    }

    /// The drainer: sends batches until stopped, with backoff after failures.
    fn drain(&self, link: &flume::Sender<Call>, encode: &Encode) {
        let mut backoff = BACKOFF_MIN;
        while !self.stop.load(Ordering::Acquire) {
            let batch = self.next_batch(Duration::from_secs(1));
            if batch.is_empty() {
                continue;
            }
            let replicas: Vec<Arc<Replica>> =
                batch.iter().map(|(_, w)| w.replica.clone()).collect();
            let sent = encode(&replicas).is_some_and(|body| call(link, body));
            if sent {
                let now = Instant::now();
                for (_, w) in &batch {
                    self.traffic.record_lag(now - w.since);
                }
                self.traffic
                    .replicated
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                backoff = BACKOFF_MIN;
                continue;
            }
            self.put_back(batch);
            self.traffic.retries.fetch_add(1, Ordering::Relaxed);
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // Sleeps the backoff (woken early only by stop).
            let _ = self
                .wake
                .wait_timeout_while(pending, backoff, |_| !self.stop.load(Ordering::Acquire));
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// One call over `link`: whether the peer answered within [`CALL_TIMEOUT`] (plus a second).
fn call(link: &flume::Sender<Call>, body: Vec<u8>) -> bool {
    let (tx, rx) = flume::bounded(1);
    if link
        .send_timeout(Call { body, reply: tx }, CALL_TIMEOUT)
        .is_err()
    {
        return false;
    }
    matches!(
        rx.recv_timeout(CALL_TIMEOUT + Duration::from_secs(1)),
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(name: &str, version: u64) -> Arc<Replica> {
        Arc::new(Replica {
            namespace: "public".into(),
            grouped: format!("DEFAULT_GROUP@@{name}"),
            version,
            instances: Vec::new(),
            stamps: Vec::new(),
            tombs: Vec::new(),
        })
    }

    /// A peer link served by a thread that fails the first `fail` calls, then answers; it
    /// returns the versions of `a` it received, in order.
    fn peer(fail: usize) -> (flume::Sender<Call>, std::thread::JoinHandle<Vec<u64>>) {
        let (tx, rx) = flume::bounded::<Call>(16);
        let served = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut calls = 0;
            while let Ok(call) = rx.recv_timeout(Duration::from_secs(10)) {
                calls += 1;
                if calls <= fail {
                    let _ = call.reply.send(Err("refused".into()));
                    continue;
                }
                let batch: Vec<Replica> = serde_json::from_slice(&call.body).unwrap();
                seen.extend(
                    batch
                        .iter()
                        .filter(|r| r.grouped.ends_with("@@a"))
                        .map(|r| r.version),
                );
                let _ = call.reply.send(Ok(Vec::new()));
                if seen.last() == Some(&3) {
                    break;
                }
            }
            seen
        });
        (tx, served)
    }

    fn json() -> Encode {
        Box::new(|batch| serde_json::to_vec(&batch.iter().map(|r| &**r).collect::<Vec<_>>()).ok())
    }

    #[test]
    fn failed_batches_are_retried_with_backoff_and_newer_replicas_replace_waiting_ones() {
        let (link, served) = peer(2);
        let started = Instant::now();
        let outbox = Outbox::start("127.0.0.1:8848".parse().unwrap(), link, json()).unwrap();
        outbox.push(&[replica("a", 1)]);
        // While the first sends fail, newer versions arrive: only the newest is waiting.
        outbox.push(&[replica("a", 2), replica("b", 1)]);
        outbox.push(&[replica("a", 3)]);
        outbox.push(&[replica("a", 2)]);
        let seen = served.join().unwrap();
        assert_eq!(seen.last(), Some(&3));
        assert!(seen.iter().all(|v| *v <= 3), "{seen:?}");
        // Two failures: at least the first two backoff delays passed.
        assert!(started.elapsed() >= BACKOFF_MIN * 3);
        assert_eq!(outbox.traffic.retries.load(Ordering::Relaxed), 2);
        // The drainer records the answer just after the peer sent it: wait (at most 5 s).
        for _ in 0..500 {
            if outbox.traffic.replicated.load(Ordering::Relaxed) >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (_, count) = outbox.traffic.lag(0.99);
        assert!(count >= 2, "lag recorded for every replicated replica");
        outbox.stop();
    }

    #[test]
    fn a_full_outbox_drops_and_counts_new_services_only() {
        let (link, _rx) = flume::bounded::<Call>(1);
        // Nobody answers: the drainer takes one batch and waits on it.
        let outbox = Outbox::start("127.0.0.1:8848".parse().unwrap(), link, json()).unwrap();
        let many: Vec<_> = (0..MAX_PENDING + MAX_BATCH + 10)
            .map(|i| replica(&format!("s{i}"), 1))
            .collect();
        outbox.push(&many);
        let dropped = outbox.traffic.dropped.load(Ordering::Relaxed);
        assert!(dropped >= 10, "{dropped}");
        assert!(outbox.traffic.depth.load(Ordering::Relaxed) <= MAX_PENDING);
        outbox.stop();
    }
}
