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
        /// Directory of the sled event log (default from config: ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A TOML file layered over the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Inspect the audit trail: history, feed, time travel, replay, verify, recheck, export.
    Audit(crate::audit::cli::AuditArgs),
}

/// Sets up logging from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Audit(args) => crate::audit::cli::run(args),
        Command::Serve { listen, data_dir, config } => {
            let overrides = Overrides { listen, data_dir };
            let config = match Config::load(config.as_deref(), &overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("phone-ledger: {e}");
                    return ExitCode::from(2);
                }
            };
            match actix_rt::System::new().block_on(server::serve(config, true, |_, _| {})) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("phone-ledger: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
