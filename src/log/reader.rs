//! Reading the log back in stream order, in constant memory.
//!
//! Readers see events, not messages: a message holding a frame of several events
//! (frame.rs) is handed over as its events in order, each with its place (stream
//! sequence, index in the message).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{consumer, stream};
use bytes::Bytes;
use futures::StreamExt;

use super::frame::{self, FrameError, HEADER_FORMAT};
use super::stream::HEADER_BYTES_MAX;
use super::{HEADER_HASH, HEADER_SEQUENCE};
use crate::chain::{self, ChainBreak, ChainHead, Digest};
use crate::proto::Envelope;

/// One stored event as read back: nothing here is trusted until checked.
#[derive(Clone, Debug)]
pub struct RawEvent {
    pub stream_sequence: u64,
    /// Its index in the message (0 for a message of one event).
    pub index: u32,
    /// True for the message's last event: a reader that stops here read all of it.
    pub last_in_message: bool,
    pub subject: String,
    /// The exact stored bytes of one envelope.
    pub payload: Bytes,
    /// `chain::event_hash(payload)`, computed by the reader: in `read_range` by its
    /// read-ahead task, so that hashing runs beside the visitor's checks.
    pub hash: Digest,
    /// The `Ansinh-Hash` header, if the message carried one. It names the message's last
    /// event, so only that event carries it.
    pub header_hash: Option<String>,
    /// The `Ansinh-Seq` header, if the message carried one: the last event's sequence,
    /// so only that event carries it.
    pub header_sequence: Option<String>,
    /// Set when the message cannot be split into events (a damaged or forged frame):
    /// `payload` is then the whole message, and every check of this event fails.
    pub malformed: Option<FrameError>,
    /// The whole payload of the message this event came in (shared, not copied): what an
    /// operator's exclusion names by its hash (`chain::message_hash`).
    pub message: Bytes,
}

impl RawEvent {
    /// Where this event sits in the stream.
    pub fn at(&self) -> EventAt {
        EventAt {
            stream_sequence: self.stream_sequence,
            index: self.index,
        }
    }

    /// `chain::check_next` for this event; a malformed message fails it, and so does an
    /// `Ansinh-Seq` header that is not the event's sequence (docs/CHAIN.md section 1: a
    /// verifier reports every header that disagrees with the payload). The header must
    /// be exactly the decimal the writer puts there: one short string a message.
    pub fn check_next(&self, head: &ChainHead) -> Result<(ChainHead, Envelope), ChainBreak> {
        if let Some(e) = &self.malformed {
            return Err(ChainBreak::Message(e.to_string()));
        }
        let (next, envelope) = chain::check_next_hashed(
            head,
            self.payload.clone(),
            self.hash,
            self.header_hash.as_deref(),
        )?;
        if let Some(header) = &self.header_sequence {
            if *header != envelope.sequence.to_string() {
                return Err(ChainBreak::SequenceMismatch {
                    header: header.clone(),
                    found: envelope.sequence,
                });
            }
        }
        Ok((next, envelope))
    }
}

/// Where an event sits: the stream sequence of its message and its index in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventAt {
    pub stream_sequence: u64,
    pub index: u32,
}

/// How far a reader has read: the last event it took in, and whether that was its
/// message's last one. A reader that stops inside a frame resumes inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub last: EventAt,
    pub whole_message: bool,
}

impl Position {
    /// Nothing read yet.
    pub const START: Position = Position {
        last: EventAt {
            stream_sequence: 0,
            index: 0,
        },
        whole_message: true,
    };

    /// The position just after `event`.
    pub fn after(event: &RawEvent) -> Self {
        Self {
            last: event.at(),
            whole_message: event.last_in_message,
        }
    }

    /// The stream sequence to read from next.
    pub fn resume_at(&self) -> u64 {
        if self.whole_message {
            self.last.stream_sequence + 1
        } else {
            self.last.stream_sequence
        }
    }

    /// True when `event` was already read.
    pub fn covers(&self, event: &RawEvent) -> bool {
        self.last.stream_sequence != 0 && event.at() <= self.last
    }
}

