//! Pure domain logic: eligibility under versioned poverty standards, policy-credit
//! loans, double-entry postings.
//!
//! **Boundary:** nothing here reads a clock, a file at run time, the network or a
//! random source. Every date arrives inside a command, reference data is compiled in
//! with `include_str!`, and money is `rust_decimal::Decimal` in whole VND.

pub mod eligibility;
pub mod ids;
pub mod ledger;
pub mod loans;
pub mod money;
pub mod payments;
pub mod programmes;
pub mod registry;
pub mod rejection;

pub use rejection::Rejection;
