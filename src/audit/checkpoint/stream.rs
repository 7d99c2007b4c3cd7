//! The checkpoint stream: signed checkpoints and cosignatures, kept apart from the
//! event log (so the event stream stays one chain per subject) and just as append-only.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::chain::Partition;
use crate::log::StreamError;

/// JetStream's own duplicate window for checkpoint message ids.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Largest message on the checkpoint stream: a signed checkpoint or cosignature is a
/// few hundred bytes.
pub const CHECKPOINT_MESSAGE_BYTES_MAX: i32 = 8 * 1024;

/// The event-log partition of the ledger's keys (`CheckpointConfig::keys_partition`'s
/// default, and the one name besides a province code the CLI accepts as a partition).
pub const KEYS_PARTITION: &str = "ledger-keys";

/// Names of the checkpoint stream, its subjects and the key partition. Production uses
/// the defaults; tests use fresh names so they can share one server.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    pub stream_name: String,
    /// Subjects are `<prefix>.checkpoints.<partition>` and `<prefix>.cosignatures.<partition>`.
    pub subject_prefix: String,
    /// The event-log partition that holds the ledger's `LedgerKeyRotated` events.
    pub keys_partition: Partition,
    /// Copies the cluster keeps (as the event stream's `LogConfig::replicas`).
    pub replicas: usize,
    /// The cosigners an auditor's command pins (`--cosigner`): documents it makes carry
    /// their cosignatures first, and `audit verify` lists them first and requires them.
    /// None on the ledger's own side.
    pub cosigners: super::proofs::CosignerPins,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            stream_name: "ANSINH_CHECKPOINTS".into(),
            subject_prefix: "ansinh.v1".into(),
            keys_partition: Partition::new(KEYS_PARTITION).expect("valid partition name"),
            replicas: 1,
            cosigners: Default::default(),
        }
    }
}

impl CheckpointConfig {
    pub fn checkpoint_subject(&self, partition: &Partition) -> String {
        format!("{}.checkpoints.{partition}", self.subject_prefix)
    }

    pub fn cosignature_subject(&self, partition: &Partition) -> String {
        format!("{}.cosignatures.{partition}", self.subject_prefix)
    }

    pub fn checkpoint_wildcard(&self) -> String {
        format!("{}.checkpoints.>", self.subject_prefix)
    }

    pub fn cosignature_wildcard(&self) -> String {
        format!("{}.cosignatures.>", self.subject_prefix)
    }

    /// The partition a checkpoint or cosignature subject belongs to.
    pub fn partition_of<'s>(&self, subject: &'s str) -> Option<&'s str> {
        let rest = subject
            .strip_prefix(&self.subject_prefix)?
            .strip_prefix('.')?;
        rest.strip_prefix("checkpoints.")
            .or_else(|| rest.strip_prefix("cosignatures."))
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream_name.clone(),
            subjects: vec![self.checkpoint_wildcard(), self.cosignature_wildcard()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            deny_delete: true,
            deny_purge: true,
            allow_rollup: false,
            duplicate_window: DUPLICATE_WINDOW,
            max_message_size: CHECKPOINT_MESSAGE_BYTES_MAX,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }
}

/// Creates the checkpoint stream if it is missing, else checks that it is safe and kept
/// on at least `config.replicas` replicas.
pub async fn ensure_checkpoint_stream(
    js: &jetstream::Context,
    config: &CheckpointConfig,
) -> Result<stream::Stream, StreamError> {
    let stream = crate::log::stream::ensure(js, config.stream_config(), check_safe).await?;
    crate::log::stream::check_replicas(
        &config.stream_name,
        &stream.cached_info().config,
        config.replicas,
    )?;
    Ok(stream)
}

/// The existing checkpoint stream, checked as `ensure_checkpoint_stream` checks it, for
/// a reader that must create nothing (`audit verify --read-only`): a stream that does
/// not exist, say a name mistyped, is `StreamError::Missing`, not a new empty stream
/// whose "0 checkpoints" would pass for an audit.
pub async fn open_existing_checkpoint_stream(
    js: &jetstream::Context,
    config: &CheckpointConfig,
) -> Result<stream::Stream, StreamError> {
    let stream = crate::log::stream::get_existing(js, &config.stream_name).await?;
    check_safe(&config.stream_name, &stream.cached_info().config)?;
    Ok(stream)
}

/// Pure check of an existing checkpoint stream's configuration: the same rules as the
/// event stream (`log::stream::check_append_only`) except atomic publish, which
/// checkpoints do not use.
pub fn check_safe(name: &str, c: &stream::Config) -> Result<(), StreamError> {
    crate::log::stream::check_append_only(name, c, "checkpoints")
}
