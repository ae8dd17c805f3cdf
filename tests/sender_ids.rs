//! Sender ids through the official AWS SDK for Rust, against the real server: RequestSenderId,
//! DescribeSenderIds, UpdateSenderId and ReleaseSenderId with their documented refusals; sender
//! ids as pool members; messages sent from them; tags by ARN; and the race between a sender id's
//! release and its association with a pool.

mod common;

use aws_sdk_pinpointsmsvoicev2::error::ProvideErrorMetadata;
use aws_sdk_pinpointsmsvoicev2::operation::request_sender_id::RequestSenderIdError;
use aws_sdk_pinpointsmsvoicev2::types::{
    ConflictExceptionReason, MessageType, SenderIdAndCountry, SenderIdFilter, SenderIdFilterName, ServiceQuotaExceededExceptionReason, Tag,
};
use aws_sdk_pinpointsmsvoicev2::Client;
use common::{create_pool, request, TestServer, ACCOUNT, OTHER_ACCOUNT};

/// The `Reason` of a ConflictException (any other error fails the test).
macro_rules! conflict_reason {
    ($e:expr, $module:ident :: $error:ident) => {
        match $e {
            aws_sdk_pinpointsmsvoicev2::operation::$module::$error::ConflictException(c) => c.reason().cloned(),
            other => panic!("not a ConflictException: {other:?}"),
        }
    };
}

fn asked(sender_id: &str, iso: &str) -> SenderIdAndCountry {
    SenderIdAndCountry::builder()
        .sender_id(sender_id)
        .iso_country_code(iso)
        .build()
        .expect("SenderIdAndCountry")
}

async fn lease(c: &Client, sender_id: &str, iso: &str) -> String {
    c.request_sender_id()
        .sender_id(sender_id)
        .iso_country_code(iso)
        .message_types(MessageType::Transactional)
        .send()
        .await
        .expect("RequestSenderId")
        .sender_id_arn()
        .to_string()
}

