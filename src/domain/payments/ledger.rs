//! Double entry for the budget side of payments: accounts, postings and a
//! trial balance.
//!
//! The four accounts mirror the three buckets of a budget allocation, so the
//! trial balance can be checked against budget state (a paired check):
//! `BudgetAvailable + BudgetReserved + PaidToBeneficiaries = −Appropriation`.
//! Funding movements between the treasury and the gateways' accounts are not
//! modelled here; they belong to the treasury side of ansinh.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
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

/// One line of a posting. Exactly one of debit/credit is non-zero; both are
/// whole đồng ≥ 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: Account,
    pub debit: Decimal,
    pub credit: Decimal,
}

impl Posting {
    pub fn debit(account: Account, amount: Decimal) -> Self {
        Self {
            account,
            debit: amount,
            credit: Decimal::ZERO,
        }
    }
    pub fn credit(account: Account, amount: Decimal) -> Self {
        Self {
            account,
            debit: Decimal::ZERO,
            credit: amount,
        }
    }
}

/// A debit line and a credit line of the same amount.
pub fn transfer(debit: Account, credit: Account, amount: Decimal) -> Vec<Posting> {
    vec![
        Posting::debit(debit, amount),
        Posting::credit(credit, amount),
    ]
}

/// Debits equal credits, and no line is negative or on both sides.
pub fn balanced(postings: &[Posting]) -> bool {
    let (dr, cr) = postings
        .iter()
        .fold((Decimal::ZERO, Decimal::ZERO), |(d, c), p| {
            (d + p.debit, c + p.credit)
        });
    dr == cr
        && postings.iter().all(|p| {
            !p.debit.is_sign_negative()
                && !p.credit.is_sign_negative()
                && (p.debit.is_zero() != p.credit.is_zero())
        })
}

/// Running totals of debits and credits per account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialBalance {
    pub accounts: BTreeMap<Account, (Decimal, Decimal)>,
}

impl TrialBalance {
    pub fn post(&mut self, postings: &[Posting]) {
        for p in postings {
            let e = self
                .accounts
                .entry(p.account)
                .or_insert((Decimal::ZERO, Decimal::ZERO));
            e.0 += p.debit;
            e.1 += p.credit;
        }
    }
    pub fn is_balanced(&self) -> bool {
        let (dr, cr) = self
            .accounts
            .values()
            .fold((Decimal::ZERO, Decimal::ZERO), |(d, c), v| {
                (d + v.0, c + v.1)
            });
        dr == cr
    }
    /// Debit-side balance (debits − credits) of one account.
    pub fn balance(&self, account: Account) -> Decimal {
        self.accounts
            .get(&account)
            .map(|(d, c)| d - c)
            .unwrap_or_default()
    }
}
