//! The AWS JSON 1.0 edge: `POST /` with `X-Amz-Target: PinpointSMSVoiceV2.<Operation>`.
//!
//! Pipeline per request: request id → body (size-limited, under a deadline) → caller (SigV4,
//! [`crate::auth`]) → admission → target → content type → JSON object → model validation → [`operations::dispatch`] →
//! response with `x-amzn-RequestId`. Every failure on the way is an [`AwsJsonError`].

pub mod admission;
pub mod operations;
pub mod pagination;
pub mod routing;
pub mod simulate;

use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::Value;
use tracing::Instrument;

pub use crate::aws_error::{AwsJsonError, AMZ_JSON};

use crate::domain::CommandMeta;
use crate::model;
use crate::now_ms;
use crate::service::LifecycleService;

/// The `X-Amz-Target` prefix of this service (`targetPrefix` in the model).
pub const TARGET_PREFIX: &str = "PinpointSMSVoiceV2.";

/// What the API's handlers share.
pub struct ApiState {
    pub service: Arc<LifecycleService>,
    /// Who is calling (and, in strict mode, whether the signature holds).
    pub auth: Arc<crate::auth::Authenticator>,
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's body.
    pub body_timeout: std::time::Duration,
    /// How long an admitted request may take in all.
    pub deadline: std::time::Duration,
    /// Shared with the audit routes: one budget of work in flight, and one rate per account.
    pub admission: Arc<admission::Admission>,
    /// Signs pagination tokens (the same on every node that serves the same log).
    pub pagination_secret: [u8; 32],
    /// With several nodes: forwards commands on a resource to the node that owns it.
    pub router: Option<routing::Router>,
    /// What every account reports as its attributes and spend limits.
    pub account: crate::config::Account,
}

/// What a request is answered with: the output of an operation decided here, or the answer of
/// the node it was forwarded to.
enum Answer {
    Local(Value),
    Forwarded(HttpResponse),
}

/// Mounts the AWS JSON endpoint (`POST /`) and the end-user simulation
/// (`POST /simulate/inbound-message`) on an actix-web app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::post().to(handle))
        .route("/simulate/inbound-message", web::post().to(simulate::inbound_message));
}

/// The answer to a request no route takes: the AWS JSON error for an unknown operation.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let id = uuid::Uuid::new_v4().to_string();
    AwsJsonError::unknown_operation(&format!("{} {}", req.method(), req.path())).to_response(&id)
}

/// A request body as received, with its share of the server's budget for bodies not yet
/// admitted (given back when this is dropped: keep it until the request is admitted or refused).
pub(crate) struct ReceivedBody {
    pub bytes: web::BytesMut,
    held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ReceivedBody {
    /// The body of a request just admitted: bounded from now on by the work in flight, so its
    /// share of the bodies' budget is given back.
    pub fn admitted(self) -> web::BytesMut {
        drop(self.held);
        self.bytes
    }
}

/// Receives a request's body: at most `max_body_bytes`, within the body deadline, and only while
/// the bodies being received across all connections fit the admission's budget (they are read
/// before the caller is known, so a crowd of slow senders is bounded by it, not by memory).
async fn receive_body(mut payload: web::Payload, state: &ApiState) -> Result<ReceivedBody, AwsJsonError> {
    let limit = state.max_body_bytes;
    let read = async {
        let mut body = ReceivedBody {
            bytes: web::BytesMut::new(),
            held: None,
        };
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| AwsJsonError::serialization(format!("cannot read request body: {e}")))?;
            if body.bytes.len() + chunk.len() > limit {
                return Err(AwsJsonError::too_large(limit));
            }
            state.admission.hold_body_bytes(&mut body.held, chunk.len())?;
            body.bytes.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| AwsJsonError::body_timeout(state.body_timeout))?
}

