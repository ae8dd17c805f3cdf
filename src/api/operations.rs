//! The operations: typed inputs (parsed after model validation), one call into the
//! [`LifecycleService`], and outputs rendered as a superset that the model then trims to exactly the
//! members of each output shape.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{pagination, ApiState};
use crate::aws_error::AwsJsonError;
use crate::domain::ids::is_sender_id;
use crate::domain::keywords::{Keyword, KeywordAction};
use crate::domain::message::{Channel, OutboundMessage};
use crate::domain::opt_out_list::{OptOutList, OptedOut};
use crate::domain::phone_number::{PhoneNumber, PhoneNumberChanges};
use crate::domain::pool::{Pool, PoolChanges, PoolMember};
use crate::domain::sender_id::SenderId;
use crate::domain::types::{MessageType, NumberCapability, NumberStatus, NumberType, PoolStatus, Tag, ValidationReason};
use crate::domain::{CommandMeta, Rejection, ResourceKind};
use crate::model::model;
use crate::numbering::{ListingCursor, NumberPreference, PreferenceType};
use crate::projection::OptOutListView;
use crate::service::{Identity, KeywordChange, LifecycleService, NewNumber, NewOptOutList, NewPool, NewSenderId, TagChange};
use crate::views::{opt_out_list_info, opted_out_info, phone_number_info, pool_info, sender_id_info};

/// Largest page when `MaxResults` is not given.
const DEFAULT_PAGE: usize = 100;

/// Runs one operation on a validated input document. A `NextToken` it is given must have been
/// issued for this listing (the same request but for the page's own members), and one it answers
/// is bound to it (see [`pagination::bind`]).
pub async fn dispatch(operation: &str, mut input: Value, meta: &CommandMeta, api: &ApiState) -> Result<Value, AwsJsonError> {
    // Only listings take and give tokens: no other request pays for the binding.
    if !model().has_input_member(operation, "NextToken") {
        return dispatch_unbound(operation, input, meta, api).await;
    }
    let listing = pagination::Listing::of(&input);
    if let Some(bound) = input.get("NextToken").and_then(Value::as_str) {
        let token = pagination::unbind(&api.pagination_secret, bound, &listing).ok_or_else(invalid_next_token)?;
        input["NextToken"] = json!(token);
    }
    let mut output = dispatch_unbound(operation, input, meta, api).await?;
    if let Some(token) = output.get("NextToken").and_then(Value::as_str) {
        output["NextToken"] = json!(pagination::bind(&api.pagination_secret, token, &listing));
    }
    Ok(output)
}

fn invalid_next_token() -> AwsJsonError {
    AwsJsonError::validation(
        ValidationReason::InvalidNextToken,
        "NextToken",
        "The NextToken is not valid for this request",
    )
}

