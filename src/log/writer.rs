//! The group-commit writer: one task per partition gathers pending appends into
//! atomic JetStream batches (one fsync each on a `sync_interval: always` server).
//!
//! Why group commit: with fsync-before-ack, one message per publish is bounded by the
//! disk (~4k/s measured); a batch of up to 1,000 costs one fsync (~100k/s). The wait
//! is bounded too: a pending append waits for at most the batch in flight plus its own.
//!
//! Group commit puts a batch's events into frames (frame.rs: the server's cost is per
//! message), as few as the bytes allow: usually one, which goes as one plain fenced
//! publish (~0.6 ms for 16 events, ~1.6 ms for 1,024) rather than an atomic batch
//! (~4.5 ms and more). Only a batch whose bytes exceed one frame becomes an atomic
//! batch of several frames.
//!
//! Why a task per partition: a chain is linear, so its appends must be ordered; the
//! task owns the partition's head and is the only one in this process that extends it.
//! Across processes the `Nats-Expected-Last-Subject-Sequence` fence decides: the loser
//! catches up from the log and re-checks its batch (idempotency keys included).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream::Stream};
use bytes::Bytes;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use super::envelope;
use super::frame::{self, FORMAT_FRAME, HEADER_FORMAT};
use super::reader::{self, EventAt, RawEvent};
use super::snapshot;
use super::store::{HeadRecord, INDEX_SYNC_INTERVAL, LedgerStore, StoreError};
use super::stream::{LogConfig, StreamError, ensure_stream};
use super::{HEADER_HASH, HEADER_SEQUENCE};
use crate::book::{self, PartitionBook};
use crate::chain::{self, ChainBreak, ChainHead, Digest, EVENT_BYTES_MAX, Partition};
use crate::domain::Rejection;
use crate::log::follow::{Follower, Holding, Step};
use crate::proto::{self, Envelope, envelope::Payload};
use crate::telemetry;

/// Most messages in one atomic batch: the server's own limit (1,001 is refused).
pub const BATCH_MESSAGES_MAX: usize = 1_000;
/// Most events the writer gathers into one commit; they fit one frame. A command
/// under saturating load waits for the commit in flight, so this bounds that wait too.
/// Measured with the ledger bench, 300k runs back to back with lone events past
/// the gate: 512 gave 188-194k appends/s and one command under saturating load p99
/// 10.2-11.3 ms; 384 gave 183k/s and 6.6 ms; 256 gave 155k/s (21x the raw durable rate,
/// at the edge of the 20x target) and 5.8 ms.
pub const BATCH_EVENTS_MAX: usize = 384;
const _: () = assert!(BATCH_EVENTS_MAX <= frame::FRAME_EVENTS_MAX);
/// Most events one command may yield: a payment run of the largest commune, one
/// instruction per entitlement plus its closing event. A command is committed all or
/// none, as one atomic batch of as many frames as it needs, so a command larger than
/// BATCH_EVENTS_MAX is a commit of its own.
pub const COMMAND_EVENTS_MAX: usize =
    crate::domain::payments::instructions::RUN_INSTRUCTIONS_MAX + 1;
/// Most encoded bytes in one commit of several commands gathered together: bounds a
/// partition writer's memory in ordinary work.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most encoded bytes of one command, committed alone (a run of 50,000 instructions is
/// ~25-30 MB). Half the server's incoming queue for one stream (128 MiB, past which an
/// atomic batch fails with 10167), since the frames are held twice while they are sent.
pub const COMMAND_BYTES_MAX: usize = 64 * 1024 * 1024;
const _: () = assert!(BATCH_BYTES_MAX <= COMMAND_BYTES_MAX);
// Every commit fits one atomic batch, checked at compile time: frames closed for their
// count, plus frames closed for their bytes (a frame closed for its bytes holds more than
// FRAME_BYTES_MAX - EVENT_BYTES_MAX), plus the last one (hence "<"). (A server whose
// `max_payload` is far below 1 MiB makes frames smaller than this assumes; `publish` then
// refuses a batch of too many messages rather than send it.)
const _: () = assert!(
    COMMAND_EVENTS_MAX.div_ceil(frame::FRAME_EVENTS_MAX)
        + COMMAND_BYTES_MAX.div_ceil(frame::FRAME_BYTES_MAX - EVENT_BYTES_MAX - 4)
        < BATCH_MESSAGES_MAX
);
/// Index commits one partition writer may leave running while it goes on. More than
/// one, so a commit that waits for the index's periodic fsync stays off the path of
/// the next appends; few, so the keys answered from memory stay few.
const RECORDS_IN_FLIGHT_MAX: usize = 4;
/// Pending appends queued per partition before callers wait (backpressure).
pub const QUEUE_APPENDS_MAX: usize = 8_192;
/// Attempts to commit one batch (lost races, timeouts) before its callers get an error.
pub const COMMIT_ATTEMPTS_MAX: u32 = 12;
/// After a lost fence the writer waits a random time below this times the attempt
/// number before it tries again (so at most 5 ms, 10 ms, ... 60 ms).
pub const FENCE_BACKOFF_STEP: std::time::Duration = std::time::Duration::from_millis(5);
/// Wait before reading the log again after a failed read, times the attempt number
/// (50, 100, ... 350 ms: 1.4 s in all, about a stream leader's election).
pub const READ_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);
/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// Events this process committed last that `Ledger::event_of` answers from memory.
/// Nearly every receipt is asked about right after its commit (the service and the HTTP
/// API return the event), and fetching it means fetching the frame that holds it, up to
/// 1 MiB for one event of a few hundred bytes. ~1.6 MB at ~400 B an event.
const RECENT_EVENTS_MAX: usize = 4_096;
/// Events recorded into the store per transaction while catching up.
const CATCH_UP_RECORD_EVENTS_MAX: usize = 10_000;

/// An event to append, before the ledger gives it a place in the chain.
#[derive(Clone, Debug)]
pub struct Draft {
    pub partition: Partition,
    pub actor: proto::Actor,
    pub idempotency_key: String,
    pub correlation_id: String,
    /// What the staff HTTP request that caused it asked, hashed (Envelope field 11).
    pub request_fingerprint: Option<Digest>,
    pub subjects: Vec<String>,
    pub payload: Payload,
}

/// A command to decide against a partition's book and, if it passes, append.
#[derive(Clone, Debug)]
pub struct Submission {
    pub partition: Partition,
    pub actor: proto::Actor,
    pub idempotency_key: String,
    pub correlation_id: String,
    /// Recorded in every event the command yields, so a later request under the same
    /// key can be told apart from a retry of this one (`Service::submit`).
    pub request_fingerprint: Option<Digest>,
    pub command: book::Command,
}

/// Where an appended event landed. `duplicate` is true when the idempotency key had
/// already been used: the receipt then names the original event and nothing was added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub partition: String,
    pub sequence: u64,
    pub hash: Digest,
    /// The stream sequence of the message holding the event.
    pub stream_sequence: u64,
    /// The event's index in that message (0 unless it holds a frame).
    pub index: u32,
    pub duplicate: bool,
}

