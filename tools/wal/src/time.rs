//! UTC timestamps for display and for `--since/--until`: RFC 3339 (`2025-11-13T02:13:20Z`,
//! optional `.mmm`) or integer milliseconds since the Unix epoch. No time-zone database needed.

use muster::clock::civil_from_days;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

/// Parses integer milliseconds or an RFC 3339 UTC time (`Z` suffix, optional fraction).
pub fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let bad =
        || format!("{s:?} is neither milliseconds since the epoch nor YYYY-MM-DDTHH:MM:SS[.mmm]Z");
    let t = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, clock) = t.split_once('T').ok_or_else(bad)?;
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let dp: Vec<&str> = date.split('-').collect();
    let (clock, frac) = clock.split_once('.').unwrap_or((clock, "0"));
    let cp: Vec<&str> = clock.split(':').collect();
    if dp.len() != 3 || cp.len() != 3 || frac.is_empty() || frac.len() > 3 {
        return Err(bad());
    }
    let (y, mo, d) = (num(dp[0])?, num(dp[1])?, num(dp[2])?);
    let (h, mi, sec) = (num(cp[0])?, num(cp[1])?, num(cp[2])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let ms_frac = num(&format!("{frac:0<3}"))?;
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec;
    u64::try_from(secs * 1000 + ms_frac).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_763_000_003_000), "2025-11-13T02:13:23.000Z");
        for ms in [0u64, 951_782_400_123, 1_763_000_003_000, 4_102_444_800_000] {
            assert_eq!(parse_time(&format_ms(ms)).unwrap(), ms);
        }
        assert_eq!(
            parse_time("2025-11-13T02:13:23Z").unwrap(),
            1_763_000_003_000
        );
        assert_eq!(
            parse_time("2025-11-13T02:13:23.5Z").unwrap(),
            1_763_000_003_500
        );
        assert_eq!(parse_time("42").unwrap(), 42);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2025-13-01T00:00:00Z").is_err());
    }
}
