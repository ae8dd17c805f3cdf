//! `POST /simulate/inbound-message`: an end user's message to one of the caller's numbers, as the
//! carrier would deliver it (no message arrives from outside this machine). A test plays the end
//! user who replies HELP, STOP or a keyword of the account's; the number's keyword handling runs
//! as it would for a real reply (see `service::inbound`).
//!
//! Request (JSON, signed like any API request): `OriginationNumber` (the end user, E.164),
//! `DestinationPhoneNumber` (the caller's number, E.164), `MessageBody` (1 to 1,600 characters).
//! Answer: `MessageId`, and when the message was a keyword, `Keyword`, `KeywordAction`, the
//! automatic `ResponseMessage`, and the `OptOutListName` its action changed.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use tracing::Instrument;

use super::{now_ms, receive_body, run_to_end, ApiState, AwsJsonError, AMZ_JSON};
use crate::domain::types::ValidationReason;
use crate::domain::CommandMeta;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct InboundInput {
    origination_number: String,
    destination_phone_number: String,
    message_body: String,
}

/// E.164: `+`, then 2 to 15 digits, the first not 0 (the model's `PhoneNumber` pattern).
fn is_e164(s: &str) -> bool {
    s.strip_prefix('+')
        .is_some_and(|d| (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0'))
}

fn invalid(field: &str, message: &str) -> AwsJsonError {
    AwsJsonError::validation(ValidationReason::FieldValidationFailed, field, message.to_string())
}

pub async fn inbound_message(req: HttpRequest, payload: web::Payload, state: web::Data<ApiState>) -> HttpResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("simulate", request_id = %request_id, account = tracing::field::Empty);
    match receive(&req, payload, &state, &request_id).instrument(span).await {
        Ok(output) => HttpResponse::Ok()
            .insert_header(("x-amzn-RequestId", request_id.as_str()))
            .content_type(AMZ_JSON)
            .body(output.to_string()),
        Err(e) => e.to_response(&request_id),
    }
}

async fn receive(req: &HttpRequest, payload: web::Payload, state: &web::Data<ApiState>, request_id: &str) -> Result<Value, AwsJsonError> {
    let received = receive_body(payload, state).await?;
    let scope = state
        .auth
        .authenticate(req, &received.bytes)
        .map_err(|failure| AwsJsonError::unauthenticated(&failure))?
        .scope;
    tracing::Span::current().record("account", scope.account.as_str());
    let permit = state.admission.admit(&scope.account)?;
    let body = received.admitted();
    let input: InboundInput =
        serde_json::from_slice(&body).map_err(|e| AwsJsonError::serialization(format!("request body is not an inbound message: {e}")))?;
    if !is_e164(&input.origination_number) {
        return Err(invalid("OriginationNumber", "must be an E.164 phone number"));
    }
    if !is_e164(&input.destination_phone_number) {
        return Err(invalid("DestinationPhoneNumber", "must be an E.164 phone number"));
    }
    if input.message_body.is_empty() || input.message_body.chars().count() > 1600 {
        return Err(invalid("MessageBody", "must have 1 to 1600 characters"));
    }
    let meta = CommandMeta {
        request_id: request_id.to_string(),
        scope,
        at_ms: now_ms(),
        operation: "InboundMessage".into(),
    };
    // Recording the message and carrying out its keyword's action (STOP opts the sender out) are
    // two steps: run to their end even if the client leaves, and answered within the deadline.
    let deadline = state.deadline;
    let (state, task_request_id) = (state.clone(), request_id.to_string());
    let work = async move {
        let _permit = permit;
        state
            .service
            .receive_message(
                &meta,
                &input.destination_phone_number,
                &input.origination_number,
                &input.message_body,
            )
            .await
            .map_err(|e| AwsJsonError::from_service(e, &task_request_id))
    };
    let received = run_to_end(work, deadline, request_id).await?;
    let mut out = Map::new();
    out.insert("MessageId".into(), json!(received.message_id));
    if let Some(k) = &received.keyword {
        out.insert("Keyword".into(), json!(k.keyword));
        out.insert("KeywordAction".into(), json!(k.keyword_action));
        out.insert("ResponseMessage".into(), json!(k.keyword_message));
    }
    if let Some(list) = &received.opt_out_list {
        out.insert("OptOutListName".into(), json!(list));
    }
    Ok(Value::Object(out))
}
