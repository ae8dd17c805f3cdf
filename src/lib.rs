//! phone-ledger: the phone-number lifecycle of Amazon Pinpoint SMS and Voice v2
//! (`ReleasePhoneNumber` and the operations around it) as an event-sourced actor system,
//! spoken over the AWS JSON 1.0 protocol so the real AWS SDKs and CLI work against it.
//!
//! # Layout
//! - [`domain`]: pure deciders (`decide`/`evolve`) for phone numbers and pools; no I/O.
//! - [`store`]: the sled event log: streams, global feed, hash chain, group-commit writer.
//! - [`upcast`]: the event schema history and the upcasters applied at read time.
//! - [`projection`]: derived indexes (Describe views, client tokens, claimed numbers) computed
//!   from state changes, and their rebuild from the log.
//! - [`actors`]: one actix actor per aggregate, the registry that activates them, and the
//!   workflows that span a number and a pool.
//! - [`numbering`]: choosing fresh, valid E.164 numbers per country and number type.
//! - [`api`]: the AWS JSON 1.0 edge: model-driven validation, operations, errors, pagination.
//! - [`audit`]: read-only history, time travel, replay, hash-chain verification and decision
//!   re-check, over HTTP (`/audit/...`) and as `phone-ledger audit`.
//! - [`loadtest`]: conflicting load over HTTP, latency report, and a correctness verdict
//!   checked against the log.
//! - [`server`]: wiring and lifecycle (start, graceful stop).
//! - [`config`]: layered configuration with embedded defaults.
//! - [`cli`]: the `phone-ledger` command line.

pub mod actors;
pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod domain;
pub mod loadtest;
pub mod numbering;
pub mod projection;
pub mod server;
pub mod store;
pub mod upcast;
