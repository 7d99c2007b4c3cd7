//! One parser per kind of value a person or a program hands the ledger, used at every
//! entrance: CLI arguments (as clap value parsers), HTTP paths, queries and headers, and
//! the files the ledger reads. A value that leaves here is typed; what the domain builds
//! commands from cannot be a raw string.
//!
//! Each parser refuses for what the value *is* (a commune of 5 digits is a malformed
//! commune, not a commune nobody may act for), with the form expected, before anything
//! asks who may act on it. Text is refused if it holds a control character or a Unicode
//! non-character, and is returned in NFC (the rules of `strict_json`, which JSON bodies
//! and files pass through).
//!
//! **Boundary:** pure; no I/O. `InputError` is the one refusal of this boundary; each
//! entrance turns it into its own answer (a 400 naming the field, a CLI error naming the
//! argument, a file error naming the file).

pub mod strict_json;

use std::fmt;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use unicode_normalization::UnicodeNormalization;

use crate::chain::Partition;
use crate::domain::eligibility::Area;
use crate::domain::ids::{CitizenId, CommuneCode, HouseholdId, ProvinceCode};
use crate::domain::loans::{Channel as DisbursementChannel, EntrustedOrganisation};
use crate::domain::payments::entitlements::ChannelKind;
use crate::domain::payments::ids::GatewayId;
use crate::domain::payments::month::Month;

/// Digits of the largest amount any entrance accepts, `domain::money::MAX_AMOUNT`
/// (10^15 đồng), as the HTTP schemas (`defs.json`) bound it too.
pub const MONEY_DIGITS_MAX: usize = 16;
/// A person's name, in characters (schemas/http/defs.json `name`).
pub const NAME_CHARS_MAX: usize = 200;
/// A reason, a decision reference or a note, in characters (defs.json `text`).
pub const TEXT_CHARS_MAX: usize = 500;
/// A member's relation to the head of household, in characters (defs.json `member`).
pub const RELATION_CHARS_MAX: usize = 50;
/// Digits of a phone number, after an optional `+` (defs.json `personal.phone`).
pub const PHONE_DIGITS_MIN: usize = 6;
pub const PHONE_DIGITS_MAX: usize = 15;
/// Letters and digits of a bank account number (defs.json `personal.account_number`):
/// an IBAN's longest is 34.
pub const ACCOUNT_CHARS_MIN: usize = 4;
pub const ACCOUNT_CHARS_MAX: usize = 34;
/// A savings group's name, in characters (approve-loan.request.json `savings_group`).
pub const SAVINGS_GROUP_CHARS_MAX: usize = 64;
/// The longest loan term any entrance accepts, in months (approve-loan.request.json);
/// each programme has its own, shorter maximum, which the book checks.
pub const TERM_MONTHS_MAX: u32 = 600;
/// The years a review may be for (defs.json `review_year`); the book checks the year
/// against the day of the decision.
pub const REVIEW_YEAR_MIN: u32 = 2000;
pub const REVIEW_YEAR_MAX: u32 = 2100;
/// Deprivation indicators one review may name (classify.request.json `deprived`: the
/// standard lists 12).
pub const INDICATORS_MAX: usize = 12;
/// The largest partition sequence any entrance accepts (2^63 - 1), as the HTTP schemas
/// bound it too (`reverse.request.json`): the loan domain's id of an event is twice its
/// sequence plus one (`book::codec::main_id`), which must fit in 64 bits.
pub const SEQUENCE_MAX: u64 = i64::MAX as u64;
/// A reference such as a gateway id, a key id or a savings group, in characters.
pub const REF_CHARS_MAX: usize = 64;
/// An idempotency key, in printable ASCII characters. The ledger scopes a key (by the
/// caller, and a suffix for a command's second half) within the writer's 128 bytes.
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 64;

/// The kinds of value, each with the form it must take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Commune,
    Partition,
    LedgerPartition,
    Household,
    LoanRef,
    CitizenId,
    Money,
    Date,
    Month,
    Gateway,
    KeyId,
    PinnedKey,
    IdempotencyKey,
    Actor,
    Unit,
    Reference,
    Name,
    Text,
    Job,
    Sequence,
    Phone,
    AccountNumber,
    Relation,
    Area,
    Entrusted,
    DisbursementChannel,
    PaymentChannel,
    Code,
    SavingsGroup,
    TermMonths,
    ReviewYear,
    Indicators,
    Personal,
}

