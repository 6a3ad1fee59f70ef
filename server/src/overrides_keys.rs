//! Reading an overrides block as Tempo 3 reads it, beyond the keys tracehouse applies:
//! Tempo's scoped keys that tracehouse does not apply are accepted (and named in the log by
//! `crate::overrides`); any other key is refused, as Tempo's strict parser refuses it, so a
//! misspelt limit is an error instead of a limit silently not applied; and Tempo's legacy flat
//! format (`ingestion_rate_limit_bytes: ...`) is read as the scoped one when
//! `overrides.enable_legacy_overrides` is set, and refused with Tempo's reason otherwise.

use serde_yaml::{Mapping, Value};

use crate::config::TenantOverrides;

/// Tempo's scoped keys tracehouse accepts without applying, by section ("": top level).
const NOT_APPLIED: [(&str, &[&str]); 5] = [
    ("", &["metrics_generator", "forwarders", "storage", "cost_attribution"]),
    (
        "ingestion",
        &[
            "rate_strategy",
            "max_global_traces_per_user",
            "tenant_shard_size",
            "max_attribute_bytes",
            "artificial_delay",
            "retry_info_enabled",
        ],
    ),
    ("global", &[]),
    (
        "read",
        &[
            "max_bytes_per_tag_values_query",
            "max_blocks_per_tag_values_query",
            "max_condition_groups_per_tag_query",
            "unsafe_query_hints",
            "left_pad_trace_ids",
            "metrics_spanonly_fetch",
            "span_pruning_awareness",
            "engine_bytes_tracking",
            "span_pruning_enabled",
        ],
    ),
    ("compaction", &["compaction_window", "compaction_disabled"]),
];

/// The sections of the scoped format.
const SECTIONS: [&str; 6] = [
    "ingestion",
    "global",
    "read",
    "compaction",
    "metrics_generator",
    "storage",
];

/// Tempo's legacy flat keys and their place in the scoped format: (flat key, section, key).
/// `metrics_generator_*` keys go to `metrics_generator` (see [`legacy_place`]).
const LEGACY: [(&str, &str, &str); 25] = [
    ("ingestion_rate_strategy", "ingestion", "rate_strategy"),
    ("ingestion_rate_limit_bytes", "ingestion", "rate_limit_bytes"),
    ("ingestion_burst_size_bytes", "ingestion", "burst_size_bytes"),
    ("ingestion_tenant_shard_size", "ingestion", "tenant_shard_size"),
    ("ingestion_max_attribute_bytes", "ingestion", "max_attribute_bytes"),
    ("ingestion_artificial_delay", "ingestion", "artificial_delay"),
    ("ingestion_retry_info_enabled", "ingestion", "retry_info_enabled"),
    ("max_traces_per_user", "ingestion", "max_traces_per_user"),
    ("max_global_traces_per_user", "ingestion", "max_global_traces_per_user"),
    ("max_bytes_per_trace", "global", "max_bytes_per_trace"),
    ("block_retention", "compaction", "block_retention"),
    ("compaction_window", "compaction", "compaction_window"),
    ("compaction_disabled", "compaction", "compaction_disabled"),
    (
        "max_bytes_per_tag_values_query",
        "read",
        "max_bytes_per_tag_values_query",
    ),
    (
        "max_blocks_per_tag_values_query",
        "read",
        "max_blocks_per_tag_values_query",
    ),
    (
        "max_condition_groups_per_tag_query",
        "read",
        "max_condition_groups_per_tag_query",
    ),
    ("max_search_duration", "read", "max_search_duration"),
    ("max_metrics_duration", "read", "max_metrics_duration"),
    ("unsafe_query_hints", "read", "unsafe_query_hints"),
    ("left_pad_trace_ids", "read", "left_pad_trace_ids"),
    ("metrics_spanonly_fetch", "read", "metrics_spanonly_fetch"),
    ("span_pruning_awareness", "read", "span_pruning_awareness"),
    ("engine_bytes_tracking", "read", "engine_bytes_tracking"),
    ("span_pruning_enabled", "read", "span_pruning_enabled"),
    ("parquet_dedicated_columns", "storage", "parquet_dedicated_columns"),
];

/// Where legacy `key` goes in the scoped format: (section, key); section "" is the top level
/// (`forwarders` and `cost_attribution` are the same in both formats).
fn legacy_place(key: &str) -> Option<(&'static str, String)> {
    if let Some(rest) = key.strip_prefix("metrics_generator_") {
        return Some(("metrics_generator", rest.to_string()));
    }
    if key == "forwarders" || key == "cost_attribution" {
        return Some(("", key.to_string()));
    }
    let (_, section, scoped) = LEGACY.iter().find(|(flat, _, _)| *flat == key)?;
    Some((section, (*scoped).to_string()))
}

/// Whether `key` exists only in the legacy format.
fn legacy_only(key: &str) -> bool {
    legacy_place(key).is_some_and(|(section, _)| !section.is_empty())
}

