//! Conflicting operations racing on the same numbers: the per-number actor serializes them, the
//! ASSOCIATING/DISASSOCIATING steps keep number and pool views in agreement, and the log shows
//! exactly one effect per success.

mod common;

use common::request;

use std::collections::{BTreeSet, HashMap};

use aws_sdk_pinpointsmsvoicev2::error::ProvideErrorMetadata;
use aws_sdk_pinpointsmsvoicev2::types::MessageType;
use common::{TestServer, ACCOUNT};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_releases_release_once() {
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    let id = request(&c, MessageType::Transactional).await;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let c = c.clone();
            let id = id.clone();
            tokio::spawn(async move { c.release_phone_number().phone_number_id(id).send().await })
        })
        .collect();
    let mut ok = 0;
    let mut codes: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(out) => {
                ok += 1;
                assert_eq!(out.phone_number_id(), Some(id.as_str()));
            }
            Err(e) => *codes.entry(e.code().unwrap_or("?").to_string()).or_default() += 1,
        }
    }
    assert_eq!(ok, 1, "exactly one release succeeds; errors: {codes:?}");
    assert_eq!(codes.get("ResourceNotFoundException"), Some(&31), "{codes:?}");

    server.stop();
    let store = common::open_log_read_only(server.dir.path());
    let events = store.read_stream(&id, 1, usize::MAX).await.expect("stream");
    let released = events.iter().filter(|e| e.event_type == "Released").count();
    let rejected = events.iter().filter(|e| e.event_type == "ReleaseRejected").count();
    assert_eq!((released, rejected), (1, 31));
    // One request id per response: nothing applied twice.
    let ids: BTreeSet<&str> = events.iter().map(|e| e.request_id.as_str()).collect();
    assert_eq!(ids.len(), events.len());
    store.close().await.expect("close");
}

/// Releases racing associations on many numbers: never both succeed, and afterwards the pool's
/// members are exactly the numbers that say they are in it, none of them released.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn releases_racing_associations_never_both_succeed() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let anchor = request(&c, MessageType::Transactional).await;
    let pool_id = common::create_pool(&c, &anchor).await;
    let mut numbers = Vec::new();
    for _ in 0..24 {
        numbers.push(request(&c, MessageType::Transactional).await);
    }
    let mut tasks = Vec::new();
    for (i, id) in numbers.iter().enumerate() {
        let (c1, c2, id1, id2, pool) = (c.clone(), c.clone(), id.clone(), id.clone(), pool_id.clone());
        // Alternate which one is sent first so both orders race.
        let release = async move { c1.release_phone_number().phone_number_id(id1).send().await.is_ok() };
        let associate = async move {
            c2.associate_origination_identity()
                .pool_id(pool)
                .origination_identity(id2)
                .send()
                .await
                .is_ok()
        };
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let (r, a) = tokio::join!(release, associate);
                (r, a)
            } else {
                let (a, r) = tokio::join!(associate, release);
                (r, a)
            }
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("task"));
    }
    for (id, (released, associated)) in numbers.iter().zip(&outcomes) {
        assert!(!(*released && *associated), "{id}: both release and associate succeeded");
        assert!(*released || *associated, "{id}: neither succeeded");
    }
    let members: BTreeSet<String> = c
        .list_pool_origination_identities()
        .pool_id(&pool_id)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("members")
        .into_iter()
        .map(|m| m.origination_identity().to_string())
        .collect();
    let described = c
        .describe_phone_numbers()
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("numbers");
    let in_pool: BTreeSet<String> = described
        .iter()
        .filter(|n| n.pool_id() == Some(pool_id.as_str()))
        .map(|n| n.phone_number_id().expect("id").to_string())
        .collect();
    assert_eq!(members, in_pool, "pool view and number views agree");
    let expected: BTreeSet<String> = numbers
        .iter()
        .zip(&outcomes)
        .filter(|(_, (_, a))| *a)
        .map(|(id, _)| id.clone())
        .chain([anchor.clone()])
        .collect();
    assert_eq!(members, expected);
    let live: BTreeSet<String> = described.iter().map(|n| n.phone_number_id().expect("id").to_string()).collect();
    assert!(members.is_subset(&live), "no released number in the pool");
    assert!(described.iter().all(|n| n.status().as_str() == "ACTIVE"), "no number left half-way");
}