impl Kind {
    /// The kind's name in messages and in `--json` errors.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Commune => "commune",
            Kind::Partition | Kind::LedgerPartition => "partition",
            Kind::Household => "household",
            Kind::LoanRef => "loan reference",
            Kind::CitizenId => "citizen id",
            Kind::Money => "amount",
            Kind::Date => "date",
            Kind::Month => "month",
            Kind::Gateway => "gateway",
            Kind::KeyId => "key id",
            Kind::PinnedKey => "ledger key",
            Kind::IdempotencyKey => "idempotency key",
            Kind::Actor => "staff id",
            Kind::Unit => "unit",
            Kind::Reference => "reference",
            Kind::Name => "name",
            Kind::Text => "text",
            Kind::Job => "job id",
            Kind::Sequence => "sequence",
            Kind::Phone => "phone number",
            Kind::AccountNumber => "account number",
            Kind::Relation => "relation",
            Kind::Area => "area",
            Kind::Entrusted => "entrusted organisation",
            Kind::DisbursementChannel => "disbursement channel",
            Kind::PaymentChannel => "payment channel",
            Kind::Code => "code",
            Kind::SavingsGroup => "savings group",
            Kind::TermMonths => "term",
            Kind::ReviewYear => "review year",
            Kind::Indicators => "list of deprivation indicators",
            Kind::Personal => "personal data document",
        }
    }

    /// The form a value of this kind takes, with an example.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Commune => "7 digits: 2 of the province, 5 of the commune (0100007)",
            Kind::Partition => "a 2-digit province code (01)",
            Kind::LedgerPartition => "a 2-digit province code (01), or ledger-keys",
            Kind::Household => "a commune code, a dash and 6 digits (0100007-000123)",
            Kind::LoanRef => "the province, -L and the loan's number (01-L7)",
            Kind::CitizenId => "the 12 digits of a citizen identity card (001190000002)",
            Kind::Money => "a whole number of đồng, digits only (1500000)",
            Kind::Date => "a calendar date YYYY-MM-DD (2026-12-04)",
            Kind::Month => "a month YYYY-MM (2026-12)",
            Kind::Gateway => {
                "1 to 32 lowercase letters, digits and dashes, not starting with a dash (vbsp-bank)"
            }
            Kind::KeyId => "1 to 64 printable ASCII characters without spaces (auditor-1)",
            Kind::PinnedKey => {
                "the ledger's public key, 64 hex digits, or its key id, 16 (3f9a0c1d2e4b5a69)"
            }
            Kind::IdempotencyKey => {
                "1 to 64 printable ASCII characters without spaces or '#' (reg-0100007-000123)"
            }
            Kind::Actor => "1 to 64 printable ASCII characters without spaces (staff:nguyen.an)",
            Kind::Unit => {
                "a commune (7 digits), a province (2 digits), or nothing for the head office"
            }
            Kind::Reference => {
                "1 to 64 printable ASCII characters without spaces (ELDERLY_80_PLUS, pay:7:2026-12:1)"
            }
            Kind::Name => {
                "1 to 200 characters of text, some visible, no control characters (Lê Văn Tám)"
            }
            Kind::Text => {
                "1 to 500 characters of text, some visible, no control characters (crop failure)"
            }
            Kind::Job => "32 lowercase hex digits, as the job's Location named it",
            Kind::Sequence => {
                "an event's partition sequence, as its receipt shows it: digits, 1 to 9223372036854775807 (42)"
            }
            Kind::Phone => "6 to 15 digits, with a + before them or not (0912345678, +84912345678)",
            Kind::AccountNumber => {
                "4 to 34 letters A to Z and digits, no spaces or dashes (0071000123456)"
            }
            Kind::Relation => {
                "1 to 50 characters of text, some visible, no control characters (con gái)"
            }
            Kind::Area => "rural or urban",
            Kind::Entrusted => "womens_union, farmers_union, veterans_association or youth_union",
            Kind::DisbursementChannel => "commune_point or bank_transfer",
            Kind::PaymentChannel => "bank, mobile_money or post_office",
            Kind::Code => "1 to 64 capital letters, digits and underscores (POOR_HOUSEHOLD)",
            Kind::SavingsGroup => "1 to 64 characters of text, no control characters (TK-01)",
            Kind::TermMonths => "a whole number of months, digits only, 1 to 600 (36)",
            Kind::ReviewYear => "a year from 2000 to 2100, 4 digits (2026)",
            Kind::Indicators => {
                "at most 12 indicators, each named once in lowercase letters and underscores (drinking_water)"
            }
            Kind::Personal => {
                "one JSON object as the API's `personal` (schemas/http/defs.json): head_name, head_citizen_id, phone and account_number (or null), members [{name, citizen_id (or null), relation}]"
            }
        }
    }
}

/// A value refused at the boundary: its kind, why, and (in `Display`) the form expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {}: {reason}; expected {}", kind.name(), kind.expected())]
pub struct InputError {
    pub kind: Kind,
    pub reason: String,
}

impl InputError {
    fn new(kind: Kind, reason: impl fmt::Display) -> Self {
        Self {
            kind,
            reason: reason.to_string(),
        }
    }
}

/// What a refused value is shown as: at most 32 characters, with escapes for control
/// characters, so the refusal itself can be printed and logged safely.
fn shown(s: &str) -> String {
    let short: String = s.chars().take(32).collect();
    let more = if s.chars().count() > 32 { "…" } else { "" };
    format!("{:?}{more}", short)
}

