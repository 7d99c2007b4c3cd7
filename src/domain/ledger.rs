//! Double entry: accounts, postings and a trial balance.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Account {
    /// Principal outstanding and not overdue (asset).
    LoanReceivable,
    /// Principal that fell due and was not paid (asset).
    OverdueLoanReceivable,
    /// Interest accrued and posted on current principal, not yet paid (asset).
    InterestReceivable,
    /// Interest accrued on overdue principal, not yet paid (asset).
    OverdueInterestReceivable,
    /// Cash held at the commune transaction point (asset).
    CashAtCommunePoint,
    /// Funds the bank lends out of (credited when money leaves by transfer).
    FundingSource,
    /// Income from interest on current principal.
    InterestIncome,
    /// Income from interest on overdue principal.
    OverdueInterestIncome,
    /// Risk reserve charged when risk debt is written off.
    WriteOffReserve,
}

/// One line of a double-entry posting. Exactly one of debit/credit is
/// non-zero, and both are >= 0 whole đồng.
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
    /// The reversing line: debit and credit swap sides.
    pub fn reversed(&self) -> Self {
        Self {
            account: self.account,
            debit: self.credit,
            credit: self.debit,
        }
    }
}

/// Sum of debits equals sum of credits, and no line is negative.
pub fn balanced(postings: &[Posting]) -> bool {
    let (dr, cr) = postings
        .iter()
        .fold((Decimal::ZERO, Decimal::ZERO), |(d, c), p| {
            (d + p.debit, c + p.credit)
        });
    dr == cr
        && postings
            .iter()
            .all(|p| !p.debit.is_sign_negative() && !p.credit.is_sign_negative())
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
    pub fn total_debits(&self) -> Decimal {
        self.accounts.values().map(|v| v.0).sum()
    }
    pub fn total_credits(&self) -> Decimal {
        self.accounts.values().map(|v| v.1).sum()
    }
    pub fn is_balanced(&self) -> bool {
        self.total_debits() == self.total_credits()
    }
    /// Debit-side balance (debits − credits) of one account.
    pub fn balance(&self, account: Account) -> Decimal {
        self.accounts
            .get(&account)
            .map(|(d, c)| d - c)
            .unwrap_or_default()
    }
}