/// One stored message as read back, before it is split into events.
struct RawMessage {
    stream_sequence: u64,
    subject: String,
    payload: Bytes,
    header_hash: Option<String>,
    header_sequence: Option<String>,
    format: Option<String>,
}

impl RawMessage {
    fn new(
        stream_sequence: u64,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: Bytes,
    ) -> Self {
        let header = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        Self {
            stream_sequence,
            subject: subject.to_string(),
            header_hash: header(HEADER_HASH),
            header_sequence: header(HEADER_SEQUENCE),
            format: header(HEADER_FORMAT),
            payload,
        }
    }

    fn from_stored(m: async_nats::jetstream::message::StreamMessage) -> Self {
        Self::new(m.sequence, m.subject.as_str(), Some(&m.headers), m.payload)
    }

    /// The message's events in order; a message that cannot be split is one malformed event.
    fn into_events(self) -> Vec<RawEvent> {
        let event =
            |index: usize, last: bool, payload: Bytes, malformed: Option<FrameError>| RawEvent {
                stream_sequence: self.stream_sequence,
                index: index as u32,
                last_in_message: last,
                subject: self.subject.clone(),
                hash: chain::event_hash(&payload),
                payload,
                header_hash: if last { self.header_hash.clone() } else { None },
                header_sequence: if last {
                    self.header_sequence.clone()
                } else {
                    None
                },
                malformed,
                message: self.payload.clone(),
            };
        match frame::decode(&self.payload, self.format.as_deref()) {
            Ok(events) => {
                let last = events.len() - 1;
                events
                    .into_iter()
                    .enumerate()
                    .map(|(i, payload)| event(i, i == last, payload, None))
                    .collect()
            }
            Err(e) => vec![event(0, true, self.payload.clone(), Some(e))],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    /// The server could not be read; retry later.
    #[error("reading the log: {0}")]
    Nats(String),
    /// The visitor refused an event; its error says why.
    #[error(transparent)]
    Visit(E),
}

/// Events read ahead of the visitor per hand-over (a frame may add up to
/// FRAME_EVENTS_MAX - 1 more), and hand-overs queued at most: the read-ahead holds at
/// most READ_AHEAD_CHUNKS_MAX x (READ_CHUNK_EVENTS + FRAME_EVENTS_MAX) events.
const READ_CHUNK_EVENTS: usize = 256;
const READ_AHEAD_CHUNKS_MAX: usize = 16;
/// Bytes one pull asks the server for at most, with async-nats's own 500 messages,
/// when the stream's messages are at most 1 MiB (its `max_msg_size`); a pull must have
/// room for the largest message, or the server refuses it (`pull_bytes_for`). An
/// ordered consumer asks for 500 messages a pull whatever their size: in frames of 1 MiB
/// that is up to 500 MiB at once, more than a reader can hold, so reads use a plain pull
/// consumer whose pulls are bounded in bytes (ADR 0006).
pub const READ_PULL_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes all reads of this process may have asked the server for at once. nats-server
/// drops whatever it has queued for a client beyond `max_pending` (64 MiB by default) as
/// a slow consumer: pub acks, request replies and read messages alike, so the process
/// stalls for seconds on lost acks and replies. Frames of hundreds of events make that
/// limit easy to reach: a few hundred fetches of ~1 MiB frames at once pass it, and so do
/// concurrent reads (a reader asks for its next pull when half of the last has arrived,
/// so up to 1.5 pulls are on their way; ADR 0006). So reads reserve room in this budget
/// while their bytes are on their way, and wait for room rather than overrun the server's
/// limit; fetches of whole messages have a budget of their own
/// (`FETCHES_BYTES_IN_FLIGHT_MAX`). The two together, 40 MiB, leave the rest of the
/// server's default for pub acks and replies, which are small.
pub const READS_BYTES_IN_FLIGHT_MAX: usize = 32 * 1024 * 1024;
static READS_IN_FLIGHT: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(READS_BYTES_IN_FLIGHT_MAX);
/// Bytes all fetches of one whole message (`at_sequence`, `last_on_subject`) of this
/// process may have asked for at once: five of the largest message. Apart from the reads'
/// budget because a read holds its room for as long as it runs (a verify, a scan, a
/// proof: minutes on a year's log), and four of them fill it; a writer's fetch of its
/// subject's last message (after a lost fence, or to prove its book current) would then
/// wait behind them, and the partition's appends with it.
pub const FETCHES_BYTES_IN_FLIGHT_MAX: usize = 8 * 1024 * 1024;
static FETCHES_IN_FLIGHT: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(FETCHES_BYTES_IN_FLIGHT_MAX);
/// Messages one pull asks for at most (async-nats's default).
const READ_PULL_MESSAGES_MAX: usize = 500;
/// How long the server keeps one pull open. A read only waits on a pull when the server
/// has nothing to send, or when the client's count of what is still on its way is off
/// and it holds back the next pull until this one expires: async-nats's default is 30 s,
/// and one verify of 1,000,000 events in the province bench took 36 s against about 1 s
/// in most runs; with 5 s, one took 10.8 s (docs/BENCH.md). A short expiry bounds such a
/// wait below `http::READ_WAIT_MAX`, so a serving process's reads outlast it; a read that
/// has messages to get never meets it, since the server answers a pull at once.
const READ_PULL_EXPIRES: Duration = Duration::from_secs(2);
/// How often the server says a read's open pull is alive while it has nothing to send
/// (at most half the expiry, which the server requires). Two missed in a row end the
/// pull with an error, and the read goes on with a new consumer: a read's consumer
/// lives on one server, and when that server dies its pulls go unanswered, which
/// without heartbeats the client only meets by pulling again every expiry, for ever.
const READ_PULL_HEARTBEAT: Duration = Duration::from_secs(1);
/// How long the server keeps a read's consumer once nobody pulls from it (a reader that
/// died); a read that ends deletes it at once.
const READ_CONSUMER_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Visits every event on `filter` whose message has stream sequence in `start..=end`,
/// in order; returns how many were visited. Memory is bounded by the consumer's pull
/// window and the read-ahead, not by the log's length.
///
/// A task of its own pulls the messages, splits frames and hashes each event while the
/// visitor decodes and checks them, so reading and checking use two cores: one task
/// doing both verified at as little as 0.76x the rate of a bare read, because each
/// waited for the other; hashing moved to the read-ahead made verify 17% faster.
///
/// A cluster electing the stream's leader answers "no responders" for a moment, also in
/// the middle of a read (a healed partition, a leader moved); and a read's consumer lives
/// on one server, so when that server dies the read's pulls go unanswered. Either way the
/// read goes on after the last message visited, with a new consumer, within
/// `TRANSIENT_READ_ATTEMPTS_MAX` attempts without progress. The read-ahead hands over
/// whole messages before an error, so no event is visited twice.
pub async fn read_range<E>(
    stream: &stream::Stream,
    filter: &str,
    start: u64,
    end: u64,
    mut visit: impl FnMut(RawEvent) -> Result<(), E>,
) -> Result<u64, ReadError<E>> {
    let mut count = 0u64;
    let mut next = start;
    let mut attempt = 1;
    loop {
        let mut last = None;
        let read = read_range_once(stream, filter, next, end, |event| {
            last = Some(event.stream_sequence);
            visit(event)?;
            count += 1;
            Ok(())
        })
        .await;
        let resumable = match &read {
            Err(Once::Interrupted(_)) => true,
            Err(Once::Read(ReadError::Nats(e))) => no_responders(e),
            _ => false,
        };
        if last.is_some() {
            // A read that moved on is not stuck: only attempts in a row without
            // progress count against the bound, so a year's verify outlives a few
            // leader changes.
            attempt = 1;
        }
        match read {
            Err(e) if resumable && attempt < TRANSIENT_READ_ATTEMPTS_MAX => {
                tracing::debug!(error = %e, attempt, "reading the log: interrupted; going on");
                next = last.map_or(next, |s| s + 1);
                tokio::time::sleep(TRANSIENT_READ_BACKOFF * attempt).await;
                attempt += 1;
            }
            Ok(()) => return Ok(count),
            Err(Once::Read(e)) => return Err(e),
            Err(Once::Interrupted(e)) => return Err(ReadError::Nats(e)),
        }
    }
}

/// How one attempt of `read_range` ended when it did not read its range.
enum Once<E> {
    Read(ReadError<E>),
    /// The consumer's messages stopped coming (its server died or went silent, a message
    /// was lost on the way, the consumer was removed): a new consumer can go on.
    Interrupted(String),
}

impl<E> std::fmt::Display for Once<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Once::Read(ReadError::Nats(e)) | Once::Interrupted(e) => f.write_str(e),
            Once::Read(ReadError::Visit(_)) => f.write_str("the visitor refused an event"),
        }
    }
}

