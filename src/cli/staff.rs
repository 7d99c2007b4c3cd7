//! Staff commands: households, reviews, loans, portfolios. Parsing and printing only;
//! the work is in `ansinh::service`.

use std::collections::BTreeSet;
use std::process::ExitCode;

use ansinh::access::{self, Caller, Operation, Role};
use ansinh::app::Runtime;
use ansinh::book::loan_ref;
use ansinh::chain::{Digest, Partition};
use ansinh::domain::eligibility::{Area, ClassificationInputs};
use ansinh::domain::ids::{CitizenId, CommuneCode, HouseholdId};
use ansinh::domain::loans::{Channel, EntrustedOrganisation};
use ansinh::domain::money::format_vnd;
use ansinh::input::LoanRef;
use ansinh::log::Receipt;
use ansinh::personal::{Member, PersonalData};
use ansinh::projection::Projector;
use ansinh::proto::envelope::Payload;
use ansinh::service::{LoanAction, Request, ServiceError};
use ansinh::views;
use chrono::NaiveDate;
use clap::{Args, Subcommand, ValueEnum};
use rust_decimal::Decimal;

use super::BoxError;

/// Who is acting (authenticated by the operator's login on this host).
#[derive(Args, Clone, Debug)]
pub struct ActorArgs {
    /// Staff id of the caller, e.g. staff:co-17.
    #[arg(long = "as", env = "ANSINH_ACTOR", global = true, value_parser = ansinh::input::actor)]
    pub actor: Option<String>,
    /// The caller's role (with --as and --unit): teller, credit-officer, branch-manager or auditor.
    #[arg(long, env = "ANSINH_ROLE", global = true, value_enum)]
    pub role: Option<RoleArg>,
    /// Commune (7 digits) or province (2 digits) the caller acts for.
    #[arg(long, env = "ANSINH_UNIT", global = true, default_value = "", value_parser = ansinh::input::unit)]
    pub unit: String,
    /// Makes the command safe to retry: the same key never appends twice. Defaults to
    /// a fresh random key (printed).
    #[arg(long, global = true, value_parser = ansinh::input::idempotency_key)]
    pub idempotency_key: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Teller,
    CreditOfficer,
    BranchManager,
    Auditor,
}

impl RoleArg {
    pub fn role(self) -> Role {
        match self {
            RoleArg::Teller => Role::Teller,
            RoleArg::CreditOfficer => Role::CreditOfficer,
            RoleArg::BranchManager => Role::BranchManager,
            RoleArg::Auditor => Role::Auditor,
        }
    }
}

