//! `muster-bench`: a load generator for Nacos 1.x naming and config HTTP servers.
//!
//! The library holds the engine so tests can drive it directly:
//! [`engine::run`] replays pre-built requests over keep-alive connections in
//! closed-loop or open-loop mode, [`scenario`] builds the Nacos naming workloads,
//! [`config`] the config-center ones (and measures long-poll wake-up latency),
//! [`subscribe`] measures UDP push latency, [`report`] renders results, and
//! [`chart`] draws an SVG of latency percentiles from `--json` reports.

pub mod chart;
pub mod config;
pub mod engine;
pub mod http;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod subscribe;

use std::time::Duration;

/// Parses durations like `10s`, `500ms`, `2m`, `1.5s`, `250us`; a bare number
/// means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (try 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        u => return Err(format!("unknown unit {u:?} in {s:?} (us, ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }
}
