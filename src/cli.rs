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
    /// Try the clustered mode on this machine: a 3-node NATS JetStream cluster (Debian's
    /// nats-server) and three phone-ledger nodes sharing its log, each started again if it
    /// exits, until Ctrl-C.
    Cluster(ClusterArgs),
}

/// `phone-ledger cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Where the NATS servers keep their data and the nodes their configuration (kept across
    /// runs: starting again over it finds the log as it was).
    #[arg(long, default_value = "./cluster-data")]
    pub dir: PathBuf,
    /// How many NATS servers and phone-ledger nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// The first phone-ledger node listens on this port, the next on the one after, ...
    #[arg(long, default_value_t = 4566)]
    pub port: u16,
    /// The first NATS server's client port (its cluster port is this + 2000, its monitor
    /// port this + 4000), the next server's the one after, ...
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    /// Report a process that exits, but do not start it again (to watch the cluster without
    /// it: a quorum lost, say).
    #[arg(long)]
    pub no_restart: bool,
}

/// Sets up logging from `RUST_LOG` (default `default_level`), to standard output (a server's
/// log) or to standard error (a command's, whose standard output is its answer).
///
/// actix-http logs a client's protocol errors (a request that does not parse, a connection cut
/// mid-request) at ERROR; they are the client's doing, not the server's, and a fuzzer or a port
/// scanner would fill the log with them. They are shown only when `RUST_LOG` names `actix_http`
/// (`RUST_LOG=info,actix_http=debug`).
pub fn init_tracing(default_level: &str, to_stderr: bool) {
    let asked = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let mut filter = asked
        .as_deref()
        .and_then(|a| tracing_subscriber::EnvFilter::try_new(a).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default_level));
    // A directive of the one global filter, so that every callsite's answer stays cached (a
    // filter that looks at each event costs every request a few microseconds).
    if !asked.as_deref().is_some_and(|a| a.contains("actix_http")) {
        if let Ok(quiet) = "actix_http::h1::dispatcher=off".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    // Colours only for a person watching who has not asked for none (`NO_COLOR`): a log written
    // to a file or a pipe is plain text.
    use std::io::IsTerminal;
    let terminal = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let ansi = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    let _ = if to_stderr {
        builder.with_writer(std::io::stderr).try_init()
    } else {
        builder.try_init()
    };
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Audit(args) => crate::audit::cli::run(args),
        Command::Loadtest(args) => run_loadtest(args),
        Command::Cluster(args) => match crate::cluster_command::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("phone-ledger cluster: {e}");
                ExitCode::from(2)
            }
        },
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
    if let Some(path) = &args.report {
        if let Err(e) = crate::loadtest::report::write_html(&report, path) {
            eprintln!("phone-ledger loadtest: {e}");
            return ExitCode::from(2);
        }
    }
    if report.verdict.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
