//! Routing to an owning node, for several nodes on one log: each number (or pool) has one owner
//! among the configured peers (rendezvous hashing of its id), and a node that receives a command
//! for a resource another node owns forwards the request there, so the commands for one resource
//! meet in one actor's mailbox instead of racing across nodes for the log (`route = "always"`,
//! the default). With `route = "contended"` only commands on a resource this node has recently
//! lost a race for are forwarded: a quiet resource is decided where the request arrives, without
//! the extra hop, and a contended one moves to its owner after the first lost race. Creations go
//! to the owner of the caller's account either way, so that one node's reservations count them
//! all (quotas).
//! The log's correctness never depends on it: the log's check decides every race, a forwarded
//! request is never forwarded again, and an owner that cannot be reached (down, or not yet up)
//! is skipped and the command is decided here (then, and only then, concurrent creations on
//! different nodes can exceed a quota).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::{ResourceKind, Scope};

/// The header a forwarded request carries (naming the node that forwarded it).
pub const FORWARDED: &str = "x-phone-ledger-forwarded";
/// The header every answer carries: the node that decided the command.
pub const DECIDED_BY: &str = "x-phone-ledger-node";
/// The response header in which the node that decided a request says how far into the shared
/// log its acknowledged appends reach: the node that relayed the answer makes its own reads wait
/// for that much (read-your-writes for a client that keeps talking to it).
pub const LOG_THROUGH: &str = "x-phone-ledger-log-through";

/// `[cluster]`: the nodes of one deployment, as clients reach them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// The AWS JSON URL of every node (this one included); empty: no routing.
    pub peers: Vec<String>,
    /// This node's own URL among `peers`.
    pub self_url: String,
    /// Which commands on an existing resource go to its owner.
    pub route: Route,
}

