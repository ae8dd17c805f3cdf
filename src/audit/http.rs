//! `GET /audit/...`: the audit API, read-only, JSON in the AWS API's PascalCase style.
//!
//! Unknown ids are 404 with a JSON error naming the id; bad or unknown query parameters are 400
//! naming the parameter; errors have the AWS JSON shape of the rest of the service
//! ([`AwsJsonError`]). Reads go through the store, which does its disk work off the HTTP workers;
//! whole-log questions (verify, recheck, export), which also spend CPU on every event, run
//! entirely on the blocking pool.
//!
//! Who may see what ([`crate::auth`]): in permissive mode, everyone everything. In strict SigV4
//! mode every request is signed; an account sees the streams it created and its own entries of
//! the feed (history, state, replay, feed, follow, export), and a stream it did not create is
//! answered as an unknown one would be; the digest and the whole-log checks (verify, recheck)
//! are for admin credentials, which also see every account.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::{stream, StreamExt};
use serde::Serialize;

use super::query::{self, FeedFilter, PointInTime};
use super::recheck::{recheck, Deciders};
use super::replay_resume::ReplayResumes;
use super::verify::verify_store;
use super::{digest, AuditError};
use crate::auth::Caller;
use crate::aws_error::AwsJsonError;
use crate::domain::ResourceKind;
use crate::store::Store;

/// What the audit handlers share.
pub struct AuditState {
    pub store: Store,
    /// Becomes `true` when the server starts stopping (followers of the feed end then).
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Places for followers of the live feed: each holds one while connected.
    pub followers: Arc<tokio::sync::Semaphore>,
    /// How many places there are (`max_followers`).
    pub max_followers: usize,
    /// Followers connected per account (the SigV4 credential's), at most `max_followers_per_account`
    /// each, so one caller cannot take every place.
    pub followers_by_account: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    pub max_followers_per_account: usize,
    /// Who is calling, and what they may see.
    pub auth: Arc<crate::auth::Authenticator>,
    /// The feed's shared tail, for followers (`None` when the store takes no appends).
    pub tail: Option<super::tail::SharedTail>,
    /// Where the pages of replays left off, so that the next page folds on from there.
    pub replay_resumes: Arc<ReplayResumes>,
    /// The API's admission: an audit question takes a place of the work in flight and counts
    /// against its account's request rate, as an API call does (its reads share the store).
    pub admission: Arc<crate::api::admission::Admission>,
}

/// An account's place among the followers, given back when dropped.
pub struct AccountPlace {
    counts: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    account: String,
}

impl AccountPlace {
    /// A place for `account`, if it has fewer than `max` followers connected.
    fn take(counts: &Arc<std::sync::Mutex<HashMap<String, usize>>>, account: &str, max: usize) -> Option<AccountPlace> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(account.to_string()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AccountPlace {
            counts: counts.clone(),
            account: account.to_string(),
        })
    }
}

impl Drop for AccountPlace {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.account);
            }
        }
    }
}

/// Mounts the audit routes (under `/audit`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::get().to(feed))
        .route("/messages", web::get().to(sent_messages))
        .route("/digest", web::get().to(get_digest))
        .route("/verify", web::get().to(get_verify))
        .route("/recheck", web::get().to(get_recheck))
        .route("/export", web::get().to(get_export))
        // An id may be an ARN, whose `/`s a person pastes as they are (or percent-encoded).
        .route("/{kind}/{id:.+}/events", web::get().to(stream_events))
        .route("/{kind}/{id:.+}/state", web::get().to(state))
        .route("/{kind}/{id:.+}/replay", web::get().to(replay));
}

fn error_response(e: &AuditError) -> HttpResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let error = match e {
        AuditError::NotFound(id) => AwsJsonError::no_such_resource(e.to_string(), id),
        AuditError::BadParameter { name, .. } => AwsJsonError::bad_parameter(name, e.to_string()),
        AuditError::Denied(_) => AwsJsonError::access_denied(e.to_string()),
        AuditError::Input(_) => AwsJsonError::bad_request(e.to_string()),
        AuditError::Store(_) | AuditError::Task(_) => AwsJsonError::internal(e, &request_id),
    };
    error.to_response(&request_id)
}

