//! The staff-facing operations, shared by the CLI, the HTTP API and the demo:
//! authorize the caller, validate and seal personal data, build a command, submit it.
//!
//! **Boundary:** the only module that sees personal data in clear (besides `personal`).
//! What reaches the log is ciphertext and blind indexes.

use std::sync::Arc;

use chrono::NaiveDate;
use prost::Message as _;
use rust_decimal::Decimal;

use crate::access::{self, AccessError, Caller, Operation};
use crate::book::{self, Command, codec};
use crate::chain::{Digest, Partition};
use crate::claims::{ClaimError, Claims};
use crate::domain::Rejection;
use crate::domain::eligibility::{Area, ClassificationInputs};
use crate::domain::ids::{CitizenId, HouseholdId};
use crate::domain::loans::{Channel, CommandKind, EntrustedOrganisation, LoanId};
use crate::domain::registry::{BlindIndex, Change};
use crate::log::{AppendError, Ledger, Receipt, Submission};
use crate::personal::{PersonalData, Vault, VaultError};
use crate::projection::Projector;
use crate::proto::{self, envelope::Payload};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The caller lacks the role or acts outside its unit: nothing was appended.
    #[error("access denied: {0}")]
    Denied(#[from] AccessError),
    /// The request or the book refused it: nothing was appended. Show it to the caller.
    #[error("refused: {0}")]
    Rejected(Rejection),
    /// Personal data could not be sealed or opened.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The ledger could not append (retry with the same idempotency key), or is stopped.
    #[error(transparent)]
    Append(AppendError),
    /// The idempotency key already names an event another request caused: nothing was
    /// appended. Answering with that event's receipt would tell a caller who changed the
    /// request (say, the amount) and kept the key that the change was recorded.
    #[error("idempotency key {key} was used for another request")]
    KeyReused { key: String },
    /// The citizen claims could not be used, and a retry changes nothing: their stream
    /// could lose claims (`ClaimError::Unsafe`: an operator fixes it first), or a claim
    /// was asked for something that is not a household id (`ClaimError::NotAHousehold`:
    /// a mistake of the code calling). A claim that could not be checked now (NATS, a
    /// contended shard) is `Append(Nats)` instead, retried with the same key; one held
    /// by another household is `Rejected`.
    #[error(transparent)]
    Claims(ClaimError),
}

impl ServiceError {
    /// Whether the command certainly appended nothing, so what it claimed may be given
    /// back: a refusal, a reused key, a request the ledger could not take, a partition
    /// stopped (acknowledged data lost, or its chain broken) before anything was
    /// published. A commit that failed, NATS, the store or a shutdown leave it unknown:
    /// the retry with the same key finds out, and its claims stay until then.
    pub fn appended_nothing(&self) -> bool {
        match self {
            ServiceError::Denied(_)
            | ServiceError::Rejected(_)
            | ServiceError::KeyReused { .. } => true,
            // Claims fail before or after the submit; only its own result says.
            ServiceError::Vault(_) | ServiceError::Claims(_) => false,
            ServiceError::Append(e) => matches!(
                e,
                AppendError::Partition(_)
                    | AppendError::MissingIdempotencyKey
                    | AppendError::InvalidIdempotencyKey
                    | AppendError::Oversized { .. }
                    | AppendError::Undecodable(_)
                    | AppendError::UnknownPayload
                    | AppendError::RequiresCommand { .. }
                    | AppendError::Rejected(_)
                    | AppendError::LostAcknowledgedData { .. }
                    | AppendError::ChainBroken { .. }
            ),
        }
    }
}

impl From<Rejection> for ServiceError {
    fn from(r: Rejection) -> Self {
        ServiceError::Rejected(r)
    }
}

impl From<crate::domain::payments::Rejection> for ServiceError {
    fn from(r: crate::domain::payments::Rejection) -> Self {
        ServiceError::Rejected(Rejection::Payment(r))
    }
}

impl From<AppendError> for ServiceError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Rejected(r) => ServiceError::Rejected(r),
            other => ServiceError::Append(other),
        }
    }
}

/// A loan command as staff give it. Serialized only into a CLI request's fingerprint
/// (what the command asks), never stored.
#[derive(Clone, Debug, serde::Serialize)]
pub enum LoanAction {
    Approve {
        household: HouseholdId,
        programme: String,
        amount: Decimal,
        term_months: u32,
        savings_group: String,
        entrusted: EntrustedOrganisation,
    },
    Disburse {
        amount: Decimal,
        channel: Channel,
    },
    Repay {
        amount: Decimal,
    },
    AccrueInterest,
    MarkOverdue,
    Extend {
        new_due: NaiveDate,
    },
    Freeze {
        disaster_ref: String,
    },
    WriteOff {
        disaster_ref: String,
    },
    /// Cancel the approval of a loan that has nothing disbursed.
    CancelApproval,
    /// End a freeze; the due date may move on by at most the days frozen.
    Unfreeze {
        new_due: Option<NaiveDate>,
    },
    /// Reverse the event at this partition sequence (a disbursement or repayment) of the
    /// loan named with it; the event of another loan is refused.
    Reverse {
        sequence: u64,
    },
}

impl LoanAction {
    fn operation(&self) -> Operation {
        match self {
            LoanAction::Approve { .. } => Operation::ApproveLoan,
            LoanAction::Disburse { .. } => Operation::Disburse,
            LoanAction::Repay { .. } => Operation::Repay,
            LoanAction::AccrueInterest => Operation::AccrueInterest,
            LoanAction::MarkOverdue => Operation::MarkOverdue,
            LoanAction::Extend { .. } => Operation::Extend,
            LoanAction::Freeze { .. } => Operation::Freeze,
            LoanAction::WriteOff { .. } => Operation::WriteOff,
            LoanAction::CancelApproval => Operation::CancelApproval,
            // Ending a freeze is the same authority's as ordering one.
            LoanAction::Unfreeze { .. } => Operation::Freeze,
            LoanAction::Reverse { .. } => Operation::Reverse,
        }
    }
}

/// The most overdue commands one loan takes on one date (`Service::mark_overdue`): one
/// an instalment date the loan can have, and the closing accrual. A tranche has an
/// instalment a month to the due date, which an extension may move by half the term
/// (`loans::extension_months_max`); a loan has at most `TRANCHES_MAX` tranches on days of
/// their own, and a term at most `input::TERM_MONTHS_MAX` months. A smaller bound (a
/// loan's 120 months were once taken for it) could stop a job that ran late with arrears
/// still unmoved, reported as done; the loop ends at the first step that moves nothing.
pub const OVERDUE_STEPS_MAX: usize =
    crate::domain::loans::TRANCHES_MAX * (crate::input::TERM_MONTHS_MAX as usize * 3 / 2 + 1) + 1;

/// Times a command that appended nothing tries to give its claims back before it
/// answers with them still held (`Service::give_back_or_log`). Giving back is idempotent
/// and what fails it is transient (a NATS timeout, a shard contended by other processes,
/// a round failed by another request's publish), so a few tries nearly always free the
/// claims; past them the caller's answer is worth more than a longer wait, and an
/// operator frees what is left (`Service::release_left_over_claim`).
pub const GIVE_BACK_ATTEMPTS_MAX: u32 = 4;
/// Wait before a give-back's next try: this times the tries made (0.1 + 0.2 + 0.3 s in
/// all), long enough for a stalled round to time out or a contended shard to settle.
pub const GIVE_BACK_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// What `Service::release_left_over_claim` refused, or why it could not decide.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseClaimError {
    /// The claims give the citizen to another household, or to none: nothing freed.
    /// Handle: check the household id (the holder is named for the operator).
    #[error("household {household} does not hold this citizen's claim ({})", match holder {
        Some(holder) => format!("household {holder} does"),
        None => "no household does".to_owned(),
    })]
    NotHeld {
        household: String,
        holder: Option<String>,
    },
    /// The household's recorded events hold the citizen: the claim is theirs, not left
    /// over, and freeing it would let the citizen be registered twice. Nothing freed.
    #[error(
        "household {household}'s recorded events hold this citizen: the claim is in use, not left over"
    )]
    Recorded { household: String },
    /// The claims or the log could not be read, or the release failed: run it again.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Request metadata every write carries.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub caller: &'a Caller,
    pub idempotency_key: &'a str,
    pub correlation_id: &'a str,
    /// What a staff request asked, hashed (an HTTP request's route and body, a command
    /// line's subcommand and parsed arguments): recorded in its events, and compared when
    /// its key turns out to be used already (`Service::same_request`). None for the
    /// ledger's own work under keys it derives (a gateway's post, a timeout, the demo).
    pub fingerprint: Option<&'a Digest>,
}

#[derive(Clone)]
pub struct Service {
    pub ledger: Ledger,
    pub vault: Arc<Vault>,
    /// Read side, for lookups a command needs (where a household's sealed data are).
    pub projector: Arc<Projector>,
    /// Country-wide citizen claims (`claims`), opened on first use and shared by every
    /// clone, so a process gathers all its claim writes into one batcher.
    claims: Arc<tokio::sync::OnceCell<Claims>>,
    /// The clock today is read from (`set_clock`; the system clock otherwise), shared by
    /// every clone: `serve` sets the one its gateway sink dates results by, the demo its
    /// played days, a test a pinned day.
    clock: Arc<std::sync::OnceLock<crate::clock::Clock>>,
}

