//! Durations in configuration as Tempo writes them (`250ms`, `10s`, `1h30m`): the parser and
//! its serde hook, shared by the Kafka settings here and the server's YAML.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
    }
}
