//! Server-side health probes for persistent instances (Nacos `HealthCheckTask`).
//!
//! The owner shard probes each persistent, unmarked instance of a cluster whose checker is TCP or
//! HTTP. Outcomes follow Nacos's `HealthCheckCommon` with `checkTimes` 3: three consecutive OKs
//! make an unhealthy instance healthy, three consecutive failures make a healthy one unhealthy,
//! and a hard failure (connection refused, an unexpected HTTP status) flips it at once. A flip
//! changes only `healthy`. The next probe is due after the smoothed response time
//! (`factor * prev + (1 - factor) * rt`), clamped: TCP 0.75 in [1000, 5000] ms, HTTP 0.85 in
//! [500, 5000] ms. The first probe comes 2–7 s after an instance appears.

use hashbrown::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::naming::instance::InstanceKey;
use crate::naming::service::ServiceKey;
use crate::naming::wheel::Wheel;

/// Consecutive results needed to flip health.
pub const CHECK_TIMES: u8 = 3;
/// Connect and read timeout of one probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What to probe and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checker {
    /// Connect to the port.
    Tcp,
    /// `GET http://ip:port<path>` with `k:v|k:v` headers.
    Http {
        /// Request path, e.g. `/health`.
        path: String,
        /// Extra headers, `k:v|k:v`.
        headers: String,
    },
}

impl Checker {
    /// The checker named by a cluster's `healthChecker` JSON; `None` for NONE, MYSQL (not
    /// probed by Muster) or unknown types.
    pub fn from_json(v: &serde_json::Value) -> Option<Checker> {
        match v.get("type").and_then(|t| t.as_str()) {
            Some("TCP") => Some(Checker::Tcp),
            Some("HTTP") => Some(Checker::Http {
                path: v
                    .get("path")
                    .and_then(|p| p.as_str())
                    .filter(|p| !p.is_empty())
                    .unwrap_or("/")
                    .to_string(),
                headers: v
                    .get("headers")
                    .and_then(|h| h.as_str())
                    .unwrap_or("")
                    .to_string(),
            }),
            _ => None,
        }
    }

    fn params(&self) -> (f64, u64, u64) {
        match self {
            Checker::Tcp => (0.75, 1000, 5000),
            Checker::Http { .. } => (0.85, 500, 5000),
        }
    }
}

/// One probe's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Reachable; response time in ms.
    Ok(u64),
    /// Failed softly (timeout, 503, 302).
    Fail,
    /// Failed hard (refused, other status): flips at once.
    FailNow,
}

/// A probe to run.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Service of the instance.
    pub service: ServiceKey,
    /// The instance.
    pub key: InstanceKey,
    /// Where to connect.
    pub addr: SocketAddr,
    /// How.
    pub checker: Checker,
}

#[derive(Debug)]
struct State {
    rt_ms: u64,
    ok: u8,
    fail: u8,
    running: bool,
}

/// An instance the prober tracks: its service and identity.
pub type ProbeId = (ServiceKey, InstanceKey);

/// Probe schedules and streaks of one shard's persistent instances.
///
/// Schedules live in a [`Wheel`], so a tick costs O(probes due), not O(persistent instances).
/// Invariant: every tracked instance has one live wheel entry or a probe running.
#[derive(Debug)]
pub struct Prober {
    states: HashMap<ProbeId, State>,
    wheel: Wheel<ProbeId>,
    seed: u64,
}

impl Prober {
    /// An empty prober whose wheel starts at monotonic `now` (ms).
    pub fn new(now: u64) -> Self {
        Prober {
            states: HashMap::new(),
            wheel: Wheel::new(100, 128, now),
            seed: 0x2545_f491_4f6c_dd1d,
        }
    }

    /// Makes room for `n` more tracked instances.
    pub fn reserve(&mut self, n: usize) {
        self.states.reserve(n);
    }

