//! Double entry, one home for both books: postings, the balance check and a trial
//! balance, generic over a chart of accounts. The loan book's chart (`Account`) is
//! here and is the default; the payments book's budget chart is
//! `domain::payments::ledger::Account`. Two charts, because the bank's lending and a
//! programme's budget are kept in separate books; one machinery, so a posting and a
//! trial balance mean the same in both.

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
    /// Cash held at the commune transaction point (asset): brought from the branch for a
    /// cash tranche and paid out, and the collections not yet handed in.
    CashAtCommunePoint,
    /// Funds the bank lends out of (credited when money leaves, by transfer or as the
    /// cash brought to a commune point for a tranche).
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
pub struct Posting<A = Account> {
    pub account: A,
    pub debit: Decimal,
    pub credit: Decimal,
}

impl<A: Copy> Posting<A> {
    pub fn debit(account: A, amount: Decimal) -> Self {
        Self {
            account,
            debit: amount,
            credit: Decimal::ZERO,
        }
    }
    pub fn credit(account: A, amount: Decimal) -> Self {
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

/// A debit line and a credit line of the same amount.
pub fn transfer<A: Copy>(debit: A, credit: A, amount: Decimal) -> Vec<Posting<A>> {
    vec![
        Posting::debit(debit, amount),
        Posting::credit(credit, amount),
    ]
}

/// Sum of debits equals sum of credits, and no line is negative.
pub fn balanced<A>(postings: &[Posting<A>]) -> bool {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: Ord + Deserialize<'de>"))]
pub struct TrialBalance<A = Account> {
    pub accounts: BTreeMap<A, (Decimal, Decimal)>,
}

impl<A> Default for TrialBalance<A> {
    fn default() -> Self {
        Self {
            accounts: BTreeMap::new(),
        }
    }
}

impl<A: Ord + Copy> TrialBalance<A> {
    pub fn post(&mut self, postings: &[Posting<A>]) {
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
    pub fn balance(&self, account: A) -> Decimal {
        self.accounts
            .get(&account)
            .map(|(d, c)| d - c)
            .unwrap_or_default()
    }
}
