//! Sending messages through the official AWS SDK for Rust, against the real server: from a
//! number (by id, ARN or E.164 number) or a pool, every documented refusal recorded, read back by
//! origination, destination and time, and the two races that matter — a send against a release of
//! its number, and against the destination opting out.

mod common;

use aws_sdk_pinpointsmsvoicev2::error::ProvideErrorMetadata;
use aws_sdk_pinpointsmsvoicev2::operation::send_text_message::SendTextMessageError;
use aws_sdk_pinpointsmsvoicev2::types::{ConflictExceptionReason, MessageType, NumberCapability, RequestableNumberType, ResourceType};
use aws_sdk_pinpointsmsvoicev2::Client;
use common::{TestServer, ACCOUNT, OTHER_ACCOUNT};
use serde_json::Value;

async fn sms_number(c: &Client) -> (String, String, String) {
    let n = c
        .request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Transactional)
        .number_capabilities(NumberCapability::Sms)
        .number_type(RequestableNumberType::LongCode)
        .send()
        .await
        .expect("number");
    (
        n.phone_number_id().expect("id").to_string(),
        n.phone_number_arn().expect("arn").to_string(),
        n.phone_number().expect("e164").to_string(),
    )
}

/// The audit API's sent messages for a query (signed by nobody: the tests run permissive).
async fn sent(server: &TestServer, query: &str) -> Vec<Value> {
    let body: Value = reqwest::get(format!("{}/audit/messages?{query}", server.url()))
        .await
        .expect("messages")
        .json()
        .await
        .expect("json");
    body["Messages"].as_array().cloned().unwrap_or_else(|| panic!("{body}"))
}

async fn stream_events(server: &TestServer, id: &str) -> Vec<Value> {
    let body: Value = reqwest::get(format!("{}/audit/phone-numbers/{id}/events", server.url()))
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    body["Events"].as_array().cloned().unwrap_or_else(|| panic!("{body}"))
}

fn text_conflict(e: aws_sdk_pinpointsmsvoicev2::error::SdkError<SendTextMessageError>) -> (ConflictExceptionReason, Option<ResourceType>) {
    match e.into_service_error() {
        SendTextMessageError::ConflictException(c) => (c.reason().cloned().expect("Reason"), c.resource_type().cloned()),
        other => panic!("expected ConflictException, got {other:?}"),
    }
}

/// Sent from a number named every way, and from a pool; read back by origination, destination
/// and time; a dry run is checked and not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_sent_and_read_back() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (id, arn, e164) = sms_number(&c).await;
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut ids = Vec::new();
    for identity in [&id, &arn, &e164] {
        let out = c
            .send_text_message()
            .origination_identity(identity)
            .destination_phone_number("+12065550111")
            .message_body(format!("hello via {identity}"))
            .message_type(MessageType::Transactional)
            .context("campaign", "spring")
            .send()
            .await
            .expect("SendTextMessage");
        ids.push(out.message_id().expect("MessageId").to_string());
    }
    // With no origination identity, the service picks one of the caller's numbers.
    let picked = c
        .send_text_message()
        .destination_phone_number("+12065550222")
        .message_body("picked")
        .send()
        .await
        .expect("no origination");
    assert!(picked.message_id().is_some());
    // Through a pool.
    let pool = common::create_pool(&c, &id).await;
    c.send_text_message()
        .origination_identity(&pool)
        .destination_phone_number("+12065550111")
        .message_body("from the pool")
        .send()
        .await
        .expect("from a pool");
    // A dry run: "checked and validated, but isn't sent".
    c.send_text_message()
        .origination_identity(&id)
        .destination_phone_number("+12065550333")
        .message_body("dry")
        .dry_run(true)
        .send()
        .await
        .expect("dry run");

    let to_111 = sent(&server, "Destination=%2B12065550111").await;
    assert_eq!(to_111.len(), 4, "{to_111:?}");
    assert_eq!(
        to_111[..3]
            .iter()
            .map(|m| m["MessageId"].as_str().expect("id").to_string())
            .collect::<Vec<_>>(),
        ids
    );
    assert!(to_111.iter().all(|m| m["PhoneNumberId"] == id.as_str()));
    assert_eq!(to_111[0]["Context"]["campaign"], "spring");
    assert_eq!(to_111[3]["PoolId"], pool.as_str());
    assert_eq!(sent(&server, &format!("Origination={pool}")).await.len(), 1);
    assert_eq!(sent(&server, &format!("Origination={}", arn.replace('/', "%2F"))).await.len(), 5);
    assert!(
        sent(&server, "Destination=%2B12065550333").await.is_empty(),
        "a dry run is not sent"
    );
    assert_eq!(sent(&server, &format!("From={start}")).await.len(), 5);
    assert!(sent(&server, &format!("To={}", start.saturating_sub(3600))).await.is_empty());

    // The same through the CLI: JSON lines, and the table a person reads.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_phone-ledger"))
            .args(["audit", "--server", &server.url()])
            .args(args)
            .output()
            .expect("run phone-ledger audit");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let lines = cli(&["--json", "messages", "--destination", "+12065550111"]);
    assert_eq!(lines.lines().count(), 4, "{lines}");
    let first: Value = serde_json::from_str(lines.lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["MessageId"], ids[0].as_str());
    let table = cli(&["messages", "--origination", &pool]);
    assert!(
        table.contains("from the pool") && table.contains(&format!("(pool {pool})")),
        "{table}"
    );
}