impl Receipt {
    fn at(partition: &Partition, at: &HeadRecord, duplicate: bool) -> Self {
        Self {
            partition: partition.to_string(),
            sequence: at.sequence,
            hash: at.hash,
            stream_sequence: at.stream_sequence,
            index: at.index,
            duplicate,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Bad partition name: fix the request.
    #[error(transparent)]
    Partition(#[from] chain::PartitionError),
    /// Every append needs a key so that retries are safe: fix the request.
    #[error("idempotency key is missing")]
    MissingIdempotencyKey,
    /// Key too long, with control characters, or holding `#`, which names the keys of a
    /// command's earlier events (`K#1`, ...): fix the request.
    #[error(
        "idempotency key is longer than {IDEMPOTENCY_KEY_BYTES_MAX} bytes, has control characters, or holds '#'"
    )]
    InvalidIdempotencyKey,
    /// The encoded event would exceed EVENT_BYTES_MAX: fix the request.
    #[error("event of {bytes} bytes exceeds the limit of {EVENT_BYTES_MAX}")]
    Oversized { bytes: usize },
    /// The request bytes are not a protobuf envelope: fix the sender.
    #[error("undecodable request: {0}")]
    Undecodable(String),
    /// The request carries no payload this ledger knows: upgrade the ledger or fix the sender.
    #[error("request carries no known payload")]
    UnknownPayload,
    /// The payload records a decision (money, eligibility, registry): it must come as a
    /// command through `Ledger::submit`, which checks it against the book.
    #[error("payload {event_type} must be submitted as a command")]
    RequiresCommand { event_type: &'static str },
    /// The book refused the command; nothing was appended. Show the reason to the caller.
    #[error("refused: {0}")]
    Rejected(#[from] Rejection),
    /// The server no longer holds events it acknowledged. Appending to this partition
    /// stops until an operator decides (`ansinh admin accept-head`).
    #[error("partition {partition}: acknowledged data lost: {reason}")]
    LostAcknowledgedData { partition: String, reason: String },
    /// The stored chain is broken (e.g. a forged message): run `ansinh audit verify`;
    /// appending stops so nothing builds on a forgery.
    #[error("partition {partition}: chain broken at stream sequence {stream_sequence}: {cause}")]
    ChainBroken {
        partition: String,
        stream_sequence: u64,
        cause: ChainBreak,
    },
    /// The batch failed COMMIT_ATTEMPTS_MAX times (races or server errors); retry later
    /// with the same idempotency key.
    #[error("commit failed after {attempts} attempts: {last}")]
    CommitFailed { attempts: u32, last: String },
    /// The stream is missing or unsafe.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS could not be reached; retry with the same idempotency key.
    #[error("nats: {0}")]
    Nats(String),
    /// The ledger is shutting down.
    #[error("ledger is closed")]
    Closed,
}

/// A partition whose server-side log is behind or different from what it acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostData {
    pub partition: String,
    pub reason: String,
}

enum Work {
    Draft(Box<Draft>),
    Command(Box<Submission>),
}

struct Pending {
    work: Work,
    reply: oneshot::Sender<Result<Receipt, AppendError>>,
}

impl Pending {
    fn key(&self) -> &str {
        match &self.work {
            Work::Draft(d) => &d.idempotency_key,
            Work::Command(c) => &c.idempotency_key,
        }
    }
}

/// What an append or a submission answers.
pub type AppendResult = Result<Receipt, AppendError>;

/// What a partition writer's queue carries.
enum Queued {
    Append(Pending),
    /// Fold what other processes appended to the partition since the writer's head into
    /// its book and index, then answer (`Ledger::already_appended_caught_up`).
    CatchUp(oneshot::Sender<Result<(), AppendError>>),
}

/// A partition writer's queue and task.
type WriterTask = (mpsc::Sender<Queued>, tokio::task::JoinHandle<()>);

struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: Stream,
    config: LogConfig,
    store: LedgerStore,
    writers: Mutex<HashMap<Partition, WriterTask>>,
    /// One commit of several events of this process in flight on the stream at a time;
    /// tokio's mutex is fair, so partitions take turns in arrival order.
    gate: tokio::sync::Mutex<()>,
    /// Test hook (`Ledger::hold_publishes`): every commit takes it for reading before it
    /// publishes, uncontended unless a test holds it.
    publishes: tokio::sync::RwLock<()>,
    /// Commits waiting for a test's hold to end (`Ledger::commits_held`).
    commits_held: std::sync::atomic::AtomicUsize,
    /// The ledger's key history as far as read, read on before each catch-up: it judges
    /// the exclusions a catch-up meets and the operator's exclusion before it is
    /// appended (`log::follow`).
    history: tokio::sync::Mutex<Option<crate::checkpoint::read::KeyRingAt>>,
    /// Most payload bytes in one frame, within the server's `max_payload` and the
    /// stream's `max_msg_size`.
    frame_bytes_max: usize,
    recent: Mutex<RecentEvents>,
    /// Each partition's idempotency keys answered and not yet in the log index, a map a
    /// batch (`Recording::answered`): callers are answered before the index commit, so
    /// `Ledger::already_appended` reads these first. Without them a caller holding a
    /// receipt could look its own key up and miss it, and a move whose arrival key a
    /// client had just used for another write appended its move-out (the household then
    /// active nowhere).
    unrecorded: Mutex<HashMap<Partition, Vec<AnsweredKeys>>>,
    /// Partitions whose writer holds messages that break their chain (`log::follow`),
    /// with why. Appends to them are refused until the operator's exclusion, which no
    /// store table records (`admin accept-head` does not resume them), so the probes and
    /// the metrics read it here (`Ledger::stopped_partitions`) rather than wait for the
    /// periodic verify.
    holding: Mutex<BTreeMap<String, String>>,
    /// The index's syncer (`sync_index`) and what stops it; taken by `Ledger::close`.
    syncer: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

/// One batch's idempotency keys and where each event landed, as answered.
type AnsweredKeys = Arc<HashMap<String, HeadRecord>>;

/// The last RECENT_EVENTS_MAX events this process committed, by where they are stored:
/// the exact bytes the server acknowledged.
#[derive(Default)]
struct RecentEvents {
    order: VecDeque<EventAt>,
    bytes: HashMap<EventAt, Bytes>,
}

impl RecentEvents {
    fn insert(&mut self, at: EventAt, bytes: Bytes) {
        if self.bytes.insert(at, bytes).is_none() {
            self.order.push_back(at);
        }
        while self.order.len() > RECENT_EVENTS_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.bytes.remove(&oldest);
            }
        }
    }
}

/// The append side of the ledger. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
}

impl Ledger {
    /// Opens the log: creates or checks the stream, then compares every head this
    /// store remembers with the server. Partitions whose acknowledged events are gone
    /// are quarantined and returned; the others are ready.
    pub async fn open(
        client: async_nats::Client,
        config: LogConfig,
        store: LedgerStore,
    ) -> Result<(Self, Vec<LostData>), AppendError> {
        let js = jetstream::new(client.clone());
        let stream = ensure_stream(&js, &config).await?;
        let mut lost = Vec::new();
        for (partition, remembered) in store.heads()? {
            let subject = format!("{}.{}", config.subject_prefix, partition);
            if let Some(reason) = check_remembered(&stream, &subject, &remembered).await? {
                store.quarantine(&partition, &reason)?;
            }
            if let Some(reason) = store.quarantined(&partition)? {
                lost.push(LostData { partition, reason });
            }
        }
        let frame_bytes_max = frame::bytes_max_for(
            client.server_info().max_payload,
            stream.cached_info().config.max_message_size,
        );
        if frame_bytes_max < frame::FRAME_BYTES_MAX {
            tracing::info!(
                frame_bytes_max,
                "the server's max_payload or the stream's max_msg_size keeps frames small"
            );
        }
        let shared = Shared {
            client: client.clone(),
            js,
            stream,
            config,
            store,
            writers: Mutex::new(HashMap::new()),
            gate: tokio::sync::Mutex::new(()),
            publishes: tokio::sync::RwLock::new(()),
            commits_held: std::sync::atomic::AtomicUsize::new(0),
            history: tokio::sync::Mutex::new(None),
            frame_bytes_max,
            recent: Mutex::default(),
            unrecorded: Mutex::default(),
            holding: Mutex::default(),
            syncer: Mutex::default(),
        };
        let shared = Arc::new(shared);
        let (stop, stopped) = oneshot::channel();
        let syncer = tokio::spawn(sync_index(Arc::downgrade(&shared), stopped));
        *shared.syncer.lock().expect("syncer lock poisoned") = Some((stop, syncer));
        Ok((Self { shared }, lost))
    }

    pub fn store(&self) -> &LedgerStore {
        &self.shared.store
    }

    /// Every partition this process refuses appends to, with why, by partition: those
    /// the store holds stopped (lost acknowledged data, a chain verify found broken;
    /// until `admin accept-head`), and those whose writer holds a message that breaks the
    /// chain (until the operator's exclusion). A partition stopped both ways gives both
    /// reasons.
    pub fn stopped_partitions(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stopped: BTreeMap<String, String> =
            self.shared.store.quarantined_all()?.into_iter().collect();
        let holding = self.shared.holding.lock().expect("holding lock poisoned");
        for (partition, why) in holding.iter() {
            stopped
                .entry(partition.clone())
                .and_modify(|reason| {
                    reason.push_str("; ");
                    reason.push_str(why);
                })
                .or_insert_with(|| why.clone());
        }
        Ok(stopped.into_iter().collect())
    }

    pub fn stream(&self) -> &Stream {
        &self.shared.stream
    }

