//! Value types of the Pinpoint SMS and Voice v2 model that the domain reasons about
//! (`MessageType`, `NumberType`, `NumberStatus`, ...). Their serde names are the model's enum
//! values, so the same types are used on the wire, in events and in the configuration.

use serde::{Deserialize, Serialize};

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in model order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as the model spells it.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses the model spelling.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($wire => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use wire_enum;

wire_enum!(
    /// `MessageType`.
    MessageType { Transactional = "TRANSACTIONAL", Promotional = "PROMOTIONAL" }
);
wire_enum!(
    /// `NumberCapability`.
    NumberCapability { Sms = "SMS", Voice = "VOICE", Mms = "MMS", Rcs = "RCS" }
);
wire_enum!(
    /// `NumberType` (`RequestableNumberType` is the same without `SHORT_CODE`).
    NumberType {
        ShortCode = "SHORT_CODE",
        LongCode = "LONG_CODE",
        TollFree = "TOLL_FREE",
        TenDlc = "TEN_DLC",
        Simulator = "SIMULATOR",
    }
);
wire_enum!(
    /// `NumberStatus`.
    NumberStatus {
        Pending = "PENDING",
        Active = "ACTIVE",
        Associating = "ASSOCIATING",
        Disassociating = "DISASSOCIATING",
        Deleted = "DELETED",
    }
);
wire_enum!(
    /// `PoolStatus`.
    PoolStatus { Creating = "CREATING", Active = "ACTIVE", Deleting = "DELETING" }
);
wire_enum!(
    /// `ResourceType` (the members this service names).
    ResourceType {
        PhoneNumber = "phone-number",
        Pool = "pool",
        SenderId = "sender-id",
        OptOutList = "opt-out-list",
        OptedOutNumber = "opted-out-number",
        Keyword = "keyword",
        Account = "account",
    }
);
wire_enum!(
    /// `ConflictExceptionReason` (the members this service raises).
    ConflictReason {
        DeletionProtectionEnabled = "DELETION_PROTECTION_ENABLED",
        PhoneNumberAssociatedToPool = "PHONE_NUMBER_ASSOCIATED_TO_POOL",
        SenderIdAssociatedToPool = "SENDER_ID_ASSOCIATED_TO_POOL",
        PhoneNumberNotAssociatedToPool = "PHONE_NUMBER_NOT_ASSOCIATED_TO_POOL",
        LastPhoneNumber = "LAST_PHONE_NUMBER",
        MessageTypeMismatch = "MESSAGE_TYPE_MISMATCH",
        OptOutListMismatch = "OPT_OUT_LIST_MISMATCH",
        SelfManagedOptOutsMismatch = "SELF_MANAGED_OPT_OUTS_MISMATCH",
        TwoWayConfigMismatch = "TWO_WAY_CONFIG_MISMATCH",
        ResourceAlreadyAssociated = "RESOURCE_ALREADY_ASSOCIATED",
        ResourceNotActive = "RESOURCE_NOT_ACTIVE",
        ResourceModificationNotAllowed = "RESOURCE_MODIFICATION_NOT_ALLOWED",
        ResourceAlreadyExists = "RESOURCE_ALREADY_EXISTS",
        ResourceDeletionNotAllowed = "RESOURCE_DELETION_NOT_ALLOWED",
        DestinationPhoneNumberOptedOut = "DESTINATION_PHONE_NUMBER_OPTED_OUT",
        NumberCapabilitiesMismatch = "NUMBER_CAPABILITIES_MISMATCH",
        NoOriginationIdentitiesFound = "NO_ORIGINATION_IDENTITIES_FOUND",
    }
);
wire_enum!(
    /// `ValidationExceptionReason` (the members this service raises).
    ValidationReason {
        CannotParse = "CANNOT_PARSE",
        FieldValidationFailed = "FIELD_VALIDATION_FAILED",
        MissingParameter = "MISSING_PARAMETER",
        InvalidParameter = "INVALID_PARAMETER",
        InvalidArn = "INVALID_ARN",
        InvalidNextToken = "INVALID_NEXT_TOKEN",
        InvalidFilterValues = "INVALID_FILTER_VALUES",
        CountryCodeMismatch = "COUNTRY_CODE_MISMATCH",
        MaximumSizeExceeded = "MAXIMUM_SIZE_EXCEEDED",
        TwoWayChannelNotPresent = "TWO_WAY_CHANNEL_NOT_PRESENT",
        UnknownOperation = "UNKNOWN_OPERATION",
        InvalidRequest = "INVALID_REQUEST",
        ParametersCannotBeUsedTogether = "PARAMETERS_CANNOT_BE_USED_TOGETHER",
    }
);
wire_enum!(
    /// `ServiceQuotaExceededExceptionReason` (the members this service raises).
    QuotaReason {
        PhoneNumbersPerAccount = "PHONE_NUMBERS_PER_ACCOUNT",
        PoolsPerAccount = "POOLS_PER_ACCOUNT",
        OptOutListsPerAccount = "OPT_OUT_LISTS_PER_ACCOUNT",
        SenderIdsPerAccount = "SENDER_IDS_PER_ACCOUNT",
        TagsPerResource = "TAGS_PER_RESOURCE",
        KeywordsPerPhoneNumber = "KEYWORDS_PER_PHONE_NUMBER",
        KeywordsPerPool = "KEYWORDS_PER_POOL",
    }
);

/// A resource tag (`Tag`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for t in NumberType::ALL {
            assert_eq!(NumberType::parse(t.as_str()), Some(*t));
            let json = serde_json::to_string(t).expect("serialize");
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(NumberStatus::parse("DELETED"), Some(NumberStatus::Deleted));
        assert_eq!(MessageType::parse("transactional"), None);
    }
}
