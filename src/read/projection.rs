//! Projections: state derived from the log into sled, thrown away and rebuilt at will.
//!
//! **Invariant:** the position (the last applied event: stream sequence, index in its
//! message) is written in the same journal record as the projection change it ends, and
//! opening the projections applies the record of the batch written last again (`journal`),
//! as does the next catch-up after a commit that failed among its writes (`recover`), so
//! each event is applied exactly once across crashes, restarts and failed commits, also
//! inside a frame of several events. Reading resumes after the position with an ordered consumer; the
//! position lives only here, never in a second place (ADR 0002).
//! **Paired check:** every event is chain-checked again before it is applied.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::jetstream::stream::Stream;
use chrono::NaiveDate;
use foldhash::{HashMap, HashMapExt as _};
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::chain::{ChainBreak, ChainHead, Digest, Partition};
use crate::domain::loans::Loan;
use crate::domain::payments::ids::GatewayId;
use crate::domain::payments::instructions::{InstructionId, Outcome};
use crate::domain::payments::reconcile::{self, GatewayDay};
use crate::log::follow::{Checked, Follower, Held, Holding};
use crate::log::{EventAt, LogConfig, Position, reader};
use crate::proto::Envelope;
use crate::read::journal::{self, Journal, JournalError, Marker, Record};
use crate::read::trail_codec;
use crate::read::trail_store::{Claim, Opened, TrailError, TrailStore, UNSETTLED_HEADS_MAX};
use crate::read::tree_nodes::{self, Tree};
use crate::views::{
    self, CommunePortfolio, HouseholdRecord, HouseholdView, PendingLine, ReconcileProgress,
    TrialBalanceView, Views,
};

const TREE_META: &str = "proj.meta";
const TREE_SUMMARY: &str = "proj.summary";
/// The trail's name in `records` (its lines live in `trail_store`'s file); before format
/// 11, also a sled tree, dropped when the store opens.
const TREE_TRAIL: &str = "proj.trail";
const TREE_VIEWS: &str = "proj.views";
const KEY_POSITION: &[u8] = b"position";
const KEY_FORMAT: &[u8] = b"format";
/// The trail file's length that the position covers, written with it.
const KEY_TRAIL_LEN: &[u8] = b"trail-len";
/// Where the journal record of the batch written last is (`journal::Marker`).
const KEY_JOURNAL: &[u8] = b"journal";
/// The trees, as a journal record's writes name them.
const META: u8 = 0;
const SUMMARY: u8 = 1;
const VIEWS: u8 = 2;
/// The projections' format. 2: what each household received per month and channel
/// (`recv/`), and each instruction's household (`instr/`). 3: reconciliation per gateway
/// and day (`rday/`, `rpend/`, `rseen/`, `rpos/`). 4: records in MessagePack, not JSON.
/// 5: each gateway's instructions still waiting for a result (`gpend/`, the gateway id
/// ended by a NUL), and each instruction's gateway. 6: each commune's loan flows per
/// month (`cmonth/`), for the console's charts. 7: where a household's latest sealed data
/// sits is kept in its record (`hh/`), no longer under `sealed/`. 8: a subject's trail
/// lines from one batch are stored together, a run of up to `TRAIL_RUN_LINES_MAX` a record.
/// 9: trail lines without field names, their hash in 32 bytes (`trail_codec`). 10: every
/// record without field names (`views::encode_record`). 11: the trail in a file of runs
/// (`trail_store`), no longer in sled. 12: a trail line's interest counts the overdue
/// interest too (`views::detail`), and a trial balance posts an event only of a loan
/// approved in its partition, as the book does: stored lines and balances are rebuilt.
/// 13: a partition's reconciliation is dated only by the events that change it
/// (`reconcile::changes_records`), and no view takes a payment record the book leaves out.
/// 14: the instruction each gateway transaction id was first accepted for (`gtxn/`).
/// 15: a partition's trial balance takes the budget side's postings too (`tb/`).
/// 16: the messages a partition holds are a counted, hashed run (`held/`), not a list.
/// 17: a commune's month keeps what its events changed of the balances (`cmonth/`), not
/// the balances after its last recorded event; a gateway's pending line names the gateway
/// it was issued to (`gpend/`).
/// 18: a loan keeps its tranches (`Loan::tranches`), each repaid from its own date.
/// 19: a frozen loan keeps the date it was frozen (`Loan::frozen_on`).
/// 20: a loan keeps what moved its instalments (`Loan::schedule_changes`).
/// 21: and its extensions, which keep what fell due before them (a loan's schedule shows).
/// 22: a freeze's schedule change keeps the day it ended (`ScheduleChange::Suspended`).
/// 23: each partition's Merkle tree: its frontier, the roots of its complete subtrees of
/// a chunk's size or more, and where each chunk starts in the log (`tree_nodes`, ADR 0026).
/// 24: a key rotation its key partition's history refuses, and an exclusion no ledger
/// key stored before it signed, are held, not projected (docs/CHAIN.md, section 4a).
pub(crate) const PROJECTION_FORMAT: &[u8] = &[24];
/// Trail lines of one subject from one batch stored together (a run). A page of a trail
/// reads at most this many lines more than it shows, and a run stays near 10 KB.
pub const TRAIL_RUN_LINES_MAX: usize = 64;
/// Events applied per commit. One sled transaction per event (with the partition
/// summary decoded and encoded each time) applied ~6,400 events/s; a batch pays the
/// commit and the summary once. The batch's writes are held in memory until its
/// commit, so this also bounds the projector's memory (a few MB).
pub const PROJECTION_BATCH_EVENTS_MAX: usize = 4_096;
/// One catch-up at a time in a process. A batch stages its changes from the trees as the
/// last commit left them, so two catch-ups applying the same events at once would each
/// stage from a state the other is changing (nothing re-reads the position inside the
/// batch's commit). A process has one projection store, so one lock suffices;
/// `Batch::write` also refuses to commit over a position it did not start from.
static CATCH_UP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Times a read of several records (`Projector::read_consistent`) is tried before it
/// answers `ProjectionError::Busy`. A read is tried again when a batch's writes began
/// while it ran. Under a write load `serve` commits a batch every few tens of
/// milliseconds, so a read longer than that would seldom pass on its own: from the
/// second attempt on it holds the next batch's writes back (`WRITES_HELD_MAX`), and the
/// rest cover a hold that ran out.
pub const CONSISTENT_READ_ATTEMPTS_MAX: u32 = 4;
/// How long a read of several records may hold the next batch's writes back. The
/// applying thread goes on meanwhile (up to `COMMITS_IN_FLIGHT_MAX` batches queue), and a
/// read waiting for its own write (`after`) waits that much longer at most; a read longer
/// than this under a steady write load answers `Busy`. A reconciliation day of 30,000
/// pending instructions reads in about a tenth of it.
pub const WRITES_HELD_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// How long an attempt of such a read waits for a batch's writes in progress to end
/// before it counts as failed. A full batch's inserts (`PROJECTION_BATCH_EVENTS_MAX`
/// events) take tens of milliseconds; a commit that failed among its writes leaves them
/// torn until the next catch-up (`Projector::recover`), which a read does not wait for.
pub const WRITES_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The log is broken where the projector reached; run `ansinh audit verify`.
    #[error("stream sequence {stream_sequence}: {cause}")]
    Broken {
        stream_sequence: u64,
        cause: ChainBreak,
    },
    #[error("projection store: {0}")]
    Sled(#[from] sled::Error),
    #[error("projection {0}")]
    Trail(#[from] TrailError),
    #[error("{0}")]
    Journal(#[from] JournalError),
    /// A stored record does not decode: rebuild the projections.
    #[error("projection record is corrupt: {0}")]
    Corrupt(String),
    #[error("reading the log: {0}")]
    Nats(String),
    /// The projections are past the log's end: the stream lost its tail or was restored
    /// from an older copy. Catching up would skip the events written at those sequences
    /// again; rebuild the projections (`ansinh projections rebuild`).
    #[error(
        "the projections are at stream sequence {position}, past the log's end at {end}: the log was restored or lost its tail; rebuild them (ansinh projections rebuild)"
    )]
    AheadOfLog { position: u64, end: u64 },
    /// A read of several records found a batch's writes going in at each of its
    /// attempts (`Projector::read_consistent`), or the trees torn by a commit that failed
    /// until the next catch-up completes it: nothing is wrong with the request; ask
    /// again in a moment.
    #[error(
        "the projections were being written during each of {attempts} attempts to read them; retry"
    )]
    Busy { attempts: u32 },
}

/// Per-partition summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSummary {
    pub events: u64,
    pub head_sequence: u64,
    pub head_hash: String,
    pub last_recorded_at_unix_ms: i64,
    pub events_by_type: BTreeMap<String, u64>,
}

/// One line of a subject's audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailEntry {
    pub partition: String,
    pub sequence: u64,
    pub stream_sequence: u64,
    pub hash: String,
    pub recorded_at_unix_ms: i64,
    pub actor: String,
    pub role: String,
    pub event_type: String,
    /// What the event did, with amounts (e.g. "loan L3 repaid 1200000 ...").
    #[serde(default)]
    pub detail: String,
}

/// History lines in a household's view unless the caller asks fewer or more. A household
/// paid monthly for years, with a loan repaid monthly, has hundreds of lines; its view
/// (`GET /v1/households/{id}`, `household show`) shows one page of them, so what a view
/// costs does not grow with the household's age.
pub const HISTORY_PAGE_LINES_DEFAULT: usize = 100;
/// The most lines a page of a household's history may hold.
pub const HISTORY_PAGE_LINES_MAX: usize = 500;

/// A household's records as its page shows them (`Projector::household_records`).
#[derive(Debug)]
pub struct HouseholdRecords {
    pub view: HouseholdView,
    /// The loans the view lists, in its order, each with the partition that holds it.
    pub loans: Vec<(String, Loan)>,
    /// What the household received, as `Projector::received` gives it.
    pub received: Vec<(String, String, crate::domain::payments::reconcile::Received)>,
    /// The page of its history asked for, if one was: read in the same state, so a
    /// repayment's line never shows beside a balance that does not count it yet.
    pub history: Option<HistoryPage>,
}

/// One page of a household's history, oldest first within each partition, and whether
/// more lines follow it.
#[derive(Debug)]
pub struct HistoryPage {
    pub lines: Vec<TrailEntry>,
    pub more: bool,
}

pub struct Projector {
    meta: sled::Tree,
    summary: sled::Tree,
    trail: Arc<TrailStore>,
    journal: Arc<Journal>,
    views: sled::Tree,
    committer: Committer,
    /// Whether the trees hold whole batches (`Writes`).
    writes: Arc<Writes>,
    /// The trail's heads committed in memory past which a commit flushes sled and
    /// settles them: `UNSETTLED_HEADS_MAX`, less in tests.
    settle_after: std::sync::atomic::AtomicUsize,
    /// Whether dropping the projector writes the trail's index file (not in a test that
    /// stands for a crash).
    index_on_drop: std::sync::atomic::AtomicBool,
    /// Test hook: the stream sequence at which a catch-up fails as at a broken log (0:
    /// never), for tests of what serves a read model that stopped. The log itself can
    /// no longer stop one: whatever breaks a chain is held (docs/CHAIN.md, section 4a).
    stop_at: std::sync::atomic::AtomicU64,
    /// Level of the smallest subtrees stored of a partition that has no event applied
    /// yet (`merkle_pieces::CHUNK_LEVEL`; tests make it small, `set_chunk_level`). A
    /// partition keeps the level of its first event: it is stored with its frontier.
    chunk_level: std::sync::atomic::AtomicU32,
    /// The key partition's key history at the head stored for it, which judges the
    /// rotations read next (`log::follow`): read from the log once, then kept as batches
    /// commit. None until read, or after a catch-up that failed.
    key_ring: std::sync::Mutex<Option<KeptKeyRing>>,
    /// The ledger's key history as far as read (`Batch::history`), read on at each
    /// catch-up.
    history: std::sync::Mutex<Option<crate::checkpoint::read::KeyRingAt>>,
}

