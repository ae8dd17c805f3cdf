//! The audit trail: read-only inspection of the log, served under `GET /audit/...` and by the
//! `phone-ledger audit` command (against a running server or offline on a data directory).
//!
//! - [`query`]: stream history, global feed, time travel, step-by-step replay;
//! - [`replay_resume`]: where the pages of a replay left off, so the next one folds on from there;
//! - [`verify`]: hash-chain and gap checks over the live log or an export;
//! - [`recheck`]: re-deciding recorded commands with today's (or a test's) decider;
//! - [`tail`]: the live feed's followers, served from one shared tail;
//! - [`http`]: the HTTP endpoints; [`cli`]: the command line and its table/JSON output.

pub mod cli;
pub mod http;
pub mod query;
pub mod recheck;
pub mod replay_resume;
pub mod tail;
pub mod verify;

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::store::{EventStore, StoreError};

/// Why an audit question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// No stream of that id (HTTP 404).
    #[error("{0} does not exist in the log")]
    NotFound(String),
    /// A query value that does not make sense (HTTP 400 naming the parameter).
    #[error("{name}: {message}")]
    BadParameter { name: String, message: String },
    /// The caller's credential may not see this (HTTP 403): another account's trail, or a
    /// whole-log question asked without the admin right.
    #[error("{0}")]
    Denied(String),
    /// An input file that cannot be read.
    #[error("{0}")]
    Input(String),
    /// The log could not be read (HTTP 500).
    #[error("cannot read the event log")]
    Store(#[from] StoreError),
    /// The task answering the question failed (HTTP 500).
    #[error("the audit task failed")]
    Task(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The head of the chain: what an auditor writes down to compare later.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Digest {
    pub position: u64,
    pub hash: String,
    pub events: u64,
    /// Every event up to this position is covered by the chain as the log's sealer fixed it
    /// (the whole log with the embedded backend, whose one writer chains each event it appends;
    /// the last checkpoint with the clustered one).
    pub sealed_up_to: u64,
    /// `fsync` or `flush` when read from a running server; absent offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<String>,
}

/// The current digest.
pub async fn digest(store: &dyn EventStore) -> Result<Digest, AuditError> {
    let head = store.chain_head().await?;
    Ok(Digest {
        position: head.position,
        hash: hex::encode(head.hash),
        // Positions run from 1 without gaps, so the last one is the number of events.
        events: head.position,
        sealed_up_to: store.sealed_up_to().await?.min(head.position),
        durability: store.durability(),
    })
}

/// Writes every event passing `filter` as one JSON line each; returns how many.
pub async fn export(store: &dyn EventStore, filter: &query::FeedFilter, out: &mut impl Write) -> Result<u64, AuditError> {
    export_showing(store, filter, out, &crate::progress::Progress::none()).await
}

/// [`export`], showing how far through the log it is on `progress`.
pub async fn export_showing(
    store: &dyn EventStore,
    filter: &query::FeedFilter,
    out: &mut impl Write,
    progress: &crate::progress::Progress,
) -> Result<u64, AuditError> {
    let mut filter = filter.clone();
    filter.limit = query::MAX_LIMIT;
    let mut written = 0;
    loop {
        let page = query::feed(store, &filter).await?;
        for e in &page.events {
            serde_json::to_writer(&mut *out, e).map_err(|e| AuditError::Input(e.to_string()))?;
            out.write_all(b"\n").map_err(|e| AuditError::Input(e.to_string()))?;
            written += 1;
        }
        match page.next_after {
            Some(after) => {
                progress.set(after);
                filter.after = after;
            }
            None => return Ok(written),
        }
    }
}
