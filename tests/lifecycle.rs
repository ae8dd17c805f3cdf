//! The phone-number lifecycle through the official AWS SDK for Rust, against the real server:
//! request, describe, update, pool membership, release, with every error's exact code and
//! `Reason`, id and ARN forms, pagination, idempotency, quotas, account isolation and restart.

mod common;

use std::collections::BTreeSet;

use common::request;

use aws_sdk_pinpointsmsvoicev2::error::ProvideErrorMetadata;
use aws_sdk_pinpointsmsvoicev2::operation::associate_origination_identity::AssociateOriginationIdentityError;
use aws_sdk_pinpointsmsvoicev2::operation::delete_pool::DeletePoolError;
use aws_sdk_pinpointsmsvoicev2::operation::describe_phone_numbers::DescribePhoneNumbersError;
use aws_sdk_pinpointsmsvoicev2::operation::disassociate_origination_identity::DisassociateOriginationIdentityError;
use aws_sdk_pinpointsmsvoicev2::operation::release_phone_number::ReleasePhoneNumberError;
use aws_sdk_pinpointsmsvoicev2::operation::request_phone_number::RequestPhoneNumberError;
use aws_sdk_pinpointsmsvoicev2::types::{
    ConflictExceptionReason, MessageType, NumberCapability, NumberStatus, NumberType, PhoneNumberFilter, PhoneNumberFilterName, PoolFilter,
    PoolFilterName, PoolOriginationIdentitiesFilter, PoolOriginationIdentitiesFilterName, PoolStatus, RequestableNumberType, ResourceType,
    ServiceQuotaExceededExceptionReason, ValidationExceptionReason,
};
use common::{TestServer, ACCOUNT, OTHER_ACCOUNT, REGION};

fn release_conflict(e: aws_sdk_pinpointsmsvoicev2::error::SdkError<ReleasePhoneNumberError>) -> ConflictExceptionReason {
    match e.into_service_error() {
        ReleasePhoneNumberError::ConflictException(c) => c.reason().cloned().expect("Reason"),
        other => panic!("expected ConflictException, got {other:?}"),
    }
}

fn release_not_found(e: aws_sdk_pinpointsmsvoicev2::error::SdkError<ReleasePhoneNumberError>, id: &str) {
    match e.into_service_error() {
        ReleasePhoneNumberError::ResourceNotFoundException(n) => {
            assert_eq!(n.resource_type(), Some(&ResourceType::PhoneNumber));
            assert_eq!(n.resource_id(), Some(id));
        }
        other => panic!("expected ResourceNotFoundException, got {other:?}"),
    }
}