/// [`dispatch`] with page tokens as the listings issue them.
async fn dispatch_unbound(operation: &str, input: Value, meta: &CommandMeta, api: &ApiState) -> Result<Value, AwsJsonError> {
    let service: &LifecycleService = &api.service;
    let failed = |e| AwsJsonError::from_service(e, &meta.request_id);
    let output = match operation {
        "RequestPhoneNumber" => {
            let spec = new_number(parse(input)?, meta)?;
            phone_number_info(&service.request_phone_number(meta, spec).await.map_err(failed)?)
        }
        "UpdatePhoneNumber" => {
            let i: UpdatePhoneNumberInput = parse(input)?;
            let changes = PhoneNumberChanges {
                deletion_protection_enabled: i.deletion_protection_enabled,
                international_sending_enabled: i.international_sending_enabled,
                opt_out_list_name: i.opt_out_list_name.as_deref().map(|l| opt_out_list_name(meta, l)).transpose()?,
                self_managed_opt_outs_enabled: i.self_managed_opt_outs_enabled,
                two_way_channel_arn: i.two_way_channel_arn,
                two_way_channel_role: i.two_way_channel_role,
                two_way_enabled: i.two_way_enabled,
            };
            phone_number_info(
                &service
                    .update_phone_number(meta, &i.phone_number_id, changes)
                    .await
                    .map_err(failed)?,
            )
        }
        "ReleasePhoneNumber" => {
            let i: ReleasePhoneNumberInput = parse(input)?;
            phone_number_info(&service.release_phone_number(meta, &i.phone_number_id).await.map_err(failed)?)
        }
        "DescribePhoneNumbers" => return describe_phone_numbers(ListInput::parse(input, "PhoneNumberIds")?, meta, api).await,
        "ListAvailablePhoneNumbers" => return list_available_phone_numbers(parse(input)?, meta, api).await,
        "CreatePool" => {
            let i: CreatePoolInput = parse(input)?;
            let spec = NewPool {
                origination_identity: i.origination_identity,
                iso_country_code: i.iso_country_code,
                message_type: i.message_type,
                deletion_protection_enabled: i.deletion_protection_enabled.unwrap_or(false),
                tags: i.tags.unwrap_or_default(),
                client_token: i.client_token,
            };
            pool_info(&service.create_pool(meta, spec).await.map_err(failed)?)
        }
        "UpdatePool" => {
            let i: UpdatePoolInput = parse(input)?;
            let changes = PoolChanges {
                deletion_protection_enabled: i.deletion_protection_enabled,
                opt_out_list_name: i.opt_out_list_name.as_deref().map(|l| opt_out_list_name(meta, l)).transpose()?,
                self_managed_opt_outs_enabled: i.self_managed_opt_outs_enabled,
                shared_routes_enabled: i.shared_routes_enabled,
                two_way_channel_arn: i.two_way_channel_arn,
                two_way_channel_role: i.two_way_channel_role,
                two_way_enabled: i.two_way_enabled,
            };
            pool_info(&service.update_pool(meta, &i.pool_id, changes).await.map_err(failed)?)
        }
        "DeletePool" => {
            let i: DeletePoolInput = parse(input)?;
            pool_info(&service.delete_pool(meta, &i.pool_id).await.map_err(failed)?)
        }
        "DescribePools" => return describe_pools(ListInput::parse(input, "PoolIds")?, meta, api).await,
        "AssociateOriginationIdentity" => {
            let i: MembershipInput = parse(input)?;
            let (number, pool) = service
                .associate(
                    meta,
                    &i.pool_id,
                    &i.origination_identity,
                    i.iso_country_code,
                    i.client_token.as_deref(),
                )
                .await
                .map_err(failed)?;
            membership(&number, &pool)
        }
        "DisassociateOriginationIdentity" => {
            let i: MembershipInput = parse(input)?;
            let (number, pool) = service
                .disassociate(
                    meta,
                    &i.pool_id,
                    &i.origination_identity,
                    i.iso_country_code,
                    i.client_token.as_deref(),
                )
                .await
                .map_err(failed)?;
            membership(&number, &pool)
        }
        "ListPoolOriginationIdentities" => return list_pool_origination_identities(parse(input)?, meta, api).await,
        "CreateOptOutList" => {
            let i: CreateOptOutListInput = parse(input)?;
            let spec = NewOptOutList {
                name: i.opt_out_list_name,
                tags: i.tags.unwrap_or_default(),
                client_token: i.client_token,
            };
            list_info(&service.create_opt_out_list(meta, spec).await.map_err(failed)?)
        }
        "DeleteOptOutList" => {
            let i: OptOutListInput = parse(input)?;
            list_info(&service.delete_opt_out_list(meta, &i.opt_out_list_name).await.map_err(failed)?)
        }
        "DescribeOptOutLists" => {
            service.ensure_default_list(meta).await.map_err(failed)?;
            return list_resources::<OptOutListView>(
                "DescribeOptOutLists",
                ResourceKind::OptOutList,
                "OptOutListInformation",
                "OptOutLists",
                ListInput {
                    // The model gives this listing no filters.
                    filters: None,
                    ..ListInput::parse(input, "OptOutListNames")?
                },
                meta,
                api,
                |v| opt_out_list_info(&v.opt_out_list_name, &v.opt_out_list_arn, v.created_timestamp_ms, &v.tags),
            )
            .await;
        }
        "PutOptedOutNumber" | "DeleteOptedOutNumber" => {
            let i: OptedOutNumberInput = parse(input)?;
            let number = e164(&i.opted_out_number);
            let (list, entry) = match operation {
                "PutOptedOutNumber" => service.put_opted_out_number(meta, &i.opt_out_list_name, &number).await,
                _ => service.delete_opted_out_number(meta, &i.opt_out_list_name, &number).await,
            }
            .map_err(failed)?;
            let mut out = list_info(&list);
            out.extend(opted_out_info(&number, &entry));
            out
        }
        "DescribeOptedOutNumbers" => return describe_opted_out_numbers(parse(input)?, meta, api).await,
        "TagResource" | "UntagResource" => {
            let i: TagInput = parse(input)?;
            let change = match operation {
                "TagResource" => TagChange::Put(i.tags.unwrap_or_default()),
                _ => TagChange::Remove(i.tag_keys.unwrap_or_default()),
            };
            service.change_tags(meta, &i.resource_arn, change).await.map_err(failed)?;
            Map::new()
        }
        "SendTextMessage" | "SendVoiceMessage" | "SendMediaMessage" => {
            let channel = match operation {
                "SendTextMessage" => Channel::Text,
                "SendVoiceMessage" => Channel::Voice,
                _ => Channel::Media,
            };
            let i: SendMessageInput = parse(input)?;
            // "TEXT: This is the default value. When used the maximum character limit is 3000."
            // (the model's 6,000 is SSML's).
            const TEXT_LIMIT: usize = 3000;
            let text = channel == Channel::Voice && i.message_body_text_type.as_deref() != Some("SSML");
            if text && i.message_body.as_ref().is_some_and(|b| b.chars().count() > TEXT_LIMIT) {
                return Err(AwsJsonError::validation(
                    ValidationReason::MaximumSizeExceeded,
                    "MessageBody",
                    format!("a TEXT voice message is at most {TEXT_LIMIT} characters (SSML: 6000)"),
                ));
            }
            let origination_identity = match i.origination_identity {
                Some(o) => o,
                // SendTextMessage may leave the choice to the service: a live number of the
                // caller that can send it.
                None => service.any_sender(&meta.scope, channel, i.message_type).await.map_err(failed)?,
            };
            let message = OutboundMessage {
                message_id: uuid::Uuid::new_v4().to_string(),
                channel,
                destination_phone_number: e164(&i.destination_phone_number),
                origination_identity,
                pool_id: None,
                message_type: i.message_type,
                message_body: i.message_body,
                media_urls: i.media_urls.unwrap_or_default(),
                voice_id: i.voice_id,
                configuration_set_name: i.configuration_set_name,
                context: i.context.unwrap_or_default(),
                dry_run: i.dry_run.unwrap_or(false),
            };
            let id = service.send_message(meta, message).await.map_err(failed)?;
            let mut out = Map::new();
            out.insert("MessageId".into(), json!(id));
            out
        }
        "PutKeyword" | "DeleteKeyword" => {
            let i: KeywordInput = parse(input)?;
            let change = match operation {
                "PutKeyword" => KeywordChange::Put(Keyword {
                    keyword: i.keyword,
                    keyword_message: i.keyword_message.unwrap_or_default(),
                    keyword_action: i.keyword_action.unwrap_or(KeywordAction::AutomaticResponse),
                }),
                _ => KeywordChange::Delete(i.keyword),
            };
            let (id, arn, keyword) = service
                .change_keyword(meta, &i.origination_identity, change)
                .await
                .map_err(failed)?;
            let mut out = keyword_info(&keyword);
            out.insert("OriginationIdentity".into(), json!(id));
            out.insert("OriginationIdentityArn".into(), json!(arn));
            out
        }
        "DescribeKeywords" => return describe_keywords(parse(input)?, meta, api).await,
        "DescribeAccountAttributes" => {
            let attributes = vec![json!({"Name": "ACCOUNT_TIER", "Value": api.account.tier})];
            return fixed_page(operation, "AccountAttributes", attributes, parse(input)?, meta, api);
        }
        "DescribeAccountLimits" => {
            let limits = service.account_limits(&meta.scope).await.map_err(failed)?;
            let limits: Vec<Value> = limits
                .into_iter()
                .map(|(name, used, max)| json!({"Name": name, "Used": used, "Max": max}))
                .collect();
            return fixed_page(operation, "AccountLimits", limits, parse(input)?, meta, api);
        }
        "DescribeSpendLimits" => {
            let a = &api.account;
            let limits: Vec<Value> = [
                ("TEXT_MESSAGE_MONTHLY_SPEND_LIMIT", a.text_monthly_spend_limit),
                ("VOICE_MESSAGE_MONTHLY_SPEND_LIMIT", a.voice_monthly_spend_limit),
                ("MEDIA_MESSAGE_MONTHLY_SPEND_LIMIT", a.media_monthly_spend_limit),
            ]
            .into_iter()
            .map(|(name, limit)| json!({"Name": name, "EnforcedLimit": limit, "MaxLimit": limit, "Overridden": false}))
            .collect();
            return fixed_page(operation, "SpendLimits", limits, parse(input)?, meta, api);
        }
        "RequestSenderId" => {
            let i: RequestSenderIdInput = parse(input)?;
            let spec = NewSenderId {
                sender_id: i.sender_id,
                iso_country_code: i.iso_country_code,
                message_types: i.message_types.unwrap_or_default(),
                deletion_protection_enabled: i.deletion_protection_enabled.unwrap_or(false),
                tags: i.tags.unwrap_or_default(),
                client_token: i.client_token,
            };
            if !is_sender_id(&spec.sender_id) {
                return Err(AwsJsonError::validation(
                    ValidationReason::FieldValidationFailed,
                    "SenderId",
                    "A sender ID must contain at least one letter and cannot start or end with a hyphen",
                ));
            }
            sender_id_info(&service.request_sender_id(meta, spec).await.map_err(failed)?)
        }
        "ReleaseSenderId" => {
            let i: SenderIdInput = parse(input)?;
            let released = service
                .release_sender_id(meta, &i.sender_id, &i.iso_country_code)
                .await
                .map_err(failed)?;
            sender_id_info(&released)
        }
        "UpdateSenderId" => {
            let i: SenderIdInput = parse(input)?;
            let updated = service
                .update_sender_id(meta, &i.sender_id, &i.iso_country_code, i.deletion_protection_enabled)
                .await
                .map_err(failed)?;
            sender_id_info(&updated)
        }
        "DescribeSenderIds" => return describe_sender_ids(parse(input)?, meta, api).await,
        "ListTagsForResource" => {
            let i: TagInput = parse(input)?;
            let tags = service.tags_of(&meta.scope, &i.resource_arn).await.map_err(failed)?;
            let mut out = Map::new();
            out.insert("ResourceArn".into(), json!(i.resource_arn));
            out.insert("Tags".into(), json!(tags));
            out
        }
        other => return Err(AwsJsonError::unknown_operation(other)),
    };
    Ok(trim(operation, output))
}

