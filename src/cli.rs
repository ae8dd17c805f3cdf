//! The `phone-ledger` command line: `serve` (and the tools built on the log).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};
use crate::server;

/// Event-sourced Amazon Pinpoint SMS and Voice v2 phone-number service.
#[derive(Debug, Parser)]
#[command(name = "phone-ledger", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the AWS JSON 1.0 API (point SDKs at it with --endpoint-url).
    Serve {
        /// Address to listen on (default from config: 127.0.0.1:4566).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// This node's data directory, where the embedded event log lives (default from config: ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A TOML file layered over the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Inspect the audit trail: history, feed, time travel, replay, verify, recheck, export.
    Audit(crate::audit::cli::AuditArgs),
    /// Race conflicting operations against a server and check every outcome against the log.
    Loadtest(crate::loadtest::LoadTestArgs),
}

/// Sets up logging from `RUST_LOG` (default `default_level`).
pub fn init_tracing(default_level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Audit(args) => crate::audit::cli::run(args),
        Command::Loadtest(args) => run_loadtest(args),
        Command::Serve { listen, data_dir, config } => {
            let overrides = Overrides { listen, data_dir };
            let config = match Config::load(config.as_deref(), &overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("phone-ledger: {e}");
                    return ExitCode::from(2);
                }
            };
            let served = server::bind(&config)
                .and_then(|listener| actix_rt::System::new().block_on(server::serve(config, listener, server::wait_for_signal())));
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("phone-ledger: {}", crate::error_chain(&e));
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn run_loadtest(mut args: crate::loadtest::LoadTestArgs) -> ExitCode {
    use std::io::IsTerminal;
    args.quiet = args.quiet || !std::io::stderr().is_terminal();
    let report = match crate::loadtest::run(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("phone-ledger loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    crate::loadtest::print(&report);
    if let Some(path) = &args.json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|bytes| std::fs::write(path, bytes).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("phone-ledger loadtest: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.verdict.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
