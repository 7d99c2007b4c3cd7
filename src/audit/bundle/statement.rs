//! What a bundle derives from its events, as pure functions over decoded envelopes:
//! each event's business date, the household balance statement, and the CSV for
//! people. The exporter and the offline verifier call the same functions, so the
//! verifier can demand byte-equal results (docs/BUNDLES.md §5–§6 is the normative
//! text an independent verifier follows).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::book::loan_ref;
use crate::proto::{Envelope, envelope::Payload};

/// The payments account that records money paid out to beneficiaries (debit = paid,
/// credit = returned); see docs/PAYMENTS.md.
pub const PAID_TO_BENEFICIARIES: &str = "PaidToBeneficiaries";
/// UTF-8 byte order mark: spreadsheet programs need it to read the CSV as UTF-8, or
/// Vietnamese diacritics ("Xã Tân Phú") come out garbled.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
/// The CSV header, in column order.
pub const CSV_COLUMNS: [&str; 15] = [
    "partition",
    "sequence",
    "recorded_at_utc",
    "event_date",
    "event_type",
    "household",
    "loan",
    "amount_vnd",
    "principal_vnd",
    "interest_vnd",
    "actor",
    "role",
    "unit",
    "detail",
    "event_hash",
];

/// The business date an event carries (`effective_on`, `registered_on`, ...), or the
/// UTC date it was recorded when it carries none or an unreadable one.
pub fn event_date(envelope: &Envelope) -> NaiveDate {
    let carried = envelope.payload.as_ref().and_then(|p| match p {
        Payload::HouseholdRegistered(e) => Some(e.registered_on.as_str()),
        Payload::HouseholdMembersChanged(e) => Some(e.changed_on.as_str()),
        Payload::HouseholdMovedOut(e) => Some(e.moved_on.as_str()),
        Payload::HouseholdMovedIn(e) => Some(e.moved_on.as_str()),
        Payload::MemberDied(e) => Some(e.died_on.as_str()),
        Payload::PersonalDataErased(e) => Some(e.erased_on.as_str()),
        Payload::EligibilityDecided(e) => Some(e.decided_on.as_str()),
        Payload::LoanApproved(e) => Some(e.effective_on.as_str()),
        Payload::LoanTrancheDisbursed(e) => Some(e.effective_on.as_str()),
        Payload::LoanRepaymentReceived(e) => Some(e.effective_on.as_str()),
        Payload::LoanInterestAccrued(e) => Some(e.effective_on.as_str()),
        Payload::LoanMovedToOverdue(e) => Some(e.effective_on.as_str()),
        Payload::LoanExtended(e) => Some(e.effective_on.as_str()),
        Payload::LoanFrozen(e) => Some(e.effective_on.as_str()),
        Payload::LoanWrittenOff(e) => Some(e.effective_on.as_str()),
        Payload::LoanPostingReversed(e) => Some(e.effective_on.as_str()),
        Payload::LoanApprovalCancelled(e) => Some(e.effective_on.as_str()),
        Payload::LoanUnfrozen(e) => Some(e.effective_on.as_str()),
        Payload::PaymentRecorded(e) => Some(e.effective_on.as_str()),
        Payload::Note(_) | Payload::LedgerKeyRotated(_) | Payload::MessageExcluded(_) => None,
    });
    // Exactly YYYY-MM-DD, as BUNDLES.md says: chrono's own parser also takes "2026-1-5"
    // and "+2026-01-05", which an auditor's tool reading the spec would not.
    carried
        .and_then(|d| crate::input::date(d).ok())
        .unwrap_or_else(|| recorded_at(envelope.recorded_at_unix_ms).date_naive())
}

fn recorded_at(unix_ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(unix_ms).unwrap_or_default()
}

/// The value after `kind:` of the first subject of that kind ("household", "loan").
pub fn subject_of<'e>(envelope: &'e Envelope, kind: &str) -> Option<&'e str> {
    envelope
        .subjects
        .iter()
        .find_map(|s| s.strip_prefix(kind)?.strip_prefix(':'))
}

