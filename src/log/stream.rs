//! Creating and checking the event stream. The ledger refuses to run on a stream
//! that could lose or rewrite history.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::chain::Partition;

/// How long JetStream itself remembers message ids. The ledger's writer sends none (its
/// fence and index do the work, see `PartitionWriter::publish`); the window serves any
/// other publisher that sets them.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Room for headers on top of a message's payload (the ledger's and a batch's take ~300
/// bytes).
pub const HEADER_BYTES_MAX: usize = 4 * 1024;
/// Largest message the stream accepts: a full frame (frame.rs) and its headers. Streams
/// created before frames held whole commits allow one envelope and its headers (68 KiB); the writer
/// keeps its frames within whatever the stream allows.
pub const MESSAGE_BYTES_MAX: usize = super::frame::FRAME_BYTES_MAX + HEADER_BYTES_MAX;

/// Names of the stream and its subjects. Production uses the defaults; tests use a
/// fresh name each so they can share one server.
#[derive(Clone, Debug)]
pub struct LogConfig {
    pub stream_name: String,
    /// Subjects are `<prefix>.<partition>`.
    pub subject_prefix: String,
    /// Copies of every message the cluster keeps (`--replicas`): 3 in production, so
    /// the log outlives a node; 1 on a single server.
    pub replicas: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            stream_name: "ANSINH_EVENTS".into(),
            subject_prefix: "ansinh.v1.events".into(),
            replicas: 1,
        }
    }
}

impl LogConfig {
    pub fn subject(&self, partition: &Partition) -> String {
        format!("{}.{}", self.subject_prefix, partition)
    }

    pub fn wildcard(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// The partition a subject belongs to, if it is one of ours.
    pub fn partition_of<'s>(&self, subject: &'s str) -> Option<&'s str> {
        subject
            .strip_prefix(&self.subject_prefix)?
            .strip_prefix('.')
    }

    /// The partition whose chain a message on `subject` belongs to; `None` for a **stray**
    /// message, on a subject the stream takes (`<prefix>.>`) that names no partition
    /// (`a.b`, `a+b`, too long). A stray message is in no chain: every reader passes over
    /// it the same way, and verify reports it (docs/CHAIN.md, section 4b). Stopping there
    /// instead would stop every partition's readers for ever at one message nobody can
    /// delete or exclude (an exclusion is an event of the partition it names).
    pub fn chain_of(&self, subject: &str) -> Option<Partition> {
        Partition::new(self.partition_of(subject)?).ok()
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream_name.clone(),
            subjects: vec![self.wildcard()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            deny_delete: true,
            deny_purge: true,
            allow_rollup: false,
            allow_atomic_publish: true,
            duplicate_window: DUPLICATE_WINDOW,
            max_message_size: MESSAGE_BYTES_MAX as i32,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The stream exists but could lose or rewrite history. An operator must fix the
    /// stream (or point ansinh at another); ansinh never changes it silently.
    #[error("stream {stream} is unsafe for a ledger: {reason}")]
    Unsafe { stream: String, reason: String },
    /// NATS could not be asked; retry when the server is reachable.
    #[error("jetstream: {0}")]
    Nats(String),
    /// A reader found no such stream (check --nats and the stream's name, and that this
    /// NATS user may see it); readers never create one.
    #[error("stream {stream} not found: {reason}")]
    Missing { stream: String, reason: String },
}

/// The existing event stream, checked like `ensure_stream` checks it, for a reader that
/// may not (and must not) create anything: an auditor's read-only user.
pub async fn open_existing(
    js: &jetstream::Context,
    config: &LogConfig,
) -> Result<stream::Stream, StreamError> {
    let stream = get_existing(js, &config.stream_name).await?;
    check_safe(&config.stream_name, &stream.cached_info().config)?;
    Ok(stream)
}

/// Stream `name` if it exists (`StreamError::Missing` if not), never created. Getting a
/// stream reads its info: the caller's checks of it need no second request.
pub(crate) async fn get_existing(
    js: &jetstream::Context,
    name: &str,
) -> Result<stream::Stream, StreamError> {
    js.get_stream(name).await.map_err(|e| StreamError::Missing {
        stream: name.to_owned(),
        reason: e.to_string(),
    })
}

/// Creates the stream if it is missing, else checks that it is safe.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &LogConfig,
) -> Result<stream::Stream, StreamError> {
    let stream = ensure(js, config.stream_config(), check_safe).await?;
    check_replicas(
        &config.stream_name,
        &stream.cached_info().config,
        config.replicas,
    )?;
    Ok(stream)
}

