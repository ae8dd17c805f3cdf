//! An end user's replies, through the simulation endpoint (`POST /simulate/inbound-message`),
//! against the real server: HELP, STOP and the account's own keywords, their automatic responses,
//! STOP putting the end user on the opt-out list in force (the pool's for a number in a pool) as
//! opted out by the end user, an opt-in keyword taking them off, and a number that manages its
//! own opt-outs left to do so. Everything else through the AWS SDK for Rust.

mod common;

use aws_sdk_pinpointsmsvoicev2::types::{KeywordAction, MessageType};
use aws_sdk_pinpointsmsvoicev2::Client;
use common::{create_pool, request_with_number, TestServer, ACCOUNT, OTHER_ACCOUNT};
use serde_json::{json, Value};

/// An end user at `from` sends `body` to `to`, as `account`.
async fn reply(server: &TestServer, account: &str, from: &str, to: &str, body: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/simulate/inbound-message", server.url()))
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential={account}/20261128/us-east-1/sms-voice/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .json(&json!({"OriginationNumber": from, "DestinationPhoneNumber": to, "MessageBody": body}))
        .send()
        .await
        .expect("simulate");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

async fn opted_out(c: &Client, list: &str) -> Vec<(String, bool)> {
    c.describe_opted_out_numbers()
        .opt_out_list_name(list)
        .send()
        .await
        .expect("DescribeOptedOutNumbers")
        .opted_out_numbers()
        .iter()
        .map(|o| (o.opted_out_number().to_string(), o.end_user_opted_out()))
        .collect()
}

async fn send(c: &Client, from: &str, to: &str) -> Result<(), String> {
    c.send_text_message()
        .origination_identity(from)
        .destination_phone_number(to)
        .message_body("news")
        .send()
        .await
        .map(drop)
        .map_err(|e| format!("{:?}", e.into_service_error()))
}

/// HELP answers; STOP opts the end user out of the number's list (EndUserOptedOut), after which
/// nothing is sent to them; an opt-in keyword of the account's takes them off again; other text
/// is no keyword.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_help_and_the_accounts_keywords() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (id, e164) = request_with_number(&c, MessageType::Transactional).await;
    let user = "+12065550400";
    c.put_keyword()
        .origination_identity(&id)
        .keyword("JOIN")
        .keyword_message("Welcome back")
        .keyword_action(KeywordAction::OptIn)
        .send()
        .await
        .expect("PutKeyword");

    let (status, help) = reply(&server, ACCOUNT, user, &e164, "help").await;
    assert_eq!(status, 200, "{help}");
    assert_eq!(
        (help["Keyword"].as_str(), help["KeywordAction"].as_str()),
        (Some("HELP"), Some("AUTOMATIC_RESPONSE"))
    );
    assert!(help["ResponseMessage"].as_str().is_some_and(|m| m.contains("STOP")), "{help}");
    assert!(help.get("OptOutListName").is_none(), "{help}");

    let (_, plain) = reply(&server, ACCOUNT, user, &e164, "see you at 5").await;
    assert!(plain["MessageId"].is_string() && plain.get("Keyword").is_none(), "{plain}");

    send(&c, &id, user).await.expect("not opted out yet");
    let (_, stop) = reply(&server, ACCOUNT, user, &e164, " Stop ").await;
    assert_eq!(
        (stop["KeywordAction"].as_str(), stop["OptOutListName"].as_str()),
        (Some("OPT_OUT"), Some("Default"))
    );
    assert_eq!(opted_out(&c, "Default").await, [(user.to_string(), true)]);
    let refused = send(&c, &id, user).await.expect_err("opted out");
    assert!(refused.contains("DestinationPhoneNumberOptedOut"), "{refused}");

    let (_, join) = reply(&server, ACCOUNT, user, &e164, "join").await;
    assert_eq!(
        (join["KeywordAction"].as_str(), join["ResponseMessage"].as_str()),
        (Some("OPT_IN"), Some("Welcome back"))
    );
    assert!(opted_out(&c, "Default").await.is_empty());
    send(&c, &id, user).await.expect("opted in again");

    // Each message is on the number's stream, with the keyword it was.
    let events: Value = reqwest::get(format!("{}/audit/phone-numbers/{id}/events", server.url()))
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    let received: Vec<Option<&str>> = events["Events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["EventType"] == "MessageReceived")
        .map(|e| e["Payload"]["Keyword"]["Keyword"].as_str())
        .collect();
    assert_eq!(received, [Some("HELP"), None, Some("STOP"), Some("JOIN")]);
}

/// A number in a pool: the pool's keywords are its keywords too, and STOP opts the end user out
/// of the pool's list, the one in force for messages sent through the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_pool_the_pools_list_and_keywords_count() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (id, e164) = request_with_number(&c, MessageType::Transactional).await;
    let pool = create_pool(&c, &id).await;
    c.create_opt_out_list().opt_out_list_name("marketing").send().await.expect("list");
    c.update_pool()
        .pool_id(&pool)
        .opt_out_list_name("marketing")
        .send()
        .await
        .expect("UpdatePool");
    c.put_keyword()
        .origination_identity(&pool)
        .keyword("HOURS")
        .keyword_message("9 to 5")
        .send()
        .await
        .expect("pool keyword");
    let user = "+12065550401";
    let (_, hours) = reply(&server, ACCOUNT, user, &e164, "hours").await;
    assert_eq!(hours["ResponseMessage"], "9 to 5", "{hours}");
    let (_, stop) = reply(&server, ACCOUNT, user, &e164, "STOP").await;
    assert_eq!(stop["OptOutListName"], "marketing", "{stop}");
    assert_eq!(opted_out(&c, "marketing").await, [(user.to_string(), true)]);
    assert!(opted_out(&c, "Default").await.is_empty());
    let refused = send(&c, &pool, user).await.expect_err("opted out of the pool's list");
    assert!(refused.contains("DestinationPhoneNumberOptedOut"), "{refused}");
}

/// A number that manages its own opt-outs: STOP is delivered, not acted on. Unknown, foreign
/// and malformed numbers are refused with the AWS errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_managed_numbers_and_refusals() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (id, e164) = request_with_number(&c, MessageType::Transactional).await;
    c.update_phone_number()
        .phone_number_id(&id)
        .self_managed_opt_outs_enabled(true)
        .send()
        .await
        .expect("self-managed");
    let (_, stop) = reply(&server, ACCOUNT, "+12065550402", &e164, "STOP").await;
    assert!(stop.get("Keyword").is_none() && stop.get("OptOutListName").is_none(), "{stop}");
    assert!(opted_out(&c, "Default").await.is_empty());

    let (status, foreign) = reply(&server, OTHER_ACCOUNT, "+12065550402", &e164, "STOP").await;
    assert_eq!(
        (status, foreign["__type"].as_str()),
        (400, Some("ResourceNotFoundException")),
        "{foreign}"
    );
    let (status, unknown) = reply(&server, ACCOUNT, "+12065550402", "+12065559999", "STOP").await;
    assert_eq!(
        (status, unknown["__type"].as_str()),
        (400, Some("ResourceNotFoundException")),
        "{unknown}"
    );
    let (status, bad) = reply(&server, ACCOUNT, "12065550402", &e164, "STOP").await;
    assert_eq!((status, bad["__type"].as_str()), (400, Some("ValidationException")), "{bad}");
    let (status, empty) = reply(&server, ACCOUNT, "+12065550402", &e164, "").await;
    assert_eq!((status, empty["__type"].as_str()), (400, Some("ValidationException")), "{empty}");
}