/// The key history of the key partition's chain at `head` (None: the chain as readers
/// follow it does not reach `head`, and every rotation after it is held).
type KeptKeyRing = (ChainHead, Option<crate::checkpoint::KeyRing>);

/// A batch's commit, run on the committer's thread.
type CommitJob = Box<dyn FnOnce() -> Result<(), ProjectionError> + Send>;

/// Commits started and not yet waited for: batches are applied while the ones before
/// them commit, in order on one thread (each commit writes over the position the
/// previous one wrote). More than one: a batch's apply and its commit take about as
/// long, but which is longer changes from batch to batch, and with one in flight each
/// side waited for the other ~15% of a rebuild. Four, not two: with two the machine
/// still sat idle 11-15% of a full-size rebuild, with four 9-10% (ADR 0016); eight were
/// no better. Each costs a batch's staged view records in memory (~5 MiB at a
/// province's size).
const COMMITS_IN_FLIGHT_MAX: usize = 4;

/// The thread that runs the batches' commits, one at a time, for the projector's life. A
/// thread a batch cost a thread's start and its allocator heap each time: the memory the
/// commit allocated was given back and faulted in again for the next batch.
struct Committer {
    jobs: Option<std::sync::mpsc::SyncSender<CommitJob>>,
    done: std::sync::Mutex<std::sync::mpsc::Receiver<Result<(), ProjectionError>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    fn start() -> Result<Self, ProjectionError> {
        let (jobs, queued) = std::sync::mpsc::sync_channel::<CommitJob>(COMMITS_IN_FLIGHT_MAX);
        let (finished, done) = std::sync::mpsc::sync_channel(COMMITS_IN_FLIGHT_MAX);
        let thread = std::thread::Builder::new()
            .name("projection-commit".into())
            .spawn(move || {
                for job in queued {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                        .unwrap_or_else(|_| {
                            Err(ProjectionError::Corrupt("a commit panicked".into()))
                        });
                    if finished.send(result).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| ProjectionError::Corrupt(format!("starting the commit thread: {e}")))?;
        Ok(Self {
            jobs: Some(jobs),
            done: std::sync::Mutex::new(done),
            thread: Some(thread),
        })
    }

    fn start_commit(&self, job: CommitJob) -> Result<(), ProjectionError> {
        self.jobs
            .as_ref()
            .expect("open until dropped")
            .send(job)
            .map_err(|_| ProjectionError::Corrupt("the commit thread is gone".into()))
    }

    /// The result of the commit started last.
    fn wait(&self) -> Result<(), ProjectionError> {
        self.done
            .lock()
            .expect("commit results lock")
            .recv()
            .unwrap_or_else(|_| Err(ProjectionError::Corrupt("the commit thread is gone".into())))
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether the trees hold whole batches. A batch's writes are plain sled inserts, one
/// by one (no transaction, ADR 0016), so between the first and the last the trees hold
/// part of it. A commit that stops there (an error: the process goes on) leaves them so
/// until the next catch-up completes the batch from its journal record
/// (`Projector::recover`); until then a catch-up must not start from the position, which
/// is still the one before that batch.
///
/// It is also what lets a read of several records see one state of the trees
/// (`Projector::read_consistent`): a sequence lock. The sequence is odd while a batch's
/// writes are going in or were left torn, and moves only by one writer at a time (the
/// commits, one at a time in order, and `clear` and `recover` under the catch-up lock).
/// A reader starts at an even sequence and keeps what it read only if the sequence has
/// not moved since. A reader tried again holds the next batch's writes back while it
/// reads (`hold`), for at most `hold_max`: commits never wait for a reader longer.
struct Writes {
    sequence: std::sync::atomic::AtomicU64,
    /// Taken to end writes and to wait for that: never held while they go in, so a
    /// reader never holds up a commit's writes once they started.
    ended_lock: std::sync::Mutex<()>,
    ended: std::sync::Condvar,
    /// How many readers hold the next batch's writes back; a batch starts its writes
    /// under this lock, so a reader counted here sees either that batch's odd sequence
    /// (and waits for its end) or no later start until it lets go.
    holders: std::sync::Mutex<u32>,
    released: std::sync::Condvar,
    /// Batches waiting on holders (what the tests observe).
    waiting: std::sync::atomic::AtomicU32,
    hold_max: std::time::Duration,
}

impl Default for Writes {
    fn default() -> Self {
        Self::holding_at_most(WRITES_HELD_MAX)
    }
}

/// A reader's hold on the next batch's writes, let go when dropped.
struct Hold<'a>(&'a Writes);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut holders = self.0.holders.lock().unwrap_or_else(|p| p.into_inner());
        *holders -= 1;
        self.0.released.notify_all();
    }
}

impl Writes {
    fn holding_at_most(hold_max: std::time::Duration) -> Self {
        Self {
            sequence: Default::default(),
            ended_lock: Default::default(),
            ended: Default::default(),
            holders: Default::default(),
            released: Default::default(),
            waiting: Default::default(),
            hold_max,
        }
    }

    /// A batch's writes (or a clear) start, once no reader holds them back or after
    /// `hold_max`. A sequence already odd stays so: the writes of a torn batch are being
    /// completed, which no reader could have started on, so nothing waits.
    fn start(&self) {
        let mut holders = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        if self.sequence.load(Ordering::SeqCst) % 2 == 0 {
            if *holders > 0 {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                holders = off_the_workers(|| {
                    self.released
                        .wait_timeout_while(holders, self.hold_max, |h| *h > 0)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                });
                self.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            self.sequence.fetch_add(1, Ordering::SeqCst);
        }
        drop(holders);
        // The writes that follow are not seen before the sequence that says they are
        // going in.
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Holds the next batch's writes back until the hold is dropped (or `hold_max`).
    fn hold(&self) -> Hold<'_> {
        *self.holders.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Hold(self)
    }

    /// The trees hold whole batches again.
    fn end(&self) {
        // Under the lock a waiting reader checks the sequence under: it cannot miss the
        // wake-up between its check and its wait.
        let _ended = self.ended_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.sequence.load(Ordering::SeqCst) % 2 == 1 {
            self.sequence.fetch_add(1, Ordering::SeqCst);
        }
        self.ended.notify_all();
    }

    /// The sequence a read may start at: even, once the writes going in have ended,
    /// waited for at most `wait`; `None` if they are still going in then.
    fn read_start(&self, wait: std::time::Duration) -> Option<u64> {
        let even = |s: u64| (s % 2 == 0).then_some(s);
        if let Some(s) = even(self.sequence.load(Ordering::SeqCst)) {
            return Some(s);
        }
        off_the_workers(|| {
            let ended = self.ended_lock.lock().unwrap_or_else(|p| p.into_inner());
            let (_ended, _) = self
                .ended
                .wait_timeout_while(ended, wait, |_| {
                    self.sequence.load(Ordering::SeqCst) % 2 == 1
                })
                .unwrap_or_else(|p| p.into_inner());
            even(self.sequence.load(Ordering::SeqCst))
        })
    }

    /// Whether no write started since the read that began at sequence `start`: then
    /// every record it read is of the state that sequence closed.
    fn unchanged_since(&self, start: u64) -> bool {
        // The reads before are not moved after the check.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.sequence.load(Ordering::SeqCst) == start
    }

    /// Whether a batch's writes started and did not end. Outside a commit (under the
    /// catch-up lock, with none in flight): a commit stopped among them.
    fn torn(&self) -> bool {
        self.sequence.load(Ordering::SeqCst) % 2 == 1
    }
}

/// View records changed (`None`: deleted), by key.
type ViewWrites = HashMap<String, Option<Vec<u8>>>;

/// The view records a batch changed, in memory until the batch commits; reads see them
/// first, then those of the batches still committing (newest first), then the tree.
/// Only the projector writes these trees, so the tree read here is the state after the
/// last committed batch.
struct Staged {
    tree: sled::Tree,
    writes: RefCell<ViewWrites>,
    committing: RefCell<VecDeque<Arc<ViewWrites>>>,
}

impl Views for Staged {
    type Error = ProjectionError;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ProjectionError> {
        if let Some(v) = self.writes.borrow().get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self
            .committing
            .borrow()
            .iter()
            .rev()
            .find_map(|c| c.get(key))
        {
            return Ok(v.clone());
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }
    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), ProjectionError> {
        self.writes.borrow_mut().insert(key.to_owned(), Some(value));
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<(), ProjectionError> {
        self.writes.borrow_mut().insert(key.to_owned(), None);
        Ok(())
    }
    fn corrupt(&self, what: String) -> ProjectionError {
        ProjectionError::Corrupt(what)
    }
}

/// One batch being applied: what it changed, committed together with the position of
/// its last event (`Batch::commit`).
struct Batch<'p> {
    projector: &'p Projector,
    /// The position the trees hold: where this batch started.
    committed: Position,
    /// The last event applied, in this batch or before it.
    position: Position,
    /// Chain heads and summaries of the partitions seen, kept decoded between batches
    /// (they are what the trees hold after each commit).
    heads: HashMap<String, Follower>,
    summaries: HashMap<String, PartitionSummary>,
    /// The partitions' Merkle trees, loaded with their heads (`tree_nodes`).
    trees: HashMap<String, Tree>,
    /// Partitions whose head and summary this batch changed.
    touched: Vec<String>,
    /// The ledger's key history, read to the log's end when the catch-up began: it
    /// judges exclusions (`log::follow`).
    history: Option<crate::checkpoint::read::KeyRingAt>,
    views: Staged,
    /// The batch's trail lines, encoded one after another in chain order (one buffer,
    /// not an allocation a line).
    lines: Vec<u8>,
    /// Where each line ends in `lines`.
    line_ends: Vec<usize>,
    /// The trail key of the subject being added, built here (`trail_key`) rather than
    /// allocated for every event.
    trail_key: Vec<u8>,
    /// Each subject's lines in the batch (its key prefix `subject NUL partition NUL`):
    /// (chain sequence, index in `lines`).
    trail: HashMap<Vec<u8>, Vec<(u64, usize)>>,
    /// The previous batches' commits, queued or running while this batch is applied (the
    /// projector's work is one thread's; the commits then take the other core), at most
    /// `COMMITS_IN_FLIGHT_MAX`.
    in_flight: usize,
    /// Set by the first commit of this catch-up that fails: the commits queued behind it
    /// are then answered with an error, not run over the state it left.
    abandoned: Arc<std::sync::atomic::AtomicBool>,
    events: usize,
    applied: u64,
    /// Test hook: stop the commit of the batch holding this many applied events where
    /// a crash would.
    fail_at: Option<(u64, Crash)>,
    /// A commit failed: the batch's changes are not in the trees, and nothing more of
    /// this catch-up may be written on top of them.
    failed: bool,
}

/// Where a test stops a batch's commit, as a crash there would (`catch_up_crashing`).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// The batch's trail runs are written; nothing is in sled.
    BeforeCommit,
    /// The batch's journal record and marker are written, and half its writes.
    InsideCommit,
    /// The batch's journal record and marker are written, and its writes before the
    /// first view record whose key starts with this: what a reader sees while the
    /// commit's inserts reach that record.
    InsideCommitBefore(&'static str),
}

/// Runs a batch's commit, which holds its thread for milliseconds (longer when sled
/// flushes): on a multi-threaded runtime through `block_in_place`, so that the tasks
/// waiting on this worker (a `serve`'s HTTP requests) move to another one meanwhile
/// instead of waiting behind the commit.
fn off_the_workers<T>(commit: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(commit)
        }
        _ => commit(),
    }
}