/// Whether an event concerns the bundle's scope: `household:H`, or for a commune `C`
/// a subject `commune:C` or `household:H` with H in C (payment events name only the
/// household).
pub fn in_scope(envelope: &Envelope, scope: &Scope) -> bool {
    envelope.subjects.iter().any(|s| match scope {
        Scope::Household(h) => s.strip_prefix("household:") == Some(h.as_str()),
        Scope::Commune(c) => {
            s.strip_prefix("commune:") == Some(c.as_str())
                || s.strip_prefix("household:").is_some_and(|h| {
                    h.len() > c.len() && h.starts_with(c.as_str()) && h.as_bytes()[c.len()] == b'-'
                })
        }
    })
}

/// Whom a bundle is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Scope {
    /// A household id, "CCCCCCC-NNNNNN".
    Household(String),
    /// A 7-digit commune code.
    Commune(String),
}

impl Scope {
    /// The partition that holds the scope's events: the province its household id or
    /// commune code begins with. Err names what is malformed.
    pub fn partition(&self) -> Result<crate::chain::Partition, String> {
        use crate::domain::ids::{CommuneCode, HouseholdId};
        let province = match self {
            Scope::Household(h) => HouseholdId::parse(h).map_err(|e| e.to_string())?.province(),
            Scope::Commune(c) => CommuneCode::parse(c).map_err(|e| e.to_string())?.province(),
        };
        crate::chain::Partition::new(province.as_str()).map_err(|e| e.to_string())
    }
}

/// Largest amount counted, in VND (10^18, far above any real amount): sums of up to
/// BUNDLE_EVENTS_MAX such amounts cannot overflow a Decimal, so folding hostile or
/// corrupt values never panics.
pub const AMOUNT_VND_MAX: i64 = 1_000_000_000_000_000_000;

/// An amount as recorded (a decimal string of whole VND); unreadable, or larger than
/// AMOUNT_VND_MAX in magnitude, counts as 0.
pub fn vnd(text: &str) -> Decimal {
    text.parse::<Decimal>()
        .ok()
        .filter(|d| d.abs() <= Decimal::from(AMOUNT_VND_MAX))
        .unwrap_or_default()
}

fn amount(text: &str) -> Decimal {
    vnd(text)
}

/// One loan's balances, whole VND.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoanBalance {
    pub disbursed: Decimal,
    pub principal_repaid: Decimal,
    pub written_off: Decimal,
    /// disbursed − principal_repaid − written_off.
    pub principal_outstanding: Decimal,
    /// Interest and overdue interest received in repayments.
    pub interest_paid: Decimal,
}

/// One household's balances over the bundle's events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HouseholdBalances {
    /// By loan reference ("01-L7").
    pub loans: BTreeMap<String, LoanBalance>,
    /// Loan repayments received from the household, by month ("YYYY-MM") of their
    /// effective date.
    pub repayments_received_by_month: BTreeMap<String, Decimal>,
    /// Social assistance paid to the household (settled less returned), by month.
    pub assistance_paid_by_month: BTreeMap<String, Decimal>,
}

/// What one money event added, so a reversal can take exactly that back.
#[derive(Clone, Debug, Default)]
struct Contribution {
    household: String,
    loan: String,
    month: String,
    disbursed: Decimal,
    principal_repaid: Decimal,
    written_off: Decimal,
    interest_paid: Decimal,
    repayment: Decimal,
}

