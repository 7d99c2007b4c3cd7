//! Given/when/then helper over `decide`/`apply`, plus fixtures.
#![allow(dead_code)]

use std::collections::BTreeSet;

use ansinh::domain::Rejection;
use ansinh::domain::eligibility::{Area, ClassificationInputs};
use ansinh::domain::ids::HouseholdId;
use ansinh::domain::ledger::TrialBalance;
use ansinh::domain::loans::{
    Channel, Command, CommandKind, EntrustedOrganisation, Event, EventBody, EventId, LoanBook,
    apply, decide,
};
use chrono::NaiveDate;
use rust_decimal::Decimal;

pub fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

pub fn hh() -> HouseholdId {
    HouseholdId::parse("0100101-000001").unwrap()
}

pub fn cmd(date: &str, kind: CommandKind) -> Command {
    Command {
        actor: "officer-1".into(),
        reason: "test".into(),
        effective: d(date),
        kind,
    }
}

pub fn inputs(income: i64, deprived: &[&str], review_year: i32) -> ClassificationInputs {
    ClassificationInputs {
        income_per_person_month: Decimal::from(income),
        area: Area::Rural,
        deprived: deprived
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        review_year,
    }
}

pub const POOR3: &[&str] = &["employment", "nutrition", "drinking_water"];

pub fn classify(date: &str, income: i64, deprived: &[&str], year: i32) -> Command {
    cmd(
        date,
        CommandKind::Classify {
            household: hh(),
            inputs: inputs(income, deprived, year),
            corrects: None,
        },
    )
}

/// `classify`, as the correction of the household's decision `corrects`.
pub fn correct(
    date: &str,
    income: i64,
    deprived: &[&str],
    year: i32,
    corrects: EventId,
) -> Command {
    cmd(
        date,
        CommandKind::Classify {
            household: hh(),
            inputs: inputs(income, deprived, year),
            corrects: Some(corrects),
        },
    )
}

pub fn approve(date: &str, programme: &str, amount: i64, term: u32) -> Command {
    cmd(
        date,
        CommandKind::Approve {
            household: hh(),
            programme: programme.into(),
            amount: Decimal::from(amount),
            term_months: term,
            savings_group: "SG-01".into(),
            entrusted: EntrustedOrganisation::WomensUnion,
        },
    )
}

pub fn disburse(date: &str, loan: u64, amount: i64) -> Command {
    cmd(
        date,
        CommandKind::Disburse {
            loan,
            amount: Decimal::from(amount),
            channel: Channel::CommuneTransactionPoint,
        },
    )
}

pub fn repay(date: &str, loan: u64, amount: Decimal) -> Command {
    cmd(date, CommandKind::Repay { loan, amount })
}

/// Events produced by running commands in order; panics on a refusal
/// (fixtures must be valid).
pub fn history(cmds: &[Command]) -> Vec<Event> {
    let mut book = LoanBook::default();
    let mut all = Vec::new();
    for c in cmds {
        let evs = decide(&book, c.clone()).unwrap_or_else(|r| panic!("fixture {c:?}: {r}"));
        for e in &evs {
            apply(&mut book, e);
        }
        all.extend(evs);
    }
    all
}

/// A poor household with loan 1 (poor programme, 12 000 000 over 12 months)
/// fully disbursed on 2025-01-10.
pub fn poor_loan_history() -> Vec<Event> {
    history(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        approve("2025-01-05", "POOR_HOUSEHOLD", 12_000_000, 12),
        disburse("2025-01-10", 1, 12_000_000),
    ])
}

pub struct Given {
    pub book: LoanBook,
    pub history: Vec<Event>,
}

pub fn given(events: &[Event]) -> Given {
    let mut book = LoanBook::default();
    for e in events {
        apply(&mut book, e);
    }
    Given {
        book,
        history: events.to_vec(),
    }
}

pub struct Then {
    pub before: LoanBook,
    pub history: Vec<Event>,
    pub result: Result<Vec<Event>, Rejection>,
}

impl Given {
    pub fn when(self, c: Command) -> Then {
        let result = decide(&self.book, c);
        Then {
            before: self.book,
            history: self.history,
            result,
        }
    }
}

impl Then {
    /// Compares event bodies (ids and envelope are bookkeeping).
    pub fn then_events(&self, expected: &[EventBody]) -> &Self {
        let got: Vec<&EventBody> = self.events().iter().map(|e| &e.body).collect();
        let want: Vec<&EventBody> = expected.iter().collect();
        assert_eq!(got, want);
        self
    }
    pub fn then_rejects(&self, r: Rejection) {
        assert_eq!(
            self.result.as_ref().err(),
            Some(&r),
            "result: {:?}",
            self.result
        );
    }
    pub fn events(&self) -> &[Event] {
        self.result
            .as_ref()
            .unwrap_or_else(|r| panic!("refused: {r}"))
    }
    /// Book after applying the new events; also checks the trial balance of
    /// the whole history stays balanced.
    pub fn after(&self) -> LoanBook {
        let mut b = self.before.clone();
        let mut tb = TrialBalance::default();
        for e in &self.history {
            tb.post(e.postings());
        }
        for e in self.events() {
            apply(&mut b, e);
            tb.post(e.postings());
            assert!(tb.is_balanced(), "unbalanced after {e:?}");
        }
        b
    }
    pub fn then(&self, f: impl FnOnce(&LoanBook, &[Event])) -> &Self {
        f(&self.after(), self.events());
        self
    }
}