fn head_key(partition: &str) -> Vec<u8> {
    [b"head/".as_slice(), partition.as_bytes()].concat()
}

fn held_key(partition: &str) -> Vec<u8> {
    [b"held/".as_slice(), partition.as_bytes()].concat()
}

/// What a held message is stored as, between catch-ups (rare: only while a message
/// waits for the operator's exclusion).
#[derive(Serialize, Deserialize)]
struct StoredHeld {
    stream_sequence: u64,
    message_hash: String,
    expected_sequence: u64,
    cause: String,
}

/// What a partition holds, as stored: the listed messages and the run's count, last
/// stream sequence and hash (`log::follow::Holding`).
#[derive(Serialize, Deserialize)]
struct StoredHolding {
    listed: Vec<StoredHeld>,
    count: u64,
    last_stream_sequence: u64,
    run_hash: String,
}

fn encode_held(held: &Holding) -> Option<Vec<u8>> {
    if held.is_empty() {
        return None;
    }
    let listed: Vec<StoredHeld> = held
        .listed()
        .iter()
        .map(|h| StoredHeld {
            stream_sequence: h.stream_sequence,
            message_hash: h.message_hash.to_hex(),
            expected_sequence: h.expected_sequence,
            cause: h.cause.to_string(),
        })
        .collect();
    Some(views::encode_record(&StoredHolding {
        listed,
        count: held.count(),
        last_stream_sequence: held.last_stream_sequence(),
        run_hash: held.run_hash().to_hex(),
    }))
}

