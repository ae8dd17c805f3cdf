//! Opt-out lists: their lifecycle, their opted-out numbers, and the rule that ties them to the
//! numbers and pools that name them, which no single aggregate holds:
//! - a list in use by a live number or pool is not deleted: the deletion is decided on whether
//!   the shell saw a user (`Delete { in_use }`, so the refusal is recorded), and its append
//!   requires the list's users counter to be 0, so a number joining meanwhile wins or loses by
//!   the log's order, never both;
//! - a number or pool names only a list that exists: its append requires the list's alive
//!   counter to be 1, so a list deleted meanwhile makes it "not found".
//!
//! The account's `Default` list is made the first time the account works with opt-out lists.

use std::collections::HashSet;

use super::error::not_found;
use super::tokens::lost_token_race;
use super::{Activation, LifecycleService, ServiceError};
use crate::actors::ExecuteError;
use crate::domain::opt_out_list::{OptOutList, OptOutListAction, OptOutListState, OptedOut, DEFAULT_LIST};
use crate::domain::tags::same_tags;
use crate::domain::types::{Tag, ValidationReason};
use crate::domain::{CommandMeta, Rejection, ResourceKind, Scope};
use crate::projection::{live_count_key, opt_out_list_alive_key, opt_out_list_users_key};
use crate::store::{stored_counter, AppendError, CounterLimit};

const KIND: ResourceKind = ResourceKind::OptOutList;

/// What a `CreateOptOutList` asks for.
#[derive(Debug, Clone)]
pub struct NewOptOutList {
    pub name: String,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
}

impl LifecycleService {
    /// The stream id of a list the caller names (name or ARN), or "not found".
    fn list_id(scope: &Scope, name_or_arn: &str) -> Result<String, ServiceError> {
        Self::resolve(KIND, scope, name_or_arn)
    }

