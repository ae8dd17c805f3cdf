//! Progress of the long-running commands — `audit verify`, `audit recheck` and `audit export` on
//! a data directory, re-indexing the log at start-up — as a bar on standard error when it is a
//! terminal, and nothing at all when it is piped or redirected, so scripts and logs get only the
//! results. (`loadtest` has its own bar, with its request rate.)

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting events up to a known total, or nothing.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar for `what` over `total` events, shown only when standard error is a terminal.
    pub fn events(what: &str, total: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec}, {eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_string());
        bar.tick();
        Progress(Some(bar))
    }

    /// No bar (a server's own work, a test).
    pub fn none() -> Self {
        Progress(None)
    }

    /// `done` events are through.
    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(done);
        }
    }

    /// `n` more events are through.
    pub fn add(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
