//! Text forms of Kubernetes' well-known protobuf types: `meta.v1.Time` and `MicroTime` (RFC 3339
//! in UTC) and `meta.v1.Duration` (Go's `time.Duration` string, e.g. "1h0m0s", "1.5s", "300ms").

use chrono::{DateTime, SecondsFormat, Utc};

/// `seconds` since the epoch as RFC 3339 ("2006-01-02T15:04:05Z"), or with microseconds
/// ("2006-01-02T15:04:05.000000Z") for `MicroTime`. Years outside 0..=9999 are refused, as Go's
/// JSON encoder refuses them.
pub fn format_time(seconds: i64, nanos: i32, micro: bool) -> Option<String> {
    let nanos = if micro { u32::try_from(nanos).ok().filter(|&n| n < 1_000_000_000)? / 1000 * 1000 } else { 0 };
    let time = DateTime::<Utc>::from_timestamp(seconds, nanos)?;
    if !(0..=9999).contains(&chrono::Datelike::year(&time)) {
        return None;
    }
    Some(time.to_rfc3339_opts(if micro { SecondsFormat::Micros } else { SecondsFormat::Secs }, true))
}

/// An RFC 3339 time as (seconds, nanos) since the epoch.
pub fn parse_time(text: &str) -> Option<(i64, i32)> {
    let time = DateTime::parse_from_rfc3339(text).ok()?;
    Some((time.timestamp(), i32::try_from(time.timestamp_subsec_nanos()).ok()?))
}

/// Nanoseconds as Go's `time.Duration.String()` writes them.
pub fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    // `digits` digits of `frac`, without trailing zeros, after a dot.
    let fraction = |frac: u64, digits: usize| {
        let text = format!("{frac:0digits$}");
        let text = text.trim_end_matches('0');
        if text.is_empty() { String::new() } else { format!(".{text}") }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}{}µs", n / 1_000, fraction(n % 1_000, 3));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}{}ms", n / 1_000_000, fraction(n % 1_000_000, 6));
    }
    let seconds = format!("{}{}s", n / 1_000_000_000 % 60, fraction(n % 1_000_000_000, 9));
    let minutes = n / 60_000_000_000 % 60;
    let hours = n / 3_600_000_000_000;
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}")
    } else {
        format!("{sign}{seconds}")
    }
}

/// A Go duration string ("1h30m", "-1.5s", "300ms", "0") as nanoseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() {
            return None;
        }
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        total = total.checked_add(whole.checked_mul(scale)?)?;
        let mut place = scale;
        for digit in frac.bytes() {
            if !digit.is_ascii_digit() {
                return None;
            }
            place /= 10;
            total += u128::from(digit - b'0') * place;
        }
        rest = tail;
    }
    let total = i64::try_from(total).ok()?;
    Some(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (300_000_000, "300ms"),
            (1_500_000_000, "1.5s"),
            (30_000_000_000, "30s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (-60_000_000_000, "-1m0s"),
        ];
        for (nanos, text) in cases {
            assert_eq!(format_duration(nanos), text);
            assert_eq!(parse_duration(text), Some(nanos), "{text}");
        }
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        for bad in ["", "1", "1x", "-", ".s", "1.2.3s", "99999999999999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_time(1_700_000_000, 123_456_789, false).as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(format_time(1_700_000_000, 123_456_789, true).as_deref(), Some("2023-11-14T22:13:20.123456Z"));
        assert_eq!(format_time(0, 0, false).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(format_time(i64::MAX, 0, false), None);
        assert_eq!(parse_time("2023-11-14T23:13:20+01:00"), Some((1_700_000_000, 0)));
        assert_eq!(parse_time("2023-11-14T22:13:20.5Z"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(parse_time("yesterday"), None);
    }
}
