//! The `tracehouse` binary: flags in Tempo's style (`-config.file=PATH`, `-target=all`,
//! `-storage.path=DIR`, and any config field by its path), configuration, logging, signal
//! handling, and transparent huge pages off for the process (`server.transparent_huge_pages`).

mod admin;
mod app;
mod auth;
mod compact_job;
mod compactor;
mod config;
mod errors;
mod limits;
mod live;
mod metrics;
mod otlp;
mod overrides;
mod overrides_keys;
mod receivers;
mod tempo_metrics;

use std::path::PathBuf;

use mimalloc::MiMalloc;

use crate::config::Config;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const USAGE: &str = "usage: tracehouse [-config.file=PATH] [-target=NAME] [-FIELD.PATH=VALUE ...]
       tracehouse compact [-config.file=PATH] [-tenant=ID] [-dry-run] [-retention-only] [-FIELD.PATH=VALUE ...]

  -config.file=PATH   Tempo-style YAML configuration (see tracehouse.example.yaml)
  -target=NAME        components to run: all (monolithic, the default), distributor,
                      block-builder, live-store, querier, compactor
  -storage.path=DIR   local storage directory (default ./tracehouse-data)
  -config.verify      check the configuration and flags, print the target, and exit
  -version            print the version

compact: one pass of compaction, retention, vacuum and log upkeep over every tenant's table
(or -tenant's), then exit; 0 when every tenant's pass succeeded. -dry-run changes nothing
and lists the files vacuum would delete; -retention-only removes expired spans and tidies
without merging. A progress bar on a terminal, plain lines otherwise, then a summary.

Any configuration field is also a flag named by its path, with dashes or underscores:
  -server.http-listen-port=3200         -server.http-listen-address=127.0.0.1
  -distributor.otlp.grpc-endpoint=ADDR  -distributor.otlp.http-endpoint=ADDR
  -postgres.listen-address=ADDR         -flight.listen-address=ADDR
  -ingest.kafka.address=HOST:PORT       -ingest.kafka.topic=NAME
  -ingest.kafka.consumer-group=NAME     -ingest.kafka.auto-create-topic-default-partitions=N
  -querier.live-store-addresses=HOST:PORT[,HOST:PORT]
Flags override the file.
";

/// Short names for long configuration paths.
const FLAG_ALIASES: [(&str, &str); 3] = [
    ("storage.path", "storage.trace.local.path"),
    (
        "distributor.otlp.grpc-endpoint",
        "distributor.receivers.otlp.protocols.grpc.endpoint",
    ),
    (
        "distributor.otlp.http-endpoint",
        "distributor.receivers.otlp.protocols.http.endpoint",
    ),
];

/// Parsed command-line flags.
#[derive(Debug, Default)]
struct Flags {
    config_file: Option<PathBuf>,
    target: Option<String>,
    /// Check the configuration and exit.
    verify: bool,
    /// `(config path, value)`, in order.
    overrides: Vec<(String, String)>,
    /// `tracehouse compact`: one upkeep pass, then exit.
    compact: Option<CompactJob>,
}

/// The flags of `tracehouse compact`.
type CompactJob = compactor::PassOptions;

fn parse_flags(args: impl IntoIterator<Item = String>) -> Result<Option<Flags>, String> {
    let mut flags = Flags::default();
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("compact") {
        args.next();
        flags.compact = Some(CompactJob::default());
    }
    while let Some(arg) = args.next() {
        let trimmed = arg.trim_start_matches('-');
        if trimmed.len() == arg.len() {
            return Err(format!("unexpected argument {arg:?}\n\n{USAGE}"));
        }
        let (name, inline) = match trimmed.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (trimmed, None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("flag -{name} needs a value"))
        };
        match name {
            "config.file" => flags.config_file = Some(PathBuf::from(value(name)?)),
            "target" => flags.target = Some(value(name)?),
            "config.verify" => flags.verify = inline.as_deref() != Some("false"),
            "tenant" if flags.compact.is_some() => {
                let tenant = value(name)?;
                flags.compact.as_mut().expect("checked").only = Some(tenant);
            }
            "dry-run" if flags.compact.is_some() => {
                flags.compact.as_mut().expect("checked").dry_run = inline.as_deref() != Some("false");
            }
            "retention-only" if flags.compact.is_some() => {
                flags.compact.as_mut().expect("checked").retention_only = inline.as_deref() != Some("false");
            }
            path if path.contains('.') => {
                let path = FLAG_ALIASES
                    .iter()
                    .find(|(alias, _)| *alias == path)
                    .map_or(path, |(_, full)| full);
                flags.overrides.push((path.to_string(), value(name)?));
            }
            "h" | "help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "version" => {
                println!("tracehouse {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            other => return Err(format!("unknown flag -{other}\n\n{USAGE}")),
        }
    }
    Ok(Some(flags))
}

fn load_config(flags: &Flags) -> Result<Config, String> {
    let text = match &flags.config_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?,
        None => String::new(),
    };
    let mut config = Config::from_yaml_with(&text, &flags.overrides)?;
    if let Some(target) = &flags.target {
        config.target = Some(target.clone());
    }
    app::Target::parse(config.target.as_deref().unwrap_or("all"))?;
    Ok(config)
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Turns transparent huge pages off for this process (`server.transparent_huge_pages`), before
/// the runtime and its threads allocate: with THP `always`, each fresh 2 MiB page the
/// allocator touches is zeroed whole. What `MIMALLOC_ALLOW_THP=0` does, without the variable.
fn disable_transparent_huge_pages() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("tracehouse: transparent huge pages left as the system sets them: {e}");
    }
}

