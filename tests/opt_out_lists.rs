//! Opt-out lists and tags through the official AWS SDK for Rust, against the real server: the
//! list lifecycle with its documented refusals, opted-out numbers with filters and pagination, the
//! rule that ties lists to the numbers and pools naming them, and TagResource / UntagResource /
//! ListTagsForResource on numbers, pools and lists.

mod common;

use aws_sdk_pinpointsmsvoicev2::error::ProvideErrorMetadata;
use aws_sdk_pinpointsmsvoicev2::operation::create_opt_out_list::CreateOptOutListError;
use aws_sdk_pinpointsmsvoicev2::operation::delete_opt_out_list::DeleteOptOutListError;
use aws_sdk_pinpointsmsvoicev2::operation::delete_opted_out_number::DeleteOptedOutNumberError;
use aws_sdk_pinpointsmsvoicev2::operation::put_opted_out_number::PutOptedOutNumberError;
use aws_sdk_pinpointsmsvoicev2::operation::request_phone_number::RequestPhoneNumberError;
use aws_sdk_pinpointsmsvoicev2::operation::tag_resource::TagResourceError;
use aws_sdk_pinpointsmsvoicev2::operation::update_phone_number::UpdatePhoneNumberError;
use aws_sdk_pinpointsmsvoicev2::types::{
    ConflictExceptionReason, MessageType, NumberCapability, OptedOutFilter, OptedOutFilterName, RequestableNumberType, ResourceType,
    ServiceQuotaExceededExceptionReason, Tag,
};
use aws_sdk_pinpointsmsvoicev2::Client;
use common::{TestServer, ACCOUNT, OTHER_ACCOUNT};

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build().expect("tag")
}

async fn number_on_list(c: &Client, list: &str) -> Result<String, aws_sdk_pinpointsmsvoicev2::error::SdkError<RequestPhoneNumberError>> {
    c.request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Transactional)
        .number_capabilities(NumberCapability::Sms)
        .number_type(RequestableNumberType::LongCode)
        .opt_out_list_name(list)
        .send()
        .await
        .map(|r| r.phone_number_id().expect("id").to_string())
}

