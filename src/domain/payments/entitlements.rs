//! Entitlements to monthly social assistance: grant, change and stop, and the
//! amount owed for a month.
//!
//! Monthly amount = base in force on the first day of the month (the
//! provincial base instead when it is higher) × the coefficient of the
//! beneficiary's category in force on that day, rounded to whole đồng half-up.
//! Both come from versioned reference data, so an entitlement follows every
//! change of base or coefficient without being re-granted.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::money::{self, positive_vnd, round_dong};
use crate::domain::payments::Rejection;
use crate::domain::payments::book::{EventBody, Out, RegistryFacts};
use crate::domain::payments::ids::{
    BeneficiaryRef, CategoryId, CitizenIndex, CommuneId, GatewayId, ProgrammeId, member_number,
};
use crate::domain::payments::instructions;
use crate::domain::payments::month::Month;
use crate::domain::payments::reference::{BaseLevelRef, CategoryRef, ReferenceData, reference};

pub type EntitlementId = u64;

/// At most this many terms periods (the grant plus changes) per entitlement:
/// ten years of monthly changes. A bound for the look-up in `terms_for`.
pub const TERMS_PERIODS_MAX: usize = 120;

/// Days after issue without a gateway result before an instruction may be
/// timed out, per channel. ASSUMPTION: bank and e-wallet transfers answer
/// within days; post-office cash is paid out over the month at commune pay
/// points, so it gets longer.
pub const BANK_ACCOUNT_TIMEOUT_DAYS: u32 = 10;
pub const MOBILE_MONEY_TIMEOUT_DAYS: u32 = 10;
pub const POST_OFFICE_TIMEOUT_DAYS: u32 = 45;

