//! The ledger's side of the gateway boundary: what a verified gateway post becomes, and
//! where a gateway's instructions come from. Shared by both transports: the NATS server
//! (`gateway::server`, through the [`PostSink`] trait) and the HTTP routes
//! (`http::gateways`).
//!
//! - A post becomes `Service::gateway_post` in the partition its instruction names. The
//!   instruction ids gateways see are `<partition>/<instruction id>` (e.g.
//!   `01/pay:17:2026-12:1`), because entitlement numbers are per partition; beneficiary
//!   refs are `<household>/<member>`.
//! - A fetch lists the gateway's instructions still `Instructed` (no final result yet),
//!   read from the projections (`gpend/`), caught up from the stream before each answer:
//!   O(the instructions returned), and after a restart only the events since the
//!   projections' position are applied, not the whole log. A request waits for that
//!   catch-up at most `PROJECTIONS_WAIT_MAX`, then is told to come back.
//! - `with_books` (the demo's totals and reissues) folds the payments part of every
//!   partition's book from the log into memory: a report, O(log), built on first use.
//!
//! **Boundary:** no transport here (no NATS subjects, no HTTP); the transports have
//! already checked the gateway's signature before calling in.
//! **Invariant:** a post whose instruction names no partition with payments is refused
//! without being recorded, so a gateway cannot make the ledger open new partitions.

use std::collections::{BTreeMap, HashMap};

use tokio::sync::watch;

use crate::book::payments::{SignedPost, event_of};
use crate::chain::{ChainHead, Partition};
use crate::checkpoint::read::KeyRingAt;
use crate::domain::Rejection;
use crate::domain::payments::book::Book;
use crate::domain::payments::entitlements::ChannelKind;
use crate::domain::payments::ids::{
    BeneficiaryRef, GatewayId, GatewayTxnId, HouseholdRef, InstructionRef, MemberRef,
};
use crate::domain::payments::instructions::{GatewayPost, InstructionId, Outcome, PostRefusal};
use crate::domain::payments::{self, EventBody};
use crate::gateway::server::{
    FETCH_INSTRUCTIONS_MAX, KIND_LEDGER_UNAVAILABLE, PostSink, STATUS_ACCEPTED, STATUS_DUPLICATE,
    STATUS_ERROR, STATUS_REFUSED, failure_reply,
};
use crate::gateway::sign::parse_whole_vnd;
use crate::log::follow::{Follower, Keys, Step};
use crate::log::{LogConfig, Position, Receipt, reader};
use crate::proto::{self, GatewayReply, InstructionList, PaymentInstruction, envelope::Payload};
use crate::service::{Service, ServiceError};

/// Separates the partition from the instruction id in the ids gateways see.
pub const PARTITION_SEPARATOR: char = '/';

pub use crate::clock::{Clock, system_clock};

/// Why a post was not recorded, or a fetch not answered. `kind()` is the reply's
/// `error_kind`.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The instruction id is not `<partition>/<instruction id>` of a partition with
    /// payments: nothing recorded. The gateway must quote an id it was given.
    #[error("instruction {0:?} is not an instruction of this ledger")]
    UnknownInstruction(String),
    /// The ledger refused the post without recording it (outside the replay window, a
    /// malformed reference, the daily refusal bound): fix it; unchanged it is refused
    /// again.
    #[error("refused: {0}")]
    Rejected(Rejection),
    /// The ledger cannot append or read now: resend the post later, signed again. It may
    /// have been recorded all the same (an acknowledgement lost, or the event not read
    /// back): the copy is then answered `duplicate`, never recorded twice.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// The log does not verify where the fold reads it: an operator must look.
    #[error("the log does not verify: {0}")]
    Broken(String),
}

