//! Pure domain logic for cashless social-assistance payments in ansinh.
//!
//! * [`entitlements`] — who is owed what each month (base level × category
//!   coefficient, from versioned [`reference`] data).
//! * [`budget`] — allocations per (programme, commune, period) and the holds
//!   instructions place on them; reserved + posted ≤ allocated, always.
//! * [`instructions`] — payment runs, gateway results, timeouts, reissues.
//! * [`book`] — the aggregate: `decide(&Book, Command) -> Result<Decision,
//!   Rejection>` holds every rule, `apply(&mut Book, &Event)` only copies.
//! * [`reconcile`] — reports over events, per gateway and day, and per
//!   household.
//!
//! **Boundary**: no I/O, no clock, no randomness. Every date arrives in a
//! command; reference data is compiled in with `include_str!`. Wiring to the
//! log (and serialising decisions per partition) is the caller's job.

pub mod book;
pub mod budget;
pub mod entitlements;
pub mod ids;
pub mod instructions;
pub mod ledger;
pub mod month;
pub mod reconcile;
pub mod reference;
mod rejection;

pub use book::{
    Actor, Book, Command, CommandKind, Decision, Event, EventBody, EveryoneHere, RegistryFacts,
    apply, decide, decide_for, replay,
};
pub use rejection::Rejection;
