//! The `tracehouse` binary: flags in Tempo's style (`-config.file=PATH`, `-target=all`,
//! `-storage.path=DIR`), configuration, logging and signal handling.

mod admin;
mod app;
mod config;
mod errors;
mod metrics;
mod otlp;

use std::path::PathBuf;

use mimalloc::MiMalloc;

use crate::config::Config;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const USAGE: &str = "usage: tracehouse [-config.file=PATH] [-target=all] [-storage.path=DIR]

  -config.file=PATH   Tempo-style YAML configuration (see tracehouse.example.yaml)
  -target=NAME        components to run; `all` (monolithic, the default)
  -storage.path=DIR   local storage directory (default ./tracehouse-data)
  -version            print the version
";

/// Parsed command-line flags.
#[derive(Debug, Default)]
struct Flags {
    config_file: Option<PathBuf>,
    target: Option<String>,
    storage_path: Option<PathBuf>,
}

fn parse_flags(args: impl IntoIterator<Item = String>) -> Result<Option<Flags>, String> {
    let mut flags = Flags::default();
    let mut args = args.into_iter();
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
            "storage.path" => flags.storage_path = Some(PathBuf::from(value(name)?)),
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
    let mut config = match &flags.config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            Config::from_yaml(&text)?
        }
        None => Config::default(),
    };
    if let Some(target) = &flags.target {
        config.target = Some(target.clone());
    }
    if let Some(path) = &flags.storage_path {
        config.storage.trace.local.path = path.clone();
    }
    match config.target.as_deref().unwrap_or("all") {
        "all" => Ok(config),
        other => Err(format!(
            "-target={other} is not supported yet; run -target=all (monolithic)"
        )),
    }
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

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tracehouse: starting runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
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
        let f = parse_flags(args(&["-config.file=x.yaml", "-target", "all", "--storage.path=/d"]))
            .unwrap()
            .unwrap();
        assert_eq!(f.config_file.unwrap(), PathBuf::from("x.yaml"));
        assert_eq!(f.target.unwrap(), "all");
        assert_eq!(f.storage_path.unwrap(), PathBuf::from("/d"));
        assert!(parse_flags(args(&["-nope=1"])).unwrap_err().contains("unknown flag"));
        assert!(parse_flags(args(&["-target"])).unwrap_err().contains("needs a value"));
    }

    #[test]
    fn other_targets_are_refused_clearly() {
        let f = Flags {
            target: Some("querier".into()),
            ..Flags::default()
        };
        assert!(load_config(&f).unwrap_err().contains("not supported yet"));
    }
}
