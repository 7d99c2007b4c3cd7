//! The chart of accounts of the budget side of payments; postings and the trial
//! balance are `domain::ledger`'s, over this chart.
//!
//! The four accounts mirror the three buckets of a budget allocation, so the
//! trial balance can be checked against budget state (a paired check):
//! `BudgetAvailable + BudgetReserved + PaidToBeneficiaries = −Appropriation`.
//! Funding movements between the treasury and the gateways' accounts are not
//! modelled here; they belong to the treasury side of ansinh.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Account {
    /// Funds appropriated to programmes (credit balance): the source of every
    /// allocation.
    Appropriation,
    /// Allocated and free to be reserved (debit balance).
    BudgetAvailable,
    /// Held for instructions awaiting a gateway result: pending transfers
    /// (debit balance).
    BudgetReserved,
    /// Settled by a gateway to beneficiaries (debit balance, expense).
    PaidToBeneficiaries,
}

pub type Posting = crate::domain::ledger::Posting<Account>;
pub type TrialBalance = crate::domain::ledger::TrialBalance<Account>;
pub use crate::domain::ledger::transfer;

/// Debits equal credits, and no line is negative or on both sides: the payments book
/// never posts a line of zero, so a line on both sides or neither is a defect.
pub fn balanced(postings: &[Posting]) -> bool {
    crate::domain::ledger::balanced(postings)
        && postings
            .iter()
            .all(|p| p.debit.is_zero() != p.credit.is_zero())
}