    /// `read` of the caller's list `name_or_arn` as it is now, computed by the list's actor: a
    /// list holds every number opted out of it, so a caller takes what it needs of it (a page, an
    /// entry, its tags) rather than a copy of it all.
    pub async fn read_opt_out_list<R: Send + 'static>(
        &self,
        scope: &Scope,
        name_or_arn: &str,
        read: impl Fn(&OptOutList) -> R + Send + Sync + 'static,
    ) -> Result<R, ServiceError> {
        let id = Self::list_id(scope, name_or_arn)?;
        let (account, region) = (scope.account.clone(), scope.region.clone());
        let read = move |state: &OptOutListState| match state.live() {
            Some(l) if l.account == account && l.region == region => Some(read(l)),
            _ => None,
        };
        Self::inspect(&self.lists, &id, std::sync::Arc::new(read))
            .await
            .map_err(|e| by_name(e, name_or_arn))?
            .ok_or_else(|| not_found(KIND, name_or_arn))
    }

    /// Makes the caller's `Default` list exist (once per scope and process; the decider makes
    /// it idempotent across processes).
    pub async fn ensure_default_list(&self, meta: &CommandMeta) -> Result<(), ServiceError> {
        let scope = &meta.scope;
        if self.defaults.lock().unwrap_or_else(|p| p.into_inner()).contains(scope) {
            return Ok(());
        }
        let id = ResourceKind::opt_out_list_id(scope, DEFAULT_LIST);
        let list = OptOutList::new(
            DEFAULT_LIST,
            scope.arn(KIND, DEFAULT_LIST),
            &scope.account,
            &scope.region,
            meta.at_ms,
            vec![],
            None,
        );
        let action = OptOutListAction::EnsureDefault { list: Box::new(list) };
        self.execute(&self.lists, &id, Activation::Named, meta, action).await?;
        let mut known: std::sync::MutexGuard<'_, HashSet<Scope>> = self.defaults.lock().unwrap_or_else(|p| p.into_inner());
        known.insert(scope.clone());
        Ok(())
    }

    /// `CreateOptOutList`.
    pub async fn create_opt_out_list(&self, meta: &CommandMeta, spec: NewOptOutList) -> Result<OptOutList, ServiceError> {
        let scope = &meta.scope;
        self.ensure_default_list(meta).await?;
        let (_same_token, earlier) = self.client_token(scope, "CreateOptOutList", spec.client_token.as_deref()).await?;
        if let Some(id) = earlier {
            return self.earlier_list(scope, &spec, &id).await;
        }
        let id = Self::list_id(scope, &spec.name)?;
        let quota = self.quotas.opt_out_lists_per_account;
        let count = live_count_key(scope, KIND);
        let held = stored_counter(&count, self.store.index_get(&count).await?.as_deref())?.max(0) as u64;
        let list = OptOutList::new(
            &spec.name,
            scope.arn(KIND, &spec.name),
            &scope.account,
            &scope.region,
            meta.at_ms,
            spec.tags.clone(),
            spec.client_token.clone(),
        );
        let action = OptOutListAction::Create {
            list: Box::new(list),
            lists_held: held,
            quota,
        };
        let limit = super::quota::quota_limit(scope, KIND, quota);
        let created = self
            .execute_within(&self.lists, &id, Activation::Named, meta, action, &[limit])
            .await;
        match created.map_err(|e| super::quota::over_quota(e, scope, KIND, quota)) {
            Ok(state) => state
                .live()
                .cloned()
                .ok_or_else(|| ServiceError::Invariant(format!("created opt-out list {id} has no state"))),
            Err(e) if lost_token_race(&e) => {
                let token = spec.client_token.as_deref().unwrap_or_default();
                let earlier = self
                    .token_race_winner(scope, "CreateOptOutList", ResourceKind::OptOutList, token)
                    .await?;
                self.earlier_list(scope, &spec, &earlier).await
            }
            Err(e) => Err(e),
        }
    }

    /// The list an earlier request with the same client token created, if this request asks for
    /// the same list.
    async fn earlier_list(&self, scope: &Scope, spec: &NewOptOutList, earlier: &str) -> Result<OptOutList, ServiceError> {
        self.check_token_reuse::<OptOutListState>(earlier, |action| match action {
            OptOutListAction::Create { list, .. } => Some((
                list.client_token == spec.client_token,
                list.opt_out_list_name == spec.name && same_tags(&list.tags, &spec.tags),
            )),
            _ => None,
        })
        .await?;
        let state: OptOutListState = Self::state(&self.lists, earlier).await?;
        state
            .live()
            .filter(|l| l.account == scope.account && l.region == scope.region)
            .cloned()
            .ok_or_else(|| not_found(KIND, &spec.name))
    }

    /// `DeleteOptOutList`: the list as it was.
    pub async fn delete_opt_out_list(&self, meta: &CommandMeta, name_or_arn: &str) -> Result<OptOutList, ServiceError> {
        let scope = &meta.scope;
        self.ensure_default_list(meta).await?;
        let id = Self::list_id(scope, name_or_arn)?;
        // The decider refuses a list that is gone (recorded on its stream), so no read first.
        let name = KIND.name_in(scope, name_or_arn).unwrap_or(name_or_arn);
        let users = opt_out_list_users_key(scope, name);
        let in_use = stored_counter(&users, self.store.index_get(&users).await?.as_deref())? > 0;
        let unused = CounterLimit::at_most(users, 0);
        let deleted = self
            .execute_within(
                &self.lists,
                &id,
                Activation::Existing,
                meta,
                OptOutListAction::Delete { in_use },
                &[unused],
            )
            .await;
        match deleted {
            // The list as it was: its name, ARN, creation and tags stay in the state.
            Ok(state) => state
                .0
                .ok_or_else(|| ServiceError::Invariant(format!("deleted opt-out list {id} has no state"))),
            // A number or pool took the list up between the look and the append: the refusal
            // the decider gives a list in use, recorded.
            Err(ServiceError::Execute {
                source: ExecuteError::Append(AppendError::LimitReached(_)),
                ..
            }) => {
                let refused = self
                    .execute(
                        &self.lists,
                        &id,
                        Activation::Existing,
                        meta,
                        OptOutListAction::Delete { in_use: true },
                    )
                    .await;
                match refused {
                    Ok(_) => Err(ServiceError::Invariant(format!("opt-out list {id} was deleted while in use"))),
                    Err(e) => Err(by_name(e, name_or_arn)),
                }
            }
            Err(e) => Err(by_name(e, name_or_arn)),
        }
    }

    /// `PutOptedOutNumber`: the list and the number's entry.
    pub async fn put_opted_out_number(
        &self,
        meta: &CommandMeta,
        name_or_arn: &str,
        number: &str,
    ) -> Result<(OptOutList, OptedOut), ServiceError> {
        // "If the destination phone number isn't valid ... an error is returned."
        if !crate::numbering::is_valid_number(number) {
            return Err(ServiceError::Rejected(Rejection::validation(
                ValidationReason::InvalidParameter,
                "OptedOutNumber",
                format!("{number} is not a valid phone number"),
            )));
        }
        self.change_opted_out(meta, name_or_arn, number, |n| OptOutListAction::PutOptedOutNumber {
            number: n.to_string(),
            end_user_opted_out: false,
        })
        .await
    }

    /// `DeleteOptedOutNumber`: the list and the entry that was removed.
    pub async fn delete_opted_out_number(
        &self,
        meta: &CommandMeta,
        name_or_arn: &str,
        number: &str,
    ) -> Result<(OptOutList, OptedOut), ServiceError> {
        let wanted = number.to_string();
        let entry = self
            .read_opt_out_list(&meta.scope, name_or_arn, move |l| l.opted_out.get(&wanted).cloned())
            .await?;
        let (list, _) = self
            .change_opted_out(meta, name_or_arn, number, |n| OptOutListAction::DeleteOptedOutNumber {
                number: n.to_string(),
            })
            .await?;
        // The decider refused a number that was not there; one removed meanwhile by another
        // request is answered with what this request saw.
        let entry = entry.unwrap_or(OptedOut {
            opted_out_timestamp_ms: meta.at_ms,
            end_user_opted_out: false,
        });
        Ok((
            list,
            OptedOut {
                opted_out_timestamp_ms: meta.at_ms,
                ..entry
            },
        ))
    }

    pub(super) async fn change_opted_out(
        &self,
        meta: &CommandMeta,
        name_or_arn: &str,
        number: &str,
        action: impl FnOnce(&str) -> OptOutListAction,
    ) -> Result<(OptOutList, OptedOut), ServiceError> {
        self.ensure_default_list(meta).await?;
        let id = Self::list_id(&meta.scope, name_or_arn)?;
        let state = self
            .execute(&self.lists, &id, Activation::Existing, meta, action(number))
            .await
            .map_err(|e| by_name(e, name_or_arn))?;
        let list = state.live().cloned().ok_or_else(|| not_found(KIND, name_or_arn))?;
        let entry = list.opted_out.get(number).cloned().unwrap_or(OptedOut {
            opted_out_timestamp_ms: meta.at_ms,
            end_user_opted_out: false,
        });
        Ok((list, entry))
    }

    /// Runs an update of a number or pool that names the opt-out list `list` (not `Default`),
    /// so that a list found gone is that resource's refusal, recorded on its stream:
    /// `update(list_exists, limits)` with whether the list was found and the bound that keeps
    /// that true when the append commits; if the log finds the list gone by then, once more,
    /// as not found.
    pub(super) async fn update_naming_list<T, Fut>(
        &self,
        meta: &CommandMeta,
        list: &str,
        update: impl Fn(bool, Vec<CounterLimit>) -> Fut,
    ) -> Result<T, ServiceError>
    where
        Fut: std::future::Future<Output = Result<T, ServiceError>>,
    {
        let limit = match self.list_to_name(meta, list).await {
            Ok(limit) => limit,
            Err(ServiceError::Rejected(Rejection::NotFound { .. })) => None,
            Err(e) => return Err(e),
        };
        let list_exists = limit.is_some();
        match update(list_exists, limit.into_iter().collect()).await {
            Err(e) if is_list_gone(&e) => update(false, vec![]).await,
            other => other,
        }
    }

    /// The counter limit under which a number or pool may name the list `name`: none for the
    /// `Default` list (always there), otherwise that the list exists when the append commits.
    pub(super) async fn list_to_name(&self, meta: &CommandMeta, name: &str) -> Result<Option<CounterLimit>, ServiceError> {
        if name == DEFAULT_LIST {
            return Ok(None);
        }
        // One index read (the list's alive counter), not the list's state, which grows with its
        // opted-out numbers; the bound makes the answer hold when the append commits.
        let alive = opt_out_list_alive_key(&meta.scope, name);
        if stored_counter(&alive, self.store.index_get(&alive).await?.as_deref())? < 1 {
            return Err(not_found(KIND, name));
        }
        Ok(Some(CounterLimit::at_least(alive, 1)))
    }
}

/// A list that is not found is reported by the name (or ARN) its caller gave, not its stream id.
fn by_name(e: ServiceError, name_or_arn: &str) -> ServiceError {
    match e {
        ServiceError::Rejected(Rejection::NotFound {
            resource_type: crate::domain::types::ResourceType::OptOutList,
            ..
        }) => not_found(KIND, name_or_arn),
        other => other,
    }
}

/// Whether the log refused an append because the list it names was gone.
fn is_list_gone(e: &ServiceError) -> bool {
    matches!(e, ServiceError::Execute {
        source: ExecuteError::Append(AppendError::LimitReached(key)),
        ..
    } if key.starts_with("l/"))
}

/// A creation or change refused because the list it names was deleted meanwhile.
pub(super) fn list_gone(e: ServiceError, name: &str) -> ServiceError {
    match e {
        ServiceError::Execute {
            source: ExecuteError::Append(AppendError::LimitReached(key)),
            ..
        } if key.starts_with("l/") => not_found(KIND, name),
        other => other,
    }
}