/// One tenant's overrides (or the defaults) from `block`, in either of Tempo's formats.
/// `what` names the block in errors (`overrides.TENANT`).
pub fn tenant_overrides(block: Value, legacy_enabled: bool, what: &str) -> Result<TenantOverrides, String> {
    let map = match block {
        Value::Null => Mapping::new(),
        Value::Mapping(map) => map,
        other => return Err(format!("{what}: a mapping expected, got {other:?}")),
    };
    let legacy = map.keys().any(|k| k.as_str().is_some_and(legacy_only));
    let map = if legacy {
        from_legacy(map, legacy_enabled, what)?
    } else {
        map
    };
    let parsed: TenantOverrides = serde_yaml::from_value(Value::Mapping(map)).map_err(|e| format!("{what}: {e}"))?;
    check_keys(&parsed, what)?;
    Ok(parsed)
}

/// A legacy block in the scoped format.
fn from_legacy(map: Mapping, enabled: bool, what: &str) -> Result<Mapping, String> {
    if !enabled {
        return Err(format!(
            "{what}: the legacy overrides format is in use, but legacy overrides are disabled (as in \
             Tempo 3): migrate to the scoped format, or set overrides.enable_legacy_overrides: true"
        ));
    }
    let mut scoped = Mapping::new();
    for (key, value) in map {
        let name = key.as_str().unwrap_or_default();
        if SECTIONS.contains(&name) {
            return Err(format!(
                "{what}: mixes the legacy (flat) and the scoped overrides formats ({name})"
            ));
        }
        let (section, place) =
            legacy_place(name).ok_or_else(|| format!("{what}: unknown legacy overrides key {name}"))?;
        let slot = if section.is_empty() {
            &mut scoped
        } else {
            let entry = scoped
                .entry(section.into())
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            entry.as_mapping_mut().expect("sections are mappings")
        };
        slot.insert(place.into(), value);
    }
    Ok(scoped)
}

/// Refuses keys Tempo does not know (the ones it knows and tracehouse ignores are kept aside).
fn check_keys(o: &TenantOverrides, what: &str) -> Result<(), String> {
    for (section, unread) in o.unread_by_section() {
        let known = NOT_APPLIED
            .iter()
            .find(|(s, _)| *s == section)
            .map_or(&[][..], |(_, k)| k);
        if let Some(key) = unread.keys().find(|k| !known.contains(&k.as_str())) {
            let path = if section.is_empty() {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            return Err(format!("{what}: unknown overrides key {path}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(yaml: &str, legacy: bool) -> Result<TenantOverrides, String> {
        tenant_overrides(serde_yaml::from_str(yaml).unwrap(), legacy, "overrides.t")
    }

    #[test]
    fn the_legacy_format_reads_as_the_scoped_one_when_enabled() {
        let flat = "ingestion_rate_limit_bytes: 100\ningestion_burst_size_bytes: 200\nmax_traces_per_user: 3\n\
                    max_bytes_per_trace: 4\nmax_search_duration: 1h\nmax_metrics_duration: 2h\nblock_retention: 48h\n\
                    metrics_generator_processors: [service-graphs]\nforwarders: [a]\n";
        let o = read(flat, true).unwrap();
        assert_eq!(o.ingestion.rate_limit_bytes, Some(100));
        assert_eq!(o.ingestion.burst_size_bytes, Some(200));
        assert_eq!(o.ingestion.max_traces_per_user, Some(3));
        assert_eq!(o.global.max_bytes_per_trace, Some(4));
        assert_eq!(o.read.max_search_duration, Some(std::time::Duration::from_secs(3600)));
        assert_eq!(o.read.max_metrics_duration, Some(std::time::Duration::from_secs(7200)));
        assert_eq!(
            o.compaction.block_retention,
            Some(std::time::Duration::from_secs(48 * 3600))
        );
        assert!(o.unread.contains_key("metrics_generator") && o.unread.contains_key("forwarders"));
        let refused = read(flat, false).unwrap_err();
        assert!(refused.contains("legacy overrides are disabled"), "{refused}");
        let mixed = read(
            "ingestion_rate_limit_bytes: 1\ningestion:\n  burst_size_bytes: 2\n",
            true,
        )
        .unwrap_err();
        assert!(mixed.contains("mixes the legacy"), "{mixed}");
    }

    #[test]
    fn unknown_keys_are_refused_and_tempos_other_keys_accepted() {
        let tempo = "ingestion:\n  rate_strategy: local\n  rate_limit_bytes: 5\nread:\n  unsafe_query_hints: true\n\
                     compaction:\n  compaction_window: 1h\nmetrics_generator:\n  processors: [span-metrics]\n";
        assert_eq!(read(tempo, false).unwrap().ingestion.rate_limit_bytes, Some(5));
        let typo = read("ingestion:\n  rate_limit_byte: 5\n", false).unwrap_err();
        assert_eq!(typo, "overrides.t: unknown overrides key ingestion.rate_limit_byte");
        let top = read("ingestoin:\n  rate_limit_bytes: 5\n", false).unwrap_err();
        assert_eq!(top, "overrides.t: unknown overrides key ingestoin");
        let flat_typo = read("ingestion_rate_limit_bytes: 1\nmax_trace_per_user: 2\n", true).unwrap_err();
        assert!(
            flat_typo.contains("unknown legacy overrides key max_trace_per_user"),
            "{flat_typo}"
        );
        assert!(read("", false).is_ok());
        assert!(read("[1]", false).is_err());
    }
}
