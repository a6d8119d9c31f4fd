//! Collectives over the TCP ring: results, failures and the rendezvous store (ranks are child processes of this binary).

#[path = "../support/mod.rs"]
mod support;

mod collectives;
mod failures;
mod store;