/// The length of a job id: 128 bits of a hash, in lowercase hex.
pub const JOB_ID_CHARS: usize = 32;

/// A job id (`http::jobs`): 32 lowercase hex digits (one spelling: no upper case).
pub fn job_id(s: &str) -> Result<String, InputError> {
    if s.len() == JOB_ID_CHARS && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(s.to_owned())
    } else {
        Err(InputError::new(Kind::Job, shown(s)))
    }
}

pub fn commune(s: &str) -> Result<CommuneCode, InputError> {
    CommuneCode::parse(s).map_err(|e| InputError::new(Kind::Commune, format!("{} ({e})", shown(s))))
}

/// A partition of the ledger: one province, by its 2-digit code.
pub fn partition(s: &str) -> Result<Partition, InputError> {
    let code = ProvinceCode::parse(s).map_err(|_| InputError::new(Kind::Partition, shown(s)))?;
    Partition::new(code.as_str()).map_err(|e| InputError::new(Kind::Partition, e))
}

/// Any partition of the ledger's log: a province, or the ledger's key partition
/// (`checkpoint::stream::KEYS_PARTITION`). For the commands that repair, checkpoint, prove
/// or verify a chain, which the key partition is as much as a province's.
pub fn ledger_partition(s: &str) -> Result<Partition, InputError> {
    if s == crate::checkpoint::stream::KEYS_PARTITION {
        return Partition::new(s).map_err(|e| InputError::new(Kind::LedgerPartition, e));
    }
    partition(s).map_err(|_| InputError::new(Kind::LedgerPartition, shown(s)))
}

/// Several partitions, comma-separated (`01,79`); each once.
pub fn partitions(s: &str) -> Result<Vec<Partition>, InputError> {
    let mut out: Vec<Partition> = Vec::new();
    for part in s.split(',') {
        let p = partition(part)?;
        if out.contains(&p) {
            return Err(InputError::new(
                Kind::Partition,
                format!("{} is named twice", shown(part)),
            ));
        }
        out.push(p);
    }
    Ok(out)
}

/// Several partitions as one argument (`01,79`), each named once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionList(pub Vec<Partition>);

pub fn partition_list(s: &str) -> Result<PartitionList, InputError> {
    partitions(s).map(PartitionList)
}

pub fn household(s: &str) -> Result<HouseholdId, InputError> {
    HouseholdId::parse(s).map_err(|_| InputError::new(Kind::Household, shown(s)))
}

/// A loan reference as the ledger prints it (`01-L7`): its partition and number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoanRef {
    pub partition: Partition,
    pub number: u64,
}

impl fmt::Display for LoanRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-L{}", self.partition, self.number)
    }
}

pub fn loan_ref(s: &str) -> Result<LoanRef, InputError> {
    let bad = || InputError::new(Kind::LoanRef, shown(s));
    let (p, number) = s.split_once("-L").ok_or_else(bad)?;
    let partition = partition(p).map_err(|_| bad())?;
    // Digits only, no sign, no leading zero: one spelling per loan.
    if number.is_empty()
        || !number.bytes().all(|b| b.is_ascii_digit())
        || (number.len() > 1 && number.starts_with('0'))
    {
        return Err(bad());
    }
    let number: u64 = number.parse().map_err(|_| bad())?;
    if number == 0 {
        return Err(bad());
    }
    Ok(LoanRef { partition, number })
}

pub fn citizen_id(s: &str) -> Result<CitizenId, InputError> {
    CitizenId::parse(s).map_err(|e| InputError::new(Kind::CitizenId, format!("{} ({e})", shown(s))))
}

/// An event's partition sequence: digits only, no sign or leading zero, 1 to
/// `SEQUENCE_MAX`.
pub fn sequence(s: &str) -> Result<u64, InputError> {
    let bad = |why: &str| InputError::new(Kind::Sequence, format!("{} {why}", shown(s)));
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("is not digits only"));
    }
    if s.starts_with('0') {
        return Err(bad("starts with 0"));
    }
    match s.parse::<u64>() {
        Ok(n) if n <= SEQUENCE_MAX => Ok(n),
        _ => Err(bad("is past any sequence of a chain")),
    }
}

/// Whole đồng, zero or more: digits only, no sign, fraction, exponent or leading zero.
pub fn money_or_zero(s: &str) -> Result<Decimal, InputError> {
    let bad = |why: &str| InputError::new(Kind::Money, format!("{} {why}", shown(s)));
    if s.is_empty() {
        return Err(bad("is empty"));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("holds something other than digits"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(bad("starts with 0"));
    }
    let too_large = || bad("is larger than any amount the ledger keeps");
    if s.len() > MONEY_DIGITS_MAX {
        return Err(too_large());
    }
    let amount = s.parse::<Decimal>().map_err(|e| bad(&e.to_string()))?;
    if amount > crate::domain::money::MAX_AMOUNT {
        return Err(too_large());
    }
    Ok(amount)
}

/// Whole đồng, more than zero.
pub fn money(s: &str) -> Result<Decimal, InputError> {
    let amount = money_or_zero(s)?;
    if amount.is_zero() {
        return Err(InputError::new(Kind::Money, "0 is not an amount to move"));
    }
    Ok(amount)
}

/// A calendar date in exactly one spelling: `YYYY-MM-DD`, zero-padded.
pub fn date(s: &str) -> Result<NaiveDate, InputError> {
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return Err(InputError::new(Kind::Date, shown(s)));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        InputError::new(
            Kind::Date,
            format!("{} is not a day of the calendar", shown(s)),
        )
    })
}