fn decode_held(bytes: &[u8]) -> Option<Holding> {
    let stored: StoredHolding = views::decode_record(bytes).ok()?;
    let listed = stored
        .listed
        .into_iter()
        .map(|h| {
            Some(Held {
                stream_sequence: h.stream_sequence,
                message_hash: Digest::from_hex(&h.message_hash)?,
                expected_sequence: h.expected_sequence,
                cause: crate::chain::ChainBreak::Recorded(h.cause),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Holding::from_parts(
        listed,
        stored.count,
        stored.last_stream_sequence,
        Digest::from_hex(&stored.run_hash)?,
    )
}

/// The keys of a subject's trail in every partition: `subject NUL`.
fn subject_prefix(subject: &str) -> Vec<u8> {
    [subject.as_bytes(), b"\0"].concat()
}

/// The key of a subject's trail in one partition, `subject NUL partition NUL`, written
/// into `key` (a buffer kept across events).
fn trail_key(key: &mut Vec<u8>, subject: &str, partition: &str) {
    key.clear();
    key.extend_from_slice(subject.as_bytes());
    key.push(0);
    key.extend_from_slice(partition.as_bytes());
    key.push(0);
}

/// A record of one of the trees `records` lists, as JSON with its field names: the trees
/// store records without them (`views::encode_record`). `None` for bytes that are not
/// one of the tree's records (a head, a position: raw bytes).
pub fn record_as_json(tree: &str, key: &[u8], value: &[u8]) -> Option<serde_json::Value> {
    use views::named;
    match tree {
        TREE_VIEWS => views::record_as_json(key, value),
        TREE_SUMMARY => named::<PartitionSummary>(value),
        TREE_TRAIL => named::<TrailEntry>(value),
        TREE_META if key.starts_with(b"held/") => named::<StoredHolding>(value),
        _ => None,
    }
}

/// A tree's records as `(key, value)`, the trail's as one record a line (the key ending
/// in the line's chain sequence), so two stores compare equal whatever their batches were.
pub type Records<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), ProjectionError>> + 'a>;

fn raw_records(tree: &sled::Tree) -> Records<'_> {
    Box::new(tree.iter().map(|kv| {
        let (k, v) = kv?;
        Ok((k.to_vec(), v.to_vec()))
    }))
}

/// Every trail line as a record keyed `subject NUL partition NUL chain sequence`, in key
/// order.
fn trail_lines(trail: &TrailStore) -> Records<'_> {
    let keys = match trail.keys() {
        Ok(keys) => keys,
        Err(e) => return Box::new(std::iter::once(Err(e.into()))),
    };
    Box::new(keys.into_iter().flat_map(move |prefix| {
        trail.runs(&prefix).flat_map(move |run| match run {
            Ok(lines) => {
                let prefix = prefix.clone();
                lines
                    .into_iter()
                    .map(move |line| {
                        let key = [prefix.as_slice(), &line.sequence.to_be_bytes()].concat();
                        Ok((key, views::encode_record(&line)))
                    })
                    .collect::<Vec<_>>()
            }
            Err(e) => vec![Err(e.into())],
        })
    }))
}

fn corrupt(what: &str) -> ProjectionError {
    ProjectionError::Corrupt(what.to_string())
}

impl Projector {
    /// Opens the projections in `db`. Projections of an older format (made before a view
    /// was added) are dropped, and the next catch-up replays the log into the current
    /// format: a view that exists only for events applied after an upgrade would show a
    /// household half its history.
    ///
    /// The trail's files live in `dir` (the store's directory); sled records the length
    /// of its lines file with the position, and a file that lost writes sled recorded (a
    /// machine crash) drops the projections too, to be replayed.
    pub fn open(db: &sled::Db, dir: &std::path::Path) -> Result<Self, ProjectionError> {
        // Held before anything is read: a second projector on the directory would apply
        // the journal's record again over the first one's later batches.
        let claim = Claim::take(dir)?;
        let meta = db.open_tree(TREE_META)?;
        let current = meta.get(KEY_FORMAT)?.as_deref() == Some(PROJECTION_FORMAT);
        let marker = match meta.get(KEY_JOURNAL)? {
            Some(m) if current => Some(Marker::decode(&m)),
            _ => None,
        };
        let journal = Journal::open(claim.dir(), marker.as_ref().and_then(|m| m.as_ref().ok()))?;
        // The batch written last may have stopped inside its writes (a crash): its
        // record brings them all in, and its position.
        let mut lost = None;
        match marker.map(|m| m.and_then(|m| journal.read(&m))) {
            Some(Ok(record)) => {
                let (summary, views) = (db.open_tree(TREE_SUMMARY)?, db.open_tree(TREE_VIEWS)?);
                journal::apply(&record, &[&meta, &summary, &views])?;
            }
            Some(Err(JournalError::Corrupt(why))) => {
                lost = Some(ProjectionError::Journal(JournalError::Corrupt(why)));
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
        let committed = match meta.get(KEY_TRAIL_LEN)? {
            Some(v) if current && lost.is_none() => {
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt("trail length"))?)
            }
            _ => 0,
        };
        // What sled recovered, and the record applied above, made durable: the trail's
        // table may then take the heads it folds again (`TrailStore::settle`).
        db.flush()?;
        let trail = match TrailStore::open_claimed(claim, committed)? {
            Opened::Ready(trail) => trail,
            Opened::Lost(trail, why) => {
                lost.get_or_insert(why.into());
                trail
            }
        };
        Self::with(db, meta, trail, journal, current, lost)
    }

    /// The projections of the ledger store: its sled database, the trail beside it.
    pub fn of_store(store: &crate::log::store::LedgerStore) -> Result<Self, ProjectionError> {
        Self::open(store.db(), store.path())
    }

    /// Projections in a temporary sled database, whose trail goes with this value: a
    /// rebuild check's scratch copy, tests.
    pub fn scratch(db: &sled::Db) -> Result<Self, ProjectionError> {
        let meta = db.open_tree(TREE_META)?;
        Self::with(
            db,
            meta,
            TrailStore::scratch()?,
            Journal::scratch()?,
            false,
            None,
        )
    }

    fn with(
        db: &sled::Db,
        meta: sled::Tree,
        trail: TrailStore,
        journal: Journal,
        current: bool,
        lost: Option<ProjectionError>,
    ) -> Result<Self, ProjectionError> {
        db.drop_tree(TREE_TRAIL)?;
        let projector = Self {
            meta,
            summary: db.open_tree(TREE_SUMMARY)?,
            trail: Arc::new(trail),
            journal: Arc::new(journal),
            views: db.open_tree(TREE_VIEWS)?,
            committer: Committer::start()?,
            writes: Arc::default(),
            settle_after: UNSETTLED_HEADS_MAX.into(),
            index_on_drop: true.into(),
            stop_at: 0.into(),
            chunk_level: crate::merkle_pieces::CHUNK_LEVEL.into(),
            key_ring: Default::default(),
            history: Default::default(),
        };
        if let Some(why) = &lost {
            tracing::warn!(error = %why, "projections: a file lost writes sled kept; replaying the log");
        }
        if !current || lost.is_some() {
            projector.clear()?;
        }
        Ok(projector)
    }

    /// Empties every tree and the trail, and marks them of the current format.
    fn clear(&self) -> Result<(), ProjectionError> {
        // A clear that fails halfway leaves the trees torn: the next catch-up clears
        // them again (`recover`).
        self.writes.start();
        // First: projections a crash leaves half cleared are of no format, and the next
        // open clears them again (sled recovers a prefix of its writes).
        self.meta.remove(KEY_FORMAT)?;
        for tree in [&self.summary, &self.views, &self.meta] {
            tree.clear()?;
        }
        // Durable before the trail's files are cut: a replay writes its first runs to the
        // cut file before anything to sled, and a crash that lost a clear still in sled's
        // buffer would reopen the old trees (their position, their trail length) over the
        // new runs, which check; the trail would then lack lines and repeat others.
        self.meta.flush()?;
        self.trail.reset()?;
        self.meta.insert(KEY_FORMAT, PROJECTION_FORMAT)?;
        self.writes.end();
        Ok(())
    }

    /// Completes what a commit that stopped among its writes left torn (`Writes`), as
    /// opening the store does: applies again the journal record the marker names, whose
    /// writes are whole records and end with the batch's position, then lets the
    /// trail's index take the runs that record's length covers, which that commit wrote
    /// but did not publish. A commit that stopped before its marker wrote nothing to
    /// the trees: the record applied again is then the previous batch's, all of which
    /// is there already. A record or runs that do not check drop the projections, to
    /// be replayed, as at open. Without this the next catch-up would start from the
    /// position before the torn batch and apply its events again over trees that hold
    /// part of them (a repayment counted twice, or a chain head already moved past
    /// them).
    fn recover(&self) -> Result<(), ProjectionError> {
        self.writes.start();
        if self.meta.get(KEY_FORMAT)?.as_deref() != Some(PROJECTION_FORMAT) {
            // A clear stopped halfway.
            return self.clear();
        }
        if let Some(marker) = self.meta.get(KEY_JOURNAL)? {
            match Marker::decode(&marker).and_then(|m| self.journal.read(&m)) {
                Ok(record) => {
                    journal::apply(&record, &[&self.meta, &self.summary, &self.views])?;
                }
                Err(JournalError::Corrupt(why)) => {
                    tracing::warn!(error = %why, "projections: the torn batch's journal record does not check; replaying the log");
                    return self.clear();
                }
                Err(e) => return Err(e.into()),
            }
        }
        let trail_len = match self.meta.get(KEY_TRAIL_LEN)? {
            Some(v) => {
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt("trail length"))?)
            }
            None => 0,
        };
        match self.trail.adopt(trail_len) {
            Ok(()) => {}
            Err(TrailError::Corrupt(why)) => {
                tracing::warn!(error = %why, "projections: the torn batch's trail runs do not check; replaying the log");
                return self.clear();
            }
            Err(e) => return Err(e.into()),
        }
        self.writes.end();
        Ok(())
    }

    /// Runs `read`, a read of several records, until no batch's writes went in while it
    /// ran, at most `CONSISTENT_READ_ATTEMPTS_MAX` times, then answers
    /// `ProjectionError::Busy`. A batch's commit is plain inserts one by one (ADR 0016),
    /// so reads apart can see part of a batch: an instruction still pending on its issue
    /// day and already settled on a later one, a household listing a loan whose record is
    /// not in yet. A read that only ever takes one record needs none of this.
    pub fn read_consistent<T, E: From<ProjectionError>>(
        &self,
        mut read: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        for attempt in 1..=CONSISTENT_READ_ATTEMPTS_MAX {
            // Tried again, it holds the next batch's writes back while it reads: a read
            // longer than the time between two commits would otherwise seldom pass.
            let _held = (attempt > 1).then(|| self.writes.hold());
            let Some(start) = self.writes.read_start(WRITES_WAIT_MAX) else {
                continue;
            };
            let result = read();
            // An error too may come of a half batch (a record missing its partner).
            if self.writes.unchanged_since(start) {
                return result;
            }
        }
        Err(ProjectionError::Busy {
            attempts: CONSISTENT_READ_ATTEMPTS_MAX,
        }
        .into())
    }

    /// The last applied event (`Position::START` when nothing is applied).
    pub fn position(&self) -> Result<Position, ProjectionError> {
        match self.meta.get(KEY_POSITION)? {
            Some(v) => decode_position(&v).ok_or_else(|| corrupt("position")),
            None => Ok(Position::START),
        }
    }

    /// Applies every event up to the stream's current end, then returns how many were
    /// applied. A read that finds no server to answer (a cluster electing a leader) is
    /// tried again within `reader::TRANSIENT_READ_ATTEMPTS_MAX`; what was applied before
    /// it stays applied.
    pub async fn catch_up(
        &self,
        stream: &mut Stream,
        config: &LogConfig,
    ) -> Result<u64, ProjectionError> {
        let mut attempt = 1;
        loop {
            let caught_up = match reader::last_stream_sequence(stream).await {
                Ok(end) => match self.position()? {
                    at if at.last.stream_sequence > end => Err(ProjectionError::AheadOfLog {
                        position: at.last.stream_sequence,
                        end,
                    }),
                    _ => self.catch_up_to(stream, config, end).await,
                },
                Err(e) => Err(ProjectionError::Nats(e)),
            };
            match caught_up {
                Err(ProjectionError::Nats(e)) if attempt < reader::TRANSIENT_READ_ATTEMPTS_MAX => {
                    tracing::debug!(error = %e, attempt, "projections: reading the log failed; again");
                    tokio::time::sleep(reader::TRANSIENT_READ_BACKOFF * attempt).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Applies the events up to the message at stream sequence `end`, all of it (so two
    /// stores can be brought to the same position while the log grows), in batches of
    /// `PROJECTION_BATCH_EVENTS_MAX`; returns how many were applied.
    pub async fn catch_up_to(
        &self,
        stream: &mut Stream,
        config: &LogConfig,
        end: u64,
    ) -> Result<u64, ProjectionError> {
        self.catch_up_failing_at(stream, config, end, None).await
    }

    /// Bytes of the file holding the trail's index (`trail_heads`): page cache, not heap.
    pub fn trail_table_bytes(&self) -> u64 {
        self.trail.table_bytes()
    }

    /// Test hook: settle the trail's heads into its table once `settle_after` are
    /// waiting, and, unless `index_on_drop`, leave the index file as it is on drop, as a
    /// crash does.
    #[doc(hidden)]
    pub fn trail_test_hooks(&self, settle_after: usize, index_on_drop: bool) {
        self.settle_after.store(settle_after, Ordering::Relaxed);
        self.index_on_drop.store(index_on_drop, Ordering::Relaxed);
    }

    /// Test hook: every catch-up from now on stops at the message at `stream_sequence`
    /// and fails there, as at a log that cannot be followed.
    #[doc(hidden)]
    pub fn stop_at_for_tests(&self, stream_sequence: u64) {
        self.stop_at.store(stream_sequence, Ordering::Relaxed);
    }

    /// `catch_up_to`, whose commit stops (as a crash before it would) once the batch
    /// holds the `fail_at`-th event applied: for tests of exactly-once.
    #[doc(hidden)]
    pub async fn catch_up_failing_at(
        &self,
        stream: &mut Stream,
        config: &LogConfig,
        end: u64,
        fail_at: Option<u64>,
    ) -> Result<u64, ProjectionError> {
        let fail_at = fail_at.map(|n| (n, Crash::BeforeCommit));
        self.catch_up_crashing(stream, config, end, fail_at).await
    }

    /// `catch_up_to`, whose commit stops at `crash` once the batch holds the `n`-th event
    /// applied (`fail_at: (n, crash)`): for tests of exactly-once.
    #[doc(hidden)]
    pub async fn catch_up_crashing(
        &self,
        stream: &mut Stream,
        config: &LogConfig,
        end: u64,
        fail_at: Option<(u64, Crash)>,
    ) -> Result<u64, ProjectionError> {
        let _one_at_a_time = CATCH_UP.lock().await;
        // No commit is in flight under the lock: trees still torn were left so by one
        // that stopped among its writes, and are completed before the position is read.
        if self.writes.torn() {
            off_the_workers(|| self.recover())?;
        }
        // Nothing past the position: no event to judge, so no read of the key history
        // (`serve` asks this after every write and while idle).
        if self.position()?.resume_at() > end {
            return Ok(0);
        }
        self.load_key_ring(stream, config).await?;
        // Read after `end` was: it holds every key event stored before what is applied.
        let history = self.history.lock().expect("history lock").take();
        let keys = Partition::new(crate::audit::checkpoint::stream::KEYS_PARTITION)
            .expect("valid partition name");
        let history = crate::checkpoint::read::extend_key_ring(
            stream,
            config,
            history.unwrap_or_else(|| crate::checkpoint::read::KeyRingAt::genesis(keys)),
        )
        .await
        .map_err(|e| ProjectionError::Nats(e.to_string()))?;
        let start = self.position()?;
        let mut batch = Batch {
            projector: self,
            committed: start,
            position: start,
            heads: HashMap::new(),
            summaries: HashMap::new(),
            trees: HashMap::new(),
            touched: Vec::new(),
            history: Some(history),
            views: Staged {
                tree: self.views.clone(),
                writes: RefCell::new(HashMap::new()),
                committing: RefCell::new(VecDeque::new()),
            },
            lines: Vec::new(),
            line_ends: Vec::new(),
            trail_key: Vec::new(),
            trail: HashMap::new(),
            in_flight: 0,
            abandoned: Arc::default(),
            events: 0,
            applied: 0,
            fail_at,
            failed: false,
        };
        let read = reader::read_after(stream, &config.wildcard(), batch.position, end, |event| {
            batch.apply(config, &event)?;
            if batch.events >= PROJECTION_BATCH_EVENTS_MAX {
                off_the_workers(|| batch.commit(false))?;
            }
            Ok(())
        })
        .await;
        // What was applied before a failure is committed, as it would have been one event
        // at a time (unless an event failed halfway through its views: then its batch is
        // not written at all, `Batch::failed`); then the failure is reported.
        let committed = off_the_workers(|| {
            let committed = batch.commit(true);
            committed.and(batch.join())
        });
        *self.history.lock().expect("history lock") = batch.history.take();
        // The key history kept for the next catch-up: the committed head's, or read
        // again.
        let keys = crate::audit::checkpoint::stream::KEYS_PARTITION;
        let kept = match (&committed, batch.heads.get(keys)) {
            (Ok(()), Some(f)) if !batch.failed => Some((f.head.clone(), f.key_ring().cloned())),
            (Ok(()), None) => self.key_ring.lock().expect("key ring lock").take(),
            _ => None,
        };
        *self.key_ring.lock().expect("key ring lock") = kept;
        // A failed commit first: it is why the read stopped, when it stopped inside a
        // commit, and it must not pass for a transient read error that is retried.
        committed?;
        read.map_err(|e| match e {
            reader::ReadError::Nats(m) => ProjectionError::Nats(m),
            reader::ReadError::Visit(v) => v,
        })?;
        // fsync of the lines file and the index: off the workers, as the commits are.
        off_the_workers(|| self.trail.write_index(false, || self.flush_sled()))?;
        Ok(batch.applied)
    }

    /// Test hook: holds every catch-up of this process until the guard is dropped, as a
    /// long one (a replay from the start) does.
    #[doc(hidden)]
    pub async fn hold_catch_ups() -> tokio::sync::MutexGuard<'static, ()> {
        CATCH_UP.lock().await
    }

    /// `rebuild`, whose replay's commit stops at `crash` once the batch holds the `n`-th
    /// event applied (`fail_at: (n, crash)`): for tests of a crash inside a rebuild.
    #[doc(hidden)]
    pub async fn rebuild_crashing(
        &self,
        stream: &mut Stream,
        config: &LogConfig,
        end: u64,
        fail_at: (u64, Crash),
    ) -> Result<u64, ProjectionError> {
        {
            let _one_at_a_time = CATCH_UP.lock().await;
            self.clear()?;
        }
        self.catch_up_crashing(stream, config, end, Some(fail_at))
            .await
    }

    /// Drops every projection and replays the log from the start.
    pub async fn rebuild(
        &self,
        stream: &mut Stream,
        config: &LogConfig,
    ) -> Result<u64, ProjectionError> {
        {
            // Not while a catch-up commits: one writer of the trees at a time (`Writes`).
            let _one_at_a_time = CATCH_UP.lock().await;
            self.clear()?;
        }
        let applied = self.catch_up(stream, config).await?;
        // Under the catch-up lock: no commit may publish heads between the flush and the
        // settle in `write_index`.
        let _one_at_a_time = CATCH_UP.lock().await;
        self.trail.write_index(true, || self.flush_sled())?;
        Ok(applied)
    }

    /// Makes every batch committed so far durable: then the trail's table may take
    /// their heads (`TrailStore::settle`).
    fn flush_sled(&self) -> Result<(), TrailError> {
        Ok(self.meta.flush().map(drop)?)
    }

    /// A partition's head and the messages it holds, as the last commit left them, and
    /// of the key partition its key history there (`load_key_ring`).
    fn stored_follower(&self, partition: &Partition) -> Result<Follower, ProjectionError> {
        let head = self.stored_head(partition)?;
        let held = match self.meta.get(held_key(partition.as_str()))? {
            Some(v) => decode_held(&v).ok_or_else(|| corrupt("held messages"))?,
            None => Holding::default(),
        };
        let keys = match &*self.key_ring.lock().expect("key ring lock") {
            Some((at, ring)) if *at == head => ring.clone(),
            _ => None,
        };
        Ok(Follower::resume_with_keys(head, held, keys))
    }

    /// Reads the key partition's key history up to its stored head, unless it is kept
    /// already: the follower of that partition judges each rotation against it, as every
    /// reader of the partition does (`log::follow`). The partition holds a few events.
    async fn load_key_ring(
        &self,
        stream: &Stream,
        config: &LogConfig,
    ) -> Result<(), ProjectionError> {
        let keys = Partition::new(crate::audit::checkpoint::stream::KEYS_PARTITION)
            .expect("valid partition name");
        let head = self.stored_head(&keys)?;
        let kept =
            matches!(&*self.key_ring.lock().expect("key ring lock"), Some((at, _)) if *at == head);
        if kept {
            return Ok(());
        }
        let ring = crate::checkpoint::read::key_ring_at(stream, config, &head)
            .await
            .map_err(|e| ProjectionError::Nats(e.to_string()))?;
        if ring.is_none() {
            tracing::warn!(
                sequence = head.sequence,
                "projections: the key partition's stored head is not on its chain as readers \
                 follow it; every rotation after it is held"
            );
        }
        *self.key_ring.lock().expect("key ring lock") = Some((head, ring));
        Ok(())
    }

    fn stored_head(&self, partition: &Partition) -> Result<ChainHead, ProjectionError> {
        Ok(match self.meta.get(head_key(partition.as_str()))? {
            Some(v) => {
                let (sequence, hash) = decode_head(&v).ok_or_else(|| corrupt("head"))?;
                ChainHead {
                    partition: partition.clone(),
                    sequence,
                    hash,
                }
            }
            None => ChainHead::genesis(partition.clone()),
        })
    }

    fn stored_summary(&self, name: &str) -> Result<PartitionSummary, ProjectionError> {
        Ok(self.summary(name)?.unwrap_or_default())
    }

    /// A partition's Merkle tree as the last commit left it; a new one at the current
    /// chunk level for a partition with no event applied.
    fn stored_tree(&self, name: &str) -> Result<Tree, ProjectionError> {
        match self.meta.get(tree_nodes::tree_key(name))? {
            Some(v) => Tree::decode(&v).ok_or_else(|| corrupt("merkle tree")),
            None => Ok(Tree::new(self.chunk_level.load(Ordering::Relaxed))),
        }
    }

    /// The level of the smallest subtrees stored of partitions whose first event is
    /// applied from now on (at most `tree_nodes::CHUNK_LEVEL_MAX`). Tests make it small
    /// so that a few events span many chunks.
    pub fn set_chunk_level(&self, level: u32) {
        self.chunk_level
            .store(level.min(tree_nodes::CHUNK_LEVEL_MAX), Ordering::Relaxed);
    }

    /// A partition's stored Merkle tree: its chunk level and size (the events applied);
    /// None before its first event.
    pub fn merkle_tree(&self, partition: &str) -> Result<Option<(u32, u64)>, ProjectionError> {
        match self.meta.get(tree_nodes::tree_key(partition))? {
            Some(v) => {
                let tree = Tree::decode(&v).ok_or_else(|| corrupt("merkle tree"))?;
                Ok(Some((tree.chunk_level, tree.frontier.size())))
            }
            None => Ok(None),
        }
    }

    /// The stored root of the complete subtree of leaves `[index·2^level,
    /// (index+1)·2^level)` of a partition, if it is stored (level at or above the
    /// partition's chunk level, and complete).
    pub fn merkle_node(
        &self,
        partition: &str,
        level: u32,
        index: u64,
    ) -> Result<Option<crate::merkle::Hash32>, ProjectionError> {
        match self
            .meta
            .get(tree_nodes::node_key(partition, level, index))?
        {
            Some(v) => Ok(Some(
                v.as_ref().try_into().map_err(|_| corrupt("merkle node"))?,
            )),
            None => Ok(None),
        }
    }

    /// Where chunk `chunk` of a partition starts: the chain's head before its first event
    /// and the log position after that head's event (the genesis and `Position::START`
    /// for chunk 0). None when it is not stored (not reached, or messages were held
    /// there).
    pub fn merkle_chunk_start(
        &self,
        partition: &Partition,
        chunk: u64,
    ) -> Result<Option<(ChainHead, Position)>, ProjectionError> {
        let Some((level, _)) = self.merkle_tree(partition.as_str())? else {
            return Ok(None);
        };
        if chunk == 0 {
            return Ok(Some((
                ChainHead::genesis(partition.clone()),
                Position::START,
            )));
        }
        let Some(v) = self
            .meta
            .get(tree_nodes::chunk_key(partition.as_str(), chunk))?
        else {
            return Ok(None);
        };
        let (hash, position) = tree_nodes::decode_chunk_start(&v, decode_position)
            .ok_or_else(|| corrupt("merkle chunk start"))?;
        let head = ChainHead {
            partition: partition.clone(),
            sequence: chunk << level,
            hash,
        };
        Ok(Some((head, position)))
    }

    /// Test hook: replaces one stored subtree root (None: removes it), as a store that
    /// lost it or holds it corrupt would.
    #[doc(hidden)]
    pub fn put_merkle_node_for_tests(
        &self,
        partition: &str,
        level: u32,
        index: u64,
        root: Option<crate::merkle::Hash32>,
    ) {
        let key = tree_nodes::node_key(partition, level, index);
        match root {
            Some(root) => self.meta.insert(key, &root[..]).map(drop),
            None => self.meta.remove(key).map(drop),
        }
        .expect("test store");
    }

    /// Every tree's records in key order, by tree name; the trail one record a line
    /// (`trail_lines`), so what they show does not depend on how the log was batched.
    pub fn records(&self) -> [(&'static str, Records<'_>); 4] {
        [
            // The trail file's length and the journal's marker depend on how the log was
            // batched, not on what the projections hold.
            (
                TREE_META,
                Box::new(raw_records(&self.meta).filter(
                    |kv| !matches!(kv, Ok((k, _)) if k == KEY_TRAIL_LEN || k == KEY_JOURNAL),
                )),
            ),
            (TREE_SUMMARY, raw_records(&self.summary)),
            (TREE_TRAIL, trail_lines(&self.trail)),
            (TREE_VIEWS, raw_records(&self.views)),
        ]
    }

    /// The summary of `partition`; None when no event of it has been applied.
    pub fn summary(&self, partition: &str) -> Result<Option<PartitionSummary>, ProjectionError> {
        match self.summary.get(partition)? {
            Some(v) => Ok(Some(
                views::decode_record(&v).map_err(|e| corrupt(&e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    pub fn summaries(&self) -> Result<BTreeMap<String, PartitionSummary>, ProjectionError> {
        self.summary
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let s = views::decode_record(&v).map_err(|e| corrupt(&e.to_string()))?;
                Ok((String::from_utf8_lossy(&k).into_owned(), s))
            })
            .collect()
    }

    /// The audit trail of one subject (e.g. "household:0100101-000001"), oldest first
    /// within each partition.
    pub fn trail(&self, subject: &str) -> Result<Vec<TrailEntry>, ProjectionError> {
        let mut lines = Vec::new();
        for run in self.trail_runs(subject) {
            lines.extend(run?);
        }
        Ok(lines)
    }

    /// A subject's audit trail in one partition, newest line first, read a run's worth of
    /// lines at a time from the end: a reader looking for a recent line reads back only
    /// as far as it goes, not the subject's whole history.
    pub fn trail_newest_first<'s>(
        &'s self,
        subject: &str,
        partition: &str,
    ) -> impl Iterator<Item = Result<TrailEntry, ProjectionError>> + 's {
        let mut key = Vec::new();
        trail_key(&mut key, subject, partition);
        let lines = match self.trail.lengths(&key) {
            Ok(keys) => Ok(keys
                .into_iter()
                .find(|(k, _)| *k == key)
                .map_or(0, |(_, lines)| lines)),
            Err(e) => Err(ProjectionError::from(e)),
        };
        let step = TRAIL_RUN_LINES_MAX as u64;
        let (lines, failed) = match lines {
            Ok(lines) => (lines, None),
            Err(e) => (0, Some(Err(e))),
        };
        let pages = (0..lines.div_ceil(step)).rev().map(move |page| {
            let from = page * step;
            let take = step.min(lines - from) as usize;
            self.trail
                .page(&key, from, take)
                .map_err(ProjectionError::from)
        });
        failed.into_iter().chain(pages.flat_map(|page| match page {
            Ok(lines) => lines.into_iter().rev().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        }))
    }

    /// A subject's audit trail in the order of `trail`, one stored run (at most
    /// `TRAIL_RUN_LINES_MAX` lines) at a time: a commune's trail of a year holds hundreds
    /// of thousands of lines, and a reader that prints them as they come holds one run.
    pub fn trail_runs(
        &self,
        subject: &str,
    ) -> impl Iterator<Item = Result<Vec<TrailEntry>, ProjectionError>> + '_ {
        self.trail
            .runs(&subject_prefix(subject))
            .map(|run| run.map_err(ProjectionError::from))
    }

    /// One page of a subject's audit trail: `take` entries after the first `skip`, and
    /// whether more follow. Finds the run holding the page's last line in O(log runs)
    /// reads (`trail_store`), then reads back to its first: a long history is shown a
    /// page at a time without reading what comes before the page.
    pub fn trail_page(
        &self,
        subject: &str,
        skip: usize,
        take: usize,
    ) -> Result<(Vec<TrailEntry>, bool), ProjectionError> {
        let mut page = Vec::with_capacity(take);
        let mut skip = skip as u64;
        for (key, len) in self.trail.lengths(&subject_prefix(subject))? {
            if skip >= len {
                skip -= len;
                continue;
            }
            if page.len() == take {
                return Ok((page, true));
            }
            let want = take - page.len();
            page.extend(self.trail.page(&key, skip, want)?);
            if page.len() == take && skip + (want as u64) < len {
                return Ok((page, true));
            }
            skip = 0;
        }
        Ok((page, false))
    }

    /// Page `page` (from 0) of household `household`'s history, `lines` a page: reads
    /// O((page + 1) × lines) trail lines, never the trail past the page.
    pub fn household_history(
        &self,
        household: &str,
        page: usize,
        lines: usize,
    ) -> Result<HistoryPage, ProjectionError> {
        let (lines, more) = self.trail_page(
            &format!("household:{household}"),
            page.saturating_mul(lines),
            lines,
        )?;
        Ok(HistoryPage { lines, more })
    }

    fn view<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, ProjectionError> {
        match self.views.get(key)? {
            Some(v) => views::decode_record(&v)
                .map(Some)
                .map_err(|e| corrupt(&format!("{key}: {e}"))),
            None => Ok(None),
        }
    }

    /// What a household received: (month "YYYY-MM", channel name, totals), in month order.
    pub fn received(
        &self,
        household: &str,
    ) -> Result<Vec<(String, String, crate::domain::payments::reconcile::Received)>, ProjectionError>
    {
        let prefix = views::received_prefix(household);
        self.views
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let key = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let (month, channel) =
                    key.split_once('/').ok_or_else(|| corrupt("received key"))?;
                let r = views::decode_record(&v).map_err(|e| corrupt(&e.to_string()))?;
                Ok((month.to_owned(), channel.to_owned(), r))
            })
            .collect()
    }

    /// One day's reconciliation of a partition, per gateway, as `reconcile::reconcile`
    /// reports it for `date`: the day's lines and its instructions still without a result,
    /// read from the projections in O(result). `None` when the partition has a payment
    /// event recorded after `as_of`: a report as of an earlier day leaves those out, so it
    /// is folded from the log instead.
    pub fn reconciliation_day(
        &self,
        partition: &str,
        date: NaiveDate,
        as_of: NaiveDate,
        pending_days: u32,
    ) -> Result<Option<BTreeMap<GatewayId, GatewayDay>>, ProjectionError> {
        self.read_consistent(|| self.reconciliation_day_read(partition, date, as_of, pending_days))
    }

    /// `reconciliation_day` as its records are read, for a caller that reads several
    /// days as one state (`read_consistent` around them all).
    pub(crate) fn reconciliation_day_read(
        &self,
        partition: &str,
        date: NaiveDate,
        as_of: NaiveDate,
        pending_days: u32,
    ) -> Result<Option<BTreeMap<GatewayId, GatewayDay>>, ProjectionError> {
        let progress: ReconcileProgress = self
            .view(&views::reconcile_progress_key(partition))?
            .unwrap_or_default();
        if progress.latest.is_some_and(|latest| latest > as_of) {
            return Ok(None);
        }
        let mut days = BTreeMap::new();
        if date > as_of {
            return Ok(Some(days));
        }
        let prefix = views::reconcile_day_prefix(partition, date);
        for kv in self.views.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let gateway = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|g| GatewayId::parse(g).ok())
                .ok_or_else(|| corrupt("reconciliation day key"))?;
            let day: GatewayDay = views::decode_record(&v).map_err(|e| corrupt(&e.to_string()))?;
            days.insert(gateway, day);
        }
        let prefix = views::reconcile_mismatch_prefix(partition, date);
        for kv in self.views.scan_prefix(&prefix) {
            let (_, v) = kv?;
            let (gateway, mismatch): (GatewayId, reconcile::Mismatch) =
                views::decode_record(&v).map_err(|e| corrupt(&e.to_string()))?;
            days.entry(gateway).or_default().mismatches.push(mismatch);
        }
        if reconcile::pending_overdue(date, as_of, pending_days) {
            let prefix = views::reconcile_pending_prefix(partition, date);
            for kv in self.views.scan_prefix(&prefix) {
                let (k, v) = kv?;
                let id = std::str::from_utf8(&k[prefix.len()..])
                    .ok()
                    .and_then(InstructionId::parse)
                    .ok_or_else(|| corrupt("pending instruction key"))?;
                let line: PendingLine =
                    views::decode_record(&v).map_err(|e| corrupt(&e.to_string()))?;
                let day = days.entry(line.gateway).or_default();
                day.pending_overdue.add(line.amount);
                day.pending_overdue_ids.push(id);
            }
            // In instruction order, as the report over the log lists them.
            for day in days.values_mut() {
                day.pending_overdue_ids.sort_unstable();
            }
        }
        Ok(Some(days))
    }

    /// The days on which `partition` has reconciliation lines (an instruction issued, a
    /// result or a mismatch recorded), oldest first: O(the partition's day lines).
    pub fn reconciliation_days(&self, partition: &str) -> Result<Vec<NaiveDate>, ProjectionError> {
        let prefix = views::reconcile_days_prefix(partition);
        let mut days: Vec<NaiveDate> = Vec::new();
        for kv in self.views.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let day = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(date, _gateway)| date.parse::<NaiveDate>().ok())
                .ok_or_else(|| corrupt("reconciliation day key"))?;
            if days.last() != Some(&day) {
                days.push(day);
            }
        }
        Ok(days)
    }

    /// The first `due_max` instructions of `partition` still without a result whose
    /// channel's timeout has run out by `as_of` (`Instruction::timeout_due_on`), oldest
    /// issue day first. Reads the instructions still pending that were issued at least the
    /// shortest timeout before `as_of`, in order, until it has `due_max`: the ones due, and
    /// the slower channels' (post office) not yet due among them; never the log. A caller
    /// handling a page asks for one more than the page to learn whether more are left, so
    /// a backlog costs each page its own length, not the backlog's.
    pub fn due_for_timeout(
        &self,
        partition: &str,
        as_of: NaiveDate,
        due_max: usize,
    ) -> Result<Vec<InstructionId>, ProjectionError> {
        use crate::domain::payments::entitlements::TIMEOUT_DAYS_MIN;
        let Some(latest_issue) =
            as_of.checked_sub_days(chrono::Days::new(u64::from(TIMEOUT_DAYS_MIN)))
        else {
            return Ok(Vec::new());
        };
        let prefix = views::reconcile_pending_partition_prefix(partition);
        let mut due = Vec::new();
        for kv in self.views.scan_prefix(&prefix) {
            if due.len() >= due_max {
                break;
            }
            let (k, _) = kv?;
            let (issued_on, id) = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(date, id)| {
                    Some((date.parse::<NaiveDate>().ok()?, InstructionId::parse(id)?))
                })
                .ok_or_else(|| corrupt("pending instruction key"))?;
            if issued_on > latest_issue {
                break;
            }
            let instruction: views::InstructionView = self
                .view(&views::instruction_key(partition, &id))?
                .ok_or_else(|| corrupt("pending instruction without its record"))?;
            if instruction.channel.timeout_due_on(issued_on) <= as_of {
                due.push(id);
            }
        }
        Ok(due)
    }

    /// Up to `max` instructions routed to `gateway` still waiting for a result, oldest
    /// partition and entitlement first, after the instruction `after` of its partition
    /// when given (a page's last): O(max), whatever the log's length.
    pub fn gateway_pending(
        &self,
        gateway: &str,
        after: Option<(&str, &InstructionId)>,
        max: usize,
    ) -> Result<Vec<(String, views::GatewayPendingView)>, ProjectionError> {
        use std::ops::Bound;
        let prefix = views::gateway_pending_prefix(gateway);
        let start = match after {
            Some((partition, id)) => {
                Bound::Excluded(views::gateway_pending_key(gateway, partition, id).into_bytes())
            }
            None => Bound::Included(prefix.clone().into_bytes()),
        };
        self.views
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take_while(|kv| {
                kv.as_ref()
                    .map_or(true, |(k, _)| k.starts_with(prefix.as_bytes()))
            })
            .take(max)
            .map(|kv| {
                let (k, v) = kv?;
                let partition = std::str::from_utf8(&k[prefix.len()..])
                    .ok()
                    .and_then(|rest| rest.split('/').next())
                    .ok_or_else(|| corrupt("gateway pending key"))?
                    .to_owned();
                let line = views::decode_record(&v).map_err(|e| corrupt(&e.to_string()))?;
                Ok((partition, line))
            })
            .collect()
    }

    /// The partition and instruction whose post by `gateway` with transaction id `txn`
    /// and `outcome` was accepted first, across every partition applied.
    pub fn transaction_use(
        &self,
        gateway: &str,
        outcome: Outcome,
        txn: &str,
    ) -> Result<Option<views::TransactionUse>, ProjectionError> {
        self.view(&views::transaction_use_key(gateway, outcome, txn))
    }

    /// Whether `partition` has a payment event applied.
    pub fn has_payments(&self, partition: &str) -> Result<bool, ProjectionError> {
        Ok(self
            .views
            .contains_key(views::reconcile_progress_key(partition))?)
    }

    /// Where the event with the household's latest sealed personal data sits.
    pub fn sealed_at(&self, id: &str) -> Result<Option<EventAt>, ProjectionError> {
        let record: Option<HouseholdRecord> = self.view(&views::household_key(id))?;
        Ok(record
            .and_then(|r| r.sealed_at)
            .map(|(stream_sequence, index)| EventAt {
                stream_sequence,
                index,
            }))
    }

    /// A household's view, the record of each loan it lists and what it received: what
    /// the household's page (`GET /v1/households/{id}`, `household show`) shows, read as
    /// one state (`read_consistent`). The batch that approves a loan inserts the
    /// household's record, which lists it, before the loan's record: read apart, the
    /// household could list a loan whose record is not there yet.
    /// With `history` (page, lines), that page of its history too (`household_history`).
    pub fn household_records(
        &self,
        id: &str,
        history: Option<(usize, usize)>,
    ) -> Result<Option<HouseholdRecords>, ProjectionError> {
        self.read_consistent(|| self.household_records_read(id, history))
    }

    fn household_records_read(
        &self,
        id: &str,
        history: Option<(usize, usize)>,
    ) -> Result<Option<HouseholdRecords>, ProjectionError> {
        let Some(view) = self.household(id)? else {
            return Ok(None);
        };
        let mut loans = Vec::with_capacity(view.loans.len());
        for reference in &view.loans {
            let (partition, number) = crate::book::parse_loan_ref(reference)
                .ok_or_else(|| corrupt(&format!("household {id} lists loan {reference:?}")))?;
            // Written in the same batch as the reference, and before it is read here.
            let loan = self.loan(&partition, number)?.ok_or_else(|| {
                corrupt(&format!(
                    "household {id} lists loan {reference} without its record"
                ))
            })?;
            loans.push((partition, loan));
        }
        let received = self.received(id)?;
        let history = match history {
            Some((page, lines)) => Some(self.household_history(id, page, lines)?),
            None => None,
        };
        Ok(Some(HouseholdRecords {
            view,
            loans,
            received,
            history,
        }))
    }

    pub fn household(&self, id: &str) -> Result<Option<HouseholdView>, ProjectionError> {
        let record: Option<HouseholdRecord> = self.view(&views::household_key(id))?;
        Ok(record.map(|r| r.view))
    }

    pub fn loan(&self, partition: &str, number: u64) -> Result<Option<Loan>, ProjectionError> {
        self.view(&views::loan_key(partition, number))
    }

    /// Every loan of a partition, in loan-number order.
    pub fn loans(&self, partition: &str) -> Result<Vec<Loan>, ProjectionError> {
        self.loans_iter(partition).collect()
    }

    /// A partition's loans one at a time, in the order of `loans`: a job over a
    /// province's loans (the overdue run) holds one loan, not hundreds of thousands.
    pub fn loans_iter(
        &self,
        partition: &str,
    ) -> impl Iterator<Item = Result<Loan, ProjectionError>> + use<'_> {
        self.views
            .scan_prefix(format!("loan/{partition}/"))
            .values()
            .map(|v| views::decode_record(&v?).map_err(|e| corrupt(&e.to_string())))
    }

    /// A commune's last `max` months with loan activity, oldest first: one reverse
    /// prefix scan of `max` keys, whatever the commune's age (`commune_and_months`).
    pub fn commune_months(
        &self,
        commune: &str,
        max: usize,
    ) -> Result<Vec<views::CommuneMonthView>, ProjectionError> {
        Ok(self.commune_and_months(commune, max)?.1)
    }

    /// A commune's portfolio and its last `max` months with loan activity, oldest
    /// first, read as one state (`read_consistent`): the months' balances are worked back
    /// from the portfolio, and a batch inserts a commune's months before its portfolio,
    /// so read apart the months could close on a portfolio that does not hold their
    /// changes yet.
    pub fn commune_and_months(
        &self,
        commune: &str,
        max: usize,
    ) -> Result<(Option<CommunePortfolio>, Vec<views::CommuneMonthView>), ProjectionError> {
        self.read_consistent(|| self.commune_and_months_read(commune, max))
    }

    fn commune_and_months_read(
        &self,
        commune: &str,
        max: usize,
    ) -> Result<(Option<CommunePortfolio>, Vec<views::CommuneMonthView>), ProjectionError> {
        let stored = self
            .views
            .scan_prefix(views::commune_month_prefix(commune))
            .values()
            .rev()
            .take(max)
            .map(|v| views::decode_record(&v?).map_err(|e| corrupt(&e.to_string())))
            .collect::<Result<Vec<views::CommuneMonth>, _>>()?;
        // Newest first: the latest month closes on the portfolio as it stands (no event
        // is dated after today), each earlier one on the next one's less its changes.
        let folio = self.commune(commune)?;
        let (mut outstanding, mut overdue) = folio
            .as_ref()
            .map_or_else(Default::default, |f| (f.outstanding, f.overdue));
        let mut months = Vec::with_capacity(stored.len());
        for m in stored {
            months.push(views::CommuneMonthView {
                month: m.month,
                disbursed: m.disbursed,
                collected: m.collected,
                outstanding,
                overdue,
            });
            outstanding -= m.outstanding_change;
            overdue -= m.overdue_change;
        }
        months.reverse();
        Ok((folio, months))
    }

    pub fn commune(&self, commune: &str) -> Result<Option<CommunePortfolio>, ProjectionError> {
        self.view(&views::commune_key(commune))
    }

    pub fn communes(&self) -> Result<Vec<CommunePortfolio>, ProjectionError> {
        self.communes_in("")
    }

    /// The communes whose code starts with `prefix` (a partition's: its province code),
    /// in code order: one prefix scan of them, not of every commune of the country.
    pub fn communes_in(&self, prefix: &str) -> Result<Vec<CommunePortfolio>, ProjectionError> {
        self.views
            .scan_prefix(views::commune_key(prefix))
            .values()
            .map(|v| views::decode_record(&v?).map_err(|e| corrupt(&e.to_string())))
            .collect()
    }

    pub fn trial_balance(
        &self,
        partition: &str,
    ) -> Result<Option<TrialBalanceView>, ProjectionError> {
        self.view(&views::trial_key(partition))
    }

    /// A hash of every projection record, to compare two stores (rebuild = incremental).
    pub fn fingerprint(&self) -> Result<Digest, ProjectionError> {
        let mut hasher = blake3::Hasher::new();
        for (_, records) in self.records() {
            for kv in records {
                let (k, v) = kv?;
                hasher.update(&(k.len() as u64).to_be_bytes());
                hasher.update(&k);
                hasher.update(&(v.len() as u64).to_be_bytes());
                hasher.update(&v);
            }
        }
        Ok(Digest(*hasher.finalize().as_bytes()))
    }
}