/// Keeps exactly the members of the operation's output shape.
fn trim(operation: &str, output: Map<String, Value>) -> Value {
    match model().output_shape(operation) {
        Some(shape) => model().project(shape, output),
        None => Value::Object(output),
    }
}

fn parse<T: DeserializeOwned>(input: Value) -> Result<T, AwsJsonError> {
    serde_json::from_value(input).map_err(|e| AwsJsonError::serialization(format!("cannot read request: {e}")))
}

// ---- inputs --------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PreferenceItem {
    filter: Vec<String>,
    preference_type: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPhoneNumberInput {
    client_token: Option<String>,
    deletion_protection_enabled: Option<bool>,
    international_sending_enabled: Option<bool>,
    iso_country_code: String,
    message_type: MessageType,
    number_capabilities: Vec<NumberCapability>,
    number_preference: Option<Vec<PreferenceItem>>,
    number_type: NumberType,
    opt_out_list_name: Option<String>,
    pool_id: Option<String>,
    registration_id: Option<String>,
    tags: Option<Vec<Tag>>,
}

/// `ListAvailablePhoneNumbers`. `NumberCapabilities` filters nothing (a number of the supply
/// is made with whatever capabilities its request asks for), and `RegistrationId` is only
/// validated, as `RequestPhoneNumber` only records it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAvailablePhoneNumbersInput {
    iso_country_code: String,
    max_results: Option<usize>,
    next_token: Option<String>,
    number_preference: Option<Vec<PreferenceItem>>,
    number_type: NumberType,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdatePhoneNumberInput {
    deletion_protection_enabled: Option<bool>,
    international_sending_enabled: Option<bool>,
    opt_out_list_name: Option<String>,
    phone_number_id: String,
    self_managed_opt_outs_enabled: Option<bool>,
    two_way_channel_arn: Option<String>,
    two_way_channel_role: Option<String>,
    two_way_enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReleasePhoneNumberInput {
    phone_number_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Filter {
    name: String,
    values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListInput {
    filters: Option<Vec<Filter>>,
    max_results: Option<usize>,
    next_token: Option<String>,
    owner: Option<String>,
    /// The resources asked for by name (each operation's own member: see [`ListInput::parse`]).
    #[serde(skip)]
    ids: Option<Vec<String>>,
}

impl ListInput {
    /// A listing's input, whose explicit ids are in the member `ids_member` (`PhoneNumberIds`,
    /// `PoolIds`, ...): another operation's id member is an unknown member here, ignored as
    /// AWS JSON services ignore unknown members.
    fn parse(mut input: Value, ids_member: &str) -> Result<Self, AwsJsonError> {
        let ids = input.as_object_mut().and_then(|members| members.remove(ids_member));
        let mut listing: ListInput = parse(input)?;
        listing.ids = ids.filter(|v| !v.is_null()).map(parse).transpose()?;
        Ok(listing)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreatePoolInput {
    client_token: Option<String>,
    deletion_protection_enabled: Option<bool>,
    iso_country_code: Option<String>,
    message_type: MessageType,
    origination_identity: String,
    tags: Option<Vec<Tag>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdatePoolInput {
    deletion_protection_enabled: Option<bool>,
    opt_out_list_name: Option<String>,
    pool_id: String,
    self_managed_opt_outs_enabled: Option<bool>,
    shared_routes_enabled: Option<bool>,
    two_way_channel_arn: Option<String>,
    two_way_channel_role: Option<String>,
    two_way_enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeletePoolInput {
    pool_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestSenderIdInput {
    client_token: Option<String>,
    deletion_protection_enabled: Option<bool>,
    iso_country_code: String,
    message_types: Option<Vec<MessageType>>,
    sender_id: String,
    tags: Option<Vec<Tag>>,
}

/// `ReleaseSenderId` and `UpdateSenderId`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SenderIdInput {
    deletion_protection_enabled: Option<bool>,
    iso_country_code: String,
    sender_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SenderIdAndCountry {
    iso_country_code: String,
    sender_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeSenderIdsInput {
    filters: Option<Vec<Filter>>,
    max_results: Option<usize>,
    next_token: Option<String>,
    owner: Option<String>,
    sender_ids: Option<Vec<SenderIdAndCountry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MembershipInput {
    client_token: Option<String>,
    iso_country_code: Option<String>,
    origination_identity: String,
    pool_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateOptOutListInput {
    client_token: Option<String>,
    opt_out_list_name: String,
    tags: Option<Vec<Tag>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OptOutListInput {
    opt_out_list_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OptedOutNumberInput {
    opt_out_list_name: String,
    opted_out_number: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeOptedOutNumbersInput {
    filters: Option<Vec<Filter>>,
    max_results: Option<usize>,
    next_token: Option<String>,
    opt_out_list_name: String,
    opted_out_numbers: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessageInput {
    configuration_set_name: Option<String>,
    context: Option<std::collections::BTreeMap<String, String>>,
    destination_phone_number: String,
    dry_run: Option<bool>,
    media_urls: Option<Vec<String>>,
    message_body: Option<String>,
    /// `SendVoiceMessage`'s `TEXT` (the default) or `SSML`.
    message_body_text_type: Option<String>,
    message_type: Option<MessageType>,
    origination_identity: Option<String>,
    voice_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeywordInput {
    keyword: String,
    keyword_action: Option<KeywordAction>,
    keyword_message: Option<String>,
    origination_identity: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeKeywordsInput {
    filters: Option<Vec<Filter>>,
    keywords: Option<Vec<String>>,
    max_results: Option<usize>,
    next_token: Option<String>,
    origination_identity: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagInput {
    resource_arn: String,
    tags: Option<Vec<Tag>>,
    tag_keys: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPoolOriginationIdentitiesInput {
    filters: Option<Vec<Filter>>,
    max_results: Option<usize>,
    next_token: Option<String>,
    pool_id: String,
}

/// A request's `NumberPreference` (the model allows one item at most).
fn number_preference(items: Option<&[PreferenceItem]>) -> Result<Option<NumberPreference>, AwsJsonError> {
    let Some([item]) = items else { return Ok(None) };
    let kind = item.preference_type.first().and_then(|t| PreferenceType::parse(t)).ok_or_else(|| {
        AwsJsonError::validation(
            ValidationReason::InvalidParameter,
            "NumberPreference[0].PreferenceType",
            "unknown preference type",
        )
    })?;
    // "Max 1 for pattern types (StartsWith/EndsWith/Contains), max 10 for ExactMatch."
    if kind != PreferenceType::ExactMatch && item.filter.len() > 1 {
        return Err(AwsJsonError::validation(
            ValidationReason::InvalidParameter,
            "NumberPreference[0].Filter",
            "a StartsWith, EndsWith or Contains preference takes one value",
        ));
    }
    Ok(Some(NumberPreference {
        kind,
        values: item.filter.clone(),
    }))
}

fn new_number(i: RequestPhoneNumberInput, meta: &CommandMeta) -> Result<NewNumber, AwsJsonError> {
    let preference = number_preference(i.number_preference.as_deref())?;
    // The model allows a capability twice; a number has each at most once.
    let mut capabilities = i.number_capabilities;
    let mut seen = BTreeSet::new();
    capabilities.retain(|c| seen.insert(*c));
    Ok(NewNumber {
        iso_country_code: i.iso_country_code,
        message_type: i.message_type,
        number_capabilities: capabilities,
        number_type: i.number_type,
        opt_out_list_name: i.opt_out_list_name.as_deref().map(|l| opt_out_list_name(meta, l)).transpose()?,
        pool_id: i.pool_id.filter(|p| !p.is_empty()),
        registration_id: i.registration_id,
        deletion_protection_enabled: i.deletion_protection_enabled.unwrap_or(false),
        international_sending_enabled: i.international_sending_enabled.unwrap_or(false),
        tags: i.tags.unwrap_or_default(),
        client_token: i.client_token,
        preference,
    })
}

/// `OptOutListNameOrArn` → the name of one of the caller's lists. An ARN of another account, region
/// or kind of resource names none of them: not found, as for the operations on the list itself.
fn opt_out_list_name(meta: &CommandMeta, name_or_arn: &str) -> Result<String, AwsJsonError> {
    match ResourceKind::OptOutList.name_in(&meta.scope, name_or_arn) {
        Some(name) => Ok(name.to_string()),
        None => Err(Rejection::not_found(ResourceKind::OptOutList, name_or_arn).into()),
    }
}

/// A destination number as E.164: the model lets the `+` be left out; the list keeps it.
fn e164(number: &str) -> String {
    match number.starts_with('+') {
        true => number.to_string(),
        false => format!("+{number}"),
    }
}

// ---- outputs -------------------------------------------------------------------------------

fn keyword_info(k: &Keyword) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Keyword".into(), json!(k.keyword));
    m.insert("KeywordMessage".into(), json!(k.keyword_message));
    m.insert("KeywordAction".into(), json!(k.keyword_action));
    m
}

fn list_info(l: &OptOutList) -> Map<String, Value> {
    opt_out_list_info(&l.opt_out_list_name, &l.opt_out_list_arn, l.created_timestamp_ms, &l.tags)
}

fn membership(member: &Identity, p: &Pool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("IsoCountryCode".into(), json!(member.iso_country_code()));
    m.insert("OriginationIdentity".into(), json!(member.origination_identity()));
    m.insert("OriginationIdentityArn".into(), json!(member.arn()));
    m.insert("PoolArn".into(), json!(p.pool_arn));
    m.insert("PoolId".into(), json!(p.pool_id));
    m
}

fn member_info(m: &PoolMember) -> Value {
    match &m.sender_id {
        // A sender id has no phone number.
        Some(sender_id) => json!({
            "IsoCountryCode": m.iso_country_code,
            "NumberCapabilities": m.number_capabilities,
            "OriginationIdentity": sender_id,
            "OriginationIdentityArn": m.origination_identity_arn,
        }),
        None => json!({
            "IsoCountryCode": m.iso_country_code,
            "NumberCapabilities": m.number_capabilities,
            "OriginationIdentity": m.origination_identity,
            "OriginationIdentityArn": m.origination_identity_arn,
            "PhoneNumber": m.phone_number,
        }),
    }
}

// ---- filters and listings ------------------------------------------------------------------

/// What a filter value must look like, per filter name.
#[derive(Clone, Copy)]
enum FilterDomain {
    Text,
    Bool,
    Enum(&'static [&'static str]),
}

fn enum_names<T: Copy>(all: &'static [T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|v| name(*v)).collect()
}

fn domain_of(filter: &str) -> FilterDomain {
    use std::sync::OnceLock;
    static STATUS: OnceLock<Vec<&str>> = OnceLock::new();
    static POOL_STATUS: OnceLock<Vec<&str>> = OnceLock::new();
    static MESSAGE: OnceLock<Vec<&str>> = OnceLock::new();
    static CAPABILITY: OnceLock<Vec<&str>> = OnceLock::new();
    static NUMBER_TYPE: OnceLock<Vec<&str>> = OnceLock::new();
    static KEYWORD_ACTION: OnceLock<Vec<&str>> = OnceLock::new();
    match filter {
        "status" => FilterDomain::Enum(STATUS.get_or_init(|| enum_names(NumberStatus::ALL, NumberStatus::as_str))),
        "pool-status" => FilterDomain::Enum(POOL_STATUS.get_or_init(|| enum_names(PoolStatus::ALL, PoolStatus::as_str))),
        "message-type" => FilterDomain::Enum(MESSAGE.get_or_init(|| enum_names(MessageType::ALL, MessageType::as_str))),
        "number-capability" => FilterDomain::Enum(CAPABILITY.get_or_init(|| enum_names(NumberCapability::ALL, NumberCapability::as_str))),
        "number-type" => FilterDomain::Enum(NUMBER_TYPE.get_or_init(|| enum_names(NumberType::ALL, NumberType::as_str))),
        "keyword-action" => FilterDomain::Enum(KEYWORD_ACTION.get_or_init(|| enum_names(KeywordAction::ALL, KeywordAction::as_str))),
        "two-way-enabled"
        | "self-managed-opt-outs-enabled"
        | "deletion-protection-enabled"
        | "shared-routes-enabled"
        | "end-user-opted-out"
        | "registered" => FilterDomain::Bool,
        _ => FilterDomain::Text,
    }
}

/// Filters checked for value domains; `pool_status` renames `status` for pools.
fn checked_filters(filters: Option<Vec<Filter>>, pools: bool) -> Result<Vec<Filter>, AwsJsonError> {
    let filters = filters.unwrap_or_default();
    for (i, f) in filters.iter().enumerate() {
        let name = if pools && f.name == "status" {
            "pool-status"
        } else {
            f.name.as_str()
        };
        for (j, v) in f.values.iter().enumerate() {
            let ok = match domain_of(name) {
                FilterDomain::Text => true,
                FilterDomain::Bool => v == "true" || v == "false",
                FilterDomain::Enum(allowed) => allowed.contains(&v.as_str()),
            };
            if !ok {
                return Err(AwsJsonError::validation(
                    ValidationReason::InvalidFilterValues,
                    &format!("Filters[{i}].Values[{j}]"),
                    format!("{v:?} is not a valid value for filter {}", f.name),
                ));
            }
        }
    }
    Ok(filters)
}

/// Whether an item passes every filter: within a filter any value may match, across filters all must.
fn passes(filters: &[Filter], fields: &Map<String, Value>, member_of: fn(&str) -> &'static str) -> bool {
    filters.iter().all(|f| {
        let field = &fields.get(member_of(&f.name));
        let values: Vec<String> = match field {
            Some(Value::Array(items)) => items.iter().map(value_text).collect(),
            Some(v) => vec![value_text(v)],
            None => vec![],
        };
        values.iter().any(|v| f.values.contains(v))
    })
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Filter name → output member it reads.
fn filter_member(name: &str) -> &'static str {
    match name {
        "status" => "Status",
        "iso-country-code" => "IsoCountryCode",
        "message-type" => "MessageType",
        "number-capability" => "NumberCapabilities",
        "number-type" => "NumberType",
        "two-way-enabled" => "TwoWayEnabled",
        "self-managed-opt-outs-enabled" => "SelfManagedOptOutsEnabled",
        "opt-out-list-name" => "OptOutListName",
        "deletion-protection-enabled" => "DeletionProtectionEnabled",
        "two-way-channel-arn" => "TwoWayChannelArn",
        "shared-routes-enabled" => "SharedRoutesEnabled",
        "end-user-opted-out" => "EndUserOptedOut",
        "keyword-action" => "KeywordAction",
        _ => "",
    }
}

/// Filter name → `SenderIdInformation` member it reads.
fn sender_id_filter_member(name: &str) -> &'static str {
    match name {
        "sender-id" => "SenderId",
        "iso-country-code" => "IsoCountryCode",
        "message-type" => "MessageTypes",
        "deletion-protection-enabled" => "DeletionProtectionEnabled",
        "registered" => "Registered",
        _ => "",
    }
}

/// What a paginated listing of the state of one resource is asked: its filters (checked), its page
/// size, and where it resumes.
fn page_of(
    operation: &str,
    filters: Option<Vec<Filter>>,
    max_results: Option<usize>,
    next_token: Option<&str>,
    meta: &CommandMeta,
    api: &ApiState,
) -> Result<(Vec<Filter>, usize, Option<String>), AwsJsonError> {
    Ok((
        checked_filters(filters, false)?,
        max_results.unwrap_or(DEFAULT_PAGE),
        resume_after(operation, meta, api, next_token)?,
    ))
}

/// `MaxResults` and `NextToken`, for a listing of the account's own facts.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PageInput {
    max_results: Option<usize>,
    next_token: Option<String>,
}

/// A page of a short fixed list (the account's attributes or limits): paginated like every
/// other listing, so a `NextToken` that is not one of ours is refused here too.
fn fixed_page(
    operation: &str,
    list_member: &str,
    items: Vec<Value>,
    input: PageInput,
    meta: &CommandMeta,
    api: &ApiState,
) -> Result<Value, AwsJsonError> {
    let start = match resume_after(operation, meta, api, input.next_token.as_deref())? {
        Some(after) => after.parse::<usize>().map_or(items.len(), |i| i.saturating_add(1)),
        None => 0,
    };
    let end = start.saturating_add(input.max_results.unwrap_or(DEFAULT_PAGE)).min(items.len());
    let page: Vec<Value> = items.get(start..end).map(<[Value]>::to_vec).unwrap_or_default();
    let mut out = Map::new();
    out.insert(list_member.into(), Value::Array(page));
    let last = (end < items.len()).then(|| (end - 1).to_string());
    put_next_token(&mut out, last, operation, meta, api);
    Ok(trim(operation, out))
}

/// The `NextToken` to resume `operation` after `last`, when more may follow.
fn put_next_token(out: &mut Map<String, Value>, last: Option<String>, operation: &str, meta: &CommandMeta, api: &ApiState) {
    if let Some(last) = last {
        let token = pagination::issue(&api.pagination_secret, operation, &meta.scope, &last);
        out.insert("NextToken".into(), json!(token));
    }
}

fn resume_after(operation: &str, meta: &CommandMeta, api: &ApiState, token: Option<&str>) -> Result<Option<String>, AwsJsonError> {
    token
        .map(|t| pagination::redeem(&api.pagination_secret, operation, &meta.scope, t).ok_or_else(invalid_next_token))
        .transpose()
}

/// "The Owner and PhoneNumberIds parameters can't be used at the same time" (and the same of
/// the other listings' ids or names, `ids_member`).
fn owner_with_ids(ids_member: &str) -> AwsJsonError {
    AwsJsonError::validation(
        ValidationReason::ParametersCannotBeUsedTogether,
        "Owner",
        format!("The Owner and {ids_member} parameters can't be used at the same time"),
    )
}

/// One listing: explicit ids (each must exist) or a scan of the caller's live resources.
#[allow(clippy::too_many_arguments)]
async fn list_resources<T: DeserializeOwned>(
    operation: &str,
    kind: ResourceKind,
    item_shape: &str,
    list_member: &str,
    input: ListInput,
    meta: &CommandMeta,
    api: &ApiState,
    render: fn(&T) -> Map<String, Value>,
) -> Result<Value, AwsJsonError> {
    let ids_member = match kind {
        ResourceKind::PhoneNumber => "PhoneNumberIds",
        ResourceKind::Pool => "PoolIds",
        ResourceKind::OptOutList => "OptOutListNames",
        ResourceKind::SenderId => "SenderIds",
    };
    if input.owner.is_some() && input.ids.as_ref().is_some_and(|ids| !ids.is_empty()) {
        return Err(owner_with_ids(ids_member));
    }
    let filters = checked_filters(input.filters, kind == ResourceKind::Pool)?;
    let limit = input.max_results.unwrap_or(DEFAULT_PAGE);
    let after = resume_after(operation, meta, api, input.next_token.as_deref())?;
    let failed = |e| AwsJsonError::from_service(e, &meta.request_id);
    let mut out = Map::new();
    if input.owner.as_deref() == Some("SHARED") {
        // Nothing is shared with other accounts in this service.
        out.insert(list_member.into(), json!([]));
        return Ok(Value::Object(out));
    }
    let member_of = match kind {
        ResourceKind::SenderId => sender_id_filter_member,
        _ => filter_member,
    };
    let keep = |fields: &Map<String, Value>| passes(&filters, fields, member_of);
    let (items, last): (Vec<Map<String, Value>>, Option<String>) = match input.ids.filter(|ids| !ids.is_empty()) {
        Some(ids) => {
            let mut found = Vec::new();
            for id in &ids {
                let view: T = api.service.view(&meta.scope, kind, id).await.map_err(failed)?;
                found.push(render(&view));
            }
            let id_key = match kind {
                ResourceKind::PhoneNumber => "PhoneNumberId",
                ResourceKind::Pool => "PoolId",
                ResourceKind::OptOutList => "OptOutListName",
                ResourceKind::SenderId => "SenderIdArn",
            };
            found.sort_by(|a, b| value_text(&a[id_key]).cmp(&value_text(&b[id_key])));
            found.dedup_by(|a, b| a[id_key] == b[id_key]);
            let rest: Vec<_> = found
                .into_iter()
                .filter(|f| after.as_ref().is_none_or(|a| value_text(&f[id_key]) > *a))
                .filter(|f| keep(f))
                .collect();
            let more = rest.len() > limit;
            let page: Vec<_> = rest.into_iter().take(limit).collect();
            let last = if more { page.last().map(|f| value_text(&f[id_key])) } else { None };
            (page, last)
        }
        None => {
            let page = api
                .service
                .scan_views(&meta.scope, kind, after.as_deref(), limit, |v: &T| keep(&render(v)))
                .await
                .map_err(failed)?;
            (page.items.iter().map(render).collect(), page.last_key)
        }
    };
    let items: Vec<Value> = items.into_iter().map(|m| model().project(item_shape, m)).collect();
    out.insert(list_member.into(), Value::Array(items));
    put_next_token(&mut out, last, operation, meta, api);
    Ok(trim(operation, out))
}

async fn describe_phone_numbers(input: ListInput, meta: &CommandMeta, api: &ApiState) -> Result<Value, AwsJsonError> {
    list_resources::<PhoneNumber>(
        "DescribePhoneNumbers",
        ResourceKind::PhoneNumber,
        "PhoneNumberInformation",
        "PhoneNumbers",
        input,
        meta,
        api,
        phone_number_info,
    )
    .await
}

/// `DescribeSenderIds`: each sender id asked for is named by its string (or ARN) and country.
async fn describe_sender_ids(input: DescribeSenderIdsInput, meta: &CommandMeta, api: &ApiState) -> Result<Value, AwsJsonError> {
    if input.owner.is_some() && input.sender_ids.as_ref().is_some_and(|ids| !ids.is_empty()) {
        return Err(owner_with_ids("SenderIds"));
    }
    let mut arns = Vec::new();
    for asked in input.sender_ids.unwrap_or_default() {
        let named = ResourceKind::resolve_sender_id(&meta.scope, &asked.sender_id, Some(&asked.iso_country_code));
        let Some((_, sender_id, iso)) = named else {
            return Err(AwsJsonError::from_service(
                crate::service::ServiceError::Rejected(crate::domain::Rejection::not_found(ResourceKind::SenderId, &asked.sender_id)),
                &meta.request_id,
            ));
        };
        arns.push(meta.scope.arn(ResourceKind::SenderId, &format!("{sender_id}/{iso}")));
    }
    let input = ListInput {
        filters: input.filters,
        max_results: input.max_results,
        next_token: input.next_token,
        owner: input.owner,
        ids: Some(arns),
    };
    list_resources::<SenderId>(
        "DescribeSenderIds",
        ResourceKind::SenderId,
        "SenderIdInformation",
        "SenderIds",
        input,
        meta,
        api,
        sender_id_info,
    )
    .await
}

async fn describe_pools(input: ListInput, meta: &CommandMeta, api: &ApiState) -> Result<Value, AwsJsonError> {
    list_resources::<Pool>(
        "DescribePools",
        ResourceKind::Pool,
        "PoolInformation",
        "Pools",
        input,
        meta,
        api,
        pool_info,
    )
    .await
}

async fn list_pool_origination_identities(
    input: ListPoolOriginationIdentitiesInput,
    meta: &CommandMeta,
    api: &ApiState,
) -> Result<Value, AwsJsonError> {
    const OP: &str = "ListPoolOriginationIdentities";
    let (filters, limit, after) = page_of(OP, input.filters, input.max_results, input.next_token.as_deref(), meta, api)?;
    let pool = api
        .service
        .pool_of(&meta.scope, &input.pool_id)
        .await
        .map_err(|e| AwsJsonError::from_service(e, &meta.request_id))?;
    let member_field = |name: &str| match name {
        "iso-country-code" => "IsoCountryCode",
        "number-capability" => "NumberCapabilities",
        _ => "",
    };
    let matching: Vec<&PoolMember> = pool
        .members
        .range::<String, _>((
            after.as_ref().map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
            std::ops::Bound::Unbounded,
        ))
        .map(|(_, m)| m)
        .filter(|m| match member_info(m) {
            Value::Object(fields) => passes(&filters, &fields, member_field),
            _ => false,
        })
        .collect();
    let more = matching.len() > limit;
    let page: Vec<&PoolMember> = matching.into_iter().take(limit).collect();
    let mut out = Map::new();
    out.insert(
        "OriginationIdentities".into(),
        Value::Array(page.iter().map(|m| member_info(m)).collect()),
    );
    out.insert("PoolArn".into(), json!(pool.pool_arn));
    out.insert("PoolId".into(), json!(pool.pool_id));
    let last = page.last().filter(|_| more).map(|m| m.origination_identity.clone());
    put_next_token(&mut out, last, OP, meta, api);
    Ok(Value::Object(out))
}

/// One page of `DescribeOptedOutNumbers`: the entries of `list` after `after` (only the numbers
/// `wanted`, if named) that pass `filters`, at most `limit`, and the number to resume after if
/// there may be more. At most [`OPT_OUT_SCAN_BUDGET`] entries are looked at.
fn opted_out_page(
    list: &OptOutList,
    wanted: Option<&BTreeSet<String>>,
    after: Option<&String>,
    limit: usize,
    filters: &[Filter],
) -> (Vec<Map<String, Value>>, Option<String>) {
    let from = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
    let candidates: Box<dyn Iterator<Item = (&String, &OptedOut)>> = match wanted {
        Some(w) => Box::new(
            w.range::<String, _>((from, std::ops::Bound::Unbounded))
                .filter_map(|n| list.opted_out.get_key_value(n)),
        ),
        None => Box::new(list.opted_out.range::<_, String>((from, std::ops::Bound::Unbounded))),
    };
    let (mut page, mut scanned, mut last_scanned) = (Vec::new(), 0, None);
    for (number, entry) in candidates {
        if scanned == OPT_OUT_SCAN_BUDGET {
            return (page, last_scanned);
        }
        scanned += 1;
        let fields = opted_out_info(number, entry);
        if passes(filters, &fields, filter_member) {
            if page.len() == limit {
                return (page, last_scanned);
            }
            page.push(fields);
        }
        last_scanned = Some(number.clone());
    }
    (page, None)
}

/// Entries of an opt-out list looked at for one page at most: a filter that few of a large
/// list's numbers match answers a short page, with a token to go on, rather than scan it all.
const OPT_OUT_SCAN_BUDGET: usize = 10_000;

async fn describe_opted_out_numbers(
    input: DescribeOptedOutNumbersInput,
    meta: &CommandMeta,
    api: &ApiState,
) -> Result<Value, AwsJsonError> {
    const OP: &str = "DescribeOptedOutNumbers";
    let (filters, limit, after) = page_of(OP, input.filters, input.max_results, input.next_token.as_deref(), meta, api)?;
    let failed = |e| AwsJsonError::from_service(e, &meta.request_id);
    api.service.ensure_default_list(meta).await.map_err(failed)?;
    let wanted: Option<BTreeSet<String>> = input
        .opted_out_numbers
        .filter(|n| !n.is_empty())
        .map(|numbers| numbers.iter().map(|n| e164(n)).collect());
    // The page is taken by the list's actor: a list can hold many numbers, and a copy of all of
    // them for each page would cost memory with the list's size, not the page's.
    let page_of_list = move |list: &OptOutList| {
        let (page, next) = opted_out_page(list, wanted.as_ref(), after.as_ref(), limit, &filters);
        (list_info(list), page, next)
    };
    let (mut out, page, next) = api
        .service
        .read_opt_out_list(&meta.scope, &input.opt_out_list_name, page_of_list)
        .await
        .map_err(failed)?;
    put_next_token(&mut out, next, OP, meta, api);
    out.insert(
        "OptedOutNumbers".into(),
        Value::Array(page.into_iter().map(|m| model().project("OptedOutNumberInformation", m)).collect()),
    );
    Ok(trim(OP, out))
}

/// `ListAvailablePhoneNumbers`: the numbers of the configured supply that nobody holds, from a
/// random place of the supply's order on ([`crate::numbering::Listing`]); the `NextToken`
/// carries where the listing began and stands.
async fn list_available_phone_numbers(
    input: ListAvailablePhoneNumbersInput,
    meta: &CommandMeta,
    api: &ApiState,
) -> Result<Value, AwsJsonError> {
    const OP: &str = "ListAvailablePhoneNumbers";
    /// "If you don't specify a value, the default is 10."
    const PAGE: usize = 10;
    let from = match resume_after(OP, meta, api, input.next_token.as_deref())? {
        Some(after) => ListingCursor::from_token(&after).ok_or_else(invalid_next_token)?,
        None => ListingCursor::from_start(rand::random()),
    };
    let preference = number_preference(input.number_preference.as_deref())?;
    let (numbers, next) = api
        .service
        .available_numbers(
            &input.iso_country_code,
            input.number_type,
            preference.as_ref(),
            from,
            input.max_results.unwrap_or(PAGE),
        )
        .await
        .map_err(|e| AwsJsonError::from_service(e, &meta.request_id))?;
    let mut out = Map::new();
    out.insert("AvailablePhoneNumbers".into(), json!(numbers));
    put_next_token(&mut out, next.map(ListingCursor::to_token), OP, meta, api);
    Ok(trim(OP, out))
}

async fn describe_keywords(input: DescribeKeywordsInput, meta: &CommandMeta, api: &ApiState) -> Result<Value, AwsJsonError> {
    const OP: &str = "DescribeKeywords";
    let (filters, limit, after) = page_of(OP, input.filters, input.max_results, input.next_token.as_deref(), meta, api)?;
    let (id, arn, all) = api
        .service
        .keywords_of(&meta.scope, &input.origination_identity)
        .await
        .map_err(|e| AwsJsonError::from_service(e, &meta.request_id))?;
    let wanted: Option<BTreeSet<String>> = input
        .keywords
        .filter(|k| !k.is_empty())
        .map(|k| k.iter().map(|k| k.to_uppercase()).collect());
    let mut matching = all
        .iter()
        .filter(|k| after.as_ref().is_none_or(|a| k.keyword.to_uppercase() > *a))
        .filter(|k| wanted.as_ref().is_none_or(|w| w.contains(&k.keyword.to_uppercase())))
        .map(keyword_info)
        .filter(|fields| passes(&filters, fields, filter_member));
    let page: Vec<Map<String, Value>> = matching.by_ref().take(limit).collect();
    let more = matching.next().is_some();
    let mut out = Map::new();
    out.insert("OriginationIdentity".into(), json!(id));
    out.insert("OriginationIdentityArn".into(), json!(arn));
    let last = page.last().filter(|_| more).map(|m| value_text(&m["Keyword"]).to_uppercase());
    put_next_token(&mut out, last, OP, meta, api);
    out.insert(
        "Keywords".into(),
        Value::Array(page.into_iter().map(|m| model().project("KeywordInformation", m)).collect()),
    );
    Ok(trim(OP, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_of(n: usize) -> OptOutList {
        crate::domain::testing::opt_out_list_of(n as u64)
    }

    fn numbers(page: &[Map<String, Value>]) -> Vec<&str> {
        page.iter().filter_map(|m| m["OptedOutNumber"].as_str()).collect()
    }

    #[test]
    fn a_page_of_opted_out_numbers_resumes_after_its_last() {
        let list = list_of(5);
        let (page, next) = opted_out_page(&list, None, None, 2, &[]);
        assert_eq!(
            (numbers(&page), next.as_deref()),
            (vec!["+12060000000", "+12060000001"], Some("+12060000001"))
        );
        let (page, next) = opted_out_page(&list, None, next.as_ref(), 3, &[]);
        assert_eq!((numbers(&page).len(), next), (3, None), "the last page says there is no more");
        let wanted: BTreeSet<String> = ["+12060000003".to_string(), "+19990000000".to_string()].into();
        let (page, next) = opted_out_page(&list, Some(&wanted), None, 5, &[]);
        assert_eq!((numbers(&page), next), (vec!["+12060000003"], None));
    }

    /// A filter that matches nothing of a large list looks at a bounded number of its entries
    /// per page, and the pages still cover the whole list.
    #[test]
    fn a_filter_matching_nothing_scans_a_bounded_share_of_the_list_per_page() {
        let list = list_of(OPT_OUT_SCAN_BUDGET * 2 + 5);
        let nobody = [Filter {
            name: "end-user-opted-out".into(),
            values: vec!["true".into()],
        }];
        let (mut pages, mut after) = (0, None);
        loop {
            let (page, next) = opted_out_page(&list, None, after.as_ref(), 10, &nobody);
            assert!(page.is_empty());
            pages += 1;
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(pages, 3, "one page per budget's worth of entries");
    }
}