/// The refusals, each recorded on the number's stream: a released number, a capability the
/// number lacks, another message type, an opted-out destination (until it is deleted from the
/// list, or the number manages its own opt-outs), an unknown or foreign origination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_the_documented_ones_and_recorded() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (id, _, _) = sms_number(&c).await;
    let send = |to: &str| {
        c.send_text_message()
            .origination_identity(&id)
            .destination_phone_number(to)
            .message_body("hi")
            .send()
    };

    // Voice from an SMS-only number.
    let voice = c
        .send_voice_message()
        .origination_identity(&id)
        .destination_phone_number("+12065550100")
        .message_body("hi")
        .send()
        .await
        .expect_err("no VOICE capability");
    match voice.into_service_error() {
        aws_sdk_pinpointsmsvoicev2::operation::send_voice_message::SendVoiceMessageError::ConflictException(e) => {
            assert_eq!(e.reason(), Some(&ConflictExceptionReason::NumberCapabilitiesMismatch))
        }
        other => panic!("{other:?}"),
    }
    // A TEXT voice message is at most 3,000 characters (the model's 6,000 is SSML's).
    let long = "a".repeat(3001);
    let voice_of = |text_type: aws_sdk_pinpointsmsvoicev2::types::VoiceMessageBodyTextType| {
        c.send_voice_message()
            .origination_identity(&id)
            .destination_phone_number("+12065550100")
            .message_body(&long)
            .message_body_text_type(text_type)
            .send()
    };
    let text = voice_of(aws_sdk_pinpointsmsvoicev2::types::VoiceMessageBodyTextType::Text)
        .await
        .expect_err("TEXT over 3,000");
    assert_eq!(text.code(), Some("ValidationException"));
    let ssml = voice_of(aws_sdk_pinpointsmsvoicev2::types::VoiceMessageBodyTextType::Ssml)
        .await
        .expect_err("no VOICE capability");
    assert_eq!(ssml.code(), Some("ConflictException"), "SSML may be longer");
    // Media from an SMS-only number; then from one with MMS.
    let media = c
        .send_media_message()
        .origination_identity(&id)
        .destination_phone_number("+12065550100")
        .media_urls("s3://media-bucket/picture.png")
        .send()
        .await
        .expect_err("no MMS capability");
    match media.into_service_error() {
        aws_sdk_pinpointsmsvoicev2::operation::send_media_message::SendMediaMessageError::ConflictException(e) => {
            assert_eq!(e.reason(), Some(&ConflictExceptionReason::NumberCapabilitiesMismatch))
        }
        other => panic!("{other:?}"),
    }
    let mms = c
        .request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Transactional)
        .number_capabilities(NumberCapability::Sms)
        .number_capabilities(NumberCapability::Mms)
        .number_type(RequestableNumberType::TollFree)
        .send()
        .await
        .expect("an MMS number");
    let sent_media = c
        .send_media_message()
        .origination_identity(mms.phone_number_id().expect("id"))
        .destination_phone_number("+12065550177")
        .media_urls("s3://media-bucket/picture.png")
        .message_body("look")
        .send()
        .await
        .expect("SendMediaMessage");
    let media_sent = sent(&server, "Destination=%2B12065550177").await;
    assert_eq!(media_sent.len(), 1);
    assert_eq!(media_sent[0]["MessageId"], sent_media.message_id().expect("id"));
    assert_eq!(media_sent[0]["Channel"], "MEDIA");
    assert_eq!(media_sent[0]["MediaUrls"][0], "s3://media-bucket/picture.png");
    // A media URL that is not in S3 is refused by the model's pattern.
    let bad = c
        .send_media_message()
        .origination_identity(mms.phone_number_id().expect("id"))
        .destination_phone_number("+12065550177")
        .media_urls("https://example.com/picture.png")
        .send()
        .await
        .expect_err("not an S3 URL");
    assert_eq!(bad.code(), Some("ValidationException"));
    // PROMOTIONAL from a TRANSACTIONAL number.
    let promo = c
        .send_text_message()
        .origination_identity(&id)
        .destination_phone_number("+12065550100")
        .message_body("sale")
        .message_type(MessageType::Promotional)
        .send()
        .await
        .expect_err("message type");
    assert_eq!(text_conflict(promo).0, ConflictExceptionReason::MessageTypeMismatch);

    // An opted-out destination on the number's list (Default).
    c.put_opted_out_number()
        .opt_out_list_name("Default")
        .opted_out_number("+12065550100")
        .send()
        .await
        .expect("opt out");
    let (reason, resource) = text_conflict(send("+12065550100").await.expect_err("opted out"));
    assert_eq!(reason, ConflictExceptionReason::DestinationPhoneNumberOptedOut);
    assert_eq!(resource, Some(ResourceType::OptedOutNumber));
    send("+12065550101").await.expect("another destination");
    // A number that manages its own opt-outs sends anyway.
    c.update_phone_number()
        .phone_number_id(&id)
        .self_managed_opt_outs_enabled(true)
        .send()
        .await
        .expect("self-managed");
    send("+12065550100").await.expect("self-managed opt-outs");
    c.update_phone_number()
        .phone_number_id(&id)
        .self_managed_opt_outs_enabled(false)
        .send()
        .await
        .expect("managed");
    // Deleted from the list: sendable again.
    c.delete_opted_out_number()
        .opt_out_list_name("Default")
        .opted_out_number("+12065550100")
        .send()
        .await
        .expect("opt in");
    send("+12065550100").await.expect("opted in again");

    // Released: no message is accepted from it any more.
    c.release_phone_number().phone_number_id(&id).send().await.expect("release");
    let gone = send("+12065550101").await.expect_err("released");
    match gone.into_service_error() {
        SendTextMessageError::ResourceNotFoundException(e) => assert_eq!(e.resource_type(), Some(&ResourceType::PhoneNumber)),
        other => panic!("{other:?}"),
    }
    let types: Vec<String> = stream_events(&server, &id)
        .await
        .iter()
        .map(|e| e["EventType"].as_str().unwrap_or_default().to_string())
        .collect();
    let rejected = types.iter().filter(|t| *t == "MessageRejected").count();
    let accepted = types.iter().filter(|t| *t == "MessageSent").count();
    // (The over-long TEXT voice message is refused at the edge, as the model's limits are, and
    // records nothing; the SSML one is the number's refusal.)
    assert_eq!((rejected, accepted), (6, 3), "{types:?}");
    assert_eq!(
        types.last().map(String::as_str),
        Some("MessageRejected"),
        "the send after the release is recorded"
    );

    // Unknown and foreign origination identities are not found.
    let other = server.client(OTHER_ACCOUNT);
    let (theirs, _, their_e164) = sms_number(&other).await;
    for identity in [
        theirs.as_str(),
        their_e164.as_str(),
        "phone-00000000000000000000000000000000",
        "+12065559999",
    ] {
        let e = c
            .send_text_message()
            .origination_identity(identity)
            .destination_phone_number("+12065550100")
            .message_body("hi")
            .send()
            .await
            .expect_err("not the caller's");
        assert_eq!(e.code(), Some("ResourceNotFoundException"), "{identity}");
    }
    // Nothing the other account sent is visible as ours, and nothing was sent to it.
    assert!(sent(&server, &format!("Origination={theirs}")).await.is_empty());
}