/// Closing the projections writes the trail's index file, so the next open reads it
/// instead of folding the trail file's runs since it was last written.
impl Drop for Projector {
    fn drop(&mut self) {
        if !self.index_on_drop.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.trail.write_index(true, || self.flush_sled()) {
            tracing::warn!(error = %e, "projections: writing the trail's index failed");
        }
    }
}

impl Batch<'_> {
    /// Checks the event against its partition's head and folds it into the batch.
    fn apply(
        &mut self,
        config: &LogConfig,
        event: &reader::RawEvent,
    ) -> Result<(), ProjectionError> {
        if self.position.covers(event) {
            return Ok(()); // already applied: exactly once
        }
        let seq = event.stream_sequence;
        let stop_at = self.projector.stop_at.load(Ordering::Relaxed);
        if stop_at != 0 && seq >= stop_at {
            return Err(ProjectionError::Broken {
                stream_sequence: seq,
                cause: ChainBreak::Recorded("a test stops the projections here".into()),
            });
        }
        // `LogConfig::chain_of`, with the partition's name checked (and allocated) once a
        // batch, when its head is loaded, not once an event.
        let name = match config.partition_of(&event.subject) {
            Some(name) if self.heads.contains_key(name) => Some(name),
            Some(name) => match Partition::new(name) {
                Ok(partition) => {
                    let follower = self.projector.stored_follower(&partition)?;
                    let summary = self.projector.stored_summary(name)?;
                    let tree = self.projector.stored_tree(name)?;
                    self.heads.insert(name.to_owned(), follower);
                    self.summaries.insert(name.to_owned(), summary);
                    self.trees.insert(name.to_owned(), tree);
                    Some(name)
                }
                Err(_) => None,
            },
            None => None,
        };
        let Some(name) = name else {
            // A stray message: in no chain, so it changes nothing (`LogConfig::chain_of`).
            tracing::warn!(
                stream_sequence = seq,
                subject = %event.subject,
                "projections: a message on a subject that names no partition; passed over"
            );
            self.position = Position::after(event);
            self.events += 1;
            return Ok(());
        };
        let keys = match &self.history {
            Some(history) => history.keys(),
            None => crate::log::follow::Keys::NotRead,
        };
        let follower = self.heads.get_mut(name).expect("loaded above");
        let checked = follower.check(event, keys);
        if !self.touched.iter().any(|t| t == name) {
            self.touched.push(name.to_owned());
        }
        let (next, envelope) = match &checked {
            Checked::Event { next, envelope, .. } => (next, envelope),
            Checked::KeysNeeded => {
                // The catch-up reads the key history before any event.
                return Err(ProjectionError::Nats(
                    "the key history was not read before the projections' catch-up".into(),
                ));
            }
            Checked::Held(_) | Checked::HeldAlready => {
                // Held until the operator's exclusion; it changes no view.
                follower.accept(checked);
                self.position = Position::after(event);
                self.events += 1;
                return Ok(());
            }
        };
        let s = self.summaries.get_mut(name).expect("loaded with the head");
        s.events += 1;
        s.head_sequence = next.sequence;
        s.last_recorded_at_unix_ms = envelope.recorded_at_unix_ms;
        // Looked up before it is inserted: the type's name is allocated once a partition,
        // not once an event.
        match s.events_by_type.get_mut(&envelope.event_type) {
            Some(n) => *n += 1,
            None => {
                s.events_by_type.insert(envelope.event_type.clone(), 1);
            }
        }
        let no_actor = crate::proto::Actor::default();
        let actor = envelope.actor.as_ref().unwrap_or(&no_actor);
        let detail = views::detail(envelope.payload.as_ref());
        trail_codec::encode_line_into(
            &mut self.lines,
            &trail_codec::Line {
                partition: name,
                sequence: next.sequence,
                stream_sequence: seq,
                hash: &next.hash,
                recorded_at_unix_ms: envelope.recorded_at_unix_ms,
                actor: &actor.id,
                role: &actor.role,
                event_type: &envelope.event_type,
                detail: &detail,
            },
        );
        let line = self.line_ends.len();
        self.line_ends.push(self.lines.len());
        for subject in &envelope.subjects {
            let key = &mut self.trail_key;
            trail_key(key, subject, name);
            // Looked up by the bytes first: the key is allocated once a batch per subject.
            let lines = match self.trail.get_mut(key.as_slice()) {
                Some(lines) => lines,
                None => self.trail.entry(key.clone()).or_default(),
            };
            // A subject named twice by one event is one line of its trail.
            if lines.last().is_none_or(|(s, _)| *s != next.sequence) {
                lines.push((next.sequence, line));
            }
        }
        if let Err(e) = views::apply(
            &self.views,
            name,
            next.sequence,
            event.at(),
            &actor.id,
            envelope.actor.as_ref(),
            envelope.payload.as_ref(),
        ) {
            // The summary, the trail and some of the views already took part of this
            // event, and the position does not move past it: committed, they would be
            // taken again by every retry (a trial balance posted twice). Nothing of the
            // batch is written; the next catch-up applies it again from its start.
            self.failed = true;
            return Err(e);
        }
        // The head moves with the position, once the event's views are staged.
        let follower = self.heads.get_mut(name).expect("loaded above");
        follower.accept(checked);
        let after = Position::after(event);
        let tree = self.trees.get_mut(name).expect("loaded with the head");
        let (head, quiet) = (&follower.head, follower.held().is_empty());
        if !tree.push(
            name,
            head.sequence,
            &head.hash,
            &after,
            quiet,
            encode_position,
        ) {
            // A stored tree that does not end at the head (a bug): it stops growing, and
            // proofs of sizes past it read the chain.
            tracing::warn!(
                partition = name,
                sequence = head.sequence,
                "projections: the partition's Merkle tree does not follow its head"
            );
        }
        self.position = after;
        self.events += 1;
        self.applied += 1;
        Ok(())
    }

    /// Writes everything the batch changed and its last position as one step: on
    /// the committer's thread unless it is the `last` of the catch-up (`write`).
    fn commit(&mut self, last: bool) -> Result<(), ProjectionError> {
        if self.events == 0 || self.failed {
            return Ok(());
        }
        let result = self.write(last);
        self.failed = result.is_err();
        result
    }

    /// Starts the batch's commit on the committer's thread once fewer than
    /// `COMMITS_IN_FLIGHT_MAX` are in flight, and returns: the next batch is applied
    /// meanwhile, reading this one's view records from `Staged::committing` until the
    /// commit is done. The commit writes the trail's runs, then the batch's journal
    /// record and its marker, then the record's writes as plain sled inserts
    /// (`journal`): they take sled's global lock shared, so the next batch's reads of the
    /// trees go on meanwhile. One commit at a time, in order, each over the position the
    /// previous one wrote. The `last` batch of a catch-up is committed here, after the
    /// others, as nothing waits to be applied.
    fn write(&mut self, last: bool) -> Result<(), ProjectionError> {
        if last {
            self.join()?;
        } else {
            while self.in_flight >= COMMITS_IN_FLIGHT_MAX {
                self.join_one()?;
            }
        }
        let p = self.projector;
        let heads: Vec<(Vec<u8>, Vec<u8>)> = self
            .touched
            .iter()
            .map(|name| {
                let h = &self.heads[name].head;
                (head_key(name), encode_head(h.sequence, &h.hash))
            })
            .collect();
        // The messages each touched partition holds (none: the key is removed).
        let held: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .touched
            .iter()
            .map(|name| (held_key(name), encode_held(self.heads[name].held())))
            .collect();
        // Each touched partition's frontier, and the subtree roots and chunk starts its
        // events completed.
        let mut trees: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for name in &self.touched {
            let tree = self.trees.get_mut(name).expect("loaded with the head");
            trees.append(&mut tree.writes);
            trees.push((tree_nodes::tree_key(name), tree.encode()));
        }
        let summaries: Vec<(String, Vec<u8>)> = self
            .touched
            .iter()
            .map(|name| {
                let summary = self.summaries.get_mut(name).expect("loaded with the head");
                // Set here, not at each event: hex costs an allocation.
                summary.head_hash = self.heads[name].head.hash.to_hex();
                (name.clone(), views::encode_record(&*summary))
            })
            .collect();
        // Handed to the commit; the next batch's start at this one's size, as batches are
        // alike: growing them from empty again cost reallocations and rehashes, each a
        // copy of what they held.
        let sizes = (self.lines.len(), self.line_ends.len(), self.trail.len());
        let lines = std::mem::replace(&mut self.lines, Vec::with_capacity(sizes.0));
        let line_ends = std::mem::replace(&mut self.line_ends, Vec::with_capacity(sizes.1));
        let subjects = std::mem::replace(&mut self.trail, HashMap::with_capacity(sizes.2));
        let crash = self
            .fail_at
            .and_then(|(n, crash)| (self.applied >= n).then_some(crash));
        let views = {
            let mut writes = self.views.writes.borrow_mut();
            let next = HashMap::with_capacity(writes.len());
            Arc::new(std::mem::replace(&mut *writes, next))
        };
        self.views
            .committing
            .borrow_mut()
            .push_back(Arc::clone(&views));
        let position = encode_position(&self.position);
        let base = (self.committed != Position::START).then(|| encode_position(&self.committed));
        let (meta, summary, view) = (p.meta.clone(), p.summary.clone(), p.views.clone());
        let (trail, journal) = (Arc::clone(&p.trail), Arc::clone(&p.journal));
        let writes = Arc::clone(&p.writes);
        let settle_after = p.settle_after.load(Ordering::Relaxed);
        let commit = move || -> Result<(), ProjectionError> {
            // First, before anything is written: the commits before this one all ended
            // (they run in order on one thread), so the position is the one it builds on.
            if meta.get(KEY_POSITION)?.as_deref() != base.as_deref() {
                return Err(ProjectionError::Corrupt(
                    "the projections moved under this catch-up (another writer)".into(),
                ));
            }
            // Each subject's lines in runs, written to the trail file past its committed
            // length before the record that holds the new length with the position;
            // readers see them once that is written (`trail_store`).
            let bytes = lines.len() * 2;
            let line =
                |i: usize| &lines[i.checked_sub(1).map_or(0, |p| line_ends[p])..line_ends[i]];
            let mut runs = trail.begin(subjects.len(), bytes);
            for (prefix, at) in &subjects {
                for run in at.chunks(TRAIL_RUN_LINES_MAX) {
                    let run = run.iter().map(|(_, i)| line(*i));
                    runs.append(&trail, prefix, run)?;
                }
            }
            trail.write(&runs)?;
            if crash == Some(Crash::BeforeCommit) {
                // The batch's runs are in the file, nothing else: what a crash before
                // the commit leaves.
                return Err(ProjectionError::Corrupt(
                    "commit aborted by the test hook".into(),
                ));
            }
            let bytes = views
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 9)
                .sum::<usize>();
            let mut record = Record::with_capacity(bytes + 4096);
            for (k, v) in &summaries {
                record.put(SUMMARY, k.as_bytes(), v);
            }
            // In key order: consecutive inserts land in the same sled leaf, whose path
            // from the root is then in cache.
            let mut views: Vec<_> = views.iter().collect();
            views.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, v) in views {
                match v {
                    Some(v) => record.put(VIEWS, k.as_bytes(), v),
                    None => record.remove(VIEWS, k.as_bytes()),
                }
            }
            for (k, v) in &trees {
                record.put(META, k, v);
            }
            for (k, v) in &heads {
                record.put(META, k, v);
            }
            for (k, v) in &held {
                match v {
                    Some(v) => record.put(META, k, v),
                    None => record.remove(META, k),
                }
            }
            record.put(META, KEY_TRAIL_LEN, &runs.end().to_be_bytes());
            // Last: a reader that sees the position sees every write before it.
            record.put(META, KEY_POSITION, &position);
            // The trail's heads wait in memory for a sled flush that makes their batches
            // durable (`TrailStore::settle`): at a journal switch, or when they are many.
            if trail.unsettled() >= settle_after {
                meta.flush()?;
                trail.settle()?;
            }
            let mut flushed = false;
            let marker = journal.write(&mut record, || {
                meta.flush()?;
                flushed = true;
                Ok(())
            })?;
            if flushed {
                trail.settle()?;
            }
            // From the marker to the publication of the runs the trees hold part of the
            // batch; a commit that stops in between leaves them torn (`Writes`).
            writes.start();
            meta.insert(KEY_JOURNAL, marker.encode().as_slice())?;
            let trees = [&meta, &summary, &view];
            let stop = match crash {
                Some(Crash::InsideCommit) => Some(record.writes().count() / 2),
                Some(Crash::InsideCommitBefore(prefix)) => Some(
                    record
                        .writes()
                        .position(|w| {
                            matches!(w, Ok((VIEWS, key, _)) if key.starts_with(prefix.as_bytes()))
                        })
                        .expect("the test hook names a view record the batch writes"),
                ),
                Some(Crash::BeforeCommit) | None => None,
            };
            if let Some(writes) = stop {
                journal::apply_some(&record, &trees, writes)?;
                return Err(ProjectionError::Corrupt(
                    "commit stopped inside its writes by the test hook".into(),
                ));
            }
            journal::apply(&record, &trees)?;
            trail.publish(runs);
            writes.end();
            Ok(())
        };
        let abandoned = Arc::clone(&self.abandoned);
        let commit = move || {
            if abandoned.load(Ordering::Acquire) {
                return Err(ProjectionError::Corrupt(
                    "an earlier commit of this catch-up failed".into(),
                ));
            }
            let result = commit();
            if result.is_err() {
                abandoned.store(true, Ordering::Release);
            }
            result
        };
        if last {
            let result = commit();
            self.views.committing.borrow_mut().clear();
            result?;
        } else {
            p.committer.start_commit(Box::new(commit))?;
            self.in_flight += 1;
        }
        self.committed = self.position;
        self.touched.clear();
        self.events = 0;
        Ok(())
    }

    /// Waits for every commit started and not yet waited for: the first error is this
    /// catch-up's, and nothing applied after it may be committed.
    fn join(&mut self) -> Result<(), ProjectionError> {
        let mut first = Ok(());
        while self.in_flight > 0 {
            let done = self.join_one();
            if first.is_ok() {
                first = done;
            }
        }
        first
    }

    /// Waits for the oldest commit in flight, if any.
    fn join_one(&mut self) -> Result<(), ProjectionError> {
        if self.in_flight == 0 {
            return Ok(());
        }
        let done = self.projector.committer.wait();
        self.in_flight -= 1;
        self.views.committing.borrow_mut().pop_front();
        if done.is_err() {
            self.failed = true;
        }
        done
    }
}

