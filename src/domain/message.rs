//! Outbound messages (`SendTextMessage`, `SendVoiceMessage`, `SendMediaMessage`). Nothing leaves
//! the machine: a message accepted from a phone number is a `MessageSent` event on that number's
//! stream, so it is ordered with everything else that happens to the number (a message is never
//! accepted after the number's `Released`), and a refused one is recorded there with its reason.
//! A sender id's messages are on its own stream the same way. [`check_send`] holds the rules
//! every origination identity applies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ids::ResourceKind;
use super::types::{ConflictReason, MessageType, NumberCapability, ResourceType};
use super::Rejection;

super::types::wire_enum!(
    /// Which operation sent a message.
    Channel { Text = "TEXT", Voice = "VOICE", Media = "MEDIA" }
);

impl Channel {
    /// The capability a number needs to send on this channel.
    pub fn capability(self) -> NumberCapability {
        match self {
            Channel::Text => NumberCapability::Sms,
            Channel::Voice => NumberCapability::Voice,
            Channel::Media => NumberCapability::Mms,
        }
    }

    /// The operation that sends on this channel.
    pub fn operation(self) -> &'static str {
        match self {
            Channel::Text => "SendTextMessage",
            Channel::Voice => "SendVoiceMessage",
            Channel::Media => "SendMediaMessage",
        }
    }
}

/// One message as it was asked to be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OutboundMessage {
    pub message_id: String,
    pub channel: Channel,
    pub destination_phone_number: String,
    /// The origination identity as the caller named it (an id, ARN, E.164 number or pool).
    pub origination_identity: String,
    /// The pool the number was picked from, when the caller named a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<MessageType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_body: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media_urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_set_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
    /// Checked, not sent: an accepted dry run records nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl OutboundMessage {
    /// A text to a US destination from `origination_identity` on `channel` (for tests, benchmarks
    /// and documentation examples).
    pub fn example(origination_identity: &str, channel: Channel) -> OutboundMessage {
        OutboundMessage {
            message_id: "m-1".into(),
            channel,
            destination_phone_number: "+12065550199".into(),
            origination_identity: origination_identity.into(),
            pool_id: None,
            message_type: None,
            message_body: Some("hello".into()),
            media_urls: vec![],
            voice_id: None,
            configuration_set_name: None,
            context: Default::default(),
            dry_run: false,
        }
    }
}

/// A message an end user sent to one of the account's numbers (nothing arrives from outside: the
/// simulation endpoint stands in for the carrier), and the keyword it was, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InboundMessage {
    pub message_id: String,
    /// The end user's number.
    pub origination_number: String,
    /// The account's number it was sent to.
    pub destination_phone_number: String,
    pub message_body: String,
}

/// What the send rules need to know of the origination identity a message leaves from.
pub struct Sender<'a> {
    pub kind: ResourceKind,
    pub id: &'a str,
    pub capabilities: &'a [NumberCapability],
    /// The message types it sends.
    pub message_types: &'a [MessageType],
    /// `SelfManagedOptOutsEnabled`: "you're responsible for tracking and honoring opt-out
    /// requests".
    pub self_managed_opt_outs: bool,
}

/// `SendMessage` from a live origination identity: it needs the channel's capability and the
/// message's type, and never sends to a destination on the opt-out list in force (`opted_out_on`:
/// the list on which the shell found the destination), unless it manages opt-outs itself. `Ok`
/// says whether to record the message: an accepted dry run records nothing.
pub fn check_send(sender: &Sender<'_>, message: &OutboundMessage, opted_out_on: Option<&str>) -> Result<bool, Rejection> {
    let capability = message.channel.capability();
    if !sender.capabilities.contains(&capability) {
        return Err(Rejection::conflict(
            ConflictReason::NumberCapabilitiesMismatch,
            sender.kind,
            sender.id,
            &format!("cannot send {} messages: it has no {capability} capability", message.channel),
        ));
    }
    if let Some(asked) = message.message_type.filter(|t| !sender.message_types.contains(t)) {
        let sends: Vec<String> = sender.message_types.iter().map(ToString::to_string).collect();
        return Err(Rejection::conflict(
            ConflictReason::MessageTypeMismatch,
            sender.kind,
            sender.id,
            &format!("sends {} messages, not {asked}", sends.join(" and ")),
        ));
    }
    if let Some(list) = opted_out_on.filter(|_| !sender.self_managed_opt_outs) {
        return Err(Rejection::Conflict {
            reason: ConflictReason::DestinationPhoneNumberOptedOut,
            resource_type: ResourceType::OptedOutNumber,
            resource_id: message.destination_phone_number.clone(),
            message: format!("{} has opted out (opt-out list {list})", message.destination_phone_number),
        });
    }
    Ok(!message.dry_run)
}