/// The lifecycle: leased once per country, described by name and by filter, protected from
/// release until updated, released, then gone for every operation and free to lease again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_ids_lifecycle_with_its_refusals() {
    let server = TestServer::start_with(|c| c.quotas.sender_ids_per_account = 3);
    let c = server.client(ACCOUNT);

    let leased = c
        .request_sender_id()
        .sender_id("MyBrand")
        .iso_country_code("GB")
        .tags(Tag::builder().key("team").value("growth").build().expect("tag"))
        .send()
        .await
        .expect("RequestSenderId");
    let arn = format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:sender-id/MyBrand/GB");
    assert_eq!(leased.sender_id_arn(), arn);
    assert_eq!(leased.sender_id(), "MyBrand");
    assert_eq!(leased.iso_country_code(), "GB");
    // No MessageTypes asked: both.
    assert_eq!(leased.message_types(), [MessageType::Promotional, MessageType::Transactional]);
    assert!(!leased.registered() && !leased.deletion_protection_enabled());

    // The same sender id in the same country is leased once; in another country it is another.
    let again = c.request_sender_id().sender_id("MyBrand").iso_country_code("GB").send().await;
    let e = again.expect_err("leased twice").into_service_error();
    assert_eq!(e.code(), Some("ConflictException"));
    assert_eq!(
        conflict_reason!(e, request_sender_id::RequestSenderIdError),
        Some(ConflictExceptionReason::ResourceAlreadyExists)
    );
    lease(&c, "MyBrand", "FR").await;

    // "The sender ID must contain at least one letter and cannot start or end with a hyphen."
    for bad in ["123456", "-Brand", "TwelveLetter"] {
        let e = c.request_sender_id().sender_id(bad).iso_country_code("GB").send().await;
        assert_eq!(e.expect_err(bad).into_service_error().code(), Some("ValidationException"), "{bad}");
    }

    // Described by name and country, by ARN, by filter, and all of them.
    let by_name = c
        .describe_sender_ids()
        .sender_ids(asked("MyBrand", "GB"))
        .send()
        .await
        .expect("DescribeSenderIds");
    assert_eq!(by_name.sender_ids().len(), 1);
    assert_eq!(by_name.sender_ids()[0].sender_id_arn(), arn);
    let by_arn = c.describe_sender_ids().sender_ids(asked(&arn, "GB")).send().await.expect("by ARN");
    assert_eq!(by_arn.sender_ids().len(), 1);
    let french = c
        .describe_sender_ids()
        .filters(
            SenderIdFilter::builder()
                .name(SenderIdFilterName::IsoCountryCode)
                .values("FR")
                .build()
                .expect("filter"),
        )
        .send()
        .await
        .expect("filtered");
    assert_eq!(french.sender_ids().len(), 1);
    assert_eq!(french.sender_ids()[0].iso_country_code(), "FR");
    assert_eq!(c.describe_sender_ids().send().await.expect("all").sender_ids().len(), 2);
    let unknown = c.describe_sender_ids().sender_ids(asked("Nobody", "GB")).send().await;
    assert_eq!(
        unknown.expect_err("unknown").into_service_error().code(),
        Some("ResourceNotFoundException")
    );

    // The quota: SENDER_IDS_PER_ACCOUNT.
    lease(&c, "Third", "GB").await;
    let over = c.request_sender_id().sender_id("Fourth").iso_country_code("GB").send().await;
    let e = over.expect_err("over the quota").into_service_error();
    match e {
        RequestSenderIdError::ServiceQuotaExceededException(q) => {
            assert_eq!(q.reason(), Some(&ServiceQuotaExceededExceptionReason::SenderIdsPerAccount))
        }
        other => panic!("{other:?}"),
    }

    // Deletion protection: "When set to true the sender ID can't be deleted."
    let protected = c
        .update_sender_id()
        .sender_id("MyBrand")
        .iso_country_code("GB")
        .deletion_protection_enabled(true)
        .send()
        .await
        .expect("UpdateSenderId");
    assert!(protected.deletion_protection_enabled());
    let refused = c.release_sender_id().sender_id("MyBrand").iso_country_code("GB").send().await;
    let e = refused.expect_err("protected").into_service_error();
    assert_eq!(
        conflict_reason!(e, release_sender_id::ReleaseSenderIdError),
        Some(ConflictExceptionReason::DeletionProtectionEnabled)
    );

    // Another account does not see it at all.
    let other = server.client(OTHER_ACCOUNT);
    let foreign = other.release_sender_id().sender_id("MyBrand").iso_country_code("GB").send().await;
    assert_eq!(
        foreign.expect_err("foreign").into_service_error().code(),
        Some("ResourceNotFoundException")
    );

    // Tags by ARN, like any other resource.
    let tags = c
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .expect("ListTagsForResource");
    assert_eq!(tags.tags().len(), 1);
    c.untag_resource()
        .resource_arn(&arn)
        .tag_keys("team")
        .send()
        .await
        .expect("UntagResource");
    assert!(c
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .expect("tags")
        .tags()
        .is_empty());

    c.update_sender_id()
        .sender_id(&arn)
        .iso_country_code("GB")
        .deletion_protection_enabled(false)
        .send()
        .await
        .expect("unprotect");
    let released = c
        .release_sender_id()
        .sender_id("MyBrand")
        .iso_country_code("GB")
        .send()
        .await
        .expect("ReleaseSenderId");
    assert_eq!(released.sender_id(), "MyBrand");
    let gone = c.release_sender_id().sender_id("MyBrand").iso_country_code("GB").send().await;
    assert_eq!(
        gone.expect_err("released").into_service_error().code(),
        Some("ResourceNotFoundException")
    );
    let gone = c.describe_sender_ids().sender_ids(asked("MyBrand", "GB")).send().await;
    assert_eq!(
        gone.expect_err("released").into_service_error().code(),
        Some("ResourceNotFoundException")
    );
    // Released, it is free to lease again (and no longer counts against the quota).
    lease(&c, "MyBrand", "GB").await;

    // Every decision is on the sender id's stream, the refusals too.
    // The ARN as it is: two `/`s, the last two segments of the path before `events`.
    let audit: serde_json::Value = reqwest::get(format!("{}/audit/sender-ids/{arn}/events", server.url()))
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let types: Vec<&str> = audit["Events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["EventType"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "SenderIdRequested",
            "CommandRejected",
            "SenderIdUpdated",
            "ReleaseRejected",
            "TagsChanged",
            "SenderIdUpdated",
            "Released",
            "ReleaseRejected",
            "SenderIdRequested"
        ],
        "{audit}"
    );
}

/// Whether `pool` lists `identity` among its origination identities.
async fn lists(c: &Client, pool: &str, identity: &str) -> bool {
    let listed = c.list_pool_origination_identities().pool_id(pool).send().await.expect("members");
    listed.origination_identities().iter().any(|m| m.origination_identity() == identity)
}

/// The pools a sender id stands with, as its audit state shows them (`Null` for none).
async fn pools_of(server: &TestServer, arn: &str) -> serde_json::Value {
    let url = format!("{}/audit/sender-ids/{arn}/state", server.url());
    let state: serde_json::Value = reqwest::get(url).await.expect("audit").json().await.expect("json");
    state["State"]["Pools"].clone()
}

