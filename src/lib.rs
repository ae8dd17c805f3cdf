//! phone-ledger: the phone-number lifecycle of Amazon Pinpoint SMS and Voice v2
//! (`ReleasePhoneNumber` and the operations around it) as an event-sourced actor system,
//! spoken over the AWS JSON 1.0 protocol so the real AWS SDKs and CLI work against it.
//!
//! # Layout
//! - [`domain`]: pure deciders (`decide`/`evolve`) for phone numbers and pools; no I/O.
//! - [`store`]: the storage port (streams, global feed, hash chain, snapshots, derived index,
//!   and what one append guarantees), its embedded backend and its clustered one (NATS
//!   JetStream).
//! - [`upcast`]: the event schema history and the upcasters applied at read time.
//! - [`codec`]: domain events to stored envelopes and back; recorded commands.
//! - [`rehydrate`]: an aggregate's state from its snapshot and the events after it.
//! - [`projection`]: the derived index (Describe views, client tokens, claimed numbers,
//!   counters) computed from state changes, and its rebuild from the log.
//! - [`actors`]: one actix actor per aggregate and the registry that activates them.
//! - [`service`]: the application service: each API operation as ordered commands to the
//!   aggregates' actors (pool workflows, quotas, client tokens, crash recovery), and the reads.
//! - [`numbering`]: choosing fresh, valid E.164 numbers per country and number type.
//! - [`model`]: the official service model: input validation, output shapes.
//! - [`views`]: a number's and a pool's API view, shared by Describe and the audit trail.
//! - [`aws_error`]: the one error type every HTTP answer of the service fails with.
//! - [`api`]: the AWS JSON 1.0 edge: operations, admission, pagination.
//! - [`audit`]: read-only history, time travel, replay, hash-chain verification and decision
//!   re-check, over HTTP (`/audit/...`) and as `phone-ledger audit`.
//! - [`loadtest`]: conflicting load over HTTP, latency report, and a correctness verdict
//!   checked against the log.
//! - [`server`]: wiring (routes, shared state) and lifecycle (serve on a listener until a
//!   shutdown future completes, then a graceful stop).
//! - [`config`]: layered configuration with embedded defaults.
//! - [`nats_cluster`]: a local NATS JetStream cluster of real servers (tests, `phone-ledger cluster`).
//! - [`cli`]: the `phone-ledger` command line.

pub mod actors;
pub mod api;
pub mod audit;
pub mod auth;
pub mod aws_error;
pub mod cli;
pub mod cluster_command;
pub mod codec;
pub mod config;
pub mod console;
pub mod domain;
pub mod durable_mark;
pub mod loadtest;
pub mod model;
pub mod nats_cluster;
pub mod numbering;
pub mod progress;
pub mod projection;
pub mod rehydrate;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod upcast;
pub mod views;

/// Now, in milliseconds since the Unix epoch (0 on a clock set before it): the time every
/// command, event and checkpoint is stamped with.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// An error and all its sources on one line (`outer: inner: innermost`), for logs and the
/// command line: our error types keep their causes as sources rather than in their messages.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
