//! Given/when/then harness for deciders: `given(events).when(action).then(events)`.

use super::{Aggregate, Command, CommandMeta, Rejection, Scope};

pub const ACCOUNT: &str = "111122223333";
pub const REGION: &str = "us-east-1";

pub fn meta(account: &str) -> CommandMeta {
    CommandMeta {
        request_id: "req-1".into(),
        scope: Scope::new(account, REGION),
        at_ms: 1_700_000_000_000,
        operation: "Test".into(),
    }
}

pub struct Given<A: Aggregate> {
    state: A,
    target: String,
    account: String,
}

pub fn given<A: Aggregate>(target: &str, events: &[A::Event]) -> Given<A> {
    Given {
        state: A::replay(events),
        target: target.into(),
        account: ACCOUNT.into(),
    }
}

impl<A: Aggregate> Given<A> {
    /// The command comes from another account.
    pub fn by_account(mut self, account: &str) -> Self {
        self.account = account.into();
        self
    }

    pub fn when(self, action: A::Action) -> Then<A> {
        let command = Command {
            meta: meta(&self.account),
            target: self.target.clone(),
            action,
        };
        let outcome = self.state.decide(&command);
        Then {
            state: self.state,
            outcome,
        }
    }
}

pub struct Then<A: Aggregate> {
    state: A,
    outcome: Result<Vec<A::Event>, Rejection>,
}

impl<A: Aggregate> Then<A> {
    pub fn then(self, expected: &[A::Event]) -> A {
        match self.outcome {
            Ok(events) => {
                assert_eq!(events, expected);
                events.iter().fold(self.state, |s, e| s.evolve(e))
            }
            Err(r) => panic!("expected events {expected:?}, got rejection {r:?}"),
        }
    }

    pub fn then_reject(self, check: impl FnOnce(&Rejection) -> bool) -> Rejection {
        match self.outcome {
            Err(r) => {
                assert!(check(&r), "unexpected rejection {r:?}");
                r
            }
            Ok(events) => panic!("expected a rejection, got events {events:?}"),
        }
    }
}

/// An opt-out list of `numbers` numbers (`+1206` and seven digits, counting from 0).
pub fn opt_out_list_of(numbers: u64) -> super::opt_out_list::OptOutList {
    use super::opt_out_list::{OptOutList, OptedOut};
    let mut list = OptOutList::new("big", "arn".into(), ACCOUNT, REGION, 1, vec![], None);
    for i in 0..numbers {
        let entry = OptedOut {
            opted_out_timestamp_ms: 1,
            end_user_opted_out: false,
        };
        list.opted_out.insert(format!("+1206{i:07}"), entry);
    }
    list
}
