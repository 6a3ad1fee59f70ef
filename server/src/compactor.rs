//! Table upkeep (compaction, retention, vacuum, log upkeep) over every tenant's table: as a
//! loop every `compactor.compaction.compaction_cycle` (in-process in monolithic mode, or as
//! `-target=compactor`), and as a one-shot job (`tracehouse compact`, for cron or a
//! Kubernetes CronJob). Retention is per tenant: `overrides.per_tenant_override_config`, then
//! `overrides.defaults`, then `compactor.compaction.block_retention`, as the shared
//! [`Overrides`] have them (reloaded while the server runs; a malformed file keeps the last good
//! values).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracehouse_warehouse::upkeep::UpkeepConfig;
use tracehouse_warehouse::{UpkeepProgress, UpkeepReport, Warehouse};

use crate::overrides::Overrides;

/// Upkeep of every tenant's table.
pub struct Compactor {
    warehouse: Arc<Warehouse>,
    config: UpkeepConfig,
    overrides: Arc<Overrides>,
    cycle: Duration,
    /// Passes run, for tidying every [`TIDY_EVERY_PASSES`].
    passes: std::sync::atomic::AtomicU64,
}

/// What a pass covers and does.
#[derive(Debug, Default, Clone)]
pub struct PassOptions {
    /// One tenant, or every tenant with a table.
    pub only: Option<String>,
    /// Change nothing; list what vacuum would delete.
    pub dry_run: bool,
    /// Apply retention (and tidy) without merging files.
    pub retention_only: bool,
}

/// A loop vacuums, expires the log and merges sidecars every this many passes (each lists the
/// table's files); the first pass (and so every one-shot job) does.
pub const TIDY_EVERY_PASSES: u64 = 10;

impl Compactor {
    pub fn new(warehouse: Arc<Warehouse>, config: UpkeepConfig, overrides: Arc<Overrides>, cycle: Duration) -> Self {
        Self {
            warehouse,
            config,
            overrides,
            cycle,
            passes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// One pass of the loop over every tenant with a table ([`Self::pass_with`]).
    pub async fn pass(&self) -> Vec<(String, Result<UpkeepReport, String>)> {
        self.pass_with(&PassOptions::default(), &|_, _| {}).await
    }

    /// One pass over `options.only` (or every tenant with a table): each tenant's report, or
    /// the error that stopped its pass (the others go on). `progress` hears of each merge.
    pub async fn pass_with(
        &self,
        options: &PassOptions,
        progress: &(dyn Fn(&str, UpkeepProgress) + Sync),
    ) -> Vec<(String, Result<UpkeepReport, String>)> {
        let only = options.only.as_deref();
        let tenants = match only {
            Some(t) => vec![t.to_string()],
            None => match self.warehouse.stored_tenants().await {
                Ok(t) => t,
                Err(e) => return vec![("*".into(), Err(format!("listing tenants: {e}")))],
            },
        };
        let pass = self.passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tidy = pass.is_multiple_of(TIDY_EVERY_PASSES);
        let mut out = Vec::with_capacity(tenants.len());
        for tenant in tenants {
            let config = UpkeepConfig {
                block_retention: self.overrides.limits(&tenant).block_retention,
                tidy,
                compact: !options.retention_only,
                ..self.config.clone()
            };
            let progress = |p| progress(&tenant, p);
            let done = (self.warehouse)
                .upkeep_tenant_with(&tenant, &config, options.dry_run, &progress)
                .await;
            match &done {
                Ok(r) if r.held_by.is_some() => {
                    tracing::info!(tenant = %tenant, held_by = ?r.held_by, "table upkeep skipped: another process holds it")
                }
                Ok(r) if r.merges + r.files_expired + r.files_vacuumed.len() > 0 => {
                    tracing::info!(tenant = %tenant, report = ?r, "table upkeep")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(tenant = %tenant, error = %e, "table upkeep failed; retried next cycle"),
            }
            out.push((tenant, done.map_err(|e| e.to_string())));
        }
        out
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
                _ = self.pass() => {}
                _ = shutdown.changed() => break,
            }
        }
    }
}
