//! Outbound messages (`SendTextMessage`, `SendVoiceMessage`, `SendMediaMessage`). Nothing leaves
//! the machine: a message accepted from a phone number is a `MessageSent` event on that number's
//! stream, so it is ordered with everything else that happens to the number (a message is never
//! accepted after the number's `Released`), and a refused one is recorded there with its reason.
//! The rules themselves are the number's (see `PhoneNumberState::decide_send`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{MessageType, NumberCapability};

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