pub fn month(s: &str) -> Result<Month, InputError> {
    let b = s.as_bytes();
    let shaped = b.len() == 7
        && b[4] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || c.is_ascii_digit());
    if !shaped {
        return Err(InputError::new(Kind::Month, shown(s)));
    }
    Month::parse(s).map_err(|_| InputError::new(Kind::Month, shown(s)))
}

/// A gateway's id, by the transports' rule (`gateway::is_gateway_id`): it names the
/// gateway's NATS subjects and its HTTP path, so an entitlement paid through any other
/// id could never be fetched nor settled. Checked here, where new ids enter, not in
/// `GatewayId::parse`: the books still read events recorded with the wider rule.
pub fn gateway(s: &str) -> Result<GatewayId, InputError> {
    if !crate::gateway::is_gateway_id(s) {
        return Err(InputError::new(Kind::Gateway, shown(s)));
    }
    GatewayId::parse(s).map_err(|_| InputError::new(Kind::Gateway, shown(s)))
}

fn reference(kind: Kind, s: &str, max: usize) -> Result<String, InputError> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InputError::new(kind, shown(s)));
    }
    Ok(s.to_owned())
}

/// A ledger key an auditor pins (`--trust`): its public key (64 hex digits), or its key
/// id (16), in lowercase. The id is 64 bits of the key's hash: whoever makes the keys can
/// find a second key with the same id in about 2^32 tries, so the key itself is the pin
/// to use; an id is kept for what it can show.
pub fn pinned_key(s: &str) -> Result<String, InputError> {
    let pin = s.to_ascii_lowercase();
    if !matches!(pin.len(), 16 | 64) || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(InputError::new(Kind::PinnedKey, shown(s)));
    }
    Ok(pin)
}

/// Whether a pin (`pinned_key`) names the key with this id and public key.
pub fn pins(pin: &str, key_id: &str, public_key: &[u8; 32]) -> bool {
    if pin.len() == 64 {
        pin == hex::encode(public_key)
    } else {
        pin == key_id
    }
}

/// The id of a key (a cosigner's, a gateway's signing key).
pub fn key_id(s: &str) -> Result<String, InputError> {
    reference(Kind::KeyId, s, REF_CHARS_MAX)
}

pub fn idempotency_key(s: &str) -> Result<String, InputError> {
    // '#' is the ledger's: a command's earlier events are keyed K#1, K#2, ...
    if s.contains('#') {
        return Err(InputError::new(Kind::IdempotencyKey, shown(s)));
    }
    reference(Kind::IdempotencyKey, s, IDEMPOTENCY_KEY_CHARS_MAX)
}

/// Who acts, as recorded in an event's actor (`staff:nguyen.an`).
pub fn actor(s: &str) -> Result<String, InputError> {
    reference(Kind::Actor, s, REF_CHARS_MAX)
}

/// A reference the ledger keeps as given: a programme, a beneficiary category, a savings
/// group, an instruction id, an audit-trail subject.
pub fn reference_of(s: &str) -> Result<String, InputError> {
    reference(Kind::Reference, s, REF_CHARS_MAX)
}

/// The unit a member of staff acts for: a commune, a province, or "" (the head office).
pub fn unit(s: &str) -> Result<String, InputError> {
    if s.is_empty() || ProvinceCode::parse(s).is_ok() || CommuneCode::parse(s).is_ok() {
        Ok(s.to_owned())
    } else {
        Err(InputError::new(Kind::Unit, shown(s)))
    }
}

/// Why a character may not stand in text, if it may not: C0 and C1 controls and the
/// Unicode non-characters. (A lone surrogate cannot reach a Rust `str`.)
pub fn bad_char(c: char) -> Option<&'static str> {
    let code = c as u32;
    match code {
        0x00..=0x1F | 0x7F => Some("a control character"),
        0x80..=0x9F => Some("a C1 control character"),
        0xFDD0..=0xFDEF => Some("a Unicode non-character"),
        _ if code & 0xFFFE == 0xFFFE => Some("a Unicode non-character"),
        _ => None,
    }
}

