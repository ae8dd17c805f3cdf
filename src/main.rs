//! `phone-ledger` binary: parse the command line, set up logging, hand over to the library.

use clap::Parser;

/// The embedded log copies tree nodes on every write; mimalloc handles that churn far better than
/// the system allocator (malloc and free were a quarter of the server's CPU time under load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc asks for transparent huge pages on its memory. The embedded log allocates a fresh
/// 512 KiB IO buffer for every log segment it fills and frees it once written; each time such
/// memory goes back to the kernel and is taken again, the next touch faults in and zeroes a whole
/// 2 MiB huge page. Under write load that zeroing was a quarter of the event writer's time (the
/// thread every durable command waits for); with 4 KiB pages it is gone. Done first, before any
/// thread or allocation of the server exists.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        // Only a cost, never a correctness matter: carry on with the kernel's default.
        eprintln!(
            "phone-ledger: cannot disable transparent huge pages: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A panic inside the embedded log library means its files are damaged (it panics on bytes it
/// cannot read, on any of its threads, instead of returning an error). The process then stops
/// with one clear line and exit code 2 rather than a backtrace (or a server left running
/// without its log's background thread); any other panic is a bug and is reported as Rust does.
fn install_damage_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_sled = info.location().is_some_and(|l| l.file().contains("/sled-"));
        if !in_sled {
            return default(info);
        }
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!(
            "phone-ledger: the log's files are damaged and cannot be read ({what}). Nothing was changed. \
             Check them with `phone-ledger audit verify --data-dir DIR` on a copy, or restore the data \
             directory from a backup or an export (`phone-ledger audit export`)."
        );
        std::process::exit(2);
    }));
}

fn main() -> std::process::ExitCode {
    #[cfg(target_os = "linux")]
    disable_transparent_huge_pages();
    install_damage_hook();
    // A file-size limit (RLIMIT_FSIZE) is then a failed write, handled like a full disk, instead
    // of a signal that kills the process.
    #[cfg(target_os = "linux")]
    // SAFETY: ignoring a signal changes no memory; it is done before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = phone_ledger::cli::Cli::parse();
    // The server logs every request; the tools only what goes wrong (their output is the report).
    let default_level = match cli.command {
        phone_ledger::cli::Command::Serve { .. } => "info",
        _ => "warn",
    };
    let is_server = matches!(cli.command, phone_ledger::cli::Command::Serve { .. });
    phone_ledger::cli::init_tracing(default_level, !is_server);
    // An audit answer piped into `head` ends the command when `head` stops reading, quietly,
    // as any Unix tool's does, instead of panicking in its next `println!`. (Sockets are not
    // affected: the standard library sends with MSG_NOSIGNAL.)
    #[cfg(target_os = "linux")]
    if matches!(cli.command, phone_ledger::cli::Command::Audit(_)) {
        // SAFETY: restoring a signal's default changes no memory; no thread has started yet.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    phone_ledger::cli::run(cli)
}
