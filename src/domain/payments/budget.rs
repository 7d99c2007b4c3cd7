//! Budget allocations per (programme, commune, period) and the holds that
//! payment instructions place on them: pending transfers that are reserved,
//! then posted on settlement or voided on failure, return or timeout.
//!
//! **Invariant**: for every budget, `reserved + posted ≤ allocated`, and all
//! three are ≥ 0. `decide_move` is the only place a budget changes; it refuses
//! (typed error) what would break the invariant on operator input and asserts
//! it on the rest, so a broken invariant crashes instead of paying.
//!
//! Two payment runs racing are two decisions taken one after the other on
//! the same state (the log serialises decisions per partition), so the
//! second sees the first's holds and cannot over-commit.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::money::{self, MAX_AMOUNT};
use crate::domain::payments::Rejection;
use crate::domain::payments::ids::{CommuneId, ProgrammeId};
use crate::domain::payments::ledger::{Account, Posting, transfer};
use crate::domain::payments::month::Month;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BudgetKey {
    pub programme: ProgrammeId,
    pub commune: CommuneId,
    pub period: Month,
}

/// One allocation and what is committed against it, whole VND.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub allocated: Decimal,
    /// Held by instructions awaiting a gateway result.
    pub reserved: Decimal,
    /// Settled by gateways (and not returned).
    pub posted: Decimal,
}

impl Budget {
    /// Allocated and neither reserved nor posted.
    pub fn available(&self) -> Decimal {
        self.allocated - self.reserved - self.posted
    }