/// How the money reaches the beneficiary, and through which gateway.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Channel {
    BankAccount {
        gateway: GatewayId,
    },
    MobileMoney {
        gateway: GatewayId,
    },
    /// Cash paid out by the post office.
    PostOffice {
        gateway: GatewayId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChannelKind {
    BankAccount,
    MobileMoney,
    PostOffice,
}

impl Channel {
    pub fn gateway(&self) -> &GatewayId {
        match self {
            Channel::BankAccount { gateway }
            | Channel::MobileMoney { gateway }
            | Channel::PostOffice { gateway } => gateway,
        }
    }
    pub fn kind(&self) -> ChannelKind {
        match self {
            Channel::BankAccount { .. } => ChannelKind::BankAccount,
            Channel::MobileMoney { .. } => ChannelKind::MobileMoney,
            Channel::PostOffice { .. } => ChannelKind::PostOffice,
        }
    }
    pub fn timeout_days(&self) -> u32 {
        self.kind().timeout_days()
    }
}

/// The shortest of the channels' timeouts: nothing issued less than this many days ago
/// can be due for a timeout.
pub const TIMEOUT_DAYS_MIN: u32 = {
    let bank = if BANK_ACCOUNT_TIMEOUT_DAYS < MOBILE_MONEY_TIMEOUT_DAYS {
        BANK_ACCOUNT_TIMEOUT_DAYS
    } else {
        MOBILE_MONEY_TIMEOUT_DAYS
    };
    if bank < POST_OFFICE_TIMEOUT_DAYS {
        bank
    } else {
        POST_OFFICE_TIMEOUT_DAYS
    }
};

impl ChannelKind {
    pub fn timeout_days(self) -> u32 {
        match self {
            ChannelKind::BankAccount => BANK_ACCOUNT_TIMEOUT_DAYS,
            ChannelKind::MobileMoney => MOBILE_MONEY_TIMEOUT_DAYS,
            ChannelKind::PostOffice => POST_OFFICE_TIMEOUT_DAYS,
        }
    }

    /// First day on which an instruction of this channel issued on `issued_on` may be
    /// timed out (`Instruction::timeout_due_on`).
    pub fn timeout_due_on(self, issued_on: chrono::NaiveDate) -> chrono::NaiveDate {
        issued_on
            .checked_add_days(chrono::Days::new(u64::from(self.timeout_days())))
            .unwrap_or(chrono::NaiveDate::MAX)
    }
}

/// What an entitlement pays and how, from some month on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub category: CategoryId,
    pub channel: Channel,
    /// A province's own, higher, base level (whole VND). The higher of this
    /// and the national base is paid, so a provincial base that the national
    /// one has overtaken is harmless.
    pub provincial_base: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermsPeriod {
    pub from: Month,
    pub terms: Terms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StopReason {
    Death,
    /// Moved to another commune; the new commune grants anew.
    Move,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    pub on: NaiveDate,
    pub reason: StopReason,
}

impl Stopped {
    /// The last month paid: the month in which the stop falls. ASSUMPTION:
    /// Decree 20/2021/NĐ-CP stops the allowance from the month after death
    /// or move, so the month of the event itself is still paid.
    pub fn last_payable(&self) -> Month {
        Month::of(self.on)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    pub id: EntitlementId,
    pub programme: ProgrammeId,
    pub beneficiary: BeneficiaryRef,
    pub commune: CommuneId,
    /// Non-empty, `from` strictly increasing.
    pub periods: Vec<TermsPeriod>,
    pub stopped: Option<Stopped>,
    /// Who the beneficiary is (`EventBody::EntitlementGranted::citizen`): a run pays
    /// no month after the one they died in. None: only a stop ends it.
    #[serde(default, with = "crate::domain::registry::blind_bytes::option")]
    pub citizen: Option<CitizenIndex>,
}

impl Entitlement {
    /// The day its beneficiary died, as the registry recorded it.
    pub fn died_on(&self, registry: &dyn RegistryFacts) -> Option<NaiveDate> {
        self.citizen.as_ref().and_then(|c| registry.died_on(c))
    }

    /// Whether its beneficiary is no longer one of its household's citizens (a member
    /// change took them out, or the household's data were erased): their claim is then
    /// free, and the household they join may grant them the same allowance. False for an
    /// entitlement without a recorded citizen (a member without an id, an older grant):
    /// an erasure stops those by `RegistryFacts::erased`.
    pub fn beneficiary_left(&self, registry: &dyn RegistryFacts) -> bool {
        self.citizen
            .as_ref()
            .is_some_and(|c| !registry.is_member(&self.beneficiary.household, c))
    }
}

impl Entitlement {
    pub fn from(&self) -> Month {
        self.periods[0].from
    }

    /// Terms that apply to `month`, or None when the entitlement does not
    /// cover it (before its start, or after the month it stopped in).
    pub fn terms_for(&self, month: Month) -> Option<&Terms> {
        if self
            .stopped
            .as_ref()
            .is_some_and(|s| month > s.last_payable())
        {
            return None;
        }
        self.periods
            .iter()
            .rev()
            .find(|p| p.from <= month)
            .map(|p| &p.terms)
    }
}

/// How one month's amount was computed: enough to recompute and audit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthlyAmount {
    pub month: Month,
    /// Whole VND, half-up.
    pub amount: Decimal,
    /// The base actually used (national or provincial).
    pub base: Decimal,
    pub national_base: BaseLevelRef,
    pub national_amount: Decimal,
    pub provincial_base_applied: bool,
    pub category: CategoryRef,
    pub coefficient: Decimal,
}

/// The amount owed by `entitlement` for `month` under the shipped reference
/// data, or None if the entitlement does not cover that month.
pub fn amount_for(
    entitlement: &Entitlement,
    month: Month,
) -> Result<Option<MonthlyAmount>, Rejection> {
    entitlement
        .terms_for(month)
        .map(|t| amount_for_terms(reference(), t, month))
        .transpose()
}

/// The amount owed for `month` under `terms`: the rule itself.
pub fn amount_for_terms(
    data: &ReferenceData,
    terms: &Terms,
    month: Month,
) -> Result<MonthlyAmount, Rejection> {
    let day = month.first_day();
    let level = data.base_level_on(day)?;
    let category = data.category_on(&terms.category, day)?;
    let (base, provincial_base_applied) = match terms.provincial_base {
        Some(p) if p > level.amount => (p, true),
        _ => (level.amount, false),
    };
    // Half-up at the one place the product becomes money.
    let amount = round_dong(money::mul(base, category.coefficient)?);
    Ok(MonthlyAmount {
        month,
        amount: positive_vnd(amount)?,
        base,
        national_base: level.reference(),
        national_amount: level.amount,
        provincial_base_applied,
        category: category.reference(),
        coefficient: category.coefficient,
    })
}

/// Normalise and check terms as of `from`: the provincial base is money, and
/// the category and a base level must be in force in the first month.
fn checked_terms(terms: Terms, from: Month) -> Result<Terms, Rejection> {
    let terms = Terms {
        provincial_base: terms.provincial_base.map(positive_vnd).transpose()?,
        ..terms
    };
    amount_for_terms(reference(), &terms, from)?;
    Ok(terms)
}

// ---------------------------------------------------------------- decide

pub(crate) fn decide_grant(
    out: &mut Out<'_>,
    programme: ProgrammeId,
    beneficiary: BeneficiaryRef,
    commune: CommuneId,
    from: Month,
    terms: Terms,
    citizen: Option<CitizenIndex>,
) -> Result<(), Rejection> {
    // The member's reference goes into every payments event and to the gateway: a
    // citizen id (12 digits; 9 for the old cards) there would be personal data in clear.
    let member = beneficiary.member.as_str();
    if member.len() >= 9 && member.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::MemberIsAnIdNumber);
    }
    // "One allowance per person" falls back on the reference for a member without a citizen
    // id: "M1" or "m01" beside "m1" would be a second key for the same person, and both
    // would be paid.
    if member_number(&beneficiary.member).is_none() {
        return Err(Rejection::MemberRefNotCanonical {
            member: beneficiary.member,
        });
    }
    // An erased household's members can no longer be identified: a grant would start
    // paying someone nobody can verify (a run pays such a household nothing).
    if out.registry.erased(&beneficiary.household) {
        return Err(Rejection::HouseholdErased {
            household: beneficiary.household,
        });
    }
    // One allowance per person and programme: the law pays the highest coefficient only,
    // so a second category is a Change, not a Grant. The person is the citizen, not the
    // position they were granted under, which shifts when a member before them dies or
    // leaves: the same citizen under their new position is refused, and another citizen
    // now at the old one is granted their own (`Book::same_person`). One whose beneficiary
    // left its household alive pays them no more: the household they joined may grant
    // them (`Entitlement::beneficiary_left`).
    let book = out.book;
    let same_person = book.same_person(&programme, &beneficiary, citizen.as_ref());
    if let Some(existing) = same_person.iter().find(|e| {
        let e = &book.entitlements[e];
        e.stopped.is_none() && !e.beneficiary_left(out.registry)
    }) {
        return Err(Rejection::ActiveEntitlementExists {
            entitlement: *existing,
        });
    }
    // A stopped entitlement still pays through the month of its stop, or a later month
    // it had already paid ahead: the new one starts after, or a run would pay that month
    // a second time. The earliest of those paid latest is named.
    let paid_through = same_person
        .iter()
        .filter_map(|e| Some((*e, *book.stopped_paying_through.get(e)?)))
        .fold(
            None,
            |latest: Option<(EntitlementId, Month)>, (e, month)| match latest {
                Some((_, m)) if m >= month => latest,
                _ => Some((e, month)),
            },
        );
    if let Some((entitlement, last_payable)) =
        paid_through.filter(|(_, last_payable)| from <= *last_payable)
    {
        return Err(Rejection::GrantOverlapsStopped {
            entitlement,
            last_payable,
        });
    }
    let terms = checked_terms(terms, from)?;
    let entitlement = out
        .book
        .last_entitlement_id
        .checked_add(1)
        .ok_or(Rejection::ArithmeticOverflow)?;
    out.push(EventBody::EntitlementGranted {
        entitlement,
        programme,
        beneficiary,
        commune,
        from,
        terms,
        citizen,
    });
    Ok(())
}