async fn read_range_once<E>(
    stream: &stream::Stream,
    filter: &str,
    start: u64,
    end: u64,
    mut visit: impl FnMut(RawEvent) -> Result<(), E>,
) -> Result<(), Once<E>> {
    if end == 0 || start > end {
        return Ok(());
    }
    let nats = |e: &dyn std::fmt::Display| Once::Read(ReadError::Nats(e.to_string()));
    let pull_bytes = pull_bytes_for(stream.cached_info().config.max_message_size);
    // Two pulls for as long as the read runs, held by the read-ahead, which does the
    // pulling, until it stops. Reads never nest (a visitor cannot await), so a read
    // waiting for room never holds room another needs.
    let room = READS_IN_FLIGHT
        .acquire_many(reserved_bytes(pull_bytes))
        .await
        .expect("the reads' budget is never closed");
    let reader = create_reader(stream, filter, start)
        .await
        .map_err(|e| nats(&e))?;
    let _remove = RemoveWhenDone {
        stream: stream.clone(),
        consumer: reader.cached_info().name.clone(),
    };
    // With a filter, the stream's last message may be on another subject: `end` is then
    // never reached, and waiting for it would wait forever. The server's count of
    // messages still pending on the filter says when this subject is read out.
    if reader.cached_info().num_pending == 0 {
        return Ok(());
    }
    let messages = pull(&reader, pull_bytes).await.map_err(|e| nats(&e))?;
    let (chunks, mut received) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS_MAX);
    // Ends by itself when the range is read, on an error, or when the visitor stops
    // early (its receiver is dropped, so the next send fails).
    tokio::spawn(async move {
        read_ahead(messages, end, chunks).await;
        drop(room);
    });
    while let Some(chunk) = received.recv().await {
        for event in chunk.map_err(Once::Interrupted)? {
            visit(event).map_err(|e| Once::Read(ReadError::Visit(e)))?;
        }
    }
    Ok(())
}