    /// The JetStream context the ledger appends with (for the citizen claims stream).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.shared.js
    }

    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// Appends one event that records no decision against the book (a `Note`, or a
    /// `LedgerKeyRotated`, which carries its own signature check), waiting until it is
    /// durable (acknowledged after fsync). Decisions go through `submit`.
    ///
    /// The draft is checked and boxed before the future is built, here and in `submit`: a
    /// `Draft` is ~1 KiB inline, and a future holding it is copied whenever it is spawned
    /// or moved (measured: the writer's copies of each draft were half its CPU per append).
    pub fn append(&self, draft: Draft) -> impl Future<Output = AppendResult> + Send + '_ {
        let work = if matches!(
            draft.payload,
            Payload::Note(_) | Payload::LedgerKeyRotated(_) | Payload::MessageExcluded(_)
        ) {
            draft_work(draft)
        } else {
            Err(AppendError::RequiresCommand {
                event_type: crate::events::type_name(&draft.payload),
            })
        };
        self.enqueue(work)
    }

    /// Appends any payload without deciding it against the book. Only for tools and
    /// tests that must write what `decide` never would (e.g. to prove that
    /// `audit recompute-eligibility` finds a wrong decision); never exposed to callers.
    #[doc(hidden)]
    pub fn append_unchecked(&self, draft: Draft) -> impl Future<Output = AppendResult> + Send + '_ {
        self.enqueue(draft_work(draft))
    }

    /// Decides a command against the partition's book in chain order and appends the
    /// event it yields, waiting until it is durable. A refused command appends nothing
    /// (`AppendError::Rejected`). The idempotency key makes retries safe: a key already
    /// used answers with the first event's receipt, whatever the command.
    pub fn submit(&self, submission: Submission) -> impl Future<Output = AppendResult> + Send + '_ {
        let work = validate_own_key(&submission.idempotency_key).map(|()| {
            (
                submission.partition.clone(),
                Work::Command(Box::new(submission)),
            )
        });
        self.enqueue(work)
    }

    async fn enqueue(&self, work: Result<(Partition, Work), AppendError>) -> AppendResult {
        let (partition, work) = work?;
        let sender = self.writer_for(&partition);
        let (reply, answer) = oneshot::channel();
        sender
            .send(Queued::Append(Pending { work, reply }))
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// Test hook: no commit of this process is published until the guard is dropped, as
    /// a stalled server would leave them; the commands wait in their writers.
    #[doc(hidden)]
    pub async fn hold_publishes(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.shared.publishes.write().await
    }

    /// Test hook: how many commits wait for `hold_publishes`'s guard to be dropped.
    #[doc(hidden)]
    pub fn commits_held(&self) -> usize {
        self.shared
            .commits_held
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Test hook: how many commands wait in `partition`'s writer queue, not yet taken
    /// into a batch (0 when the partition has no writer yet).
    #[doc(hidden)]
    pub fn queued(&self, partition: &Partition) -> usize {
        self.shared
            .writers
            .lock()
            .expect("writers lock")
            .get(partition)
            .map_or(0, |(queue, _)| queue.max_capacity() - queue.capacity())
    }

    /// The receipt of the event an idempotency key already names in this partition, if
    /// any (`duplicate: true`). For callers that must prepare a command with a side
    /// effect (sealing personal data) before submitting it: a retry whose first attempt
    /// landed is answered here, even if what it would prepare is no longer possible.
    pub fn already_appended(
        &self,
        partition: &Partition,
        key: &str,
    ) -> Result<Option<Receipt>, AppendError> {
        // The keys answered and not yet recorded first, then the index: a batch leaves
        // the first only once the index holds it, so one of the two has every key
        // answered.
        let answered = self
            .shared
            .unrecorded
            .lock()
            .expect("unrecorded keys lock")
            .get(partition)
            .and_then(|batches| batches.iter().rev().find_map(|b| b.get(key).copied()));
        let at = match answered {
            Some(at) => Some(at),
            None => self.shared.store.idempotent(partition.as_str(), key)?,
        };
        Ok(at.map(|at| Receipt::at(partition, &at, true)))
    }

    /// As `already_appended`, and when the key is not found, again after the partition's
    /// writer has folded what other processes appended since its head: this process's
    /// index learns their keys only when its writer folds their events, which it does
    /// when it commits to the partition. For a caller about to refuse a command on what
    /// its preparation found (a citizen held elsewhere, data erased): a retry whose first
    /// attempt landed through another process is then answered with its receipt. Costs a
    /// request to the stream, and a read of what the writer lacks, on that path only.
    pub async fn already_appended_caught_up(
        &self,
        partition: &Partition,
        key: &str,
    ) -> Result<Option<Receipt>, AppendError> {
        if let Some(receipt) = self.already_appended(partition, key)? {
            return Ok(Some(receipt));
        }
        let (reply, answer) = oneshot::channel();
        self.writer_for(partition)
            .send(Queued::CatchUp(reply))
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)??;
        self.already_appended(partition, key)
    }

    /// The event a receipt names, as stored.
    pub async fn event_of(&self, receipt: &Receipt) -> Result<Envelope, AppendError> {
        let at = EventAt {
            stream_sequence: receipt.stream_sequence,
            index: receipt.index,
        };
        let recent = self
            .shared
            .recent
            .lock()
            .expect("recent events lock")
            .bytes
            .get(&at)
            .cloned();
        let bytes = match recent {
            Some(bytes) => bytes,
            None => {
                reader::event_at(&self.shared.stream, at)
                    .await
                    .map_err(AppendError::Nats)?
                    .ok_or_else(|| AppendError::Nats("event of the receipt not found".into()))?
                    .payload
            }
        };
        Envelope::decode(bytes.as_ref()).map_err(|e| AppendError::Undecodable(e.to_string()))
    }

    /// Decodes a request envelope from the wire (NATS or a file): only the metadata
    /// fields and the payload are read; sequence and hashes are the ledger's to set.
    pub fn draft_from_wire(bytes: &[u8]) -> Result<Draft, AppendError> {
        if bytes.len() > EVENT_BYTES_MAX {
            return Err(AppendError::Oversized { bytes: bytes.len() });
        }
        let request =
            Envelope::decode(bytes).map_err(|e| AppendError::Undecodable(e.to_string()))?;
        let payload = request.payload.ok_or(AppendError::UnknownPayload)?;
        let draft = Draft {
            partition: Partition::new(&request.partition)?,
            actor: request.actor.unwrap_or_default(),
            idempotency_key: request.idempotency_key,
            correlation_id: request.correlation_id,
            // Only the ledger's HTTP edge vouches for a request's fingerprint.
            request_fingerprint: None,
            subjects: request.subjects,
            payload,
        };
        validate_own_key(&draft.idempotency_key)?;
        validate(&draft)?;
        Ok(draft)
    }

    fn writer_for(&self, partition: &Partition) -> mpsc::Sender<Queued> {
        // A std Mutex: the lock is never held across an await.
        let mut writers = self.shared.writers.lock().expect("writers lock poisoned");
        writers
            .entry(partition.clone())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE_APPENDS_MAX);
                let writer = PartitionWriter::new(self.shared.clone(), partition.clone());
                (tx, tokio::spawn(writer.run(rx)))
            })
            .0
            .clone()
    }

    /// Stops accepting appends; queued ones still commit. Waits for the writers to
    /// finish them and their index commits, then for the store flush.
    pub async fn close(self) -> Result<(), AppendError> {
        let writers: Vec<WriterTask> = self
            .shared
            .writers
            .lock()
            .expect("writers lock poisoned")
            .drain()
            .map(|(_, task)| task)
            .collect();
        for (queue, task) in writers {
            drop(queue); // the writer ends once appends in progress have sent theirs
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a partition writer failed");
            }
        }
        let syncer = self
            .shared
            .syncer
            .lock()
            .expect("syncer lock poisoned")
            .take();
        if let Some((stop, task)) = syncer {
            let _ = stop.send(());
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the index syncer failed");
            }
        }
        self.shared
            .client
            .flush()
            .await
            .map_err(|e| AppendError::Nats(e.to_string()))?;
        self.shared.store.flush()?;
        Ok(())
    }
}

/// Makes the index's commits durable `INDEX_SYNC_INTERVAL` after the last fsync when no
/// later commit does (`LedgerStore::record` fsyncs only a commit made once the interval
/// has passed): after a burst and then quiet, the last commits, with the remembered heads
/// that detect a server which lost acknowledged events, would otherwise wait for the next
/// append or the close. Ends when the ledger closes or is dropped.
async fn sync_index(shared: std::sync::Weak<Shared>, mut stop: oneshot::Receiver<()>) {
    loop {
        let Some(store) = shared.upgrade().map(|s| s.store.clone()) else {
            return;
        };
        // Nothing pending: look again an interval later (a commit made meanwhile is then
        // due at most an interval after it was made).
        let wait = store.sync_due_in().unwrap_or(INDEX_SYNC_INTERVAL);
        drop(store); // a ledger dropped meanwhile closes its index
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(wait) => {}
        }
        let Some(store) = shared.upgrade().map(|s| s.store.clone()) else {
            return;
        };
        if store.sync_due_in() != Some(std::time::Duration::ZERO) {
            continue;
        }
        let failed = match tokio::task::spawn_blocking(move || store.sync()).await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        // Still overdue: wait an interval before the next attempt, not a moment.
        tracing::warn!(error = %failed, "the log index did not sync; trying again");
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(INDEX_SYNC_INTERVAL) => {}
        }
    }
}

/// Compares a remembered head with the server's log; Some(reason) when data is lost.
async fn check_remembered(
    stream: &Stream,
    subject: &str,
    remembered: &HeadRecord,
) -> Result<Option<String>, AppendError> {
    let last = reader::last_on_subject(stream, subject)
        .await
        .map_err(AppendError::Nats)?;
    let Some(last) = last else {
        return Ok(Some(format!(
            "the ledger acknowledged sequence {} but the stream holds no event for this partition",
            remembered.sequence
        )));
    };
    if last.stream_sequence < remembered.stream_sequence {
        return Ok(Some(format!(
            "the stream ends at stream sequence {} but the ledger acknowledged up to {} (partition sequence {})",
            last.stream_sequence, remembered.stream_sequence, remembered.sequence
        )));
    }
    let at = reader::event_at(stream, remembered.at())
        .await
        .map_err(AppendError::Nats)?;
    match at {
        Some(event)
            if event.subject == subject
                && event.malformed.is_none()
                && event.hash == remembered.hash =>
        {
            Ok(None)
        }
        Some(_) => Ok(Some(format!(
            "the event at stream sequence {} (index {}) differs from the acknowledged one (hash {})",
            remembered.stream_sequence, remembered.index, remembered.hash
        ))),
        None => Ok(Some(format!(
            "the acknowledged event at stream sequence {} (index {}) is missing",
            remembered.stream_sequence, remembered.index
        ))),
    }
}

fn validate_key(key: &str) -> Result<(), AppendError> {
    if key.is_empty() {
        return Err(AppendError::MissingIdempotencyKey);
    }
    if key.len() > IDEMPOTENCY_KEY_BYTES_MAX || key.chars().any(char::is_control) {
        return Err(AppendError::InvalidIdempotencyKey);
    }
    Ok(())
}

/// A caller's own key: as `validate_key`, and without '#'. A command of several events
/// keys the earlier ones K#1, K#2, ...: any append's own key with '#' (a note's too)
/// could name one of another command's events.
fn validate_own_key(key: &str) -> Result<(), AppendError> {
    validate_key(key)?;
    if key.contains('#') {
        return Err(AppendError::InvalidIdempotencyKey);
    }
    Ok(())
}

/// What appending a checked draft takes: its partition and the boxed work.
fn draft_work(draft: Draft) -> Result<(Partition, Work), AppendError> {
    validate_own_key(&draft.idempotency_key)?;
    validate(&draft)?;
    Ok((draft.partition.clone(), Work::Draft(Box::new(draft))))
}

fn validate(draft: &Draft) -> Result<(), AppendError> {
    validate_key(&draft.idempotency_key)?;
    // Encode with the largest values the ledger will fill in, so the check is exact
    // enough that the writer never meets an oversized event.
    let bytes = envelope::encoded_len(draft, u64::MAX, i64::MAX);
    if bytes > EVENT_BYTES_MAX {
        return Err(AppendError::Oversized { bytes });
    }
    Ok(())
}

/// Encodes one event at its place in the chain. The bytes are what gets stored and
/// hashed; nothing re-encodes them later.
fn encode(draft: &Draft, sequence: u64, prev: &Digest, recorded_at_unix_ms: i64) -> Encoded {
    let bytes = Bytes::from(envelope::encode(draft, sequence, prev, recorded_at_unix_ms));
    assert!(
        bytes.len() <= EVENT_BYTES_MAX,
        "validate() bounds every draft"
    );
    Encoded {
        key: draft.idempotency_key.clone(),
        event_type: crate::events::type_name(&draft.payload),
        hash: chain::event_hash(&bytes),
        bytes,
        sequence,
    }
}

/// The head as the writer tracks it: the chain head plus its stream sequence (the fence).
struct WriterHead {
    chain: ChainHead,
    stream_sequence: u64,
}

