//! Reading the log back in stream order, in constant memory.

use async_nats::jetstream::{consumer, stream};
use bytes::Bytes;
use futures::StreamExt;

use super::HEADER_HASH;

/// One stored message as read back: nothing here is trusted until checked.
#[derive(Clone, Debug)]
pub struct RawEvent {
    pub stream_sequence: u64,
    pub subject: String,
    pub payload: Bytes,
    /// The `Ansinh-Hash` header, if the message carried one.
    pub header_hash: Option<String>,
}

impl From<async_nats::jetstream::message::StreamMessage> for RawEvent {
    fn from(m: async_nats::jetstream::message::StreamMessage) -> Self {
        Self {
            stream_sequence: m.sequence,
            subject: m.subject.to_string(),
            header_hash: m.headers.get(HEADER_HASH).map(|v| v.as_str().to_string()),
            payload: m.payload,
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

/// Visits every message on `filter` with stream sequence in `start..=end`, in order.
/// Memory is bounded by the consumer's pull window, not by the log's length.
pub async fn read_range<E>(
    stream: &stream::Stream,
    filter: &str,
    start: u64,
    end: u64,
    mut visit: impl FnMut(RawEvent) -> Result<(), E>,
) -> Result<u64, ReadError<E>> {
    if end == 0 || start > end {
        return Ok(0);
    }
    let nats = |e: &dyn std::fmt::Display| ReadError::Nats(e.to_string());
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| nats(&e))?;
    // With a filter, the stream's last message may be on another subject: `end` is then
    // never reached, and waiting for it would wait forever. The server's count of
    // messages still pending on the filter says when this subject is read out.
    if reader.cached_info().num_pending == 0 {
        return Ok(0);
    }
    let mut messages = reader.messages().await.map_err(|e| nats(&e))?;
    let mut count = 0u64;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| nats(&e))?;
        let info = message.info().map_err(|e| nats(&e))?;
        let (stream_sequence, pending) = (info.stream_sequence, info.pending);
        if stream_sequence > end {
            break;
        }
        let header_hash = message
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_HASH))
            .map(|v| v.as_str().to_string());
        visit(RawEvent {
            stream_sequence,
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
            header_hash,
        })
        .map_err(ReadError::Visit)?;
        count += 1;
        if stream_sequence >= end || pending == 0 {
            break;
        }
    }
    Ok(count)
}

/// Last stream sequence of the whole stream (0 when empty).
pub async fn last_stream_sequence(stream: &mut stream::Stream) -> Result<u64, String> {
    Ok(stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .last_sequence)
}

/// The last message of one subject, or None when the subject is empty.
pub async fn last_on_subject(
    stream: &stream::Stream,
    subject: &str,
) -> Result<Option<RawEvent>, String> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some(RawEvent::from(m))),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The message at one stream sequence, or None when there is none.
pub async fn at_sequence(
    stream: &stream::Stream,
    sequence: u64,
) -> Result<Option<RawEvent>, String> {
    match stream.get_raw_message(sequence).await {
        Ok(m) => Ok(Some(RawEvent::from(m))),
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}
