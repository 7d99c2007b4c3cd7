//! Given/when/then helper over `decide`/`apply`, plus fixtures.
#![allow(dead_code)]

use ansinh::domain::payments::budget::BudgetKey;
use ansinh::domain::payments::entitlements::{Channel, StopReason, Terms};
use ansinh::domain::payments::ids::{
    BeneficiaryRef, CategoryId, CommuneId, GatewayId, GatewayTxnId, HouseholdRef, InstructionRef,
    MemberRef, OfficerId, ProgrammeId,
};
use ansinh::domain::payments::instructions::{GatewayPost, InstructionId, Outcome, PostAnswer};
use ansinh::domain::payments::ledger::{Account, TrialBalance, balanced};
use ansinh::domain::payments::month::Month;
use ansinh::domain::payments::{
    Actor, Book, Command, CommandKind, Decision, Event, EventBody, Rejection, apply, decide, replay,
};
use chrono::NaiveDate;
use rust_decimal::Decimal;

pub const PROGRAMME: &str = "SOCIAL_ASSISTANCE_MONTHLY";
pub const COMMUNE: &str = "0100101";
pub const OTHER_COMMUNE: &str = "0100102";
pub const BANK: &str = "VCB";
pub const WALLET: &str = "VIETTELPAY";
pub const POST_OFFICE: &str = "VNPOST";
/// Coefficient 1.5 (Decree 20/2021 art. 6).
pub const ELDERLY_POOR: &str = "ELDERLY_POOR_60_TO_UNDER_80_NO_SUPPORTER";
/// Coefficient 2.5.
pub const ORPHAN_UNDER_4: &str = "ORPHAN_CHILD_UNDER_4";

pub fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

pub fn m(s: &str) -> Month {
    Month::parse(s).unwrap()
}

pub fn gw(s: &str) -> GatewayId {
    GatewayId::parse(s).unwrap()
}

pub fn bank() -> Channel {
    Channel::BankAccount { gateway: gw(BANK) }
}

pub fn wallet() -> Channel {
    Channel::MobileMoney {
        gateway: gw(WALLET),
    }
}

pub fn post_office() -> Channel {
    Channel::PostOffice {
        gateway: gw(POST_OFFICE),
    }
}

/// Household n, member "m1" (the head).
pub fn person(n: u32) -> BeneficiaryRef {
    BeneficiaryRef {
        household: HouseholdRef::parse(&format!("{COMMUNE}-{n:06}")).unwrap(),
        member: MemberRef::parse("m1").unwrap(),
    }
}

pub fn key(commune: &str, period: &str) -> BudgetKey {
    BudgetKey {
        programme: ProgrammeId::parse(PROGRAMME).unwrap(),
        commune: CommuneId::parse(commune).unwrap(),
        period: m(period),
    }
}

pub fn iid(s: &str) -> InstructionId {
    InstructionId::parse(s).unwrap()
}

pub fn cmd(date: &str, kind: CommandKind) -> Command {
    Command {
        actor: Actor::Officer(OfficerId::parse("officer-1").unwrap()),
        effective: d(date),
        kind,
    }
}

pub fn allocate(date: &str, commune: &str, period: &str, amount: i64) -> Command {
    cmd(
        date,
        CommandKind::Allocate {
            budget: key(commune, period),
            amount: Decimal::from(amount),
        },
    )
}

pub fn terms(category: &str, channel: Channel, provincial_base: Option<i64>) -> Terms {
    Terms {
        category: CategoryId::parse(category).unwrap(),
        channel,
        provincial_base: provincial_base.map(Decimal::from),
    }
}

/// Grant person `n` of `commune` from `from`.
pub fn grant_in(date: &str, n: u32, commune: &str, from: &str, terms: Terms) -> Command {
    cmd(
        date,
        CommandKind::Grant {
            programme: ProgrammeId::parse(PROGRAMME).unwrap(),
            beneficiary: person(n),
            commune: CommuneId::parse(commune).unwrap(),
            from: m(from),
            terms,
            citizen: None,
        },
    )
}

pub fn grant(date: &str, n: u32, from: &str, terms: Terms) -> Command {
    grant_in(date, n, COMMUNE, from, terms)
}

pub fn run(date: &str, period: &str, commune: Option<&str>) -> Command {
    cmd(
        date,
        CommandKind::Run {
            period: m(period),
            commune: commune.map(|c| CommuneId::parse(c).unwrap()),
        },
    )
}

pub fn stop(date: &str, entitlement: u64, on: &str, reason: StopReason) -> Command {
    cmd(
        date,
        CommandKind::Stop {
            entitlement,
            on: d(on),
            reason,
        },
    )
}

pub fn time_out(date: &str, instruction: &str) -> Command {
    cmd(
        date,
        CommandKind::TimeOut {
            instruction: iid(instruction),
        },
    )
}

pub fn reissue(date: &str, instruction: &str, channel: Option<Channel>) -> Command {
    cmd(
        date,
        CommandKind::Reissue {
            instruction: iid(instruction),
            channel,
        },
    )
}

/// A gateway result with the fields a test usually varies.
pub struct Post {
    pub gateway: &'static str,
    pub instruction: &'static str,
    pub outcome: Outcome,
    pub txn: &'static str,
    pub amount: i64,
    pub person: u32,
}

