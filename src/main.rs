//! `phone-ledger` binary: parse the command line, set up logging, hand over to the library.

use clap::Parser;

/// sled copies tree nodes on every write; mimalloc handles that churn far better than the system
/// allocator (malloc and free were a quarter of the server's CPU time under load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    phone_ledger::cli::init_tracing();
    phone_ledger::cli::run(phone_ledger::cli::Cli::parse())
}