impl ActorArgs {
    pub fn caller(&self) -> Result<Caller, BoxError> {
        let id = self
            .actor
            .clone()
            .ok_or("who is acting? give --as STAFF_ID --role ROLE --unit UNIT")?;
        let role = self.role.ok_or("give --role")?.role();
        Ok(Caller {
            id,
            role,
            unit: self.unit.clone(),
        })
    }
    pub fn key(&self) -> String {
        self.idempotency_key
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AreaArg {
    Rural,
    Urban,
}
impl From<AreaArg> for Area {
    fn from(a: AreaArg) -> Area {
        match a {
            AreaArg::Rural => Area::Rural,
            AreaArg::Urban => Area::Urban,
        }
    }
}

#[derive(Subcommand)]
pub enum HouseholdCommand {
    /// Register a household; personal data are sealed before they reach the log.
    Register {
        /// The new household's id: its commune's 7-digit code, a dash, 6 digits. Example: 0100007-000001
        #[arg(long, value_parser = ansinh::input::household)]
        id: HouseholdId,
        /// Where it lives, as the poverty standard counts it. Example: rural
        #[arg(long, value_enum)]
        area: AreaArg,
        /// The date of registration (YYYY-MM-DD). Example: 2026-01-05
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
        /// The personal data, as the JSON object the API takes as `personal`
        /// (schemas/http/defs.json), read from FILE or, with -, from stdin: unlike the
        /// options below, never visible to other users of the host. Example: -
        #[arg(long, value_name = "FILE|-", value_parser = personal_file,
            required_unless_present_any = ["head_name", "head_citizen_id"],
            conflicts_with_all = ["head_name", "head_citizen_id", "phone", "account", "members"])]
        personal: Option<PersonalData>,
        /// The head of household's full name, with its Vietnamese marks (sealed). Other
        /// users of the host can read arguments (ps): prefer --personal. Example: "Lê Văn Tám"
        #[arg(long, value_parser = ansinh::input::name, requires = "head_citizen_id")]
        head_name: Option<String>,
        /// The head's 12-digit citizen id (sealed; only a blind index of it is in the log).
        /// Other users of the host can read arguments (ps): prefer --personal. Example: 001085012345
        #[arg(long, value_parser = ansinh::input::citizen_id, requires = "head_name")]
        head_citizen_id: Option<CitizenId>,
        /// A phone number, for payments by mobile money (sealed). Other users of the host
        /// can read arguments (ps): prefer --personal. Example: 0912345678
        #[arg(long, value_parser = ansinh::input::phone)]
        phone: Option<String>,
        /// A bank account number, for payments by bank transfer (sealed). Other users of
        /// the host can read arguments (ps): prefer --personal. Example: 0071000123456
        #[arg(long, value_parser = ansinh::input::account_number)]
        account: Option<String>,
        /// "NAME:CITIZEN_ID:RELATION" (CITIZEN_ID may be empty for a child; without
        /// ":RELATION", "member"), repeatable. Other users of the host can read arguments
        /// (ps): prefer --personal. Example: "Lê Thị Bình:001190000002:vợ"
        #[arg(long = "member", value_name = "NAME:CITIZEN_ID:RELATION", value_parser = member)]
        members: Vec<Member>,
    },
    /// The household's view: class and validity, loans priced on --as-of, history.
    Show {
        /// The household. Example: 0100007-000001
        #[arg(value_parser = ansinh::input::household)]
        id: HouseholdId,
        /// Price the loans (interest, overdue) on this date (YYYY-MM-DD) [default: today]. Example: 2026-12-31
        #[arg(long, value_parser = ansinh::input::date)]
        as_of: Option<NaiveDate>,
        /// Which page of the history to show, from 0 (oldest first).
        #[arg(long, default_value_t = 0)]
        history_page: usize,
        /// Lines a page of history holds [default: 100]. Example: 25
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=ansinh::projection::HISTORY_PAGE_LINES_MAX as i64))]
        history_lines: Option<u16>,
    },
    /// Move to a new id in another commune (another province too).
    Move {
        /// The household's id now. Example: 0100007-000001
        #[arg(long, value_parser = ansinh::input::household)]
        from: HouseholdId,
        /// Its id in the commune it moves to (same rule: commune code, dash, 6 digits). Example: 7900007-000001
        #[arg(long, value_parser = ansinh::input::household)]
        to: HouseholdId,
        /// Where it lives after the move. Example: urban
        #[arg(long, value_enum)]
        area: AreaArg,
        /// The date of the move (YYYY-MM-DD). Example: 2026-06-01
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// Change the members: add and remove people (a birth, a marriage, someone leaving).
    /// The rest of the personal data stays; a citizen id held by another household,
    /// in any province, is refused. At least one member is added or removed.
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
    ChangeMembers {
        /// The household. Example: 0100007-000001
        #[arg(long, value_parser = ansinh::input::household)]
        id: HouseholdId,
        /// The date of the change (YYYY-MM-DD). Example: 2026-03-01
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
        /// Why, as recorded in the event (e.g. "birth", "marriage", "moved away").
        #[arg(long, value_parser = ansinh::input::text)]
        reason: String,
        /// The household's personal data as they now are, all of them (the head, contacts
        /// and every member), as the JSON object the API takes as `personal`
        /// (schemas/http/defs.json), read from FILE or, with -, from stdin, never visible
        /// to other users of the host. Instead of --add-member and --remove-member. Example: -
        #[arg(long, value_name = "FILE|-", value_parser = personal_file, group = "change",
            conflicts_with_all = ["add", "remove"])]
        personal: Option<PersonalData>,
        /// "NAME:CITIZEN_ID:RELATION" (CITIZEN_ID may be empty for a child; without
        /// ":RELATION", "member"), repeatable. Other users of the host can read arguments
        /// (ps): prefer --personal. Example: "Lê Minh::con"
        #[arg(long = "add-member", value_name = "NAME:CITIZEN_ID:RELATION", value_parser = member, group = "change")]
        add: Vec<Member>,
        /// A member who leaves: their citizen id, or their name when they have none (a
        /// name never removes a member who has one, nor two members bearing it),
        /// repeatable. Example: --remove-member 001085012345 --remove-member "Lê Thị Bình"
        #[arg(long = "remove-member", value_name = "CITIZEN_ID_OR_NAME", value_parser = ansinh::input::member_named, group = "change")]
        remove: Vec<ansinh::input::MemberNamed>,
    },
    /// Record a member's death.
    RecordDeath {
        /// The household. Example: 0100007-000001
        #[arg(long, value_parser = ansinh::input::household)]
        id: HouseholdId,
        /// The deceased member's citizen id (12 digits), or `-` to read it from one line
        /// of stdin. Given here, it is visible to every user of the host while the command
        /// runs (ps, /proc) and stays in shell history: prefer `-`.
        /// Example: --citizen-id - (or --citizen-id 001190000001)
        #[arg(long, value_parser = super::admin::citizen_id_arg)]
        citizen_id: super::admin::CitizenIdArg,
        /// The date of death (YYYY-MM-DD). Example: 2026-08-14
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// Destroy the household's data key (right to erasure); the chain still verifies.
    Erase {
        /// The household whose personal data are erased. Example: 0100007-000001
        #[arg(long, value_parser = ansinh::input::household)]
        id: HouseholdId,
        /// The erasure request's reference, recorded in the event. Example: DPR-2026-0042
        #[arg(long, value_parser = ansinh::input::text)]
        reference: String,
        /// The date of the erasure (YYYY-MM-DD). Example: 2026-09-30
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
}

#[derive(Subcommand)]
pub enum ReviewCommand {
    /// Record the yearly review's decision; the ledger applies the standard in force on --on.
    Classify {
        /// The household reviewed, e.g. 0100007-000001.
        #[arg(long, value_parser = ansinh::input::household)]
        household: HouseholdId,
        /// Income per person per month, whole VND, e.g. 1200000.
        #[arg(long, value_parser = ansinh::input::money_or_zero)]
        income: Decimal,
        /// Where the household lives: the income line differs for rural and urban. Example: rural
        #[arg(long, value_enum)]
        area: AreaArg,
        /// The indicators the household is deprived in, comma-separated, each at most once,
        /// e.g. employment,nutrition,drinking_water. The 12 of the national standard:
        /// employment, dependants, nutrition, health_insurance, adult_education,
        /// children_school_attendance, housing_quality, housing_area_per_person,
        /// drinking_water, hygienic_latrine, telecom_use, information_access_means.
        #[arg(long, value_parser = ansinh::input::indicator_list)]
        deprived: Option<BTreeSet<String>>,
        /// The review year, e.g. 2026.
        #[arg(long, value_parser = ansinh::input::review_year)]
        year: i32,
        /// The date of the decision (YYYY-MM-DD); the standard in force on it applies.
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
        /// Correct the household's latest decision, recorded by mistake: its partition
        /// sequence, as its receipt prints it. The correction is for the same review year
        /// and is decided with what the household held before that decision. Example: 42
        #[arg(long, value_parser = ansinh::input::sequence)]
        corrects: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EntrustedArg {
    WomensUnion,
    FarmersUnion,
    VeteransAssociation,
    YouthUnion,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ChannelArg {
    CommunePoint,
    BankTransfer,
}

#[derive(Subcommand)]
pub enum LoanCommand {
    /// Approve a policy-credit loan for a household of the caller's commune; prints its
    /// reference (e.g. 01-L1), which the next commands take.
    Approve {
        /// The borrowing household. Example: 0100007-000001
        #[arg(long, value_parser = ansinh::input::household)]
        household: HouseholdId,
        /// The credit programme: POOR_HOUSEHOLD, NEAR_POOR_HOUSEHOLD or ESCAPED_POVERTY_HOUSEHOLD (data/programmes/programmes.json). Example: POOR_HOUSEHOLD
        #[arg(long, value_parser = ansinh::input::reference_of)]
        programme: String,
        /// The principal, whole VND, within the programme's cap. Example: 50000000
        #[arg(long, value_parser = ansinh::input::money)]
        amount: Decimal,
        /// The term in months, within the programme's maximum. Example: 36
        #[arg(long, value_parser = ansinh::input::term_months)]
        term_months: u32,
        /// The commune savings and loan group the borrower belongs to, as its members
        /// name it. Example: "Tổ TK 01"
        #[arg(long, value_parser = ansinh::input::savings_group)]
        savings_group: String,
        /// The association the bank entrusts the loan to.
        #[arg(long, value_enum)]
        entrusted: EntrustedArg,
        /// The date of approval (YYYY-MM-DD); the programme's terms in force then apply. Example: 2026-02-01
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
        /// What the loan is for, as recorded. Example: "raise two cows"
        #[arg(long, value_parser = ansinh::input::text)]
        reason: String,
    },
    /// Pay out a tranche of an approved loan.
    Disburse {
        /// The loan's reference, as approve printed it. Example: 01-L1
        #[arg(long, value_parser = ansinh::input::loan_ref)]
        loan: LoanRef,
        /// The tranche, whole VND, at most what is left to disburse. Example: 50000000
        #[arg(long, value_parser = ansinh::input::money)]
        amount: Decimal,
        /// How the money is paid out: cash at the commune transaction point, or a bank transfer.
        #[arg(long, value_enum, default_value = "commune-point")]
        channel: ChannelArg,
        /// The date of disbursement (YYYY-MM-DD). Example: 2026-02-15
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// Record a repayment collected at the commune transaction point; prints how it was
    /// split between interest and principal.
    Repay {
        /// The loan's reference. Example: 01-L1
        #[arg(long, value_parser = ansinh::input::loan_ref)]
        loan: LoanRef,
        /// The amount received, whole VND; it pays interest, overdue interest, overdue principal, then principal. Example: 1500000
        #[arg(long, value_parser = ansinh::input::money)]
        amount: Decimal,
        /// The date received (YYYY-MM-DD); interest is counted to it. Example: 2026-05-01
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// Extend a loan's final due date.
    Extend {
        /// The loan's reference. Example: 01-L1
        #[arg(long, value_parser = ansinh::input::loan_ref)]
        loan: LoanRef,
        /// The new final due date (YYYY-MM-DD). Example: 2029-12-31
        #[arg(long, value_parser = ansinh::input::date)]
        new_due: NaiveDate,
        /// The date of the decision (YYYY-MM-DD). Example: 2026-10-01
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
        /// Why, as recorded. Example: "crop failure"
        #[arg(long, value_parser = ansinh::input::text)]
        reason: String,
    },
    /// Freeze a loan after a disaster: no interest accrues while it is frozen.
    Freeze {
        /// The loan's reference. Example: 01-L1
        #[arg(long, value_parser = ansinh::input::loan_ref)]
        loan: LoanRef,
        /// The reference of the decision after a disaster that freezes it. Example: QD-123/UBND
        #[arg(long, value_parser = ansinh::input::text)]
        decision: String,
        /// The date of the decision (YYYY-MM-DD). Example: 2026-09-20
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// End a loan's freeze: interest accrues again from this date, never for the days
    /// frozen.
    Unfreeze {
        /// The loan's reference. Example: 01-L1
        #[arg(long, value_parser = ansinh::input::loan_ref)]
        loan: LoanRef,
        /// A later due date, by at most the days the loan was frozen; every instalment not
        /// yet due when the loan was frozen moves on by as many days, so with the full days
        /// frozen none that fell due while frozen is overdue at once (YYYY-MM-DD). Example: 2027-03-10
        #[arg(long, value_parser = ansinh::input::date)]
        new_due: Option<NaiveDate>,
        /// The date the freeze ends (YYYY-MM-DD). Example: 2027-03-01
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
        /// Why, as recorded. Example: "freeze period of QD-123/UBND over"
        #[arg(long, value_parser = ansinh::input::text)]
        reason: String,
    },
    /// Write a loan off after a disaster, by the competent authority's decision.
    WriteOff {
        /// The loan's reference. Example: 01-L1
        #[arg(long, value_parser = ansinh::input::loan_ref)]
        loan: LoanRef,
        /// The reference of the decision that writes it off. Example: QD-456/TTg
        #[arg(long, value_parser = ansinh::input::text)]
        decision: String,
        /// The date of the decision (YYYY-MM-DD). Example: 2026-11-05
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
    },
    /// Cancel a loan's approval before anything is disbursed (a mistaken approval, or
    /// one the household no longer takes up); the household may then be approved again.
    CancelApproval {
        /// The loan's reference. Example: 01-L1
        #[arg(long, value_parser = ansinh::input::loan_ref)]
        loan: LoanRef,
        /// The date of the cancellation (YYYY-MM-DD). Example: 2026-05-02
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
        /// Why, as recorded. Example: "approved for the wrong household"
        #[arg(long, value_parser = ansinh::input::text)]
        reason: String,
    },
    /// Reverse a mistaken disbursement or repayment by a new event.
    Reverse {
        /// The loan's reference; the event must be this loan's. Example: 01-L1
        #[arg(long, value_parser = ansinh::input::loan_ref)]
        loan: LoanRef,
        /// Partition sequence of the event to reverse, as `audit verify` or a receipt
        /// prints it, e.g. 42.
        #[arg(long, value_parser = ansinh::input::sequence)]
        sequence: u64,
        /// The date of the reversal (YYYY-MM-DD). Example: 2026-05-02
        #[arg(long, value_parser = ansinh::input::date)]
        on: NaiveDate,
        /// Why, as recorded. Example: "entered twice"
        #[arg(long, value_parser = ansinh::input::text)]
        reason: String,
    },
    /// Move unpaid instalments due before --as-of overdue, on every active loan of the
    /// caller's unit (only the overdue part moves). Safe to rerun for the same date.
    MarkOverdue {
        /// Instalments due before this date (YYYY-MM-DD) and unpaid become overdue. Example: 2026-06-30
        #[arg(long, value_parser = ansinh::input::date)]
        as_of: NaiveDate,
        /// The province whose loans are run (2 digits). Example: 01
        #[arg(long, value_parser = ansinh::input::partition)]
        partition: Partition,
    },
}

fn print_receipt(receipt: &Receipt, key: &str, json: bool) {
    print_receipt_decided(receipt, key, None, json);
}

/// A receipt's `--json` fields, but the key.
pub(super) fn receipt_json(receipt: &Receipt) -> serde_json::Value {
    serde_json::json!({
        "partition": receipt.partition,
        "sequence": receipt.sequence,
        "hash": receipt.hash.to_hex(),
        "stream_sequence": receipt.stream_sequence,
        "index": receipt.index,
        "duplicate": receipt.duplicate,
    })
}

fn print_receipt_decided(receipt: &Receipt, key: &str, decided: Option<&Decided>, json: bool) {
    if json {
        let mut out = receipt_json(receipt);
        out["idempotency_key"] = key.into();
        if let Some(d) = decided {
            out["decided"] = d.fields.clone();
        }
        println!("{out}");
    } else {
        if let Some(d) = decided {
            println!("{}", d.sentence);
        }
        println!(
            "{} partition {} sequence {} hash {} (idempotency key {key})",
            if receipt.duplicate {
                "already recorded:"
            } else {
                "recorded:"
            },
            receipt.partition,
            receipt.sequence,
            receipt.hash
        );
    }
}

/// What the ledger decided, for the clerk who asked: the class and the standard of a
/// review, the reference of a new loan (every next command needs it), the split of a
/// repayment. `fields` is the same for `--json`, amounts as decimal strings.
struct Decided {
    sentence: String,
    fields: serde_json::Value,
}

fn vnd(amount: &str) -> String {
    amount
        .parse::<Decimal>()
        .map(format_vnd)
        .unwrap_or_else(|_| amount.to_owned())
}

fn decided(partition: &str, payload: Option<&Payload>) -> Option<Decided> {
    Some(match payload? {
        Payload::EligibilityDecided(d) => Decided {
            sentence: format!(
                "Household {} is {} ({}) under standard {} for the {} review, valid {} to {}.",
                d.household_id,
                d.class,
                d.status,
                d.standard_id,
                d.review_year,
                d.valid_from,
                d.valid_to
            ),
            fields: serde_json::json!({
                "class": d.class, "status": d.status, "standard_id": d.standard_id,
                "standard_hash": d.standard_hash, "valid_from": d.valid_from,
                "valid_to": d.valid_to,
            }),
        },
        Payload::LoanApproved(l) => {
            let loan = loan_ref(partition, l.loan_number);
            Decided {
                sentence: format!(
                    "Loan {loan} approved: {} {} for {} months. Use --loan {loan} for its next steps.",
                    l.programme_id,
                    vnd(&l.amount),
                    l.term_months
                ),
                fields: serde_json::json!({"loan": loan, "programme": l.programme_id, "amount": l.amount}),
            }
        }
        Payload::LoanTrancheDisbursed(l) => {
            let loan = loan_ref(partition, l.loan_number);
            Decided {
                sentence: format!("Loan {loan}: {} disbursed, due {}.", vnd(&l.amount), l.due),
                fields: serde_json::json!({"loan": loan, "amount": l.amount, "due": l.due}),
            }
        }
        Payload::LoanRepaymentReceived(l) => {
            let loan = loan_ref(partition, l.loan_number);
            Decided {
                sentence: format!(
                    "Loan {loan}: {} received: {} interest, {} overdue interest, {} overdue principal, {} principal; the loan is {}.",
                    vnd(&l.amount),
                    vnd(&l.to_interest),
                    vnd(&l.to_overdue_interest),
                    vnd(&l.to_overdue_principal),
                    vnd(&l.to_principal),
                    l.status_after
                ),
                fields: serde_json::json!({
                    "loan": loan, "amount": l.amount, "to_interest": l.to_interest,
                    "to_overdue_interest": l.to_overdue_interest,
                    "to_overdue_principal": l.to_overdue_principal,
                    "to_principal": l.to_principal, "status_after": l.status_after,
                }),
            }
        }
        Payload::PaymentRecorded(p) => {
            let body = ansinh::book::payments_codec::body_from_proto(&p.body).ok()?;
            let (sentence, fields) = super::payments::decided(&body)?;
            Decided { sentence, fields }
        }
        other => Decided {
            sentence: views::detail(Some(other)),
            fields: serde_json::Value::Null,
        },
    })
}

/// Prints the receipt, or a refusal and returns the exit code for it (1), or passes
/// other errors on with `key` (`Unsettled`): the event may be recorded, and a retry
/// under another key could record it twice.
pub fn outcome(
    result: Result<Receipt, ServiceError>,
    key: &str,
    json: bool,
) -> Result<ExitCode, BoxError> {
    match result {
        Ok(receipt) => {
            print_receipt(&receipt, key, json);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => refusal(e, json).map_err(|e| unsettled(key, e)),
    }
}

/// `e` as a failure the key can settle. (A reused key is a refusal, `refusal`: nothing
/// was appended, and a retry under the same key would be refused again.)
fn unsettled(key: &str, e: ServiceError) -> BoxError {
    Box::new(super::Unsettled {
        idempotency_key: key.to_owned(),
        source: e.into(),
    })
}

/// Prints a refusal and returns the exit code for it (1), or hands other errors back.
pub fn refusal(e: ServiceError, json: bool) -> Result<ExitCode, ServiceError> {
    refusal_with(e, json, serde_json::Map::new())
}

/// As `refusal`, with `more` in the `--json` object: what a command of several steps did
/// before the refused one (a payment run's communes paid), so the one document says it.
pub fn refusal_with(
    e: ServiceError,
    json: bool,
    more: serde_json::Map<String, serde_json::Value>,
) -> Result<ExitCode, ServiceError> {
    let with_more = |mut object: serde_json::Value| {
        object
            .as_object_mut()
            .expect("an object")
            .extend(more.clone());
        object
    };
    match e {
        // The ledger already holds what the command would record (a rerun of a run, an
        // overdue move of a loan with nothing due): done, not refused.
        ServiceError::Rejected(ansinh::domain::Rejection::NothingToRecord) => {
            if json {
                println!(
                    "{}",
                    with_more(serde_json::json!({"outcome": "nothing_left"}))
                );
            } else {
                println!("nothing left to do: the ledger already holds what this command records");
            }
            Ok(ExitCode::SUCCESS)
        }
        e @ (ServiceError::Rejected(_)
        | ServiceError::Denied(_)
        | ServiceError::KeyReused { .. }) => {
            // The refusal itself, once: `ServiceError` prefixes "refused: " for logs.
            let (kind, sentence) = match &e {
                ServiceError::Rejected(r) => (r.kind(), r.to_string()),
                // Named as the API names it (`422 IdempotencyKeyReused`).
                ServiceError::KeyReused { .. } => {
                    ("IdempotencyKeyReused".to_owned(), e.to_string())
                }
                other => ("Denied".to_owned(), other.to_string()),
            };
            if json {
                println!(
                    "{}",
                    with_more(serde_json::json!({"refused": sentence, "kind": kind}))
                );
            } else {
                println!("REFUSED: {sentence}");
            }
            Ok(ExitCode::from(1))
        }
        e => Err(e),
    }
}

/// Like `outcome`, and first says what the ledger decided (`Decided`).
pub async fn outcome_decided(
    runtime: &Runtime,
    result: Result<Receipt, ServiceError>,
    key: &str,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let Ok(receipt) = &result else {
        return outcome(result, key, json);
    };
    // Recorded, but not yet shown: a retry under the key prints the receipt.
    let event = runtime
        .ledger
        .event_of(receipt)
        .await
        .map_err(|e| super::Unsettled {
            idempotency_key: key.to_owned(),
            source: e.into(),
        })?;
    let decided = decided(&receipt.partition, event.payload.as_ref());
    print_receipt_decided(receipt, key, decided.as_ref(), json);
    Ok(ExitCode::SUCCESS)
}

pub async fn household_command(
    runtime: &Runtime,
    who: &ActorArgs,
    command: HouseholdCommand,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let service = runtime.service();
    let key = who.key();
    match command {
        HouseholdCommand::Show {
            id,
            as_of,
            history_page,
            history_lines,
        } => {
            let caller = who.caller()?;
            let h = id.clone();
            // Refused as every refusal is: exit 1, `{"refused", "kind"}` with --json.
            if let Err(denied) = access::authorize(&caller, Operation::Read, h.commune().as_str()) {
                return Ok(refusal(denied.into(), json)?);
            }
            let lines =
                history_lines.map_or(ansinh::projection::HISTORY_PAGE_LINES_DEFAULT, usize::from);
            show_household(runtime, &h, as_of, (history_page, lines), json).await
        }
        HouseholdCommand::Register {
            id,
            area,
            on,
            personal,
            head_name,
            head_citizen_id,
            phone,
            account,
            members,
        } => {
            let caller = who.caller()?;
            // clap requires either --personal or both --head-name and --head-citizen-id.
            let data = match (personal, head_name, head_citizen_id) {
                (Some(data), ..) => data,
                (None, Some(head_name), Some(head_citizen_id)) => PersonalData {
                    head_name,
                    head_citizen_id: head_citizen_id.to_string(),
                    phone,
                    account_number: account,
                    members,
                },
                _ => unreachable!("clap requires --personal or the head's name and id"),
            };
            let asked = fingerprint(
                &caller,
                "household register",
                serde_json::json!({"household": id, "area": Area::from(area), "on": on, "personal": data}),
            );
            let req = request(&caller, &key, &asked);
            outcome(
                service.register(&req, &id, area.into(), on, &data).await,
                &key,
                json,
            )
        }
        HouseholdCommand::Move { from, to, area, on } => {
            let caller = who.caller()?;
            let asked = fingerprint(
                &caller,
                "household move",
                serde_json::json!({"from": from, "to": to, "area": Area::from(area), "on": on}),
            );
            let req = request(&caller, &key, &asked);
            match service
                .move_household(&req, &from, &to, area.into(), on)
                .await
            {
                // One answer, as the API's (move.response), with the caller's key: the
                // halves' own keys are derived from it, and a retry under one of them
                // would be another move.
                Ok((out, arrived)) => {
                    let duplicate = out.duplicate && arrived.duplicate;
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "moved_out": receipt_json(&out), "moved_in": receipt_json(&arrived),
                                "duplicate": duplicate, "idempotency_key": key,
                            })
                        );
                    } else {
                        for (half, receipt) in [("moved out", &out), ("moved in", &arrived)] {
                            println!(
                                "{half}: partition {} sequence {} hash {}",
                                receipt.partition, receipt.sequence, receipt.hash
                            );
                        }
                        println!(
                            "{} (idempotency key {key})",
                            if duplicate {
                                "already recorded"
                            } else {
                                "recorded"
                            }
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => outcome(Err(e), &key, json),
            }
        }
        HouseholdCommand::ChangeMembers {
            id,
            on,
            reason,
            personal,
            add,
            remove,
        } => {
            let caller = who.caller()?;
            let h = id.clone();
            // Checked before the household's data are opened: nobody outside its unit
            // learns from this command who its members are.
            if let Err(denied) =
                access::authorize(&caller, Operation::ChangeHousehold, h.commune().as_str())
            {
                return Ok(refusal(denied.into(), json)?);
            }
            let asked = fingerprint(
                &caller,
                "household change-members",
                serde_json::json!({"household": h, "on": on, "reason": reason, "personal": personal, "add": add, "remove": remove}),
            );
            let req = request(&caller, &key, &asked);
            // A retry is answered before the list is rebuilt from the current data: after
            // the change that data lacks the members removed, and after an erasure it
            // cannot be opened.
            match service.member_change_recorded(&req, &h).await {
                Ok(Some(receipt)) => return outcome(Ok(receipt), &key, json),
                Ok(None) => {}
                Err(e) => return outcome(Err(e), &key, json),
            }
            // The whole list given: recorded as given, as the API records it.
            let mut data = match personal {
                Some(data) => data,
                None => match service.personal(&h).await {
                    Ok(data) => data,
                    Err(e) => return outcome(Err(e), &key, json),
                },
            };
            data = match ansinh::service::without_members(&data, &h, &remove) {
                Ok(data) => data,
                Err(refused) => return outcome(Err(refused.into()), &key, json),
            };
            data.members.extend(add);
            outcome(
                service.change_members(&req, &h, on, &reason, &data).await,
                &key,
                json,
            )
        }
        HouseholdCommand::RecordDeath { id, citizen_id, on } => {
            let citizen_id = citizen_id.resolve()?;
            let caller = who.caller()?;
            let h = id.clone();
            let asked = fingerprint(
                &caller,
                "household record-death",
                serde_json::json!({"household": h, "citizen_id": citizen_id, "on": on}),
            );
            let req = request(&caller, &key, &asked);
            outcome(
                service
                    .record_death(&req, &h, citizen_id.as_str(), on)
                    .await,
                &key,
                json,
            )
        }
        HouseholdCommand::Erase { id, reference, on } => {
            let caller = who.caller()?;
            let asked = fingerprint(
                &caller,
                "household erase",
                serde_json::json!({"household": id, "reference": reference, "on": on}),
            );
            let req = request(&caller, &key, &asked);
            let now = chrono::Utc::now().timestamp_millis();
            outcome(
                service
                    .erase_personal_data(&req, &id, on, &reference, now)
                    .await,
                &key,
                json,
            )
        }
    }
}

/// A member from "NAME:CITIZEN_ID:RELATION" (an empty CITIZEN_ID for a child without a
/// card; without ":RELATION", the relation is "member"), each part read by its kind's
/// parser, as the API's schema and the console read them: a refusal names the part's
/// kind (name, citizen id, relation).
fn member(spec: &str) -> Result<Member, ansinh::input::InputError> {
    let mut parts = spec.splitn(3, ':');
    let name = ansinh::input::name(parts.next().unwrap_or_default())?;
    let citizen_id = match parts.next().filter(|s| !s.is_empty()) {
        Some(id) => Some(ansinh::input::citizen_id(id)?.to_string()),
        None => None,
    };
    let relation = ansinh::input::relation(parts.next().unwrap_or("member"))?;
    Ok(Member {
        name,
        citizen_id,
        relation,
    })
}

/// `--personal FILE|-`: the document read from FILE, or from stdin for `-`, at most
/// `input::PERSONAL_BYTES_MAX` bytes, then by `input::personal`.
fn personal_file(path: &str) -> Result<PersonalData, BoxError> {
    use std::io::Read as _;
    let limit = ansinh::input::PERSONAL_BYTES_MAX as u64 + 1;
    let mut bytes = Vec::new();
    let read = if path == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.map_err(|e| format!("reading {path}: {e}"))?;
    Ok(ansinh::input::personal(&bytes)?)
}

/// The runtime's projector, caught up with the log.
async fn caught_up(runtime: &Runtime) -> Result<std::sync::Arc<Projector>, BoxError> {
    let mut stream = runtime.ledger.stream().clone();
    runtime
        .projector
        .catch_up(&mut stream, runtime.ledger.config())
        .await?;
    Ok(runtime.projector.clone())
}

fn request<'a>(caller: &'a Caller, key: &'a str, fingerprint: &'a Digest) -> Request<'a> {
    Request {
        caller,
        idempotency_key: key,
        correlation_id: "cli",
        fingerprint: Some(fingerprint),
    }
}

/// Domain separation of the CLI's request fingerprints. A command line and an HTTP
/// request are never one request: their keys never meet either (the API scopes a key by
/// its caller, `http:<staff>:<key>`).
const FINGERPRINT_CONTEXT: &str = "ansinh v1 cli request fingerprint";

/// What a command line asks, hashed as the API hashes a request (its route, then its body
/// in canonical JSON, whose objects keep their keys sorted): the subcommand, the staff id
/// acting (an API key is its caller's own), and the arguments as parsed. The same command
/// again, with its options in another order, `--amount=1` for `--amount 1` or a name in
/// decomposed marks, is the same request, answered with its first receipt; the key given
/// to any other request is refused (`KeyReused`), since the events record this.
pub fn fingerprint(caller: &Caller, command: &str, arguments: serde_json::Value) -> Digest {
    let body = serde_json::to_vec(&arguments).expect("a Value serializes");
    let mut hasher = blake3::Hasher::new_derive_key(FINGERPRINT_CONTEXT);
    for part in [command.as_bytes(), caller.id.as_bytes(), &body] {
        hasher.update(&(part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    Digest(*hasher.finalize().as_bytes())
}

pub async fn review_command(
    runtime: &Runtime,
    who: &ActorArgs,
    command: ReviewCommand,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let ReviewCommand::Classify {
        household: h,
        income,
        area,
        deprived,
        year,
        on,
        corrects,
    } = command;
    let caller = who.caller()?;
    let key = who.key();
    let inputs = ClassificationInputs {
        income_per_person_month: income,
        area: area.into(),
        // None given: deprived in none. A repeated one is refused by its parser (a set
        // would fold it silently: the clerk may have meant another indicator).
        deprived: deprived.unwrap_or_default(),
        review_year: year,
    };
    let asked = fingerprint(
        &caller,
        "review classify",
        serde_json::json!({"household": h, "inputs": inputs, "on": on, "corrects": corrects}),
    );
    let req = request(&caller, &key, &asked);
    outcome_decided(
        runtime,
        runtime
            .service()
            .classify(&req, &h, inputs, on, corrects)
            .await,
        &key,
        json,
    )
    .await
}

pub async fn loan_command(
    runtime: &Runtime,
    who: &ActorArgs,
    command: LoanCommand,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let caller = who.caller()?;
    let key = who.key();
    let service = runtime.service();
    let (loan, action, on, reason): (Option<LoanRef>, LoanAction, NaiveDate, String) = match command
    {
        LoanCommand::Approve {
            household: h,
            programme,
            amount,
            term_months,
            savings_group,
            entrusted,
            on,
            reason,
        } => (
            None,
            LoanAction::Approve {
                household: h.clone(),
                programme,
                amount,
                term_months,
                savings_group,
                entrusted: match entrusted {
                    EntrustedArg::WomensUnion => EntrustedOrganisation::WomensUnion,
                    EntrustedArg::FarmersUnion => EntrustedOrganisation::FarmersUnion,
                    EntrustedArg::VeteransAssociation => EntrustedOrganisation::VeteransAssociation,
                    EntrustedArg::YouthUnion => EntrustedOrganisation::YouthUnion,
                },
            },
            on,
            reason,
        ),
        LoanCommand::Disburse {
            loan,
            amount,
            channel,
            on,
        } => (
            Some(loan),
            LoanAction::Disburse {
                amount,
                channel: match channel {
                    ChannelArg::CommunePoint => Channel::CommuneTransactionPoint,
                    ChannelArg::BankTransfer => Channel::BankTransfer,
                },
            },
            on,
            "disbursement".into(),
        ),
        LoanCommand::Repay { loan, amount, on } => (
            Some(loan),
            LoanAction::Repay { amount },
            on,
            "repayment at the commune transaction point".into(),
        ),
        LoanCommand::Extend {
            loan,
            new_due,
            on,
            reason,
        } => (Some(loan), LoanAction::Extend { new_due }, on, reason),
        LoanCommand::Freeze { loan, decision, on } => (
            Some(loan),
            LoanAction::Freeze {
                disaster_ref: decision,
            },
            on,
            "frozen by disaster decision".into(),
        ),
        LoanCommand::WriteOff { loan, decision, on } => (
            Some(loan),
            LoanAction::WriteOff {
                disaster_ref: decision,
            },
            on,
            "risk debt written off by decision".into(),
        ),
        LoanCommand::Unfreeze {
            loan,
            new_due,
            on,
            reason,
        } => (Some(loan), LoanAction::Unfreeze { new_due }, on, reason),
        LoanCommand::CancelApproval { loan, on, reason } => {
            (Some(loan), LoanAction::CancelApproval, on, reason)
        }
        LoanCommand::Reverse {
            loan,
            sequence,
            on,
            reason,
        } => (Some(loan), LoanAction::Reverse { sequence }, on, reason),
        LoanCommand::MarkOverdue { as_of, partition } => {
            return mark_overdue(runtime, &caller, partition.as_str(), as_of, json).await;
        }
    };
    let asked = fingerprint(
        &caller,
        "loans",
        serde_json::json!({"loan": loan.as_ref().map(ToString::to_string), "action": action, "on": on, "reason": reason}),
    );
    let req = request(&caller, &key, &asked);
    outcome_decided(
        runtime,
        service.loan(&req, loan.as_ref(), action, on, &reason).await,
        &key,
        json,
    )
    .await
}

async fn mark_overdue(
    runtime: &Runtime,
    caller: &Caller,
    partition: &str,
    as_of: NaiveDate,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let service = runtime.service();
    // Refused before any loan is read, as the API's per-loan route refuses each: a role
    // that may not run it, a province the unit has no loan of (the head office's unit
    // included: it moves no loan), a date after today (every loan would be refused).
    let checked = access::authorize_role(caller, Operation::MarkOverdue)
        .and_then(|()| {
            if caller.unit.is_empty() || !access::overlaps(&caller.unit, partition) {
                return Err(access::AccessError::OutsideUnit {
                    caller: caller.id.clone(),
                    unit: caller.unit.clone(),
                    commune: partition.to_owned(),
                });
            }
            Ok(())
        })
        .map_err(ServiceError::from)
        .and_then(|()| service.not_in_future(as_of).map_err(ServiceError::Rejected));
    if let Err(e) = checked {
        return Ok(refusal(e, json)?);
    }
    let projector = caught_up(runtime).await?;
    let (mut moved, mut unchanged, mut refused, mut appended) = (0u64, 0u64, 0u64, 0u64);
    // How many loans each kind of refusal stopped: a run that moved some and not others
    // says why, and exits 1.
    let mut refusals: std::collections::BTreeMap<String, u64> = Default::default();
    let mut amount = Decimal::ZERO;
    // One loan at a time: a province has hundreds of thousands.
    for loan in projector.loans_iter(partition) {
        let loan = loan?;
        if !views::is_active(&loan)
            || !access::within(&caller.unit, loan.household.commune().as_str())
        {
            continue;
        }
        let reference = ansinh::input::loan_ref(&ansinh::book::loan_ref(partition, loan.id))?;
        // One key per loan and date: rerunning the job for the same date adds nothing.
        // A job that ran late takes one step an instalment (`Service::mark_overdue`).
        let key = format!("overdue:{as_of}:{reference}");
        let asked = fingerprint(
            caller,
            "loans mark-overdue",
            serde_json::json!({"loan": reference.to_string(), "as_of": as_of}),
        );
        let req = request(caller, &key, &asked);
        match service
            .mark_overdue(&req, &reference, as_of, "overdue run")
            .await
        {
            Ok(steps) => {
                appended += steps.iter().filter(|(r, _)| !r.duplicate).count() as u64;
                let moved_now: Decimal = steps.iter().filter_map(|(_, m)| *m).sum();
                if moved_now.is_zero() {
                    unchanged += 1;
                } else {
                    moved += 1;
                    amount += moved_now;
                }
            }
            Err(ServiceError::Rejected(ansinh::domain::Rejection::NothingToRecord)) => {
                unchanged += 1
            }
            Err(ServiceError::Rejected(r)) => {
                refused += 1;
                *refusals.entry(r.kind()).or_default() += 1;
            }
            Err(e @ (ServiceError::Denied(_) | ServiceError::KeyReused { .. })) => {
                refused += 1;
                let kind = match e {
                    ServiceError::Denied(_) => "Denied",
                    _ => "IdempotencyKeyReused",
                };
                *refusals.entry(kind.to_owned()).or_default() += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"as_of": as_of.to_string(), "loans_moved": moved, "amount_moved": amount.to_string(), "unchanged": unchanged, "refused": refused, "refusals": refusals, "events_appended": appended})
        );
    } else {
        println!(
            "overdue run as of {as_of}: {moved} loans moved {} overdue; {unchanged} unchanged; {refused} refused; {appended} events appended",
            format_vnd(amount)
        );
        for (kind, loans) in &refusals {
            println!("  REFUSED {kind}: {loans} loans");
        }
    }
    Ok(super::exit_code(refused == 0))
}

async fn show_household(
    runtime: &Runtime,
    h: &HouseholdId,
    as_of: Option<NaiveDate>,
    (history_page, history_lines): (usize, usize),
    json: bool,
) -> Result<ExitCode, BoxError> {
    let projector = caught_up(runtime).await?;
    let Some(records) =
        projector.household_records(h.as_str(), Some((history_page, history_lines)))?
    else {
        return Ok(super::not_found(json, "household", h.as_str()));
    };
    let view = records.view;
    let as_of = as_of.unwrap_or_else(ansinh::clock::today);
    let lines: Vec<_> = records
        .loans
        .iter()
        .map(|(p, loan)| views::loan_line(p, loan, as_of))
        .collect();
    let page = records.history.expect("asked for");
    let assistance = ansinh::payments_report::received_lines(records.received);
    if json {
        println!(
            "{}",
            serde_json::json!({"household": view, "as_of": as_of.to_string(), "loans": lines, "assistance": assistance,
                "history": page.lines, "history_page": history_page, "history_more": page.more})
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Household {}  (partition {}, commune {}, {})",
        view.household_id, view.partition, view.commune, view.area
    );
    println!(
        "  members {}  residence {}{}  since {}{}",
        view.members,
        view.residence,
        view.moved_to
            .as_ref()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default(),
        view.since,
        if view.personal_data_erased {
            "  [personal data erased]"
        } else {
            ""
        }
    );
    match &view.standing {
        Some(s) => println!(
            "  status {} (class {}), valid {} to {}{}, standard {}, review {}",
            s.status,
            s.class,
            s.valid_from,
            s.valid_to,
            if s.escaped_until.is_empty() {
                String::new()
            } else {
                format!(", escaped-poverty window to {}", s.escaped_until)
            },
            s.standard_id,
            s.review_year
        ),
        None => println!("  no eligibility decision yet"),
    }
    if !lines.is_empty() {
        println!("\n  Loans priced on {as_of}:");
        println!(
            "  {:<10} {:<24} {:<11} {:>16} {:>16} {:>16} {:>14} {:>14} {:<10}",
            "LOAN",
            "PROGRAMME",
            "STATUS",
            "APPROVED",
            "OUTSTANDING",
            "OVERDUE",
            "INTEREST",
            "OVD.INT",
            "DUE"
        );
        for l in &lines {
            println!(
                "  {:<10} {:<24} {:<11} {:>16} {:>16} {:>16} {:>14} {:>14} {:<10}",
                l.loan,
                l.programme,
                l.status,
                super::vnd_text(&l.approved.to_string()),
                super::vnd_text(&l.principal_outstanding.to_string()),
                super::vnd_text(&l.overdue_principal.to_string()),
                super::vnd_text(&l.interest_to_date.to_string()),
                super::vnd_text(&l.overdue_interest_to_date.to_string()),
                l.due.map(|d| d.to_string()).unwrap_or_default()
            );
        }
    }
    if !assistance.is_empty() {
        println!("\n  Social assistance received:");
        println!(
            "  {:<8} {:<13} {:>8} {:>14} {:>9} {:>14} {:>14}",
            "MONTH", "CHANNEL", "SETTLED", "AMOUNT", "RETURNED", "AMOUNT", "NET"
        );
        for a in &assistance {
            println!(
                "  {:<8} {:<13} {:>8} {:>14} {:>9} {:>14} {:>14}",
                a.month,
                a.channel,
                a.settled_count,
                super::vnd_text(&a.settled),
                a.returned_count,
                super::vnd_text(&a.returned),
                super::vnd_text(&a.net)
            );
        }
    }
    println!("\n  History (page {history_page}):");
    for e in &page.lines {
        println!(
            "  {:>3}#{:<7} {} {:<28} {:<16} {}",
            e.partition,
            e.sequence,
            &e.hash[..12],
            e.actor,
            e.event_type.trim_start_matches("ansinh.v1."),
            e.detail
        );
    }
    if page.more {
        println!(
            "  more follow: --history-page {}",
            history_page.saturating_add(1)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn portfolio(
    runtime: &Runtime,
    commune: Option<String>,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let projector = caught_up(runtime).await?;
    let folios: Vec<_> = match &commune {
        Some(code) => {
            let code = CommuneCode::parse(code)?;
            match projector.commune(code.as_str())? {
                Some(folio) => vec![folio],
                None => return Ok(super::not_found(json, "commune", code.as_str())),
            }
        }
        None => projector.communes()?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&folios)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8} {:>10} {:>10} {:>16} {:>14} {:>8} {:>14}  BY PROGRAMME (open loans)",
        "COMMUNE", "HOUSEHOLDS", "OPEN LOANS", "OUTSTANDING", "OVERDUE", "RATIO", "WRITTEN OFF"
    );
    for c in &folios {
        let by: Vec<String> = c
            .by_programme
            .iter()
            .map(|(p, l)| format!("{p}={}", l.open_loans))
            .collect();
        println!(
            "{:<8} {:>10} {:>10} {:>16} {:>14} {:>7.2}% {:>14}  {}",
            c.commune,
            c.households_active,
            c.open_loans,
            format_vnd(c.outstanding),
            format_vnd(c.overdue),
            c.overdue_ratio() * Decimal::ONE_HUNDRED,
            format_vnd(c.written_off),
            by.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn trial_balance(
    runtime: &Runtime,
    partitions: Option<&[String]>,
    json: bool,
) -> Result<ExitCode, BoxError> {
    let projector = caught_up(runtime).await?;
    let mut ok = true;
    let mut all = Vec::new();
    let known = projector.summaries()?;
    // None: every partition the projections hold, whatever provinces this deployment has.
    let every: Vec<String> = known.keys().cloned().collect();
    let partitions = partitions.unwrap_or(&every);
    if partitions.is_empty() && !json {
        println!("Trial balance: the log has no partition yet");
    }
    for p in partitions {
        if !known.contains_key(p) {
            return Ok(super::not_found(json, "partition", p));
        }
        let Some(tb) = projector.trial_balance(p)? else {
            // Events, but none that moves money: balanced, with nothing to list.
            if !json {
                println!("Trial balance, partition {p}: no money events yet");
            }
            continue;
        };
        ok &= tb.first_unbalanced_sequence.is_none() && tb.total_debits == tb.total_credits;
        all.push(tb);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for tb in &all {
            println!(
                "Trial balance, partition {} ({} money events checked):",
                tb.partition, tb.events_checked
            );
            for name in views::chart() {
                let (d, c) = tb.accounts.get(&name).copied().unwrap_or_default();
                println!("  {name:<28} {:>24} {:>24}", format_vnd(d), format_vnd(c));
            }
            println!(
                "  {:<28} {:>24} {:>24}  {}",
                "TOTAL",
                format_vnd(tb.total_debits),
                format_vnd(tb.total_credits),
                match tb.first_unbalanced_sequence {
                    None if tb.total_debits == tb.total_credits =>
                        "balanced at every event".to_string(),
                    None => "UNBALANCED".to_string(),
                    Some(s) => format!("UNBALANCED first at sequence {s}"),
                }
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command whose work the ledger already holds is done, not refused: exit 0,
    /// whatever command it was; a refusal proper still exits 1.
    #[test]
    fn nothing_left_to_record_is_a_success_and_a_refusal_is_not() {
        let nothing = || {
            Err(ServiceError::Rejected(
                ansinh::domain::Rejection::NothingToRecord,
            ))
        };
        for json in [false, true] {
            assert_eq!(outcome(nothing(), "k", json).unwrap(), ExitCode::SUCCESS);
            let refused = Err(ServiceError::Rejected(
                ansinh::domain::Rejection::ZeroAmount,
            ));
            assert_eq!(outcome(refused, "k", json).unwrap(), ExitCode::from(1));
        }
    }

    /// An append that failed without a refusal may be in the log: the error names the
    /// key the command used (here, as if made up for it), in words and in the JSON
    /// object, so the clerk's retry cannot record it twice. A reused key is a refusal
    /// (exit 1, appended nothing): no retry under it is offered.
    #[test]
    fn a_failure_that_may_be_recorded_names_the_key_to_retry_with() {
        use ansinh::log::AppendError;
        for json in [false, true] {
            let cut = Err(ServiceError::Append(AppendError::Nats("cut".into())));
            let e = outcome(cut, "K-123", json).unwrap_err();
            assert!(e.to_string().contains("cut"), "{e}");
            assert!(e.to_string().contains("--idempotency-key K-123"), "{e}");
            let object = crate::cli::failed_json(e.as_ref());
            assert_eq!(object["error"], "Failed");
            assert_eq!(object["idempotency_key"], "K-123", "{object}");
        }
        for json in [false, true] {
            let reused = Err(ServiceError::KeyReused { key: "K-9".into() });
            assert_eq!(outcome(reused, "K-9", json).unwrap(), ExitCode::from(1));
        }
    }
}
