//! Pipelined appends stay exact: when an append decided on a stale state fails, every append
//! decided after it fails too (even if another writer happened to bring the stream to the version
//! it expected), and the actor rebuilds its state from the log before deciding again.

mod common;

use actix::{Actor, Addr};
use phone_ledger::actors::{AggregateActor, Execute, ExecuteError, GetState, Premise};
use phone_ledger::codec::pending_events;
use phone_ledger::domain::phone_number::{PhoneNumber, PhoneNumberAction, PhoneNumberChanges, PhoneNumberEvent, PhoneNumberState};
use phone_ledger::domain::types::ConflictReason;
use phone_ledger::domain::{CommandMeta, Rejection, Scope};
use phone_ledger::store::{AppendError, AppendMeta, AppendRequest, Durability, JetStreamStore, Store, StoreConfig};

const ID: &str = "phone-0123456789abcdef0123456789abcdef";

fn append(event: PhoneNumberEvent, expected_version: u64) -> AppendRequest {
    AppendRequest::plain(
        ID,
        expected_version,
        AppendMeta::direct("111122223333", "us-east-1", "other-writer", "Test/Other"),
        pending_events(&[event]).expect("events"),
    )
}

/// The actor of a number whose request is already in the log (version 1).
fn open(dir: &std::path::Path, durability: Durability, max_batch: usize) -> Store {
    StoreConfig::embedded(durability, max_batch).open(dir).expect("store")
}

async fn requested_number_actor(store: &Store) -> Addr<AggregateActor<PhoneNumberState>> {
    store
        .append(append(
            PhoneNumberEvent::PhoneNumberRequested(Box::new(PhoneNumber::example(ID, "111122223333", "us-east-1"))),
            0,
        ))
        .await
        .expect("request");
    AggregateActor::<PhoneNumberState>::new(ID.into(), store.clone()).start()
}

fn execute(action: PhoneNumberAction) -> Execute<PhoneNumberState> {
    Execute {
        meta: CommandMeta {
            request_id: "r".into(),
            scope: Scope::new("111122223333", "us-east-1"),
            at_ms: 2,
            operation: "Test".into(),
        },
        action,
        counter_limits: vec![],
        premise: None,
        otherwise: None,
    }
}

#[test]
fn a_failed_append_fails_everything_decided_after_it() {
    let dir = tempfile::tempdir().expect("dir");
    let system = actix_rt::System::new();
    system.block_on(async {
        let store = open(dir.path(), Durability::Flush, 64);
        let actor = requested_number_actor(&store).await;
        actor
            .send(GetState::<PhoneNumberState>::default())
            .await
            .expect("mailbox")
            .expect("state at v1");

        // Another writer protects the number behind the actor's back (v2).
        let protect = PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
            deletion_protection_enabled: Some(true),
            ..Default::default()
        });
        store.append(append(protect, 1)).await.expect("other writer");

        // Two commands pipelined on the stale state: the first expects v1 (fails); the second
        // expects v2 after the first's event, which is the version the other writer made, but
        // not its event: it must fail as well.
        let international = PhoneNumberAction::Update(PhoneNumberChanges {
            international_sending_enabled: Some(true),
            ..Default::default()
        });
        let (first, second) = tokio::join!(actor.send(execute(international)), actor.send(execute(PhoneNumberAction::Release)));
        for outcome in [first.expect("mailbox"), second.expect("mailbox")] {
            assert!(
                matches!(outcome, Err(ExecuteError::Append(AppendError::WrongExpectedVersion { .. }))),
                "{outcome:?}"
            );
        }

        // Rebuilt from the log, the actor sees the protection and refuses the release.
        let third = actor.send(execute(PhoneNumberAction::Release)).await.expect("mailbox");
        assert!(
            matches!(
                &third,
                Err(ExecuteError::Rejected(Rejection::Conflict {
                    reason: ConflictReason::DeletionProtectionEnabled,
                    ..
                }))
            ),
            "{third:?}"
        );
        let types: Vec<String> = store
            .read_stream(ID, 1, usize::MAX)
            .await
            .expect("read")
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(
            types,
            ["PhoneNumberRequested", "PhoneNumberUpdated", "ReleaseRejected"],
            "nothing decided on the stale state was committed"
        );
        store.close().await.expect("close");
    });
}