    /// The invariant every budget holds after every event.
    pub fn is_within_allocation(&self) -> bool {
        !self.reserved.is_sign_negative()
            && !self.posted.is_sign_negative()
            && self.reserved + self.posted <= self.allocated
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MoveKind {
    /// Add to the allocation.
    Allocate,
    /// Take back unused allocation.
    Deallocate,
    /// Place a hold for an instruction (pending transfer).
    Reserve,
    /// Settlement: the hold becomes a payment.
    Post,
    /// Failure, return before settlement, timeout or cancellation: the hold
    /// goes back to available.
    Void,
    /// Return after settlement: the payment goes back to available.
    Release,
}

/// A decided change of one budget, with its balanced postings. Events carry
/// it; `apply` copies `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetMove {
    pub key: BudgetKey,
    pub kind: MoveKind,
    pub amount: Decimal,
    pub after: Budget,
    pub postings: Vec<Posting>,
}

/// Decide one move of `amount` (a validated positive whole-đồng amount) on
/// `current`, the budget's state including earlier moves of the same
/// decision.
pub fn decide_move(
    key: &BudgetKey,
    current: &Budget,
    kind: MoveKind,
    amount: Decimal,
) -> Result<BudgetMove, Rejection> {
    assert!(amount > Decimal::ZERO, "moves are of positive amounts");
    let mut after = current.clone();
    let available = current.available();
    let (debit, credit) = match kind {
        MoveKind::Allocate => {
            let allocated = money::add(current.allocated, amount)?;
            if allocated > MAX_AMOUNT {
                return Err(Rejection::AllocationTooLarge {
                    budget: key.clone(),
                    allocated: current.allocated,
                    requested: amount,
                    max: MAX_AMOUNT,
                });
            }
            after.allocated = allocated;
            (Account::BudgetAvailable, Account::Appropriation)
        }
        MoveKind::Deallocate => {
            if amount > available {
                return Err(Rejection::DeallocationOverAvailable {
                    budget: key.clone(),
                    available,
                    requested: amount,
                });
            }
            after.allocated = money::sub(current.allocated, amount)?;
            (Account::Appropriation, Account::BudgetAvailable)
        }
        MoveKind::Reserve => {
            if amount > available {
                return Err(Rejection::BudgetExceeded {
                    budget: key.clone(),
                    available,
                    requested: amount,
                });
            }
            after.reserved = money::add(current.reserved, amount)?;
            (Account::BudgetReserved, Account::BudgetAvailable)
        }
        // The three below only ever move a hold that exists; a shortfall
        // here is a programming error, not an operating one.
        MoveKind::Post => {
            assert!(
                amount <= current.reserved,
                "posting a hold that is not reserved"
            );
            after.reserved = current.reserved - amount;
            after.posted = money::add(current.posted, amount)?;
            (Account::PaidToBeneficiaries, Account::BudgetReserved)
        }
        MoveKind::Void => {
            assert!(
                amount <= current.reserved,
                "voiding a hold that is not reserved"
            );
            after.reserved = current.reserved - amount;
            (Account::BudgetAvailable, Account::BudgetReserved)
        }
        MoveKind::Release => {
            assert!(
                amount <= current.posted,
                "releasing a payment that is not posted"
            );
            after.posted = current.posted - amount;
            (Account::BudgetAvailable, Account::PaidToBeneficiaries)
        }
    };
    assert!(
        after.is_within_allocation(),
        "budget {key:?} would break reserved + posted <= allocated: {after:?}"
    );
    Ok(BudgetMove {
        key: key.clone(),
        kind,
        amount,
        after,
        postings: transfer(debit, credit, amount),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::payments::ledger::{TrialBalance, balanced};
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn key() -> BudgetKey {
        BudgetKey {
            programme: ProgrammeId::parse("P").unwrap(),
            commune: CommuneId::parse("C").unwrap(),
            period: Month::parse("2026-12").unwrap(),
        }
    }

    #[test]
    fn reserve_beyond_available_refused() {
        let b = Budget {
            allocated: dec!(1000000),
            reserved: dec!(540000),
            posted: dec!(0),
        };
        assert_eq!(
            decide_move(&key(), &b, MoveKind::Reserve, dec!(540000)),
            Err(Rejection::BudgetExceeded {
                budget: key(),
                available: dec!(460000),
                requested: dec!(540000)
            })
        );
        let m = decide_move(&key(), &b, MoveKind::Reserve, dec!(460000)).unwrap();
        assert_eq!(m.after.available(), dec!(0));
    }

    #[test]
    fn deallocation_cannot_take_committed_money() {
        let b = Budget {
            allocated: dec!(100),
            reserved: dec!(60),
            posted: dec!(30),
        };
        assert!(matches!(
            decide_move(&key(), &b, MoveKind::Deallocate, dec!(11)),
            Err(Rejection::DeallocationOverAvailable { .. })
        ));
        assert_eq!(
            decide_move(&key(), &b, MoveKind::Deallocate, dec!(10))
                .unwrap()
                .after
                .allocated,
            dec!(90)
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(u32),
        Deallocate(u32),
        Reserve(u32),
        Post(usize),
        Void(usize),
        Release(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u32..2_000).prop_map(Op::Allocate),
            (1u32..2_000).prop_map(Op::Deallocate),
            (1u32..1_000).prop_map(Op::Reserve),
            any::<usize>().prop_map(Op::Post),
            any::<usize>().prop_map(Op::Void),
            any::<usize>().prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Holds are (amount, state) with state 0 reserved, 1 posted, 2 done;
        /// only legal hold moves are attempted, as the instruction state
        /// machine guarantees. Refusals leave the budget unchanged.
        #[test]
        fn any_sequence_stays_within_allocation(ops in prop::collection::vec(op(), 1..80)) {
            let mut b = Budget::default();
            let mut holds: Vec<(Decimal, u8)> = Vec::new();
            let mut tb = TrialBalance::default();
            for op in ops {
                let pick = |i: usize, state: u8, holds: &[(Decimal, u8)]| {
                    let idx: Vec<usize> = (0..holds.len()).filter(|j| holds[*j].1 == state).collect();
                    (!idx.is_empty()).then(|| idx[i % idx.len()])
                };
                let (kind, amount, hold) = match op {
                    Op::Allocate(a) => (MoveKind::Allocate, Decimal::from(a), None),
                    Op::Deallocate(a) => (MoveKind::Deallocate, Decimal::from(a), None),
                    Op::Reserve(a) => (MoveKind::Reserve, Decimal::from(a), None),
                    Op::Post(i) | Op::Void(i) | Op::Release(i) => {
                        let (kind, state) = match op {
                            Op::Post(_) => (MoveKind::Post, 0),
                            Op::Void(_) => (MoveKind::Void, 0),
                            _ => (MoveKind::Release, 1),
                        };
                        let Some(h) = pick(i, state, &holds) else { continue };
                        (kind, holds[h].0, Some(h))
                    }
                };
                if let Ok(m) = decide_move(&key(), &b, kind, amount) {
                    prop_assert!(balanced(&m.postings));
                    tb.post(&m.postings);
                    b = m.after;
                    match (kind, hold) {
                        (MoveKind::Reserve, _) => holds.push((amount, 0)),
                        (MoveKind::Post, Some(h)) => holds[h].1 = 1,
                        (MoveKind::Void | MoveKind::Release, Some(h)) => holds[h].1 = 2,
                        _ => {}
                    }
                }
                prop_assert!(b.is_within_allocation());
                prop_assert_eq!(tb.balance(Account::BudgetReserved), b.reserved);
                prop_assert_eq!(tb.balance(Account::PaidToBeneficiaries), b.posted);
                prop_assert_eq!(tb.balance(Account::BudgetAvailable), b.available());
                prop_assert_eq!(-tb.balance(Account::Appropriation), b.allocated);
            }
        }
    }
}
