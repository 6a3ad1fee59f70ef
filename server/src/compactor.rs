//! Table upkeep (compaction, retention, vacuum, log upkeep) over every tenant's table: as a
//! loop every `compactor.compaction.compaction_cycle` (in-process in monolithic mode, or as
//! `-target=compactor`), and as a one-shot job (`tracehouse compact`, for cron or a
//! Kubernetes CronJob). Retention is per tenant: `overrides.per_tenant_override_config`, then
//! `overrides.defaults`, then `compactor.compaction.block_retention`; the per-tenant file is
//! read again each cycle, and a malformed one keeps the last good values.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracehouse_warehouse::upkeep::UpkeepConfig;
use tracehouse_warehouse::{UpkeepReport, Warehouse};

use crate::config::{OverridesBlock, PerTenantOverrides};

/// Upkeep of every tenant's table.
pub struct Compactor {
    warehouse: Arc<Warehouse>,
    config: UpkeepConfig,
    overrides: OverridesBlock,
    cycle: Duration,
    /// The per-tenant overrides last read well.
    per_tenant: Mutex<PerTenantOverrides>,
    /// Passes run, for tidying every [`TIDY_EVERY_PASSES`].
    passes: std::sync::atomic::AtomicU64,
}

/// A loop vacuums, expires the log and merges sidecars every this many passes (each lists the
/// table's files); the first pass (and so every one-shot job) does.
pub const TIDY_EVERY_PASSES: u64 = 10;

impl Compactor {
    pub fn new(warehouse: Arc<Warehouse>, config: UpkeepConfig, overrides: OverridesBlock, cycle: Duration) -> Self {
        Self {
            warehouse,
            config,
            overrides,
            cycle,
            per_tenant: Mutex::new(PerTenantOverrides::default()),
            passes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// One pass over `only` (or every tenant with a table): each tenant's report, or the
    /// error that stopped its pass (the others go on).
    pub async fn pass(&self, only: Option<&str>, dry_run: bool) -> Vec<(String, Result<UpkeepReport, String>)> {
        let tenants = match only {
            Some(t) => vec![t.to_string()],
            None => match self.warehouse.stored_tenants().await {
                Ok(t) => t,
                Err(e) => return vec![("*".into(), Err(format!("listing tenants: {e}")))],
            },
        };
        let per_tenant = self.reload_overrides();
        let pass = self.passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tidy = pass.is_multiple_of(TIDY_EVERY_PASSES);
        let mut out = Vec::with_capacity(tenants.len());
        for tenant in tenants {
            let config = UpkeepConfig {
                block_retention: self
                    .overrides
                    .block_retention(&per_tenant, &tenant, self.config.block_retention),
                tidy,
                ..self.config.clone()
            };
            let done = self.warehouse.upkeep_tenant(&tenant, &config, dry_run).await;
            match &done {
                Ok(r) if *r != UpkeepReport::default() => tracing::info!(tenant = %tenant, report = ?r, "table upkeep"),
                Ok(_) => {}
                Err(e) => tracing::error!(tenant = %tenant, error = %e, "table upkeep failed; retried next cycle"),
            }
            out.push((tenant, done.map_err(|e| e.to_string())));
        }
        out
    }

    /// The per-tenant overrides, read again; the last good ones when the file is malformed.
    fn reload_overrides(&self) -> PerTenantOverrides {
        let mut kept = self.per_tenant.lock().expect("overrides lock");
        match self.overrides.per_tenant() {
            Ok(fresh) => *kept = fresh,
            Err(e) => tracing::error!(error = %e, "per-tenant overrides not reloaded; keeping the last good ones"),
        }
        kept.clone()
    }

    /// Runs a pass every cycle until `shutdown`; a pass in progress is abandoned at shutdown
    /// (what it wrote but did not commit is deleted by a later vacuum).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.cycle);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            tokio::select! {
                _ = self.pass(None, false) => {}
                _ = shutdown.changed() => break,
            }
        }
    }
}
