//! The API's view of a phone number, a pool, an opt-out list and a sender id: every member any output shape may want, as the
//! AWS JSON documents name them. The API trims them to each operation's output shape; the audit
//! trail shows them as the state at a point of history. One renderer serves both, so the audit
//! trail shows a number exactly as Describe would.

use serde_json::{json, Map, Value};

use crate::domain::opt_out_list::{OptOutList, OptedOut};
use crate::domain::phone_number::PhoneNumber;
use crate::domain::pool::Pool;
use crate::domain::sender_id::SenderId;
use crate::model::model;

pub fn secs(ms: u64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn put_opt(m: &mut Map<String, Value>, key: &str, v: &Option<String>) {
    if let Some(v) = v {
        m.insert(key.into(), Value::String(v.clone()));
    }
}

/// Every member any output shape may want from a phone number.
pub fn phone_number_info(n: &PhoneNumber) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("CreatedTimestamp".into(), secs(n.created_timestamp_ms));
    m.insert("DeletionProtectionEnabled".into(), json!(n.deletion_protection_enabled));
    m.insert("InternationalSendingEnabled".into(), json!(n.international_sending_enabled));
    m.insert("IsoCountryCode".into(), json!(n.iso_country_code));
    m.insert("MessageType".into(), json!(n.message_type));
    m.insert("MonthlyLeasingPrice".into(), json!(n.monthly_leasing_price));
    m.insert("NumberCapabilities".into(), json!(n.number_capabilities));
    m.insert("NumberType".into(), json!(n.number_type));
    m.insert("OptOutListName".into(), json!(n.opt_out_list_name));
    m.insert("PhoneNumber".into(), json!(n.phone_number));
    m.insert("PhoneNumberArn".into(), json!(n.phone_number_arn));
    m.insert("PhoneNumberId".into(), json!(n.phone_number_id));
    put_opt(&mut m, "PoolId", &n.pool_id);
    put_opt(&mut m, "RegistrationId", &n.registration_id);
    m.insert("SelfManagedOptOutsEnabled".into(), json!(n.self_managed_opt_outs_enabled));
    m.insert("Status".into(), json!(n.status));
    if !n.tags.is_empty() {
        m.insert("Tags".into(), json!(n.tags));
    }
    put_opt(&mut m, "TwoWayChannelArn", &n.two_way_channel_arn);
    put_opt(&mut m, "TwoWayChannelRole", &n.two_way_channel_role);
    m.insert("TwoWayEnabled".into(), json!(n.two_way_enabled));
    m
}

/// Every member any output shape may want from a pool.
pub fn pool_info(p: &Pool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("CreatedTimestamp".into(), secs(p.created_timestamp_ms));
    m.insert("DeletionProtectionEnabled".into(), json!(p.deletion_protection_enabled));
    m.insert("MessageType".into(), json!(p.message_type));
    m.insert("OptOutListName".into(), json!(p.opt_out_list_name));
    m.insert("PoolArn".into(), json!(p.pool_arn));
    m.insert("PoolId".into(), json!(p.pool_id));
    m.insert("SelfManagedOptOutsEnabled".into(), json!(p.self_managed_opt_outs_enabled));
    m.insert("SharedRoutesEnabled".into(), json!(p.shared_routes_enabled));
    m.insert("Status".into(), json!(p.status));
    if !p.tags.is_empty() {
        m.insert("Tags".into(), json!(p.tags));
    }
    put_opt(&mut m, "TwoWayChannelArn", &p.two_way_channel_arn);
    put_opt(&mut m, "TwoWayChannelRole", &p.two_way_channel_role);
    m.insert("TwoWayEnabled".into(), json!(p.two_way_enabled));
    m
}

/// A phone number as `PhoneNumberInformation`, plus the pool it is joining or leaving (which
/// no output shape has, but the history of a pool change needs).
pub fn phone_number_information(n: &PhoneNumber) -> Value {
    let mut v = model().project("PhoneNumberInformation", phone_number_info(n));
    if let (Value::Object(m), Some(pending)) = (&mut v, &n.pending_pool_id) {
        m.insert("PendingPoolId".into(), Value::String(pending.clone()));
    }
    v
}

/// A pool as `PoolInformation`, plus its members and whether it is deleted.
pub fn pool_information(p: &Pool) -> Value {
    let mut v = model().project("PoolInformation", pool_info(p));
    if let Value::Object(m) = &mut v {
        m.insert("Members".into(), Value::from(p.members.keys().cloned().collect::<Vec<_>>()));
        m.insert("Deleted".into(), Value::Bool(p.deleted));
    }
    v
}

/// Every member any output shape may want from an opt-out list (its numbers aside).
pub fn opt_out_list_info(name: &str, arn: &str, created_ms: u64, tags: &[crate::domain::types::Tag]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("CreatedTimestamp".into(), secs(created_ms));
    m.insert("OptOutListArn".into(), json!(arn));
    m.insert("OptOutListName".into(), json!(name));
    m.insert("ResourceArn".into(), json!(arn));
    m.insert("Tags".into(), json!(tags));
    m
}

/// One opted-out number as `OptedOutNumberInformation` and the Put/Delete outputs want it.
pub fn opted_out_info(number: &str, entry: &OptedOut) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("OptedOutNumber".into(), json!(number));
    m.insert("OptedOutTimestamp".into(), secs(entry.opted_out_timestamp_ms));
    m.insert("EndUserOptedOut".into(), json!(entry.end_user_opted_out));
    m
}

/// An opt-out list as `OptOutListInformation`, plus how many numbers it holds and whether it is
/// deleted (the audit trail's view of its state).
pub fn opt_out_list_information(l: &OptOutList) -> Value {
    let info = opt_out_list_info(&l.opt_out_list_name, &l.opt_out_list_arn, l.created_timestamp_ms, &l.tags);
    let mut v = model().project("OptOutListInformation", info);
    if let Value::Object(m) = &mut v {
        m.insert("OptedOutNumbers".into(), Value::from(l.opted_out.len()));
        m.insert("Deleted".into(), Value::Bool(l.deleted));
    }
    v
}

/// Every member any output shape may want from a sender id.
pub fn sender_id_info(s: &SenderId) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("DeletionProtectionEnabled".into(), json!(s.deletion_protection_enabled));
    m.insert("IsoCountryCode".into(), json!(s.iso_country_code));
    m.insert("MessageTypes".into(), json!(s.message_types));
    m.insert("MonthlyLeasingPrice".into(), json!(s.monthly_leasing_price));
    m.insert("Registered".into(), json!(s.registered));
    m.insert("SenderId".into(), json!(s.sender_id));
    m.insert("SenderIdArn".into(), json!(s.sender_id_arn));
    m.insert("Tags".into(), json!(s.tags));
    m
}

/// A sender id as `SenderIdInformation`, plus its status and pools (the audit trail's view).
pub fn sender_id_information(s: &SenderId) -> Value {
    let mut v = model().project("SenderIdInformation", sender_id_info(s));
    if let Value::Object(m) = &mut v {
        m.insert("Status".into(), json!(s.status));
        if !s.pools.is_empty() {
            m.insert("Pools".into(), json!(s.pools));
        }
    }
    v
}