fn respond<T: Serialize>(result: Result<T, AuditError>) -> HttpResponse {
    match result.and_then(|v| serde_json::to_string(&v).map_err(|e| AuditError::Input(e.to_string()))) {
        Ok(body) => HttpResponse::Ok().content_type("application/json").body(body),
        Err(e) => error_response(&e),
    }
}

/// Query parameters, checked against the names an endpoint knows.
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Self, AuditError> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
            .map_err(|e| AuditError::BadParameter {
                name: "(query)".into(),
                message: e.to_string(),
            })?
            .into_inner();
        let mut map = HashMap::new();
        for (k, v) in pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(AuditError::BadParameter {
                    name: k,
                    message: format!("unknown parameter; expected one of {}", allowed.join(", ")),
                });
            }
            map.insert(k, v);
        }
        Ok(Params(map))
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    pub fn number(&self, name: &str) -> Result<Option<u64>, AuditError> {
        self.0
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| AuditError::BadParameter {
                    name: name.into(),
                    message: format!("{v:?} is not a non-negative integer"),
                })
            })
            .transpose()
    }

    /// Epoch seconds (fractions allowed) as milliseconds.
    pub fn epoch_ms(&self, name: &str) -> Result<Option<u64>, AuditError> {
        self.0.get(name).map(|v| query::epoch_ms(name, v)).transpose()
    }

    pub fn flag(&self, name: &str) -> Result<bool, AuditError> {
        match self.0.get(name).map(String::as_str) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(AuditError::BadParameter {
                name: name.into(),
                message: format!("{v:?} is not true or false"),
            }),
        }
    }

    pub fn limit(&self) -> Result<usize, AuditError> {
        query::page_limit(self.number("Limit")?)
    }

    /// The feed filter these parameters describe.
    pub fn feed_filter(&self) -> Result<FeedFilter, AuditError> {
        Ok(FeedFilter {
            event_type: self.text("Type"),
            account: self.text("Account"),
            stream_id: self.text("StreamId"),
            from_ms: self.epoch_ms("From")?,
            to_ms: self.epoch_ms("To")?,
            origination: self.text("Origination"),
            destination: self.text("Destination"),
            after: self.number("After")?.unwrap_or(0),
            limit: self.limit()?,
        })
    }
}

const FEED_PARAMS: &[&str] = &[
    "Type",
    "Account",
    "StreamId",
    "From",
    "To",
    "Origination",
    "Destination",
    "After",
    "Limit",
    "Follow",
];

fn store(state: &web::Data<AuditState>) -> Store {
    state.store.clone()
}

/// The caller of an audit request, authenticated and admitted before its handler runs (the body,
/// which a GET does not have, is not signed); a request that is not is answered with the AWS
/// error. The admission's place is held as long as the handler, or the work it started, runs.
pub struct AuditCaller(Caller, Place);

/// A place of the work in flight (the API's admission), given back when the last holder drops it:
/// the handler, or the work it hands to the blocking pool, which goes on if the client leaves.
pub type Place = Arc<tokio::sync::OwnedSemaphorePermit>;

impl actix_web::FromRequest for AuditCaller {
    type Error = AwsJsonError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let caller = match req.app_data::<web::Data<AuditState>>() {
            Some(state) => state
                .auth
                .authenticate(req, &[])
                .map_err(|failure| AwsJsonError::unauthenticated(&failure))
                .and_then(|caller| {
                    let place = state.admission.admit(&caller.scope.account)?;
                    Ok(AuditCaller(caller, Arc::new(place)))
                }),
            None => Err(AwsJsonError::internal(
                &std::io::Error::other("the audit routes are mounted without their state"),
                "-",
            )),
        };
        std::future::ready(caller)
    }
}