impl Post {
    pub fn new(
        gateway: &'static str,
        instruction: &'static str,
        outcome: Outcome,
        txn: &'static str,
        amount: i64,
    ) -> Self {
        Self {
            gateway,
            instruction,
            outcome,
            txn,
            amount,
            person: 1,
        }
    }
    /// For person `n` (default 1).
    pub fn of(mut self, n: u32) -> Self {
        self.person = n;
        self
    }
    pub fn body(&self) -> GatewayPost {
        GatewayPost {
            gateway: gw(self.gateway),
            instruction: InstructionRef::parse(self.instruction).unwrap(),
            outcome: self.outcome,
            gateway_txn: GatewayTxnId::parse(self.txn).unwrap(),
            amount: Decimal::from(self.amount),
            beneficiary: person(self.person),
        }
    }
    /// Posted by the gateway it names (its own credentials).
    pub fn on(&self, date: &str) -> Command {
        Command {
            actor: Actor::Gateway(gw(self.gateway)),
            effective: d(date),
            kind: CommandKind::Post(self.body()),
        }
    }
}

/// Events produced by running commands in order; panics on a refusal
/// (fixtures must be valid). Duplicates append nothing.
pub fn history(cmds: &[Command]) -> Vec<Event> {
    history_from(&[], cmds)
}

pub fn history_from(before: &[Event], cmds: &[Command]) -> Vec<Event> {
    let mut book = replay(before);
    let mut all = before.to_vec();
    for c in cmds {
        let evs = decide(&book, c.clone())
            .unwrap_or_else(|r| panic!("fixture {c:?}: {r}"))
            .into_events();
        for e in &evs {
            apply(&mut book, e);
        }
        all.extend(evs);
    }
    all
}

/// Person 1 (elderly poor, 1.5) paid by bank from 2026-12, budget 10 000 000,
/// December run made on 2026-12-01: instruction `pay:1:2026-12:1` of 750 000.
pub fn one_instruction() -> Vec<Event> {
    history(&[
        allocate("2026-11-20", COMMUNE, "2026-12", 10_000_000),
        grant(
            "2026-11-20",
            1,
            "2026-12",
            terms(ELDERLY_POOR, bank(), None),
        ),
        run("2026-12-01", "2026-12", None),
    ])
}

pub const FIRST: &str = "pay:1:2026-12:1";
pub const AMOUNT: i64 = 750_000;

pub struct Given {
    pub book: Book,
    pub history: Vec<Event>,
}

pub fn given(events: &[Event]) -> Given {
    Given {
        book: replay(events),
        history: events.to_vec(),
    }
}

pub struct Then {
    pub before: Book,
    pub history: Vec<Event>,
    pub result: Result<Decision, Rejection>,
}

impl Given {
    pub fn when(self, c: Command) -> Then {
        self.when_registry(c, &ansinh::domain::payments::EveryoneHere)
    }

    /// `when`, against what a registry knows (who lives here, who died).
    pub fn when_registry(
        self,
        c: Command,
        registry: &dyn ansinh::domain::payments::RegistryFacts,
    ) -> Then {
        let result = ansinh::domain::payments::decide_for(&self.book, c, registry);
        Then {
            before: self.book,
            history: self.history,
            result,
        }
    }
}

impl Then {
    pub fn events(&self) -> &[Event] {
        self.result
            .as_ref()
            .unwrap_or_else(|r| panic!("refused: {r}"))
            .events()
    }
    /// Compares event bodies (ids and envelope are bookkeeping).
    pub fn then_events(&self, expected: &[EventBody]) -> &Self {
        let got: Vec<&EventBody> = self.events().iter().map(|e| &e.body).collect();
        let want: Vec<&EventBody> = expected.iter().collect();
        assert_eq!(got, want);
        self
    }
    pub fn then_nothing(&self) -> &Self {
        assert_eq!(self.result, Ok(Decision::Append(Vec::new())));
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
    pub fn then_duplicate(&self, first: &PostAnswer) {
        assert_eq!(self.result, Ok(Decision::Duplicate(first.clone())));
    }
    pub fn answer(&self) -> PostAnswer {
        self.result
            .as_ref()
            .unwrap_or_else(|r| panic!("refused: {r}"))
            .post_answer()
            .expect("a post decision has an answer")
    }
    /// Book after applying the new events. Checks on the way: every event's
    /// postings balanced, every budget within its allocation and equal to the
    /// trial balance, and replaying everything gives the same book.
    pub fn after(&self) -> Book {
        let mut b = self.before.clone();
        for e in self.events() {
            apply(&mut b, e);
        }
        let all: Vec<Event> = self.history.iter().chain(self.events()).cloned().collect();
        assert_eq!(replay(&all), b, "replay differs from incremental");
        check_money(&all, &b);
        b
    }
    pub fn then(&self, f: impl FnOnce(&Book, &[Event])) -> &Self {
        f(&self.after(), self.events());
        self
    }
}

/// The money invariants of a history and its book.
pub fn check_money(events: &[Event], book: &Book) {
    let mut tb = TrialBalance::default();
    for e in events {
        assert!(balanced(e.postings()), "unbalanced {e:?}");
        tb.post(e.postings());
    }
    assert!(tb.is_balanced());
    let (mut allocated, mut reserved, mut posted) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for (k, b) in &book.budgets {
        assert!(b.is_within_allocation(), "{k:?}: {b:?}");
        allocated += b.allocated;
        reserved += b.reserved;
        posted += b.posted;
    }
    assert_eq!(-tb.balance(Account::Appropriation), allocated);
    assert_eq!(tb.balance(Account::BudgetReserved), reserved);
    assert_eq!(tb.balance(Account::PaidToBeneficiaries), posted);
}

/// How many of the book's entitlements are running (not stopped).
pub fn running(book: &Book) -> usize {
    book.entitlements
        .values()
        .filter(|e| e.stopped.is_none())
        .count()
}
