//! Event-time handling: RFC 3339 timestamps as microseconds since the Unix epoch.
//!
//! Hand-written because every event carries two timestamps and a general date library costs
//! more than the rest of the field extraction; the format the API server writes is fixed.

/// Parses `2024-05-01T12:00:00Z`, `…T12:00:00.123456Z` or `…T12:00:00.123+02:00`.
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, min, sec) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..6 {
            micros *= 10;
        }
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let off = digits(&b[i + 1..i + 3])? * 3600 + digits(&b[i + 4..i + 6])? * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    Some(secs * 1_000_000 + micros)
}

/// Times as exports write them, for records that lost the API server's own: RFC 3339; the same
/// without a zone or with ` UTC` (Panther's `p_event_time`, BigQuery), taken as UTC; or a
/// number of seconds, milliseconds, microseconds or nanoseconds since the epoch, told apart by
/// size (any of them from 1973 to 5138).
pub fn parse_export_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(t) = parse_rfc3339_micros(s) {
        return Some(t);
    }
    if s.len() >= 19 && s.as_bytes()[4] == b'-' {
        let bare = s.strip_suffix("UTC").unwrap_or(s).trim_end();
        return parse_rfc3339_micros(&format!("{bare}Z"));
    }
    epoch_micros(s)
}

/// `parse_export_time` of a raw JSON value: a string or a number.
pub fn parse_export_json(raw: &serde_json::value::RawValue) -> Option<i64> {
    let text = raw.get();
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        // Times have no escapes; one that does is not a time.
        Some(inner) if !inner.contains('\\') => parse_export_time(inner),
        Some(_) => None,
        None => epoch_micros(text),
    }
}

/// A number of seconds, milliseconds, microseconds or nanoseconds since the epoch.
fn epoch_micros(s: &str) -> Option<i64> {
    let n: f64 = s.parse().ok()?;
    if !n.is_finite() || n <= 0.0 {
        return None;
    }
    let scale = if n < 1e11 {
        1e6
    } else if n < 1e14 {
        1e3
    } else if n < 1e17 {
        1.0
    } else {
        1e-3
    };
    let micros = (n * scale).round();
    // Not before 1973 (1e8 s): smaller numbers are counts or ids, not times.
    (n >= 1e8 && micros < 9.2e18).then_some(micros as i64)
}

/// Formats microseconds since the epoch as `2024-05-01T12:00:00.123456Z`.
pub fn format_micros(t: i64) -> String {
    let secs = t.div_euclid(1_000_000);
    let micros = t.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

// Howard Hinnant's days-from-civil algorithm (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `30s`, `5m`, `1h`, `7d` → microseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected a number and a unit, like 5m"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("bad duration {s:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(secs * 1_000_000)
        .ok_or_else(|| format!("bad duration {s:?}: too long"))
}

/// A duration as a reader says it: `5 minutes`, `1 hour`, `90 seconds`, `7 days`.
pub fn human_duration(micros: i64) -> String {
    let secs = micros / 1_000_000;
    let (n, unit) = match secs {
        s if s % 86_400 == 0 && s >= 86_400 => (s / 86_400, "day"),
        s if s % 3600 == 0 && s >= 3600 => (s / 3600, "hour"),
        s if s % 60 == 0 && s >= 60 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A time given on the command line: RFC 3339 (`2025-03-04T08:00:00Z`), a bare date (its
/// midnight, UTC: `2025-03-04`), or a time relative to `now` (`-24h`, `-30m`, `-7d`).
pub fn parse_time_arg(s: &str, now: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Some(ago) = s.strip_prefix('-') {
        let back = parse_duration(ago).map_err(|e| format!("{s:?}: {e}"))?;
        return Ok(now.saturating_sub(back));
    }
    if s.len() == 10 {
        if let Some(t) = parse_rfc3339_micros(&format!("{s}T00:00:00Z")) {
            return Ok(t);
        }
    }
    parse_rfc3339_micros(s).ok_or_else(|| {
        format!("{s:?} is not a time: write 2025-03-04T08:00:00Z, 2025-03-04, or -24h (before now)")
    })
}

/// Wall-clock now, in microseconds since the epoch (only for `-24h`-style arguments).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_times_take_three_forms() {
        let t = parse_rfc3339_micros("2025-03-04T08:00:00Z").unwrap();
        assert_eq!(parse_time_arg("2025-03-04T08:00:00Z", 0), Ok(t));
        assert_eq!(
            parse_time_arg("2025-03-04", 0),
            Ok(t - 8 * 3600 * 1_000_000)
        );
        assert_eq!(parse_time_arg("-2h", t), Ok(t - 2 * 3600 * 1_000_000));
        assert!(parse_time_arg("yesterday", t).is_err());
        assert!(parse_time_arg("-2x", t).is_err());
    }

    #[test]
    fn parses_api_server_formats() {
        assert_eq!(parse_rfc3339_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_micros("2025-03-04T06:22:18.819232Z"),
            Some(1_741_069_338_819_232)
        );
        assert_eq!(
            parse_rfc3339_micros("2025-03-04T06:22:18.8Z"),
            Some(1_741_069_338_800_000)
        );
        assert_eq!(
            parse_rfc3339_micros("2025-03-04T08:22:18.819232123+02:00"),
            Some(1_741_069_338_819_232)
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for s in [
            "",
            "2025-03-04",
            "2025-13-04T06:22:18Z",
            "2025-03-04T06:22:18",
            "2025-03-04T06:22:18.Z",
            "abcd-ef-ghTij:kl:mnZ",
            "2025-03-04T06:22:18Zjunk",
            "2025-03-04T06:22:18+0",
        ] {
            assert_eq!(parse_rfc3339_micros(s), None, "{s}");
        }
    }

    #[test]
    fn export_times() {
        let t = parse_rfc3339_micros("2025-03-04T09:00:00.5Z").unwrap();
        for s in [
            "2025-03-04T09:00:00.5Z",
            "2025-03-04 09:00:00.500000000",
            "2025-03-04 09:00:00.5 UTC",
            "2025-03-04T09:00:00.500",
            "1741078800.5",
            "1741078800500",
            "1741078800500000",
            "1741078800500000000",
        ] {
            assert_eq!(parse_export_time(s), Some(t), "{s}");
        }
        for s in ["", "12", "yesterday", "2025-03-04", "-1741078800", "NaN"] {
            assert_eq!(parse_export_time(s), None, "{s}");
        }
        let raw = |s: &str| serde_json::value::RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(parse_export_json(&raw("1741078800500")), Some(t));
        assert_eq!(
            parse_export_json(&raw("\"2025-03-04 09:00:00.5\"")),
            Some(t)
        );
        assert_eq!(parse_export_json(&raw("null")), None);
        assert_eq!(parse_export_json(&raw("{}")), None);
    }

    #[test]
    fn formats_round_trip() {
        let t = parse_rfc3339_micros("2024-02-29T23:59:59.000001Z").unwrap();
        assert_eq!(format_micros(t), "2024-02-29T23:59:59.000001Z");
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
    }
}