/// Whether a character is drawn as nothing: Unicode's Default_Ignorable_Code_Point
/// (Unicode 16, DerivedCoreProperties.txt), such as the zero-width space U+200B, the
/// word joiner U+2060, bidi controls and the Hangul fillers. They may stand inside a
/// text (a joiner in a name is harmless), but a text of only these and spaces is blank
/// to whoever reads it, and a name nobody can read identifies nobody.
pub fn invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// Whether a text reads as nothing: only spaces and invisible characters (or none). What
/// the text parsers (`name`, `text`, `relation`) refuse as blank, for an entrance that
/// answers it in its own words.
pub fn blank(s: &str) -> bool {
    s.chars().all(|c| c.is_whitespace() || invisible(c))
}

fn text_of(kind: Kind, s: &str, max: usize) -> Result<String, InputError> {
    if let Some(c) = s.chars().find(|c| bad_char(*c).is_some()) {
        return Err(InputError::new(
            kind,
            format!(
                "it contains {} (U+{:04X})",
                bad_char(c).expect("found above"),
                c as u32
            ),
        ));
    }
    let normal: String = s.nfc().collect();
    let chars = normal.chars().count();
    if normal.trim().is_empty() {
        return Err(InputError::new(kind, "it is empty"));
    }
    if blank(&normal) {
        return Err(InputError::new(
            kind,
            "it has no visible character, only spaces and invisible ones",
        ));
    }
    if chars > max {
        return Err(InputError::new(
            kind,
            format!("it has {chars} characters, more than {max}"),
        ));
    }
    Ok(normal)
}

/// A person's name, in NFC.
pub fn name(s: &str) -> Result<String, InputError> {
    text_of(Kind::Name, s, NAME_CHARS_MAX)
}

/// A reason, a decision reference or a note, in NFC.
pub fn text(s: &str) -> Result<String, InputError> {
    text_of(Kind::Text, s, TEXT_CHARS_MAX)
}

/// A personal data document's size: the API's body limit (`REQUEST_BODY_BYTES_MAX`),
/// which holds the whole request the document is a part of.
pub const PERSONAL_BYTES_MAX: usize = 64 * 1024;
/// Members besides the head a document may list (defs.json `personal.members`).
pub const PERSONAL_MEMBERS_MAX: usize = crate::domain::registry::MEMBERS_MAX as usize - 1;

/// The API's `personal` object (schemas/http/defs.json), as its schema admits it: no
/// member it does not name.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonalDocument {
    head_name: String,
    head_citizen_id: String,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    account_number: Option<String>,
    members: Vec<MemberDocument>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberDocument {
    name: String,
    #[serde(default)]
    citizen_id: Option<String>,
    relation: String,
}

/// A household's personal data from the JSON object the API takes as `personal`, read
/// by `strict_json` (a member named twice, a control character: refused; text in NFC),
/// each value by its kind's parser. A refusal names where, as `members[1].citizen_id`,
/// never the value: it is personal data. For a CLI that reads it from a file or stdin,
/// where other users of the host cannot read it as they read arguments.
pub fn personal(bytes: &[u8]) -> Result<crate::personal::PersonalData, InputError> {
    let refused =
        |at: &str, e: &dyn fmt::Display| InputError::new(Kind::Personal, format!("{at}: {e}"));
    if bytes.len() > PERSONAL_BYTES_MAX {
        return Err(InputError::new(
            Kind::Personal,
            format!("more than {PERSONAL_BYTES_MAX} bytes"),
        ));
    }
    let document: PersonalDocument =
        strict_json::from_slice(bytes).map_err(|e| refused("the document", &e))?;
    if document.members.len() > PERSONAL_MEMBERS_MAX {
        return Err(refused(
            "members",
            &format!("more than {PERSONAL_MEMBERS_MAX} besides the head"),
        ));
    }
    let kind_of = |at: &str, e: InputError| refused(at, &format!("not a valid {}", e.kind.name()));
    let mut members = Vec::with_capacity(document.members.len());
    for (i, m) in document.members.into_iter().enumerate() {
        let at = |field: &str| format!("members[{i}].{field}");
        members.push(crate::personal::Member {
            name: name(&m.name).map_err(|e| kind_of(&at("name"), e))?,
            citizen_id: m
                .citizen_id
                .map(|id| citizen_id(&id).map(|id| id.to_string()))
                .transpose()
                .map_err(|e| kind_of(&at("citizen_id"), e))?,
            relation: relation(&m.relation).map_err(|e| kind_of(&at("relation"), e))?,
        });
    }
    Ok(crate::personal::PersonalData {
        head_name: name(&document.head_name).map_err(|e| kind_of("head_name", e))?,
        head_citizen_id: citizen_id(&document.head_citizen_id)
            .map_err(|e| kind_of("head_citizen_id", e))?
            .to_string(),
        phone: document
            .phone
            .map(|p| phone(&p))
            .transpose()
            .map_err(|e| kind_of("phone", e))?,
        account_number: document
            .account_number
            .map(|a| account_number(&a))
            .transpose()
            .map_err(|e| kind_of("account_number", e))?,
        members,
    })
}

/// A household member named for leaving it (`household change-members --remove-member`):
/// by citizen id, or by name (in NFC) when they have none. Which member it is, is the
/// service's to find (`service::without_members`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MemberNamed {
    CitizenId(CitizenId),
    Name(String),
}