struct PartitionWriter {
    shared: Arc<Shared>,
    partition: Partition,
    subject: String,
    /// None until loaded; reset to force a catch-up after any failed commit.
    head: Option<WriterHead>,
    caught_up: bool,
    /// The book decisions are made against, folded from the chain from its genesis.
    /// None forces a rebuild: after a failed commit it may hold decisions that never
    /// reached the log (a clone per batch would cost more than a rare replay).
    book: Option<PartitionBook>,
    /// Messages on the subject that broke the chain since its last good event
    /// (`log::follow`): while any is held, the only append taken is the operator's
    /// exclusion of them.
    held: Holding,
    /// Idempotency keys up to this stream sequence are already in the store.
    keys_recorded_through: u64,
    /// Index commits of acknowledged batches that may still be running, oldest first;
    /// at most RECORDS_IN_FLIGHT_MAX.
    recording: VecDeque<Recording>,
    /// After a failed index commit: re-record keys from this stream sequence on.
    rerecord_from: Option<u64>,
    /// Signalled when the newest index commit is done, with whether it succeeded: the
    /// next one waits for it, and writes nothing after a failed one.
    last_recorded: Option<oneshot::Receiver<bool>>,
    /// Partition sequence of the newest book snapshot taken or loaded (0 = none).
    snapshot_sequence: u64,
    /// When this writer last took one.
    snapshot_taken_at: Option<std::time::Instant>,
    /// The snapshot being written to disk, if any; at most one at a time.
    snapshotting: Option<tokio::task::JoinHandle<()>>,
}

/// An index commit that runs while the writer goes on with the next batches. One
/// partition's commits go in order (each waits for the one before), because a crash
/// keeps a prefix of the index's commits: a later head must never be kept without the
/// earlier keys. The writer waits for all of them before it reads the store's head or
/// writes keys any other way.
struct Recording {
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
    /// The batch's keys, answered from here (and from `Shared::unrecorded`, which holds
    /// the same map) until the index holds them; taken out when the commit has settled.
    answered: AnsweredKeys,
}

/// What `decide` let through for one batch, encoded.
struct Decided {
    accepted: Vec<Pending>,
    /// Commands the book refused, not yet answered: a refusal stands only once the book
    /// is known to hold the whole partition (`commit`).
    refused: Vec<(Pending, Rejection)>,
    /// The batch's events in chain order, with the idempotency key of each.
    encoded: Vec<Encoded>,
    /// For each event, the index in `accepted` of the append it belongs to.
    owners: Vec<usize>,
    /// Appends that did not fit this batch, in order.
    leftover: Vec<Pending>,
}

struct Encoded {
    key: String,
    /// For the metrics (`telemetry::committed`).
    event_type: &'static str,
    bytes: Bytes,
    hash: Digest,
    sequence: u64,
}

impl PartitionWriter {
    fn new(shared: Arc<Shared>, partition: Partition) -> Self {
        let subject = shared.config.subject(&partition);
        Self {
            shared,
            partition,
            subject,
            head: None,
            caught_up: false,
            book: None,
            held: Holding::default(),
            keys_recorded_through: 0,
            recording: VecDeque::new(),
            rerecord_from: None,
            last_recorded: None,
            snapshot_sequence: 0,
            snapshot_taken_at: None,
            snapshotting: None,
        }
    }

    async fn run(mut self, mut queue: mpsc::Receiver<Queued>) {
        while let Some(first) = queue.recv().await {
            let mut batch = Vec::with_capacity(BATCH_EVENTS_MAX);
            let mut catch_ups = Vec::new();
            let mut next = Some(first);
            // The catch-ups taken count towards the bound too, as they do in the queue.
            while let Some(queued) = next.take() {
                match queued {
                    Queued::Append(pending) => batch.push(pending),
                    Queued::CatchUp(reply) => catch_ups.push(reply),
                }
                if batch.len() + catch_ups.len() < BATCH_EVENTS_MAX {
                    next = queue.try_recv().ok();
                }
            }
            // A command may yield several events (a payment run); whatever did not fit
            // this batch's bounds goes first into the next one.
            let mut leftover = if batch.is_empty() {
                Vec::new()
            } else {
                self.commit(batch).await
            };
            while !leftover.is_empty() {
                leftover = self.commit(leftover).await;
            }
            if !catch_ups.is_empty() {
                let caught_up = self.catch_up_to_stream_end().await;
                for reply in catch_ups {
                    let _ = reply.send(caught_up.as_ref().map(|_| ()).map_err(clone_error));
                }
            }
            let due = self.book.as_ref().is_some_and(|b| {
                b.sequence >= self.snapshot_sequence + snapshot::SNAPSHOT_EVENTS_INTERVAL
            }) && self
                .snapshot_taken_at
                .is_none_or(|at| at.elapsed() >= snapshot::SNAPSHOT_TIME_INTERVAL_MIN);
            if due {
                self.take_snapshot().await;
            }
        }
        // The ledger is closing: the last batches' keys reach the index before it
        // closes, and the book is kept so the next start replays nothing.
        self.finish_recording(0).await;
        if self.rerecord_from.is_some() {
            // An index commit failed and a later one moved the store's head past its keys:
            // only this process knows. The fold that records them again runs now, before a
            // restart takes the store's head for "recorded through".
            if let Err(e) = self.ready().await {
                tracing::error!(partition = %self.partition, error = %e,
                    "closing with idempotency keys the index may lack; the log still holds them");
            }
            self.finish_recording(0).await;
        }
        if self
            .book
            .as_ref()
            .is_some_and(|b| b.sequence > self.snapshot_sequence)
        {
            self.take_snapshot().await;
        }
        if let Some(writing) = self.snapshotting.take() {
            let _ = writing.await;
        }
    }