/// Which commands on an existing resource are forwarded to its owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// All of them (the default: measured the better of the two under conflicting load, see
    /// the README).
    #[default]
    Always,
    /// Those on a resource this node has recently lost a race for.
    Contended,
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.peers.is_empty() {
            return Ok(());
        }
        if !self.peers.iter().any(|p| p == &self.self_url) {
            return Err("cluster.self_url must be one of cluster.peers".into());
        }
        if self.peers.iter().any(|p| !(p.starts_with("http://") || p.starts_with("https://"))) {
            return Err("cluster.peers must be http:// or https:// URLs".into());
        }
        Ok(())
    }
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The owner could not be reached: nothing was sent, the command can be decided here.
    #[error("the owning node {owner} cannot be reached")]
    Unreachable {
        owner: String,
        #[source]
        source: reqwest::Error,
    },
    /// The request was sent but no answer came: whether it was carried out is unknown.
    #[error("the owning node {owner} did not answer")]
    NoAnswer {
        owner: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Decides the owner of a resource and forwards requests to it.
pub struct Router {
    peers: Vec<String>,
    self_url: String,
    route: Route,
    client: reqwest::Client,
}

/// How long a forwarded request may take: longer than the longest a command may (its stale
/// retries stop after 30 s), since an answer that does not come leaves the outcome unknown.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

impl Router {
    /// A router for `config`, or `None` when no peers are configured.
    pub fn new(config: &ClusterConfig) -> Option<Router> {
        if config.peers.len() < 2 {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(256)
            .build()
            .ok()?;
        Some(Router {
            peers: config.peers.iter().map(|p| p.trim_end_matches('/').to_string()).collect(),
            self_url: config.self_url.trim_end_matches('/').to_string(),
            route: config.route,
            client,
        })
    }

    /// This node's URL.
    pub fn node(&self) -> &str {
        &self.self_url
    }

    /// The peer that owns `id`: the highest SHA-256 of (peer, id), so every node agrees and a
    /// peer's departure moves only its own resources.
    pub fn owner_of(&self, id: &str) -> &str {
        self.peers
            .iter()
            .max_by_key(|peer| -> [u8; 32] {
                Sha256::new()
                    .chain_update(peer.as_bytes())
                    .chain_update([0])
                    .chain_update(id)
                    .finalize()
                    .into()
            })
            .map_or(self.self_url.as_str(), String::as_str)
    }

    /// The owner another node is for this request, if it should be forwarded (never when it
    /// was forwarded already): a creation (a number, a pool) to the owner of the caller's account
    /// and region, whose in-flight reservations then see every creation of the account, so its
    /// quotas hold across nodes; a command on an existing resource to the owner of the stream it
    /// writes ([`streams_written`]; with `route = "contended"`, only if `contended` says this node
    /// recently lost a race for it; an association names two, the member first). Reads are
    /// served here.
    pub fn forward_to<'a>(
        &'a self,
        req: &HttpRequest,
        operation: &str,
        input: &Value,
        scope: &Scope,
        contended: impl Fn(&str) -> bool,
    ) -> Option<&'a str> {
        if req.headers().contains_key(FORWARDED) {
            return None;
        }
        let key = match operation {
            "RequestPhoneNumber" | "CreatePool" => format!("quota/{}/{}", scope.account, scope.region),
            _ => {
                let mut streams = streams_written(operation, input, scope).into_iter();
                match self.route {
                    Route::Always => streams.next(),
                    Route::Contended => streams.find(|id| contended(id)),
                }?
            }
        };
        let owner = self.owner_of(&key);
        (owner != self.self_url).then_some(owner)
    }

    /// Sends the request to `owner` as it came (headers, the `Host` it was sent to included, and
    /// body) and relays the answer. So the owner checks the client's own signature: a node
    /// vouches for nothing.
    /// Also returns how far into the log the owner's acknowledged appends reached ([`LOG_THROUGH`]).
    pub async fn forward(&self, owner: &str, req: &HttpRequest, body: &[u8]) -> Result<(HttpResponse, Option<u64>), ForwardError> {
        let mut outgoing = self.client.post(format!("{owner}/")).body(body.to_vec());
        for (name, value) in req.headers() {
            if !matches!(name.as_str(), "content-length" | "connection" | "transfer-encoding") {
                outgoing = outgoing.header(name.as_str(), value.as_bytes());
            }
        }
        outgoing = outgoing.header(FORWARDED, self.self_url.as_str());
        let answer = outgoing.send().await.map_err(|source| {
            if source.is_connect() {
                ForwardError::Unreachable {
                    owner: owner.to_string(),
                    source,
                }
            } else {
                ForwardError::NoAnswer {
                    owner: owner.to_string(),
                    source,
                }
            }
        })?;
        let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let through = answer
            .headers()
            .get(LOG_THROUGH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut relayed = HttpResponse::build(status);
        for (name, value) in answer.headers() {
            if matches!(name.as_str(), "content-type" | "x-amzn-requestid" | "x-amzn-errortype" | DECIDED_BY) {
                relayed.insert_header((name.as_str(), value.as_bytes()));
            }
        }
        let body = answer.bytes().await.map_err(|source| ForwardError::NoAnswer {
            owner: owner.to_string(),
            source,
        })?;
        Ok((relayed.body(body), through))
    }
}

/// The streams a command on existing resources writes, the one it writes first (or alone) first,
/// as far as the request alone names them: the key of its owner. A number or pool named by id or
/// ARN, a sender id by ARN or by its string and country (the destination's, for a send), an
/// opt-out list by name or ARN. An origination identity named by its E.164 number needs a look
/// at the index, so such a command is decided where it arrives.
fn streams_written(operation: &str, input: &Value, scope: &Scope) -> Vec<String> {
    let text = |member: &str| input.get(member).and_then(Value::as_str);
    let iso = text("IsoCountryCode");
    let list = || text("OptOutListName").and_then(|name| ResourceKind::OptOutList.resolve(scope, name));
    let pool = || text("PoolId").and_then(|id| ResourceKind::Pool.resolve(scope, id));
    let identity =
        |iso: &dyn Fn() -> Option<String>| text("OriginationIdentity").and_then(|identity| origination_stream(scope, identity, iso));
    let given_iso = || iso.map(String::from);
    let streams = match operation {
        "ReleasePhoneNumber" | "UpdatePhoneNumber" => {
            vec![text("PhoneNumberId").and_then(|id| ResourceKind::PhoneNumber.resolve(scope, id))]
        }
        "AssociateOriginationIdentity" | "DisassociateOriginationIdentity" => vec![identity(&given_iso), pool()],
        "DeletePool" | "UpdatePool" => vec![pool()],
        "RequestSenderId" | "ReleaseSenderId" | "UpdateSenderId" => {
            vec![text("SenderId")
                .and_then(|id| ResourceKind::resolve_sender_id(scope, id, iso))
                .map(|(id, _, _)| id)]
        }
        "CreateOptOutList" | "DeleteOptOutList" | "PutOptedOutNumber" | "DeleteOptedOutNumber" => vec![list()],
        "SendTextMessage" | "SendMediaMessage" | "SendVoiceMessage" => {
            // A sender id by its string is the one leased in the destination's country (looked
            // up only then: parsing a number is the dearest step of routing a send).
            let country = || text("DestinationPhoneNumber").and_then(crate::numbering::country_of);
            vec![identity(&country)]
        }
        "PutKeyword" | "DeleteKeyword" => vec![identity(&|| None)],
        "TagResource" | "UntagResource" => {
            let arn = text("ResourceArn").unwrap_or_default();
            vec![ResourceKind::of_arn(arn).and_then(|kind| kind.resolve(scope, arn))]
        }
        _ => Vec::new(),
    };
    streams.into_iter().flatten().collect()
}

/// The stream of an origination identity named by id or ARN (a number, a pool or a sender id),
/// or by a sender id's string (`iso`: its country, asked for only then).
fn origination_stream(scope: &Scope, identity: &str, iso: &dyn Fn() -> Option<String>) -> Option<String> {
    match ResourceKind::of_origination_identity(identity) {
        // An ARN names its own country.
        ResourceKind::SenderId if !identity.starts_with("arn:") => {
            ResourceKind::resolve_sender_id(scope, identity, iso().as_deref()).map(|(id, _, _)| id)
        }
        // An E.164 number resolves to nothing here.
        kind => kind.resolve(scope, identity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(self_url: &str) -> Router {
        Router::new(&ClusterConfig {
            peers: vec!["http://a:1".into(), "http://b:2".into(), "http://c:3".into()],
            self_url: self_url.into(),
            route: Route::Contended,
        })
        .expect("router")
    }

    #[test]
    fn every_node_agrees_on_the_owner_and_the_owners_are_spread() {
        let (a, b) = (router("http://a:1"), router("http://b:2"));
        let mut counts = std::collections::HashMap::new();
        for i in 0..3000 {
            let id = format!("phone-{i:032x}");
            assert_eq!(a.owner_of(&id), b.owner_of(&id));
            *counts.entry(a.owner_of(&id).to_string()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|n| (800..1200).contains(n)), "{counts:?}");
    }

    #[test]
    fn what_is_forwarded_depends_on_the_route_and_on_contention() {
        let request = actix_web::test::TestRequest::default().to_http_request();
        let scope = Scope {
            account: "111122223333".into(),
            region: "us-east-1".into(),
        };
        let mut a = router("http://a:1");
        let id = (0..100)
            .map(|i| format!("phone-{i:032x}"))
            .find(|id| a.owner_of(id) != "http://a:1")
            .expect("an id another node owns");
        let release = serde_json::json!({ "PhoneNumberId": id });
        let quiet = |_: &str| false;
        let hot = |candidate: &str| candidate == id;
        // Quiet: decided here; contended: sent to the owner.
        assert_eq!(a.forward_to(&request, "ReleasePhoneNumber", &release, &scope, quiet), None);
        assert_eq!(
            a.forward_to(&request, "ReleasePhoneNumber", &release, &scope, hot),
            Some(a.owner_of(&id))
        );
        // An association goes to the owner of whichever of its resources is contended.
        let pool = (0..100)
            .map(|i| format!("pool-{i:032x}"))
            .find(|p| a.owner_of(p) != "http://a:1" && a.owner_of(p) != a.owner_of(&id))
            .expect("a pool a third node owns");
        let associate = serde_json::json!({ "OriginationIdentity": id, "PoolId": pool });
        let pool_hot = |candidate: &str| candidate == pool;
        assert_eq!(
            a.forward_to(&request, "AssociateOriginationIdentity", &associate, &scope, pool_hot),
            Some(a.owner_of(&pool))
        );
        // Reads never move; creations always go to the account's owner.
        assert_eq!(a.forward_to(&request, "DescribePhoneNumbers", &release, &scope, hot), None);
        let creation_owner = a.owner_of("quota/111122223333/us-east-1").to_string();
        let expected = (creation_owner != "http://a:1").then_some(creation_owner.as_str());
        assert_eq!(
            a.forward_to(&request, "RequestPhoneNumber", &serde_json::json!({}), &scope, quiet),
            expected
        );
        // `always`: every command on a resource goes to its owner.
        a.route = Route::Always;
        assert_eq!(
            a.forward_to(&request, "ReleasePhoneNumber", &release, &scope, quiet),
            Some(a.owner_of(&id))
        );
    }

    /// Every command on one aggregate has one key, however it names it, so they meet at one
    /// owner: a send from a number and a release of it, a sender id by string and country (a
    /// send: the destination's) and by ARN, an opt-out list by name and by ARN.
    #[test]
    fn commands_on_one_stream_share_its_owner_key() {
        let scope = Scope::new("111122223333", "us-east-1");
        let streams = |operation: &str, input: Value| streams_written(operation, &input, &scope);
        let number = ResourceKind::PhoneNumber.new_id();
        let pool = ResourceKind::Pool.new_id();
        let one = |id: &str| vec![id.to_string()];
        let release = streams("ReleasePhoneNumber", serde_json::json!({ "PhoneNumberId": number }));
        assert_eq!(release, one(&number));
        let by_arn = serde_json::json!({ "PhoneNumberId": scope.arn(ResourceKind::PhoneNumber, &number) });
        assert_eq!(streams("UpdatePhoneNumber", by_arn), one(&number));
        let send = serde_json::json!({ "OriginationIdentity": number, "DestinationPhoneNumber": "+12065550100" });
        assert_eq!(streams("SendTextMessage", send), one(&number));
        let associate = serde_json::json!({ "OriginationIdentity": number, "PoolId": pool });
        assert_eq!(
            streams("AssociateOriginationIdentity", associate),
            vec![number.clone(), pool.clone()]
        );

        let sender = ResourceKind::sender_id_id(&scope, "Brand", "GB");
        let release = serde_json::json!({ "SenderId": "Brand", "IsoCountryCode": "GB" });
        assert_eq!(streams("ReleaseSenderId", release), one(&sender));
        let by_arn = serde_json::json!({ "SenderId": scope.arn(ResourceKind::SenderId, "Brand/GB") });
        assert_eq!(streams("UpdateSenderId", by_arn), one(&sender));
        let send = serde_json::json!({ "OriginationIdentity": "Brand", "DestinationPhoneNumber": "+447400123456" });
        assert_eq!(streams("SendTextMessage", send), one(&sender));
        let join = serde_json::json!({ "OriginationIdentity": "Brand", "IsoCountryCode": "GB", "PoolId": pool });
        assert_eq!(streams("DisassociateOriginationIdentity", join), vec![sender.clone(), pool.clone()]);

        let list = ResourceKind::opt_out_list_id(&scope, "Quiet");
        let put = serde_json::json!({ "OptOutListName": "Quiet", "OptedOutNumber": "+12065550100" });
        assert_eq!(streams("PutOptedOutNumber", put), one(&list));
        let by_arn = serde_json::json!({ "OptOutListName": scope.arn(ResourceKind::OptOutList, "Quiet") });
        assert_eq!(streams("DeleteOptOutList", by_arn), one(&list));
        let tag = serde_json::json!({ "ResourceArn": scope.arn(ResourceKind::OptOutList, "Quiet"), "Tags": [] });
        assert_eq!(streams("TagResource", tag), one(&list));

        // Decided where they arrive: a send naming its number by E.164 (needs the index), another
        // account's ARN, reads.
        let by_e164 = serde_json::json!({ "OriginationIdentity": "+12065550100", "DestinationPhoneNumber": "+12065550101" });
        assert!(streams("SendTextMessage", by_e164).is_empty());
        let foreign =
            serde_json::json!({ "PhoneNumberId": Scope::new("999999999999", "us-east-1").arn(ResourceKind::PhoneNumber, &number) });
        assert!(streams("ReleasePhoneNumber", foreign).is_empty());
        assert!(streams("DescribePhoneNumbers", serde_json::json!({ "PhoneNumberIds": [number] })).is_empty());
    }

    #[test]
    fn a_missing_self_url_is_refused() {
        let config = ClusterConfig {
            peers: vec!["http://a:1".into(), "http://b:2".into()],
            self_url: "http://c:3".into(),
            ..Default::default()
        };
        assert!(config.validate().is_err());
        assert!(ClusterConfig::default().validate().is_ok());
    }
}
