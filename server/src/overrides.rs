//! Per-tenant limits as Tempo's overrides give them: `overrides.defaults`, then a tenant's
//! block in the `per_tenant_override_config` file, read again every
//! `per_tenant_override_period` while the server runs. A file that does not parse keeps the
//! last good values, says why in the log and sets `tempo_runtime_config_last_reload_successful`
//! to 0 (Tempo's `TempoBadOverrides` alert). The effective values are served at
//! `/status/overrides` and exposed as `tempo_limits_defaults` / `tempo_limits_overrides`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::sync::watch;

use crate::config::{OverridesBlock, TenantOverrides};

/// The largest overrides file read.
pub const MAX_OVERRIDES_FILE_BYTES: u64 = 16 << 20;

/// A tenant's effective limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimits {
    /// Bytes per second; 0: no limit.
    pub rate_limit_bytes: u64,
    pub burst_size_bytes: u64,
    /// 0: no limit.
    pub max_traces_per_user: u64,
    /// 0: no limit.
    pub max_bytes_per_trace: u64,
    /// Zero: no limit.
    pub max_search_duration: Duration,
    /// Zero: the query frontend's own bound.
    pub max_metrics_duration: Duration,
    /// Zero: kept forever.
    pub block_retention: Duration,
}

impl TenantLimits {
    /// Tempo's defaults (`block_retention` as the compactor's).
    fn builtin(block_retention: Duration) -> Self {
        Self {
            rate_limit_bytes: 15_000_000,
            burst_size_bytes: 20_000_000,
            max_traces_per_user: 10_000,
            max_bytes_per_trace: 5_000_000,
            max_search_duration: Duration::ZERO,
            max_metrics_duration: Duration::ZERO,
            block_retention,
        }
    }

    /// These limits with what `o` sets over them.
    fn with(self, o: &TenantOverrides) -> Self {
        Self {
            rate_limit_bytes: o.ingestion.rate_limit_bytes.unwrap_or(self.rate_limit_bytes),
            burst_size_bytes: o.ingestion.burst_size_bytes.unwrap_or(self.burst_size_bytes),
            max_traces_per_user: o.ingestion.max_traces_per_user.unwrap_or(self.max_traces_per_user),
            max_bytes_per_trace: o.global.max_bytes_per_trace.unwrap_or(self.max_bytes_per_trace),
            max_search_duration: o.read.max_search_duration.unwrap_or(self.max_search_duration),
            max_metrics_duration: o.read.max_metrics_duration.unwrap_or(self.max_metrics_duration),
            block_retention: o.compaction.block_retention.unwrap_or(self.block_retention),
        }
    }

    /// Refuses limits that would refuse everything: a rate with no burst.
    fn check(&self, what: &str) -> Result<(), String> {
        if self.rate_limit_bytes > 0 && self.burst_size_bytes == 0 {
            return Err(format!(
                "{what}: ingestion.burst_size_bytes must be positive when rate_limit_bytes is"
            ));
        }
        Ok(())
    }

    /// `(name, value)` of each limit, named as Tempo's `limit_name` label names them.
    fn named(&self) -> [(&'static str, f64); 7] {
        [
            ("ingestion_rate_limit_bytes", self.rate_limit_bytes as f64),
            ("ingestion_burst_size_bytes", self.burst_size_bytes as f64),
            ("max_traces_per_user", self.max_traces_per_user as f64),
            ("max_bytes_per_trace", self.max_bytes_per_trace as f64),
            ("max_search_duration", self.max_search_duration.as_secs_f64()),
            ("max_metrics_duration", self.max_metrics_duration.as_secs_f64()),
            ("block_retention", self.block_retention.as_secs_f64()),
        ]
    }

    /// The limits in the overrides' YAML shape, durations as Tempo writes them.
    fn yaml(&self) -> serde_yaml::Value {
        let secs = |d: Duration| format!("{}s", d.as_secs());
        let text = format!(
            "ingestion:\n  rate_limit_bytes: {}\n  burst_size_bytes: {}\n  max_traces_per_user: {}\n\
             global:\n  max_bytes_per_trace: {}\n\
             read:\n  max_search_duration: {}\n  max_metrics_duration: {}\n\
             compaction:\n  block_retention: {}\n",
            self.rate_limit_bytes,
            self.burst_size_bytes,
            self.max_traces_per_user,
            self.max_bytes_per_trace,
            secs(self.max_search_duration),
            secs(self.max_metrics_duration),
            secs(self.block_retention),
        );
        serde_yaml::from_str(&text).expect("well-formed")
    }
}

/// Keys of an overrides block tracehouse does not read.
fn unread_keys(o: &TenantOverrides) -> Vec<String> {
    let mut out = Vec::new();
    for (section, unread) in o.unread_by_section() {
        let prefix = if section.is_empty() {
            String::new()
        } else {
            format!("{section}.")
        };
        out.extend(unread.keys().map(|k| format!("{prefix}{k}")));
    }
    out
}

/// The overrides in force, reloaded while the server runs.
pub struct Overrides {
    defaults: TenantLimits,
    path: Option<PathBuf>,
    period: Duration,
    /// Whether the per-tenant file may use Tempo's legacy flat format.
    legacy_enabled: bool,
    per_tenant: RwLock<Arc<Loaded>>,
    last_reload_ok: AtomicBool,
    reload_failures: AtomicU64,
}

/// The per-tenant file as last read well.
#[derive(Default)]
struct Loaded {
    text: String,
    limits: BTreeMap<String, TenantLimits>,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides").field("path", &self.path).finish()
    }
}