/// Disassociations racing each other on a two-member pool: the pool never becomes empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_disassociations_never_empty_a_pool() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    for _ in 0..6 {
        let (a, b, pool_id) = common::pool_of_two(&c).await;
        let (ra, rb) = tokio::join!(
            c.disassociate_origination_identity()
                .pool_id(&pool_id)
                .origination_identity(&a)
                .send(),
            c.disassociate_origination_identity()
                .pool_id(&pool_id)
                .origination_identity(&b)
                .send()
        );
        assert_eq!(ra.is_ok() as u8 + rb.is_ok() as u8, 1, "exactly one may leave");
        let failed = if ra.is_ok() {
            rb.expect_err("one failed")
        } else {
            ra.expect_err("one failed")
        };
        assert_eq!(failed.code(), Some("ConflictException"));
        let left = c.list_pool_origination_identities().pool_id(&pool_id).send().await.expect("list");
        assert_eq!(left.origination_identities().len(), 1);
    }
}

/// Creations run concurrently, yet the quota is never exceeded and one client token makes one
/// number however many requests carry it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_respect_quota_and_client_tokens() {
    let server = TestServer::start_with(|c| c.quotas.phone_numbers_per_account = 5);
    let c = server.client(ACCOUNT);
    let send = |token: Option<&'static str>| {
        let c = c.clone();
        tokio::spawn(async move {
            c.request_phone_number()
                .iso_country_code("US")
                .message_type(MessageType::Transactional)
                .number_capabilities(aws_sdk_pinpointsmsvoicev2::types::NumberCapability::Sms)
                .number_type(aws_sdk_pinpointsmsvoicev2::types::RequestableNumberType::LongCode)
                .set_client_token(token.map(str::to_string))
                .send()
                .await
                .map(|o| o.phone_number_id().expect("id").to_string())
        })
    };
    let same: Vec<_> = (0..8).map(|_| send(Some("same-token"))).collect();
    let mut ids = BTreeSet::new();
    for t in same {
        ids.insert(t.await.expect("task").expect("same-token request"));
    }
    assert_eq!(ids.len(), 1, "one token, one number: {ids:?}");
    let others: Vec<_> = (0..16).map(|_| send(None)).collect();
    let (mut ok, mut over) = (0, 0);
    for t in others {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Some("ServiceQuotaExceededException"));
                over += 1;
            }
        }
    }
    assert_eq!((ok, over), (4, 12), "quota 5 with one number already held");
    assert_eq!(c.describe_phone_numbers().send().await.expect("describe").phone_numbers().len(), 5);
}

/// Pools count against `pools_per_account` however many are created at once: 10 concurrent
/// CreatePool with a quota of 3 make 3 pools, the rest are refused with the quota's reason, and
/// a deleted pool frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pool_creations_respect_the_pool_quota() {
    use aws_sdk_pinpointsmsvoicev2::operation::create_pool::CreatePoolError;
    use aws_sdk_pinpointsmsvoicev2::types::ServiceQuotaExceededExceptionReason;
    let server = TestServer::start_with(|c| c.quotas.pools_per_account = 3);
    let c = server.client(ACCOUNT);
    let mut numbers = Vec::new();
    for _ in 0..10 {
        numbers.push(request(&c, MessageType::Transactional).await);
    }
    let creations: Vec<_> = numbers
        .iter()
        .map(|number| {
            let (c, number) = (c.clone(), number.clone());
            tokio::spawn(async move {
                let made = c
                    .create_pool()
                    .origination_identity(&number)
                    .message_type(MessageType::Transactional)
                    .send()
                    .await
                    .map(|p| p.pool_id().expect("pool id").to_string());
                (number, made)
            })
        })
        .collect();
    let (mut made, mut refused) = (Vec::new(), Vec::new());
    for t in creations {
        match t.await.expect("task") {
            (_, Ok(pool)) => made.push(pool),
            (number, Err(e)) => match e.into_service_error() {
                CreatePoolError::ServiceQuotaExceededException(q) => {
                    assert_eq!(q.reason(), Some(&ServiceQuotaExceededExceptionReason::PoolsPerAccount));
                    refused.push(number);
                }
                other => panic!("{other:?}"),
            },
        }
    }
    assert_eq!((made.len(), refused.len()), (3, 7));
    assert_eq!(c.describe_pools().send().await.expect("describe").pools().len(), 3);
    c.delete_pool().pool_id(&made[0]).send().await.expect("delete");
    c.create_pool()
        .origination_identity(&refused[0])
        .message_type(MessageType::Transactional)
        .send()
        .await
        .expect("a deleted pool's place is free again");
}