impl SinkError {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::UnknownInstruction(_) => "unknown_instruction",
            SinkError::Rejected(Rejection::PostOutsideReplayWindow { .. }) => {
                "outside_replay_window"
            }
            SinkError::Rejected(Rejection::TransactionIdUsedElsewhere { .. }) => {
                "transaction_id_used_elsewhere"
            }
            SinkError::Rejected(Rejection::Payment(payments::Rejection::RefusalLimitReached {
                ..
            })) => "refusal_limit_reached",
            SinkError::Rejected(_) => "rejected",
            SinkError::Unavailable(_) => KIND_LEDGER_UNAVAILABLE,
            SinkError::Broken(_) => "ledger_broken",
        }
    }

    /// The transport reply: "refused" when the post itself is wrong, "error" when the
    /// ledger had trouble (the post may or may not be recorded; a copy signed again
    /// passes later, recorded once).
    pub fn reply(&self) -> GatewayReply {
        let status = match self {
            SinkError::UnknownInstruction(_) | SinkError::Rejected(_) => STATUS_REFUSED,
            SinkError::Unavailable(_) | SinkError::Broken(_) => STATUS_ERROR,
        };
        failure_reply(status, self.kind(), self.to_string())
    }
}

impl From<ServiceError> for SinkError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Rejected(r) => SinkError::Rejected(r),
            other => SinkError::Unavailable(other.to_string()),
        }
    }
}

/// A post the ledger recorded (now or before).
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The event that recorded it; `receipt.duplicate` when it was recorded before.
    pub receipt: Receipt,
    /// Set when the ledger recorded the post as refused (another gateway's instruction,
    /// a wrong amount, ...): the first answer, given again to every copy.
    pub refusal: Option<PostRefusal>,
}

impl Recorded {
    pub fn reply(&self) -> GatewayReply {
        let (status, error_kind, message) = match &self.refusal {
            Some(r) => (
                STATUS_REFUSED,
                refusal_kind(r),
                format!("refused, and the refusal recorded: {r:?}"),
            ),
            None if self.receipt.duplicate => (STATUS_DUPLICATE, "", String::new()),
            None => (STATUS_ACCEPTED, "", String::new()),
        };
        GatewayReply {
            status: status.to_string(),
            partition: self.receipt.partition.clone(),
            sequence: self.receipt.sequence,
            hash: self.receipt.hash.to_hex(),
            error_kind: error_kind.to_string(),
            message,
        }
    }
}

/// The `error_kind` of a recorded refusal.
pub fn refusal_kind(r: &PostRefusal) -> &'static str {
    match r {
        PostRefusal::UnknownInstruction => "unknown_instruction",
        PostRefusal::NotYourInstruction => "not_your_instruction",
        PostRefusal::BeneficiaryMismatch => "beneficiary_mismatch",
        PostRefusal::AmountMismatch { .. } => "amount_mismatch",
        PostRefusal::SettledAfterReturned => "settled_after_returned",
        PostRefusal::AlreadySettled { .. } => "already_settled",
        PostRefusal::NotPending { .. } => "not_pending",
        PostRefusal::TransactionIdReused { .. } => "transaction_id_reused",
    }
}

/// The payments part of every partition's book, folded from the chain-checked stream.
struct PaymentsFold {
    /// The last event folded.
    position: Position,
    heads: HashMap<String, Follower>,
    books: BTreeMap<String, Book>,
    /// The ledger's key history, read on at each catch-up: it judges exclusions.
    history: Option<KeyRingAt>,
}

impl PaymentsFold {
    async fn catch_up(
        &mut self,
        stream: &async_nats::jetstream::stream::Stream,
        config: &LogConfig,
    ) -> Result<(), SinkError> {
        let end = reader::last_stream_sequence(&mut stream.clone())
            .await
            .map_err(SinkError::Unavailable)?;
        // Read after the end: it holds every key event stored before what is folded.
        let keys = Partition::new(crate::checkpoint::stream::KEYS_PARTITION)
            .expect("valid partition name");
        let at = self
            .history
            .take()
            .unwrap_or_else(|| KeyRingAt::genesis(keys));
        let at = crate::checkpoint::read::extend_key_ring(stream, config, at)
            .await
            .map_err(|e| SinkError::Unavailable(e.to_string()))?;
        self.history = Some(at);
        reader::read_after(stream, &config.wildcard(), self.position, end, |raw| {
            self.fold(config, &raw)
        })
        .await
        .map_err(|e| match e {
            reader::ReadError::Nats(m) => SinkError::Unavailable(m),
            reader::ReadError::Visit(v) => v,
        })?;
        Ok(())
    }