/// The ReleasePhoneNumber reference page, end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_with_every_release_error() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);

    let requested = c
        .request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Transactional)
        .number_capabilities(NumberCapability::Sms)
        .number_type(RequestableNumberType::TollFree)
        .deletion_protection_enabled(true)
        .tags(
            aws_sdk_pinpointsmsvoicev2::types::Tag::builder()
                .key("team")
                .value("billing")
                .build()
                .expect("tag"),
        )
        .send()
        .await
        .expect("RequestPhoneNumber");
    let id = requested.phone_number_id().expect("id").to_string();
    assert!(id.starts_with("phone-") && id.len() == 38, "{id}");
    assert_eq!(
        requested.phone_number_arn(),
        Some(format!("arn:aws:sms-voice:{REGION}:{ACCOUNT}:phone-number/{id}").as_str())
    );
    assert_eq!(requested.status(), Some(&NumberStatus::Active));
    assert_eq!(requested.monthly_leasing_price(), Some("2.00"));
    assert_eq!(requested.opt_out_list_name(), Some("Default"));
    assert!(requested.deletion_protection_enabled());
    assert_eq!(requested.tags().len(), 1);
    let e164 = requested.phone_number().expect("number").to_string();
    assert!(e164.starts_with("+18"), "toll-free US number: {e164}");

    // Deletion protection on → DELETION_PROTECTION_ENABLED.
    let err = c.release_phone_number().phone_number_id(&id).send().await.expect_err("protected");
    assert_eq!(release_conflict(err), ConflictExceptionReason::DeletionProtectionEnabled);

    let updated = c
        .update_phone_number()
        .phone_number_id(&id)
        .deletion_protection_enabled(false)
        .send()
        .await
        .expect("unprotect");
    assert!(!updated.deletion_protection_enabled());

    // Member of a pool → PHONE_NUMBER_ASSOCIATED_TO_POOL.
    let pool = c
        .create_pool()
        .origination_identity(&id)
        .message_type(MessageType::Transactional)
        .send()
        .await
        .expect("CreatePool");
    let pool_id = pool.pool_id().expect("pool id").to_string();
    assert!(pool_id.starts_with("pool-") && pool_id.len() == 37);
    assert_eq!(pool.status(), Some(&PoolStatus::Active));
    let err = c.release_phone_number().phone_number_id(&id).send().await.expect_err("pooled");
    assert_eq!(release_conflict(err), ConflictExceptionReason::PhoneNumberAssociatedToPool);

    let described = c.describe_phone_numbers().phone_number_ids(&id).send().await.expect("describe");
    assert_eq!(described.phone_numbers()[0].pool_id(), Some(pool_id.as_str()));

    // The last number cannot leave: LAST_PHONE_NUMBER.
    let err = c
        .disassociate_origination_identity()
        .pool_id(&pool_id)
        .origination_identity(&id)
        .send()
        .await
        .expect_err("last");
    match err.into_service_error() {
        DisassociateOriginationIdentityError::ConflictException(e) => {
            assert_eq!(e.reason(), Some(&ConflictExceptionReason::LastPhoneNumber))
        }
        other => panic!("{other:?}"),
    }

    let second = request(&c, MessageType::Transactional).await;
    let assoc = c
        .associate_origination_identity()
        .pool_id(&pool_id)
        .origination_identity(&second)
        .send()
        .await
        .expect("associate");
    assert_eq!(assoc.origination_identity(), Some(second.as_str()));
    assert_eq!(assoc.pool_id(), Some(pool_id.as_str()));
    assert_eq!(assoc.iso_country_code(), Some("US"));
    let members = c.list_pool_origination_identities().pool_id(&pool_id).send().await.expect("list");
    assert_eq!(members.origination_identities().len(), 2);
    assert_eq!(members.pool_id(), Some(pool_id.as_str()));

    c.disassociate_origination_identity()
        .pool_id(&pool_id)
        .origination_identity(&id)
        .send()
        .await
        .expect("disassociate");

    // Success: every member of ReleasePhoneNumberResult, Status DELETED.
    let released = c.release_phone_number().phone_number_id(&id).send().await.expect("release");
    assert_eq!(released.status(), Some(&NumberStatus::Deleted));
    assert_eq!(released.phone_number_id(), Some(id.as_str()));
    assert_eq!(released.phone_number(), Some(e164.as_str()));
    assert_eq!(released.phone_number_arn(), requested.phone_number_arn());
    assert_eq!(released.iso_country_code(), Some("US"));
    assert_eq!(released.message_type(), Some(&MessageType::Transactional));
    assert_eq!(released.number_type(), Some(&NumberType::TollFree));
    assert_eq!(released.number_capabilities(), &[NumberCapability::Sms]);
    assert_eq!(released.monthly_leasing_price(), Some("2.00"));
    assert_eq!(released.opt_out_list_name(), Some("Default"));
    assert!(released.created_timestamp().is_some());
    assert!(!released.two_way_enabled() && !released.self_managed_opt_outs_enabled());

    // Gone from Describe; a second release is ResourceNotFoundException.
    let all = c.describe_phone_numbers().send().await.expect("describe all");
    assert!(all.phone_numbers().iter().all(|n| n.phone_number_id() != Some(id.as_str())));
    let err = c.describe_phone_numbers().phone_number_ids(&id).send().await.expect_err("gone");
    assert!(matches!(
        err.into_service_error(),
        DescribePhoneNumbersError::ResourceNotFoundException(_)
    ));
    let err = c.release_phone_number().phone_number_id(&id).send().await.expect_err("twice");
    release_not_found(err, &id);

    // A released number cannot join a pool.
    let err = c
        .associate_origination_identity()
        .pool_id(&pool_id)
        .origination_identity(&id)
        .send()
        .await
        .expect_err("released");
    assert!(matches!(
        err.into_service_error(),
        AssociateOriginationIdentityError::ResourceNotFoundException(_)
    ));

    // DeletePool lets its members go.
    let deleted = c.delete_pool().pool_id(&pool_id).send().await.expect("DeletePool");
    assert_eq!(deleted.pool_id(), Some(pool_id.as_str()));
    let n = c
        .describe_phone_numbers()
        .phone_number_ids(&second)
        .send()
        .await
        .expect("describe second");
    assert_eq!(n.phone_numbers()[0].pool_id(), None);
    assert_eq!(n.phone_numbers()[0].status(), &NumberStatus::Active);
    c.release_phone_number()
        .phone_number_id(&second)
        .send()
        .await
        .expect("release freed member");
    assert!(c.describe_pools().send().await.expect("pools").pools().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_accept_ids_and_arns_but_not_other_accounts_arns() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let id = request(&c, MessageType::Transactional).await;
    let arn = format!("arn:aws:sms-voice:{REGION}:{ACCOUNT}:phone-number/{id}");
    let by_arn = c
        .describe_phone_numbers()
        .phone_number_ids(&arn)
        .send()
        .await
        .expect("describe by ARN");
    assert_eq!(by_arn.phone_numbers()[0].phone_number_id(), Some(id.as_str()));
    c.update_phone_number()
        .phone_number_id(&arn)
        .self_managed_opt_outs_enabled(true)
        .send()
        .await
        .expect("update by ARN");
    c.put_keyword()
        .origination_identity(&arn)
        .keyword("HOURS")
        .keyword_message("Open 9-5")
        .send()
        .await
        .expect("keyword by ARN");

    let pool = c
        .create_pool()
        .origination_identity(&arn)
        .message_type(MessageType::Transactional)
        .send()
        .await
        .expect("pool by ARN");
    let pool_arn = pool.pool_arn().expect("arn").to_string();
    assert_eq!(
        pool_arn,
        format!("arn:aws:sms-voice:{REGION}:{ACCOUNT}:pool/{}", pool.pool_id().expect("id"))
    );
    assert!(
        pool.self_managed_opt_outs_enabled(),
        "a pool inherits its first identity's settings"
    );
    let keywords = c
        .describe_keywords()
        .origination_identity(pool.pool_id().expect("id"))
        .send()
        .await
        .expect("the pool's keywords");
    assert!(
        keywords.keywords().iter().any(|k| k.keyword() == "HOURS"),
        "and its keywords: {keywords:?}"
    );
    let pools = c.describe_pools().pool_ids(&pool_arn).send().await.expect("describe pool by ARN");
    assert_eq!(pools.pools().len(), 1);
    c.delete_pool().pool_id(&pool_arn).send().await.expect("delete by ARN");

    // The same ARN with another account or region names nothing.
    let foreign_arn = format!("arn:aws:sms-voice:{REGION}:{OTHER_ACCOUNT}:phone-number/{id}");
    release_not_found(
        c.release_phone_number()
            .phone_number_id(&foreign_arn)
            .send()
            .await
            .expect_err("foreign ARN"),
        &foreign_arn,
    );
    let wrong_region = format!("arn:aws:sms-voice:eu-west-1:{ACCOUNT}:phone-number/{id}");
    assert!(c.release_phone_number().phone_number_id(&wrong_region).send().await.is_err());
    let released = c.release_phone_number().phone_number_id(&arn).send().await.expect("release by ARN");
    assert_eq!(released.status(), Some(&NumberStatus::Deleted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_isolated() {
    let server = TestServer::start();
    let mine = server.client(ACCOUNT);
    let theirs = server.client(OTHER_ACCOUNT);
    let id = request(&mine, MessageType::Transactional).await;
    let arn = format!("arn:aws:sms-voice:{REGION}:{ACCOUNT}:phone-number/{id}");
    let pool = common::create_pool(&mine, &id).await;
    // The number's and the pool's histories, from the audit API.
    let history = |stream: String| {
        let url = server.url();
        async move {
            let kind = if stream.starts_with("pool-") { "pools" } else { "phone-numbers" };
            let body: serde_json::Value = reqwest::get(format!("{url}/audit/{kind}/{stream}/events"))
                .await
                .expect("GET")
                .json()
                .await
                .expect("JSON");
            body["Events"].as_array().map_or(0, Vec::len)
        }
    };
    let before = (history(id.clone()).await, history(pool.clone()).await);
    assert!(before.0 > 0 && before.1 > 0);

    assert!(theirs
        .describe_phone_numbers()
        .send()
        .await
        .expect("their list")
        .phone_numbers()
        .is_empty());
    for target in [&id, &arn] {
        release_not_found(
            theirs
                .release_phone_number()
                .phone_number_id(target)
                .send()
                .await
                .expect_err("not theirs"),
            target,
        );
        let updated = theirs
            .update_phone_number()
            .phone_number_id(target)
            .deletion_protection_enabled(true)
            .send()
            .await;
        assert_eq!(updated.expect_err("not theirs").code(), Some("ResourceNotFoundException"));
        let pooled = theirs
            .create_pool()
            .origination_identity(target)
            .message_type(MessageType::Transactional)
            .send()
            .await;
        assert_eq!(pooled.expect_err("not theirs").code(), Some("ResourceNotFoundException"));
    }
    // Another region of the same account is another scope too.
    let elsewhere = common::client_for(&server.url(), ACCOUNT, "eu-west-1");
    assert!(elsewhere
        .describe_phone_numbers()
        .send()
        .await
        .expect("list")
        .phone_numbers()
        .is_empty());
    // Their commands on my pool are not found either.
    let deleted = theirs.delete_pool().pool_id(&pool).send().await;
    assert_eq!(deleted.expect_err("not theirs").code(), Some("ResourceNotFoundException"));
    let left = theirs
        .disassociate_origination_identity()
        .pool_id(&pool)
        .origination_identity(&id)
        .send()
        .await;
    assert_eq!(left.expect_err("not theirs").code(), Some("ResourceNotFoundException"));
    // Still mine, untouched: nothing of theirs was written to my streams (a refusal for a
    // resource they cannot see is "not found", as for an id that never existed).
    let n = mine.describe_phone_numbers().phone_number_ids(&id).send().await.expect("mine");
    assert!(!n.phone_numbers()[0].deletion_protection_enabled());
    assert_eq!(
        (history(id.clone()).await, history(pool.clone()).await),
        before,
        "no events by another account"
    );
    // My own refused command on my released number is still recorded.
    mine.delete_pool().pool_id(&pool).send().await.expect("delete pool");
    mine.release_phone_number().phone_number_id(&id).send().await.expect("release");
    let released = history(id.clone()).await;
    assert!(mine.release_phone_number().phone_number_id(&id).send().await.is_err());
    assert_eq!(history(id.clone()).await, released + 1, "my refusal is on my number's history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_paginates_with_opaque_tokens_and_filters() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let mut ids = Vec::new();
    for i in 0..7 {
        let t = if i % 2 == 0 {
            MessageType::Transactional
        } else {
            MessageType::Promotional
        };
        ids.push(request(&c, t).await);
    }
    c.update_phone_number()
        .phone_number_id(&ids[0])
        .deletion_protection_enabled(true)
        .send()
        .await
        .expect("protect");

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let out = c
            .describe_phone_numbers()
            .max_results(3)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("page");
        pages += 1;
        assert!(out.phone_numbers().len() <= 3);
        seen.extend(out.phone_numbers().iter().map(|n| n.phone_number_id().expect("id").to_string()));
        match out.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);

    // The SDK's own paginator walks the same pages.
    let via_paginator: Vec<_> = c
        .describe_phone_numbers()
        .max_results(2)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("paginator");
    assert_eq!(via_paginator.len(), 7);

    let filter = |name: PhoneNumberFilterName, value: &str| PhoneNumberFilter::builder().name(name).values(value).build().expect("filter");
    let promo = c
        .describe_phone_numbers()
        .filters(filter(PhoneNumberFilterName::MessageType, "PROMOTIONAL"))
        .send()
        .await
        .expect("filtered");
    assert_eq!(promo.phone_numbers().len(), 3);
    let both = c
        .describe_phone_numbers()
        .filters(filter(PhoneNumberFilterName::MessageType, "TRANSACTIONAL"))
        .filters(filter(PhoneNumberFilterName::DeletionProtectionEnabled, "true"))
        .send()
        .await
        .expect("two filters");
    assert_eq!(both.phone_numbers().len(), 1);
    assert_eq!(both.phone_numbers()[0].phone_number_id(), Some(ids[0].as_str()));
    let sms = c
        .describe_phone_numbers()
        .filters(filter(PhoneNumberFilterName::NumberCapability, "VOICE"))
        .send()
        .await
        .expect("capability");
    assert_eq!(sms.phone_numbers().len(), 7);

    // A forged token and a bad filter value are ValidationExceptions.
    let err = c
        .describe_phone_numbers()
        .next_token("eyJvcCI6IkRlc2NyaWJlUGhvbmVOdW1iZXJzIn0.AAAA")
        .send()
        .await
        .expect_err("forged");
    match err.into_service_error() {
        DescribePhoneNumbersError::ValidationException(v) => assert_eq!(v.reason(), Some(&ValidationExceptionReason::InvalidNextToken)),
        other => panic!("{other:?}"),
    }
    let err = c
        .describe_phone_numbers()
        .filters(filter(PhoneNumberFilterName::Status, "SLEEPING"))
        .send()
        .await
        .expect_err("bad value");
    match err.into_service_error() {
        DescribePhoneNumbersError::ValidationException(v) => assert_eq!(v.reason(), Some(&ValidationExceptionReason::InvalidFilterValues)),
        other => panic!("{other:?}"),
    }
    // A token is bound to its operation.
    let page = c.describe_phone_numbers().max_results(1).send().await.expect("page");
    let token = page.next_token().expect("more").to_string();
    assert!(c.describe_pools().next_token(token).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_filter_and_list_their_identities() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let a = request(&c, MessageType::Transactional).await;
    let b = request(&c, MessageType::Transactional).await;
    let promo = request(&c, MessageType::Promotional).await;
    let pool = c
        .create_pool()
        .origination_identity(&a)
        .message_type(MessageType::Transactional)
        .deletion_protection_enabled(true)
        .send()
        .await
        .expect("pool");
    let pool_id = pool.pool_id().expect("id").to_string();
    c.associate_origination_identity()
        .pool_id(&pool_id)
        .origination_identity(&b)
        .iso_country_code("US")
        .send()
        .await
        .expect("associate");

    // MESSAGE_TYPE_MISMATCH.
    let err = c
        .associate_origination_identity()
        .pool_id(&pool_id)
        .origination_identity(&promo)
        .send()
        .await
        .expect_err("mismatch");
    match err.into_service_error() {
        AssociateOriginationIdentityError::ConflictException(e) => {
            assert_eq!(e.reason(), Some(&ConflictExceptionReason::MessageTypeMismatch))
        }
        other => panic!("{other:?}"),
    }
    // A number belongs to at most one pool.
    let other_pool = c
        .create_pool()
        .origination_identity(&promo)
        .message_type(MessageType::Promotional)
        .send()
        .await
        .expect("second pool");
    let err = c
        .associate_origination_identity()
        .pool_id(other_pool.pool_id().expect("id"))
        .origination_identity(&a)
        .send()
        .await
        .expect_err("taken");
    assert!(matches!(
        err.into_service_error(),
        AssociateOriginationIdentityError::ConflictException(_)
    ));

    let us = PoolOriginationIdentitiesFilter::builder()
        .name(PoolOriginationIdentitiesFilterName::IsoCountryCode)
        .values("US")
        .build()
        .expect("f");
    let identities = c
        .list_pool_origination_identities()
        .pool_id(&pool_id)
        .filters(us.clone())
        .max_results(1)
        .send()
        .await
        .expect("list");
    assert_eq!(identities.origination_identities().len(), 1);
    let token = identities.next_token().expect("more");
    // A token serves the listing it was given for: not the pool's members unfiltered, nor
    // another pool's.
    for (pool, filtered) in [(pool_id.as_str(), false), (other_pool.pool_id().expect("id"), true)] {
        let err = c
            .list_pool_origination_identities()
            .pool_id(pool)
            .set_filters(filtered.then(|| vec![us.clone()]))
            .next_token(token)
            .send()
            .await
            .expect_err("another listing");
        assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
        assert!(format!("{err:?}").contains("INVALID_NEXT_TOKEN"), "{err:?}");
    }
    let rest = c
        .list_pool_origination_identities()
        .pool_id(&pool_id)
        .filters(us)
        .max_results(5)
        .next_token(token)
        .send()
        .await
        .expect("page 2");
    assert_eq!(rest.origination_identities().len(), 1);
    assert_ne!(
        rest.origination_identities()[0].origination_identity(),
        identities.origination_identities()[0].origination_identity()
    );

    let protected = c
        .describe_pools()
        .filters(
            PoolFilter::builder()
                .name(PoolFilterName::DeletionProtectionEnabled)
                .values("true")
                .build()
                .expect("f"),
        )
        .send()
        .await
        .expect("describe pools");
    assert_eq!(protected.pools().len(), 1);
    assert_eq!(protected.pools()[0].pool_id(), pool_id.as_str());

    // DeletePool honours deletion protection.
    let err = c.delete_pool().pool_id(&pool_id).send().await.expect_err("protected pool");
    match err.into_service_error() {
        DeletePoolError::ConflictException(e) => assert_eq!(e.reason(), Some(&ConflictExceptionReason::DeletionProtectionEnabled)),
        other => panic!("{other:?}"),
    }
    // Unknown pools are ResourceNotFoundException with ResourceType pool.
    let err = c
        .delete_pool()
        .pool_id("pool-00000000000000000000000000000000")
        .send()
        .await
        .expect_err("unknown");
    match err.into_service_error() {
        DeletePoolError::ResourceNotFoundException(e) => assert_eq!(e.resource_type(), Some(&ResourceType::Pool)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tokens_make_requests_idempotent_and_quotas_hold() {
    let server = TestServer::start_with(|c| c.quotas.phone_numbers_per_account = 3);
    let c = server.client(ACCOUNT);
    let send = || {
        c.request_phone_number()
            .iso_country_code("GB")
            .message_type(MessageType::Promotional)
            .number_capabilities(NumberCapability::Sms)
            .number_type(RequestableNumberType::LongCode)
            .client_token("once-only-1")
            .send()
    };
    let first = send().await.expect("first");
    let again = send().await.expect("retry");
    assert_eq!(first.phone_number_id(), again.phone_number_id());
    assert!(first.phone_number().expect("number").starts_with("+44"));
    request(&c, MessageType::Transactional).await;
    request(&c, MessageType::Transactional).await;
    let err = c
        .request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Transactional)
        .number_capabilities(NumberCapability::Sms)
        .number_type(RequestableNumberType::LongCode)
        .send()
        .await
        .expect_err("quota");
    match err.into_service_error() {
        RequestPhoneNumberError::ServiceQuotaExceededException(q) => {
            assert_eq!(q.reason(), Some(&ServiceQuotaExceededExceptionReason::PhoneNumbersPerAccount))
        }
        other => panic!("{other:?}"),
    }
    // Releasing one frees quota; other accounts have their own.
    c.release_phone_number()
        .phone_number_id(first.phone_number_id().expect("id"))
        .send()
        .await
        .expect("release");
    request(&c, MessageType::Transactional).await;
    request(&server.client(OTHER_ACCOUNT), MessageType::Transactional).await;
}

/// A client token names one request: sent again unchanged (tags in another order, the ARN for
/// the id) it gets the first answer; sent with other parameters, one by one or racing the first,
/// it is refused with ConflictException naming the resource the token created, which stays as it
/// was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_token_reused_with_other_parameters_is_refused() {
    use aws_sdk_pinpointsmsvoicev2::operation::create_pool::CreatePoolError;
    use aws_sdk_pinpointsmsvoicev2::types::Tag;
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build().expect("tag");
    let send = |kind: MessageType, tags: Vec<Tag>, token: &'static str| {
        c.request_phone_number()
            .iso_country_code("US")
            .message_type(kind)
            .number_capabilities(NumberCapability::Sms)
            .number_type(RequestableNumberType::LongCode)
            .set_tags(Some(tags))
            .client_token(token)
            .send()
    };
    let first = send(MessageType::Transactional, vec![tag("a", "1"), tag("b", "2")], "token-1")
        .await
        .expect("first");
    let id = first.phone_number_id().expect("id").to_string();
    let same = send(MessageType::Transactional, vec![tag("b", "2"), tag("a", "1")], "token-1")
        .await
        .expect("the same request, tags reordered");
    assert_eq!(same.phone_number_id(), Some(id.as_str()));
    for (kind, tags) in [
        (MessageType::Promotional, vec![tag("a", "1"), tag("b", "2")]),
        (MessageType::Transactional, vec![tag("a", "1")]),
    ] {
        let err = send(kind, tags, "token-1").await.expect_err("other parameters");
        match err.into_service_error() {
            RequestPhoneNumberError::ConflictException(e) => {
                assert_eq!(e.reason(), Some(&ConflictExceptionReason::ResourceAlreadyExists));
                assert_eq!(e.resource_id(), Some(id.as_str()));
                assert!(e.message().unwrap_or_default().contains("client token"), "{e:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Racing: of requests with one new token and two different message types, those asking what
    // the winner asked get its number, the others are refused; one number is created.
    let mut racing = Vec::new();
    for i in 0..8 {
        let kind = if i % 2 == 0 {
            MessageType::Transactional
        } else {
            MessageType::Promotional
        };
        racing.push(async move { (kind.clone(), send(kind, vec![], "token-2").await) });
    }
    let answers = futures_util::future::join_all(racing).await;
    let winners: std::collections::BTreeSet<(String, String)> = answers
        .iter()
        .filter_map(|(kind, a)| {
            a.as_ref()
                .ok()
                .map(|o| (kind.as_str().to_string(), o.phone_number_id().unwrap_or_default().to_string()))
        })
        .collect();
    assert_eq!(winners.len(), 1, "one number, one message type: {winners:?}");
    let refused = answers.iter().filter(|(_, a)| a.is_err()).count();
    assert_eq!(refused, 4, "the other message type is refused every time");

    // The same for a pool.
    let pool = c
        .create_pool()
        .origination_identity(&id)
        .message_type(MessageType::Transactional)
        .client_token("pool-token")
        .send()
        .await
        .expect("pool");
    let pool_id = pool.pool_id().expect("pool id");
    let again = c
        .create_pool()
        .origination_identity(first.phone_number_arn().expect("arn"))
        .message_type(MessageType::Transactional)
        .client_token("pool-token")
        .send()
        .await
        .expect("the same request, the number by ARN");
    assert_eq!(again.pool_id(), Some(pool_id));
    let err = c
        .create_pool()
        .origination_identity(&id)
        .message_type(MessageType::Transactional)
        .deletion_protection_enabled(true)
        .client_token("pool-token")
        .send()
        .await
        .expect_err("other parameters");
    match err.into_service_error() {
        CreatePoolError::ConflictException(e) => assert_eq!(e.resource_id(), Some(pool_id)),
        other => panic!("{other:?}"),
    }
}

/// Number preferences; a country the service does not supply; a SIMULATOR number is transactional.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_preferences_and_unavailable_countries() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let pref = aws_sdk_pinpointsmsvoicev2::types::NumberPreferenceItem::builder()
        .filter("+1415")
        .preference_type(aws_sdk_pinpointsmsvoicev2::types::PreferenceType::StartsWith)
        .build()
        .expect("pref");
    let out = c
        .request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Transactional)
        .number_capabilities(NumberCapability::Sms)
        .number_type(RequestableNumberType::LongCode)
        .number_preference(pref)
        .send()
        .await
        .expect("preferred");
    assert!(out.phone_number().expect("n").starts_with("+1415"));
    let err = c
        .request_phone_number()
        .iso_country_code("JP")
        .message_type(MessageType::Transactional)
        .number_capabilities(NumberCapability::Sms)
        .number_type(RequestableNumberType::TollFree)
        .send()
        .await
        .expect_err("no supply");
    assert_eq!(err.code(), Some("ValidationException"));
    // "When you request a SIMULATOR phone number, you must set MessageType as TRANSACTIONAL."
    let simulator = |message_type| {
        c.request_phone_number()
            .iso_country_code("US")
            .message_type(message_type)
            .number_capabilities(NumberCapability::Sms)
            .number_type(RequestableNumberType::Simulator)
            .send()
    };
    let promotional = simulator(MessageType::Promotional).await.expect_err("promotional");
    assert_eq!(promotional.code(), Some("ValidationException"));
    let into_no_pool = c
        .request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Promotional)
        .number_capabilities(NumberCapability::Sms)
        .number_type(RequestableNumberType::Simulator)
        .pool_id("pool-00000000000000000000000000000000")
        .send()
        .await
        .expect_err("promotional, into a pool that is not there");
    assert_eq!(into_no_pool.code(), Some("ValidationException"), "the request's own fault first");
    let made = simulator(MessageType::Transactional).await.expect("transactional");
    assert_eq!(made.number_type(), Some(&RequestableNumberType::Simulator));
}

/// ListAvailablePhoneNumbers: pages of numbers nobody holds, each listed once, matching the
/// preference; the SDK's paginator comes to an end (a listing lists 100 at most); a listed
/// number can be requested (ExactMatch) and is then no longer listed, to any account; a
/// pattern preference takes one value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn available_numbers_are_listed_once_and_not_once_requested() {
    use aws_sdk_pinpointsmsvoicev2::types::{NumberPreferenceItem, PreferenceType, SearchableNumberType};
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let preference = |kind: PreferenceType, value: &str| {
        NumberPreferenceItem::builder()
            .filter(value)
            .preference_type(kind)
            .build()
            .expect("preference")
    };
    let list = |c: &aws_sdk_pinpointsmsvoicev2::Client| {
        c.list_available_phone_numbers()
            .iso_country_code("US")
            .number_capabilities(NumberCapability::Sms)
            .number_type(SearchableNumberType::TenDlc)
    };

    let mut all = Vec::new();
    let mut pages = list(&c).max_results(7).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.expect("a page");
        assert!(page.available_phone_numbers().len() <= 7);
        all.extend(page.available_phone_numbers().iter().cloned());
    }
    assert_eq!(all.len(), 100, "a listing ends after 100 numbers");
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a number listed twice");
    assert!(all.iter().all(|n| n.starts_with("+1") && n.len() == 12), "{all:?}");
    let first_page = list(&c).send().await.expect("first page");
    assert_eq!(first_page.available_phone_numbers().len(), 10, "ten a page unless asked");

    // Requested (by any account), a listed number is no longer listed.
    let chosen = all[3].clone();
    let other = server.client(OTHER_ACCOUNT);
    let leased = other
        .request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Transactional)
        .number_capabilities(NumberCapability::Sms)
        .number_type(RequestableNumberType::TenDlc)
        .number_preference(preference(PreferenceType::ExactMatch, &chosen))
        .send()
        .await
        .expect("the listed number");
    assert_eq!(leased.phone_number(), Some(chosen.as_str()));
    let exact = list(&c)
        .number_preference(preference(PreferenceType::ExactMatch, &chosen))
        .send()
        .await
        .expect("exact");
    assert!(exact.available_phone_numbers().is_empty() && exact.next_token().is_none());

    let ending = list(&c)
        .number_preference(preference(PreferenceType::EndsWith, "4242"))
        .send()
        .await
        .expect("ending");
    assert_eq!(ending.available_phone_numbers().len(), 10);
    assert!(ending.available_phone_numbers().iter().all(|n| n.ends_with("4242")));

    // A token is for its own listing only; a country the service does not supply is refused.
    let token = first_page.next_token().expect("more").to_string();
    let other_listing = list(&c)
        .number_preference(preference(PreferenceType::EndsWith, "4242"))
        .next_token(token)
        .send()
        .await
        .expect_err("a token of another listing");
    assert_eq!(other_listing.code(), Some("ValidationException"));
    let nowhere = list(&c).iso_country_code("JP").send().await.expect_err("no supply");
    assert_eq!(nowhere.code(), Some("ValidationException"));
    let two_values = NumberPreferenceItem::builder()
        .filter("4242")
        .filter("4343")
        .preference_type(PreferenceType::EndsWith)
        .build()
        .expect("preference");
    let refused = list(&c).number_preference(two_values).send().await.expect_err("two values");
    assert_eq!(refused.code(), Some("ValidationException"));
}

/// Stop the server, start it on the same directory: everything is as before, rebuilt by replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_rebuilds_everything_from_the_log() {
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    let a = request(&c, MessageType::Transactional).await;
    let b = request(&c, MessageType::Transactional).await;
    let released = request(&c, MessageType::Transactional).await;
    c.update_phone_number()
        .phone_number_id(&a)
        .deletion_protection_enabled(true)
        .send()
        .await
        .expect("protect");
    let pool = c
        .create_pool()
        .origination_identity(&b)
        .message_type(MessageType::Transactional)
        .client_token("pool-token")
        .send()
        .await
        .expect("pool");
    c.release_phone_number().phone_number_id(&released).send().await.expect("release");
    let before = c.describe_phone_numbers().send().await.expect("before");

    server.restart();
    let c = server.client(ACCOUNT);
    let after = c.describe_phone_numbers().send().await.expect("after");
    assert_eq!(format!("{:?}", before.phone_numbers()), format!("{:?}", after.phone_numbers()));
    // Actor state is replayed: the rules still see protection, pool membership and the release.
    let err = c
        .release_phone_number()
        .phone_number_id(&a)
        .send()
        .await
        .expect_err("still protected");
    assert_eq!(release_conflict(err), ConflictExceptionReason::DeletionProtectionEnabled);
    let err = c.release_phone_number().phone_number_id(&b).send().await.expect_err("still pooled");
    assert_eq!(release_conflict(err), ConflictExceptionReason::PhoneNumberAssociatedToPool);
    release_not_found(
        c.release_phone_number()
            .phone_number_id(&released)
            .send()
            .await
            .expect_err("still released"),
        &released,
    );
    // Client tokens survive too.
    let again = c
        .create_pool()
        .origination_identity(&b)
        .message_type(MessageType::Transactional)
        .client_token("pool-token")
        .send()
        .await
        .expect("same pool");
    assert_eq!(again.pool_id(), pool.pool_id());

    // Dropping the derived index changes no answer: it is rebuilt from the log on start.
    server.stop();
    {
        phone_ledger::store::testing::drop_index(server.dir.path()).expect("drop index");
    }
    server.restart();
    let c = server.client(ACCOUNT);
    let rebuilt = c.describe_phone_numbers().send().await.expect("rebuilt");
    assert_eq!(format!("{:?}", before.phone_numbers()), format!("{:?}", rebuilt.phone_numbers()));
    let again = c
        .create_pool()
        .origination_identity(&b)
        .message_type(MessageType::Transactional)
        .client_token("pool-token")
        .send()
        .await
        .expect("same pool");
    assert_eq!(again.pool_id(), pool.pool_id());
}

/// Refusals are events on the stream; ids that never existed leave no trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_records_refusals_but_not_junk() {
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    let id = request(&c, MessageType::Transactional).await;
    c.update_phone_number()
        .phone_number_id(&id)
        .deletion_protection_enabled(true)
        .send()
        .await
        .expect("protect");
    c.release_phone_number().phone_number_id(&id).send().await.expect_err("refused");
    for _ in 0..5 {
        c.release_phone_number()
            .phone_number_id("phone-ffffffffffffffffffffffffffffffff")
            .send()
            .await
            .expect_err("junk");
        c.release_phone_number()
            .phone_number_id("not-an-id")
            .send()
            .await
            .expect_err("junk");
    }
    server.stop();
    let store = common::open_log_read_only(server.dir.path());
    let events = store.read_stream(&id, 1, usize::MAX).await.expect("stream");
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["PhoneNumberRequested", "PhoneNumberUpdated", "ReleaseRejected"]);
    assert_eq!(events[2].payload["Rejection"]["Reason"], "DELETION_PROTECTION_ENABLED");
    assert_eq!(events[2].account, ACCOUNT);
    assert_eq!(events[2].command, "ReleasePhoneNumber/Release");
    assert!(events.iter().enumerate().all(|(i, e)| e.version == i as u64 + 1));
    assert_eq!(store.chain_head().await.expect("head").position, 3, "junk ids created no stream");
    let junk = store.stream_head("phone-ffffffffffffffffffffffffffffffff").await.expect("head");
    assert_eq!(junk.version, 0);
    store.close().await.expect("close");
}