/// A send racing the release of its number: whatever the interleaving, no message is accepted
/// after the number's `Released` in its history, and every acknowledged send is in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_racing_a_release_is_never_accepted_after_it() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    for round in 0..6 {
        let (id, _, _) = sms_number(&c).await;
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..16 {
            let (c, id) = (c.clone(), id.clone());
            sends.spawn(async move {
                tokio::time::sleep(std::time::Duration::from_micros((i * 211) % 2000)).await;
                c.send_text_message()
                    .origination_identity(id)
                    .destination_phone_number(format!("+120655501{i:02}"))
                    .message_body("race")
                    .send()
                    .await
                    .map(|o| o.message_id().map(str::to_string))
            });
        }
        tokio::time::sleep(std::time::Duration::from_micros(700)).await;
        c.release_phone_number().phone_number_id(&id).send().await.expect("release");
        let acknowledged: Vec<String> = sends.join_all().await.into_iter().filter_map(|r| r.ok().flatten()).collect();
        let events = stream_events(&server, &id).await;
        let released_at = events.iter().position(|e| e["EventType"] == "Released").expect("released");
        let after: Vec<&Value> = events[released_at..].iter().filter(|e| e["EventType"] == "MessageSent").collect();
        assert!(after.is_empty(), "round {round}: messages accepted after the release: {after:?}");
        let mut in_log: Vec<&str> = events
            .iter()
            .filter(|e| e["EventType"] == "MessageSent")
            .filter_map(|e| e["Payload"]["MessageId"].as_str())
            .collect();
        let mut acknowledged: Vec<&str> = acknowledged.iter().map(String::as_str).collect();
        in_log.sort_unstable();
        acknowledged.sort_unstable();
        assert_eq!(
            in_log, acknowledged,
            "round {round}: every acknowledged send is in the log, and only those"
        );
    }
}