    fn fold(&mut self, config: &LogConfig, raw: &reader::RawEvent) -> Result<(), SinkError> {
        let Some(partition) = config.chain_of(&raw.subject) else {
            // A stray message: in no chain (`LogConfig::chain_of`).
            self.position = Position::after(raw);
            return Ok(());
        };
        let name = partition.as_str().to_owned();
        let follower = self
            .heads
            .entry(name.clone())
            .or_insert_with(|| Follower::new(ChainHead::genesis(partition)));
        let keys = self.history.as_ref().map_or(Keys::NotRead, KeyRingAt::keys);
        let step = follower.follow(raw, keys);
        self.position = Position::after(raw);
        let Step::Event { envelope, .. } = step else {
            return Ok(()); // held until the operator's exclusion
        };
        if let Some(Payload::PaymentRecorded(p)) = &envelope.payload {
            let book = self.books.entry(name).or_default();
            // Numbered over the readable ones, as the writer's book and reconciliation
            // number them; the writer never records an unreadable one.
            if let Ok(event) = event_of(book.last_event_id + 1, envelope.actor.as_ref(), p) {
                payments::apply(book, &event);
            }
        }
        Ok(())
    }
}

/// Longest a gateway request waits for the projections to hold the log as it was when
/// the request came; then it is answered "ledger unavailable, retry" (`ledger_unavailable`,
/// 503 over HTTP). A new process replays a province's log for minutes (docs/BENCH.md),
/// and one that fell behind catches up for as long as it lags: a gateway must not wait
/// through that with its request slot held. Under the gateway client's `REQUEST_TIMEOUT`
/// (5 s), so the gateway gets the typed answer rather than a timeout.
pub const PROJECTIONS_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(4);

/// How the last catch-up of the projections ended, as a reply says it.
#[derive(Clone, Debug)]
enum CatchUpFailure {
    Broken(String),
    Unavailable(String),
}

/// The sink's catch-ups of the projections, run one at a time by a task of their own
/// (`keep_catching_up`) on behalf of the requests, which wait for them at most
/// `PROJECTIONS_WAIT_MAX`. A request never catches up itself: the catch-up lock is one
/// per process and may be held for a whole replay, and a catch-up stopped halfway by a
/// request that gave up would throw away what it applied and did not commit.
struct CatchUps {
    /// Raised by each request: it is served by the first catch-up that begins after it,
    /// which reads the log's end after the request came.
    asked: watch::Sender<u64>,
    /// The number of the last catch-up finished (the `asked` it began at), and its end.
    done: watch::Receiver<(u64, Result<(), CatchUpFailure>)>,
}

impl CatchUps {
    fn start(service: Service) -> Self {
        let (asked, asked_by) = watch::channel(0);
        let (finished, done) = watch::channel((0, Ok(())));
        tokio::spawn(keep_catching_up(service, asked_by, finished));
        Self { asked, done }
    }
}

/// Catches the projections up whenever a request asked after the last catch-up began,
/// until the sink (the sender of `asked`) is gone. One catch-up serves every request that
/// asked before it began.
async fn keep_catching_up(
    service: Service,
    mut asked: watch::Receiver<u64>,
    done: watch::Sender<(u64, Result<(), CatchUpFailure>)>,
) {
    loop {
        let served = done.borrow().0;
        let round = match asked.wait_for(|a| *a > served).await {
            Ok(a) => *a,
            Err(_) => return,
        };
        let mut stream = service.ledger.stream().clone();
        let ended = service
            .projector
            .catch_up(&mut stream, service.ledger.config())
            .await
            .map(drop)
            .map_err(|e| match e {
                crate::projection::ProjectionError::Broken { .. } => {
                    CatchUpFailure::Broken(e.to_string())
                }
                other => CatchUpFailure::Unavailable(other.to_string()),
            });
        done.send_modify(|last| *last = (round, ended));
    }
}