/// Whole-log questions are for admins.
fn admin_only(caller: &Caller, what: &str) -> Result<(), AuditError> {
    if caller.admin {
        return Ok(());
    }
    Err(AuditError::Denied(format!(
        "account {} may read only its own audit trail; {what} needs an admin credential",
        caller.scope.account
    )))
}

/// The stream `id_or_arn` names, if the caller may see it: an admin any, an account the streams
/// it created (the account of the stream's first event). Another account's stream is answered
/// as an unknown one, so its existence is not given away.
async fn visible_stream(store: &Store, caller: &Caller, kind: &str, id_or_arn: &str) -> Result<String, AuditError> {
    let kind = kind_of(kind)?;
    // An opt-out list is named by its caller: a bare name is one of the caller's own lists.
    let named = (kind == ResourceKind::OptOutList && !id_or_arn.starts_with("arn:") && !kind.is_id(id_or_arn))
        .then(|| kind.resolve(&caller.scope, id_or_arn))
        .flatten();
    let stream = query::resolve_stream(&**store, kind, named.as_deref().unwrap_or(id_or_arn)).await?;
    if caller.admin {
        return Ok(stream);
    }
    let first = store.read_stream(&stream, 1, 1).await?;
    match first.first() {
        Some(e) if e.account == caller.scope.account => Ok(stream),
        _ => Err(AuditError::NotFound(id_or_arn.to_string())),
    }
}

/// The feed filter narrowed to what the caller may see: an account's own entries.
fn scoped_filter(mut filter: FeedFilter, caller: &Caller) -> Result<FeedFilter, AuditError> {
    if caller.admin {
        return Ok(filter);
    }
    match &filter.account {
        Some(other) if *other != caller.scope.account => Err(AuditError::Denied(format!(
            "account {} may read only its own audit trail, not account {other}'s",
            caller.scope.account
        ))),
        _ => {
            filter.account = Some(caller.scope.account.clone());
            Ok(filter)
        }
    }
}

/// An id or ARN from the path; an ARN's `/` may arrive percent-encoded.
fn path_id(raw: &str) -> String {
    raw.replace("%2F", "/").replace("%2f", "/")
}

fn kind_of(segment: &str) -> Result<ResourceKind, AuditError> {
    match segment {
        "phone-numbers" => Ok(ResourceKind::PhoneNumber),
        "pools" => Ok(ResourceKind::Pool),
        "opt-out-lists" => Ok(ResourceKind::OptOutList),
        "sender-ids" => Ok(ResourceKind::SenderId),
        other => Err(AuditError::NotFound(format!("/audit/{other}"))),
    }
}

async fn stream_events(
    req: HttpRequest,
    AuditCaller(caller, ..): AuditCaller,
    path: web::Path<(String, String)>,
    state: web::Data<AuditState>,
) -> HttpResponse {
    let (kind, id) = path.into_inner();
    let store = store(&state);
    respond(
        async {
            let params = Params::parse(req.query_string(), &["FromVersion", "Limit"])?;
            let stream = visible_stream(&store, &caller, &kind, &path_id(&id)).await?;
            query::stream_history(&*store, &stream, params.number("FromVersion")?.unwrap_or(1), params.limit()?).await
        }
        .await,
    )
}

async fn state(
    req: HttpRequest,
    AuditCaller(caller, place): AuditCaller,
    path: web::Path<(String, String)>,
    state: web::Data<AuditState>,
) -> HttpResponse {
    let (kind, id) = path.into_inner();
    let (store, query_string) = (store(&state), req.query_string().to_string());
    // Folds the stream up to the point asked for: off the HTTP workers, however long it is.
    respond(
        off_workers(async move {
            let _place = place;
            let params = Params::parse(&query_string, &["Version", "At"])?;
            let stream = visible_stream(&store, &caller, &kind, &path_id(&id)).await?;
            let point = match (params.number("Version")?, params.epoch_ms("At")?) {
                (Some(_), Some(_)) => {
                    return Err(AuditError::BadParameter {
                        name: "At".into(),
                        message: "give Version or At, not both".into(),
                    })
                }
                (Some(v), None) => PointInTime::Version(v),
                (None, Some(at)) => PointInTime::At(at),
                (None, None) => PointInTime::Latest,
            };
            query::state_at(&*store, &stream, point).await
        })
        .await,
    )
}