/// DeletePool racing AssociateOriginationIdentity on the same pool, round after round: whichever
/// wins, the number never ends up in the deleted pool or half-way into it (it could then never
/// be released), and is free for the next round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_deleted_while_a_number_joins_it_never_keeps_the_number() {
    let server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (first, joiner) = (
        request(&c, MessageType::Transactional).await,
        request(&c, MessageType::Transactional).await,
    );
    let mut outcomes: HashMap<(bool, bool), usize> = HashMap::new();
    for round in 0..120 {
        let pool = c
            .create_pool()
            .origination_identity(&first)
            .iso_country_code("US")
            .message_type(MessageType::Transactional)
            .send()
            .await
            .expect("create pool");
        let pool_id = pool.pool_id().expect("pool id").to_string();
        let join = {
            let (c, pool_id, joiner) = (c.clone(), pool_id.clone(), joiner.clone());
            tokio::spawn(async move {
                c.associate_origination_identity()
                    .pool_id(pool_id)
                    .origination_identity(joiner)
                    .iso_country_code("US")
                    .send()
                    .await
            })
        };
        let delete = {
            let (c, pool_id) = (c.clone(), pool_id.clone());
            // Sent a little later each round, so that it lands before, between and after the
            // join's steps.
            // (A timer sleeps a millisecond at least: finer steps are waited out by yielding.)
            let until = std::time::Instant::now() + std::time::Duration::from_micros((round % 40) * 25);
            tokio::spawn(async move {
                while std::time::Instant::now() < until {
                    tokio::task::yield_now().await;
                }
                c.delete_pool().pool_id(pool_id).send().await
            })
        };
        let (joined, deleted) = (join.await.expect("task"), delete.await.expect("task"));
        *outcomes.entry((joined.is_ok(), deleted.is_ok())).or_default() += 1;
        assert!(deleted.is_ok(), "round {round}: {deleted:?}");
        let numbers = c
            .describe_phone_numbers()
            .phone_number_ids(&first)
            .phone_number_ids(&joiner)
            .send()
            .await
            .expect("describe");
        for n in numbers.phone_numbers() {
            assert_eq!(
                (n.status().as_str(), n.pool_id()),
                ("ACTIVE", None),
                "round {round}: {} after the pool was deleted ({joined:?})",
                n.phone_number_id().unwrap_or_default()
            );
        }
    }
    println!("(joined, deleted) outcomes: {outcomes:?}");
}

/// A pool deleted while a number is requested into it (`RequestPhoneNumber` with `PoolId`): the
/// request either succeeds (the number joined before the deletion, which let it go again) or
/// fails, and then leaves no number leased — a number it made before its join was refused is
/// withdrawn — and its retry with the same client token answers the same. The deletion is sent
/// a little later each round, so that it lands before, during and after the request's steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_deleted_while_a_number_is_requested_into_it_leaves_no_stray_number() {
    use aws_sdk_pinpointsmsvoicev2::types::{NumberCapability, RequestableNumberType};
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    let first = request(&c, MessageType::Transactional).await;
    let mut leased = 1;
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for round in 0..80 {
        let pool_id = common::create_pool(&c, &first).await;
        let ask = {
            let (c, pool_id) = (c.clone(), pool_id.clone());
            move || {
                c.request_phone_number()
                    .iso_country_code("US")
                    .message_type(MessageType::Transactional)
                    .number_capabilities(NumberCapability::Sms)
                    .number_type(RequestableNumberType::LongCode)
                    .pool_id(pool_id.clone())
                    .client_token(format!("into-the-pool-{round}"))
                    .send()
            }
        };
        let requested = tokio::spawn(ask());
        let deleted = {
            let (c, pool_id) = (c.clone(), pool_id.clone());
            let after = std::time::Duration::from_micros((round % 40) * 60);
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                c.delete_pool().pool_id(pool_id).send().await
            })
        };
        let (requested, deleted) = (requested.await.expect("task"), deleted.await.expect("task"));
        assert!(deleted.is_ok(), "round {round}: {deleted:?}");
        let outcome = match &requested {
            Ok(_) => {
                leased += 1;
                "joined".to_string()
            }
            Err(e) => {
                let code = e.code().unwrap_or("?").to_string();
                let again = ask().await.expect_err("the retry of a failed request fails the same");
                assert_eq!(again.code(), Some(code.as_str()), "round {round}: {again:?}");
                code
            }
        };
        *outcomes.entry(outcome).or_default() += 1;
        let live = c.describe_phone_numbers().max_results(100).send().await.expect("describe");
        assert_eq!(
            live.phone_numbers().len(),
            leased,
            "round {round}: the numbers leased after {requested:?}"
        );
    }
    server.stop();
    let store = common::open_log_read_only(server.dir.path());
    let withdrawn = store
        .read_feed(0, usize::MAX)
        .await
        .expect("feed")
        .iter()
        .filter(|e| e.event_type == "RequestWithdrawn")
        .count();
    println!("outcomes: {outcomes:?}; numbers withdrawn: {withdrawn}");
    store.close().await.expect("close");
}
