//! The actor shell around the deciders: one [`AggregateActor`] per phone number and per pool,
//! found or started by a [`Registry`], and the [`Ledger`] that runs the operations spanning both
//! (pool membership, pool creation and deletion) as ordered steps through their mailboxes.

mod aggregate_actor;
mod ledger;
mod registry;

pub use aggregate_actor::{ActorSettings, AggregateActor, Execute, ExecuteError, GetState, Passivate};
pub use ledger::{Ledger, LedgerError, NewNumber, NewPool, Page};
pub use registry::Registry;
