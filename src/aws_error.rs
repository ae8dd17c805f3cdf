//! `AwsJsonError`: every HTTP failure of the service (the AWS JSON API and the audit API alike)
//! leaves through this one type, in the shape AWS JSON 1.0 clients parse: a 4xx (500 for
//! `InternalServerException`), headers `x-amzn-RequestId` and `x-amzn-ErrorType`, body
//! `{"__type": "<Name>", "Message": ..., <members of the error shape>}`. A server-side failure is
//! logged once, here, with its whole chain of causes; the client sees only that it may retry.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use crate::auth::AuthFailure;
use crate::domain::types::ValidationReason;
use crate::domain::Rejection;
use crate::model::{FieldError, FieldErrorKind, MAX_FIELD_ERRORS};
use crate::service::ServiceError;

/// The AWS JSON content type, on requests and responses.
pub const AMZ_JSON: &str = "application/x-amz-json-1.0";

/// An error response.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsJsonError {
    pub type_name: &'static str,
    pub status: StatusCode,
    pub message: String,
    /// Members of the error shape besides `Message` (`Reason`, `ResourceType`, `Fields`, ...).
    pub members: Map<String, Value>,
}

impl AwsJsonError {
    fn new(type_name: &'static str, status: StatusCode, message: impl Into<String>) -> Self {
        AwsJsonError {
            type_name,
            status,
            message: message.into(),
            members: Map::new(),
        }
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.members.insert(key.to_string(), value.into());
        self
    }

    /// `ValidationException` naming one member.
    pub fn validation(reason: ValidationReason, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        AwsJsonError::new("ValidationException", StatusCode::BAD_REQUEST, message.clone())
            .with("Reason", reason.as_str())
            .with("Fields", json!([{ "Name": field, "Message": message }]))
    }

    /// `ValidationException` for every member that broke a model rule.
    pub fn invalid_members(errors: &[FieldError]) -> Self {
        let reason = if errors.iter().all(|e| e.kind == FieldErrorKind::Missing) {
            ValidationReason::MissingParameter
        } else if errors.iter().any(|e| e.kind == FieldErrorKind::WrongType) {
            ValidationReason::CannotParse
        } else {
            ValidationReason::FieldValidationFailed
        };
        // The validator stops one past the most an answer names: that one says there are more.
        let (count, errors) = match errors.len() > MAX_FIELD_ERRORS {
            true => (format!("More than {MAX_FIELD_ERRORS}"), &errors[..MAX_FIELD_ERRORS]),
            false => (errors.len().to_string(), errors),
        };
        let details: Vec<String> = errors
            .iter()
            .map(|e| format!("Value at '{}' failed to satisfy constraint: {}", e.name, e.message))
            .collect();
        let plural = if count == "1" { "" } else { "s" };
        let message = format!("{count} validation error{plural} detected: {}", details.join("; "));
        let fields: Vec<Value> = errors.iter().map(|e| json!({ "Name": e.name, "Message": e.message })).collect();
        AwsJsonError::new("ValidationException", StatusCode::BAD_REQUEST, message)
            .with("Reason", reason.as_str())
            .with("Fields", Value::Array(fields))
    }

    /// The body is not a JSON object.
    pub fn serialization(message: impl Into<String>) -> Self {
        AwsJsonError::new("SerializationException", StatusCode::BAD_REQUEST, message)
    }

    /// The `X-Amz-Target` names nothing this service implements.
    pub fn unknown_operation(target: &str) -> Self {
        AwsJsonError::new(
            "UnknownOperationException",
            StatusCode::BAD_REQUEST,
            format!("unknown operation {target:?}"),
        )
    }

    /// The client did not send the request's body in time (a transient error the SDKs retry).
    pub fn body_timeout(deadline: std::time::Duration) -> Self {
        AwsJsonError::new(
            "RequestTimeoutException",
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body was not received within {} ms", deadline.as_millis()),
        )
    }

