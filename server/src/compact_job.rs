//! `tracehouse compact`: one upkeep pass (compaction, retention, vacuum, log upkeep) over every
//! tenant's table or one, for cron and a Kubernetes CronJob. On a terminal a progress bar
//! follows the merges; otherwise each merge is a plain line. A line per tenant and a summary
//! (files and bytes before and after, spans kept, spans removed by retention, time) end it;
//! the exit code is non-zero when a tenant's pass failed.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use tracehouse_warehouse::{TableSize, UpkeepProgress, UpkeepReport};

use crate::app;
use crate::compactor::PassOptions;
use crate::config::Config;

/// Runs the job: `options` says over which tenants and what it does.
pub async fn run(config: &Config, options: &PassOptions) -> ExitCode {
    let started = Instant::now();
    let bar = std::io::stderr().is_terminal().then(new_bar);
    let progress = |tenant: &str, p: UpkeepProgress| match &bar {
        Some(bar) => {
            bar.set_length(p.merges_planned as u64);
            bar.set_position(p.merges_done as u64);
            bar.set_message(format!("{tenant}: {} merged", HumanBytes(p.bytes_done)));
        }
        None if p.merges_done > 0 => println!(
            "tenant {tenant}: merge {}/{} done, {} merged",
            p.merges_done,
            p.merges_planned,
            HumanBytes(p.bytes_done)
        ),
        None => {}
    };
    let reports = app::compact_once(config, options, &progress).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let reports = match reports {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tracehouse compact: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut total = Total::default();
    for (tenant, done) in &reports {
        match done {
            Ok(r) => {
                println!("{}", tenant_line(tenant, r, options.dry_run));
                total.add(r);
            }
            Err(e) => {
                total.failed += 1;
                println!("tenant {tenant}: failed: {e}");
            }
        }
    }
    println!("{}", total.line(reports.len(), started.elapsed()));
    match total.failed {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn new_bar() -> ProgressBar {
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} merges {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(0).with_style(style)
}

/// What a tenant's pass did, in one line (and on a dry run, the files vacuum would delete).
fn tenant_line(tenant: &str, r: &UpkeepReport, dry_run: bool) -> String {
    if let Some(owner) = &r.held_by {
        return format!("tenant {tenant}: skipped, {owner} is looking after it");
    }
    let mut line = format!(
        "tenant {tenant}: {}, {} merges ({} files into {}, {} spans deduplicated), {} conflicts, \
         retention removed {} spans in {} files, {} files {}, {} log files expired, {} small files outstanding",
        sizes(&r.before, &r.after),
        r.merges,
        r.files_compacted,
        r.files_written,
        r.rows_read.saturating_sub(r.rows_written),
        r.conflicts,
        r.rows_expired,
        r.files_expired,
        r.files_vacuumed.len(),
        if dry_run { "to vacuum" } else { "vacuumed" },
        r.log_files_expired,
        r.outstanding,
    );
    if dry_run {
        for path in &r.files_vacuumed {
            line.push_str(&format!("\n  would delete {path}"));
        }
    }
    line
}

/// `files A -> B, bytes A -> B, spans kept N`.
fn sizes(before: &TableSize, after: &TableSize) -> String {
    format!(
        "files {} -> {}, {} -> {}, spans kept {}",
        before.files,
        after.files,
        HumanBytes(before.bytes),
        HumanBytes(after.bytes),
        after.rows
    )
}

/// The job's totals over tenants.
#[derive(Default)]
struct Total {
    before: TableSize,
    after: TableSize,
    rows_expired: u64,
    skipped: usize,
    failed: usize,
}

impl Total {
    fn add(&mut self, r: &UpkeepReport) {
        if r.held_by.is_some() {
            self.skipped += 1;
        }
        for (sum, part) in [(&mut self.before, &r.before), (&mut self.after, &r.after)] {
            sum.files += part.files;
            sum.bytes += part.bytes;
            sum.rows += part.rows;
        }
        self.rows_expired += r.rows_expired;
    }

    fn line(&self, tenants: usize, took: std::time::Duration) -> String {
        format!(
            "summary: {tenants} tenants ({} failed, {} skipped), {}, removed by retention {} spans, took {:.1} s",
            self.failed,
            self.skipped,
            sizes(&self.before, &self.after),
            self.rows_expired,
            took.as_secs_f64()
        )
    }
}
