//! Durations in configuration as Tempo writes them (`250ms`, `10s`, `1h30m`): the parser and
//! its serde hook, shared by the Kafka settings here and the server's YAML.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses `1h30m`, `5m`, `10s`, `250ms` (Go's duration syntax, integer parts).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration {s:?} lacks a unit"))?;
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad number in duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            other => return Err(format!("unknown unit {other:?} in duration {s:?}")),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// `#[serde(deserialize_with = "tracehouse_ingest::duration::deserialize")]`: a duration
/// written as [`parse_duration`] reads it.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// `d` as [`parse_duration`] reads it back (`1h30m`, `250ms`; sub-millisecond parts are
/// dropped).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
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
        for text in ["1h30m", "250ms", "0s", "2m5s", "1s1ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