/// Attempts to create a read's consumer. On a cluster the request may find no server to
/// answer for a moment (a stream leader being elected): the read waits a little and asks
/// again rather than fail a verification or a catch-up.
pub const READ_CONSUMER_ATTEMPTS_MAX: u32 = 6;
/// The wait before the next attempt, times the attempt number (100 ms ... 500 ms).
pub const READ_CONSUMER_BACKOFF: Duration = Duration::from_millis(100);

async fn create_reader(
    stream: &stream::Stream,
    filter: &str,
    start: u64,
) -> Result<consumer::Consumer<consumer::pull::Config>, async_nats::jetstream::stream::ConsumerError>
{
    let mut attempt = 1;
    loop {
        match stream.create_consumer(read_consumer(filter, start)).await {
            Ok(reader) => return Ok(reader),
            Err(e) if attempt < READ_CONSUMER_ATTEMPTS_MAX => {
                tracing::warn!(error = %e, attempt, "creating a log reader failed; retrying");
                tokio::time::sleep(READ_CONSUMER_BACKOFF * attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The consumer a read of `filter` from stream sequence `start` uses: it acknowledges
/// nothing (the log is read, not consumed), and the server drops it if its reader dies.
pub fn read_consumer(filter: &str, start: u64) -> consumer::pull::Config {
    consumer::pull::Config {
        filter_subject: filter.to_string(),
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start.max(1),
        },
        ack_policy: consumer::AckPolicy::None,
        inactive_threshold: READ_CONSUMER_IDLE,
        memory_storage: true,
        ..Default::default()
    }
}

/// The messages of a read's consumer, pulled at most READ_PULL_MESSAGES_MAX and
/// `pull_bytes` (`pull_bytes_for`) at a time.
pub async fn pull(
    reader: &consumer::Consumer<consumer::pull::Config>,
    pull_bytes: usize,
) -> Result<consumer::pull::Stream, consumer::StreamError> {
    reader
        .stream()
        .max_messages_per_batch(READ_PULL_MESSAGES_MAX)
        .max_bytes_per_batch(pull_bytes)
        .expires(READ_PULL_EXPIRES)
        .heartbeat(READ_PULL_HEARTBEAT)
        .messages()
        .await
}

/// Bytes one pull of a stream whose `max_msg_size` is `max_message_size` asks for: the
/// server refuses a pull with no room for the next message, so a stream that admits
/// messages larger than READ_PULL_BYTES_MAX gets pulls as large as its largest message
/// (with room for subject and headers), and one without a limit gets one read's whole
/// share of the budget.
pub fn pull_bytes_for(max_message_size: i32) -> usize {
    largest_message(max_message_size).max(READ_PULL_BYTES_MAX)
}

/// The largest message, with subject and headers, a stream whose `max_msg_size` is
/// `max_message_size` can hold; for one without a limit, one read's whole share of
/// READS_BYTES_IN_FLIGHT_MAX.
fn largest_message(max_message_size: i32) -> usize {
    match usize::try_from(max_message_size) {
        Ok(limit @ 1..) => (limit + HEADER_BYTES_MAX).min(READS_BYTES_IN_FLIGHT_MAX / 2),
        _ => READS_BYTES_IN_FLIGHT_MAX / 2,
    }
}

/// What one read reserves of READS_BYTES_IN_FLIGHT_MAX: two pulls (up to 1.5 are on
/// their way), never more than the whole budget.
fn reserved_bytes(pull_bytes: usize) -> u32 {
    let bytes = (2 * pull_bytes).min(READS_BYTES_IN_FLIGHT_MAX);
    u32::try_from(bytes).expect("the budget fits a semaphore's permits")
}

/// Deletes a read's consumer when the read ends, however it ends. The server would
/// remove the idle consumer by itself after READ_CONSUMER_IDLE, but nats-server 2.15 allows a
/// stream 1,000 consumers by default: a writer catching up after each of many failed
/// commits (every commit refused, say) fills that within seconds, and then no reader,
/// verify included, can start.
struct RemoveWhenDone {
    stream: stream::Stream,
    consumer: String,
}

impl Drop for RemoveWhenDone {
    fn drop(&mut self) {
        let (stream, consumer) = (self.stream.clone(), std::mem::take(&mut self.consumer));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = stream.delete_consumer(&consumer).await {
                    // The server removes it when it idles anyway.
                    tracing::debug!(consumer, error = %e, "read's consumer not deleted");
                }
            });
        }
    }
}

/// Visits every event on `filter` after `position`, up to the message at stream
/// sequence `end`; returns how many were visited. Resumes inside a frame if `position`
/// stopped inside one.
pub async fn read_after<E>(
    stream: &stream::Stream,
    filter: &str,
    position: Position,
    end: u64,
    mut visit: impl FnMut(RawEvent) -> Result<(), E>,
) -> Result<u64, ReadError<E>> {
    let mut skipped = 0u64;
    let read = read_range(stream, filter, position.resume_at(), end, |event| {
        if position.covers(&event) {
            skipped += 1;
            return Ok(());
        }
        visit(event)
    })
    .await?;
    Ok(read - skipped)
}

/// Pulls messages up to stream sequence `end` (or until none are pending) and hands
/// their events over in chunks; an error is handed over last.
async fn read_ahead(
    mut messages: consumer::pull::Stream,
    end: u64,
    chunks: tokio::sync::mpsc::Sender<Result<Vec<RawEvent>, String>>,
) {
    let mut chunk = Vec::with_capacity(READ_CHUNK_EVENTS + frame::FRAME_EVENTS_MAX);
    let mut delivered = 0u64;
    while let Some(message) = messages.next().await {
        let read = message.map_err(|e| e.to_string()).and_then(|m| {
            let info = m.info().map_err(|e| e.to_string())?;
            // A consumer that acknowledges nothing delivers each message once, numbered
            // 1, 2, 3...: a number skipped is a message this client lost (unlike an
            // ordered consumer, a plain one does not start over), so the read fails
            // rather than go on without it.
            delivered += 1;
            if info.consumer_sequence != delivered {
                return Err(format!(
                    "message {delivered} of this read was lost on the way (delivery {} came next)",
                    info.consumer_sequence
                ));
            }
            let (stream_sequence, pending) = (info.stream_sequence, info.pending);
            let raw = RawMessage::new(
                stream_sequence,
                m.subject.as_str(),
                m.headers.as_ref(),
                m.payload.clone(),
            );
            Ok((raw, pending))
        });
        let (raw, pending) = match read {
            Ok(read) => read,
            Err(e) => {
                if !chunk.is_empty() {
                    let _ = chunks.send(Ok(std::mem::take(&mut chunk))).await;
                }
                let _ = chunks.send(Err(e)).await;
                return;
            }
        };
        if raw.stream_sequence > end {
            break;
        }
        let last = raw.stream_sequence >= end || pending == 0;
        chunk.extend(raw.into_events());
        if last {
            break;
        }
        if chunk.len() >= READ_CHUNK_EVENTS {
            let capacity = READ_CHUNK_EVENTS + frame::FRAME_EVENTS_MAX;
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(capacity));
            if chunks.send(Ok(full)).await.is_err() {
                return; // the visitor stopped
            }
        }
    }
    if !chunk.is_empty() {
        let _ = chunks.send(Ok(chunk)).await;
    }
}

