//! Human and JSON reports.
//!
//! JSON field names are stable: `scenario, url, connections, threads, mode,
//! rate, warmup_s, duration_s, requests, ok, errors{kind:count}, error_rate,
//! throughput_rps, latency_us{p50,p90,p99,p999,max,mean}, ops{name:{requests,
//! ok, errors, throughput_rps, latency_us}}, notes[]`, and for `subscribe` also
//! `push_latency_us{...}, pushes, push_errors{...}, datagrams,
//! push_from_send_latency_us{...}`, and for `config-listen` also `wake_latency_us{...},
//! wakes, wake_errors{...}, wake_from_send_latency_us{...}, held_polls, expired_polls,
//! poll_errors{...}`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::stats::{Latency, OpStats};

/// Everything a report shows.
#[derive(Clone, Debug)]
pub struct Report {
    /// Scenario name as typed on the command line.
    pub scenario: String,
    /// Server URL.
    pub url: String,
    /// Connections used by the load phase.
    pub connections: usize,
    /// Worker threads.
    pub threads: usize,
    /// Open-loop rate in requests/s, `None` for closed loop.
    pub rate: Option<f64>,
    /// Warm-up length.
    pub warmup: Duration,
    /// Measured window length.
    pub duration: Duration,
    /// All requests merged.
    pub total: OpStats,
    /// Per operation kind (only kinds that saw requests are shown).
    pub ops: Vec<(String, OpStats)>,
    /// Subscribe only: push latency samples (from the write's `ok`) and push errors.
    pub push: Option<OpStats>,
    /// Subscribe only: push latency samples from the write's send time.
    pub push_from_send: Option<OpStats>,
    /// Subscribe only: datagrams received.
    pub datagrams: u64,
    /// Config-listen only: long-poll wake-ups.
    pub wake: Option<Wakes>,
    /// Free-form notes (setup time, pool wrap-around, warnings).
    pub notes: Vec<String>,
}

/// Long-poll wake-ups of a `config-listen` run.
#[derive(Clone, Debug)]
pub struct Wakes {
    /// Latency (ns) from a publish's `ok` to an answered poll, and the polls never answered.
    pub from_ok: OpStats,
    /// Latency (ns) from the publish's send time.
    pub from_send: OpStats,
    /// Polls sent before the first publish.
    pub held: u64,
    /// Polls whose hold expired (answered empty, sent again).
    pub expired: u64,
    /// Failed poll exchanges.
    pub poll_errors: OpStats,
}

impl Report {
    /// Failed / all requests (push errors count as requests too).
    pub fn error_rate(&self) -> f64 {
        let (mut errs, mut all) = (self.total.error_count(), self.total.requests());
        if let Some(p) = &self.push {
            errs += p.error_count();
            all += p.requests();
        }
        if let Some(w) = &self.wake {
            errs += w.from_ok.error_count() + w.poll_errors.error_count();
            all += w.from_ok.requests() + w.poll_errors.error_count();
        }
        if all == 0 {
            return 1.0;
        }
        errs as f64 / all as f64
    }

    /// Requests per second over the measured window.
    pub fn throughput(&self) -> f64 {
        self.total.requests() as f64 / self.duration.as_secs_f64()
    }

