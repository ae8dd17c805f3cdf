//! `phone-ledger` binary: parse the command line, set up logging, hand over to the library.

use clap::Parser;

/// The embedded log copies tree nodes on every write; mimalloc handles that churn far better than
/// the system allocator (malloc and free were a quarter of the server's CPU time under load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = phone_ledger::cli::Cli::parse();
    // The server logs every request; the tools only what goes wrong (their output is the report).
    let default_level = match cli.command {
        phone_ledger::cli::Command::Serve { .. } => "info",
        _ => "warn",
    };
    phone_ledger::cli::init_tracing(default_level);
    phone_ledger::cli::run(cli)
}