#[test]
fn pipelined_commands_commit_in_order_in_shared_flushes() {
    let dir = tempfile::tempdir().expect("dir");
    let system = actix_rt::System::new();
    system.block_on(async {
        let store = open(dir.path(), Durability::Fsync, 256);
        let actor = requested_number_actor(&store).await;
        let sends: Vec<_> = (0..50)
            .map(|i| {
                let change = PhoneNumberChanges {
                    deletion_protection_enabled: Some(i % 2 == 0),
                    ..Default::default()
                };
                actor.send(execute(PhoneNumberAction::Update(change)))
            })
            .collect();
        for (i, s) in futures_util::future::join_all(sends).await.into_iter().enumerate() {
            let state = s.expect("mailbox").expect("update");
            assert_eq!(
                state.0.expect("number").deletion_protection_enabled,
                i % 2 == 0,
                "reply {i} reflects command {i}"
            );
        }
        let events = store.read_stream(ID, 1, usize::MAX).await.expect("read");
        assert_eq!(events.len(), 51);
        for (i, e) in events.iter().enumerate().skip(1) {
            assert_eq!(
                e.payload["DeletionProtectionEnabled"],
                (i - 1) % 2 == 0,
                "event {i} in mailbox order"
            );
        }
        store.close().await.expect("close");
    });
}

/// A premise is checked on the state the command would be decided on, appends in flight
/// included, in mailbox order: a command based on a state that a command ahead of it changes is
/// answered `Stale` and writes nothing (it is not published to be voided, so nothing pipelined
/// behind it is lost); one based on the state ahead of it goes through.
#[test]
fn a_premise_is_checked_on_the_state_with_appends_in_flight() {
    let dir = tempfile::tempdir().expect("dir");
    let system = actix_rt::System::new();
    system.block_on(async {
        let store = open(dir.path(), Durability::Fsync, 256);
        let actor = requested_number_actor(&store).await;
        let protect = |on: bool| {
            PhoneNumberAction::Update(PhoneNumberChanges {
                deletion_protection_enabled: Some(on),
                ..Default::default()
            })
        };
        let protected_is = |on: bool| -> Premise<PhoneNumberState> {
            std::sync::Arc::new(move |s: &PhoneNumberState, _version| s.0.as_ref().is_some_and(|n| n.deletion_protection_enabled == on))
        };
        let based_on = |on: bool, action| Execute {
            premise: Some(protected_is(on)),
            ..execute(action)
        };
        // Sent together: the first is still in flight when the others are decided.
        let sends = [
            execute(protect(true)),
            based_on(false, protect(false)),
            based_on(true, protect(false)),
            execute(protect(true)),
        ]
        .map(|command| actor.send(command));
        let [first, stale, fresh, after] = futures_util::future::join_all(sends)
            .await
            .try_into()
            .unwrap_or_else(|_| unreachable!("four answers"));
        assert!(first.expect("mailbox").is_ok());
        assert!(
            matches!(stale.expect("mailbox"), Err(ExecuteError::Stale)),
            "read before the first command: stale"
        );
        let fresh = fresh.expect("mailbox").expect("based on the state ahead of it");
        assert!(!fresh.0.expect("number").deletion_protection_enabled);
        assert!(after.expect("mailbox").is_ok(), "a stale command breaks nothing behind it");

        let events = store.read_stream(ID, 1, usize::MAX).await.expect("read");
        let protection: Vec<bool> = events[1..]
            .iter()
            .map(|e| e.payload["DeletionProtectionEnabled"].as_bool().expect("an update"))
            .collect();
        assert_eq!(protection, [true, false, true], "the stale command wrote nothing");
        store.close().await.expect("close");
    });
}

/// With several writers on one log (two nodes of a cluster), an actor whose stream another node
/// has moved on catches up by the new events before deciding: the command that found it behind
/// is answered "superseded" (nothing written; the service sends it again, and notes that it lost
/// a race for the aggregate, which is what routing `contended` acts on), and the next one is
/// decided on the new head.
#[test]
fn an_actor_another_node_moved_on_catches_up_before_deciding() {
    let Some(urls) = common::nats::shared_cluster() else {
        return;
    };
    let settings = common::nats::fresh_settings(&urls);
    let system = actix_rt::System::new();
    system.block_on(async {
        let connect = || async { std::sync::Arc::new(JetStreamStore::connect(&settings).await.expect("connect")) as Store };
        let (here, there) = (connect().await, connect().await);
        let actor = requested_number_actor(&here).await;
        let at_1 = actor.send(GetState::default()).await.expect("mailbox").expect("state at v1");
        assert!(!at_1.0.expect("number").deletion_protection_enabled);

        let protect = PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
            deletion_protection_enabled: Some(true),
            ..Default::default()
        });
        there.append(append(protect, 1)).await.expect("the other node");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while here.version_hint(ID) != Some(2) {
            assert!(std::time::Instant::now() < deadline, "this node's view never saw version 2");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }

        let superseded = actor.send(execute(PhoneNumberAction::Release)).await.expect("mailbox");
        assert!(matches!(superseded, Err(ExecuteError::Superseded)), "{superseded:?}");
        // Decided on v2 (protected): the release is refused, recorded as v3.
        let refused = actor.send(execute(PhoneNumberAction::Release)).await.expect("mailbox");
        match refused {
            Err(ExecuteError::Rejected(Rejection::Conflict { reason, .. })) => {
                assert_eq!(reason, ConflictReason::DeletionProtectionEnabled)
            }
            other => panic!("decided on the head the other node made: {other:?}"),
        }
        let events = here.read_stream(ID, 1, usize::MAX).await.expect("read");
        assert_eq!(events.len(), 3, "the refusal follows the other node's event");
        here.close().await.expect("close");
        there.close().await.expect("close");
    });
}

