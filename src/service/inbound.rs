//! Messages from end users to the account's numbers. Nothing arrives from outside: the
//! simulation endpoint (`POST /simulate/inbound-message`) stands in for the carrier, so a user's
//! tests can play an end user who replies HELP, STOP or one of the account's keywords.
//!
//! The number decides which keyword the message is (its own keywords, then its pool's, then
//! HELP and STOP) and records `MessageReceived` with it; its message is the automatic response.
//! Then the service carries out the keyword's action on the opt-out list in force (the pool's
//! for a number in a pool, else the number's): `OPT_OUT` puts the end user on it as opted out by
//! the end user (`EndUserOptedOut: true`), `OPT_IN` takes them off.

use super::error::not_found;
use super::{LifecycleService, ServiceError};
use crate::domain::keywords::{Keyword, KeywordAction};
use crate::domain::message::InboundMessage;
use crate::domain::opt_out_list::OptOutListAction;
use crate::domain::phone_number::PhoneNumberAction;
use crate::domain::{CommandMeta, ResourceKind};
use crate::projection::number_claim_key;

/// What became of an end user's message.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    /// The keyword it was, if any (its message is the automatic response).
    pub keyword: Option<Keyword>,
    /// The opt-out list the keyword's action changed, if it had one.
    pub opt_out_list: Option<String>,
}

impl LifecycleService {
    /// An end user at `from` sends `body` to the account's number `to` (E.164).
    pub async fn receive_message(&self, meta: &CommandMeta, to: &str, from: &str, body: &str) -> Result<Received, ServiceError> {
        let scope = &meta.scope;
        let holder = self.store.index_get(&number_claim_key(to)).await?;
        let id = holder.map(|h| String::from_utf8_lossy(&h).into_owned()).unwrap_or_default();
        let id = self
            .owned(ResourceKind::PhoneNumber, scope, &id)
            .await
            .map_err(|_| not_found(ResourceKind::PhoneNumber, to))?;
        let number = self.current_number(&id).await?;
        let pool = match &number.pool_id {
            Some(pool_id) => Some(self.live_pool(scope, pool_id).await?),
            None => None,
        };
        let pool_keywords = pool.as_ref().map(|p| p.keywords.clone()).unwrap_or_default();
        let message = InboundMessage {
            message_id: uuid::Uuid::new_v4().to_string(),
            origination_number: from.to_string(),
            destination_phone_number: to.to_string(),
            message_body: body.to_string(),
        };
        let receive = PhoneNumberAction::ReceiveMessage {
            message: Box::new(message.clone()),
            pool_keywords: pool_keywords.clone(),
        };
        // The message changes nothing of the number's state: the state it answers with is the
        // one the decision was taken on, so this is the keyword the event records.
        let decided = self.number(meta, &id, receive).await?;
        let keyword = decided.inbound_keyword(body, &pool_keywords);
        let list = pool.map_or(decided.opt_out_list_name, |p| p.opt_out_list_name);
        let action = match keyword.as_ref().map(|k| k.keyword_action) {
            Some(KeywordAction::OptOut) => Some(OptOutListAction::PutOptedOutNumber {
                number: from.to_string(),
                end_user_opted_out: true,
            }),
            Some(KeywordAction::OptIn) => Some(OptOutListAction::EndUserOptedIn { number: from.to_string() }),
            Some(KeywordAction::AutomaticResponse) | None => None,
        };
        let opt_out_list = match action {
            Some(action) => {
                self.change_opted_out(meta, &list, from, |_| action).await?;
                Some(list)
            }
            None => None,
        };
        Ok(Received {
            message_id: message.message_id,
            keyword,
            opt_out_list,
        })
    }
}