/// Folds the balances of every household the bundle's money events concern. Pure;
/// `events` are (partition sequence, envelope) in chain order.
pub fn balances(events: &[(u64, Envelope)]) -> BTreeMap<String, HouseholdBalances> {
    let mut out: BTreeMap<String, HouseholdBalances> = BTreeMap::new();
    let mut loan_household: BTreeMap<u64, String> = BTreeMap::new();
    let mut contributions: BTreeMap<u64, Contribution> = BTreeMap::new();
    for (sequence, envelope) in events {
        let Some(payload) = &envelope.payload else {
            continue;
        };
        let household = subject_of(envelope, "household")
            .unwrap_or_default()
            .to_string();
        let month = event_date(envelope).format("%Y-%m").to_string();
        let partition = envelope.partition.as_str();
        let loan = |number: u64, map: &BTreeMap<u64, String>| {
            (
                map.get(&number)
                    .cloned()
                    .unwrap_or_else(|| household.clone()),
                loan_ref(partition, number),
            )
        };
        let contribution = match payload {
            Payload::LoanApproved(e) => {
                loan_household.insert(e.loan_number, e.household_id.clone());
                let (household, loan) = loan(e.loan_number, &loan_household);
                out.entry(household)
                    .or_default()
                    .loans
                    .entry(loan)
                    .or_default();
                None
            }
            Payload::LoanTrancheDisbursed(e) => {
                let (household, loan) = loan(e.loan_number, &loan_household);
                Some(Contribution {
                    household,
                    loan,
                    month,
                    disbursed: amount(&e.amount),
                    ..Contribution::default()
                })
            }
            Payload::LoanRepaymentReceived(e) => {
                let (household, loan) = loan(e.loan_number, &loan_household);
                Some(Contribution {
                    household,
                    loan,
                    month,
                    principal_repaid: amount(&e.to_principal) + amount(&e.to_overdue_principal),
                    interest_paid: amount(&e.to_interest) + amount(&e.to_overdue_interest),
                    repayment: amount(&e.amount),
                    ..Contribution::default()
                })
            }
            Payload::LoanWrittenOff(e) => {
                let (household, loan) = loan(e.loan_number, &loan_household);
                Some(Contribution {
                    household,
                    loan,
                    month,
                    written_off: amount(&e.principal) + amount(&e.overdue_principal),
                    ..Contribution::default()
                })
            }
            Payload::LoanPostingReversed(e) => {
                // A correction takes back exactly what the event it names added.
                if let Some(original) = contributions.remove(&e.original_sequence) {
                    add(&mut out, &original, Decimal::NEGATIVE_ONE);
                }
                None
            }
            Payload::PaymentRecorded(p) => {
                let paid: Decimal = p
                    .postings
                    .iter()
                    .filter(|l| l.account == PAID_TO_BENEFICIARIES)
                    .map(|l| amount(&l.debit) - amount(&l.credit))
                    .sum();
                if !paid.is_zero() && !household.is_empty() {
                    *out.entry(household.clone())
                        .or_default()
                        .assistance_paid_by_month
                        .entry(month)
                        .or_default() += paid;
                }
                None
            }
            _ => None,
        };
        if let Some(c) = contribution {
            add(&mut out, &c, Decimal::ONE);
            contributions.insert(*sequence, c);
        }
    }
    for h in out.values_mut() {
        for l in h.loans.values_mut() {
            l.principal_outstanding = l.disbursed - l.principal_repaid - l.written_off;
            for amount in [
                &mut l.disbursed,
                &mut l.principal_repaid,
                &mut l.written_off,
                &mut l.principal_outstanding,
                &mut l.interest_paid,
            ] {
                *amount = amount.normalize();
            }
        }
        // A month whose repayments were all reversed says nothing: drop zero lines so
        // the statement is the same whether or not a reversal happened in the window.
        h.repayments_received_by_month.retain(|_, v| !v.is_zero());
        h.assistance_paid_by_month.retain(|_, v| !v.is_zero());
        for amount in h
            .repayments_received_by_month
            .values_mut()
            .chain(h.assistance_paid_by_month.values_mut())
        {
            *amount = amount.normalize();
        }
    }
    out
}

fn add(out: &mut BTreeMap<String, HouseholdBalances>, c: &Contribution, sign: Decimal) {
    let h = out.entry(c.household.clone()).or_default();
    let l = h.loans.entry(c.loan.clone()).or_default();
    l.disbursed += sign * c.disbursed;
    l.principal_repaid += sign * c.principal_repaid;
    l.written_off += sign * c.written_off;
    l.interest_paid += sign * c.interest_paid;
    if !c.repayment.is_zero() {
        *h.repayments_received_by_month
            .entry(c.month.clone())
            .or_default() += sign * c.repayment;
    }
}