/// The ledger-side sink for both gateway transports.
pub struct LedgerSink {
    service: Service,
    clock: Clock,
    /// One fold, caught up under the lock: concurrent fetches would otherwise each read
    /// the same new events.
    fold: tokio::sync::Mutex<PaymentsFold>,
    /// Started by the first request, in its runtime.
    catch_ups: std::sync::OnceLock<CatchUps>,
}

impl LedgerSink {
    pub fn new(service: Service, clock: Clock) -> Self {
        Self {
            service,
            clock,
            fold: tokio::sync::Mutex::new(PaymentsFold {
                position: Position::START,
                heads: HashMap::new(),
                books: BTreeMap::new(),
                history: None,
            }),
            catch_ups: std::sync::OnceLock::new(),
        }
    }

    /// The ledger's clock now, Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// Reads the payments books, caught up with the whole log.
    pub async fn with_books<R>(
        &self,
        read: impl FnOnce(&BTreeMap<String, Book>) -> R,
    ) -> Result<R, SinkError> {
        let mut fold = self.fold.lock().await;
        fold.catch_up(self.service.ledger.stream(), self.service.ledger.config())
            .await?;
        Ok(read(&fold.books))
    }

    /// The projections, caught up with the log as it was when this was called, or
    /// `Unavailable` if they do not get there within `PROJECTIONS_WAIT_MAX`.
    async fn projections(&self) -> Result<&crate::projection::Projector, SinkError> {
        let catch_ups = self
            .catch_ups
            .get_or_init(|| CatchUps::start(self.service.clone()));
        let mut ticket = 0;
        catch_ups.asked.send_modify(|asked| {
            *asked += 1;
            ticket = *asked;
        });
        let mut done = catch_ups.done.clone();
        let waited =
            tokio::time::timeout(PROJECTIONS_WAIT_MAX, done.wait_for(|(n, _)| *n >= ticket)).await;
        let ended = match waited {
            Ok(Ok(done)) => done.1.clone(),
            Ok(Err(_)) => Err(CatchUpFailure::Unavailable(
                "the projections' catch-up has stopped".into(),
            )),
            Err(_) => Err(CatchUpFailure::Unavailable(format!(
                "the projections have not caught up with the log within {} s; retry",
                PROJECTIONS_WAIT_MAX.as_secs()
            ))),
        };
        match ended {
            Ok(()) => Ok(&*self.service.projector),
            Err(CatchUpFailure::Broken(m)) => Err(SinkError::Broken(m)),
            Err(CatchUpFailure::Unavailable(m)) => Err(SinkError::Unavailable(m)),
        }
    }

    /// Up to `max` (capped at FETCH_INSTRUCTIONS_MAX) instructions routed to `gateway`
    /// and still waiting for a result, oldest partition and entitlement first.
    pub async fn pending(
        &self,
        gateway: &str,
        after: &str,
        max: u32,
    ) -> Result<Vec<PaymentInstruction>, SinkError> {
        let max = max.clamp(1, FETCH_INSTRUCTIONS_MAX) as usize;
        let after = match after {
            "" => None,
            id => Some(
                ledger_instruction_id(id)
                    .and_then(|(p, i)| Some((p, InstructionId::parse(i)?)))
                    .ok_or_else(|| SinkError::UnknownInstruction(id.to_owned()))?,
            ),
        };
        let lines = self
            .projections()
            .await?
            .gateway_pending(gateway, after.as_ref().map(|(p, i)| (p.as_str(), i)), max)
            .map_err(|e| SinkError::Unavailable(e.to_string()))?;
        Ok(lines
            .iter()
            .map(|(partition, line)| instruction_of(partition, line))
            .collect())
    }