/// Stack of every runtime thread (workers and the blocking pool that plans queries).
const THREAD_STACK_BYTES: usize = 32 << 20;

fn main() -> std::process::ExitCode {
    let flags = match parse_flags(std::env::args().skip(1)) {
        Ok(Some(f)) => f,
        Ok(None) => return std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracehouse: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let config = match load_config(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tracehouse: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if flags.verify && flags.compact.is_some() {
        return match app::verify_compact(&config) {
            Ok(()) => {
                println!("config ok: target compact");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tracehouse: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    if flags.verify {
        return match app::verify(&config) {
            Ok(target) => {
                println!("config ok: target {}", app::Target::NAMES[target as usize]);
                for (role, address) in app::listeners(&config, target) {
                    println!("listen {role} {address}");
                }
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tracehouse: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    if !config.server.transparent_huge_pages {
        disable_transparent_huge_pages();
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{},datafusion=warn,deltalake=warn,deltalake_core=warn,buoyant_kernel=warn,delta_kernel=warn",
            config.server.log_level
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();

    // Deep but accepted plans (expressions up to the SQL and TraceQL depth limits) recurse in
    // DataFusion's planner and optimizer; stacks are reserved, not committed, so a generous size
    // costs only address space.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tracehouse: starting runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(job) = &flags.compact {
        return runtime.block_on(compact_job::run(&config, job));
    }
    match runtime.block_on(app::run(config, stop_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracehouse: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tempo_style_flags() {
        let f = parse_flags(args(&[
            "-config.file=x.yaml",
            "-target",
            "all",
            "--storage.path=/d",
            "-server.http-listen-port",
            "3201",
            "-distributor.otlp.grpc-endpoint=127.0.0.1:1",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(f.config_file.unwrap(), PathBuf::from("x.yaml"));
        assert_eq!(f.target.unwrap(), "all");
        assert_eq!(
            f.overrides,
            vec![
                ("storage.trace.local.path".to_string(), "/d".to_string()),
                ("server.http-listen-port".to_string(), "3201".to_string()),
                (
                    "distributor.receivers.otlp.protocols.grpc.endpoint".to_string(),
                    "127.0.0.1:1".to_string()
                ),
            ]
        );
        assert!(parse_flags(args(&["-nope=1"])).unwrap_err().contains("unknown flag"));
        assert!(parse_flags(args(&["-target"])).unwrap_err().contains("needs a value"));
    }

    #[test]
    fn targets_and_field_flags() {
        for name in app::Target::NAMES {
            let f = Flags {
                target: Some(name.into()),
                ..Flags::default()
            };
            assert_eq!(load_config(&f).unwrap().target.as_deref(), Some(name));
        }
        let f = Flags {
            target: Some("ingester".into()),
            ..Flags::default()
        };
        assert!(load_config(&f).unwrap_err().contains("unknown -target=ingester"));
        let f = Flags {
            overrides: vec![("storage.trace.local.path".into(), "/x".into())],
            ..Flags::default()
        };
        assert_eq!(load_config(&f).unwrap().storage.trace.local.path, PathBuf::from("/x"));
        let f = Flags {
            overrides: vec![("server.bogus".into(), "1".into())],
            ..Flags::default()
        };
        assert!(load_config(&f).unwrap_err().contains("unknown field"));
    }

    #[test]
    fn compact_job_flags() {
        let args = |a: &[&str]| parse_flags(a.iter().map(|s| s.to_string())).unwrap().unwrap();
        let f = args(&["compact", "-tenant=shop", "-dry-run", "-config.file=c.yaml"]);
        let job = f.compact.expect("a compact job");
        assert_eq!(
            (job.only.as_deref(), job.dry_run, job.retention_only),
            (Some("shop"), true, false)
        );
        let job = args(&["compact", "--retention-only"]).compact.expect("a compact job");
        assert!(job.retention_only && !job.dry_run && job.only.is_none());
        assert_eq!(f.config_file, Some(PathBuf::from("c.yaml")));
        assert!(args(&["-target=all"]).compact.is_none());
        // The job's flags mean nothing to a server.
        assert!(
            parse_flags(["-tenant=shop".to_string()])
                .unwrap_err()
                .contains("unknown flag")
        );
    }

    #[test]
    fn upkeep_settings_out_of_range_are_refused_by_name() {
        for (key, value, named) in [
            ("compactor.compaction.compaction_cycle", "0s", "compaction_cycle"),
            ("compactor.compaction.target_file_bytes", "1000", "target_file_bytes"),
            (
                "compactor.compaction.compacted_block_retention",
                "1m",
                "compacted_block_retention",
            ),
            (
                "compactor.compaction.min_open_window_files",
                "1",
                "min_open_window_files",
            ),
        ] {
            let f = Flags {
                overrides: vec![(key.into(), value.into())],
                ..Flags::default()
            };
            let config = load_config(&f).unwrap();
            let err = app::verify(&config).unwrap_err().to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
        }
        let f = Flags {
            overrides: vec![("overrides.defaults.compaction.block_retention".into(), "336h".into())],
            ..Flags::default()
        };
        let config = load_config(&f).unwrap();
        let kept = app::overrides(&config).unwrap().limits("t").block_retention;
        assert_eq!(kept, std::time::Duration::from_secs(336 * 3600));
    }

    #[test]
    fn server_settings_out_of_range_are_refused_by_name() {
        for (target, key, value) in [
            ("all", "ingester.wal_group_commit_max_bytes", "0"),
            ("all", "ingester.wal_queue_max_requests", "0"),
            ("all", "ingester.flush_check_period", "1ms"),
            ("live-store", "live_store.max_live_bytes", "0"),
            ("live-store", "live_store.prune_interval", "1ms"),
            ("block-builder", "block_builder.max_block_bytes", "0"),
            ("block-builder", "block_builder.consume_cycle_duration", "0s"),
        ] {
            let f = Flags {
                target: Some(target.into()),
                overrides: vec![(key.into(), value.into())],
                ..Flags::default()
            };
            let config = load_config(&f).unwrap();
            let err = app::verify(&config).unwrap_err().to_string();
            assert!(err.contains(key), "{key}={value}: {err}");
            let fine = Flags {
                target: Some(target.into()),
                ..Flags::default()
            };
            assert!(app::verify(&load_config(&fine).unwrap()).is_ok(), "{target}");
        }
    }
}