impl Overrides {
    /// The overrides of `block` (retention falling back to `block_retention`); the per-tenant
    /// file is read now, and must parse.
    pub fn load(block: &OverridesBlock, block_retention: Duration) -> Result<Self, String> {
        let block_defaults = block.effective_defaults()?;
        let defaults = TenantLimits::builtin(block_retention).with(&block_defaults);
        defaults.check("overrides.defaults")?;
        log_unread("overrides.defaults", &block_defaults);
        if block.per_tenant_override_period < Duration::from_millis(100) {
            return Err("overrides.per_tenant_override_period must be at least 100ms".into());
        }
        let overrides = Self {
            defaults,
            path: block.per_tenant_override_config.clone(),
            period: block.per_tenant_override_period,
            legacy_enabled: block.enable_legacy_overrides,
            per_tenant: RwLock::default(),
            last_reload_ok: AtomicBool::new(true),
            reload_failures: AtomicU64::new(0),
        };
        overrides.reload()?;
        Ok(overrides)
    }

    /// Overrides of the defaults alone (no file).
    #[cfg(test)]
    pub fn fixed(defaults: TenantLimits) -> Self {
        Self {
            defaults,
            path: None,
            period: Duration::from_secs(10),
            legacy_enabled: false,
            per_tenant: RwLock::default(),
            last_reload_ok: AtomicBool::new(true),
            reload_failures: AtomicU64::new(0),
        }
    }

    /// `tenant`'s effective limits.
    pub fn limits(&self, tenant: &str) -> TenantLimits {
        let loaded = self.per_tenant.read().expect("overrides lock").clone();
        loaded.limits.get(tenant).copied().unwrap_or(self.defaults)
    }