    /// Records a post whose signature the transport verified, sent by `gateway` (the
    /// authenticated one, equal to `post.gateway_id`). `signed` is what the event keeps.
    pub async fn record(
        &self,
        gateway: &str,
        post: &proto::GatewayPost,
        signed: SignedPost,
    ) -> Result<Recorded, SinkError> {
        let (partition, domain_post) = domain_post(gateway, post)?;
        let unavailable =
            |e: crate::projection::ProjectionError| SinkError::Unavailable(e.to_string());
        let known = |p: &crate::projection::Projector| {
            p.has_payments(partition.as_str()).map_err(unavailable)
        };
        // Caught up to the log's end: every post accepted before this one is seen, in
        // any partition. A catch-up that fails (another partition's chain broken, the
        // server away) or does not end within `PROJECTIONS_WAIT_MAX` (a process behind
        // the log) does not stop posts to a partition already known: the book decides
        // them, and the transaction check below is then made on the view as it stands,
        // its gap left to `audit anomalies` as for a race.
        let projections = match self.projections().await {
            Ok(p) => p,
            Err(e) if known(&self.service.projector)? => {
                tracing::warn!(error = %e, "gateway post: projections not caught up; checked as they stand");
                &*self.service.projector
            }
            Err(e) => return Err(e),
        };
        if !known(projections)? {
            return Err(SinkError::UnknownInstruction(post.instruction_id.clone()));
        }
        // One transfer settles (or returns) one instruction. The book refuses a reused
        // transaction id within its partition; another partition's use is found here.
        // Two posts racing in two partitions can both pass: `audit anomalies` reports
        // them (ADR 0018).
        let used_elsewhere = projections
            .transaction_use(
                domain_post.gateway.as_str(),
                domain_post.outcome,
                domain_post.gateway_txn.as_str(),
            )
            .map_err(unavailable)?
            .filter(|used| used.partition != partition.as_str())
            .map(|used| {
                format!(
                    "{}{PARTITION_SEPARATOR}{}",
                    used.partition, used.instruction
                )
            });
        let now_ms = (self.clock)();
        let (receipt, event) = self
            .service
            .gateway_post(
                &partition,
                domain_post,
                signed,
                post.posted_at_unix_ms,
                now_ms,
                // Received on the day it is in Vietnam, as every business date.
                crate::clock::date_in_vietnam(now_ms),
                used_elsewhere,
            )
            .await?;
        Ok(Recorded {
            refusal: refusal_in(&receipt, &event),
            receipt,
        })
    }
}

/// The refusal a recorded post event carries, if it was refused.
fn refusal_in(receipt: &Receipt, event: &proto::PaymentRecorded) -> Option<PostRefusal> {
    let actor = proto::Actor {
        id: event.gateway_id.clone(),
        role: crate::book::payments::GATEWAY_ROLE.into(),
        unit: String::new(),
    };
    match event_of(receipt.sequence, Some(&actor), event).map(|e| e.body) {
        Ok(EventBody::GatewayPostRefused { refusal, .. }) => Some(refusal),
        _ => None,
    }
}

/// The instruction as a gateway sees it. Its `gateway_id` is the one it was issued to,
/// stored with the line, not the key prefix it was found under: the transports' check
/// that a fetched instruction is the requesting gateway's then also catches a line filed
/// under the wrong gateway's prefix.
fn instruction_of(partition: &str, line: &crate::views::GatewayPendingView) -> PaymentInstruction {
    let channel = match line.channel {
        ChannelKind::BankAccount => "bank",
        ChannelKind::MobileMoney => "mobile_money",
        ChannelKind::PostOffice => "post_office",
    };
    PaymentInstruction {
        instruction_id: format!("{partition}{PARTITION_SEPARATOR}{}", line.instruction),
        beneficiary_ref: line.beneficiary.clone(),
        // Whole đồng (the domain's rule), in the transport's one spelling.
        amount: line.amount.normalize().to_string(),
        channel: channel.to_string(),
        period: line.instruction.month.to_string(),
        commune: line.commune.clone(),
        gateway_id: line.gateway.clone(),
    }
}