    /// Saves the book as the partition's snapshot, at the head the index has recorded
    /// durably (so a start from it never skips a key); none while a message is held. The
    /// book is encoded here; the
    /// file is written beside the next commits. Best effort: a snapshot that fails is
    /// logged, and the next start folds a little more.
    async fn take_snapshot(&mut self) {
        if self.snapshotting.as_ref().is_some_and(|w| !w.is_finished()) {
            return; // the previous one is still being written
        }
        self.finish_recording(0).await;
        let store = self.shared.store.clone();
        let partition = self.partition.to_string();
        let (Some(book), true) = (self.book.as_ref(), self.caught_up) else {
            return; // a failed index commit dropped the book
        };
        if !self.held.is_empty() {
            // The head may stop inside the held message (a frame whose tail broke the
            // chain): a start from there would read on after that message, never hold
            // it, and build past it. The next start folds to it and holds it again.
            return;
        }
        let at = match store.flush().and_then(|()| store.head(&partition)) {
            Ok(Some(at)) if at.sequence == book.sequence => at,
            Ok(_) => return, // nothing recorded yet, or the index is elsewhere
            Err(e) => {
                tracing::warn!(partition, error = %e, "no book snapshot: the index did not flush");
                return;
            }
        };
        let started = std::time::Instant::now();
        let body = book::snapshot::encode(book);
        tracing::info!(
            partition,
            sequence = book.sequence,
            bytes = body.len(),
            encode_ms = started.elapsed().as_millis() as u64,
            "book snapshot taken"
        );
        self.snapshot_taken_at = Some(std::time::Instant::now());
        self.snapshot_sequence = book.sequence;
        self.snapshotting = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = snapshot::save(store.path(), &partition, &at, &body) {
                tracing::warn!(partition, error = %e, "book snapshot not saved");
            }
        }));
    }

    /// The book and head of the partition's snapshot, when it can be trusted: its
    /// position is on the chain the stream holds and the index has recorded every key
    /// up to it (`recorded_through`). An unusable snapshot is discarded.
    async fn load_snapshot(&self, recorded_through: u64) -> Option<(HeadRecord, PartitionBook)> {
        let dir = self.shared.store.path().to_path_buf();
        let partition = self.partition.to_string();
        let started = std::time::Instant::now();
        let loaded = {
            let (dir, partition) = (dir.clone(), partition.clone());
            tokio::task::spawn_blocking(move || snapshot::load(&dir, &partition)).await
        };
        let read_in = started.elapsed();
        let reason = match loaded {
            Ok(Ok(None)) => return None,
            Ok(Ok(Some((at, _)))) if at.stream_sequence > recorded_through => {
                // Taken after an index commit that a crash then lost: the keys between
                // are re-recorded by a fold from genesis.
                format!(
                    "it is at stream sequence {}, past the index's {recorded_through}",
                    at.stream_sequence
                )
            }
            Ok(Ok(Some((at, book)))) => {
                match snapshot::mismatch(&self.shared.stream, &self.subject, &at).await {
                    // The stream could not be read to check it: nothing against the
                    // snapshot, so it is kept for the next start; this one folds.
                    Err(reason) => {
                        tracing::warn!(
                            partition,
                            reason,
                            "book snapshot not checked; folding the chain from genesis, the snapshot kept"
                        );
                        return None;
                    }
                    Ok(None) => {
                        tracing::info!(
                            partition,
                            sequence = at.sequence,
                            read_ms = read_in.as_millis() as u64,
                            checked_ms = started.elapsed().as_millis() as u64,
                            "the book starts from its snapshot"
                        );
                        return Some((at, book));
                    }
                    Ok(Some(reason)) => reason,
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("its reading failed: {e}"),
        };
        tracing::warn!(
            partition,
            reason,
            "book snapshot discarded; folding the chain from genesis"
        );
        if let Err(e) = snapshot::discard(&dir, &partition) {
            tracing::warn!(partition, error = %e, "book snapshot not removed");
        }
        None
    }

    /// Waits for the oldest index commits until at most `keep` are in flight; with
    /// `keep` 0, for all of them. A failed one forces a fold of the chain from its
    /// genesis, which records its keys again (and every later one).
    async fn finish_recording(&mut self, keep: usize) {
        while self.recording.len() > keep {
            let recording = self.recording.pop_front().expect("longer than keep");
            let joined = recording.task.await;
            self.settle(joined, &recording.answered);
        }
    }

    /// Takes in the index commits that have finished, without waiting.
    async fn take_finished_recordings(&mut self) {
        while self.recording.front().is_some_and(|r| r.task.is_finished()) {
            let recording = self.recording.pop_front().expect("front exists");
            let joined = recording.task.await;
            self.settle(joined, &recording.answered);
        }
    }

    fn settle(
        &mut self,
        joined: Result<Result<(), StoreError>, tokio::task::JoinError>,
        answered: &AnsweredKeys,
    ) {
        // In the index now, or to be recorded again by the next catch-up (as before the
        // index held them at all).
        if let Some(batches) = self
            .shared
            .unrecorded
            .lock()
            .expect("unrecorded keys lock")
            .get_mut(&self.partition)
        {
            batches.retain(|b| !Arc::ptr_eq(b, answered));
        }
        let stored =
            joined.unwrap_or_else(|e| Err(StoreError::Index(format!("index task failed: {e}"))));
        if let Err(e) = stored {
            tracing::error!(partition = %self.partition, error = %e, "store write failed; will catch up");
            self.caught_up = false;
            self.book = None;
            // A later commit may have moved the store's head past these keys.
            let first = answered
                .values()
                .map(|at| at.stream_sequence)
                .min()
                .unwrap_or(1);
            self.rerecord_from = Some(self.rerecord_from.map_or(first, |f| f.min(first)));
        }
    }

    /// Commits one batch; returns the appends that did not fit (to commit next).
    async fn commit(&mut self, mut batch: Vec<Pending>) -> Vec<Pending> {
        let mut last_error = String::new();
        // The hashes of the events this batch published in attempts whose answer was
        // lost: found in the log on the next attempt, they are these callers' own first
        // writes, not repeats (HTTP's "created", a gateway's first status).
        let mut sent_unanswered: HashSet<[u8; 32]> = HashSet::new();
        for attempt in 0..COMMIT_ATTEMPTS_MAX {
            match self.ready().await {
                Ok(()) => {}
                // On a cluster a read may find no server to answer for a moment (a
                // stream leader being elected, a replica catching up): wait a little
                // and read again, within the batch's attempts.
                Err(AppendError::Nats(e)) if attempt + 1 < COMMIT_ATTEMPTS_MAX => {
                    tracing::warn!(partition = %self.partition, error = %e, "reading the log failed; retrying");
                    last_error = e;
                    self.caught_up = false;
                    tokio::time::sleep(READ_RETRY_BACKOFF * (attempt + 1)).await;
                    continue;
                }
                Err(e) => {
                    fail_all(batch, || clone_error(&e));
                    return Vec::new();
                }
            }
            batch = match self.answer_duplicates(batch, &sent_unanswered) {
                Ok(rest) => rest,
                Err((rest, e)) => {
                    fail_all(rest, || clone_error(&e));
                    return Vec::new();
                }
            };
            if batch.is_empty() {
                return Vec::new();
            }
            // An exclusion can only pass over a message the chain holds: one that names
            // a good event, or none, would hide history.
            if self.held.is_empty() && batch.iter().any(is_exclusion) {
                let (exclusions, rest): (Vec<_>, Vec<_>) =
                    batch.into_iter().partition(is_exclusion);
                let partition = self.partition.to_string();
                fail_all(exclusions, || {
                    AppendError::Rejected(Rejection::UnsupportedCommand {
                        what: format!(
                            "an exclusion, while no message breaks partition {partition}'s chain"
                        ),
                    })
                });
                batch = rest;
                if batch.is_empty() {
                    return Vec::new();
                }
            }
            // A message broke the chain: nothing is built past it but the operator's
            // exclusion of what is held (CHAIN.md, section 4a).
            if let Some(first) = self.held.first() {
                let (exclusion, rest): (Vec<_>, Vec<_>) =
                    batch.into_iter().partition(|p| excludes(p, &self.held));
                let (exclusions, rest): (Vec<_>, Vec<_>) = rest.into_iter().partition(is_exclusion);
                let partition = self.partition.to_string();
                fail_all(rest, || AppendError::ChainBroken {
                    partition: partition.clone(),
                    stream_sequence: first.stream_sequence,
                    cause: first.cause.clone(),
                });
                // An exclusion of other messages: say what is held, so the operator can
                // name it (one more message may have come since the command read them).
                let held = &self.held;
                fail_all(exclusions, || {
                    AppendError::Rejected(Rejection::UnsupportedCommand {
                        what: format!(
                            "an exclusion of other messages than the {} held on partition {partition}, \
                             from stream sequence {} through {}; name them all \
                             (--stream-sequence {} --through {})",
                            held.count(),
                            first.stream_sequence,
                            held.last_stream_sequence(),
                            first.stream_sequence,
                            held.last_stream_sequence()
                        ),
                    })
                });
                // Signed by the ledger's current key, as every reader will judge it
                // (`log::follow`): a forged one would be held with what it names.
                let exclusion = if exclusion.is_empty() {
                    exclusion
                } else {
                    match self.key_history().await {
                        Ok(history) => {
                            let (signed, forged): (Vec<_>, Vec<_>) = exclusion
                                .into_iter()
                                .partition(|p| signed_by_current_key(p, &partition, &history.ring));
                            fail_all(forged, || {
                                AppendError::Rejected(Rejection::UnsupportedCommand {
                                    what: format!(
                                        "an exclusion not signed by the ledger's current key on partition {partition}"
                                    ),
                                })
                            });
                            signed
                        }
                        Err(e) => {
                            fail_all(exclusion, || clone_error(&e));
                            return Vec::new();
                        }
                    }
                };
                // One decision: after it nothing is held, so a second one, under another
                // key, would be an exclusion of nothing. Repeats of its key are answered
                // by its receipt below.
                let Some(key) = exclusion.first().map(|p| p.key().to_owned()) else {
                    return Vec::new();
                };
                let (exclusion, others): (Vec<_>, Vec<_>) =
                    exclusion.into_iter().partition(|p| p.key() == key);
                fail_all(others, || {
                    AppendError::Rejected(Rejection::UnsupportedCommand {
                        what: "a second exclusion of the same messages, under another key".into(),
                    })
                });
                batch = exclusion;
            }
            // Two appends with one key in one batch: the first is written, the later
            // ones answered with its receipt.
            let mut seen = HashSet::new();
            let (unique, repeats): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|p| seen.insert(p.key().to_owned()));
            let Decided {
                accepted: unique,
                refused,
                encoded,
                owners,
                leftover,
            } = self.decide(unique);
            // Repeats of a key whose first append waits in the leftover wait with it. So
            // do those of a key whose first append was refused: that one appended nothing,
            // and a copy may differ in what the refusal read (a gateway's post re-signed
            // inside the replay window after a stale copy), so each is decided on its own.
            let waiting: HashSet<&str> = leftover
                .iter()
                .map(Pending::key)
                .chain(refused.iter().map(|(p, _)| p.key()))
                .collect();
            let (repeats, mut leftover_repeats): (Vec<_>, Vec<_>) = repeats
                .into_iter()
                .partition(|p| !waiting.contains(p.key()));
            let mut leftover = leftover;
            leftover.append(&mut leftover_repeats);
            if unique.is_empty() {
                // Nothing to publish, so no fence proves the book current: ask the
                // stream. Another process may have appended what these commands need
                // (the loan approved a moment ago); then catch up and decide again.
                if !refused.is_empty() {
                    let behind = match self.book_is_current().await {
                        Ok(true) => None,
                        Ok(false) => Some("the book was behind the stream".to_string()),
                        Err(e) => Some(e),
                    };
                    if let Some(reason) = behind {
                        last_error = reason;
                        self.caught_up = false;
                        batch = refused
                            .into_iter()
                            .map(|(p, _)| p)
                            .chain(repeats)
                            .chain(leftover)
                            .collect();
                        continue;
                    }
                }
                answer_refusals(refused);
                // Repeats of a command refused before the book decided it (too large, or
                // an event that does not validate): the same content fails the same way.
                fail_all(repeats, || {
                    AppendError::Rejected(Rejection::UnsupportedCommand {
                        what: "the first command with this idempotency key was refused".into(),
                    })
                });
                return leftover;
            }
            let sizes: Vec<usize> = encoded.iter().map(|e| e.bytes.len()).collect();
            let frames = frame::cut(&sizes, self.shared.frame_bytes_max);
            let started = std::time::Instant::now();
            match self.publish(&encoded, &frames).await {
                Ok(last_stream_sequence) => {
                    let excluded = match encoded_exclusion(&unique) {
                        Some(Payload::MessageExcluded(x)) => {
                            // The batch was the exclusion of what is held.
                            self.held.exclude(x);
                            self.report_held();
                            true
                        }
                        _ => false,
                    };
                    telemetry::committed(
                        self.partition.as_str(),
                        started.elapsed(),
                        encoded.iter().map(|e| e.event_type),
                    );
                    // The fence held: the book was current when it refused these.
                    answer_refusals(refused);
                    self.acknowledged(
                        unique,
                        &owners,
                        repeats,
                        &encoded,
                        &frames,
                        last_stream_sequence,
                    )
                    .await;
                    if excluded {
                        // It was judged by the key history read before publishing; every
                        // reader judges it by the history stored before it, which a
                        // rotation stored meanwhile (by any process) changes. Fold again
                        // to judge it as they do: held if they hold it, so nothing goes
                        // past it. Exclusions are rare; a refold costs little beside them.
                        self.book = None;
                        self.caught_up = false;
                    }
                    return leftover;
                }
                Err(e) => {
                    sent_unanswered.extend(encoded.iter().map(|e| e.hash.0));
                    telemetry::commit_retried(self.partition.as_str());
                    tracing::warn!(partition = %self.partition, error = %e, "batch not committed; catching up");
                    last_error = e;
                    self.caught_up = false;
                    // The book holds this batch's decisions: rebuild it from the log.
                    self.book = None;
                    // Another process's writer on this partition won the fence. Wait a
                    // random moment, growing with the attempts, so two or three writers
                    // do not keep colliding until the attempts run out.
                    tokio::time::sleep(fence_backoff(attempt)).await;
                    batch = unique
                        .into_iter()
                        .chain(refused.into_iter().map(|(p, _)| p))
                        .chain(repeats)
                        .chain(leftover)
                        .collect();
                }
            }
        }
        fail_all(batch, || AppendError::CommitFailed {
            attempts: COMMIT_ATTEMPTS_MAX,
            last: last_error.clone(),
        });
        Vec::new()
    }

    /// Folds every event the stream holds on the partition's subject into the book and
    /// records their keys, when the book is behind it (another process appended since):
    /// what a commit's fence would find out, for a caller that appends nothing.
    async fn catch_up_to_stream_end(&mut self) -> Result<(), AppendError> {
        self.ready().await?;
        if self.book_is_current().await.map_err(AppendError::Nats)? {
            return Ok(());
        }
        self.caught_up = false;
        self.ready().await
    }

    /// Whether the book holds every event the stream has on the partition's subject.
    async fn book_is_current(&self) -> Result<bool, String> {
        let last = reader::last_on_subject(&self.shared.stream, &self.subject).await?;
        let head = self.head.as_ref().map_or(0, |h| h.stream_sequence);
        // Short of the head is not current either: the catch-up that follows finds
        // acknowledged events gone and quarantines the partition.
        Ok(last.map_or(0, |last| last.stream_sequence) == head)
    }

    /// Loads the head and catches up with the log if needed.
    async fn ready(&mut self) -> Result<(), AppendError> {
        self.take_finished_recordings().await; // they may report a failure
        if self.book.is_none() || !self.caught_up {
            // Catch-up reads the store's head and writes keys: the commits in flight first.
            // One after a failed commit failed too (it writes nothing), and its keys are
            // among those the fold records again, so the next commit waits on none of them.
            self.finish_recording(0).await;
            if self.book.is_none() {
                self.last_recorded = None;
            }
        }
        let store = &self.shared.store;
        if let Some(reason) = store.quarantined(self.partition.as_str())? {
            return Err(AppendError::LostAcknowledgedData {
                partition: self.partition.to_string(),
                reason,
            });
        }
        if self.book.is_none() {
            // Fold the whole chain from its genesis; the store's head only says which
            // idempotency keys are already recorded.
            let remembered = store.head(self.partition.as_str())?;
            if let Some(remembered) = &remembered {
                // As at open (`Ledger::open`): a stream that no longer holds what this
                // ledger acknowledged would be folded, and continued, from what is left.
                if let Some(reason) =
                    check_remembered(&self.shared.stream, &self.subject, remembered).await?
                {
                    return Err(self.quarantine(reason));
                }
            }
            let stored = remembered.map_or(0, |h| h.stream_sequence);
            self.keys_recorded_through = match self.rerecord_from.take() {
                Some(from) => stored.min(from - 1),
                None => stored,
            };
            let (head, book) = match self.load_snapshot(self.keys_recorded_through).await {
                Some((at, book)) => (
                    WriterHead {
                        chain: ChainHead {
                            partition: self.partition.clone(),
                            sequence: at.sequence,
                            hash: at.hash,
                        },
                        stream_sequence: at.stream_sequence,
                    },
                    book,
                ),
                None => (
                    WriterHead {
                        chain: ChainHead::genesis(self.partition.clone()),
                        stream_sequence: 0,
                    },
                    PartitionBook::new(self.partition.as_str()),
                ),
            };
            self.snapshot_sequence = self.snapshot_sequence.max(book.sequence);
            self.head = Some(head);
            self.book = Some(book);
            self.held = Holding::default();
            self.caught_up = false;
        }
        // While a message is held nothing is appended, so no lost fence says that more
        // came: read on each time (the operator's exclusion names every message stored
        // on the subject, a forged exclusion included, and may come from another process).
        if !self.caught_up || !self.held.is_empty() {
            self.catch_up().await?;
            self.caught_up = true;
        }
        Ok(())
    }

    /// Says in `Shared::holding` whether this partition's chain is held, and logs when
    /// that changes. A writer that drops its state to fold again (a failed commit) does
    /// not report: the catch-up that follows reads the same messages and reports them.
    fn report_held(&self) {
        let partition = self.partition.as_str();
        let mut holding = self.shared.holding.lock().expect("holding lock poisoned");
        match self.held.first() {
            Some(first) => {
                let reason = format!(
                    "chain broken at stream sequence {}: {}; {} message(s) held, through stream \
                     sequence {}: appends wait for the operator's exclusion (admin exclude-message)",
                    first.stream_sequence,
                    first.cause,
                    self.held.count(),
                    self.held.last_stream_sequence()
                );
                if holding.insert(partition.to_owned(), reason).is_none() {
                    tracing::error!(
                        partition,
                        stream_sequence = first.stream_sequence,
                        cause = %first.cause,
                        "a message breaks the partition's chain: its appends are refused until the operator excludes it"
                    );
                }
            }
            None => {
                if holding.remove(partition).is_some() {
                    tracing::info!(partition, "the messages held are excluded: appends resume");
                }
            }
        }
    }

    /// Stops the partition for acknowledged events the stream no longer holds, until an
    /// operator decides (as `Ledger::open` does): the error to answer with.
    fn quarantine(&mut self, reason: String) -> AppendError {
        self.book = None;
        self.head = None;
        if let Err(e) = self
            .shared
            .store
            .quarantine(self.partition.as_str(), &reason)
        {
            return e.into();
        }
        AppendError::LostAcknowledgedData {
            partition: self.partition.to_string(),
            reason,
        }
    }

    /// The ledger's key history read to now, on from where the last call stopped.
    async fn key_history(&self) -> Result<crate::checkpoint::read::KeyRingAt, AppendError> {
        let mut kept = self.shared.history.lock().await;
        let keys = Partition::new(crate::checkpoint::stream::KEYS_PARTITION)
            .expect("valid partition name");
        let at = kept
            .take()
            .unwrap_or_else(|| crate::checkpoint::read::KeyRingAt::genesis(keys));
        let at =
            crate::checkpoint::read::extend_key_ring(&self.shared.stream, &self.shared.config, at)
                .await
                .map_err(|e| AppendError::Nats(format!("reading the key history: {e}")))?;
        *kept = Some(at.clone());
        Ok(at)
    }

    /// Reads every event after our head (written by another writer, or by us before a
    /// lost ack), checks the chain, and records heads and keys.
    async fn catch_up(&mut self) -> Result<(), AppendError> {
        let stream = &self.shared.stream;
        let last = reader::last_on_subject(stream, &self.subject)
            .await
            .map_err(AppendError::Nats)?;
        let history = if last.as_ref().map_or(0, |l| l.stream_sequence)
            > self.head.as_ref().map_or(0, |h| h.stream_sequence)
        {
            // Read after `last`: it holds every key event stored before what is read.
            Some(self.key_history().await?)
        } else {
            None
        };
        let head = self.head.as_mut().expect("head loaded before catch-up");
        let ends_at = last.as_ref().map_or(0, |l| l.stream_sequence);
        if ends_at < head.stream_sequence {
            // The stream lost what this writer had acknowledged (a failover that dropped
            // its tail, a restore): deciding on, or publishing fenced on the same stream
            // sequence reached again by another writer's events, would fork the chain.
            let reason = format!(
                "the stream's last message on the partition is at stream sequence {ends_at}, \
                 but the ledger acknowledged up to {} (partition sequence {})",
                head.stream_sequence, head.chain.sequence
            );
            return Err(self.quarantine(reason));
        }
        let Some(last) = last else { return Ok(()) };
        if last.stream_sequence <= head.stream_sequence {
            return Ok(());
        }
        // The key partition's rotations are judged against the key history up to the
        // head, as every reader of it judges them (`log::follow`): read again here, as
        // catching up on that partition is rare (another process rotated the key).
        let key_ring = if crate::log::follow::is_key_history(&head.chain) {
            let at = crate::checkpoint::read::key_ring_at(stream, &self.shared.config, &head.chain)
                .await
                .map_err(|e| AppendError::Nats(e.to_string()))?;
            if at.is_none() {
                tracing::warn!(
                    partition = %self.partition,
                    sequence = head.chain.sequence,
                    "the writer's head is not on the key partition's chain as readers follow it; \
                     every rotation after it is held"
                );
            }
            at
        } else {
            None
        };
        let store = &self.shared.store;
        let partition = self.partition.to_string();
        let book = self.book.as_mut().expect("book created before catch-up");
        let recorded_through = self.keys_recorded_through;
        let mut keys: Vec<(String, HeadRecord)> = Vec::new();
        let start = head.stream_sequence + 1;
        let mut follower = Follower::resume_with_keys(
            head.chain.clone(),
            std::mem::take(&mut self.held),
            key_ring,
        );
        // Whether the last event taken in closed its message: then the head, the book and
        // `keys` all stop at a message's end, and the keys can be recorded as they are.
        let mut whole = true;
        let judge = history
            .as_ref()
            .map_or(crate::log::follow::Keys::NotRead, |h| h.keys());
        let mut visit = |event: RawEvent| -> Result<(), AppendError> {
            let step = follower.follow(&event, judge);
            whole = event.last_in_message;
            // The fence is the subject's last message, held or not: the operator's
            // exclusion is published after the message it excludes.
            head.stream_sequence = event.stream_sequence;
            let Step::Event { envelope, .. } = step else {
                return Ok(());
            };
            head.chain = follower.head.clone();
            let at = HeadRecord {
                sequence: head.chain.sequence,
                hash: head.chain.hash,
                stream_sequence: event.stream_sequence,
                index: event.index,
            };
            book.apply(
                envelope.sequence,
                envelope.actor.as_ref(),
                envelope.payload.as_ref(),
            );
            if event.stream_sequence <= recorded_through {
                return Ok(());
            }
            keys.push((envelope.idempotency_key, at));
            // Only at a message's end: the store's head then always closes a message, so
            // `keys_recorded_through` (a stream sequence) never cuts a frame in two.
            if keys.len() >= CATCH_UP_RECORD_EVENTS_MAX && event.last_in_message {
                store.record(&partition, &at, keys.iter().map(|(k, at)| (k, at)))?;
                keys.clear();
            }
            Ok(())
        };
        let read = reader::read_range(
            stream,
            &self.subject,
            start,
            last.stream_sequence,
            &mut visit,
        )
        .await;
        // What is held stays held whatever ended the read; reported before any append
        // is refused for it, so whoever is refused finds the probes saying so.
        self.held = follower.held().clone();
        let reached = head.stream_sequence;
        self.report_held();
        if let Err(e) = read {
            // The events taken in moved the head and the book past keys not recorded yet;
            // the next catch-up starts after them, so they are recorded now, or never: a
            // retry of one of them would be decided again and appended twice. Stopped
            // inside a message, the book is dropped instead, and the next command folds
            // again from what the index and the snapshot hold.
            if whole {
                if let Some((_, at)) = keys.last() {
                    let recorded = store.record(&partition, at, keys.iter().map(|(k, at)| (k, at)));
                    if let Err(e) = recorded {
                        self.forget_past_unrecorded(&keys);
                        return Err(e.into());
                    }
                }
                self.keys_recorded_through = self.keys_recorded_through.max(reached);
            } else {
                self.book = None;
                self.head = None;
                self.held = Holding::default();
            }
            return Err(match e {
                reader::ReadError::Nats(m) => AppendError::Nats(m),
                reader::ReadError::Visit(e) => e,
            });
        }
        if let Some((_, at)) = keys.last() {
            let recorded = store.record(&partition, at, keys.iter().map(|(k, at)| (k, at)));
            if let Err(e) = recorded {
                self.forget_past_unrecorded(&keys);
                return Err(e.into());
            }
        }
        // As far as the read went, which a read that ended early leaves short of `last`:
        // the events past it are read, and their keys recorded, by the next catch-up.
        self.keys_recorded_through = self.keys_recorded_through.max(reached);
        Ok(())
    }

    /// After a catch-up's index commit failed: the catch-up moved the head and the book
    /// past `unrecorded` (in stream order), and the next one would start after them, so a
    /// retry of one would be decided again and appended twice. Both are dropped, and the
    /// next fold records the keys again from the first, as after a failed commit of a
    /// batch (`settle`).
    fn forget_past_unrecorded(&mut self, unrecorded: &[(String, HeadRecord)]) {
        let Some((_, first)) = unrecorded.first() else {
            return;
        };
        let first = first.stream_sequence;
        self.caught_up = false;
        self.book = None;
        self.head = None;
        self.held = Holding::default();
        self.rerecord_from = Some(self.rerecord_from.map_or(first, |f| f.min(first)));
    }

    /// Answers appends whose key is already in the log; returns the rest.
    #[allow(clippy::result_large_err)]
    fn answer_duplicates(
        &self,
        batch: Vec<Pending>,
        sent_unanswered: &HashSet<[u8; 32]>,
    ) -> Result<Vec<Pending>, (Vec<Pending>, AppendError)> {
        let known = match self
            .shared
            .store
            .idempotent_many(self.partition.as_str(), batch.iter().map(Pending::key))
        {
            Ok(known) => known,
            Err(e) => return Err((batch, AppendError::Store(e))),
        };
        // Keys of batches whose index commits may still run are not in the index yet;
        // each batch's are a map already (`Recording::answered`), the newest first.
        let mut rest = Vec::with_capacity(batch.len());
        let mut first_answers = HashSet::new();
        for (pending, known) in batch.into_iter().zip(known) {
            let known = known.or_else(|| {
                self.recording
                    .iter()
                    .rev()
                    .find_map(|r| r.answered.get(pending.key()).copied())
            });
            match known {
                Some(at) => {
                    // Of two appends with one key, the second is a repeat however it landed.
                    let repeat = !sent_unanswered.contains(&at.hash.0)
                        || !first_answers.insert(pending.key().to_owned());
                    let _ = pending.reply.send(Ok(self.receipt(&at, repeat)));
                }
                None => rest.push(pending),
            }
        }
        Ok(rest)
    }

    /// Decides each command against the book in order, folding each accepted one in
    /// before the next is decided, and encodes its events; answers refusals at once. A
    /// command's events all go in one batch (so they commit atomically); a command that
    /// no longer fits the batch's bounds waits, with everything after it, for the next.
    fn decide(&mut self, batch: Vec<Pending>) -> Decided {
        let book = self.book.as_mut().expect("book loaded");
        let head = &self.head.as_ref().expect("head loaded").chain;
        let (mut sequence, mut prev) = (head.sequence, head.hash);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut out = Decided {
            accepted: Vec::with_capacity(batch.len()),
            refused: Vec::new(),
            encoded: Vec::with_capacity(batch.len()),
            owners: Vec::with_capacity(batch.len()),
            leftover: Vec::new(),
        };
        let mut batch_bytes = 0usize;
        let mut iter = batch.into_iter();
        while let Some(pending) = iter.next() {
            // A draft is encoded where it lies (a Draft is ~1 KiB inline: no clone).
            let decided: Vec<Draft>;
            let drafts: &[Draft] = match &pending.work {
                Work::Draft(draft) => std::slice::from_ref(&**draft),
                Work::Command(c) => match book.decide(&c.command, &c.actor) {
                    Ok(proposals) => {
                        let last = proposals.len().saturating_sub(1);
                        decided = proposals
                            .into_iter()
                            .enumerate()
                            .map(|(i, proposal)| Draft {
                                partition: c.partition.clone(),
                                actor: c.actor.clone(),
                                // The command's own key names its last event (the receipt);
                                // the others get derived keys, so a retry finds them all.
                                idempotency_key: if i == last {
                                    c.idempotency_key.clone()
                                } else {
                                    format!("{}#{}", c.idempotency_key, i + 1)
                                },
                                correlation_id: c.correlation_id.clone(),
                                request_fingerprint: c.request_fingerprint,
                                subjects: proposal.subjects,
                                payload: proposal.payload,
                            })
                            .collect();
                        if let Some(e) = decided.iter().find_map(|d| validate(d).err()) {
                            let _ = pending.reply.send(Err(e));
                            continue;
                        }
                        &decided
                    }
                    Err(rejection) => {
                        out.refused.push((pending, rejection));
                        continue;
                    }
                },
            };
            // Encoded before it is folded in: only then are its exact bytes known.
            let (mut s, mut p) = (sequence, prev);
            let encoded: Vec<Encoded> = drafts
                .iter()
                .map(|draft| {
                    s += 1;
                    let event = encode(draft, s, &p, now_ms);
                    p = event.hash;
                    event
                })
                .collect();
            let bytes: usize = encoded.iter().map(|e| e.bytes.len()).sum();
            if encoded.len() > COMMAND_EVENTS_MAX || bytes > COMMAND_BYTES_MAX {
                let _ = pending
                    .reply
                    .send(Err(AppendError::Rejected(Rejection::UnsupportedCommand {
                        what: format!(
                            "the command yields {} events of {bytes} bytes, more than one atomic batch ({COMMAND_EVENTS_MAX} events, {COMMAND_BYTES_MAX} bytes); split it",
                            encoded.len()
                        ),
                    })));
                continue;
            }
            // A command larger than BATCH_EVENTS_MAX is let in alone.
            if !out.encoded.is_empty()
                && (out.encoded.len() + encoded.len() > BATCH_EVENTS_MAX
                    || batch_bytes + bytes > BATCH_BYTES_MAX)
            {
                // Not folded into the book: it is decided again in the next batch.
                out.leftover.push(pending);
                out.leftover.extend(iter);
                break;
            }
            for (draft, event) in drafts.iter().zip(&encoded) {
                book.apply(event.sequence, Some(&draft.actor), Some(&draft.payload));
            }
            (sequence, prev, batch_bytes) = (s, p, batch_bytes + bytes);
            out.owners
                .extend(std::iter::repeat_n(out.accepted.len(), encoded.len()));
            out.encoded.extend(encoded);
            out.accepted.push(pending);
        }
        out
    }

    /// Publishes one atomic batch fenced on our head, the events cut into `frames`;
    /// returns the stream sequence of its last message.
    ///
    /// No `Nats-Msg-Id`: the fence already makes a resent or stale batch fail, and the
    /// index answers retries for ever. JetStream's dedupe would only repeat that work,
    /// and it cost the server 5-21% of its batch throughput here (atomic_batch_probe
    /// `--msg-id`) plus a map of every id in the duplicate window.
    async fn publish(
        &self,
        encoded: &[Encoded],
        frames: &[std::ops::Range<usize>],
    ) -> Result<u64, String> {
        if frames.len() > BATCH_MESSAGES_MAX {
            // COMMAND_EVENTS_MAX and BATCH_BYTES_MAX rule this out; never send what the
            // server would refuse after it has taken part of it.
            return Err(format!(
                "batch of {} messages exceeds {BATCH_MESSAGES_MAX}",
                frames.len()
            ));
        }
        let head = self.head.as_ref().expect("head loaded");
        let batch_id = format!("{}-{}", self.partition, uuid::Uuid::new_v4().simple());
        let last_message = frames.len() - 1;
        // One message goes as a plain publish with the same fence: measured on 2.15.1,
        // an atomic batch of one costs ~13 ms at p50 against ~0.5 ms for a plain
        // fsynced publish, and a single message is atomic anyway.
        let atomic = frames.len() > 1;
        // Every message is built before the gate is taken, so it is held only to send
        // them and wait for the ack.
        let mut messages: Vec<(HeaderMap, Bytes)> = frames
            .iter()
            .enumerate()
            .map(|(index, range)| {
                let events = &encoded[range.clone()];
                let payloads: Vec<Bytes> = events.iter().map(|e| e.bytes.clone()).collect();
                let (payload, framed) = frame::encode(&payloads);
                let last_event = events.last().expect("frames are not empty");
                let mut headers = HeaderMap::new();
                if atomic {
                    headers.insert(async_nats::header::NATS_BATCH_ID, batch_id.as_str());
                    headers.insert(
                        async_nats::header::NATS_BATCH_SEQUENCE,
                        (index + 1).to_string().as_str(),
                    );
                }
                if framed {
                    headers.insert(HEADER_FORMAT, FORMAT_FRAME);
                }
                // Both name the message's last event, as CHAIN.md says.
                headers.insert(HEADER_HASH, last_event.hash.to_hex().as_str());
                headers.insert(HEADER_SEQUENCE, last_event.sequence.to_string().as_str());
                if index == 0 {
                    headers.insert(
                        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                        head.stream_sequence.to_string().as_str(),
                    );
                }
                if index == last_message && atomic {
                    headers.insert(
                        async_nats::header::NATS_BATCH_COMMIT,
                        async_nats::header::NATS_BATCH_COMMIT_FINAL,
                    );
                }
                (headers, payload)
            })
            .collect();
        let (last_headers, last_payload) = messages.pop().expect("a batch has a message");
        // Commits of several events take turns (the gate, held until the ack): the server
        // stores one stream's messages one after another, so a second large commit in
        // flight would only make a lone event wait longer. A lone event does not wait for
        // the gate: it is a few hundred bytes, the server stores it right after the commit
        // in flight, and waiting for that commit's ack to reach this process and the gate
        // to be handed over cost it most of its time under saturating load (docs/BENCH.md,
        // row 5b: p99 16.2 vs 10.2 ms, throughput unchanged).
        let _not_held = match self.shared.publishes.try_read() {
            Ok(free) => free,
            Err(_) => {
                use std::sync::atomic::Ordering;
                self.shared.commits_held.fetch_add(1, Ordering::SeqCst);
                let free = self.shared.publishes.read().await;
                self.shared.commits_held.fetch_sub(1, Ordering::SeqCst);
                free
            }
        };
        let _turn = match encoded.len() {
            1 => None,
            _ => Some(self.shared.gate.lock().await),
        };
        for (headers, payload) in messages {
            self.shared
                .client
                .publish_with_headers(self.subject.clone(), headers, payload)
                .await
                .map_err(|e| e.to_string())?;
        }
        let ack = self
            .shared
            .js
            .send_publish(
                self.subject.clone(),
                PublishMessage::build()
                    .headers(last_headers)
                    .payload(last_payload),
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        // Our messages carry no message id, so a "duplicate" ack cannot name our event at
        // our place; it must never be taken as our head.
        if ack.duplicate {
            return Err(format!(
                "unexpected duplicate ack; stored at stream sequence {}",
                ack.sequence
            ));
        }
        Ok(ack.sequence)
    }

    async fn acknowledged(
        &mut self,
        batch: Vec<Pending>,
        owners: &[usize],
        repeats: Vec<Pending>,
        encoded: &[Encoded],
        frames: &[std::ops::Range<usize>],
        last_stream_sequence: u64,
    ) {
        // An atomic batch is stored contiguously, so stream sequences follow from the last.
        let first_stream_sequence = last_stream_sequence + 1 - frames.len() as u64;
        let mut records: Vec<(String, HeadRecord)> = Vec::with_capacity(encoded.len());
        for (message, range) in frames.iter().enumerate() {
            for (index, event) in encoded[range.clone()].iter().enumerate() {
                let at = HeadRecord {
                    sequence: event.sequence,
                    hash: event.hash,
                    stream_sequence: first_stream_sequence + message as u64,
                    index: index as u32,
                };
                records.push((event.key.clone(), at));
            }
        }
        {
            let mut recent = self.shared.recent.lock().expect("recent events lock");
            for ((_, at), event) in records.iter().zip(encoded) {
                recent.insert(at.at(), event.bytes.clone());
            }
        }
        let last = records.last().expect("non-empty batch").1;
        let head = self.head.as_mut().expect("head loaded");
        head.chain.sequence = last.sequence;
        head.chain.hash = last.hash;
        head.stream_sequence = last.stream_sequence;
        // Each append's receipt names its last event.
        let mut last_of: Vec<Option<HeadRecord>> = vec![None; batch.len()];
        for (owner, (_, at)) in owners.iter().zip(&records) {
            last_of[*owner] = Some(*at);
        }
        // Before any answer: a caller's next lookup of its key must find it. A key of
        // several events names the last, as the index records it.
        let answered: AnsweredKeys = Arc::new(records.into_iter().collect());
        self.shared
            .unrecorded
            .lock()
            .expect("unrecorded keys lock")
            .entry(self.partition.clone())
            .or_default()
            .push(answered.clone());
        for repeat in repeats {
            // Repeats of a command the book refused wait for the next batch; one here
            // without an event repeats a command refused before the book decided it (too
            // large, or an event that does not validate), and fails the same way.
            let answer = match answered.get(repeat.key()) {
                Some(at) => Ok(self.receipt(at, true)),
                None => Err(AppendError::Rejected(Rejection::UnsupportedCommand {
                    what: "the first command with this idempotency key was refused".into(),
                })),
            };
            let _ = repeat.reply.send(answer);
        }
        for (pending, at) in batch.into_iter().zip(last_of) {
            // The event is durable in the log even if the store write below fails; the
            // next catch-up repairs the store.
            let at = at.expect("every accepted append has an event");
            let _ = pending.reply.send(Ok(self.receipt(&at, false)));
        }
        // Callers are answered before the index commit: their events are durable in the
        // log already. The commit runs off the runtime's threads, because it waits for
        // other partitions' commits and, every INDEX_SYNC_INTERVAL, for an fsync; and it
        // runs while this writer decides the next batch, whose duplicates are answered
        // from `recording` meanwhile. A crash loses at most the newest of these keys,
        // which the next catch-up records again from the log.
        self.finish_recording(RECORDS_IN_FLIGHT_MAX - 1).await;
        let store = self.shared.store.clone();
        let partition = self.partition.to_string();
        let (done, done_signal) = oneshot::channel::<bool>();
        let previous = self.last_recorded.replace(done_signal);
        let task = {
            let keys = answered.clone();
            tokio::task::spawn_blocking(move || {
                // After a failed commit (or one whose task is gone) this one writes
                // nothing: its head would stand in the index without the keys before it,
                // and a crash before they are recorded again would forget them for good.
                // It fails too, so its own keys are recorded again with them.
                let previous_stored = previous.is_none_or(|p| p.blocking_recv() == Ok(true));
                let stored = if previous_stored {
                    store.record(&partition, &last, keys.iter())
                } else {
                    Err(StoreError::Index(
                        "an earlier index commit of this partition failed".into(),
                    ))
                };
                let _ = done.send(stored.is_ok());
                stored
            })
        };
        self.recording.push_back(Recording { task, answered });
    }

    fn receipt(&self, at: &HeadRecord, duplicate: bool) -> Receipt {
        Receipt::at(&self.partition, at, duplicate)
    }
}

/// A random wait in [0, FENCE_BACKOFF_STEP × attempt).
pub(crate) fn fence_backoff(attempt: u32) -> std::time::Duration {
    let mut random = [0u8; 4];
    let _ = getrandom::getrandom(&mut random);
    let span = FENCE_BACKOFF_STEP.as_micros() as u64 * u64::from(attempt + 1);
    std::time::Duration::from_micros(u64::from(u32::from_le_bytes(random)) % span.max(1))
}

fn is_exclusion(pending: &Pending) -> bool {
    matches!(&pending.work, Work::Draft(d) if matches!(d.payload, Payload::MessageExcluded(_)))
}

/// The operator's exclusion among appends a batch accepted.
fn encoded_exclusion(accepted: &[Pending]) -> Option<&Payload> {
    accepted.iter().find_map(|p| match &p.work {
        Work::Draft(d) if matches!(d.payload, Payload::MessageExcluded(_)) => Some(&d.payload),
        _ => None,
    })
}

/// Whether `pending` is an exclusion signed by the current key of `ring` as recorded in
/// `partition`.
fn signed_by_current_key(
    pending: &Pending,
    partition: &str,
    ring: &crate::checkpoint::KeyRing,
) -> bool {
    let (Work::Draft(d), Some(key)) = (&pending.work, ring.current()) else {
        return false;
    };
    let Payload::MessageExcluded(x) = &d.payload else {
        return false;
    };
    x.key_id == key.key_id
        && crate::checkpoint::sign::verify_exclusion(&key.public_key, partition, x).is_ok()
}

/// Whether `pending` is an operator's exclusion of what `held` holds.
fn excludes(pending: &Pending, held: &Holding) -> bool {
    match &pending.work {
        Work::Draft(d) => matches!(&d.payload, Payload::MessageExcluded(x) if held.admits(x)),
        Work::Command(_) => false,
    }
}

fn answer_refusals(refused: Vec<(Pending, Rejection)>) {
    for (pending, rejection) in refused {
        telemetry::refused(rejection.kind());
        let _ = pending.reply.send(Err(AppendError::Rejected(rejection)));
    }
}

fn fail_all(batch: Vec<Pending>, error: impl Fn() -> AppendError) {
    for pending in batch {
        let _ = pending.reply.send(Err(error()));
    }
}

/// AppendError holds non-Clone sources; a failed batch answers every caller with an
/// equivalent error.
fn clone_error(e: &AppendError) -> AppendError {
    match e {
        AppendError::LostAcknowledgedData { partition, reason } => {
            AppendError::LostAcknowledgedData {
                partition: partition.clone(),
                reason: reason.clone(),
            }
        }
        AppendError::ChainBroken {
            partition,
            stream_sequence,
            cause,
        } => AppendError::ChainBroken {
            partition: partition.clone(),
            stream_sequence: *stream_sequence,
            cause: cause.clone(),
        },
        AppendError::Nats(m) => AppendError::Nats(m.clone()),
        other => AppendError::Nats(other.to_string()),
    }
}