pub(crate) fn decide_change(
    out: &mut Out<'_>,
    id: EntitlementId,
    from: Month,
    terms: Terms,
) -> Result<(), Rejection> {
    let e = get_running(out, id)?;
    let previous = e.periods.last().expect("an entitlement has terms").from;
    if from <= previous {
        return Err(Rejection::ChangeNotAfterPrevious { from, previous });
    }
    // Months already instructed keep the amount they were instructed with
    // (a reissue pays the same amount); arrears and clawbacks for retroactive
    // changes are outside this module.
    if let Some(instructed_through) = last_instructed_month(out, id).filter(|m| from <= *m) {
        return Err(Rejection::ChangeBeforeInstructedMonth {
            from,
            instructed_through,
        });
    }
    if e.periods.len() >= TERMS_PERIODS_MAX {
        return Err(Rejection::TooManyChanges {
            max: TERMS_PERIODS_MAX,
        });
    }
    let terms = checked_terms(terms, from)?;
    out.push(EventBody::EntitlementChanged {
        entitlement: id,
        from,
        terms,
    });
    Ok(())
}

pub(crate) fn decide_stop(
    out: &mut Out<'_>,
    id: EntitlementId,
    on: NaiveDate,
    reason: StopReason,
) -> Result<(), Rejection> {
    get_running(out, id)?;
    let effective = out.effective();
    if on > effective {
        return Err(Rejection::StopDateInFuture { on, effective });
    }
    let last_payable = Month::of(on);
    // Instructions already made for later months (a run made ahead of the
    // stop) are cancelled so their holds return to the budget; ones already
    // settled are overpaid and listed for recovery.
    let (pending, overpaid) = instructions::after_month(out.book, id, last_payable);
    out.push(EventBody::EntitlementStopped {
        entitlement: id,
        on,
        reason,
        overpaid,
    });
    for instruction in pending {
        instructions::cancel(out, &instruction)?;
    }
    Ok(())
}

fn get_running<'b>(out: &Out<'b>, id: EntitlementId) -> Result<&'b Entitlement, Rejection> {
    let e = out
        .book
        .entitlements
        .get(&id)
        .ok_or(Rejection::UnknownEntitlement { entitlement: id })?;
    if let Some(s) = &e.stopped {
        return Err(Rejection::EntitlementStopped {
            entitlement: id,
            on: s.on,
        });
    }
    Ok(e)
}

fn last_instructed_month(out: &Out<'_>, id: EntitlementId) -> Option<Month> {
    out.book
        .attempts
        .range((id, Month::MIN)..=(id, Month::MAX))
        .next_back()
        .map(|((_, m), _)| *m)
}