/// AssociateOriginationIdentity: "A sender ID can be associated with multiple pools." (A phone
/// number cannot: `lifecycle.rs`.) The sender id is listed by both pools; leaving one leaves it
/// in the other; it is released only once no pool holds it, the other pool's deletion letting it
/// go; and it stays in both across a restart (its state rebuilt from the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_id_in_two_pools() {
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    let first = create_pool(&c, &request(&c, MessageType::Transactional).await).await;
    let second = create_pool(&c, &request(&c, MessageType::Transactional).await).await;
    let arn = lease(&c, "Multi", "GB").await;
    for pool in [&first, &second] {
        c.associate_origination_identity()
            .pool_id(pool)
            .origination_identity(&arn)
            .send()
            .await
            .expect("AssociateOriginationIdentity");
    }
    // Listed by the pools that hold it, as its audit state says.
    assert!(lists(&c, &first, "Multi").await && lists(&c, &second, "Multi").await);
    let pools = serde_json::json!({ first.as_str(): "ASSOCIATED", second.as_str(): "ASSOCIATED" });
    assert_eq!(pools_of(&server, &arn).await, pools);
    server.restart();
    let c = server.client(ACCOUNT);
    assert_eq!(pools_of(&server, &arn).await, pools, "both pools after a restart");

    let left = c
        .disassociate_origination_identity()
        .pool_id(&first)
        .origination_identity(&arn)
        .send()
        .await
        .expect("DisassociateOriginationIdentity");
    assert_eq!(left.origination_identity(), Some("Multi"));
    assert!(!lists(&c, &first, "Multi").await && lists(&c, &second, "Multi").await);
    let refused = c.release_sender_id().sender_id("Multi").iso_country_code("GB").send().await;
    let e = refused.expect_err("still in the second pool").into_service_error();
    assert_eq!(
        conflict_reason!(e, release_sender_id::ReleaseSenderIdError),
        Some(ConflictExceptionReason::SenderIdAssociatedToPool)
    );
    // A second join of a pool it is in is refused as such.
    let again = c
        .associate_origination_identity()
        .pool_id(&second)
        .origination_identity(&arn)
        .send()
        .await
        .expect_err("already a member")
        .into_service_error();
    assert_eq!(
        conflict_reason!(again, associate_origination_identity::AssociateOriginationIdentityError),
        Some(ConflictExceptionReason::ResourceAlreadyAssociated)
    );
    c.delete_pool().pool_id(&second).send().await.expect("DeletePool");
    assert_eq!(pools_of(&server, &arn).await, serde_json::Value::Null, "in no pool");
    c.release_sender_id()
        .sender_id("Multi")
        .iso_country_code("GB")
        .send()
        .await
        .expect("released once no pool holds it");
}