/// Refuses an existing stream (or a bucket's stream) kept on fewer replicas than
/// `asked` (`--replicas`). Fewer copies than asked is a weaker promise than the operator
/// made; more is fine. Every stream and bucket the ledger opens is checked, not only the
/// event stream: the first process to touch one may have been a command run without
/// `--replicas`, which made it on one node, and the loss of that node would then lose it
/// (the vault's keys with it) while the event stream survives.
pub fn check_replicas(name: &str, c: &stream::Config, asked: usize) -> Result<(), StreamError> {
    if c.num_replicas < asked {
        return Err(StreamError::Unsafe {
            stream: name.to_string(),
            reason: format!(
                "it keeps {} replica(s), --replicas asks for {asked}",
                c.num_replicas
            ),
        });
    }
    Ok(())
}

/// Gets the stream `create.name` and checks it with `check`, or creates it from
/// `create` when it is missing. Shared by every stream of record.
pub async fn ensure(
    js: &jetstream::Context,
    create: stream::Config,
    check: fn(&str, &stream::Config) -> Result<(), StreamError>,
) -> Result<stream::Stream, StreamError> {
    match js.get_stream(&create.name).await {
        // Getting a stream reads its info (creating one returns it): no second request.
        Ok(existing) => {
            check(&create.name, &existing.cached_info().config)?;
            Ok(existing)
        }
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(_)
            ) =>
        {
            // Only "not found" gets here in practice; creating reports anything else.
            js.create_stream(create)
                .await
                .map_err(|e| StreamError::Nats(e.to_string()))
        }
        Err(e) => Err(StreamError::Nats(e.to_string())),
    }
}

/// Pure check of an existing stream's configuration.
pub fn check_safe(name: &str, c: &stream::Config) -> Result<(), StreamError> {
    check_append_only(name, c, "old events")?;
    if !c.allow_atomic_publish {
        return Err(StreamError::Unsafe {
            stream: name.to_string(),
            reason: "atomic batch publish is disabled (group commit needs it)".into(),
        });
    }
    Ok(())
}

/// The rules every stream of record obeys (events, checkpoints, claims): nothing in it
/// can be deleted, purged, rolled up, aged out or expired, and it lives on disk. `what` names what
/// a limit would drop, for the message.
pub fn check_append_only(name: &str, c: &stream::Config, what: &str) -> Result<(), StreamError> {
    let unsafe_because = |reason: &str| {
        Err(StreamError::Unsafe {
            stream: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if !c.deny_delete {
        return unsafe_because("it allows deleting messages (deny_delete is false)");
    }
    if !c.deny_purge {
        return unsafe_because("it allows purging (deny_purge is false)");
    }
    if c.allow_rollup {
        return unsafe_because("it allows rollups, which replace history");
    }
    // A message's own time to live expires it whatever deny_delete says, and a stream
    // cannot be changed back once it allows one: a foreign message sent with `Nats-TTL`
    // would vanish after its exclusion, leaving every later reader an exclusion of
    // nothing. Delete markers exist only with message TTLs.
    if c.allow_message_ttl || c.subject_delete_marker_ttl.is_some() {
        return unsafe_because("it lets messages expire (per-message TTL)");
    }
    if c.storage != stream::StorageType::File {
        return unsafe_because("it is not file-backed");
    }
    if c.retention != stream::RetentionPolicy::Limits {
        return unsafe_because("its retention policy removes acknowledged messages");
    }
    if c.max_messages >= 0
        || c.max_bytes >= 0
        || c.max_age != Duration::ZERO
        || c.max_messages_per_subject >= 0
    {
        return unsafe_because(&format!(
            "it has a size or age limit that would drop {what}"
        ));
    }
    Ok(())
}