    /// The body is larger than the configured limit.
    pub fn too_large(limit: usize) -> Self {
        AwsJsonError::validation(
            ValidationReason::MaximumSizeExceeded,
            "(body)",
            format!("request body exceeds {limit} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    }

    /// The request is not `POST /` with the AWS JSON content type.
    pub fn unsupported_media_type(got: &str) -> Self {
        AwsJsonError::new(
            "SerializationException",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {AMZ_JSON}, got {got:?}"),
        )
    }

    /// A request that strict SigV4 mode does not authenticate, as AWS's JSON services answer it:
    /// no `Authorization` (403 `MissingAuthenticationTokenException`), an incomplete one
    /// (`IncompleteSignatureException`), a wrong or expired signature
    /// (`InvalidSignatureException`), an unknown access key (`UnrecognizedClientException`).
    pub fn unauthenticated(failure: &AuthFailure) -> Self {
        let (type_name, status) = match failure {
            AuthFailure::Missing => ("MissingAuthenticationTokenException", StatusCode::FORBIDDEN),
            AuthFailure::Incomplete(_) => ("IncompleteSignatureException", StatusCode::BAD_REQUEST),
            AuthFailure::Mismatch | AuthFailure::Invalid(_) => ("InvalidSignatureException", StatusCode::BAD_REQUEST),
            AuthFailure::UnknownKey => ("UnrecognizedClientException", StatusCode::BAD_REQUEST),
        };
        AwsJsonError::new(type_name, status, failure.to_string())
    }

    /// `AccessDeniedException` (HTTP 403): an authenticated caller asked for what its credential
    /// may not see.
    pub fn access_denied(message: impl Into<String>) -> Self {
        AwsJsonError::new("AccessDeniedException", StatusCode::FORBIDDEN, message)
    }

    /// `ThrottlingException`.
    pub fn throttling(message: impl Into<String>) -> Self {
        AwsJsonError::new("ThrottlingException", StatusCode::BAD_REQUEST, message)
    }

    /// `InternalServerException` (retryable by the SDKs) for a server-side failure, which is
    /// logged here with all its causes.
    pub fn internal(cause: &(dyn std::error::Error + 'static), request_id: &str) -> Self {
        tracing::error!(request_id, error = %crate::error_chain(cause), "internal error");
        AwsJsonError::new(
            "InternalServerException",
            StatusCode::INTERNAL_SERVER_ERROR,
            "The service could not complete the request; retry it",
        )
        .with("RequestId", request_id)
    }

    /// `ResourceNotFoundException` for a path that names nothing (HTTP 404).
    pub fn no_such_resource(message: impl Into<String>, resource_id: &str) -> Self {
        AwsJsonError::new("ResourceNotFoundException", StatusCode::NOT_FOUND, message).with("ResourceId", resource_id)
    }

    /// `ValidationException` naming a query parameter (HTTP 400).
    pub fn bad_parameter(name: &str, message: impl Into<String>) -> Self {
        AwsJsonError::new("ValidationException", StatusCode::BAD_REQUEST, message).with("Parameter", name)
    }

    /// `ValidationException` about the request as a whole (HTTP 400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        AwsJsonError::new("ValidationException", StatusCode::BAD_REQUEST, message)
    }

    /// The error of an operation of the application service.
    pub fn from_service(e: ServiceError, request_id: &str) -> Self {
        match e {
            ServiceError::Rejected(r) => r.into(),
            ServiceError::Throttled(m) => AwsJsonError::throttling(m),
            other if storage_failed(&other) => AwsJsonError::storage_failing(&other, request_id),
            other => AwsJsonError::internal(&other, request_id),
        }
    }

    /// `ServiceUnavailableException` (HTTP 503, which the SDKs retry): the event log's storage
    /// is failing (a full or failing disk, a cluster without a quorum). Distinct from a bug
    /// (`InternalServerException`), so an operator sees at once where to look.
    pub fn storage_failing(cause: &(dyn std::error::Error + 'static), request_id: &str) -> Self {
        tracing::error!(request_id, error = %crate::error_chain(cause), "storage is failing");
        AwsJsonError::new(
            "ServiceUnavailableException",
            StatusCode::SERVICE_UNAVAILABLE,
            "The event log's storage is failing, so the request may not have been carried out; retry it later",
        )
    }

    /// `ServiceUnavailableException` while the server waits for its failed storage to take writes
    /// again (it then opens the log again by itself).
    pub fn storage_recovering() -> Self {
        AwsJsonError::new(
            "ServiceUnavailableException",
            StatusCode::SERVICE_UNAVAILABLE,
            "The event log's storage is failing (is the disk full?); the service opens the log again by itself once the storage takes writes; retry later",
        )
    }

    /// `ServiceUnavailableException` (HTTP 503, retried by the SDKs) for a request that did not
    /// complete within the server's deadline: its outcome is unknown.
    pub fn deadline_exceeded(deadline: std::time::Duration) -> Self {
        AwsJsonError::new(
            "ServiceUnavailableException",
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request did not complete within {} ms, so it may or may not have been carried out; check before retrying it",
                deadline.as_millis()
            ),
        )
    }

    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The HTTP response.
    pub fn to_response(&self, request_id: &str) -> HttpResponse {
        let mut body = self.members.clone();
        body.insert("__type".into(), Value::String(self.type_name.into()));
        body.insert("Message".into(), Value::String(self.message.clone()));
        HttpResponse::build(self.status)
            .insert_header(("x-amzn-RequestId", request_id))
            .insert_header(("x-amzn-ErrorType", self.type_name))
            .content_type(AMZ_JSON)
            .body(Value::Object(body).to_string())
    }
}

impl std::fmt::Display for AwsJsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.type_name, self.message)
    }
}