impl From<ClaimError> for ServiceError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Held { holder } => {
                ServiceError::Rejected(Rejection::CitizenAlreadyRegistered { household: holder })
            }
            // Not a refusal: the claim could not be checked; retry the command.
            e @ (ClaimError::Nats(_) | ClaimError::Contended) => {
                ServiceError::Append(AppendError::Nats(e.to_string()))
            }
            // Retrying changes nothing: kept typed, so no edge answers "retry".
            e @ (ClaimError::Unsafe(_) | ClaimError::NotAHousehold { .. }) => {
                ServiceError::Claims(e)
            }
        }
    }
}

/// A refusal naming the household that holds a citizen, unnamed when that household lies
/// outside the caller's unit: a refused registration appends nothing, so anyone could
/// otherwise ask, as often as they liked, where anyone is registered in the country
/// (`household_of_citizen` answers the same way).
fn outside_unit_unnamed(caller: &Caller, e: ServiceError) -> ServiceError {
    match e {
        ServiceError::Rejected(Rejection::CitizenAlreadyRegistered { household })
            if !HouseholdId::parse(&household)
                .is_ok_and(|h| access::within(&caller.unit, h.commune().as_str())) =>
        {
            ServiceError::Rejected(Rejection::CitizenRegisteredOutsideUnit)
        }
        other => other,
    }
}

fn actor(caller: &Caller) -> proto::Actor {
    proto::Actor {
        id: caller.id.clone(),
        role: caller.role.name().into(),
        unit: caller.unit.clone(),
    }
}

/// Whether events of this type record a household's members (and their citizens'
/// blind indexes).
fn records_members(event_type: &str) -> bool {
    matches!(
        event_type,
        "ansinh.v1.HouseholdRegistered"
            | "ansinh.v1.HouseholdMembersChanged"
            | "ansinh.v1.MemberDied"
            | "ansinh.v1.HouseholdMovedIn"
    )
}

const ERASED: &str = "ansinh.v1.PersonalDataErased";
const MOVED_OUT: &str = "ansinh.v1.HouseholdMovedOut";

/// The citizens an event records as its household's members; None for an event that
/// records none (`records_members`).
fn citizens_recorded(payload: &Option<Payload>) -> Option<Vec<BlindIndex>> {
    let indexes = match payload.as_ref()? {
        Payload::HouseholdRegistered(p) => &p.citizen_indexes,
        Payload::HouseholdMembersChanged(p) => &p.citizen_indexes,
        Payload::MemberDied(p) => &p.citizen_indexes,
        Payload::HouseholdMovedIn(p) => &p.citizen_indexes,
        _ => return None,
    };
    // The ledger writes 32-byte indexes; anything else names no citizen.
    Some(
        indexes
            .iter()
            .filter_map(|c| <BlindIndex>::try_from(c.as_ref()).ok())
            .collect(),
    )
}

/// `data` without the members `leaving` names, each exactly one member: a citizen id
/// names who holds it; a name names only a member without a citizen id (who has one is
/// named by it, so a name shared with them never frees their claim), compared in NFC. A
/// name no such member bears is `NotAMember`; one that two bear is `AmbiguousMember`,
/// since removing both would remove someone still living there. Pure: the caller reads
/// `data` and records the result.
pub fn without_members(
    data: &PersonalData,
    household: &HouseholdId,
    leaving: &[crate::input::MemberNamed],
) -> Result<PersonalData, Rejection> {
    use crate::input::MemberNamed;
    use unicode_normalization::UnicodeNormalization;
    let mut data = data.clone();
    for who in leaving {
        let named = |m: &crate::personal::Member| match who {
            MemberNamed::CitizenId(id) => m.citizen_id.as_deref() == Some(id.as_str()),
            MemberNamed::Name(name) => m.citizen_id.is_none() && m.name.nfc().eq(name.nfc()),
        };
        let mut matching = data
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| named(m))
            .map(|(i, _)| i);
        match (matching.next(), matching.next()) {
            (Some(one), None) => {
                data.members.remove(one);
            }
            (None, _) => {
                return Err(Rejection::NotAMember {
                    household: household.to_string(),
                });
            }
            (Some(_), Some(_)) => {
                return Err(Rejection::AmbiguousMember {
                    household: household.to_string(),
                });
            }
        }
    }
    Ok(data)
}

fn partition_of(household: &HouseholdId) -> Partition {
    Partition::new(household.province().as_str()).expect("a province code is a partition name")
}