/// A sender id joins a pool of its message type, is listed as the pool's member, is not released
/// while a member (`SENDER_ID_ASSOCIATED_TO_POOL`), and sends text messages, directly and
/// through the pool, but no voice messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_id_in_a_pool_and_its_messages() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let number = request(&c, MessageType::Transactional).await;
    let pool = create_pool(&c, &number).await;
    let arn = lease(&c, "Shop", "GB").await;

    let joined = c
        .associate_origination_identity()
        .pool_id(&pool)
        .origination_identity("Shop")
        .iso_country_code("GB")
        .send()
        .await
        .expect("AssociateOriginationIdentity");
    assert_eq!(joined.origination_identity(), Some("Shop"));
    assert_eq!(joined.origination_identity_arn(), Some(arn.as_str()));
    let members = c.list_pool_origination_identities().pool_id(&pool).send().await.expect("members");
    let shop = members
        .origination_identities()
        .iter()
        .find(|m| m.origination_identity() == "Shop")
        .expect("the sender id is a member");
    assert_eq!(shop.origination_identity_arn(), arn);
    assert_eq!(shop.phone_number(), None);

    let refused = c.release_sender_id().sender_id("Shop").iso_country_code("GB").send().await;
    let e = refused.expect_err("in a pool").into_service_error();
    assert_eq!(
        conflict_reason!(e, release_sender_id::ReleaseSenderIdError),
        Some(ConflictExceptionReason::SenderIdAssociatedToPool)
    );

    // A promotional sender id does not join a transactional pool.
    c.request_sender_id()
        .sender_id("Promo")
        .iso_country_code("GB")
        .message_types(MessageType::Promotional)
        .send()
        .await
        .expect("promotional");
    let mismatch = c
        .associate_origination_identity()
        .pool_id(&pool)
        .origination_identity("Promo")
        .iso_country_code("GB")
        .send()
        .await;
    let e = mismatch.expect_err("message type").into_service_error();
    assert_eq!(
        conflict_reason!(e, associate_origination_identity::AssociateOriginationIdentityError),
        Some(ConflictExceptionReason::MessageTypeMismatch)
    );

    // Sent from the sender id by its string (the destination's country), and by ARN.
    let to = "+447400123456";
    let sent = c
        .send_text_message()
        .origination_identity("Shop")
        .destination_phone_number(to)
        .message_body("hello")
        .send()
        .await
        .expect("SendTextMessage from a sender id");
    assert!(sent.message_id().is_some());
    c.send_text_message()
        .origination_identity(&arn)
        .destination_phone_number(to)
        .message_body("again")
        .send()
        .await
        .expect("by ARN");
    let voice = c
        .send_voice_message()
        .origination_identity("Shop")
        .destination_phone_number(to)
        .message_body("hello")
        .send()
        .await;
    let e = voice.expect_err("no voice").into_service_error();
    assert_eq!(
        conflict_reason!(e, send_voice_message::SendVoiceMessageError),
        Some(ConflictExceptionReason::NumberCapabilitiesMismatch)
    );
    // A destination on the account's Default list is refused from a sender id.
    c.put_opted_out_number()
        .opt_out_list_name("Default")
        .opted_out_number(to)
        .send()
        .await
        .expect("PutOptedOutNumber");
    let opted_out = c
        .send_text_message()
        .origination_identity("Shop")
        .destination_phone_number(to)
        .message_body("hello")
        .send()
        .await;
    let e = opted_out.expect_err("opted out").into_service_error();
    assert_eq!(
        conflict_reason!(e, send_text_message::SendTextMessageError),
        Some(ConflictExceptionReason::DestinationPhoneNumberOptedOut)
    );

    // Left the pool, it is released, and sends nothing more.
    c.disassociate_origination_identity()
        .pool_id(&pool)
        .origination_identity(&arn)
        .iso_country_code("GB")
        .send()
        .await
        .expect("DisassociateOriginationIdentity");
    c.release_sender_id()
        .sender_id("Shop")
        .iso_country_code("GB")
        .send()
        .await
        .expect("released");
    let after = c
        .send_text_message()
        .origination_identity("Shop")
        .destination_phone_number("+447400123999")
        .message_body("late")
        .send()
        .await;
    assert_eq!(
        after.expect_err("released").into_service_error().code(),
        Some("ResourceNotFoundException")
    );

    // The messages read back from the audit API, from the sender id's stream.
    let messages: serde_json::Value = reqwest::get(format!("{}/audit/messages?Destination=%2B447400123456", server.url()))
        .await
        .expect("messages")
        .json()
        .await
        .expect("json");
    let from: Vec<&str> = messages["Messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["OriginationIdentity"].as_str())
        .collect();
    assert_eq!(from, ["Shop", arn.as_str()], "{messages}");
}

/// ReleaseSenderId racing AssociateOriginationIdentity on the same sender id, many times: never
/// a released sender id in a pool. Either the release wins (and the join is refused), or the join
/// does (and the release is refused with `SENDER_ID_ASSOCIATED_TO_POOL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_racing_an_association_never_leaves_a_released_member() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let number = request(&c, MessageType::Transactional).await;
    let pool = create_pool(&c, &number).await;
    let (mut released, mut joined) = (0, 0);
    for i in 0..12 {
        let name = format!("Race{i}");
        lease(&c, &name, "GB").await;
        let release = c.release_sender_id().sender_id(&name).iso_country_code("GB").send();
        let join = c
            .associate_origination_identity()
            .pool_id(&pool)
            .origination_identity(&name)
            .iso_country_code("GB")
            .send();
        let (release, join) = tokio::join!(release, join);
        assert!(release.is_ok() != join.is_ok(), "{name}: exactly one wins: {release:?} / {join:?}");
        let members = c.list_pool_origination_identities().pool_id(&pool).send().await.expect("members");
        let member = members.origination_identities().iter().any(|m| m.origination_identity() == name);
        let leased = c.describe_sender_ids().sender_ids(asked(&name, "GB")).send().await.is_ok();
        if release.is_ok() {
            released += 1;
            assert!(!member && !leased, "{name}: released, yet a member");
        } else {
            joined += 1;
            assert!(member && leased, "{name}: joined, yet not a member");
        }
    }
    eprintln!("release won {released} times, association {joined} times");
}