async fn replay(
    req: HttpRequest,
    AuditCaller(caller, place): AuditCaller,
    path: web::Path<(String, String)>,
    state: web::Data<AuditState>,
) -> HttpResponse {
    let (kind, id) = path.into_inner();
    let (store, query_string) = (store(&state), req.query_string().to_string());
    let resumes = state.replay_resumes.clone();
    // Folds the stream up to the page asked for: off the HTTP workers, however long it is.
    respond(
        off_workers(async move {
            let _place = place;
            let params = Params::parse(&query_string, &["FromVersion", "Limit"])?;
            let stream = visible_stream(&store, &caller, &kind, &path_id(&id)).await?;
            query::replay(
                &*store,
                &resumes,
                &stream,
                params.number("FromVersion")?.unwrap_or(1),
                params.limit()?,
            )
            .await
        })
        .await,
    )
}

async fn get_digest(req: HttpRequest, AuditCaller(caller, ..): AuditCaller, state: web::Data<AuditState>) -> HttpResponse {
    let store = store(&state);
    match Params::parse(req.query_string(), &[]).and_then(|p| admin_only(&caller, "the digest of the whole log").map(|()| p)) {
        Ok(_) => respond(digest(&*store).await),
        Err(e) => error_response(&e),
    }
}

/// Runs a whole-log question on the blocking pool: it reads every event and spends CPU on each,
/// which must not hold up the HTTP worker that took the request.
pub(crate) async fn off_workers<T: Send + 'static>(
    work: impl Future<Output = Result<T, AuditError>> + Send + 'static,
) -> Result<T, AuditError> {
    tokio::task::spawn_blocking(move || tokio::runtime::Handle::current().block_on(work))
        .await
        .unwrap_or_else(|e| Err(AuditError::Task(Box::new(e))))
}

async fn get_verify(req: HttpRequest, AuditCaller(caller, place): AuditCaller, state: web::Data<AuditState>) -> HttpResponse {
    let store = store(&state);
    if let Err(e) = Params::parse(req.query_string(), &[]).and_then(|_| admin_only(&caller, "verifying the whole log")) {
        return error_response(&e);
    }
    respond(
        off_workers(async move {
            let _place = place;
            verify_store(&*store).await
        })
        .await,
    )
}

async fn get_recheck(req: HttpRequest, AuditCaller(caller, place): AuditCaller, state: web::Data<AuditState>) -> HttpResponse {
    let store = store(&state);
    if let Err(e) = Params::parse(req.query_string(), &[]).and_then(|_| admin_only(&caller, "rechecking the whole log")) {
        return error_response(&e);
    }
    respond(
        off_workers(async move {
            let _place = place;
            recheck(&*store, &Deciders::today()).await
        })
        .await,
    )
}

/// Events per page of a streamed export: what the server holds of one export at a time.
const EXPORT_PAGE: usize = 1_000;