    /// Number of tracked instances.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.states.len()
    }

    /// Starts tracking an instance (idempotent): its first probe comes 2–7 s from `now`, as
    /// Nacos staggers them (`2000 + rand(0, rand(0, 5000))`).
    pub fn track(&mut self, id: ProbeId, now: u64) {
        if self.states.contains_key(&id) {
            return;
        }
        let seed = self.next_rand();
        let first = now + 2000 + (seed % 5000) * ((seed >> 32) % 1000) / 1000;
        self.states.insert(
            id.clone(),
            State {
                rt_ms: 0,
                ok: 0,
                fail: 0,
                running: false,
            },
        );
        self.wheel.schedule(first, id);
    }

    /// At most `limit` tracked instances whose probe is due at `now`; they are marked running.
    /// The rest wait in the wheel for later calls. The caller must follow each with
    /// [`Prober::record`], [`Prober::later`] or [`Prober::forget`].
    pub fn due(&mut self, now: u64, limit: usize) -> Vec<ProbeId> {
        let mut due = Vec::new();
        self.wheel.advance_limited(now, &mut due, limit);
        due.retain(|id| match self.states.get_mut(id) {
            Some(s) if !s.running => {
                s.running = true;
                true
            }
            _ => false,
        });
        due
    }

    /// Stops tracking an instance (it is gone or no longer persistent).
    pub fn forget(&mut self, id: &ProbeId) {
        self.states.remove(id);
    }

    /// Puts a due instance back without probing it (not probe-able right now, or too many
    /// probes running): it comes due again `delay_ms` from `now`, streaks unchanged.
    pub fn later(&mut self, id: ProbeId, now: u64, delay_ms: u64) {
        if let Some(s) = self.states.get_mut(&id) {
            s.running = false;
            self.wheel.schedule(now + delay_ms, id);
        }
    }

    /// Records a finished probe and schedules the next one. Returns `Some(new_health)` when the
    /// instance must flip.
    pub fn record(&mut self, p: &Probe, outcome: Outcome, healthy: bool, now: u64) -> Option<bool> {
        let id = (p.service.clone(), p.key.clone());
        let s = self.states.get_mut(&id)?;
        s.running = false;
        let (factor, min, max) = p.checker.params();
        let rt = match outcome {
            Outcome::Ok(rt) => rt,
            _ => PROBE_TIMEOUT.as_millis() as u64,
        };
        let prev = if s.rt_ms == 0 { min } else { s.rt_ms };
        s.rt_ms = ((factor * prev as f64 + (1.0 - factor) * rt as f64) as u64).clamp(min, max);
        self.wheel.schedule(now + s.rt_ms, id);
        match outcome {
            Outcome::Ok(_) => {
                s.fail = 0;
                if healthy {
                    s.ok = 0;
                    return None;
                }
                s.ok += 1;
                if s.ok >= CHECK_TIMES {
                    s.ok = 0;
                    return Some(true);
                }
                None
            }
            Outcome::Fail => {
                s.ok = 0;
                if !healthy {
                    s.fail = 0;
                    return None;
                }
                s.fail += 1;
                if s.fail >= CHECK_TIMES {
                    s.fail = 0;
                    return Some(false);
                }
                None
            }
            Outcome::FailNow => {
                s.ok = 0;
                s.fail = 0;
                healthy.then_some(false)
            }
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: stable, seedable, good enough to stagger probes.
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn probe(checker: Checker) -> Probe {
        Probe {
            service: ServiceKey::new("public", "DEFAULT_GROUP@@db"),
            key: InstanceKey {
                ip: crate::naming::instance::Host::from("127.0.0.1"),
                port: 3306,
                cluster: Arc::from("DEFAULT"),
                ephemeral: false,
            },
            addr: "127.0.0.1:3306".parse().unwrap(),
            checker,
        }
    }

    fn id(p: &Probe) -> ProbeId {
        (p.service.clone(), p.key.clone())
    }

    #[test]
    fn first_probe_is_staggered_2_to_7_seconds() {
        let mut pr = Prober::new(0);
        let p = probe(Checker::Tcp);
        pr.track(id(&p), 0);
        pr.track(id(&p), 0);
        assert!(pr.due(1999, 64).is_empty());
        assert_eq!(pr.due(7000, 64).len(), 1, "once, though tracked twice");
        assert!(pr.due(7100, 64).is_empty(), "not twice while running");
        pr.later(id(&p), 7100, 100);
        assert_eq!(pr.due(7200, 64).len(), 1);
        pr.forget(&id(&p));
        assert_eq!(pr.tracked(), 0);
    }

    #[test]
    fn three_strikes_flip_and_fail_now_flips_at_once() {
        let mut pr = Prober::new(0);
        let p = probe(Checker::Tcp);
        pr.track(id(&p), 0);
        assert_eq!(pr.record(&p, Outcome::Fail, true, 10_000), None);
        assert_eq!(pr.record(&p, Outcome::Fail, true, 11_000), None);
        assert_eq!(pr.record(&p, Outcome::Fail, true, 12_000), Some(false));
        assert_eq!(pr.record(&p, Outcome::Ok(1), false, 13_000), None);
        assert_eq!(pr.record(&p, Outcome::Ok(1), false, 14_000), None);
        assert_eq!(
            pr.record(&p, Outcome::Fail, false, 15_000),
            None,
            "a failure resets the OK streak"
        );
        assert_eq!(pr.record(&p, Outcome::Ok(1), false, 16_000), None);
        assert_eq!(pr.record(&p, Outcome::Ok(1), false, 17_000), None);
        assert_eq!(pr.record(&p, Outcome::Ok(1), false, 18_000), Some(true));
        assert_eq!(pr.record(&p, Outcome::FailNow, true, 19_000), Some(false));
    }

    #[test]
    fn next_delay_is_smoothed_and_clamped() {
        let mut pr = Prober::new(0);
        let p = probe(Checker::Http {
            path: "/".into(),
            headers: String::new(),
        });
        pr.track(id(&p), 0);
        assert_eq!(pr.due(8_000, 64).len(), 1);
        pr.record(&p, Outcome::Ok(1), true, 10_000);
        assert!(pr.due(10_499, 64).is_empty());
        assert_eq!(pr.due(10_500, 64).len(), 1, "HTTP converges to 500 ms");
        let t = probe(Checker::Tcp);
        let mut pr = Prober::new(0);
        pr.track(id(&t), 0);
        assert_eq!(pr.due(8_000, 64).len(), 1);
        pr.record(&t, Outcome::Ok(1), true, 20_000);
        assert!(pr.due(20_999, 64).is_empty());
        assert_eq!(pr.due(21_000, 64).len(), 1, "TCP floors at 1000 ms");
    }

    #[test]
    fn checkers_from_cluster_json() {
        assert_eq!(
            Checker::from_json(&serde_json::json!({"type":"TCP"})),
            Some(Checker::Tcp)
        );
        assert_eq!(
            Checker::from_json(&serde_json::json!({"type":"HTTP","path":"/h","headers":"a:b"})),
            Some(Checker::Http {
                path: "/h".into(),
                headers: "a:b".into()
            })
        );
        assert_eq!(
            Checker::from_json(&serde_json::json!({"type":"NONE"})),
            None
        );
        assert_eq!(
            Checker::from_json(&serde_json::json!({"type":"MYSQL"})),
            None
        );
    }
}