/// A send racing the destination's opt-out: no message is accepted to a destination that is on
/// the list in force at that point of the log (the send's append requires the destination's
/// opted-out counter to be 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_racing_an_opt_out_never_reaches_an_opted_out_destination() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (id, _, _) = sms_number(&c).await;
    for round in 0..10 {
        let destination = format!("+1206555{:04}", 1000 + round);
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..12u64 {
            let (c, id, destination) = (c.clone(), id.clone(), destination.clone());
            sends.spawn(async move {
                tokio::time::sleep(std::time::Duration::from_micros((i * 173) % 1500)).await;
                c.send_text_message()
                    .origination_identity(id)
                    .destination_phone_number(destination)
                    .message_body("race")
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| assert_eq!(text_conflict(e).0, ConflictExceptionReason::DestinationPhoneNumberOptedOut))
            });
        }
        tokio::time::sleep(std::time::Duration::from_micros(500)).await;
        c.put_opted_out_number()
            .opt_out_list_name("Default")
            .opted_out_number(&destination)
            .send()
            .await
            .expect("opt out");
        sends.join_all().await;
        // Every message to it in the log comes before the opt-out in the feed.
        let feed: Value = reqwest::get(format!("{}/audit/events?Limit=1000", server.url()))
            .await
            .expect("feed")
            .json()
            .await
            .expect("json");
        let events = feed["Events"].as_array().expect("events");
        let opted_out_at = events
            .iter()
            .filter(|e| e["EventType"] == "NumberOptedOut" && e["Payload"]["Number"] == destination.as_str())
            .filter_map(|e| e["Position"].as_u64())
            .next()
            .expect("the opt-out");
        let late: Vec<&Value> = events
            .iter()
            .filter(|e| e["EventType"] == "MessageSent" && e["Payload"]["DestinationPhoneNumber"] == destination.as_str())
            .filter(|e| e["Position"].as_u64() > Some(opted_out_at))
            .collect();
        let late: Vec<u64> = late.iter().filter_map(|e| e["Position"].as_u64()).collect();
        assert!(
            late.is_empty(),
            "round {round}: sent at {late:?}, after the opt-out at {opted_out_at}"
        );
    }
}

/// A send that cannot find a number to send from is refused with the reason AWS gives,
/// `NO_ORIGINATION_IDENTITIES_FOUND`: an account with no SMS-capable number (only a voice
/// number), and a pool whose members cannot send SMS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_with_no_identity_able_to_send_is_refused_as_aws_does() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let reason_of = |e: aws_sdk_pinpointsmsvoicev2::error::SdkError<SendTextMessageError, _>| match e.into_service_error() {
        SendTextMessageError::ConflictException(e) => e.reason().cloned(),
        other => panic!("{other:?}"),
    };
    let send = || c.send_text_message().destination_phone_number("+12065550333").message_body("hi");
    let refused = send().send().await.expect_err("no number at all");
    assert_eq!(reason_of(refused), Some(ConflictExceptionReason::NoOriginationIdentitiesFound));

    let voice = c
        .request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Transactional)
        .number_capabilities(NumberCapability::Voice)
        .number_type(RequestableNumberType::LongCode)
        .send()
        .await
        .expect("a voice number")
        .phone_number_id()
        .expect("id")
        .to_string();
    let refused = send().send().await.expect_err("a voice number only");
    assert_eq!(reason_of(refused), Some(ConflictExceptionReason::NoOriginationIdentitiesFound));
    let pool = common::create_pool(&c, &voice).await;
    let refused = send()
        .origination_identity(&pool)
        .send()
        .await
        .expect_err("a pool of voice numbers");
    assert_eq!(reason_of(refused), Some(ConflictExceptionReason::NoOriginationIdentitiesFound));
    // Another account's SMS number is not this account's to send from.
    common::request(&server.client(OTHER_ACCOUNT), MessageType::Transactional).await;
    let refused = send().send().await.expect_err("only another account can send");
    assert_eq!(reason_of(refused), Some(ConflictExceptionReason::NoOriginationIdentitiesFound));
}