/// The log as JSON lines, streamed page by page (each page read off the workers), so an export
/// of any size takes the memory of one page. A failure after the first page cuts the body off
/// (the client sees an incomplete chunked response, never a short file that looks whole).
async fn get_export(req: HttpRequest, AuditCaller(caller, place): AuditCaller, state: web::Data<AuditState>) -> HttpResponse {
    let store = store(&state);
    // The feed's filters and `After` (an export continuing an earlier one); not `Limit`, as an
    // export is the whole of what matches.
    let parsed = Params::parse(req.query_string(), &FEED_PARAMS[..8]).and_then(|p| p.feed_filter());
    let mut filter = match parsed.and_then(|f| scoped_filter(f, &caller)) {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    filter.limit = EXPORT_PAGE;
    // The first page is read before answering, so a bad request or a failing store still gets
    // an error status.
    let first = {
        let (store, filter, place) = (store.clone(), filter.clone(), place.clone());
        off_workers(async move {
            let _place = place;
            query::feed(&*store, &filter).await
        })
        .await
    };
    let first = match first {
        Ok(page) => page,
        Err(e) => return error_response(&e),
    };
    // The place is held until the last page is sent (or the client leaves and no page is read).
    let pages = stream::unfold(Some((first, store, filter, place)), |state| async move {
        let (page, store, mut filter, place) = state?;
        let mut chunk = Vec::with_capacity(page.events.len() * 512);
        for e in &page.events {
            if serde_json::to_writer(&mut chunk, e).is_err() {
                return Some((Err(actix_web::error::ErrorInternalServerError("cannot encode an event")), None));
            }
            chunk.push(b'\n');
        }
        let next = match page.next_after {
            None => None,
            Some(after) => {
                filter.after = after;
                let (s, f, p) = (store.clone(), filter.clone(), place.clone());
                match off_workers(async move {
                    let _place = p;
                    query::feed(&*s, &f).await
                })
                .await
                {
                    Ok(next) => Some((next, store, filter, place)),
                    Err(e) => {
                        tracing::error!(error = %crate::error_chain(&e), "export cut off: cannot read the next page");
                        return Some((Err(actix_web::error::ErrorInternalServerError(e.to_string())), None));
                    }
                }
            }
        };
        Some((Ok::<_, actix_web::Error>(web::Bytes::from(chunk)), next))
    });
    HttpResponse::Ok().content_type("application/x-ndjson").streaming(pages)
}

/// The messages sent, filtered by origination, destination and time (the caller's own).
async fn sent_messages(req: HttpRequest, AuditCaller(caller, place): AuditCaller, state: web::Data<AuditState>) -> HttpResponse {
    let store = store(&state);
    let filter = Params::parse(req.query_string(), FEED_PARAMS).and_then(|p| scoped_filter(p.feed_filter()?, &caller));
    match filter {
        Ok(filter) => respond(
            off_workers(async move {
                let _place = place;
                query::messages(&*store, &filter).await
            })
            .await,
        ),
        Err(e) => error_response(&e),
    }
}

async fn feed(req: HttpRequest, AuditCaller(caller, place): AuditCaller, state: web::Data<AuditState>) -> HttpResponse {
    let store = store(&state);
    let parsed =
        Params::parse(req.query_string(), FEED_PARAMS).and_then(|p| Ok((scoped_filter(p.feed_filter()?, &caller)?, p.flag("Follow")?)));
    let (filter, follow) = match parsed {
        Ok(x) => x,
        Err(e) => return error_response(&e),
    };
    if !follow {
        let read = off_workers(async move {
            let _place = place;
            query::feed(&*store, &filter).await
        });
        return respond(read.await);
    }
    // Followers are bounded, per account and overall: each holds its places until it leaves.
    let account = caller.scope.account;
    let refuse = |why: String| AwsJsonError::throttling(why).to_response(&uuid::Uuid::new_v4().to_string());
    let Some(own) = AccountPlace::take(&state.followers_by_account, &account, state.max_followers_per_account) else {
        return refuse(format!(
            "account {account} has {} followers of the feed connected already; retry later",
            state.max_followers_per_account
        ));
    };
    let Ok(place) = state.followers.clone().try_acquire_owned() else {
        return refuse(format!(
            "{} followers of the feed are connected already; retry later",
            state.max_followers
        ));
    };
    follow_feed(&state, filter, (place, own))
}

/// Server-sent events: every matching event as it is committed (`id:` is its position), from
/// the shared tail once caught up.
fn follow_feed(state: &AuditState, filter: FeedFilter, place: (tokio::sync::OwnedSemaphorePermit, AccountPlace)) -> HttpResponse {
    let Some(tail) = &state.tail else {
        return error_response(&AuditError::Input("this store does not accept writes; nothing to follow".into()));
    };
    let events = tail
        .follow(state.store.clone(), filter, state.stopping.clone(), place)
        .map(|chunk| chunk.map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string())));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(events)
}