/// A citizen id when the value is all digits (refused as a citizen id if it is not one),
/// else a name: no name is all digits.
pub fn member_named(s: &str) -> Result<MemberNamed, InputError> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(MemberNamed::CitizenId(citizen_id(s)?));
    }
    Ok(MemberNamed::Name(name(s)?))
}

/// A member's relation to the head of household (con gái, vợ), in NFC.
pub fn relation(s: &str) -> Result<String, InputError> {
    text_of(Kind::Relation, s, RELATION_CHARS_MAX)
}

/// A phone number, for payments by mobile money: an optional `+`, then 6 to 15 digits,
/// nothing else (no spaces or dashes: one spelling per number).
pub fn phone(s: &str) -> Result<String, InputError> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    let shaped = (PHONE_DIGITS_MIN..=PHONE_DIGITS_MAX).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit());
    if !shaped {
        return Err(InputError::new(Kind::Phone, shown(s)));
    }
    Ok(s.to_owned())
}

/// A bank account number, for payments by bank transfer: 4 to 34 ASCII letters and
/// digits, nothing else (no spaces or dashes: one spelling per number).
pub fn account_number(s: &str) -> Result<String, InputError> {
    let shaped = (ACCOUNT_CHARS_MIN..=ACCOUNT_CHARS_MAX).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !shaped {
        return Err(InputError::new(Kind::AccountNumber, shown(s)));
    }
    Ok(s.to_owned())
}

// The choices below are spelled as the API's JSON spells them (defs.json `area`,
// approve-loan, disburse and grant-entitlement requests), so the console and the API
// accept the same words; anything else is refused, never taken for a default.

/// Where a household lives, for the poverty line that applies to it.
pub fn area(s: &str) -> Result<Area, InputError> {
    match s {
        "rural" => Ok(Area::Rural),
        "urban" => Ok(Area::Urban),
        _ => Err(InputError::new(Kind::Area, shown(s))),
    }
}

/// The mass organisation a loan is entrusted to.
pub fn entrusted(s: &str) -> Result<EntrustedOrganisation, InputError> {
    match s {
        "womens_union" => Ok(EntrustedOrganisation::WomensUnion),
        "farmers_union" => Ok(EntrustedOrganisation::FarmersUnion),
        "veterans_association" => Ok(EntrustedOrganisation::VeteransAssociation),
        "youth_union" => Ok(EntrustedOrganisation::YouthUnion),
        _ => Err(InputError::new(Kind::Entrusted, shown(s))),
    }
}

/// How a loan's tranche reaches the borrower.
pub fn disbursement_channel(s: &str) -> Result<DisbursementChannel, InputError> {
    match s {
        "commune_point" => Ok(DisbursementChannel::CommuneTransactionPoint),
        "bank_transfer" => Ok(DisbursementChannel::BankTransfer),
        _ => Err(InputError::new(Kind::DisbursementChannel, shown(s))),
    }
}

/// How an allowance reaches its beneficiary (the gateway is a value of its own).
pub fn payment_channel(s: &str) -> Result<ChannelKind, InputError> {
    match s {
        "bank" => Ok(ChannelKind::BankAccount),
        "mobile_money" => Ok(ChannelKind::MobileMoney),
        "post_office" => Ok(ChannelKind::PostOffice),
        _ => Err(InputError::new(Kind::PaymentChannel, shown(s))),
    }
}

/// A name the reference data gives as a code: a programme (POOR_HOUSEHOLD), a
/// beneficiary category (ELDERLY_80_PLUS_NO_PENSION). The book refuses a code it does
/// not know; this refuses what cannot be one.
pub fn code(s: &str) -> Result<String, InputError> {
    let shaped = !s.is_empty()
        && s.len() <= REF_CHARS_MAX
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !shaped {
        return Err(InputError::new(Kind::Code, shown(s)));
    }
    Ok(s.to_owned())
}

/// The commune savings and loan group a borrower belongs to, as its members name it.
pub fn savings_group(s: &str) -> Result<String, InputError> {
    text_of(Kind::SavingsGroup, s, SAVINGS_GROUP_CHARS_MAX)
}

/// A whole number in one spelling: digits only, no sign or leading zero, from `min` to
/// `max`.
fn whole_number(kind: Kind, s: &str, min: u32, max: u32) -> Result<u32, InputError> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
    match s.parse::<u32>() {
        Ok(n) if digits && (min..=max).contains(&n) => Ok(n),
        _ => Err(InputError::new(kind, shown(s))),
    }
}

/// A loan's term in months, within the bound of every entrance.
pub fn term_months(s: &str) -> Result<u32, InputError> {
    whole_number(Kind::TermMonths, s, 1, TERM_MONTHS_MAX)
}

