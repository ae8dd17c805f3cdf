//! `ServiceError`: why an operation failed, in the terms the edge maps to AWS error shapes.

use std::sync::Arc;

use crate::actors::ExecuteError;
use crate::domain::{Rejection, ResourceKind};
use crate::store::{AppendError, StoreError};

/// Why an operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// A domain refusal: the AWS error shape of the rejection (400).
    #[error("{0}")]
    Rejected(Rejection),
    /// The service is saturated: `ThrottlingException` (400, retryable).
    #[error("{0}")]
    Throttled(String),
    /// The log could not be read: `InternalServerException` (500).
    #[error("cannot read the event log")]
    Store(#[from] StoreError),
    /// A command could not be carried out by its aggregate: `InternalServerException` (500).
    #[error("command on {stream} failed")]
    Execute {
        stream: String,
        #[source]
        source: ExecuteError,
    },
    /// The actor of a stream could not be reached: `InternalServerException` (500).
    #[error("the actor of {stream} is unavailable")]
    Mailbox {
        stream: String,
        #[source]
        source: actix::MailboxError,
    },
    /// A derived view that does not decode: `InternalServerException` (500).
    #[error("corrupt view {key}")]
    CorruptView {
        key: String,
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// Something that cannot happen if the code is right (a created resource without state):
    /// `InternalServerException` (500), logged with what was seen.
    #[error("{0}")]
    Invariant(String),
}

impl ServiceError {
    /// Whether the command may have been carried out all the same: its append failed in a way
    /// that may still store it, or its actor went away while it was under way.
    pub(crate) fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ServiceError::Execute {
                source: ExecuteError::Append(AppendError::Storage(_)),
                ..
            } | ServiceError::Mailbox { .. }
        )
    }

    /// The error of a command sent to the aggregate of `stream`.
    pub(crate) fn execute(stream: &str, e: ExecuteError) -> Self {
        match e {
            ExecuteError::Rejected(r) => ServiceError::Rejected(r),
            ExecuteError::Append(AppendError::Busy) => ServiceError::Throttled("the event log is saturated; retry".into()),
            source => ServiceError::Execute {
                stream: stream.to_string(),
                source,
            },
        }
    }
}

/// The refusal of a resource the caller cannot see (or that does not exist).
pub(crate) fn not_found(kind: ResourceKind, id: &str) -> ServiceError {
    ServiceError::Rejected(Rejection::not_found(kind, id))
}
