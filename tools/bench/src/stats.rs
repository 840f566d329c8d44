//! Latency histograms and error counters.
//!
//! Latencies are recorded in **nanoseconds** in an auto-resizing
//! [`hdrhistogram::Histogram`] with 3 significant digits, and reported in
//! microseconds.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;

/// Why a request did not count as a success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// TCP connect failed or timed out.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// The connection broke mid-exchange (reset, closed early).
    Io,
    /// The response was not valid HTTP/1.x.
    Parse,
    /// A response with an unexpected status code.
    Status(u16),
    /// Status 200 but the body was not what the API promises (e.g. not `ok`).
    BodyMismatch,
    /// Open loop only: scheduled inside the measured window but never sent,
    /// because the connection was still busy when the drain period ended.
    Backlog,
    /// Subscribe only: a write was acknowledged but a subscriber never
    /// received a push reflecting it within the grace period.
    PushMissing,
    /// Subscribe only: a datagram that could not be decoded.
    PushDecode,
    /// Config-listen only: a publish was acknowledged but a poll listening to its config
    /// was not answered before the run ended.
    WakeMissing,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Io => f.write_str("io"),
            ErrorKind::Parse => f.write_str("parse"),
            ErrorKind::Status(s) => write!(f, "http_{s}"),
            ErrorKind::BodyMismatch => f.write_str("body_mismatch"),
            ErrorKind::Backlog => f.write_str("backlog"),
            ErrorKind::PushMissing => f.write_str("push_missing"),
            ErrorKind::PushDecode => f.write_str("push_decode"),
            ErrorKind::WakeMissing => f.write_str("wake_missing"),
        }
    }
}

/// A fresh latency histogram (ns, 3 significant digits, auto-resizing).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is valid")
}

/// Counters for one operation kind (or for everything).
#[derive(Clone, Debug)]
pub struct OpStats {
    /// Latency of successful requests, in nanoseconds.
    pub hist: Histogram<u64>,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            hist: new_histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl OpStats {
    /// Records one success taking `ns` nanoseconds.
    #[inline]
    pub fn record_ok(&mut self, ns: u64) {
        self.ok += 1;
        // Auto-resize means recording only fails for values beyond u64 range.
        let _ = self.hist.record(ns.max(1));
    }

    /// Records `n` failures of `kind`.
    pub fn record_err(&mut self, kind: ErrorKind, n: u64) {
        if n > 0 {
            *self.errors.entry(kind).or_insert(0) += n;
        }
    }

    /// Total failures.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successes plus failures.
    pub fn requests(&self) -> u64 {
        self.ok + self.error_count()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &OpStats) {
        self.ok += other.ok;
        let _ = self.hist.add(&other.hist);
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_insert(0) += v;
        }
    }

    /// Latency summary in microseconds.
    pub fn latency(&self) -> Latency {
        Latency::of(&self.hist)
    }
}

/// Latency percentiles in microseconds (0 when nothing was recorded).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Latency {
    /// Summarises a nanosecond histogram in microseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        Latency {
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: (h.mean() / 100.0).round() / 10.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_merges() {
        let mut a = OpStats::default();
        for i in 1..=1000u64 {
            a.record_ok(i * 1000);
        }
        a.record_err(ErrorKind::Status(503), 2);
        let mut b = OpStats::default();
        b.record_err(ErrorKind::Status(503), 1);
        b.record_err(ErrorKind::Timeout, 1);
        b.merge(&a);
        assert_eq!(b.ok, 1000);
        assert_eq!(b.error_count(), 4);
        assert_eq!(b.requests(), 1004);
        assert_eq!(b.errors[&ErrorKind::Status(503)], 3);
        let l = b.latency();
        assert!((l.p50 - 500.0).abs() < 2.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() < 2.0, "{l:?}");
        assert!((l.max - 1000.0).abs() < 2.0, "{l:?}");
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(ErrorKind::Status(404).to_string(), "http_404");
        assert_eq!(ErrorKind::BodyMismatch.to_string(), "body_mismatch");
        assert_eq!(Latency::of(&new_histogram()), Latency::default());
    }
}