/// AssociateOriginationIdentity, `ClientToken`: "Unique, case-sensitive identifier that you
/// provide to ensure the idempotency of the request." A retry of a join that succeeded gets the
/// same answer and writes nothing; another token, or a repeat without one, is refused as already associated
/// (sent as raw AWS JSON: the SDK fills in a token of its own when none is given). The same for
/// DisassociateOriginationIdentity's token. RequestPhoneNumber into a pool of another message type is refused before the number exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_associations_and_requests_into_a_mismatched_pool() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let first = request(&c, MessageType::Transactional).await;
    let joining = request(&c, MessageType::Transactional).await;
    let pool_id = common::create_pool(&c, &first).await;
    let associate = |token: Option<&str>| {
        c.associate_origination_identity()
            .pool_id(&pool_id)
            .origination_identity(&joining)
            .set_client_token(token.map(String::from))
            .send()
    };
    let joined = associate(Some("join-once")).await.expect("join");
    let events_after_join = server_events(&server).await;
    let again = associate(Some("join-once")).await.expect("the retry gets the same answer");
    assert_eq!(again.pool_id(), joined.pool_id());
    assert_eq!(again.origination_identity(), joined.origination_identity());
    assert_eq!(server_events(&server).await, events_after_join, "the retry wrote nothing");
    // Another token is another request, and the number is already there.
    let another = associate(Some("join-twice")).await.expect_err("already associated");
    match another.into_service_error() {
        aws_sdk_pinpointsmsvoicev2::operation::associate_origination_identity::AssociateOriginationIdentityError::ConflictException(e) => {
            assert_eq!(e.reason(), Some(&ConflictExceptionReason::ResourceAlreadyAssociated))
        }
        other => panic!("{other:?}"),
    }
    let without_token = reqwest::Client::new()
        .post(server.url())
        .header("X-Amz-Target", "PinpointSMSVoiceV2.AssociateOriginationIdentity")
        .header("Content-Type", "application/x-amz-json-1.0")
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential={ACCOUNT}/20261126/{REGION}/sms-voice/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(serde_json::json!({"PoolId": pool_id, "OriginationIdentity": joining}).to_string())
        .send()
        .await
        .expect("response");
    assert_eq!(without_token.status().as_u16(), 400);
    let body: serde_json::Value = without_token.json().await.expect("json");
    assert_eq!(body["__type"], "ConflictException", "{body}");
    assert_eq!(body["Reason"], "RESOURCE_ALREADY_ASSOCIATED", "{body}");

    // DisassociateOriginationIdentity has a ClientToken too: a retry of a leave that succeeded
    // gets the same answer; another token (another request) is refused, the number being out.
    let disassociate = |token: &str| {
        c.disassociate_origination_identity()
            .pool_id(&pool_id)
            .origination_identity(&joining)
            .client_token(token)
            .send()
    };
    let left = disassociate("leave-once").await.expect("leave");
    let again = disassociate("leave-once").await.expect("the retry gets the same answer");
    assert_eq!(
        (again.pool_id(), again.origination_identity()),
        (left.pool_id(), left.origination_identity())
    );
    let not_associated = |e: aws_sdk_pinpointsmsvoicev2::error::SdkError<DisassociateOriginationIdentityError>| match e.into_service_error()
    {
        DisassociateOriginationIdentityError::ConflictException(e) => {
            assert_eq!(e.reason(), Some(&ConflictExceptionReason::PhoneNumberNotAssociatedToPool))
        }
        other => panic!("{other:?}"),
    };
    not_associated(disassociate("another-request").await.expect_err("not in the pool"));
    // A request that was refused is not turned into a success by a later one's leave: its resend
    // is refused as any request for a number outside the pool.
    let take_out_first = |token: &str| {
        c.disassociate_origination_identity()
            .pool_id(&pool_id)
            .origination_identity(&first)
            .client_token(token)
            .send()
    };
    take_out_first("refused-leave").await.expect_err("the pool's last number");
    associate(Some("join-again")).await.expect("join again");
    take_out_first("a-later-leave").await.expect("leave");
    not_associated(take_out_first("refused-leave").await.expect_err("still refused"));

    let before = server_events(&server).await;
    let err = c
        .request_phone_number()
        .iso_country_code("US")
        .message_type(MessageType::Promotional)
        .number_capabilities(NumberCapability::Sms)
        .number_type(RequestableNumberType::LongCode)
        .pool_id(&pool_id)
        .send()
        .await
        .expect_err("mismatch");
    match err.into_service_error() {
        RequestPhoneNumberError::ConflictException(e) => {
            assert_eq!(e.reason(), Some(&ConflictExceptionReason::MessageTypeMismatch));
            assert_eq!(e.resource_id(), Some(pool_id.as_str()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server_events(&server).await, before, "no number was created");
}

/// How many events the server's log holds.
async fn server_events(server: &TestServer) -> u64 {
    let health: serde_json::Value = reqwest::get(format!("{}/health", server.url()))
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    health["Events"].as_u64().expect("events")
}

/// The phone-pool guide: "The configuration of every phone number that you add to a pool has to
/// match the configuration of the first phone number that you specified when you created the
/// pool." A number on another opt-out list, or with other self-managed opt-outs, is refused
/// (`OPT_OUT_LIST_MISMATCH`, `SELF_MANAGED_OPT_OUTS_MISMATCH`), and joins once it matches. A
/// retry of a join with its client token is answered as the join was, even after the pool's
/// settings changed. A number requested into the pool takes the pool's settings, and is
/// refused before it exists if it asks for another opt-out list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_joins_only_a_pool_of_its_settings() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let pool_id = common::create_pool(&c, &request(&c, MessageType::Transactional).await).await;
    let joining = request(&c, MessageType::Transactional).await;
    c.create_opt_out_list()
        .opt_out_list_name("Mine")
        .send()
        .await
        .expect("CreateOptOutList");
    let associate = |token: &str| {
        c.associate_origination_identity()
            .pool_id(&pool_id)
            .origination_identity(&joining)
            .client_token(token)
            .send()
    };
    let refusal = |e: aws_sdk_pinpointsmsvoicev2::error::SdkError<AssociateOriginationIdentityError>| match e.into_service_error() {
        AssociateOriginationIdentityError::ConflictException(e) => e.reason().cloned(),
        other => panic!("{other:?}"),
    };
    let update = |list: &str, self_managed: bool| {
        c.update_phone_number()
            .phone_number_id(&joining)
            .opt_out_list_name(list)
            .self_managed_opt_outs_enabled(self_managed)
            .send()
    };
    update("Mine", false).await.expect("UpdatePhoneNumber");
    let refused = associate("join-1").await.expect_err("another opt-out list");
    assert_eq!(refusal(refused), Some(ConflictExceptionReason::OptOutListMismatch));
    update("Default", true).await.expect("UpdatePhoneNumber");
    let refused = associate("join-2").await.expect_err("self-managed opt-outs");
    assert_eq!(refusal(refused), Some(ConflictExceptionReason::SelfManagedOptOutsMismatch));
    update("Default", false).await.expect("UpdatePhoneNumber");
    let joined = associate("join-3").await.expect("the settings match");

    // The pool's settings change; a retry of the join is still that join's.
    c.update_pool()
        .pool_id(&pool_id)
        .self_managed_opt_outs_enabled(true)
        .send()
        .await
        .expect("UpdatePool");
    let again = associate("join-3").await.expect("the retry gets the same answer");
    assert_eq!(again.origination_identity(), joined.origination_identity());

    // Requested into the pool, a number takes the pool's settings; asked for on another list,
    // it is refused, and none is leased.
    let request_into_pool = |list: Option<&str>, token: Option<&str>| {
        c.request_phone_number()
            .iso_country_code("US")
            .message_type(MessageType::Transactional)
            .number_capabilities(NumberCapability::Sms)
            .number_type(RequestableNumberType::LongCode)
            .pool_id(&pool_id)
            .set_opt_out_list_name(list.map(String::from))
            .set_client_token(token.map(String::from))
            .send()
    };
    let inherited = request_into_pool(None, None).await.expect("into the pool, with its settings");
    assert_eq!(
        (inherited.self_managed_opt_outs_enabled(), inherited.pool_id()),
        (true, Some(pool_id.as_str()))
    );
    let numbers_before = c.describe_phone_numbers().send().await.expect("describe").phone_numbers().len();
    let into_pool = request_into_pool(Some("Mine"), None).await.expect_err("the pool is on Default");
    match into_pool.into_service_error() {
        RequestPhoneNumberError::ConflictException(e) => {
            assert_eq!(e.reason(), Some(&ConflictExceptionReason::OptOutListMismatch));
            assert_eq!(
                (e.resource_type(), e.resource_id()),
                (Some(&ResourceType::Pool), Some(pool_id.as_str()))
            );
        }
        other => panic!("{other:?}"),
    }
    let numbers_after = c.describe_phone_numbers().send().await.expect("describe").phone_numbers().len();
    assert_eq!(numbers_after, numbers_before, "no number was leased");

    // The pool moves to another list; a request into it, retried with its client token, is
    // answered with the number the first attempt made, on the pool's list.
    c.update_pool()
        .pool_id(&pool_id)
        .opt_out_list_name("Mine")
        .send()
        .await
        .expect("UpdatePool");
    let first = request_into_pool(None, Some("into-the-pool")).await.expect("into the pool");
    let again = request_into_pool(None, Some("into-the-pool")).await.expect("the retry");
    assert_eq!(
        (again.phone_number_id(), again.opt_out_list_name()),
        (first.phone_number_id(), Some("Mine"))
    );
}