/// So a handler or an extractor can return it with `?`.
impl actix_web::ResponseError for AwsJsonError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        self.to_response(&uuid::Uuid::new_v4().to_string())
    }
}

impl From<Rejection> for AwsJsonError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::NotFound {
                resource_type,
                resource_id,
                message,
            } => AwsJsonError::new("ResourceNotFoundException", StatusCode::BAD_REQUEST, message)
                .with("ResourceType", resource_type.as_str())
                .with("ResourceId", resource_id),
            Rejection::Conflict {
                reason,
                resource_type,
                resource_id,
                message,
            } => AwsJsonError::new("ConflictException", StatusCode::BAD_REQUEST, message)
                .with("Reason", reason.as_str())
                .with("ResourceType", resource_type.as_str())
                .with("ResourceId", resource_id),
            Rejection::Validation { reason, field, message } => AwsJsonError::validation(reason, &field, message),
            Rejection::QuotaExceeded { reason, message } => {
                AwsJsonError::new("ServiceQuotaExceededException", StatusCode::BAD_REQUEST, message).with("Reason", reason.as_str())
            }
        }
    }
}

/// Whether `e` is the storage backend failing (I/O, the engine, a lost quorum), as opposed to a
/// refusal, a damaged record or a bug.
fn storage_failed(e: &ServiceError) -> bool {
    use crate::actors::ExecuteError;
    use crate::store::{AppendError, StoreError};
    let store = |s: &StoreError| matches!(s, StoreError::Backend(_));
    match e {
        ServiceError::Store(s) => store(s),
        ServiceError::Execute {
            source: ExecuteError::Append(AppendError::Storage(s)) | ExecuteError::Replay(s) | ExecuteError::Confirm(s),
            ..
        } => store(s),
        _ => false,
    }
}

#[cfg(test)]
mod storage_tests {
    use super::*;
    use crate::actors::ExecuteError;
    use crate::store::{AppendError, StoreError};

    /// A failing disk or cluster is told apart from a bug: 503 ServiceUnavailableException, which
    /// the SDKs retry, with a message that says the storage is failing.
    #[test]
    fn a_failing_storage_is_a_distinct_retryable_error() {
        let io = || StoreError::Backend(std::sync::Arc::new(std::io::Error::other("No space left on device")));
        for e in [
            ServiceError::Store(io()),
            ServiceError::Execute {
                stream: "phone-x".into(),
                source: ExecuteError::Append(AppendError::Storage(io())),
            },
            ServiceError::Execute {
                stream: "phone-x".into(),
                source: ExecuteError::Replay(io()),
            },
            ServiceError::Execute {
                stream: "phone-x".into(),
                source: ExecuteError::Confirm(io()),
            },
        ] {
            let error = AwsJsonError::from_service(e, "req");
            assert_eq!(
                (error.type_name, error.status),
                ("ServiceUnavailableException", StatusCode::SERVICE_UNAVAILABLE)
            );
            assert!(error.message.contains("storage is failing"));
        }
        let bug = AwsJsonError::from_service(ServiceError::Invariant("x".into()), "req");
        assert_eq!(bug.type_name, "InternalServerException");
        let damaged = ServiceError::Store(StoreError::Corrupt {
            key: "k".into(),
            message: "m".into(),
        });
        assert_eq!(AwsJsonError::from_service(damaged, "req").type_name, "InternalServerException");
    }
}
