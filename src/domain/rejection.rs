//! Why a command was refused. A `Rejection` is a domain fact (it is stored in rejection events
//! for the audit trail); the HTTP edge maps it once to the matching AWS error shape.

use serde::{Deserialize, Serialize};

use super::ids::ResourceKind;
use super::types::{ConflictReason, QuotaReason, ResourceType, ValidationReason};

/// A refused command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "Kind", rename_all_fields = "PascalCase")]
pub enum Rejection {
    /// `ResourceNotFoundException`.
    #[error("{message}")]
    NotFound {
        resource_type: ResourceType,
        resource_id: String,
        message: String,
    },
    /// `ConflictException`.
    #[error("{message}")]
    Conflict {
        reason: ConflictReason,
        resource_type: ResourceType,
        resource_id: String,
        message: String,
    },
    /// `ValidationException` that depends on state (shape validation happens at the edge).
    #[error("{message}")]
    Validation {
        reason: ValidationReason,
        field: String,
        message: String,
    },
    /// `ServiceQuotaExceededException`.
    #[error("{message}")]
    QuotaExceeded { reason: QuotaReason, message: String },
}

impl Rejection {
    /// The resource does not exist for this caller.
    pub fn not_found(kind: ResourceKind, id: &str) -> Self {
        let resource_type = kind.resource_type();
        Rejection::NotFound {
            resource_type,
            resource_id: id.to_string(),
            message: format!("{resource_type} {id} does not exist"),
        }
    }

    /// The resource is in a state that forbids the command.
    pub fn conflict(reason: ConflictReason, kind: ResourceKind, id: &str, why: &str) -> Self {
        Rejection::Conflict {
            reason,
            resource_type: kind.resource_type(),
            resource_id: id.to_string(),
            message: format!("{} {id} {why}", kind.resource_type()),
        }
    }

    /// A member's value does not fit the resource's state.
    pub fn validation(reason: ValidationReason, field: &str, message: impl Into<String>) -> Self {
        Rejection::Validation {
            reason,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Short code for logs and load-test reports: the reason, or the error kind.
    pub fn code(&self) -> String {
        match self {
            Rejection::NotFound { .. } => "ResourceNotFoundException".into(),
            Rejection::Conflict { reason, .. } => reason.to_string(),
            Rejection::Validation { reason, .. } => reason.to_string(),
            Rejection::QuotaExceeded { reason, .. } => reason.to_string(),
        }
    }
}