/// The lifecycle of a list: created once (ARN, timestamp, tags), described with `Default`,
/// refused while a number uses it, deleted once unused, and gone for every operation after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lists_lifecycle_with_its_refusals() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);

    let created = c
        .create_opt_out_list()
        .opt_out_list_name("marketing")
        .tags(tag("team", "growth"))
        .send()
        .await
        .expect("CreateOptOutList");
    let arn = format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:opt-out-list/marketing");
    assert_eq!(created.opt_out_list_name(), Some("marketing"));
    assert_eq!(created.opt_out_list_arn(), Some(arn.as_str()));
    assert!(created.created_timestamp().is_some());
    assert_eq!(created.tags(), [tag("team", "growth")]);

    // "If the opt-out list name already exists, an error is returned."
    let again = c
        .create_opt_out_list()
        .opt_out_list_name("marketing")
        .send()
        .await
        .expect_err("twice");
    match again.into_service_error() {
        CreateOptOutListError::ConflictException(e) => {
            assert_eq!(e.reason(), Some(&ConflictExceptionReason::ResourceAlreadyExists));
            assert_eq!(e.resource_type(), Some(&ResourceType::OptOutList));
        }
        other => panic!("{other:?}"),
    }

    // Every account has a Default list; both are described, by name, ARN or all at once.
    let all = c.describe_opt_out_lists().send().await.expect("DescribeOptOutLists");
    let mut names: Vec<&str> = all.opt_out_lists().iter().map(|l| l.opt_out_list_name()).collect();
    names.sort();
    assert_eq!(names, ["Default", "marketing"]);
    let by_arn = c.describe_opt_out_lists().opt_out_list_names(&arn).send().await.expect("by ARN");
    assert_eq!(by_arn.opt_out_lists().len(), 1);
    let unknown = c
        .describe_opt_out_lists()
        .opt_out_list_names("nope")
        .send()
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Some("ResourceNotFoundException"));
    let shared = c
        .describe_opt_out_lists()
        .owner(aws_sdk_pinpointsmsvoicev2::types::Owner::Shared)
        .send()
        .await
        .expect("shared");
    assert!(shared.opt_out_lists().is_empty());
    // "The Owner and OptOutListNames parameters can't be used at the same time."
    let both = c
        .describe_opt_out_lists()
        .owner(aws_sdk_pinpointsmsvoicev2::types::Owner::SelfValue)
        .opt_out_list_names("marketing")
        .send()
        .await
        .expect_err("Owner with names");
    match both.into_service_error() {
        aws_sdk_pinpointsmsvoicev2::operation::describe_opt_out_lists::DescribeOptOutListsError::ValidationException(e) => assert_eq!(
            e.reason(),
            Some(&aws_sdk_pinpointsmsvoicev2::types::ValidationExceptionReason::ParametersCannotBeUsedTogether)
        ),
        other => panic!("{other:?}"),
    }

    // A number names the list: deleting it is refused while the number lives.
    let number = number_on_list(&c, "marketing").await.expect("number on the list");
    let in_use = c
        .delete_opt_out_list()
        .opt_out_list_name("marketing")
        .send()
        .await
        .expect_err("in use");
    match in_use.into_service_error() {
        DeleteOptOutListError::ConflictException(e) => {
            assert_eq!(e.reason(), Some(&ConflictExceptionReason::ResourceDeletionNotAllowed));
            assert_eq!(e.resource_id(), Some("marketing"));
        }
        other => panic!("{other:?}"),
    }
    // The Default list is never deleted.
    let default = c
        .delete_opt_out_list()
        .opt_out_list_name("Default")
        .send()
        .await
        .expect_err("Default");
    assert_eq!(default.code(), Some("ConflictException"));

    // Released, the number no longer uses it: deleted, by ARN.
    c.release_phone_number().phone_number_id(&number).send().await.expect("release");
    let deleted = c
        .delete_opt_out_list()
        .opt_out_list_name(&arn)
        .send()
        .await
        .expect("DeleteOptOutList");
    assert_eq!(deleted.opt_out_list_name(), Some("marketing"));

    // Gone: for puts, describes, deletes, and as a number's list.
    let put = c
        .put_opted_out_number()
        .opt_out_list_name("marketing")
        .opted_out_number("+12065550100")
        .send()
        .await
        .expect_err("deleted list");
    match put.into_service_error() {
        PutOptedOutNumberError::ResourceNotFoundException(e) => assert_eq!(e.resource_type(), Some(&ResourceType::OptOutList)),
        other => panic!("{other:?}"),
    }
    let named = number_on_list(&c, "marketing").await.expect_err("a number on a deleted list");
    match named.into_service_error() {
        RequestPhoneNumberError::ResourceNotFoundException(e) => assert_eq!(e.resource_type(), Some(&ResourceType::OptOutList)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.delete_opt_out_list()
            .opt_out_list_name("marketing")
            .send()
            .await
            .expect_err("twice")
            .code(),
        Some("ResourceNotFoundException")
    );

    // The history of the list is its audit trail: created, refused, deleted.
    // (By ARN: an unsigned caller has no account of its own to name a list in.)
    let history = reqwest::get(format!("{}/audit/opt-out-lists/{}/events", server.url(), arn.replace('/', "%2F")))
        .await
        .expect("audit")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    let types: Vec<&str> = history["Events"]
        .as_array()
        .unwrap_or_else(|| panic!("{history}"))
        .iter()
        .filter_map(|e| e["EventType"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "OptOutListCreated",
            "CommandRejected", // created twice
            "CommandRejected", // deleted while in use
            "OptOutListDeleted",
            "CommandRejected", // a number put on the deleted list
            "CommandRejected", // deleted twice
        ],
        "{history}"
    );
}