/// A catch-up that ends early (its future dropped) still waits for its last commit, so
/// the next catch-up starts from the position that commit wrote.
impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // Dropped on a worker when a request that caught up is cancelled (a timeout, a
        // gateway gone): the wait for commits and their flushes must not hold it.
        if let Err(e) = off_the_workers(|| self.join()) {
            tracing::warn!(error = %e, "projections: a batch's commit failed");
        }
    }
}

/// A whole message is stored as its stream sequence alone (8 bytes, as before frames);
/// a position inside a frame adds the index of the last applied event (12 bytes).
fn encode_position(position: &Position) -> Vec<u8> {
    let mut out = position.last.stream_sequence.to_be_bytes().to_vec();
    if !position.whole_message {
        out.extend_from_slice(&position.last.index.to_be_bytes());
    }
    out
}

fn decode_position(bytes: &[u8]) -> Option<Position> {
    let stream_sequence = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    match bytes.len() {
        // A whole message: its index no longer matters, every index in it is covered.
        8 => Some(Position {
            last: EventAt {
                stream_sequence,
                index: u32::MAX,
            },
            whole_message: true,
        }),
        12 => Some(Position {
            last: EventAt {
                stream_sequence,
                index: u32::from_be_bytes(bytes[8..].try_into().ok()?),
            },
            whole_message: false,
        }),
        _ => None,
    }
}