    fn mode(&self) -> &'static str {
        if self.rate.is_some() {
            "open"
        } else {
            "closed"
        }
    }

    /// The `--json` object.
    pub fn to_json(&self) -> Value {
        let mut ops = Map::new();
        for (name, s) in self.ops.iter().filter(|(_, s)| s.requests() > 0) {
            ops.insert(
                name.clone(),
                json!({
                    "requests": s.requests(),
                    "ok": s.ok,
                    "errors": errors_json(s),
                    "throughput_rps": round2(s.requests() as f64 / self.duration.as_secs_f64()),
                    "latency_us": latency_json(&s.latency()),
                }),
            );
        }
        let mut v = json!({
            "scenario": self.scenario,
            "url": self.url,
            "connections": self.connections,
            "threads": self.threads,
            "mode": self.mode(),
            "rate": self.rate,
            "warmup_s": self.warmup.as_secs_f64(),
            "duration_s": self.duration.as_secs_f64(),
            "requests": self.total.requests(),
            "ok": self.total.ok,
            "errors": errors_json(&self.total),
            "error_rate": self.error_rate(),
            "throughput_rps": round2(self.throughput()),
            "latency_us": latency_json(&self.total.latency()),
            "ops": ops,
            "notes": self.notes,
        });
        if let Some(p) = &self.push {
            let o = v.as_object_mut().expect("object");
            o.insert("push_latency_us".into(), latency_json(&p.latency()));
            o.insert("pushes".into(), json!(p.ok));
            o.insert("push_errors".into(), errors_json(p));
            o.insert("datagrams".into(), json!(self.datagrams));
            if let Some(f) = &self.push_from_send {
                o.insert(
                    "push_from_send_latency_us".into(),
                    latency_json(&f.latency()),
                );
            }
        }
        if let Some(w) = &self.wake {
            let o = v.as_object_mut().expect("object");
            o.insert("wake_latency_us".into(), latency_json(&w.from_ok.latency()));
            o.insert("wakes".into(), json!(w.from_ok.ok));
            o.insert("wake_errors".into(), errors_json(&w.from_ok));
            o.insert(
                "wake_from_send_latency_us".into(),
                latency_json(&w.from_send.latency()),
            );
            o.insert("held_polls".into(), json!(w.held));
            o.insert("expired_polls".into(), json!(w.expired));
            o.insert("poll_errors".into(), errors_json(&w.poll_errors));
        }
        v
    }

    /// The human-readable table.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let mode = match self.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            s,
            "muster-bench {} -> {}\n  {} connection(s), {} thread(s), {}, {:.1}s warm-up + {:.1}s measured\n",
            self.scenario,
            self.url,
            self.connections,
            self.threads,
            mode,
            self.warmup.as_secs_f64(),
            self.duration.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "  {:<22}{:>10}{:>10}{:>12}{:>10}{:>10}{:>10}{:>10}{:>11}",
            "latency (us)", "requests", "errors", "req/s", "p50", "p90", "p99", "p99.9", "max"
        );
        let mut row = |name: &str, st: &OpStats, rps: f64| {
            let l = st.latency();
            let _ = writeln!(
                s,
                "  {:<22}{:>10}{:>10}{:>12.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>11.1}",
                name,
                st.requests(),
                st.error_count(),
                rps,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max
            );
        };
        let secs = self.duration.as_secs_f64();
        let shown: Vec<_> = self
            .ops
            .iter()
            .filter(|(_, st)| st.requests() > 0)
            .collect();
        if shown.len() > 1 {
            for (name, st) in &shown {
                row(name, st, st.requests() as f64 / secs);
            }
        }
        row("all", &self.total, self.throughput());
        if let Some(p) = &self.push {
            row("push (write ok->udp)", p, p.ok as f64 / secs);
        }
        if let Some(f) = &self.push_from_send {
            row("push (write sent->udp)", f, f.ok as f64 / secs);
        }
        if let Some(w) = &self.wake {
            row(
                "wake (publish ok->poll)",
                &w.from_ok,
                w.from_ok.ok as f64 / secs,
            );
            row(
                "wake (publish sent->)",
                &w.from_send,
                w.from_send.ok as f64 / secs,
            );
        }
        let _ = writeln!(
            s,
            "\n  throughput {:.1} req/s, error rate {:.4}%",
            self.throughput(),
            self.error_rate() * 100.0
        );
        let mut errs: Vec<String> = self
            .total
            .errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if let Some(p) = &self.push {
            errs.extend(p.errors.iter().map(|(k, v)| format!("{k}={v}")));
            let _ = writeln!(
                s,
                "  pushes {} samples from {} datagrams",
                p.ok, self.datagrams
            );
        }
        if let Some(w) = &self.wake {
            errs.extend(w.from_ok.errors.iter().map(|(k, v)| format!("{k}={v}")));
            errs.extend(
                w.poll_errors
                    .errors
                    .iter()
                    .map(|(k, v)| format!("poll_{k}={v}")),
            );
            let _ = writeln!(
                s,
                "  polls held {}, expired and re-sent {}",
                w.held, w.expired
            );
        }
        if !errs.is_empty() {
            let _ = writeln!(s, "  errors: {}", errs.join(", "));
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn latency_json(l: &Latency) -> Value {
    json!({"p50": l.p50, "p90": l.p90, "p99": l.p99, "p999": l.p999, "max": l.max, "mean": l.mean})
}

fn errors_json(s: &OpStats) -> Value {
    Value::Object(
        s.errors
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ErrorKind;

    fn report() -> Report {
        let mut a = OpStats::default();
        for i in 1..=99 {
            a.record_ok(i * 1000);
        }
        a.record_err(ErrorKind::Status(503), 1);
        Report {
            scenario: "register".into(),
            url: "http://127.0.0.1:8848".into(),
            connections: 4,
            threads: 1,
            rate: None,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(2),
            total: a.clone(),
            ops: vec![("register".into(), a)],
            push: None,
            push_from_send: None,
            datagrams: 0,
            wake: None,
            notes: vec![],
        }
    }

    #[test]
    fn json_fields_are_stable() {
        let v = report().to_json();
        for k in [
            "scenario",
            "url",
            "connections",
            "duration_s",
            "requests",
            "errors",
            "throughput_rps",
            "latency_us",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["requests"], 100);
        assert_eq!(v["errors"]["http_503"], 1);
        assert_eq!(v["throughput_rps"], 50.0);
        assert_eq!(v["error_rate"], 0.01);
        for k in ["p50", "p90", "p99", "p999", "max"] {
            assert!(v["latency_us"][k].as_f64().unwrap() > 0.0);
        }
        assert!(v.get("push_latency_us").is_none());
        let mut r = report();
        r.push = Some(OpStats::default());
        assert!(r.to_json().get("push_latency_us").is_some());
        let mut w = OpStats::default();
        w.record_ok(2_000_000);
        w.record_err(ErrorKind::WakeMissing, 1);
        r.wake = Some(Wakes {
            from_ok: w.clone(),
            from_send: w,
            held: 7,
            expired: 0,
            poll_errors: OpStats::default(),
        });
        let v = r.to_json();
        assert_eq!(v["wakes"], 1);
        assert_eq!(v["held_polls"], 7);
        assert_eq!(v["wake_errors"]["wake_missing"], 1);
        // hdrhistogram, 3 significant digits: 2 ms reads back within 0.1%.
        let p99 = v["wake_latency_us"]["p99"].as_f64().unwrap();
        assert!((p99 - 2000.0).abs() <= 2.0, "{p99}");
    }

    #[test]
    fn table_mentions_errors() {
        let t = report().to_table();
        assert!(t.contains("http_503=1"), "{t}");
        assert!(t.contains("all"));
    }
}
