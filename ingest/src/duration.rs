//! Durations in configuration as Tempo writes them (`250ms`, `10s`, `1h30m`): the parser and
//! its serde hook, shared by the Kafka settings here and the server's YAML.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses `1h30m`, `5m`, `10s`, `250ms`, `1.5h`, `100us`, `10ns` (Go's duration syntax:
/// units `h`, `m`, `s`, `ms`, `us` / `µs`, `ns`, each with an optional fraction).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let number = |c: char| c.is_ascii_digit() || c == '.';
    let mut total_ns: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !number(c))
            .ok_or_else(|| format!("duration {s:?} lacks a unit"))?;
        let (whole, fraction) = rest[..digits].split_once('.').unwrap_or((&rest[..digits], ""));
        rest = &rest[digits..];
        let unit_len = rest.find(number).unwrap_or(rest.len());
        let unit_ns: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(format!("unknown unit {other:?} in duration {s:?}")),
        };
        total_ns += part_ns(whole, fraction, unit_ns).ok_or_else(|| format!("bad number in duration {s:?}"))?;
        rest = &rest[unit_len..];
    }
    let nanos = u64::try_from(total_ns).map_err(|_| format!("duration {s:?} is too long"))?;
    Ok(Duration::from_nanos(nanos))
}

/// `whole.fraction` units of `unit_ns` nanoseconds, in nanoseconds (the fraction's digits
/// below a nanosecond dropped); None when not a number or too large.
fn part_ns(whole: &str, fraction: &str, unit_ns: u128) -> Option<u128> {
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || fraction.len() > 30 {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut ns = whole.checked_mul(unit_ns)?;
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().ok()?;
        ns = ns.checked_add(digits.checked_mul(unit_ns)? / 10u128.pow(fraction.len() as u32))?;
    }
    (ns <= u128::from(u64::MAX)).then_some(ns)
}

/// `#[serde(deserialize_with = "tracehouse_ingest::duration::deserialize")]`: a duration
/// written as [`parse_duration`] reads it.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// `d` as [`parse_duration`] reads it back (`1h30m`, `250ms`, `1us`).
pub fn format_duration(d: Duration) -> String {
    let mut ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let units = [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    for (unit, size) in units {
        if ns >= size {
            out.push_str(&format!("{}{unit}", ns / size));
            ns %= size;
        }
    }
    out
}

/// `#[serde(serialize_with = "tracehouse_ingest::duration::serialize")]`: a duration written
/// as [`format_duration`] writes it.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// [`serialize`] of an optional duration.
pub fn serialize_option<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => serialize(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("100us").unwrap(), Duration::from_micros(100));
        assert_eq!(parse_duration("3µs2ns").unwrap(), Duration::from_nanos(3002));
        for bad in [".s", "1..5s", "1.2.3s", "99999999999999999999999h", "1x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for text in ["1h30m", "250ms", "0s", "2m5s", "1s1ms", "1us", "1ms2us3ns"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