/// Last stream sequence of the whole stream (0 when empty).
///
/// A cluster that just healed or is electing the stream's leader answers "no responders"
/// for a moment: asked again within `TRANSIENT_READ_ATTEMPTS_MAX`, as one-message reads
/// are.
pub async fn last_stream_sequence(stream: &mut stream::Stream) -> Result<u64, String> {
    let mut attempt = 1;
    loop {
        match stream.info().await {
            Ok(info) => return Ok(info.state.last_sequence),
            Err(e) if no_responders(&e) && attempt < TRANSIENT_READ_ATTEMPTS_MAX => {
                tokio::time::sleep(TRANSIENT_READ_BACKOFF * attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Reserves room in FETCHES_BYTES_IN_FLIGHT_MAX for one message of `stream` fetched
/// whole, while it is on its way: whoever looks up one event (a household's personal
/// data, an old receipt) fetches the whole frame that holds it.
async fn room_for_one_message(stream: &stream::Stream) -> tokio::sync::SemaphorePermit<'static> {
    FETCHES_IN_FLIGHT
        .acquire_many(one_message_bytes(
            stream.cached_info().config.max_message_size,
        ))
        .await
        .expect("the fetches' budget is never closed")
}

/// The room one fetch of a message of a stream whose `max_msg_size` is
/// `max_message_size` reserves: the largest message it admits, a third more in case the
/// server answers in JSON (base64) rather than by direct get; never more than the whole
/// budget.
fn one_message_bytes(max_message_size: i32) -> u32 {
    let bytes = largest_message(max_message_size) / 3 * 4;
    u32::try_from(bytes.min(FETCHES_BYTES_IN_FLIGHT_MAX))
        .expect("the budget fits a semaphore's permits")
}

/// The last event of one subject (the last of its last message), or None when the
/// subject is empty.
pub async fn last_on_subject(
    stream: &stream::Stream,
    subject: &str,
) -> Result<Option<RawEvent>, String> {
    let read = || async {
        let _room = room_for_one_message(stream).await;
        stream.get_last_raw_message_by_subject(subject).await
    };
    match retrying_transient(read, |e| e.kind() == stream::LastRawMessageErrorKind::Other).await {
        Ok(m) => Ok(RawMessage::from_stored(m).into_events().pop()),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The events of the first message of one subject at or after stream sequence `from`,
/// or None when the subject has none there: one request, whatever lies before, so a
/// reader can search a subject by stream sequence without reading it through.
pub async fn first_on_subject_from(
    stream: &stream::Stream,
    subject: &str,
    from: u64,
) -> Result<Option<Vec<RawEvent>>, String> {
    let read = || async {
        let _room = room_for_one_message(stream).await;
        stream
            .get_first_raw_message_by_subject(subject, from.max(1))
            .await
    };
    match retrying_transient(read, |e| e.kind() == stream::RawMessageErrorKind::Other).await {
        Ok(m) => Ok(Some(RawMessage::from_stored(m).into_events())),
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Attempts of a one-message read that found no server to answer (on a cluster, for a
/// moment while a leader is elected or a replica catches up: "no responders", a timeout)
/// before its caller gets the error, and the wait before the next, times the attempt.
pub const TRANSIENT_READ_ATTEMPTS_MAX: u32 = 5;
pub const TRANSIENT_READ_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether a JetStream answer was "no responders": a cluster electing a stream's leader,
/// or a stream made a moment ago, answers it for a moment (async-nats names it only in
/// the text of some errors).
pub fn no_responders(e: &dyn std::fmt::Display) -> bool {
    e.to_string().contains("no responders")
}

/// Runs `read` again, within `TRANSIENT_READ_ATTEMPTS_MAX`, while its error is
/// `transient`; any other answer is returned at once.
pub async fn retrying_transient<T, E, F, Fut>(
    mut read: F,
    transient: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match read().await {
            Err(e) if transient(&e) && attempt < TRANSIENT_READ_ATTEMPTS_MAX => {
                tokio::time::sleep(TRANSIENT_READ_BACKOFF * attempt).await;
                attempt += 1;
            }
            answer => return answer,
        }
    }
}

/// The events of the message at one stream sequence, or None when there is none.
pub async fn at_sequence(
    stream: &stream::Stream,
    sequence: u64,
) -> Result<Option<Vec<RawEvent>>, String> {
    let read = || async {
        let _room = room_for_one_message(stream).await;
        stream.get_raw_message(sequence).await
    };
    match retrying_transient(read, |e| e.kind() == stream::RawMessageErrorKind::Other).await {
        Ok(m) => Ok(Some(RawMessage::from_stored(m).into_events())),
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The event at one place, or None when there is none.
pub async fn event_at(stream: &stream::Stream, at: EventAt) -> Result<Option<RawEvent>, String> {
    Ok(at_sequence(stream, at.stream_sequence)
        .await?
        .and_then(|events| events.into_iter().nth(at.index as usize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch of one message never waits behind reads: with the reads' whole budget
    /// held (four long reads, a verify and three proofs say), there is room for five
    /// fetches of the largest message the event stream admits.
    #[tokio::test]
    async fn fetches_have_room_while_reads_hold_their_whole_budget() {
        let _reads = READS_IN_FLIGHT
            .acquire_many(READS_BYTES_IN_FLIGHT_MAX as u32)
            .await
            .unwrap();
        let one = one_message_bytes(crate::log::stream::MESSAGE_BYTES_MAX as i32);
        let fetches: Vec<_> = (0..5)
            .map(|_| FETCHES_IN_FLIGHT.try_acquire_many(one))
            .collect();
        assert!(fetches.iter().all(Result::is_ok), "{one} bytes a fetch");
    }
}