/// The year whose household list a review produces.
pub fn review_year(s: &str) -> Result<i32, InputError> {
    let year = whole_number(Kind::ReviewYear, s, REVIEW_YEAR_MIN, REVIEW_YEAR_MAX)?;
    Ok(i32::try_from(year).expect("REVIEW_YEAR_MAX fits in an i32"))
}

/// The deprivation indicators a review names: each once, at most `INDICATORS_MAX`, each
/// a name the standards could hold (the book refuses one its standard does not list).
pub fn indicators<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<std::collections::BTreeSet<String>, InputError> {
    let mut set = std::collections::BTreeSet::new();
    for name in names {
        let shaped = !name.is_empty()
            && name.len() <= REF_CHARS_MAX
            && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !shaped {
            return Err(InputError::new(Kind::Indicators, shown(name)));
        }
        if !set.insert(name.to_owned()) {
            return Err(InputError::new(
                Kind::Indicators,
                format!("{} is named twice", shown(name)),
            ));
        }
        if set.len() > INDICATORS_MAX {
            return Err(InputError::new(
                Kind::Indicators,
                format!("more than {INDICATORS_MAX} are named"),
            ));
        }
    }
    Ok(set)
}

/// `indicators` of one comma-separated argument (`employment,nutrition`), as the CLI
/// takes them.
pub fn indicator_list(s: &str) -> Result<std::collections::BTreeSet<String>, InputError> {
    indicators(s.split(','))
}