/// (amount, principal, interest) shown for an event, whole VND as recorded.
fn money_columns(payload: Option<&Payload>) -> (String, String, String) {
    let none = String::new;
    let s = |d: Decimal| d.normalize().to_string();
    match payload {
        Some(Payload::LoanApproved(e)) => (s(amount(&e.amount)), none(), none()),
        Some(Payload::LoanTrancheDisbursed(e)) => {
            (s(amount(&e.amount)), s(amount(&e.amount)), none())
        }
        Some(Payload::LoanRepaymentReceived(e)) => (
            s(amount(&e.amount)),
            s(amount(&e.to_principal) + amount(&e.to_overdue_principal)),
            s(amount(&e.to_interest) + amount(&e.to_overdue_interest)),
        ),
        Some(Payload::LoanWrittenOff(e)) => {
            let principal = amount(&e.principal) + amount(&e.overdue_principal);
            (
                s(principal),
                s(principal),
                s(amount(&e.interest) + amount(&e.overdue_interest)),
            )
        }
        // The overdue rate's excess for days already priced at the normal rate is
        // interest the move charges ("" in events recorded before it existed).
        Some(Payload::LoanMovedToOverdue(e)) if !e.overdue_surcharge_posted.is_empty() => (
            s(amount(&e.amount)),
            s(amount(&e.amount)),
            s(amount(&e.overdue_surcharge_posted)),
        ),
        Some(Payload::LoanMovedToOverdue(e)) => {
            (s(amount(&e.amount)), s(amount(&e.amount)), none())
        }
        Some(Payload::LoanInterestAccrued(e)) => (
            none(),
            none(),
            s(amount(&e.interest_posted) + amount(&e.overdue_interest_posted)),
        ),
        Some(Payload::PaymentRecorded(e)) if !e.amount.is_empty() => {
            (s(amount(&e.amount)), none(), none())
        }
        _ => (none(), none(), none()),
    }
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break. Text
/// that a spreadsheet would run as a formula (starting with = + - @ or a tab) gets a
/// leading apostrophe, since bundles are opened by people in spreadsheets.
fn csv_field(text: &str, out: &mut String) {
    let guarded;
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        guarded = format!("'{text}");
        guarded.as_str()
    } else {
        text
    };
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

/// The CSV of a bundle's events, one row per event in chain order: UTF-8 with a BOM,
/// CRLF line ends (RFC 4180). `events` are (envelope, event hash hex).
pub fn render_csv(events: &[(Envelope, String)]) -> Vec<u8> {
    let mut text = String::new();
    text.push_str(&CSV_COLUMNS.join(","));
    text.push_str("\r\n");
    for (e, hash) in events {
        let actor = e.actor.clone().unwrap_or_default();
        let (amount, principal, interest) = money_columns(e.payload.as_ref());
        let fields = [
            e.partition.clone(),
            e.sequence.to_string(),
            recorded_at(e.recorded_at_unix_ms)
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string(),
            event_date(e).to_string(),
            e.event_type.clone(),
            subject_of(e, "household").unwrap_or_default().to_string(),
            subject_of(e, "loan").unwrap_or_default().to_string(),
            amount,
            principal,
            interest,
            actor.id,
            actor.role,
            actor.unit,
            crate::views::detail(e.payload.as_ref()),
            hash.clone(),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            csv_field(f, &mut text);
        }
        text.push_str("\r\n");
    }
    [UTF8_BOM, text.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::LoanApproved;

    fn approved_on(date: &str) -> Envelope {
        Envelope {
            // 2026-03-04T00:00:00Z
            recorded_at_unix_ms: 1_772_582_400_000,
            payload: Some(Payload::LoanApproved(LoanApproved {
                effective_on: date.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// BUNDLES.md: an event's date is its carried date if that is exactly YYYY-MM-DD,
    /// else the UTC day it was recorded; forms chrono would also read count as neither.
    #[test]
    fn only_an_exact_yyyy_mm_dd_is_an_events_date() {
        let recorded = NaiveDate::from_ymd_opt(2026, 3, 4).unwrap();
        assert_eq!(
            event_date(&approved_on("2026-01-05")),
            NaiveDate::from_ymd_opt(2026, 1, 5).unwrap()
        );
        for loose in ["2026-1-5", "+2026-01-05", " 2026-01-05", "2026-02-30", ""] {
            assert_eq!(event_date(&approved_on(loose)), recorded, "{loose:?}");
        }
    }
}