/// Runs `work` as a task of its own, so that it runs to its end whatever the client does (a
/// client that leaves, or the deadline, never cuts a two-step change in half), and waits for it
/// at most `deadline` (then the client is told the outcome is unknown).
async fn run_to_end<T: 'static>(
    work: impl std::future::Future<Output = Result<T, AwsJsonError>> + 'static,
    deadline: std::time::Duration,
    request_id: &str,
) -> Result<T, AwsJsonError> {
    let work = actix_web::rt::spawn(work.in_current_span());
    match tokio::time::timeout(deadline, work).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(join)) => Err(AwsJsonError::internal(&join, request_id)),
        Err(_) => Err(AwsJsonError::deadline_exceeded(deadline)),
    }
}

/// The most characters of a request's resource its log lines carry.
const MAX_LOGGED_RESOURCE: usize = 256;

/// The member naming the resource a request is about, for the tracing span.
fn resource_of(input: &Value) -> Option<&str> {
    ["PhoneNumberId", "OriginationIdentity", "PoolId"]
        .iter()
        .find_map(|k| input.get(*k).and_then(Value::as_str))
}

async fn handle(req: HttpRequest, payload: web::Payload, state: web::Data<ApiState>) -> HttpResponse {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let operation = target.strip_prefix(TARGET_PREFIX).unwrap_or_default().to_string();
    // Metric labels come from the model, never straight from the caller: a hostile client cannot
    // grow the set of series.
    let operation_label = if model::model().has_operation(&operation) {
        operation.clone()
    } else {
        "unknown".to_string()
    };
    // Account and region are recorded once the caller is authenticated.
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        account = tracing::field::Empty,
        region = tracing::field::Empty,
        operation = %operation,
        resource = tracing::field::Empty,
        forwarded_by = tracing::field::Empty,
    );
    // A request another node forwarded here: which one (its log has the same request id, see
    // the "forwarded" line).
    if let Some(by) = req.headers().get(routing::FORWARDED).and_then(|v| v.to_str().ok()) {
        span.record("forwarded_by", by);
    }
    let result = async {
        let limit = state.max_body_bytes;
        let declared = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(AwsJsonError::too_large(limit));
        }
        // What the headers alone say of the signature is checked first: a caller without a
        // known key, or with a stale signature, is refused before it sends a byte of body.
        state
            .auth
            .precheck(&req)
            .map_err(|failure| AwsJsonError::unauthenticated(&failure))?;
        // The body is read before admission, under a deadline: a client that sends it slowly
        // (one byte a second) holds its own connection for a while, never a place of the
        // server's bounded work, and its bytes only a share of the bodies' budget.
        let received = receive_body(payload, &state).await?;
        let body = &received.bytes;
        // The signature covers the body, so it is checked once the body is in; an unauthenticated
        // request takes no place of the server's bounded work.
        let scope = state
            .auth
            .authenticate(&req, body)
            .map_err(|failure| AwsJsonError::unauthenticated(&failure))?
            .scope;
        tracing::Span::current().record("account", scope.account.as_str());
        tracing::Span::current().record("region", scope.region.as_str());
        // Held by the work until it is done: bounds the work the server has in progress.
        let permit = state.admission.admit(&scope.account)?;
        // Admitted: the body is now bounded by the work in flight, and gives back its budget.
        let body = received.admitted().freeze();
        // The work runs to its end whatever the client does (see `run_to_end`).
        let deadline = state.deadline;
        let (req, state, task_request_id) = (req.clone(), state.clone(), request_id.clone());
        let decided = async move {
            let (_permit, request_id) = (permit, task_request_id);
            if operation.is_empty() || !model::model().has_operation(&operation) {
                return Err(AwsJsonError::unknown_operation(&target));
            }
            let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
            let media = content_type.split(';').next().unwrap_or_default().trim();
            if !matches!(media, "application/x-amz-json-1.0" | "application/x-amz-json-1.1") {
                return Err(AwsJsonError::unsupported_media_type(content_type));
            }
            let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Object(Default::default())
            } else {
                serde_json::from_slice(&body).map_err(|e| AwsJsonError::serialization(format!("request body is not valid JSON: {e}")))?
            };
            if !input.is_object() {
                return Err(AwsJsonError::serialization("request body must be a JSON object"));
            }
            if let Some(resource) = resource_of(&input) {
                // Not yet validated: a caller's 250 KB "id" is cut short, not copied into every
                // line of the request's log.
                let shown = resource
                    .char_indices()
                    .nth(MAX_LOGGED_RESOURCE)
                    .map_or(resource, |(at, _)| &resource[..at]);
                tracing::Span::current().record("resource", shown);
            }
            // The owner validates a request forwarded to it: not done twice.
            if let Some(router) = &state.router {
                if let Some(owner) = router.forward_to(&req, &operation, &input, &scope, |id| state.service.contention().is_contended(id)) {
                    match router.forward(owner, &req, &body).await {
                        Ok((answer, through)) => {
                            // The owner's appends for this request: this node's next reads wait
                            // for its view to hold them, as for its own.
                            if let Some(through) = through {
                                state.service.store().read_after(through);
                            }
                            return Ok(Answer::Forwarded(answer));
                        }
                        // Nothing was sent: decided here instead (the log keeps it correct).
                        Err(e @ routing::ForwardError::Unreachable { .. }) => {
                            tracing::debug!(error = %crate::error_chain(&e), "deciding here");
                        }
                        Err(e) => return Err(AwsJsonError::internal(&e, &request_id)),
                    }
                }
            }
            let errors = model::model().validate_input(&operation, &input);
            if !errors.is_empty() {
                return Err(AwsJsonError::invalid_members(&errors));
            }
            let input = model::model().known_input(&operation, input);
            let meta = CommandMeta {
                request_id: request_id.clone(),
                scope: scope.clone(),
                at_ms: now_ms(),
                operation: operation.clone(),
            };
            operations::dispatch(&operation, input, &meta, &state).await.map(Answer::Local)
        };
        run_to_end(decided, deadline, &request_id).await
    }
    .instrument(span.clone())
    .await;
    let _entered = span.enter();
    let (outcome, reason): (&'static str, String) = match &result {
        Ok(Answer::Local(_)) => ("200", String::new()),
        Ok(Answer::Forwarded(_)) => ("forwarded", String::new()),
        Err(e) => (
            e.type_name,
            e.members.get("Reason").and_then(Value::as_str).unwrap_or_default().to_string(),
        ),
    };
    metrics::counter!(crate::telemetry::REQUESTS, "operation" => operation_label.clone(), "outcome" => outcome, "reason" => reason)
        .increment(1);
    metrics::histogram!(crate::telemetry::REQUEST_DURATION, "operation" => operation_label).record(started.elapsed().as_secs_f64());
    let mut response = match result {
        Ok(Answer::Forwarded(answer)) => {
            // The client gets the owner's request id: logged here too, so that a search for the
            // id a client reports finds this node's part as well as the owner's.
            let header = |name: &str| {
                answer
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            tracing::info!(
                status = answer.status().as_u16(),
                micros = started.elapsed().as_micros() as u64,
                owner = %header(routing::DECIDED_BY),
                owner_request_id = %header("x-amzn-requestid"),
                "forwarded"
            );
            return answer;
        }
        Ok(Answer::Local(output)) => {
            tracing::info!(status = 200, micros = started.elapsed().as_micros() as u64, "ok");
            HttpResponse::Ok()
                .insert_header(("x-amzn-RequestId", request_id.as_str()))
                .content_type(AMZ_JSON)
                .body(output.to_string())
        }
        Err(e) => {
            tracing::info!(status = e.status.as_u16(), error = e.type_name, message = %e.message, micros = started.elapsed().as_micros() as u64, "refused");
            e.to_response(&request_id)
        }
    };
    if let Some(router) = &state.router {
        use actix_web::http::header::{HeaderName, HeaderValue};
        let headers = response.headers_mut();
        if let Ok(node) = HeaderValue::from_str(router.node()) {
            headers.insert(HeaderName::from_static(routing::DECIDED_BY), node);
        }
        if let Some(through) = state.service.store().acknowledged_through() {
            headers.insert(HeaderName::from_static(routing::LOG_THROUGH), HeaderValue::from(through));
        }
    }
    response
}