/// A send whose destination opted out by the time its append reaches the log is refused there,
/// by the log, with the refusal its fallback command gives (recorded as that command), and the
/// commands pipelined behind it are not disturbed: a send leaves the number as it was either way.
#[test]
fn a_send_the_log_refuses_in_its_place_leaves_what_follows_it_standing() {
    use phone_ledger::domain::message::{Channel, OutboundMessage};
    use phone_ledger::store::{CounterLimit, IndexOp};
    let dir = tempfile::tempdir().expect("dir");
    let system = actix_rt::System::new();
    system.block_on(async {
        let store = open(dir.path(), Durability::Fsync, 256);
        let actor = requested_number_actor(&store).await;
        let message = OutboundMessage::example(ID, Channel::Text);
        let send = |opted_out_on: Option<&str>| PhoneNumberAction::SendMessage {
            message: Box::new(message.clone()),
            opted_out_on: opted_out_on.map(String::from),
        };
        // The destination is on the list already: the send was decided on an older look.
        let opted_out = b"x/opted-out".to_vec();
        let list_event = PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges::default());
        store
            .append(AppendRequest {
                index_ops: vec![IndexOp::Add(opted_out.clone(), 1)],
                ..AppendRequest::plain(
                    "list-x",
                    0,
                    AppendMeta::direct("111122223333", "us-east-1", "o", "Test/OptOut"),
                    pending_events(&[list_event]).expect("events"),
                )
            })
            .await
            .expect("opted out");
        let bounded = Execute {
            counter_limits: vec![CounterLimit::at_most(opted_out.clone(), 0)],
            otherwise: Some((0, send(Some("Default")))),
            ..execute(send(None))
        };
        let protect = PhoneNumberAction::Update(PhoneNumberChanges {
            deletion_protection_enabled: Some(true),
            ..Default::default()
        });
        let sends = [bounded, execute(protect)].map(|command| actor.send(command));
        let [refused, behind] = futures_util::future::join_all(sends)
            .await
            .try_into()
            .unwrap_or_else(|_| unreachable!("two answers"));
        match refused.expect("mailbox") {
            Err(ExecuteError::Rejected(Rejection::Conflict { reason, .. })) => {
                assert_eq!(reason, ConflictReason::DestinationPhoneNumberOptedOut)
            }
            other => panic!("refused by the log in its place: {other:?}"),
        }
        let behind = behind.expect("mailbox").expect("the command behind it stands");
        assert!(behind.0.expect("number").deletion_protection_enabled);

        let events = store.read_stream(ID, 1, usize::MAX).await.expect("read");
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types[1..], ["MessageRejected", "PhoneNumberUpdated"]);
        assert_eq!(
            events[1].command_input["Input"]["OptedOutOn"], "Default",
            "recorded as the command the log decided"
        );
        store.close().await.expect("close");
    });
}

/// A read "as decided" answers at once with the state the next command would be decided on,
/// appends in flight included, even one that then fails; the default read answers only with a
/// durable state, and tells a reader whose state was abandoned to ask again.
#[test]
fn a_read_as_decided_sees_appends_in_flight_a_durable_read_does_not() {
    let dir = tempfile::tempdir().expect("dir");
    let system = actix_rt::System::new();
    system.block_on(async {
        let store = open(dir.path(), Durability::Flush, 64);
        let actor = requested_number_actor(&store).await;
        actor.send(GetState::default()).await.expect("mailbox").expect("state at v1");
        // Another writer moves the stream on: the actor's next append will fail.
        let other = PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
            international_sending_enabled: Some(true),
            ..Default::default()
        });
        store.append(append(other, 1)).await.expect("other writer");
        let protect = PhoneNumberAction::Update(PhoneNumberChanges {
            deletion_protection_enabled: Some(true),
            ..Default::default()
        });
        let (update, as_decided, durable) = tokio::join!(
            actor.send(execute(protect)),
            actor.send(GetState::<PhoneNumberState>::as_decided()),
            actor.send(GetState::<PhoneNumberState>::default()),
        );
        assert!(update.expect("mailbox").is_err(), "decided on a stale state");
        let as_decided = as_decided.expect("mailbox").expect("answered at once");
        assert!(
            as_decided.0.expect("number").deletion_protection_enabled,
            "the append in flight included"
        );
        assert!(
            matches!(durable.expect("mailbox"), Err(ExecuteError::Superseded)),
            "a durable read never sees a state that was abandoned"
        );
        let now = actor.send(GetState::default()).await.expect("mailbox").expect("rebuilt");
        let now = now.0.expect("number");
        assert!(!now.deletion_protection_enabled && now.international_sending_enabled);
        store.close().await.expect("close");
    });
}
