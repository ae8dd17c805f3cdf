//! The actor shell around the deciders: one [`AggregateActor`] per phone number and per pool,
//! found or started by a [`Registry`]. Commands for one aggregate go through its mailbox, so they
//! are decided one at a time on the state its stream holds.

mod aggregate_actor;
mod registry;

pub use aggregate_actor::{ActorSettings, AggregateActor, Execute, ExecuteError, GetState, Inspect, Passivate, Premise};
pub use registry::Registry;
