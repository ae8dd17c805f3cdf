//! A stop between the steps of a pool change leaves a number `ASSOCIATING`/`DISASSOCIATING`;
//! the next start finishes the change the way the pool's stream says, so number and pool views
//! agree again. The interrupted states are written straight into the log, as a crash leaves them.

mod common;

use aws_sdk_pinpointsmsvoicev2::types::MessageType;
use common::{TestServer, ACCOUNT, REGION};
use phone_ledger::domain::phone_number::{PhoneNumberEvent, PhoneNumberState};
use phone_ledger::domain::pool::{PoolEvent, PoolMember, PoolState};
use phone_ledger::domain::types::MessageType as DomainMessageType;
use phone_ledger::projection::Projected;
use phone_ledger::rehydrate::replay;
use phone_ledger::store::EventStore;

/// Appends one event the way an actor would (same index maintenance), as a crash would leave it.
async fn append<A: Projected>(store: &dyn EventStore, id: &str, event: A::Event) {
    let command = "AssociateOriginationIdentity/BeginAssociation";
    common::append_as_an_actor_would::<A>(store, id, event, "crashed-request", command, serde_json::Value::Null).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_pool_changes_are_finished_on_start() {
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (a, _) = common::request_with_number(&c, MessageType::Transactional).await;
    let (joining_unrecorded, _) = common::request_with_number(&c, MessageType::Transactional).await;
    let (joining_recorded, joining_e164) = common::request_with_number(&c, MessageType::Transactional).await;
    let pool_id = common::create_pool(&c, &a).await;
    server.stop();

    {
        let store = common::open_log(server.dir.path());
        // Crashed after the number's first step; the pool never heard of it.
        append::<PhoneNumberState>(
            &*store,
            &joining_unrecorded,
            PhoneNumberEvent::Membership(phone_ledger::domain::membership::MembershipEvent::PoolAssociationStarted {
                pool_id: pool_id.clone(),
            }),
        )
        .await;
        // Crashed after the pool recorded it, before the number completed.
        append::<PhoneNumberState>(
            &*store,
            &joining_recorded,
            PhoneNumberEvent::Membership(phone_ledger::domain::membership::MembershipEvent::PoolAssociationStarted {
                pool_id: pool_id.clone(),
            }),
        )
        .await;
        let member = PoolMember {
            origination_identity: joining_recorded.clone(),
            origination_identity_arn: format!("arn:aws:sms-voice:{REGION}:{ACCOUNT}:phone-number/{joining_recorded}"),
            iso_country_code: "US".into(),
            number_capabilities: vec![phone_ledger::domain::types::NumberCapability::Sms],
            phone_number: joining_e164,
            message_type: DomainMessageType::Transactional,
            sender_id: None,
            shared_settings: None,
        };
        append::<PoolState>(&*store, &pool_id, PoolEvent::OriginationIdentityAssociated(member)).await;
        let envelopes = store.read_stream(&joining_unrecorded, 1, usize::MAX).await.expect("read");
        let s: PhoneNumberState = replay(&envelopes).expect("replay");
        assert_eq!(s.0.map(|n| n.status.as_str()), Some("ASSOCIATING"));
        store.close().await.expect("close");
    }

    server.restart();
    let c = server.client(ACCOUNT);
    let numbers = c.describe_phone_numbers().send().await.expect("describe");
    for n in numbers.phone_numbers() {
        assert_eq!(n.status().as_str(), "ACTIVE", "{n:?}");
    }
    let pool_of = |id: &str| {
        numbers
            .phone_numbers()
            .iter()
            .find(|n| n.phone_number_id() == Some(id))
            .and_then(|n| n.pool_id().map(str::to_string))
    };
    assert_eq!(pool_of(&joining_unrecorded), None);
    assert_eq!(pool_of(&joining_recorded).as_deref(), Some(pool_id.as_str()));
    let members = c
        .list_pool_origination_identities()
        .pool_id(&pool_id)
        .send()
        .await
        .expect("members");
    let mut ids: Vec<&str> = members.origination_identities().iter().map(|m| m.origination_identity()).collect();
    ids.sort();
    let mut expected = vec![a.as_str(), joining_recorded.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    // The repaired number is usable again.
    c.release_phone_number()
        .phone_number_id(&joining_unrecorded)
        .send()
        .await
        .expect("release");
}

/// A reconciler that settles a change left alone fences the pool first: a step of that change
/// arriving afterwards (a request slower than the reconciler's patience, e.g. resent across a
/// leader election) is refused, so the pool cannot change under the reconciler's decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_change_takes_no_late_step() {
    use phone_ledger::domain::pool::PoolAction;
    use phone_ledger::domain::types::ConflictReason;
    use phone_ledger::domain::{Aggregate, Command, CommandMeta, Rejection, Scope};
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (_, b, pool_id) = common::pool_of_two(&c).await;
    server.stop();
    // A request began to take `b` out of the pool, then went quiet before the pool's step.
    let began_ms = {
        let store = common::open_log(server.dir.path());
        append::<PhoneNumberState>(
            &*store,
            &b,
            PhoneNumberEvent::Membership(phone_ledger::domain::membership::MembershipEvent::PoolDisassociationStarted {
                pool_id: pool_id.clone(),
            }),
        )
        .await;
        let last = store.read_stream(&b, 1, usize::MAX).await.expect("read");
        let began = last.last().expect("event").timestamp_ms;
        store.close().await.expect("close");
        began
    };
    // The start-up recovery settles it: the pool still holds `b`, so the leave is undone.
    server.restart();
    let c = server.client(ACCOUNT);
    let members = c
        .list_pool_origination_identities()
        .pool_id(&pool_id)
        .send()
        .await
        .expect("members");
    assert_eq!(members.origination_identities().len(), 2);
    server.stop();
    // The quiet request's pool step, arriving now, is refused by the pool as the log has it.
    let store = common::open_log(server.dir.path());
    let envelopes = store.read_stream(&pool_id, 1, usize::MAX).await.expect("read");
    assert!(envelopes.iter().any(|e| e.event_type == "ChangesFenced"), "the pool was fenced");
    let pool: PoolState = replay(&envelopes).expect("replay");
    let late = Command {
        meta: CommandMeta {
            request_id: "the-quiet-request".into(),
            scope: Scope::new(ACCOUNT, REGION),
            at_ms: began_ms,
            operation: "DisassociateOriginationIdentity".into(),
        },
        target: pool_id.clone(),
        action: PoolAction::RemoveMember {
            origination_identity: b.clone(),
        },
    };
    match pool.decide(&late) {
        Err(Rejection::Conflict { reason, .. }) => assert_eq!(reason, ConflictReason::ResourceModificationNotAllowed),
        other => panic!("the late step was not refused: {other:?}"),
    }
    store.close().await.expect("close");
}

/// A sender id's pool changes interrupted by a stop are settled at the next start as a number's
/// are, each pool on its own (a sender id can be in several): its join of one pool, which that
/// pool never heard of, is undone; its leave of another, which that pool never recorded, is
/// undone too, so it stays that pool's member. It is released once it leaves that pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_pool_changes_of_a_sender_id_are_settled_on_start() {
    use phone_ledger::domain::membership::{Member, MembershipEvent, Standing};
    use phone_ledger::domain::sender_id::{SenderIdEvent, SenderIdState};
    let mut server = TestServer::start();
    let c = server.client(ACCOUNT);
    let (a, _) = common::request_with_number(&c, MessageType::Transactional).await;
    let (b, _) = common::request_with_number(&c, MessageType::Transactional).await;
    let pool_id = common::create_pool(&c, &a).await;
    let kept_pool = common::create_pool(&c, &b).await;
    c.request_sender_id()
        .sender_id("Recovered")
        .iso_country_code("GB")
        .message_types(MessageType::Transactional)
        .send()
        .await
        .expect("RequestSenderId");
    c.associate_origination_identity()
        .pool_id(&kept_pool)
        .origination_identity("Recovered")
        .iso_country_code("GB")
        .send()
        .await
        .expect("AssociateOriginationIdentity");
    let scope = phone_ledger::domain::Scope::new(ACCOUNT, REGION);
    let stream = phone_ledger::domain::ResourceKind::sender_id_id(&scope, "Recovered", "GB");
    server.stop();
    {
        let store = common::open_log(server.dir.path());
        assert!(
            !store.read_stream(&stream, 1, 1).await.expect("read").is_empty(),
            "{stream} is the sender id's stream"
        );
        for step in [
            MembershipEvent::PoolAssociationStarted { pool_id: pool_id.clone() },
            MembershipEvent::PoolDisassociationStarted {
                pool_id: kept_pool.clone(),
            },
        ] {
            append::<SenderIdState>(&*store, &stream, SenderIdEvent::Membership(step)).await;
        }
        let s: SenderIdState = replay(&store.read_stream(&stream, 1, usize::MAX).await.expect("read")).expect("replay");
        let s = s.0.expect("a sender id");
        assert_eq!(
            (s.standing(&pool_id), s.standing(&kept_pool)),
            (Some(Standing::Associating), Some(Standing::Disassociating))
        );
        store.close().await.expect("close");
    }
    server.restart();
    let c = server.client(ACCOUNT);
    let members = |pool: String| {
        let c = c.clone();
        async move {
            let listed = c.list_pool_origination_identities().pool_id(pool).send().await.expect("members");
            let mut ids: Vec<String> = listed
                .origination_identities()
                .iter()
                .map(|m| m.origination_identity().to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(members(pool_id.clone()).await, vec![a.clone()]);
    assert_eq!(members(kept_pool.clone()).await.len(), 2, "the pool still holds the sender id");
    let refused = c
        .release_sender_id()
        .sender_id("Recovered")
        .iso_country_code("GB")
        .send()
        .await
        .expect_err("still in the pool it did not leave");
    assert_eq!(refused.into_service_error().meta().code(), Some("ConflictException"));
    c.disassociate_origination_identity()
        .pool_id(&kept_pool)
        .origination_identity("Recovered")
        .iso_country_code("GB")
        .send()
        .await
        .expect("DisassociateOriginationIdentity");
    c.release_sender_id()
        .sender_id("Recovered")
        .iso_country_code("GB")
        .send()
        .await
        .expect("released once out of every pool");
    server.stop();
    let store = common::open_log(server.dir.path());
    let events = store.read_stream(&stream, 1, usize::MAX).await.expect("read");
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    for settled in ["PoolAssociationAborted", "PoolDisassociationAborted"] {
        assert!(types.contains(&settled), "{settled} missing: {types:?}");
    }
    store.close().await.expect("close");
}