/// `date` for serde, for the query strings: `#[serde(default, deserialize_with =
/// "input::optional_date")]` reads an optional date in its one spelling.
pub fn optional_date<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<NaiveDate>, D::Error> {
    let text: Option<String> = serde::Deserialize::deserialize(d)?;
    text.map(|t| date(&t).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_id_has_one_spelling() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(job_id(id).unwrap(), id);
        for bad in [
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef0123456789abcdeg",
        ] {
            assert_eq!(job_id(bad).unwrap_err().kind, Kind::Job, "{bad:?}");
        }
    }

    #[test]
    fn a_name_or_relation_of_spaces_and_invisible_characters_is_blank() {
        for blank in [
            "",
            "   ",
            "\u{3000}",
            "\u{2028}",
            "\u{200B}",
            " \u{2060} ",
            "\u{FEFF}",
            "\u{3164}",
            "\u{202E}\u{200D}",
        ] {
            assert_eq!(name(blank).unwrap_err().kind, Kind::Name, "{blank:?}");
            assert_eq!(
                relation(blank).unwrap_err().kind,
                Kind::Relation,
                "{blank:?}"
            );
        }
        // An invisible character beside visible ones is kept as typed.
        assert_eq!(name("An\u{200D}h").unwrap(), "An\u{200D}h");
        assert_eq!(relation(" con ").unwrap(), " con ");
    }

    #[test]
    fn each_kind_refuses_what_it_is_not_and_names_the_form() {
        let e = commune("01000").unwrap_err();
        assert_eq!(e.kind, Kind::Commune);
        assert!(e.to_string().contains("7 digits"), "{e}");
        assert_eq!(partition("1").unwrap_err().kind, Kind::Partition);
        assert_eq!(partition("01").unwrap().as_str(), "01");
        // The key partition is a partition of the log, not a province.
        assert_eq!(partition("ledger-keys").unwrap_err().kind, Kind::Partition);
        assert_eq!(
            ledger_partition("ledger-keys").unwrap().as_str(),
            "ledger-keys"
        );
        assert_eq!(ledger_partition("01").unwrap().as_str(), "01");
        assert_eq!(
            ledger_partition("ledger").unwrap_err().kind,
            Kind::LedgerPartition
        );
        assert!(partitions("01,01").is_err());
        assert_eq!(loan_ref("01-L7").unwrap().to_string(), "01-L7");
        for bad in ["01-L07", "01-L", "01-L-1", "1-L7", "01-L0", "01L7"] {
            assert!(loan_ref(bad).is_err(), "{bad}");
        }
        for bad in ["5.5", "-5", "1e3", "+5", "05", "", " 5", "0"] {
            assert!(money(bad).is_err(), "{bad}");
        }
        assert_eq!(money_or_zero("0").unwrap(), Decimal::ZERO);
        for bad in ["2026-1-05", "2026-02-30", "20260105", "2026-01-05T00:00"] {
            assert!(date(bad).is_err(), "{bad}");
        }
        for bad in ["VBSP-BANK", "VCB", "-vcb", "vcb.1", "v cb", ""] {
            let e = gateway(bad).unwrap_err();
            assert_eq!(e.kind, Kind::Gateway, "{bad:?}");
            assert!(e.to_string().contains("lowercase letters"), "{e}");
        }
        let longest = "v".repeat(crate::gateway::GATEWAY_ID_BYTES_MAX);
        assert_eq!(gateway(&longest).unwrap().as_str(), longest);
        assert!(gateway(&format!("{longest}v")).is_err());
        assert_eq!(gateway("vbsp-bank").unwrap().as_str(), "vbsp-bank");
        assert!(
            Kind::Gateway
                .expected()
                .contains(&crate::gateway::GATEWAY_ID_BYTES_MAX.to_string())
        );
        assert!(month("2026-13").is_err());
        assert!(month("2026-1").is_err());
        assert_eq!(name("Le\u{0302}\u{0301}").unwrap(), "Lế");
        assert!(name("An\u{0}").is_err());
        assert!(text(" ").is_err());
        assert!(idempotency_key("a b").is_err());
        assert!(idempotency_key("K#1").is_err());
        for good in ["0912345678", "+84912345678", "123456", "123456789012345"] {
            assert_eq!(phone(good).unwrap(), good);
        }
        for bad in [
            "call neighbour",
            "12345",
            "1234567890123456",
            "+",
            "++123456",
            "091 234 5678",
            "-123456",
            "١٢٣٤٥٦",
        ] {
            assert_eq!(phone(bad).unwrap_err().kind, Kind::Phone, "{bad:?}");
        }
        for good in [
            "0071000123456",
            "GB82WEST12345698765432",
            "1234",
            &"9".repeat(34),
        ] {
            assert_eq!(account_number(good).unwrap(), good);
        }
        for bad in [
            "123",
            &"9".repeat(35),
            "0071 000123456",
            "0071-000123456",
            "",
            "００７１０００",
            "ĐÔNG1234",
        ] {
            assert_eq!(
                account_number(bad).unwrap_err().kind,
                Kind::AccountNumber,
                "{bad:?}"
            );
        }
        assert_eq!(
            relation(&"c".repeat(RELATION_CHARS_MAX)).unwrap().len(),
            RELATION_CHARS_MAX
        );
        assert_eq!(
            relation(&"c".repeat(RELATION_CHARS_MAX + 1))
                .unwrap_err()
                .kind,
            Kind::Relation
        );
        assert_eq!(relation("con gái").unwrap(), "con gái");
        assert_eq!(area("urban").unwrap(), Area::Urban);
        for bad in ["URBAN", "Urban", "", "city"] {
            assert_eq!(area(bad).unwrap_err().kind, Kind::Area, "{bad:?}");
        }
        assert_eq!(
            entrusted("youth_union").unwrap(),
            EntrustedOrganisation::YouthUnion
        );
        assert_eq!(entrusted("red_cross").unwrap_err().kind, Kind::Entrusted);
        assert_eq!(
            disbursement_channel("bank_transfer").unwrap(),
            DisbursementChannel::BankTransfer
        );
        assert_eq!(
            disbursement_channel("cash").unwrap_err().kind,
            Kind::DisbursementChannel
        );
        assert_eq!(
            payment_channel("mobile_money").unwrap(),
            ChannelKind::MobileMoney
        );
        assert_eq!(
            payment_channel("bank_account").unwrap_err().kind,
            Kind::PaymentChannel
        );
        assert_eq!(code("POOR_HOUSEHOLD").unwrap(), "POOR_HOUSEHOLD");
        for bad in [
            "poor_household",
            "POOR-HOUSEHOLD",
            "",
            &"A".repeat(REF_CHARS_MAX + 1),
        ] {
            assert_eq!(code(bad).unwrap_err().kind, Kind::Code, "{bad:?}");
        }
        assert_eq!(savings_group("Tổ TK 01").unwrap(), "Tổ TK 01");
        let long_group = "ổ".repeat(SAVINGS_GROUP_CHARS_MAX + 1);
        assert_eq!(
            savings_group(&long_group).unwrap_err().kind,
            Kind::SavingsGroup
        );
        assert_eq!(term_months("36").unwrap(), 36);
        assert_eq!(term_months("600").unwrap(), TERM_MONTHS_MAX);
        for bad in ["0", "601", "036", "+36", "-1", "", "3 6", "99999999999"] {
            assert_eq!(
                term_months(bad).unwrap_err().kind,
                Kind::TermMonths,
                "{bad:?}"
            );
        }
        assert_eq!(review_year("2026").unwrap(), 2026);
        for bad in ["1999", "2101", "26", "02026", "+2026"] {
            assert_eq!(
                review_year(bad).unwrap_err().kind,
                Kind::ReviewYear,
                "{bad:?}"
            );
        }
        assert_eq!(
            indicators(["nutrition", "drinking_water"]).unwrap().len(),
            2
        );
        assert!(indicators([]).unwrap().is_empty());
        let names: Vec<String> = (0..=INDICATORS_MAX).map(|i| "x".repeat(i + 1)).collect();
        let too_many = indicators(names.iter().map(String::as_str)).unwrap_err();
        assert!(too_many.to_string().contains("more than 12"), "{too_many}");
        for bad in [
            vec!["nutrition", "nutrition"],
            vec!["Nutrition"],
            vec![""],
            vec!["drinking water"],
        ] {
            assert_eq!(
                indicators(bad.clone()).unwrap_err().kind,
                Kind::Indicators,
                "{bad:?}"
            );
        }
    }
}
