//! `phone-ledger` binary: parse the command line, set up logging, hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    phone_ledger::cli::init_tracing();
    phone_ledger::cli::run(phone_ledger::cli::Cli::parse())
}