impl Service {
    pub fn new(ledger: Ledger, vault: Arc<Vault>, projector: Arc<Projector>) -> Self {
        Self {
            ledger,
            vault,
            projector,
            claims: Arc::new(tokio::sync::OnceCell::new()),
            clock: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Sets the clock today is read from, for this service and its clones (once; later
    /// calls change nothing).
    pub fn set_clock(&self, clock: crate::clock::Clock) {
        let _ = self.clock.set(clock);
    }

    /// Today in Vietnam by the service's clock.
    pub fn today(&self) -> NaiveDate {
        match self.clock.get() {
            Some(clock) => crate::clock::today_by(clock),
            None => crate::clock::today(),
        }
    }

    /// A loan or registry command may be dated `on`: today or earlier. Dated ahead (a
    /// mistyped year), a repayment would accrue years of interest and every later command
    /// on the loan or household would be refused as back-dated.
    pub fn not_in_future(&self, on: NaiveDate) -> Result<(), Rejection> {
        match self.ahead(on) {
            Some(today) => Err(Rejection::DatedInFuture { on, today }),
            None => Ok(()),
        }
    }

    /// Instructions (a run, a reissue) may be issued on `on`: today or earlier.
    pub fn may_issue_on(&self, on: NaiveDate) -> Result<(), Rejection> {
        match self.ahead(on) {
            Some(today) => Err(Rejection::IssuedInFuture { on, today }),
            None => Ok(()),
        }
    }

    /// Today, when `on` is after it.
    fn ahead(&self, on: NaiveDate) -> Option<NaiveDate> {
        let today = self.today();
        (on > today).then_some(today)
    }

    /// Test hook: `Claims::hold_publishes` of this service's claims.
    #[doc(hidden)]
    pub async fn hold_claims(
        &self,
    ) -> Result<tokio::sync::OwnedRwLockWriteGuard<()>, ServiceError> {
        Ok(self.claims().await?.hold_publishes().await)
    }

    /// Test hook: `Claims::fail_releases` of this service's claims.
    #[doc(hidden)]
    pub async fn fail_claim_releases(&self, count: usize) -> Result<(), ServiceError> {
        self.claims().await?.fail_releases(count);
        Ok(())
    }

    async fn claims(&self) -> Result<&Claims, ServiceError> {
        Ok(self
            .claims
            .get_or_try_init(|| {
                let config = self.ledger.config();
                Claims::open(
                    self.ledger.jetstream(),
                    &config.stream_name,
                    config.replicas,
                )
            })
            .await?)
    }

    /// The household a citizen belongs to, through the blind index (no sealed data is
    /// read or scanned), for staff who may change households: None when no household
    /// holds the citizen, or when the one that does lies outside the caller's unit (so
    /// the answer does not tell where else a person is registered).
    pub async fn household_of_citizen(
        &self,
        caller: &crate::access::Caller,
        citizen: &CitizenId,
    ) -> Result<Option<HouseholdId>, ServiceError> {
        access::authorize_role(caller, Operation::ChangeHousehold)?;
        let index = self.vault.blind_index(citizen.as_str());
        let Some(holder) = self.claims().await?.holder(&index).await? else {
            return Ok(None);
        };
        // Only the ledger writes the bucket, always a household id: anything else is a
        // damaged bucket, not an answer.
        let household = HouseholdId::parse(&holder).map_err(|_| {
            ServiceError::Append(AppendError::Nats(format!(
                "the citizen claims name {holder:?}, not a household"
            )))
        })?;
        Ok(access::within(&caller.unit, household.commune().as_str()).then_some(household))
    }

    /// Opens the citizen claims now (creating their stream when missing), rather than on the
    /// first command that needs it.
    pub async fn open_claims(&self) -> Result<(), ServiceError> {
        self.claims().await.map(|_| ())
    }

    /// Submits a command that gives `household` the `citizens`, claiming them
    /// country-wide first (`claims`); if the book refuses it, the claims this call made
    /// are released again. Other failures keep them: the event may have landed, and a
    /// retry of the same command reuses its own claims.
    async fn submit_claiming(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
        from: Option<&HouseholdId>,
        citizens: &[BlindIndex],
        command: Command,
    ) -> Result<Receipt, ServiceError> {
        self.submit_claiming_naming_holders(req, household, from, citizens, command)
            .await
            .map_err(|e| outside_unit_unnamed(req.caller, e))
    }

    async fn submit_claiming_naming_holders(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
        from: Option<&HouseholdId>,
        citizens: &[BlindIndex],
        command: Command,
    ) -> Result<Receipt, ServiceError> {
        let claims = self.claims().await?;
        let taken = match from {
            None => claims.claim(household.as_str(), citizens).await?,
            Some(from) => {
                claims
                    .transfer(from.as_str(), household.as_str(), citizens)
                    .await?
            }
        };
        self.submit_holding(req, household, from, claims, &taken, command)
            .await
    }

    /// Submits a command of `household` that holds the claims `taken` made for it (moved
    /// from the household `from`, for a move-in), and gives them back if it certainly
    /// appended nothing (`ServiceError::appended_nothing`), or if it is answered as a
    /// retry of a command already recorded (`duplicate`).
    async fn submit_holding(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
        from: Option<&HouseholdId>,
        claims: &Claims,
        taken: &[BlindIndex],
        command: Command,
    ) -> Result<Receipt, ServiceError> {
        let result = self.submit(req, partition_of(household), command).await;
        match &result {
            Err(e) if e.appended_nothing() => {
                self.give_back_or_log(claims, household, from, taken).await;
            }
            // A retry whose first attempt landed, through a process whose log index had
            // not caught up with it (`already` found nothing), claims again. What it newly
            // took was free, so the recorded command does not hold it (its household
            // erased since, or the citizen left it), and kept it would be held for ever.
            // Released, even after a move-in: its move-out has landed, and the household
            // moving holds nothing any more.
            Ok(receipt) if receipt.duplicate => {
                self.give_back_or_log(claims, household, None, taken).await;
            }
            _ => {}
        }
        result
    }

    /// `give_back`, tried up to `GIVE_BACK_ATTEMPTS_MAX` times. The command's own answer
    /// (the book's refusal, the receipt of a retry) is what its caller acts on: a failed
    /// give-back must not replace it with an error that says "retry", whose retry finds
    /// the claims already held by the household, takes nothing, and so gives nothing back.
    /// Past the attempts the claims stay held, logged at error level (the household and
    /// how many citizens, no personal data), for an operator to free
    /// (`Service::release_left_over_claim`).
    async fn give_back_or_log(
        &self,
        claims: &Claims,
        household: &HouseholdId,
        from: Option<&HouseholdId>,
        taken: &[BlindIndex],
    ) {
        let mut attempt = 1;
        loop {
            let error = match self.give_back(claims, household, from, taken).await {
                Ok(()) => return,
                Err(e) => e,
            };
            if attempt >= GIVE_BACK_ATTEMPTS_MAX {
                tracing::error!(
                    household = %household,
                    citizens = taken.len(),
                    attempts = attempt,
                    error = %error,
                    "claims of a command that appended nothing were not given back: each \
                     citizen stays held by the household until `ansinh admin release-claim` \
                     frees it"
                );
                return;
            }
            tracing::warn!(
                household = %household,
                attempt,
                error = %error,
                "giving claims back failed: trying again"
            );
            tokio::time::sleep(GIVE_BACK_BACKOFF * attempt).await;
            attempt += 1;
        }
    }

    async fn submit(
        &self,
        req: &Request<'_>,
        partition: Partition,
        command: Command,
    ) -> Result<Receipt, ServiceError> {
        let receipt = self
            .ledger
            .submit(Submission {
                partition,
                actor: actor(req.caller),
                idempotency_key: req.idempotency_key.to_owned(),
                correlation_id: req.correlation_id.to_owned(),
                request_fingerprint: req.fingerprint.copied(),
                command,
            })
            .await?;
        self.same_request(req, receipt).await
    }

    /// A receipt, checked against the request when it names an event appended before
    /// (`duplicate`): a request with a fingerprint is answered with it only if that event
    /// records the same fingerprint, and refused (`KeyReused`) if it records another.
    /// The check is the ledger's, made in the partition's chain order, so it holds across
    /// processes: two requests racing on one key land once, and the other is refused. An
    /// event that records no fingerprint (appended before they were recorded, or by a
    /// request without one) answers as a retry, as the ledger always has.
    ///
    /// Costs nothing on a new event; a retry reads its event back (from the writer's
    /// recent events, or one fetch).
    async fn same_request(
        &self,
        req: &Request<'_>,
        receipt: Receipt,
    ) -> Result<Receipt, ServiceError> {
        let Some(fingerprint) = req.fingerprint.filter(|_| receipt.duplicate) else {
            return Ok(receipt);
        };
        let recorded = self.ledger.event_of(&receipt).await?.request_fingerprint;
        if recorded.is_empty() || recorded.as_ref() == fingerprint.0.as_slice() {
            Ok(receipt)
        } else {
            Err(ServiceError::KeyReused {
                key: req.idempotency_key.to_owned(),
            })
        }
    }

    /// Validates every citizen id's shape, then returns their blind indexes (head first).
    fn indexes(&self, data: &PersonalData) -> Result<Vec<BlindIndex>, ServiceError> {
        let mut out = Vec::with_capacity(1 + data.members.len());
        out.push(
            self.vault
                .blind_index(CitizenId::parse(&data.head_citizen_id)?.as_str()),
        );
        for m in &data.members {
            if let Some(id) = &m.citizen_id {
                out.push(self.vault.blind_index(CitizenId::parse(id)?.as_str()));
            }
        }
        Ok(out)
    }

    /// The receipt of the request's idempotency key in the household's partition, if
    /// an earlier attempt of this request already appended it (another request under
    /// the key is refused: `same_request`).
    async fn already(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
    ) -> Result<Option<Receipt>, ServiceError> {
        self.already_in(req, &partition_of(household)).await
    }

    /// As [`Service::already`], in `partition`.
    async fn already_in(
        &self,
        req: &Request<'_>,
        partition: &Partition,
    ) -> Result<Option<Receipt>, ServiceError> {
        match self
            .ledger
            .already_appended(partition, req.idempotency_key)?
        {
            Some(receipt) => Ok(Some(self.same_request(req, receipt).await?)),
            None => Ok(None),
        }
    }

    fn members(data: &PersonalData) -> u32 {
        1 + data.members.len() as u32
    }

    /// Registers a household: claims its citizens country-wide (a share of one frame of
    /// claims) and seals its personal data under a data key written ahead, at once, then
    /// submits. A refusal gives the claims back; so does a key already used for another
    /// request. A citizen held by a household outside the caller's unit is refused
    /// without naming it (`outside_unit_unnamed`).
    pub async fn register(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
        area: Area,
        registered_on: NaiveDate,
        data: &PersonalData,
    ) -> Result<Receipt, ServiceError> {
        let result = self
            .register_naming_holders(req, household, area, registered_on, data)
            .await;
        self.unless_recorded(req, household, result)
            .await
            .map_err(|e| outside_unit_unnamed(req.caller, e))
    }

    async fn register_naming_holders(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
        area: Area,
        registered_on: NaiveDate,
        data: &PersonalData,
    ) -> Result<Receipt, ServiceError> {
        access::authorize(
            req.caller,
            Operation::RegisterHousehold,
            household.commune().as_str(),
        )?;
        self.not_in_future(registered_on)?;
        // A retry is answered before sealing: the household may since have been erased.
        if let Some(receipt) = self.already(req, household).await? {
            return Ok(receipt);
        }
        let citizens = self.indexes(data)?;
        let claims = self.claims().await?;
        // A pooled key used for a registration then refused protects nothing.
        let (sealed, taken) = tokio::join!(
            self.vault.seal_registering(household.as_str(), data),
            claims.claim(household.as_str(), &citizens),
        );
        let taken = taken?;
        let sealed = match sealed {
            Ok(sealed) => sealed,
            Err(e) => {
                self.give_back_or_log(claims, household, None, &taken).await;
                return Err(e.into());
            }
        };
        let change = Change::Registered {
            household: household.clone(),
            area,
            members: Self::members(data),
            citizens,
            sealed,
            on: registered_on,
        };
        self.submit_holding(
            req,
            household,
            None,
            claims,
            &taken,
            Command::Registry(change),
        )
        .await
    }

    pub async fn change_members(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
        on: NaiveDate,
        reason: &str,
        data: &PersonalData,
    ) -> Result<Receipt, ServiceError> {
        access::authorize(
            req.caller,
            Operation::ChangeHousehold,
            household.commune().as_str(),
        )?;
        self.not_in_future(on)?;
        if let Some(receipt) = self.member_change_recorded(req, household).await? {
            return Ok(receipt);
        }
        let result = self
            .change_members_sealed(req, household, on, reason, data)
            .await;
        let receipt = self.unless_recorded(req, household, result).await?;
        // Members who left are free to join another household. Released only after the
        // event is durable; a failure here leaves them claimed (refused elsewhere, never
        // doubled) until the same command is retried.
        self.release_left(household, &receipt).await?;
        Ok(receipt)
    }

    /// `change_members` once it is known not to be answered by this process's index.
    async fn change_members_sealed(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
        on: NaiveDate,
        reason: &str,
        data: &PersonalData,
    ) -> Result<Receipt, ServiceError> {
        let citizens = self.indexes(data)?;
        // Sealed under the key of the household's latest blob, as every later seal is, so
        // one erasure destroys all of its data. A household not registered (yet: its
        // registration may be in flight) is refused here: sealed under a fresh key, the
        // change could land right after that registration, and the erasure would destroy
        // only the change's key, leaving the registration's data readable.
        let latest = self.latest_sealed(household).await?;
        let change = Change::MembersChanged {
            household: household.clone(),
            members: Self::members(data),
            citizens: citizens.clone(),
            sealed: self
                .vault
                .seal_again(household.as_str(), data, &latest)
                .await?,
            on,
            reason: reason.to_owned(),
        };
        self.submit_claiming(req, household, None, &citizens, Command::Registry(change))
            .await
    }

    /// `result`, unless it is a refusal that the preparation of a command recorded
    /// already meets (a citizen it claims held by another household since, or the
    /// household's data erased since): then the request's key is looked up again once
    /// the partition's writer has folded what other processes appended, and a retry
    /// whose first attempt landed through another process gets its receipt
    /// (`same_request`), as it would through that one. This process's index learns
    /// another process's keys only when its writer folds their events, and a command
    /// is prepared (claimed, sealed) before its writer sees it. Costs a request to the
    /// stream, and a read of what the writer lacks, on the refusal path only.
    async fn unless_recorded(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
        result: Result<Receipt, ServiceError>,
    ) -> Result<Receipt, ServiceError> {
        let refused_by_preparation = matches!(
            &result,
            Err(
                ServiceError::Rejected(Rejection::CitizenAlreadyRegistered { .. })
                    | ServiceError::Vault(VaultError::Erased { .. })
            )
        );
        if !refused_by_preparation {
            return result;
        }
        match self
            .ledger
            .already_appended_caught_up(&partition_of(household), req.idempotency_key)
            .await?
        {
            Some(receipt) => self.same_request(req, receipt).await,
            None => result,
        }
    }

    /// The receipt of the member change this request recorded before, if any, after
    /// freeing those who left (the first call may have failed after its event, before
    /// freeing them; releasing is idempotent). A caller that builds the new member list
    /// from the household's current data asks this first: after the change, or after an
    /// erasure, that data no longer gives the same list.
    pub async fn member_change_recorded(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
    ) -> Result<Option<Receipt>, ServiceError> {
        access::authorize(
            req.caller,
            Operation::ChangeHousehold,
            household.commune().as_str(),
        )?;
        let Some(receipt) = self.already(req, household).await? else {
            return Ok(None);
        };
        self.release_left(household, &receipt).await?;
        Ok(Some(receipt))
    }

    /// Frees the citizens who left `household` in the member change recorded at
    /// `receipt`: those of the household's event before it that recorded its members
    /// (registration, member change, death, move-in), less the change's own. Read from the
    /// log through the household's trail (`newest_in_trail`), so a retry finds them as the
    /// first call did, though the household's latest data no longer name them.
    async fn release_left(
        &self,
        household: &HouseholdId,
        receipt: &Receipt,
    ) -> Result<(), ServiceError> {
        let change = self.ledger.event_of(receipt).await?;
        let Some(Payload::HouseholdMembersChanged(_)) = &change.payload else {
            return Ok(());
        };
        let after = citizens_recorded(&change.payload).unwrap_or_default();
        let earlier = self
            .newest_in_trail(
                household,
                &receipt.partition,
                Some(receipt.sequence),
                records_members,
            )
            .await?;
        let left: Vec<BlindIndex> = earlier
            .and_then(|event| citizens_recorded(&event.payload))
            .unwrap_or_default()
            .into_iter()
            .filter(|c| !after.contains(c))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        self.claims()
            .await?
            .release(household.as_str(), &left)
            .await?;
        Ok(())
    }

    /// The household's newest event in `partition` before the partition sequence `below`
    /// (any, when None) whose type `wanted` accepts, read from the log: back through the
    /// household's trail from its newest line (`Projector::trail_newest_first`, O(the
    /// lines since that event)), then that event from its message. The projections are
    /// caught up with the end of the stream first, so every event durable before the call
    /// is seen.
    async fn newest_in_trail(
        &self,
        household: &HouseholdId,
        partition: &str,
        below: Option<u64>,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Option<proto::Envelope>, ServiceError> {
        let internal = |e: String| ServiceError::Append(AppendError::Nats(e));
        self.caught_up().await?;
        let mut found = None;
        for line in self
            .projector
            .trail_newest_first(&format!("household:{household}"), partition)
        {
            let line = line.map_err(|e| internal(e.to_string()))?;
            if below.is_none_or(|below| line.sequence < below) && wanted(&line.event_type) {
                found = Some(line);
                break;
            }
        }
        let Some(line) = found else {
            return Ok(None);
        };
        let events = crate::log::reader::at_sequence(self.ledger.stream(), line.stream_sequence)
            .await
            .map_err(internal)?
            .unwrap_or_default();
        for event in events {
            let envelope = proto::Envelope::decode(event.payload.as_ref())
                .map_err(|e| ServiceError::Append(AppendError::Undecodable(e.to_string())))?;
            if envelope.sequence == line.sequence && envelope.partition == partition {
                return Ok(Some(envelope));
            }
        }
        Ok(None)
    }

    /// Records a member's death. The household's personal data are sealed again
    /// without the deceased ([`PersonalData::after_death`]); the deceased's data stay
    /// only in older, sealed events. When the deceased was the only member with a citizen
    /// id (the head, leaving young children), no one can head the record: the death is
    /// recorded without sealed data or citizens, and the household keeps its previous
    /// record until its members are recorded again with a guardian (the book accepts that
    /// only then, `registry::decide`).
    pub async fn record_death(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
        deceased_citizen_id: &str,
        died_on: NaiveDate,
    ) -> Result<Receipt, ServiceError> {
        access::authorize(
            req.caller,
            Operation::RecordDeath,
            household.commune().as_str(),
        )?;
        self.not_in_future(died_on)?;
        // A retry is answered before the data are opened: the household may since have
        // been erased, and the death is recorded all the same.
        if let Some(receipt) = self.already(req, household).await? {
            return Ok(receipt);
        }
        let citizen = self
            .vault
            .blind_index(CitizenId::parse(deceased_citizen_id)?.as_str());
        let (latest, data) = match self.sealed_and_opened(household).await {
            Ok(opened) => opened,
            // Erased since a first attempt that landed through another process?
            Err(e) => return self.unless_recorded(req, household, Err(e)).await,
        };
        let (citizens, sealed) = match data.after_death(deceased_citizen_id) {
            Some(remaining) => (
                self.indexes(&remaining)?,
                self.vault
                    .seal_again(household.as_str(), &remaining, &latest)
                    .await?,
            ),
            // The head died and no one left has a citizen id. The death is recorded all
            // the same (it stops the deceased's allowance) rather than refused for want of
            // a head: nothing is sealed again and no citizen remains.
            None => (Vec::new(), Vec::new()),
        };
        let change = Change::MemberDied {
            household: household.clone(),
            citizen,
            members: 0, // decided by the book
            citizens,
            sealed,
            on: died_on,
        };
        self.submit(req, partition_of(household), Command::Registry(change))
            .await
    }

    /// Moves a household to a new id in another commune, possibly in another
    /// partition: the move-out is appended first and the move-in copies it. The two
    /// halves are separate appends (partitions are separate chains); each is
    /// idempotent under keys derived from `req.idempotency_key`, so a retry after a
    /// failure between them completes the move without doubling either half.
    pub async fn move_household(
        &self,
        req: &Request<'_>,
        from: &HouseholdId,
        to: &HouseholdId,
        area: Area,
        on: NaiveDate,
    ) -> Result<(Receipt, Receipt), ServiceError> {
        access::authorize(
            req.caller,
            Operation::MoveHousehold,
            from.commune().as_str(),
        )?;
        self.not_in_future(on)?;
        let out_key = format!("{}/out", req.idempotency_key);
        let in_key = format!("{}/in", req.idempotency_key);
        let in_req = Request {
            idempotency_key: &in_key,
            ..*req
        };
        // A client's key may itself end in "/in": a write under it in the destination is
        // not this move's arrival. Found before the move-out is appended, it refuses the
        // move; taken for the arrival, it would leave the household active nowhere.
        let arrived = match self.ledger.already_appended(&partition_of(to), &in_key)? {
            Some(receipt) => Some(self.arrival(&in_req, receipt, from, to).await?),
            None => None,
        };
        let opened = match self
            .ledger
            .already_appended(&partition_of(from), &out_key)?
        {
            None => Some(self.check_move_in(from, to).await?),
            Some(_) => None,
        };
        let out = self
            .submit(
                &Request {
                    idempotency_key: &out_key,
                    ..*req
                },
                partition_of(from),
                Command::MoveOut {
                    household: from.clone(),
                    to: to.clone(),
                    on,
                },
            )
            .await?;
        let event = self.ledger.event_of(&out).await?;
        let Some(Payload::HouseholdMovedOut(moved)) = &event.payload else {
            return Err(ServiceError::Rejected(Rejection::UnsupportedCommand {
                what: format!("idempotency key {out_key} names another kind of event"),
            }));
        };
        if moved.to_household_id != to.as_str() {
            return Err(ServiceError::Rejected(Rejection::UnsupportedCommand {
                what: format!("household already moved to {}", moved.to_household_id),
            }));
        }
        // Found before the move-out: a retry whose two halves had landed. (Two copies
        // racing both reach the arrival's submit, which answers the second with the
        // first's receipt.)
        if let Some(arrived) = arrived {
            return Ok((out, arrived));
        }
        // The personal data move under the new id, sealed under the key of the old id's
        // latest blob: one key still covers all of these people's data, so an erasure
        // under the new id leaves nothing readable under the old one. (A blob of the
        // format before pooled keys is sealed under a key of the new id's own.)
        let (latest, data) = match opened {
            Some(opened) => opened,
            None => self.sealed_and_opened(from).await?,
        };
        let citizens: Vec<BlindIndex> = moved
            .citizen_indexes
            .iter()
            .map(|b| <BlindIndex>::try_from(b.as_ref()).expect("the ledger wrote 32-byte indexes"))
            .collect();
        let change = Change::MovedIn {
            household: to.clone(),
            from: from.clone(),
            area,
            members: moved.members,
            citizens: citizens.clone(),
            sealed: self.vault.seal_again(to.as_str(), &data, &latest).await?,
            on,
        };
        let arrived = self
            .submit_claiming(
                &in_req,
                to,
                Some(from),
                &citizens,
                Command::MoveIn(Box::new(book::Arrival {
                    change,
                    from_partition: out.partition.clone(),
                    from_sequence: out.sequence,
                    from_hash: out.hash.0,
                    standing: moved.standing.clone(),
                    paid_before_move: moved.paid_before_move.clone(),
                })),
            )
            .await?;
        Ok((out, arrived))
    }

    /// The receipt of a move's arrival found under its key, if the event it names is the
    /// arrival of `to` from `from` made by the same request; else the key is another
    /// write's (`KeyReused`).
    async fn arrival(
        &self,
        req: &Request<'_>,
        receipt: Receipt,
        from: &HouseholdId,
        to: &HouseholdId,
    ) -> Result<Receipt, ServiceError> {
        let receipt = self.same_request(req, receipt).await?;
        match self.ledger.event_of(&receipt).await?.payload {
            Some(Payload::HouseholdMovedIn(m))
                if m.household_id == to.as_str() && m.from_household_id == from.as_str() =>
            {
                Ok(receipt)
            }
            _ => Err(ServiceError::KeyReused {
                key: req.idempotency_key.to_owned(),
            }),
        }
    }

    /// What would refuse a move's second half, checked before its first is appended: the
    /// move-out cannot be taken back, so a move-in refused after it (a destination id
    /// already registered, personal data that can no longer be opened) would leave the
    /// household active nowhere. The destination is read from the projections caught up
    /// to the end of the stream; a registration of that id landing between this check and
    /// the move-in is the one case left, and it needs two offices to pick one new id at
    /// once.
    /// Returns the old id's latest sealed data and the data in clear, which the move-in
    /// seals again under the new id.
    async fn check_move_in(
        &self,
        from: &HouseholdId,
        to: &HouseholdId,
    ) -> Result<(Vec<u8>, PersonalData), ServiceError> {
        // Catches the projections up first, for the destination's lookup too.
        let opened = self.sealed_and_opened(from).await?;
        let registered = self
            .projector
            .household(to.as_str())
            .map_err(|e| AppendError::Nats(e.to_string()))?;
        // The destination made by this household's own arrival is a move that landed
        // through a process whose log index had not caught up with it: a retry, whose
        // halves the writers answer with their first receipts once they fold the
        // partitions (a move under another key is refused there, the household being
        // gone already).
        let arrived_from_here = registered
            .as_ref()
            .is_some_and(|v| v.moved_from.as_deref() == Some(from.as_str()));
        if (registered.is_some() && !arrived_from_here) || to == from {
            return Err(ServiceError::Rejected(Rejection::HouseholdExists {
                household: to.to_string(),
            }));
        }
        Ok(opened)
    }

    /// Destroys the household's data key after recording the erasure, then frees its
    /// citizens. The order matters: the event first, so an erasure is never unrecorded;
    /// the key next, so a failure of the claims leaves no readable data behind; a failure
    /// after the event is retried by calling again (the event is idempotent, the erase
    /// and the release too).
    pub async fn erase_personal_data(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
        on: NaiveDate,
        reference: &str,
        now_unix_ms: i64,
    ) -> Result<Receipt, ServiceError> {
        access::authorize(
            req.caller,
            Operation::ErasePersonalData,
            household.commune().as_str(),
        )?;
        self.not_in_future(on)?;
        let change = Change::Erased {
            household: household.clone(),
            on,
            reference: reference.to_owned(),
        };
        // An erasure already recorded (a retry under another key, as the CLI makes one
        // per call) still finishes what a failure after its event left undone: the key
        // destroyed and the citizens freed. Both are idempotent; the caller then hears
        // that the household was already erased.
        let recorded = match self
            .submit(req, partition_of(household), Command::Registry(change))
            .await
        {
            Ok(receipt) => Ok(receipt),
            Err(e @ ServiceError::Rejected(Rejection::AlreadyErased { .. })) => Err(e),
            Err(e) => return Err(e),
        };
        // The key first: its destruction is what the erasure is for, and the claims below
        // are the step most likely to fail (a contended or stalled shard), which would
        // otherwise leave the key alive until someone retried. The key the household's
        // blobs are sealed under is read after the event: read before it, a registration
        // landing in between would leave the key it sealed under unread, and kept. The
        // erasure event does not move the projection's latest blob, so a retry finds the
        // same key.
        let latest = self.latest_sealed_if_any(household).await?;
        self.vault
            .erase_sealed(household.as_str(), latest.as_deref(), now_unix_ms)
            .await?;
        // The households it was before a move: their data went into this one's, under
        // the same pooled key, except data sealed before keys were pooled, which has a
        // key of its own per household id and would stay readable there.
        let moved_from = |id: &str| -> Result<Option<String>, ServiceError> {
            Ok(self
                .projector
                .household(id)
                .map_err(|e| AppendError::Nats(e.to_string()))?
                .and_then(|v| v.moved_from))
        };
        let mut at = household.to_string();
        for _ in 0..MOVES_FOLLOWED_MAX {
            let Some(before) = moved_from(&at)? else {
                break;
            };
            self.vault.erase(&before, now_unix_ms).await?;
            at = before;
        }
        // The citizens to free, read from the log once the erasure is durable: those of
        // the household's last event recording its members. Read before the event, a
        // member change landing in between would leave the citizen it added held by the
        // erased household for ever; after it, the book gives the household no citizen
        // more. A retry reads the same, after destroying the key again (idempotent).
        let citizens = self
            .newest_in_trail(
                household,
                partition_of(household).as_str(),
                None,
                records_members,
            )
            .await?
            .and_then(|event| citizens_recorded(&event.payload))
            .unwrap_or_default();
        self.claims()
            .await?
            .release(household.as_str(), &citizens)
            .await?;
        recorded
    }

    /// Gives back the claims `taken` for `household` by a command the book refused,
    /// but those its recorded data hold: a concurrent request for the same household
    /// (another key, another process) may have landed first relying on them, since a
    /// claim already held by the household is not `taken` again by it. Claims a move-in
    /// took `from` the household moving go back to it, not to nobody: its move-out has
    /// landed, they are its family's, and its retry of the move takes them again (freed,
    /// anyone could register them elsewhere first and the family could never arrive).
    async fn give_back(
        &self,
        claims: &Claims,
        household: &HouseholdId,
        from: Option<&HouseholdId>,
        taken: &[BlindIndex],
    ) -> Result<(), ServiceError> {
        if taken.is_empty() {
            return Ok(());
        }
        let held = self.held_by_events(household).await?;
        let back: Vec<BlindIndex> = taken
            .iter()
            .filter(|c| !held.contains(c))
            .copied()
            .collect();
        match from {
            // All to `from`, also any the move-in found free: its move-out names them.
            Some(from) => {
                claims
                    .transfer(household.as_str(), from.as_str(), &back)
                    .await?;
            }
            None => claims.release(household.as_str(), &back).await?,
        }
        Ok(())
    }

    /// The citizens `household`'s recorded events give it, read from the log: those of
    /// its newest event recording its members, none once it is erased or moved out (read
    /// from its data instead, the data of a household whose erasure is recorded, its key
    /// not destroyed yet, would keep them).
    async fn held_by_events(
        &self,
        household: &HouseholdId,
    ) -> Result<Vec<BlindIndex>, ServiceError> {
        Ok(self
            .newest_in_trail(household, partition_of(household).as_str(), None, |t| {
                records_members(t) || t == ERASED || t == MOVED_OUT
            })
            .await?
            .and_then(|event| citizens_recorded(&event.payload))
            .unwrap_or_default())
    }

    /// Frees the claim `household` holds on `citizen` when none of the household's
    /// recorded events hold them (`held_by_events`, as a give-back reads it): a claim left
    /// by an attempt that appended nothing and could not give it back (a crash between
    /// its claim and its submit, a give-back that kept failing), which would keep the
    /// citizen from being registered anywhere. The operator's (`ansinh admin
    /// release-claim`), not a staff route. Refused, freeing nothing, when another
    /// household or none holds the claim, or when the household's events hold the
    /// citizen. Run it once that household's commands in flight are over: a command
    /// that relies on the claim and lands after the check would record a citizen whose
    /// claim is free.
    pub async fn release_left_over_claim(
        &self,
        citizen: &CitizenId,
        household: &HouseholdId,
    ) -> Result<(), ReleaseClaimError> {
        let claims = self.claims().await?;
        let index = self.vault.blind_index(citizen.as_str());
        let holder = claims.holder(&index).await.map_err(ServiceError::from)?;
        if holder.as_deref() != Some(household.as_str()) {
            return Err(ReleaseClaimError::NotHeld {
                household: household.to_string(),
                holder,
            });
        }
        if self.held_by_events(household).await?.contains(&index) {
            return Err(ReleaseClaimError::Recorded {
                household: household.to_string(),
            });
        }
        claims
            .release(household.as_str(), &[index])
            .await
            .map_err(ServiceError::from)?;
        tracing::info!(household = %household, "freed a left-over citizen claim");
        Ok(())
    }

    /// The household's personal data in clear, from its latest sealed record.
    pub async fn personal(&self, household: &HouseholdId) -> Result<PersonalData, ServiceError> {
        Ok(self.sealed_and_opened(household).await?.1)
    }

    /// The household's latest sealed record, and its data in clear.
    async fn sealed_and_opened(
        &self,
        household: &HouseholdId,
    ) -> Result<(Vec<u8>, PersonalData), ServiceError> {
        let sealed = self.latest_sealed(household).await?;
        let data = self.vault.open_sealed(household.as_str(), &sealed).await?;
        Ok((sealed, data))
    }

    /// Catches the projections up with the end of the stream, for a lookup a command
    /// needs to see every event before it.
    async fn caught_up(&self) -> Result<(), ServiceError> {
        let mut stream = self.ledger.stream().clone();
        self.projector
            .catch_up(&mut stream, self.ledger.config())
            .await
            .map(|_| ())
            .map_err(|e| ServiceError::Append(AppendError::Nats(e.to_string())))
    }

    /// Like `latest_sealed`, and None for a household the ledger does not know (the book
    /// refuses the command then). Any other failure is an error: taken for "no data", it
    /// would seal a household's new data under a second key, or record an erasure that
    /// destroys no key and frees no citizen.
    async fn latest_sealed_if_any(
        &self,
        household: &HouseholdId,
    ) -> Result<Option<Vec<u8>>, ServiceError> {
        match self.latest_sealed(household).await {
            Ok(sealed) => Ok(Some(sealed)),
            Err(ServiceError::Rejected(Rejection::HouseholdNotRegistered { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The latest sealed personal data of a household, located by the projection and
    /// read from the log (the projection stores where, never the data).
    async fn latest_sealed(&self, household: &HouseholdId) -> Result<Vec<u8>, ServiceError> {
        let not_registered = || {
            ServiceError::Rejected(Rejection::HouseholdNotRegistered {
                household: household.to_string(),
            })
        };
        self.caught_up().await?;
        let at = self
            .projector
            .sealed_at(household.as_str())
            .map_err(|e| AppendError::Nats(e.to_string()))?
            .ok_or_else(not_registered)?;
        // The projection names an event the stream must hold: its absence, or another
        // kind of event there, is damage to report, never "no data".
        let damaged = |what: String| {
            AppendError::Undecodable(format!(
                "household {household}'s personal data at stream sequence {} (event {} of its message): {what}",
                at.stream_sequence, at.index
            ))
        };
        let raw = crate::log::reader::event_at(self.ledger.stream(), at)
            .await
            .map_err(AppendError::Nats)?
            .ok_or_else(|| damaged("no such message".into()))?;
        let envelope = proto::Envelope::decode(raw.payload.as_ref())
            .map_err(|e| AppendError::Undecodable(e.to_string()))?;
        let sealed = match &envelope.payload {
            Some(Payload::HouseholdRegistered(p)) => &p.sealed_personal,
            Some(Payload::HouseholdMembersChanged(p)) => &p.sealed_personal,
            Some(Payload::MemberDied(p)) => &p.sealed_personal,
            Some(Payload::HouseholdMovedIn(p)) => &p.sealed_personal,
            _ => return Err(damaged("not an event that seals personal data".into()).into()),
        };
        Ok(sealed.to_vec())
    }

    /// Records a review's decision; with `corrects` (the partition sequence of the
    /// household's latest decision, recorded by mistake), its correction.
    pub async fn classify(
        &self,
        req: &Request<'_>,
        household: &HouseholdId,
        inputs: ClassificationInputs,
        decided_on: NaiveDate,
        corrects: Option<u64>,
    ) -> Result<Receipt, ServiceError> {
        access::authorize(
            req.caller,
            Operation::Classify,
            household.commune().as_str(),
        )?;
        self.not_in_future(decided_on)?;
        self.submit(
            req,
            partition_of(household),
            Command::Classify {
                household: household.clone(),
                inputs,
                decided_on,
                corrects,
            },
        )
        .await
    }

    /// A loan command. `loan` names the loan for every action but `Approve`
    /// ("<partition>-L<number>"); the book checks that its household lies inside the
    /// caller's unit, since only the book knows a loan's household for certain.
    pub async fn loan(
        &self,
        req: &Request<'_>,
        loan: Option<&crate::input::LoanRef>,
        action: LoanAction,
        effective: NaiveDate,
        reason: &str,
    ) -> Result<Receipt, ServiceError> {
        let op = action.operation();
        let (partition, number): (Partition, Option<LoanId>) = match (&action, loan) {
            (LoanAction::Approve { household, .. }, _) => {
                access::authorize(req.caller, op, household.commune().as_str())?;
                (partition_of(household), None)
            }
            (_, Some(r)) => {
                // Role here; the unit is checked against the loan's household by the book.
                // A unit that cannot hold any household of the loan's partition is refused
                // here, before the book says whether the loan exists or its household
                // still lives there: those are the partition's to know.
                access::authorize_role(req.caller, op)?;
                if !access::overlaps(&req.caller.unit, r.partition.as_str()) {
                    return Err(AccessError::OutsideUnit {
                        caller: req.caller.id.clone(),
                        unit: req.caller.unit.clone(),
                        commune: r.partition.to_string(),
                    }
                    .into());
                }
                (r.partition.clone(), Some(r.number))
            }
            (_, None) => {
                return Err(ServiceError::Rejected(Rejection::UnsupportedCommand {
                    what: "this action needs a loan reference".into(),
                }));
            }
        };
        self.not_in_future(effective)?;
        let loan = number.unwrap_or_default();
        let kind = match action {
            LoanAction::Approve {
                household,
                programme,
                amount,
                term_months,
                savings_group,
                entrusted,
            } => CommandKind::Approve {
                household,
                programme,
                amount,
                term_months,
                savings_group,
                entrusted,
            },
            LoanAction::Disburse { amount, channel } => CommandKind::Disburse {
                loan,
                amount,
                channel,
            },
            LoanAction::Repay { amount } => CommandKind::Repay { loan, amount },
            LoanAction::AccrueInterest => CommandKind::AccrueInterest { loan },
            LoanAction::MarkOverdue => CommandKind::MarkOverdue { loan },
            LoanAction::Extend { new_due } => CommandKind::Extend { loan, new_due },
            LoanAction::Freeze { disaster_ref } => CommandKind::Freeze { loan, disaster_ref },
            LoanAction::WriteOff { disaster_ref } => CommandKind::WriteOff { loan, disaster_ref },
            LoanAction::CancelApproval => CommandKind::CancelApproval { loan },
            LoanAction::Unfreeze { new_due } => CommandKind::Unfreeze { loan, new_due },
            LoanAction::Reverse { sequence } => CommandKind::Reverse {
                loan,
                // The entrances bound it (`input::SEQUENCE_MAX`); this holds for any caller.
                event: codec::checked_main_id(sequence).ok_or(ServiceError::Rejected(
                    Rejection::UnknownEvent { event: sequence },
                ))?,
            },
        };
        self.submit(
            req,
            partition,
            Command::Loan {
                kind,
                effective,
                reason: reason.to_owned(),
                unit: req.caller.unit.clone(),
            },
        )
        .await
    }

    /// Runs `loan`'s overdue move as of `as_of` to its end. Each command moves one
    /// instalment's arrears as from the day after it fell due, so a job that ran late
    /// repeats it until nothing more moves (`loans::CommandKind::MarkOverdue`). The first
    /// command takes the request's key and the n-th `"{key} {n}"`, so a rerun of the job
    /// finds each step done. Returns each step that recorded something, with the amount
    /// it moved (None for the closing accrual); `NothingToRecord` when the first
    /// recorded nothing.
    pub async fn mark_overdue(
        &self,
        req: &Request<'_>,
        loan: &crate::input::LoanRef,
        as_of: NaiveDate,
        reason: &str,
    ) -> Result<Vec<(Receipt, Option<rust_decimal::Decimal>)>, ServiceError> {
        let mut steps = Vec::new();
        for n in 0..OVERDUE_STEPS_MAX {
            let key = if n == 0 {
                req.idempotency_key.to_owned()
            } else {
                format!("{} {n}", req.idempotency_key)
            };
            let step = Request {
                idempotency_key: &key,
                ..*req
            };
            let receipt = match self
                .loan(&step, Some(loan), LoanAction::MarkOverdue, as_of, reason)
                .await
            {
                Ok(receipt) => receipt,
                Err(ServiceError::Rejected(Rejection::NothingToRecord)) if n > 0 => break,
                Err(e) => return Err(e),
            };
            let moved = match self.ledger.event_of(&receipt).await?.payload {
                Some(Payload::LoanMovedToOverdue(m)) => {
                    Some(crate::input::money(&m.amount).map_err(|e| {
                        ServiceError::Append(AppendError::Undecodable(e.to_string()))
                    })?)
                }
                _ => None,
            };
            steps.push((receipt, moved));
            if moved.is_none() {
                break;
            }
        }
        Ok(steps)
    }

    /// An officer's payments command (budgets, entitlements, runs, timeouts,
    /// reissues) for `partition`. Budget allocations need a branch manager; the rest a
    /// credit officer or a branch manager; a commune named by the command must lie in
    /// the caller's unit.
    pub async fn payment(
        &self,
        req: &Request<'_>,
        partition: &Partition,
        kind: crate::domain::payments::CommandKind,
        effective: NaiveDate,
    ) -> Result<Receipt, ServiceError> {
        use crate::domain::payments::CommandKind as K;
        let (op, commune) = match &kind {
            K::Allocate { budget, .. } | K::Deallocate { budget, .. } => {
                (Operation::AllocateBudget, Some(budget.commune.to_string()))
            }
            K::Grant { commune, .. } => (Operation::ManagePayments, Some(commune.to_string())),
            K::Run { commune, .. } => (
                Operation::ManagePayments,
                commune.as_ref().map(|c| c.to_string()),
            ),
            K::Change { .. } | K::Stop { .. } | K::TimeOut { .. } | K::Reissue { .. } => {
                (Operation::ManagePayments, None)
            }
            K::Post(_) => {
                return Err(ServiceError::Rejected(Rejection::UnsupportedCommand {
                    what: "gateway results come through gateway_post".into(),
                }));
            }
        };
        match commune {
            Some(c) => access::authorize(req.caller, op, &c)?,
            None => partition_wide(req.caller, op, partition)?,
        }
        if let K::Run { .. } | K::Reissue { .. } = &kind {
            self.may_issue_on(effective)?;
        }
        let mut kind = kind;
        if let K::Grant {
            beneficiary,
            citizen,
            ..
        } = &mut kind
        {
            // A retry is answered before the data are opened, as for a death: the
            // household may since have changed, and the grant stands as recorded.
            if let Some(receipt) = self.already_in(req, partition).await? {
                return Ok(receipt);
            }
            *citizen = self.beneficiary_citizen(beneficiary).await?;
        }
        self.submit(
            req,
            partition.clone(),
            Command::Payment {
                kind,
                effective,
                signed: None,
                outside_replay_window: None,
                used_elsewhere: None,
            },
        )
        .await
    }

    /// Who a grant's beneficiary is: the blind index of the citizen id of the member its
    /// reference names in the household's latest sealed data (`m1` the head, then the
    /// members in their order), so that their death, recorded by citizen, stops the
    /// payments even after the positions have shifted. None for a member without a
    /// citizen id (a young child: a death cannot name them, and an officer stops their
    /// entitlement), and for a reference that names no one (the book refuses it).
    async fn beneficiary_citizen(
        &self,
        beneficiary: &crate::domain::payments::ids::BeneficiaryRef,
    ) -> Result<Option<BlindIndex>, ServiceError> {
        use crate::domain::payments::ids::member_number;
        let household = HouseholdId::parse(beneficiary.household.as_str())?;
        let Some(n) = member_number(&beneficiary.member) else {
            return Ok(None);
        };
        let (_, data) = self.sealed_and_opened(&household).await?;
        let id = match n {
            1 => Some(data.head_citizen_id.as_str()),
            n => data
                .members
                .get(n as usize - 2)
                .and_then(|m| m.citizen_id.as_deref()),
        };
        id.map(|id| Ok(self.vault.blind_index(CitizenId::parse(id)?.as_str())))
            .transpose()
    }

    /// A gateway's result, already authenticated by its transport (NATS user or HTTP
    /// signature check) and signature-verified over `signed.bytes`. The same post again
    /// (same content, whenever it comes) returns the first answer and appends nothing;
    /// a new post must be dated within `POST_REPLAY_WINDOW_MS` of `now_unix_ms`, so a
    /// captured post cannot be replayed as a new one. A new post is refused too when
    /// `used_elsewhere` names the instruction of another partition whose post with the
    /// same transaction id and outcome was accepted (ADR 0018).
    #[allow(clippy::too_many_arguments)]
    pub async fn gateway_post(
        &self,
        partition: &Partition,
        post: crate::domain::payments::instructions::GatewayPost,
        signed: book::payments::SignedPost,
        posted_at_unix_ms: i64,
        now_unix_ms: i64,
        received_on: NaiveDate,
        used_elsewhere: Option<String>,
    ) -> Result<(Receipt, proto::PaymentRecorded), ServiceError> {
        let content = serde_json::to_vec(&post).expect("posts serialize");
        let key = format!("post:{}", &blake3::hash(&content).to_hex()[..48]);
        // Past the window, the book refuses the post, after the writer has answered a key
        // already in the log: a copy of a recorded post gets its first answer from any
        // process, however late.
        let skew_ms = now_unix_ms.saturating_sub(posted_at_unix_ms).abs();
        let outside_replay_window = (skew_ms > POST_REPLAY_WINDOW_MS).then_some(skew_ms);
        let receipt = self
            .ledger
            .submit(Submission {
                partition: partition.clone(),
                actor: proto::Actor {
                    id: post.gateway.to_string(),
                    role: book::payments::GATEWAY_ROLE.into(),
                    unit: String::new(),
                },
                idempotency_key: key,
                correlation_id: format!("gateway:{}", post.gateway),
                request_fingerprint: None,
                command: Command::Payment {
                    kind: crate::domain::payments::CommandKind::Post(post),
                    effective: received_on,
                    signed: Some(signed),
                    outside_replay_window,
                    used_elsewhere,
                },
            })
            .await?;
        let event = self.ledger.event_of(&receipt).await?;
        match event.payload {
            Some(Payload::PaymentRecorded(p)) => Ok((receipt, p)),
            _ => Err(ServiceError::Rejected(Rejection::UnsupportedCommand {
                what: "the post's idempotency key names another kind of event".into(),
            })),
        }
    }
}

/// Without a commune in the command, the caller's unit must cover the whole partition
/// (a provincial branch).
fn partition_wide(
    caller: &Caller,
    op: Operation,
    partition: &Partition,
) -> Result<(), AccessError> {
    access::authorize_role(caller, op)?;
    if !access::within(&caller.unit, partition.as_str()) {
        return Err(AccessError::OutsideUnit {
            caller: caller.id.clone(),
            unit: caller.unit.clone(),
            commune: partition.to_string(),
        });
    }
    Ok(())
}

/// What one commune's payment run of a month did (`Service::run_commune`).
// One a commune, answered once and moved into its line: boxing the larger variant would
// save nothing worth an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommuneRun {
    /// Its instructions were issued (or, `duplicate`, had been under this key).
    Paid {
        issued: u64,
        amount: Decimal,
        /// Budgets that could not cover their part: nothing was issued on them.
        shortfalls: Vec<crate::domain::payments::instructions::Shortfall>,
        /// Entitlements left unpaid, by why, for an officer to stop.
        left_unpaid: crate::domain::payments::instructions::LeftUnpaid,
        /// The day the run was recorded on (that of its first recording, for a run found
        /// under its key).
        on: NaiveDate,
        receipt: Receipt,
    },
    /// Every active entitlement already had its instruction for the month.
    NothingLeft,
    /// No budget covered the run: nothing was issued, nothing appended.
    Unfunded {
        shortfalls: Vec<crate::domain::payments::instructions::Shortfall>,
    },
}

/// Most times one commune of a partition's run is dated again for a later payment
/// operation of the partition (`Service::run_commune_of_partition_run`). The date moves
/// only forward, to a day no later than today, so one retry is the rule; more are another
/// day's operations landing in between.
pub const COMMUNE_REDATES_MAX: u32 = 3;

impl Service {
    /// One commune of a partition's run (a province's run job, `ansinh payments run`
    /// without `--commune`), dated `on`: `run_commune`, with the date the commune was
    /// decided on. Each commune is one command dated on its own, and the partition's runs,
    /// reissues and timeouts stay in date order (`PaymentOperationBackDated`), so one dated
    /// later that lands between two communes would leave every commune after it refused,
    /// and a run over many communes could never be completed under its date, not even by
    /// running it again. Once the run `went_past_a_commune` (its date was in order when it
    /// started, and the rest of it belongs to that run), a commune refused for such an
    /// operation is dated that operation's day instead, which is never after today: the
    /// dates stay in order, no instruction counts as older than it is, and what the run
    /// pays is unchanged (one instruction per entitlement and month, each commune's budget
    /// all or none). A run whose first commune is already back-dated is refused as a single
    /// commune's run is: its date was wrong when it was asked for.
    pub async fn run_commune_of_partition_run(
        &self,
        req: &Request<'_>,
        partition: &Partition,
        period: crate::domain::payments::month::Month,
        commune: crate::domain::payments::ids::CommuneId,
        on: NaiveDate,
        went_past_a_commune: bool,
    ) -> Result<(CommuneRun, NaiveDate), ServiceError> {
        use crate::domain::payments::Rejection as Pay;
        let mut on = on;
        let mut redates = 0;
        loop {
            match self
                .run_commune(req, partition, period, commune.clone(), on)
                .await
            {
                Err(ServiceError::Rejected(Rejection::Payment(
                    Pay::PaymentOperationBackDated { latest, .. },
                ))) if went_past_a_commune && latest > on && redates < COMMUNE_REDATES_MAX => {
                    redates += 1;
                    on = latest;
                }
                ran => return ran.map(|run| (run, on)),
            }
        }
    }

    /// One commune's payment run of `period`, all or none, as `payments run` and the
    /// partition's run job do it commune by commune: `NothingLeft` and `Unfunded` are
    /// answers, not errors, so a run over many communes goes on past them.
    pub async fn run_commune(
        &self,
        req: &Request<'_>,
        partition: &Partition,
        period: crate::domain::payments::month::Month,
        commune: crate::domain::payments::ids::CommuneId,
        on: NaiveDate,
    ) -> Result<CommuneRun, ServiceError> {
        use crate::domain::payments::{self as pay, CommandKind as K, EventBody};
        let kind = K::Run {
            period,
            commune: Some(commune),
        };
        let receipt = match self.payment(req, partition, kind, on).await {
            Ok(receipt) => receipt,
            Err(ServiceError::Rejected(Rejection::NothingToRecord)) => {
                return Ok(CommuneRun::NothingLeft);
            }
            Err(ServiceError::Rejected(Rejection::Payment(pay::Rejection::RunUnfunded {
                shortfalls,
            }))) => return Ok(CommuneRun::Unfunded { shortfalls }),
            Err(e) => return Err(e),
        };
        let event = self.ledger.event_of(&receipt).await?;
        let recorded = match &event.payload {
            Some(Payload::PaymentRecorded(p)) => {
                book::payments::event_of(0, event.actor.as_ref(), p).ok()
            }
            _ => None,
        };
        match recorded.map(|e| (e.effective, e.body)) {
            Some((
                recorded_on,
                EventBody::PaymentRunCompleted {
                    issued,
                    amount,
                    shortfalls,
                    left_unpaid,
                    ..
                },
            )) => Ok(CommuneRun::Paid {
                issued,
                amount,
                shortfalls,
                left_unpaid,
                on: recorded_on,
                receipt,
            }),
            _ => Err(ServiceError::Rejected(Rejection::UnsupportedCommand {
                what: "the run's idempotency key names another kind of event".into(),
            })),
        }
    }
}

/// What one `Service::time_out_due` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimedOut {
    /// Instructions this call timed out (their holds went back to the budget).
    pub timed_out: Vec<crate::domain::payments::instructions::InstructionId>,
    /// More instructions were due than the call's limit: another call goes on. Not a
    /// count, which would cost a read of every one due, however many.
    pub more_left: bool,
}

impl Service {
    /// Whether `caller` may time out `partition`'s instructions: a branch's payments
    /// staff, for the whole partition. `time_out_due` asks it; an edge that binds its
    /// request's key before calling `time_out_due` asks it first, so a caller without the
    /// right binds nothing and is never answered from what the key kept.
    pub fn may_time_out(caller: &Caller, partition: &Partition) -> Result<(), AccessError> {
        partition_wide(caller, Operation::ManagePayments, partition)
    }

    /// Whether `caller` may run `partition`'s payments of a month for every commune at
    /// once: the province's branch, as for timeouts. Asked before the first commune is
    /// paid; each commune's run checks its own commune again.
    pub fn may_run_partition(caller: &Caller, partition: &Partition) -> Result<(), AccessError> {
        partition_wide(caller, Operation::ManagePayments, partition)
    }

    /// `payments timeouts`: every instruction of `partition` still without a result
    /// past its channel's timeout on `as_of` is timed out, at most `limit` of them, one
    /// command each under the key `timeout:<instruction>`, so a rerun (or the CLI and the
    /// API both) times each out once. Which are due is read from the projections, caught
    /// up first (`Projector::due_for_timeout`, stopped at `limit` + 1 due, the one more
    /// saying whether more are left: O(the page and the instructions pending among them
    /// not yet due), not O(log) nor O(backlog)); the book decides each timeout again, so one the
    /// projections named that got its result meanwhile is passed over. A credit officer
    /// or branch manager whose unit covers the partition. `today` is the edge's (in
    /// Vietnam, by its clock): `as_of` may not be later, since a gateway may still be
    /// paying what is not yet due.
    pub async fn time_out_due(
        &self,
        caller: &Caller,
        correlation_id: &str,
        partition: &Partition,
        as_of: NaiveDate,
        today: NaiveDate,
        limit: usize,
    ) -> Result<TimedOut, ServiceError> {
        use crate::domain::payments::CommandKind as K;
        Self::may_time_out(caller, partition)?;
        if as_of > today {
            return Err(ServiceError::Rejected(Rejection::TimeoutsAsOfInFuture {
                as_of,
                today,
            }));
        }
        self.caught_up().await?;
        let due = self
            .projector
            .due_for_timeout(partition.as_str(), as_of, limit.saturating_add(1))
            .map_err(|e| ServiceError::Append(AppendError::Nats(e.to_string())))?;
        let mut done = TimedOut {
            more_left: due.len() > limit,
            ..TimedOut::default()
        };
        for instruction in due.into_iter().take(limit) {
            let key = format!("timeout:{instruction}");
            let req = Request {
                caller,
                idempotency_key: &key,
                correlation_id,
                fingerprint: None,
            };
            match self
                .payment(&req, partition, K::TimeOut { instruction }, as_of)
                .await
            {
                Ok(_) => done.timed_out.push(instruction),
                // `as_of` is before the partition's latest run, reissue or timeout: every
                // timeout of this call would be refused the same, and passing over them
                // would report a job that timed nothing out as done.
                Err(
                    e @ ServiceError::Rejected(Rejection::Payment(
                        crate::domain::payments::Rejection::PaymentOperationBackDated { .. },
                    )),
                ) => return Err(e),
                // Settled, failed or timed out in the meantime: nothing left to do there.
                Err(ServiceError::Rejected(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// How far a new gateway post's own timestamp may be from the ledger's clock.
pub const POST_REPLAY_WINDOW_MS: i64 = 5 * 60 * 1_000;

/// Moves followed back from an erased household to erase the data keys of the
/// households it was before (a household moves a few times in its life; the bound stops
/// a cycle that only a log not written by the ledger could hold).
pub const MOVES_FOLLOWED_MAX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::MemberNamed;
    use crate::personal::Member;

    fn member(name: &str, citizen_id: Option<&str>) -> Member {
        Member {
            name: name.into(),
            citizen_id: citizen_id.map(Into::into),
            relation: "con".into(),
        }
    }

    /// Given a household of a member with a citizen id and two without, each named
    /// "Lê Minh" or "Lê Hoa": when one leaves by id or by name, exactly that member
    /// goes; a name shared by two, or only borne by a member with an id, is refused.
    #[test]
    fn a_name_removes_one_member_without_a_citizen_id_and_never_more() {
        let household = HouseholdId::parse("0100007-000001").unwrap();
        let data = PersonalData {
            head_name: "Lê Văn Tám".into(),
            head_citizen_id: "001085012345".into(),
            phone: None,
            account_number: None,
            members: vec![
                member("Lê Minh", Some("001190000003")),
                member("Lê Minh", None),
                member("Lê Hoa", None),
                member("Lê Hoa", None),
            ],
        };
        let by_id = MemberNamed::CitizenId(CitizenId::parse("001190000003").unwrap());
        let left = without_members(&data, &household, &[by_id]).unwrap();
        assert_eq!(left.members, data.members[1..].to_vec());
        let nfd: String = unicode_normalization::UnicodeNormalization::nfd("Lê Minh").collect();
        let left = without_members(&data, &household, &[MemberNamed::Name(nfd)]).unwrap();
        assert_eq!(
            left.members,
            [&data.members[..1], &data.members[2..]].concat()
        );
        let refused = |leaving: &[MemberNamed]| {
            without_members(&data, &household, leaving)
                .unwrap_err()
                .kind()
        };
        assert_eq!(
            refused(&[MemberNamed::Name("Lê Hoa".into())]),
            "AmbiguousMember"
        );
        // The one without an id gone, the name is no one's: the other has an id.
        let minh = MemberNamed::Name("Lê Minh".into());
        assert_eq!(refused(&[minh.clone(), minh]), "NotAMember");
        assert_eq!(refused(&[MemberNamed::Name("Nobody".into())]), "NotAMember");
    }
}