/// The partition and the partition's own instruction id of an id the ledger gives out
/// (`<partition>/<instruction id>`).
fn ledger_instruction_id(id: &str) -> Option<(Partition, &str)> {
    let (partition, instruction) = id.split_once(PARTITION_SEPARATOR)?;
    Some((Partition::new(partition).ok()?, instruction))
}

/// The partition and the domain post of a transport post (shapes already checked by
/// the transport: `gateway::sign::check_post_shape`).
fn domain_post(
    gateway: &str,
    post: &proto::GatewayPost,
) -> Result<(Partition, GatewayPost), SinkError> {
    let (partition, instruction) = ledger_instruction_id(&post.instruction_id)
        .ok_or_else(|| SinkError::UnknownInstruction(post.instruction_id.clone()))?;
    let rejected = |r: payments::Rejection| SinkError::Rejected(Rejection::Payment(r));
    let (household, member) = post
        .beneficiary_ref
        .split_once('/')
        .ok_or(SinkError::Rejected(Rejection::Payment(
            payments::Rejection::RefMalformed {
                field: "beneficiary",
                max_chars: payments::ids::REF_CHARS_MAX,
            },
        )))?;
    let outcome = match post.outcome.as_str() {
        "settled" => Outcome::Settled,
        "failed" => Outcome::Failed,
        "returned" => Outcome::Returned,
        other => unreachable!("the transport checked the outcome, got {other:?}"),
    };
    let amount = parse_whole_vnd(&post.amount)
        .map_err(|what| SinkError::Rejected(Rejection::UnsupportedCommand { what }))?;
    Ok((
        partition,
        GatewayPost {
            gateway: GatewayId::parse(gateway).map_err(rejected)?,
            instruction: InstructionRef::parse(instruction).map_err(rejected)?,
            outcome,
            gateway_txn: GatewayTxnId::parse(&post.gateway_txn_id).map_err(rejected)?,
            amount,
            beneficiary: BeneficiaryRef {
                household: HouseholdRef::parse(household).map_err(rejected)?,
                member: MemberRef::parse(member).map_err(rejected)?,
            },
        },
    ))
}

impl PostSink for LedgerSink {
    async fn post(
        &self,
        gateway: &str,
        post: proto::GatewayPost,
        signed: proto::SignedGatewayPost,
    ) -> GatewayReply {
        let kept = SignedPost {
            bytes: signed.post.to_vec(),
            signature: signed.signature.to_vec(),
            key_id: signed.key_id,
            format: crate::book::payments::PostFormat::GatewayPostProto,
        };
        match self.record(gateway, &post, kept).await {
            Ok(recorded) => recorded.reply(),
            Err(e) => {
                if matches!(e, SinkError::Unavailable(_) | SinkError::Broken(_)) {
                    tracing::warn!(gateway, "recording a gateway post: {e}");
                }
                e.reply()
            }
        }
    }

    async fn fetch(
        &self,
        gateway: &str,
        max: u32,
        after: &str,
    ) -> Result<InstructionList, GatewayReply> {
        match self.pending(gateway, after, max).await {
            Ok(instructions) => Ok(InstructionList { instructions }),
            // Typed, never an empty list: that would read as "nothing to pay". A cursor
            // that is no instruction id is refused (the gateway fixes its request); the
            // ledger's trouble is an error (it comes back later).
            Err(e) => {
                if matches!(e, SinkError::Unavailable(_) | SinkError::Broken(_)) {
                    tracing::warn!(gateway, "listing a gateway's instructions: {e}");
                }
                Err(e.reply())
            }
        }
    }
}