fn encode_head(sequence: u64, hash: &Digest) -> Vec<u8> {
    [sequence.to_be_bytes().as_slice(), &hash.0].concat()
}

fn decode_head(bytes: &[u8]) -> Option<(u64, Digest)> {
    if bytes.len() != 40 {
        return None;
    }
    Some((
        u64::from_be_bytes(bytes[..8].try_into().ok()?),
        Digest::from_slice(&bytes[8..])?,
    ))
}

/// Decodes an envelope for display; used by tools that list events.
pub fn decode(bytes: &[u8]) -> Option<Envelope> {
    Envelope::decode(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream_sequence: u64, index: u32, last_in_message: bool) -> reader::RawEvent {
        reader::RawEvent {
            stream_sequence,
            index,
            last_in_message,
            subject: String::new(),
            payload: bytes::Bytes::new(),
            hash: Digest([0; 32]),
            header_hash: None,
            header_sequence: None,
            malformed: None,
            message: bytes::Bytes::new(),
        }
    }

    /// While batches commit, the next batch reads its own changes first, then the
    /// committing batches' from the newest (a deletion included), then the tree.
    #[test]
    fn a_batch_reads_the_records_of_the_batches_still_committing_before_the_tree() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("views").unwrap();
        for key in ["a", "b", "c", "d", "f"] {
            tree.insert(key, b"tree".as_slice()).unwrap();
        }
        let older: ViewWrites = [
            ("a".to_owned(), Some(b"older".to_vec())),
            ("b".to_owned(), Some(b"older".to_vec())),
            ("f".to_owned(), Some(b"older".to_vec())),
        ]
        .into_iter()
        .collect();
        let committing: ViewWrites = [
            ("a".to_owned(), Some(b"committing".to_vec())),
            ("b".to_owned(), None),
            ("c".to_owned(), Some(b"committing".to_vec())),
        ]
        .into_iter()
        .collect();
        let staged = Staged {
            tree,
            writes: RefCell::new(
                [("c".to_owned(), Some(b"this batch".to_vec()))]
                    .into_iter()
                    .collect(),
            ),
            committing: RefCell::new([Arc::new(older), Arc::new(committing)].into()),
        };
        assert_eq!(
            staged.get("a").unwrap().as_deref(),
            Some(&b"committing"[..])
        );
        assert_eq!(staged.get("b").unwrap(), None);
        assert_eq!(
            staged.get("c").unwrap().as_deref(),
            Some(&b"this batch"[..])
        );
        assert_eq!(staged.get("d").unwrap().as_deref(), Some(&b"tree"[..]));
        assert_eq!(staged.get("e").unwrap(), None);
        assert_eq!(staged.get("f").unwrap().as_deref(), Some(&b"older"[..]));
    }

    /// A read starts only between batches, and is kept only if no batch's writes began
    /// while it ran, even ones that ended before it did.
    #[test]
    fn a_read_is_kept_only_if_no_batch_was_written_while_it_ran() {
        let writes = Writes::default();
        let start = writes.read_start(std::time::Duration::ZERO).unwrap();
        assert!(writes.unchanged_since(start));
        writes.start();
        writes.end();
        assert!(!writes.unchanged_since(start));
        // While a batch's writes go in (or were left torn), no read starts.
        writes.start();
        assert!(writes.torn());
        assert_eq!(writes.read_start(std::time::Duration::ZERO), None);
        // A torn batch being completed stays torn until it is whole.
        writes.start();
        assert!(writes.torn());
        writes.end();
        let after = writes.read_start(std::time::Duration::ZERO).unwrap();
        assert!(writes.unchanged_since(after));
        assert_ne!(after, start);
    }

    /// A read that a write overlaps is read again; one that every attempt sees
    /// overlapped answers busy.
    #[test]
    fn a_read_overlapped_by_writes_is_tried_again_then_answers_busy() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut projector = Projector::scratch(&db).unwrap();
        // Writes a hold keeps back for no time at all: a commit overlaps every attempt.
        projector.writes = Arc::new(Writes::holding_at_most(std::time::Duration::ZERO));
        let mut attempts = 0;
        let read = projector.read_consistent(|| {
            attempts += 1;
            if attempts == 1 {
                projector.clear()?;
            }
            Ok::<_, ProjectionError>(attempts)
        });
        assert_eq!(read.unwrap(), 2);
        let mut attempts = 0;
        let read = projector.read_consistent(|| {
            attempts += 1;
            projector.clear()
        });
        assert!(
            matches!(
                read,
                Err(ProjectionError::Busy {
                    attempts: CONSISTENT_READ_ATTEMPTS_MAX
                })
            ),
            "{read:?}"
        );
        assert_eq!(attempts, CONSISTENT_READ_ATTEMPTS_MAX);
    }

    /// Under writes that start more often than a read lasts, a read tried again holds
    /// the next batch's writes back until it is done, so it passes on its second
    /// attempt instead of answering busy.
    #[test]
    fn a_read_tried_again_holds_the_next_batch_back_until_it_is_done() {
        let writes = Arc::new(Writes::holding_at_most(std::time::Duration::from_secs(600)));
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut projector = Projector::scratch(&db).unwrap();
        projector.writes = writes.clone();
        let mut attempts = 0;
        let mut committer = None;
        let read = projector.read_consistent(|| {
            attempts += 1;
            // A batch starts (and ends) inside every attempt; on the second, it waits
            // for the read instead.
            let batch = std::thread::spawn({
                let writes = writes.clone();
                move || {
                    writes.start();
                    writes.end();
                }
            });
            if attempts == 1 {
                batch.join().unwrap();
            } else {
                // (A batch that went in without waiting fails the read.)
                while writes.waiting.load(Ordering::SeqCst) == 0 && !batch.is_finished() {
                    std::thread::yield_now();
                }
                committer = Some(batch);
            }
            Ok::<_, ProjectionError>(attempts)
        });
        assert_eq!(read.unwrap(), 2);
        // Let go, the batch goes in.
        committer.unwrap().join().unwrap();
        assert_eq!(writes.waiting.load(Ordering::SeqCst), 0);
        assert_eq!(writes.sequence.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_position_inside_a_frame_resumes_inside_it_and_covers_exactly_what_was_applied() {
        // Applied through event 1 of the frame at stream sequence 7 (events 0..=3).
        let inside = Position::after(&event(7, 1, false));
        let stored = encode_position(&inside);
        assert_eq!(stored.len(), 12);
        let read = decode_position(&stored).unwrap();
        assert_eq!(read, inside);
        assert_eq!(read.resume_at(), 7);
        assert!(read.covers(&event(6, 0, true)));
        assert!(read.covers(&event(7, 1, false)));
        assert!(!read.covers(&event(7, 2, false)));
        assert!(!read.covers(&event(8, 0, true)));

        // At a message's end only the stream sequence is stored, as before frames.
        let whole = Position::after(&event(7, 3, true));
        let stored = encode_position(&whole);
        assert_eq!(stored, 7u64.to_be_bytes().to_vec());
        let read = decode_position(&stored).unwrap();
        assert_eq!(read.resume_at(), 8);
        assert!(read.covers(&event(7, 3, true)));
        assert!(!read.covers(&event(8, 0, false)));

        assert!(!Position::START.covers(&event(1, 0, true)));
        assert_eq!(Position::START.resume_at(), 1);
        assert!(decode_position(&[0u8; 9]).is_none());
    }
}
