//! Time sources.
//!
//! Leases and timeouts use a monotonic clock behind the [`Clock`] trait so that tests can drive
//! time instead of sleeping; wall-clock time is only used for display fields (`lastRefTime`).

use std::cell::Cell;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A monotonic millisecond clock.
///
/// Invariant: `now_ms()` never decreases for a given clock.
pub trait Clock {
    /// Milliseconds since an arbitrary, fixed origin.
    fn now_ms(&self) -> u64;
}

/// The real monotonic clock (`CLOCK_MONOTONIC` through [`Instant`]).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is "now".
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// A clock that only moves when told to: used by tests to drive leases through their timeouts.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Cell<u64>,
}

impl ManualClock {
    /// A manual clock starting at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now: Cell::new(start_ms),
        }
    }

    /// Moves time forward by `ms` milliseconds.
    pub fn advance(&self, ms: u64) {
        self.now.set(self.now.get() + ms);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
}

/// Wall-clock milliseconds since the Unix epoch, for display fields only.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The civil date `(year, month 1–12, day 1–31)` of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`; proleptic Gregorian, any `i64` day in range).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new(10);
        assert_eq!(c.now_ms(), 10);
        c.advance(15_000);
        assert_eq!(c.now_ms(), 15_010);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn system_clock_copies_share_one_origin() {
        // Every shard gets a copy of the one clock the server creates, so lease deadlines
        // computed on one shard mean the same on another: a copy keeps the original's origin,
        // and only `new` starts a fresh one.
        let c = SystemClock::new();
        // Let the clock pass 3 ms (bounded: at most 1000 polls of 1 ms).
        for _ in 0..1000 {
            if c.now_ms() >= 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let at = c.now_ms();
        assert!(at >= 3, "the clock did not advance past 3 ms: {at}");
        let copy = c;
        let fresh = SystemClock::new();
        let (f, k, o) = (fresh.now_ms(), copy.now_ms(), c.now_ms());
        assert!(k >= at, "a copy restarted from its own origin: {k} < {at}");
        assert!(o >= k, "the original went behind its copy: {o} < {k}");
        // `fresh` began at least 3 ms after `c`, and was read first.
        assert!(
            f + 3 <= k,
            "a new clock has its own origin: fresh {f}, copy {k}"
        );
    }
}