    /// Reads the per-tenant file again; when it changed and parses, its values take effect.
    /// An error leaves the last good values in force.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let result = self.read(path);
        self.last_reload_ok.store(result.is_ok(), Ordering::Release);
        if result.is_err() {
            self.reload_failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn read(&self, path: &std::path::Path) -> Result<(), String> {
        let shown = path.display();
        let size = std::fs::metadata(path)
            .map_err(|e| format!("reading {shown}: {e}"))?
            .len();
        if size > MAX_OVERRIDES_FILE_BYTES {
            return Err(format!("{shown} is {size} bytes, over {MAX_OVERRIDES_FILE_BYTES}"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {shown}: {e}"))?;
        if self.per_tenant.read().expect("overrides lock").text == text {
            return Ok(());
        }
        let parsed =
            crate::config::per_tenant_overrides(&text, self.legacy_enabled).map_err(|e| format!("{shown}: {e}"))?;
        let mut limits = BTreeMap::new();
        for (tenant, o) in &parsed {
            let what = format!("{shown}: overrides.{tenant}");
            log_unread(&what, o);
            let tenant_limits = self.defaults.with(o);
            tenant_limits.check(&what)?;
            limits.insert(tenant.clone(), tenant_limits);
        }
        tracing::info!(file = %shown, tenants = limits.len(), "per-tenant overrides loaded");
        *self.per_tenant.write().expect("overrides lock") = Arc::new(Loaded { text, limits });
        Ok(())
    }

    /// Reads the file every period until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.path.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            let this = self.clone();
            let result = tokio::task::spawn_blocking(move || this.reload()).await;
            if let Ok(Err(e)) = result {
                tracing::error!(error = %e, "per-tenant overrides not reloaded; keeping the last good ones");
            }
        }
    }

    /// `/status/overrides`: the defaults and every tenant's effective limits, as YAML.
    pub fn status_yaml(&self) -> String {
        let loaded = self.per_tenant.read().expect("overrides lock").clone();
        let mut root = serde_yaml::Mapping::new();
        root.insert("defaults".into(), self.defaults.yaml());
        let tenants: serde_yaml::Mapping = (loaded.limits.iter())
            .map(|(t, l)| (serde_yaml::Value::from(t.as_str()), l.yaml()))
            .collect();
        root.insert("overrides".into(), serde_yaml::Value::Mapping(tenants));
        let file = (self.path.as_ref()).map_or(serde_yaml::Value::Null, |p| p.display().to_string().into());
        root.insert("per_tenant_override_config".into(), file);
        let ok = self.last_reload_ok.load(Ordering::Acquire);
        root.insert("last_reload_successful".into(), ok.into());
        serde_yaml::to_string(&root).expect("yaml mapping")
    }
}

impl Overrides {
    /// `/status/overrides/{tenant}`: the tenant's effective limits, as YAML.
    pub fn tenant_yaml(&self, tenant: &str) -> String {
        serde_yaml::to_string(&self.limits(tenant).yaml()).expect("yaml value")
    }
}

impl tracehouse_tempo_api::TenantQueryLimits for Overrides {
    fn max_search_duration(&self, tenant: &str) -> Duration {
        self.limits(tenant).max_search_duration
    }

    fn max_metrics_duration(&self, tenant: &str) -> Duration {
        self.limits(tenant).max_metrics_duration
    }
}

fn log_unread(what: &str, o: &TenantOverrides) {
    let unread = unread_keys(o);
    if !unread.is_empty() {
        tracing::warn!(keys = ?unread, "{what}: overrides tracehouse does not apply, ignored");
    }
}

impl Collector for Overrides {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let ok = i64::from(self.last_reload_ok.load(Ordering::Acquire));
        let help = "Whether the last per-tenant overrides reload succeeded.";
        let metric = encoder.encode_descriptor(
            "tempo_runtime_config_last_reload_successful",
            help,
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(ok).encode(metric)?;
        let failures = self.reload_failures.load(Ordering::Relaxed);
        let help = "Per-tenant overrides reloads that failed.";
        let metric =
            encoder.encode_descriptor("tracehouse_overrides_reload_failures", help, None, MetricType::Counter)?;
        ConstCounter::new(failures).encode(metric)?;
        let help = "Default limit values.";
        let mut metric = encoder.encode_descriptor("tempo_limits_defaults", help, None, MetricType::Gauge)?;
        for (name, value) in self.defaults.named() {
            ConstGauge::new(value).encode(metric.encode_family(&[("limit_name", name)])?)?;
        }
        let loaded = self.per_tenant.read().expect("overrides lock").clone();
        let help = "Resource limit overrides applied to tenants.";
        let mut metric = encoder.encode_descriptor("tempo_limits_overrides", help, None, MetricType::Gauge)?;
        for (tenant, limits) in &loaded.limits {
            for (name, value) in limits.named() {
                let labels = [("limit_name", name), ("user", tenant.as_str())];
                ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_file_keeps_the_last_good_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overrides.yaml");
        std::fs::write(&path, "overrides:\n  a:\n    ingestion:\n      rate_limit_bytes: 100\n").unwrap();
        let block = OverridesBlock {
            per_tenant_override_config: Some(path.clone()),
            ..OverridesBlock::default()
        };
        let o = Overrides::load(&block, Duration::ZERO).unwrap();
        assert_eq!(o.limits("a").rate_limit_bytes, 100);
        assert_eq!(o.limits("b").rate_limit_bytes, 15_000_000);
        std::fs::write(&path, "overrides: [not, a, map").unwrap();
        assert!(o.reload().is_err());
        assert_eq!(o.limits("a").rate_limit_bytes, 100, "kept");
        assert!(!o.last_reload_ok.load(Ordering::Acquire));
        let tempo_style = "overrides:\n  a:\n    ingestion:\n      burst_size_bytes: 7\n    \
                           metrics_generator:\n      processors: [service-graphs]\n";
        std::fs::write(&path, tempo_style).unwrap();
        o.reload().unwrap();
        assert_eq!(o.limits("a").burst_size_bytes, 7);
        assert_eq!(o.limits("a").rate_limit_bytes, 15_000_000, "back to the default");
        assert!(o.status_yaml().contains("burst_size_bytes: 7"), "{}", o.status_yaml());
    }
}