/// Opted-out numbers: put once, described with filters and pages, deleted once every 30 days,
/// and emptied with their list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_out_numbers_with_filters_pages_and_the_thirty_day_rule() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    c.create_opt_out_list().opt_out_list_name("alerts").send().await.expect("create");
    for i in 0..7 {
        let put = c
            .put_opted_out_number()
            .opt_out_list_name("alerts")
            .opted_out_number(format!("+1206555010{i}"))
            .send()
            .await
            .expect("PutOptedOutNumber");
        assert_eq!(put.opted_out_number(), Some(format!("+1206555010{i}").as_str()));
        assert!(!put.end_user_opted_out());
        assert!(put.opted_out_timestamp().is_some());
    }
    // "If the destination phone number isn't valid ... an error is returned."
    for invalid in ["+12060000000", "+1999"] {
        let refused = c
            .put_opted_out_number()
            .opt_out_list_name("alerts")
            .opted_out_number(invalid)
            .send()
            .await
            .expect_err("not a valid number");
        assert_eq!(refused.code(), Some("ValidationException"), "{invalid}");
    }
    // Putting one again keeps its entry.
    let first = c
        .describe_opted_out_numbers()
        .opt_out_list_name("alerts")
        .opted_out_numbers("+12065550100")
        .send()
        .await
        .expect("one");
    let again = c
        .put_opted_out_number()
        .opt_out_list_name("alerts")
        .opted_out_number("+12065550100")
        .send()
        .await
        .expect("again");
    assert_eq!(
        again.opted_out_timestamp(),
        Some(first.opted_out_numbers()[0].opted_out_timestamp())
    );

    // Pages of 3 through the SDK's paginator: every number once, in order.
    let pages: Vec<_> = c
        .describe_opted_out_numbers()
        .opt_out_list_name("alerts")
        .max_results(3)
        .into_paginator()
        .send()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(pages.len(), 3);
    let seen: Vec<String> = pages
        .into_iter()
        .flat_map(|p| {
            p.expect("page")
                .opted_out_numbers()
                .iter()
                .map(|n| n.opted_out_number().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(seen, (0..7).map(|i| format!("+1206555010{i}")).collect::<Vec<_>>());

    // The end-user filter: none opted out by an end user here.
    let by_user = |v: &str| {
        c.describe_opted_out_numbers()
            .opt_out_list_name("alerts")
            .filters(
                OptedOutFilter::builder()
                    .name(OptedOutFilterName::EndUserOptedOut)
                    .values(v)
                    .build()
                    .expect("filter"),
            )
            .send()
    };
    assert!(by_user("true").await.expect("true").opted_out_numbers().is_empty());
    assert_eq!(by_user("false").await.expect("false").opted_out_numbers().len(), 7);
    let bad = by_user("maybe").await.expect_err("bad filter value");
    assert_eq!(bad.code(), Some("ValidationException"));

    // Deleted, then not there; deleted again within 30 days of the first deletion: refused.
    let delete = || {
        c.delete_opted_out_number()
            .opt_out_list_name("alerts")
            .opted_out_number("+12065550103")
            .send()
    };
    let removed = delete().await.expect("DeleteOptedOutNumber");
    assert_eq!(removed.opted_out_number(), Some("+12065550103"));
    match delete().await.expect_err("not there").into_service_error() {
        DeleteOptedOutNumberError::ResourceNotFoundException(e) => {
            assert_eq!(e.resource_type(), Some(&ResourceType::OptedOutNumber));
            assert_eq!(e.resource_id(), Some("+12065550103"));
        }
        other => panic!("{other:?}"),
    }
    c.put_opted_out_number()
        .opt_out_list_name("alerts")
        .opted_out_number("+12065550103")
        .send()
        .await
        .expect("back on the list");
    match delete().await.expect_err("30 days").into_service_error() {
        DeleteOptedOutNumberError::ConflictException(e) => {
            assert_eq!(e.reason(), Some(&ConflictExceptionReason::ResourceModificationNotAllowed))
        }
        other => panic!("{other:?}"),
    }

    // "All opted out phone numbers in the opt-out list are deleted" with the list.
    c.delete_opt_out_list().opt_out_list_name("alerts").send().await.expect("delete");
    c.create_opt_out_list().opt_out_list_name("alerts").send().await.expect("again");
    let empty = c
        .describe_opted_out_numbers()
        .opt_out_list_name("alerts")
        .send()
        .await
        .expect("empty");
    assert!(empty.opted_out_numbers().is_empty());

    // Another account sees none of it.
    let other = server.client(OTHER_ACCOUNT);
    let foreign = other
        .describe_opted_out_numbers()
        .opt_out_list_name(format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:opt-out-list/alerts"))
        .send()
        .await
        .expect_err("foreign ARN");
    assert_eq!(foreign.code(), Some("ResourceNotFoundException"));
}

/// A number changed to a list that does not exist is refused; to one that does, it is taken,
/// and the list is then in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_name_only_lists_that_exist() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let number = number_on_list(&c, "Default").await.expect("on Default");
    let missing = c
        .update_phone_number()
        .phone_number_id(&number)
        .opt_out_list_name("nope")
        .send()
        .await
        .expect_err("no such list");
    match missing.into_service_error() {
        UpdatePhoneNumberError::ResourceNotFoundException(e) => assert_eq!(e.resource_type(), Some(&ResourceType::OptOutList)),
        other => panic!("{other:?}"),
    }
    c.create_opt_out_list().opt_out_list_name("vip").send().await.expect("create");
    // An ARN names the list only if it is the caller's, in the caller's region: another
    // account's, another region's or another kind of resource's ARN with the same last segment
    // names none of the caller's lists.
    for foreign in [
        format!("arn:aws:sms-voice:us-east-1:{OTHER_ACCOUNT}:opt-out-list/vip"),
        format!("arn:aws:sms-voice:eu-west-1:{ACCOUNT}:opt-out-list/vip"),
        format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:pool/vip"),
    ] {
        let refused = c
            .update_phone_number()
            .phone_number_id(&number)
            .opt_out_list_name(&foreign)
            .send()
            .await
            .expect_err("not the caller's list");
        match refused.into_service_error() {
            UpdatePhoneNumberError::ResourceNotFoundException(e) => {
                assert_eq!(
                    (e.resource_type(), e.resource_id()),
                    (Some(&ResourceType::OptOutList), Some(foreign.as_str()))
                )
            }
            other => panic!("{foreign}: {other:?}"),
        }
    }
    let updated = c
        .update_phone_number()
        .phone_number_id(&number)
        .opt_out_list_name(format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:opt-out-list/vip"))
        .send()
        .await
        .expect("update");
    assert_eq!(updated.opt_out_list_name(), Some("vip"));
    assert_eq!(
        c.delete_opt_out_list()
            .opt_out_list_name("vip")
            .send()
            .await
            .expect_err("in use")
            .code(),
        Some("ConflictException")
    );
    // Back to Default: the list is free again.
    c.update_phone_number()
        .phone_number_id(&number)
        .opt_out_list_name("Default")
        .send()
        .await
        .expect("back");
    c.delete_opt_out_list().opt_out_list_name("vip").send().await.expect("free again");
}

/// The quota of lists per account (`Default` included) and a client token retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_of_lists_and_client_tokens() {
    let server = TestServer::start_with(|c| c.quotas.opt_out_lists_per_account = 3);
    let c = server.client(ACCOUNT);
    let first = c
        .create_opt_out_list()
        .opt_out_list_name("a")
        .client_token("token-a")
        .send()
        .await
        .expect("a");
    let retried = c
        .create_opt_out_list()
        .opt_out_list_name("a")
        .client_token("token-a")
        .send()
        .await
        .expect("the same request again");
    assert_eq!(retried.created_timestamp(), first.created_timestamp());
    let reused = c
        .create_opt_out_list()
        .opt_out_list_name("other")
        .client_token("token-a")
        .send()
        .await
        .expect_err("token with other parameters");
    assert_eq!(reused.code(), Some("ConflictException"));
    c.create_opt_out_list().opt_out_list_name("b").send().await.expect("b");
    match c
        .create_opt_out_list()
        .opt_out_list_name("c")
        .send()
        .await
        .expect_err("over")
        .into_service_error()
    {
        CreateOptOutListError::ServiceQuotaExceededException(e) => {
            assert_eq!(e.reason(), Some(&ServiceQuotaExceededExceptionReason::OptOutListsPerAccount))
        }
        other => panic!("{other:?}"),
    }

    // A list deleted and created again, with a token of its own and other tags: a retry of the
    // second creation is answered with the list, one of the first creation is refused (the
    // list it made is gone), whichever creation the token is compared with.
    c.delete_opt_out_list().opt_out_list_name("a").send().await.expect("delete a");
    let again = || {
        c.create_opt_out_list()
            .opt_out_list_name("a")
            .tags(tag("team", "ops"))
            .client_token("token-a2")
    };
    let second = again().send().await.expect("a again");
    let retried = again().send().await.expect("the second creation, retried");
    assert_eq!(retried.created_timestamp(), second.created_timestamp());
    let stale = c
        .create_opt_out_list()
        .opt_out_list_name("a")
        .client_token("token-a")
        .send()
        .await
        .expect_err("the first creation's list is gone");
    assert_eq!(stale.code(), Some("ConflictException"), "{stale:?}");
}

/// TagResource, UntagResource and ListTagsForResource on a number, a pool and a list, the limit
/// of 50 tags, and resources that are not there (or not the caller's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_on_numbers_pools_and_lists() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let number = number_on_list(&c, "Default").await.expect("number");
    let pool = common::create_pool(&c, &number).await;
    c.create_opt_out_list().opt_out_list_name("tagged").send().await.expect("list");
    let arns = [
        format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:phone-number/{number}"),
        format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:pool/{pool}"),
        format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:opt-out-list/tagged"),
    ];
    for arn in &arns {
        c.tag_resource()
            .resource_arn(arn)
            .tags(tag("team", "a"))
            .tags(tag("env", "dev"))
            .send()
            .await
            .expect("TagResource");
        // "When you specify an existing tag key, the value is overwritten with the new value."
        c.tag_resource()
            .resource_arn(arn)
            .tags(tag("env", "prod"))
            .send()
            .await
            .expect("overwrite");
        c.untag_resource()
            .resource_arn(arn)
            .tag_keys("team")
            .tag_keys("absent")
            .send()
            .await
            .expect("UntagResource");
        let listed = c
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .expect("ListTagsForResource");
        assert_eq!(listed.resource_arn(), Some(arn.as_str()));
        assert_eq!(listed.tags(), [tag("env", "prod")], "{arn}");
    }
    // At most 50 tags on a resource.
    let many: Vec<Tag> = (0..50).map(|i| tag(&format!("k{i}"), "v")).collect();
    let over = c
        .tag_resource()
        .resource_arn(&arns[0])
        .set_tags(Some(many))
        .send()
        .await
        .expect_err("51 tags");
    match over.into_service_error() {
        TagResourceError::ServiceQuotaExceededException(e) => {
            assert_eq!(e.reason(), Some(&ServiceQuotaExceededExceptionReason::TagsPerResource))
        }
        other => panic!("{other:?}"),
    }

    // Tags given at creation keep their keys unique too (a later duplicate wins), and at most 50.
    let created = c
        .create_opt_out_list()
        .opt_out_list_name("twice")
        .tags(tag("env", "dev"))
        .tags(tag("env", "prod"))
        .send()
        .await
        .expect("created with a key twice");
    assert_eq!(created.tags(), [tag("env", "prod")]);
    let fifty_one: Vec<Tag> = (0..51).map(|i| tag(&format!("k{i}"), "v")).collect();
    let over = c
        .create_opt_out_list()
        .opt_out_list_name("crowded")
        .set_tags(Some(fifty_one))
        .send()
        .await
        .expect_err("51 tags at creation");
    assert_eq!(over.code(), Some("ServiceQuotaExceededException"));

    // Not there, or not the caller's: not found; not an ARN this service issues: validation.
    let other = server.client(OTHER_ACCOUNT);
    for arn in &arns {
        let e = other.list_tags_for_resource().resource_arn(arn).send().await.expect_err("foreign");
        assert_eq!(e.code(), Some("ResourceNotFoundException"), "{arn}");
    }
    let e = c
        .tag_resource()
        .resource_arn(format!(
            "arn:aws:sms-voice:us-east-1:{ACCOUNT}:phone-number/phone-00000000000000000000000000000000"
        ))
        .tags(tag("a", "b"))
        .send()
        .await
        .expect_err("unknown number");
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    let e = c
        .list_tags_for_resource()
        .resource_arn(format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:configuration-set/x"))
        .send()
        .await
        .expect_err("a kind this service does not keep");
    assert_eq!(e.code(), Some("ValidationException"));
}

/// A list's deletion racing numbers that join it: whichever the log orders first wins, so at the
/// end no live number names a deleted list, and a list whose deletion was refused has a user.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_list_races_numbers_joining_it() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let mut numbers = Vec::new();
    for _ in 0..12 {
        numbers.push(number_on_list(&c, "Default").await.expect("number"));
    }
    let (mut deleted_rounds, mut refused_rounds) = (0, 0);
    for round in 0..8 {
        let list = format!("race-{round}");
        c.create_opt_out_list().opt_out_list_name(&list).send().await.expect("create");
        // Even rounds lean towards the deletion coming first, odd ones towards the joins (by tens
        // of milliseconds), so that both outcomes are seen; within a round they still race.
        let (joins_after_ms, deletion_after_ms) = if round % 2 == 0 { (60, 0) } else { (0, 100) };
        let mut racing = tokio::task::JoinSet::new();
        for (i, n) in numbers.iter().enumerate() {
            let (c, n, list) = (c.clone(), n.clone(), list.clone());
            racing.spawn(async move {
                let jitter = std::time::Duration::from_micros((i as u64 * 397) % 3000);
                tokio::time::sleep(std::time::Duration::from_millis(joins_after_ms) + jitter).await;
                c.update_phone_number()
                    .phone_number_id(n)
                    .opt_out_list_name(list)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| {
                        let e = e.into_service_error();
                        assert!(matches!(e, UpdatePhoneNumberError::ResourceNotFoundException(_)), "{e:?}");
                    })
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(deletion_after_ms)).await;
        let deletion = c.delete_opt_out_list().opt_out_list_name(&list).send().await;
        let joined = racing.join_all().await.iter().filter(|r| r.is_ok()).count();
        let described = c.describe_phone_numbers().send().await.expect("describe");
        let on_list = described
            .phone_numbers()
            .iter()
            .filter(|p| p.opt_out_list_name() == list.as_str())
            .count();
        match deletion {
            Ok(_) => {
                deleted_rounds += 1;
                assert_eq!(on_list, 0, "round {round}: the list was deleted under {on_list} numbers");
                assert_eq!(joined, 0, "round {round}: numbers joined a deleted list");
            }
            Err(e) => {
                refused_rounds += 1;
                assert_eq!(e.code(), Some("ConflictException"), "round {round}");
                assert!(on_list > 0, "round {round}: refused, yet no number names the list");
                assert_eq!(on_list, joined, "round {round}");
            }
        }
        // Everyone back on Default for the next round.
        for n in &numbers {
            c.update_phone_number()
                .phone_number_id(n)
                .opt_out_list_name("Default")
                .send()
                .await
                .expect("back");
        }
    }
    assert!(
        deleted_rounds > 0 && refused_rounds > 0,
        "deleted {deleted_rounds}, refused {refused_rounds} of 8 rounds"
    );
}

/// UpdatePool with every member: an opt-out list it names must exist and is then in use by the
/// pool, and messages sent through the pool honour the pool's list, not the member's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_pool_with_every_member_and_its_list_in_force() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let number = number_on_list(&c, "Default").await.expect("number");
    let pool = common::create_pool(&c, &number).await;
    let missing = c
        .update_pool()
        .pool_id(&pool)
        .opt_out_list_name("nope")
        .send()
        .await
        .expect_err("no such list");
    assert_eq!(missing.code(), Some("ResourceNotFoundException"));
    // Refused, and recorded on the pool's stream, as a number's is.
    let history: serde_json::Value = reqwest::get(format!("{}/audit/pools/{pool}/events", server.url()))
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let last = history["Events"].as_array().and_then(|events| events.last()).cloned();
    assert_eq!(
        last.map(|e| (e["EventType"].clone(), e["Payload"]["Rejection"]["Kind"].clone())),
        Some((serde_json::json!("CommandRejected"), serde_json::json!("NotFound"))),
        "{history}"
    );
    let two_way = c
        .update_pool()
        .pool_id(&pool)
        .two_way_enabled(true)
        .send()
        .await
        .expect_err("no channel");
    assert_eq!(two_way.code(), Some("ValidationException"));
    c.create_opt_out_list().opt_out_list_name("pool-list").send().await.expect("list");
    let channel = "arn:aws:sns:us-east-1:111122223333:inbound";
    let updated = c
        .update_pool()
        .pool_id(format!("arn:aws:sms-voice:us-east-1:{ACCOUNT}:pool/{pool}"))
        .opt_out_list_name("pool-list")
        .deletion_protection_enabled(true)
        .self_managed_opt_outs_enabled(false)
        .shared_routes_enabled(true)
        .two_way_enabled(true)
        .two_way_channel_arn(channel)
        .two_way_channel_role("arn:aws:iam::111122223333:role/inbound")
        .send()
        .await
        .expect("UpdatePool");
    assert_eq!(updated.opt_out_list_name(), Some("pool-list"));
    assert!(updated.deletion_protection_enabled() && updated.shared_routes_enabled() && updated.two_way_enabled());
    assert_eq!(updated.two_way_channel_arn(), Some(channel));
    let described = c.describe_pools().pool_ids(&pool).send().await.expect("describe");
    assert_eq!(described.pools()[0].opt_out_list_name(), "pool-list");
    assert_eq!(
        c.delete_opt_out_list()
            .opt_out_list_name("pool-list")
            .send()
            .await
            .expect_err("in use by the pool")
            .code(),
        Some("ConflictException")
    );
    assert_eq!(
        c.delete_pool().pool_id(&pool).send().await.expect_err("protected").code(),
        Some("ConflictException")
    );

    // Through the pool, its list is in force; from the number alone, the number's.
    c.put_opted_out_number()
        .opt_out_list_name("pool-list")
        .opted_out_number("+12065550155")
        .send()
        .await
        .expect("opt out");
    let via_pool = c
        .send_text_message()
        .origination_identity(&pool)
        .destination_phone_number("+12065550155")
        .message_body("hi")
        .send()
        .await
        .expect_err("opted out on the pool's list");
    assert_eq!(via_pool.code(), Some("ConflictException"));
    c.send_text_message()
        .origination_identity(&number)
        .destination_phone_number("+12065550155")
        .message_body("hi")
        .send()
        .await
        .expect("the number's own list does not name it");
}

/// Keywords on a number and on a pool: HELP and STOP are always there and cannot be changed or
/// deleted; others are created, updated, filtered, paged, deleted, and limited in number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keywords_on_numbers_and_pools() {
    use aws_sdk_pinpointsmsvoicev2::operation::delete_keyword::DeleteKeywordError;
    use aws_sdk_pinpointsmsvoicev2::operation::put_keyword::PutKeywordError;
    use aws_sdk_pinpointsmsvoicev2::types::{KeywordAction, KeywordFilter, KeywordFilterName};
    let server = TestServer::start_with(|c| c.quotas.keywords_per_origination = 3);
    let c = server.client(ACCOUNT);
    let number = number_on_list(&c, "Default").await.expect("number");
    let pool = common::create_pool(&c, &number).await;
    for identity in [number.as_str(), pool.as_str()] {
        let all = c
            .describe_keywords()
            .origination_identity(identity)
            .send()
            .await
            .expect("DescribeKeywords");
        let names: Vec<&str> = all.keywords().iter().map(|k| k.keyword()).collect();
        assert_eq!(names, ["HELP", "STOP"], "{identity}");
        assert_eq!(all.origination_identity(), Some(identity));

        let put = c
            .put_keyword()
            .origination_identity(identity)
            .keyword("INFO")
            .keyword_message("Open 9 to 5")
            .send()
            .await
            .expect("PutKeyword");
        assert_eq!(put.keyword_action(), Some(&KeywordAction::AutomaticResponse));
        assert!(put.origination_identity_arn().is_some_and(|a| a.ends_with(identity)));
        let updated = c
            .put_keyword()
            .origination_identity(identity)
            .keyword("INFO")
            .keyword_message("Open 8 to 6")
            .keyword_action(KeywordAction::OptIn)
            .send()
            .await
            .expect("update");
        assert_eq!(updated.keyword_message(), Some("Open 8 to 6"));
        for k in ["JOIN", "DEALS"] {
            c.put_keyword()
                .origination_identity(identity)
                .keyword(k)
                .keyword_message("ok")
                .send()
                .await
                .expect("put");
        }
        match c
            .put_keyword()
            .origination_identity(identity)
            .keyword("MORE")
            .keyword_message("over")
            .send()
            .await
            .expect_err("a fourth of its own")
            .into_service_error()
        {
            PutKeywordError::ServiceQuotaExceededException(e) => {
                let expected = if identity == pool {
                    "KEYWORDS_PER_POOL"
                } else {
                    "KEYWORDS_PER_PHONE_NUMBER"
                };
                assert_eq!(e.reason().map(|r| r.as_str()), Some(expected))
            }
            other => panic!("{other:?}"),
        }
        // "Keywords "HELP" and "STOP" can't be deleted or modified."
        let stop = c
            .put_keyword()
            .origination_identity(identity)
            .keyword("stop")
            .keyword_message("no")
            .send()
            .await;
        assert_eq!(stop.expect_err("STOP").code(), Some("ConflictException"));
        match c
            .delete_keyword()
            .origination_identity(identity)
            .keyword("HELP")
            .send()
            .await
            .expect_err("HELP")
            .into_service_error()
        {
            DeleteKeywordError::ConflictException(e) => assert_eq!(e.reason(), Some(&ConflictExceptionReason::ResourceDeletionNotAllowed)),
            other => panic!("{other:?}"),
        }
        // Filters, names and pages.
        let opt_in = c
            .describe_keywords()
            .origination_identity(identity)
            .filters(
                KeywordFilter::builder()
                    .name(KeywordFilterName::KeywordAction)
                    .values("OPT_IN")
                    .build()
                    .expect("filter"),
            )
            .send()
            .await
            .expect("filtered");
        assert_eq!(opt_in.keywords().iter().map(|k| k.keyword()).collect::<Vec<_>>(), ["INFO"]);
        let pages: Vec<_> = c
            .describe_keywords()
            .origination_identity(identity)
            .max_results(2)
            .into_paginator()
            .send()
            .collect::<Vec<_>>()
            .await;
        let seen: Vec<String> = pages
            .into_iter()
            .flat_map(|p| {
                p.expect("page")
                    .keywords()
                    .iter()
                    .map(|k| k.keyword().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(seen, ["DEALS", "HELP", "INFO", "JOIN", "STOP"]);
        // Deleted once; then not found.
        let deleted = c
            .delete_keyword()
            .origination_identity(identity)
            .keyword("info")
            .send()
            .await
            .expect("DeleteKeyword");
        assert_eq!(deleted.keyword(), Some("INFO"));
        match c
            .delete_keyword()
            .origination_identity(identity)
            .keyword("INFO")
            .send()
            .await
            .expect_err("gone")
            .into_service_error()
        {
            DeleteKeywordError::ResourceNotFoundException(e) => assert_eq!(e.resource_type(), Some(&ResourceType::Keyword)),
            other => panic!("{other:?}"),
        }
    }
    // Not the caller's: not found.
    let other = server.client(OTHER_ACCOUNT);
    let e = other
        .describe_keywords()
        .origination_identity(&number)
        .send()
        .await
        .expect_err("foreign");
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
}

/// The account operations: its tier, its quotas with what is in use (per account and region),
/// and its spend limits, as configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_reports_its_limits_and_what_is_in_use() {
    use aws_sdk_pinpointsmsvoicev2::types::{AccountAttributeName, AccountLimitName, SpendLimitName};
    let server = TestServer::start_with(|c| {
        c.quotas.phone_numbers_per_account = 5;
        c.quotas.pools_per_account = 2;
        c.quotas.opt_out_lists_per_account = 4;
        c.account.tier = "SANDBOX".into();
        c.account.text_monthly_spend_limit = 7;
    });
    let c = server.client(ACCOUNT);
    let number = number_on_list(&c, "Default").await.expect("number");
    number_on_list(&c, "Default").await.expect("number");
    common::create_pool(&c, &number).await;
    c.create_opt_out_list().opt_out_list_name("one").send().await.expect("list");

    let attributes = c.describe_account_attributes().send().await.expect("DescribeAccountAttributes");
    let tier = &attributes.account_attributes()[0];
    assert_eq!((tier.name(), tier.value()), (&AccountAttributeName::AccountTier, "SANDBOX"));

    let limits = c.describe_account_limits().send().await.expect("DescribeAccountLimits");
    let got: Vec<(AccountLimitName, i64, i64)> = limits
        .account_limits()
        .iter()
        .map(|l| (l.name().clone(), l.used(), l.max()))
        .collect();
    assert_eq!(
        got,
        [
            (AccountLimitName::PhoneNumbers, 2, 5),
            (AccountLimitName::Pools, 1, 2),
            (AccountLimitName::OptOutLists, 2, 4), // Default and "one"
            (AccountLimitName::SenderIds, 0, 25),
        ]
    );
    // Per account: another sees its own (nothing).
    let other = server.client(OTHER_ACCOUNT).describe_account_limits().send().await.expect("other");
    assert!(other.account_limits().iter().all(|l| l.used() == 0));

    let spend = c.describe_spend_limits().send().await.expect("DescribeSpendLimits");
    let text = spend
        .spend_limits()
        .iter()
        .find(|l| l.name() == &SpendLimitName::TextMessageMonthlySpendLimit)
        .expect("text");
    assert_eq!((text.enforced_limit(), text.max_limit(), text.overridden()), (7, 7, false));
    assert_eq!(spend.spend_limits().len(), 3);

    // Paginated as the model says (MaxResults, NextToken), like every other listing: the SDK's
    // paginator reads every page; a token that is not the server's is refused.
    let pages: Vec<_> = c
        .describe_spend_limits()
        .max_results(2)
        .into_paginator()
        .send()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|page| page.expect("page").spend_limits().len())
        .collect();
    assert_eq!(pages, [2, 1]);
    let limits: usize = c
        .describe_account_limits()
        .max_results(1)
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await
        .len();
    assert_eq!(limits, got.len());
    let forged = c
        .describe_account_attributes()
        .next_token("not-a-token")
        .send()
        .await
        .expect_err("forged token");
    assert_eq!(forged.code(), Some("ValidationException"));
}
