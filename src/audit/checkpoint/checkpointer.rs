//! Builds and publishes signed checkpoints, incrementally: per partition it keeps a
//! `merkle::Frontier` (at most 64 hashes) and the position it has read to, so each
//! checkpoint reads only the events added since the last one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, message::PublishMessage, stream::Stream};
use futures::StreamExt;
use prost::Message;
use tokio::sync::{Notify, oneshot};

use super::audit::valid_checkpoint;
use super::keys::{self, KeyRing, LEDGER_KEY_FILE, NEXT_LEDGER_KEY_FILE};
use super::lookup::Lookup;
use super::read::{self, ChainPosition, KeyRingAt, Next, StoredCheckpoint};
use super::sign::{self, CheckpointBody, KeyPair};
use super::stream::{CheckpointConfig, ensure_checkpoint_stream};
use super::{CheckpointError, HEADER_TREE_SIZE, now_unix_ms};
use crate::chain::Partition;
use crate::log::{Draft, HEADER_SEQUENCE, Ledger, reader};
use crate::merkle::Frontier;
use crate::personal::Vault;
use crate::proto::{self, envelope::Payload};

/// When to checkpoint a partition: after `every_events` new events, or at least every
/// `every` if it has new events at all. Every checkpoint is stored for ever and checked
/// by every full `audit verify`: the default interval is ten minutes, not one, which a
/// partition with an event a minute would turn into 525,600 checkpoints a year (ADR
/// 0023); a busy partition is checkpointed by its event count.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub every_events: u64,
    pub every: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            every_events: 1_000,
            every: Duration::from_secs(600),
        }
    }
}

/// A checkpoint this process published or found as the partition's latest.
#[derive(Clone, Debug)]
pub struct Published {
    pub body: CheckpointBody,
    pub signed: proto::SignedCheckpoint,
    /// Its stream sequence on the checkpoint stream.
    pub stream_sequence: u64,
}

/// What one checkpoint request did.
#[derive(Clone, Debug)]
pub enum Outcome {
    Published(Box<Published>),
    /// The latest checkpoint already covers every event.
    Unchanged {
        tree_size: u64,
    },
    /// The partition has no events.
    Empty,
}

/// One partition's result in `checkpoint_all`.
pub type PartitionOutcome = (Partition, Result<Outcome, CheckpointError>);

struct Tree {
    frontier: Frontier,
    position: ChainPosition,
    /// The partition's latest valid checkpoint, once the frontier has passed its size
    /// (and its root matched).
    last: Option<Published>,
    /// The stream sequence of the last message on the partition's checkpoint subject,
    /// which the next checkpoint is fenced on: `last`'s, unless an invalid message was
    /// stored after it.
    fence: u64,
    /// Another checkpointer's checkpoint, larger than the frontier, that won a race
    /// (`after_lost_race`): checked against the frontier when it reaches its size, as the
    /// latest checkpoint is on first use.
    pending: Option<Published>,
}

/// Publishes checkpoints signed with the ledger key of one data directory.
pub struct Checkpointer {
    ledger: Ledger,
    js: jetstream::Context,
    checkpoints: Stream,
    config: CheckpointConfig,
    /// Where the signing key lives; read again when another process rotated it.
    home: KeyHome,
    key: KeyPair,
    /// The key ring as far as read; None until first needed, and after a failed read.
    keys: Option<KeyRingAt>,
    trees: HashMap<Partition, Tree>,
    /// Events read from the log into frontiers, all partitions together: what the
    /// checkpoints cost this process to build.
    events_read: u64,
}

fn nats(e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Nats(e.to_string())
}

fn key_draft(config: &CheckpointConfig, rotation: proto::LedgerKeyRotated) -> Draft {
    Draft {
        partition: config.keys_partition.clone(),
        actor: proto::Actor {
            id: "system:checkpointer".into(),
            role: "system".into(),
            unit: String::new(),
        },
        // One event per key, however often a registration is retried.
        idempotency_key: format!("ledger-key:{}", rotation.key_id),
        correlation_id: String::new(),
        request_fingerprint: None,
        subjects: vec![format!("ledger-key:{}", rotation.key_id)],
        payload: Payload::LedgerKeyRotated(rotation),
    }
}

impl Checkpointer {
    /// Ensures the checkpoint stream, loads (or on first use creates) the ledger key in
    /// `data_dir`, and registers it in the key partition if the ledger has no key yet.
    /// Refuses a local key that is not the ledger's current key.
    pub async fn open(
        client: async_nats::Client,
        ledger: Ledger,
        config: CheckpointConfig,
        home: impl Into<KeyHome>,
    ) -> Result<Self, CheckpointError> {
        let home = home.into();
        let js = jetstream::new(client);
        let checkpoints = ensure_checkpoint_stream(&js, &config).await?;
        let key = home.load_or_create().await?;
        let ring = read::read_key_ring(ledger.stream(), ledger.config(), &config).await?;
        match ring.current() {
            None => {
                ledger
                    .append(key_draft(&config, sign::key_rotation(&key, None)))
                    .await?;
            }
            Some(current) if current.key_id == key.key_id() => {}
            Some(current) => {
                return Err(CheckpointError::KeyNotRegistered {
                    local: key.key_id().to_string(),
                    registered: current.key_id.clone(),
                });
            }
        }
        Ok(Self {
            ledger,
            js,
            checkpoints,
            config,
            home,
            key,
            keys: None,
            trees: HashMap::new(),
            events_read: 0,
        })
    }

    pub fn key_id(&self) -> &str {
        self.key.key_id()
    }

    /// The public key of the key it signs with: what an auditor pins (`--trust`).
    pub fn public_key(&self) -> [u8; 32] {
        self.key.public_key()
    }

    pub fn config(&self) -> &CheckpointConfig {
        &self.config
    }

    /// The size of the latest checkpoint this checkpointer knows for `partition`.
    pub fn checkpointed_size(&self, partition: &Partition) -> u64 {
        self.trees
            .get(partition)
            .and_then(|t| t.last.as_ref())
            .map_or(0, |p| p.body.tree_size)
    }

    /// Events read from the log into frontiers since this checkpointer opened: a
    /// checkpoint reads the events added since the one before, a partition's first
    /// checkpoint (or one after an error) the whole partition.
    pub fn events_read(&self) -> u64 {
        self.events_read
    }

    /// Every partition of the event log (including the key partition).
    pub async fn partitions(&self) -> Result<Vec<Partition>, CheckpointError> {
        let log = self.ledger.config().clone();
        read::partitions_on(self.ledger.stream(), &log.wildcard(), |s| {
            log.partition_of(s).map(str::to_string)
        })
        .await
    }

    /// Checkpoints every partition that has events not yet covered. One partition's
    /// failure (say, a forged checkpoint found) does not hold up the others: each has
    /// its own result.
    pub async fn checkpoint_all(&mut self) -> Result<Vec<PartitionOutcome>, CheckpointError> {
        let mut out = Vec::new();
        for partition in self.partitions().await? {
            let outcome = self.checkpoint(&partition).await;
            out.push((partition, outcome));
        }
        Ok(out)
    }

    /// Publishes a checkpoint of `partition` at its current length, unless the latest
    /// checkpoint already covers it.
    pub async fn checkpoint(&mut self, partition: &Partition) -> Result<Outcome, CheckpointError> {
        let result = self.checkpoint_inner(partition).await;
        match &result {
            Ok(_) => {}
            // Another checkpointer published first (every process's task triggers at the
            // same event): the frontier and position are still the log's, only the
            // fence and the latest checkpoint are stale. Reading the partition again
            // from its start would cost O(partition) at every trigger, and forgetting
            // the latest checkpoint would make the task sign again at the next event.
            Err(CheckpointError::Raced { .. }) => {
                if let Err(e) = self.after_lost_race(partition).await {
                    tracing::warn!(partition = %partition, error = %e, "after a lost race: reading the partition again");
                    self.trees.remove(partition);
                }
            }
            // Start from the log again next time rather than trust state that may be
            // half-updated.
            Err(_) => {
                self.trees.remove(partition);
            }
        }
        result
    }

    /// Takes the subject's last message as the fence after a publish that lost it, and
    /// as the latest checkpoint when it is the ledger's, valid, of the frontier's size and
    /// matches its root and head (the race at one trigger); a larger one is checked when
    /// the frontier reaches its size. Err (the tree is then dropped and rebuilt from the
    /// log) when it is valid but smaller than the frontier, which cannot check it, or
    /// does not match.
    async fn after_lost_race(&mut self, partition: &Partition) -> Result<(), CheckpointError> {
        if !self.trees.contains_key(partition) {
            return Ok(());
        }
        let subject = self.config.checkpoint_subject(partition);
        let Some(message) = reader::last_on_subject(&self.checkpoints, &subject)
            .await
            .map_err(nats)?
        else {
            return Ok(());
        };
        self.current_key_id().await?;
        let ring = &self.keys.as_ref().expect("read by current_key_id").ring;
        let stored = valid_checkpoint(ring, partition, read::decode_checkpoint(&message));
        let tree = self.trees.get_mut(partition).expect("checked above");
        let fence = message.stream_sequence;
        let Ok(valid) = stored else {
            // Not the ledger's checkpoint: built past, fenced on it (as on first use).
            tree.fence = fence;
            return Ok(());
        };
        let s = valid.stored;
        // The partition is checkpointed, by whichever process won: the age an operator
        // alerts on is the partition's, so a process that keeps losing races does not
        // page for a partition that others checkpoint.
        crate::telemetry::checkpoint_seen(partition.as_str(), s.body.issued_at_unix_ms);
        let won = Published {
            body: s.body,
            signed: s.signed,
            stream_sequence: s.stream_sequence,
        };
        let size = tree.frontier.size();
        if won.body.tree_size == size {
            super::audit::check_matches_root(
                &won.body,
                &tree.frontier.root(),
                &tree.position.head.hash.0,
            )?;
            tree.last = Some(won);
        } else if won.body.tree_size > size {
            tree.pending = Some(won);
        } else if tree.last.as_ref().map(|l| l.stream_sequence) != Some(won.stream_sequence) {
            return Err(CheckpointError::Raced {
                partition: partition.to_string(),
                reason: format!(
                    "a checkpoint of size {} was stored, smaller than the {size} events read",
                    won.body.tree_size
                ),
            });
        }
        tree.fence = fence;
        Ok(())
    }

    async fn checkpoint_inner(
        &mut self,
        partition: &Partition,
    ) -> Result<Outcome, CheckpointError> {
        self.catch_up(partition).await?;
        let tree = self.trees.get(partition).expect("caught up");
        let size = tree.frontier.size();
        if size == 0 {
            return Ok(Outcome::Empty);
        }
        if let Some(tree_size) = tree.last.as_ref().map(|p| p.body.tree_size) {
            if tree_size == size {
                return Ok(Outcome::Unchanged { tree_size });
            }
        }
        // The time is read before the key, and the key again after signing: a rotation
        // retires the key at the time its event was recorded, so one stored before the
        // second read makes this process refuse rather than publish a checkpoint issued
        // after its key's retirement, which would be invalid for ever. What is left is a
        // rotation recorded before this time but stored after the second read (its
        // commit latency, plus clock skew between hosts); `catch_up` builds past such a
        // checkpoint and `audit verify` reports it.
        let issued_at_unix_ms = now_unix_ms();
        self.ensure_current_key().await?;
        let tree = self.trees.get(partition).expect("caught up");
        let fence = tree.fence;
        let body = CheckpointBody {
            partition: partition.clone(),
            tree_size: size,
            root: tree.frontier.root(),
            head_sequence: tree.position.head.sequence,
            head_hash: tree.position.head.hash.0,
            issued_at_unix_ms,
            key_id: self.key.key_id().to_string(),
        };
        assert_eq!(body.head_sequence, body.tree_size, "one leaf per event");
        let signed = sign::sign_checkpoint(&self.key, &body);
        let current = self.current_key_id().await?;
        if current.as_deref() != Some(self.key.key_id()) {
            return Err(CheckpointError::Raced {
                partition: partition.to_string(),
                reason: format!(
                    "the ledger key was rotated from {} to {} while the checkpoint was signed",
                    self.key.key_id(),
                    current.unwrap_or_else(|| "(none)".into())
                ),
            });
        }
        let stream_sequence = self.publish(partition, &signed, size, fence).await?;
        crate::telemetry::checkpoint_seen(partition.as_str(), body.issued_at_unix_ms);
        tracing::info!(partition = %partition, tree_size = size, "checkpoint signed");
        let published = Published {
            body,
            signed,
            stream_sequence,
        };
        let tree = self.trees.get_mut(partition).expect("caught up");
        tree.last = Some(published.clone());
        tree.fence = stream_sequence;
        Ok(Outcome::Published(Box::new(published)))
    }

    /// Reads the events added since the last call into the partition's frontier. On
    /// first use it also loads the partition's latest valid checkpoint and checks, when
    /// the frontier passes its size, that its root and head still match the log.
    async fn catch_up(&mut self, partition: &Partition) -> Result<(), CheckpointError> {
        if !self.trees.contains_key(partition) {
            let subject = self.config.checkpoint_subject(partition);
            let last = reader::last_on_subject(&self.checkpoints, &subject)
                .await
                .map_err(nats)?;
            let fence = last.as_ref().map_or(0, |m| m.stream_sequence);
            let latest = match last {
                Some(message) => {
                    let ring = read::read_key_ring(
                        self.ledger.stream(),
                        self.ledger.config(),
                        &self.config,
                    )
                    .await?;
                    // Paired check: what we build on must be the ledger's own signature,
                    // not a message someone else put on the checkpoint stream.
                    match valid_checkpoint(&ring, partition, read::decode_checkpoint(&message)) {
                        Ok(valid) => Some(valid.stored),
                        // The stream denies delete, so refusing here would stop the
                        // partition for good: build on the latest valid checkpoint
                        // instead, fenced on this message. `audit verify` lists it.
                        Err(e) => {
                            tracing::warn!(
                                partition = %partition,
                                stream_sequence = fence,
                                error = %e,
                                "the latest checkpoint message is not valid; building on the latest valid one"
                            );
                            self.latest_valid(partition, &ring).await?
                        }
                    }
                }
                None => None,
            };
            let tree = Tree {
                frontier: Frontier::new(),
                position: ChainPosition::genesis(partition.clone()),
                last: None,
                fence,
                pending: None,
            };
            self.trees.insert(partition.clone(), tree);
            if let Some(s) = &latest {
                crate::telemetry::checkpoint_seen(partition.as_str(), s.body.issued_at_unix_ms);
            }
            let pending = latest.map(|s| Published {
                body: s.body,
                signed: s.signed,
                stream_sequence: s.stream_sequence,
            });
            return self.read_into(partition, pending).await;
        }
        let pending = self.trees.get_mut(partition).and_then(|t| t.pending.take());
        self.read_into(partition, pending).await
    }

    /// The partition's last stored checkpoint signed by a ledger key valid when it was
    /// issued, found walking back from the subject's end past the invalid messages
    /// (`lookup`), not by reading every checkpoint of the partition.
    async fn latest_valid(
        &self,
        partition: &Partition,
        ring: &KeyRing,
    ) -> Result<Option<StoredCheckpoint>, CheckpointError> {
        let read = read::ReadCount::default();
        let lookup = Lookup::new(&self.checkpoints, &self.config, partition, ring, &read);
        Ok(lookup.latest().await?.valid.map(|v| v.stored))
    }

    async fn read_into(
        &mut self,
        partition: &Partition,
        mut pending: Option<Published>,
    ) -> Result<(), CheckpointError> {
        let tree = self.trees.get_mut(partition).expect("tree exists");
        let frontier = &mut tree.frontier;
        let mut matched: Option<Published> = None;
        let events_read = &mut self.events_read;
        let position = read::read_chain(
            self.ledger.stream(),
            self.ledger.config(),
            tree.position.clone(),
            read::Exclusions::SignedBy(&self.config.keys_partition),
            |head, _, _| {
                *events_read += 1;
                frontier.try_push(&head.hash.0)?;
                if let Some(p) = &pending {
                    if frontier.size() == p.body.tree_size {
                        super::audit::check_matches_root(&p.body, &frontier.root(), &head.hash.0)?;
                        matched = pending.take();
                    }
                }
                Ok(Next::Continue)
            },
        )
        .await?;
        tree.position = position;
        if let Some(p) = pending {
            return Err(CheckpointError::LogBehind {
                partition: partition.to_string(),
                tree_size: p.body.tree_size,
                events: tree.frontier.size(),
            });
        }
        if matched.is_some() {
            tree.last = matched;
        }
        Ok(())
    }

    /// The ledger's current key id: the ring's last key, read on from where the last
    /// call stopped.
    async fn current_key_id(&mut self) -> Result<Option<String>, CheckpointError> {
        let at = self
            .keys
            .take()
            .unwrap_or_else(|| KeyRingAt::genesis(self.config.keys_partition.clone()));
        let at = read::extend_key_ring(self.ledger.stream(), self.ledger.config(), at).await?;
        let current = at.ring.current().map(|k| k.key_id.clone());
        self.keys = Some(at);
        Ok(current)
    }

    /// Before signing: if the key ring names another key (a rotation by another
    /// process), reload the key file; refuse if it is still not the current key.
    async fn ensure_current_key(&mut self) -> Result<(), CheckpointError> {
        match self.current_key_id().await? {
            Some(id) if id == self.key.key_id() => Ok(()),
            Some(id) => {
                self.key = self.home.load().await?;
                if id == self.key.key_id() {
                    Ok(())
                } else {
                    Err(CheckpointError::KeyNotRegistered {
                        local: self.key.key_id().to_string(),
                        registered: id,
                    })
                }
            }
            None => Err(CheckpointError::KeyNotRegistered {
                local: self.key.key_id().to_string(),
                registered: "(none)".into(),
            }),
        }
    }

    /// Publishes fenced on the partition's previous checkpoint, so checkpoints of one
    /// partition are stored in order of size and two checkpointers cannot interleave.
    async fn publish(
        &self,
        partition: &Partition,
        signed: &proto::SignedCheckpoint,
        tree_size: u64,
        previous_stream_sequence: u64,
    ) -> Result<u64, CheckpointError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{partition}:{tree_size}").as_str(),
        );
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            previous_stream_sequence.to_string().as_str(),
        );
        headers.insert(HEADER_TREE_SIZE, tree_size.to_string().as_str());
        let raced = |reason: String| CheckpointError::Raced {
            partition: partition.to_string(),
            reason,
        };
        let ack = self
            .js
            .send_publish(
                self.config.checkpoint_subject(partition),
                PublishMessage::build()
                    .headers(headers)
                    .payload(signed.encode_to_vec().into()),
            )
            .await
            .map_err(nats)?
            .await
            .map_err(|e| raced(e.to_string()))?;
        if ack.duplicate {
            return Err(raced(format!(
                "a checkpoint of size {tree_size} is already stored at stream sequence {}",
                ack.sequence
            )));
        }
        Ok(ack.sequence)
    }
}

/// Where the ledger's checkpoint-signing key lives.
#[derive(Clone)]
pub enum KeyHome {
    /// Key files in a directory (`LEDGER_KEY_FILE`, `NEXT_LEDGER_KEY_FILE`): one process
    /// (tests, tools).
    Dir(PathBuf),
    /// The vault bucket, wrapped under the secrets' key-wrapping key: every process of
    /// the ledger signs with the same key, and no data directory holds it. A key file of
    /// an earlier version found in `legacy_dir` is moved in on first use.
    Vault {
        vault: Arc<Vault>,
        legacy_dir: PathBuf,
    },
}

impl From<&Path> for KeyHome {
    fn from(dir: &Path) -> Self {
        KeyHome::Dir(dir.to_path_buf())
    }
}

impl From<&PathBuf> for KeyHome {
    fn from(dir: &PathBuf) -> Self {
        KeyHome::Dir(dir.clone())
    }
}

/// Names of the signing key and of a rotation's next key in the vault.
const SECRET_KEY: &str = "ledger-key";
const SECRET_NEXT_KEY: &str = "ledger-key-next";

impl KeyHome {
    /// The ledger's current signing key (made, once, if the ledger has none yet): what
    /// an operator's exclusion is signed with.
    pub async fn current_key(&self) -> Result<KeyPair, CheckpointError> {
        self.load_or_create().await
    }

    /// The current key, created (once, whichever process is first) when there is none.
    async fn load_or_create(&self) -> Result<KeyPair, CheckpointError> {
        match self {
            KeyHome::Dir(dir) => Ok(keys::load_or_create_key(&dir.join(LEDGER_KEY_FILE))?.0),
            KeyHome::Vault { vault, legacy_dir } => {
                if let Some(seed) = vault.secret(SECRET_KEY).await? {
                    return Ok(KeyPair::from_seed(&seed));
                }
                let legacy = legacy_dir.join(LEDGER_KEY_FILE);
                let seed = if legacy.exists() {
                    keys::load_key(&legacy)?.seed()
                } else {
                    ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng).to_bytes()
                };
                let stored = vault.create_secret(SECRET_KEY, &seed).await?;
                Ok(KeyPair::from_seed(&stored))
            }
        }
    }

    async fn load(&self) -> Result<KeyPair, CheckpointError> {
        match self {
            KeyHome::Dir(dir) => Ok(keys::load_key(&dir.join(LEDGER_KEY_FILE))?),
            KeyHome::Vault { vault, .. } => match vault.secret(SECRET_KEY).await? {
                Some(seed) => Ok(KeyPair::from_seed(&seed)),
                None => Err(CheckpointError::KeyNotRegistered {
                    local: "(none in the vault)".into(),
                    registered: "(unknown)".into(),
                }),
            },
        }
    }

    async fn load_or_create_next(&self) -> Result<KeyPair, CheckpointError> {
        match self {
            KeyHome::Dir(dir) => Ok(keys::load_or_create_key(&dir.join(NEXT_LEDGER_KEY_FILE))?.0),
            KeyHome::Vault { vault, .. } => {
                let seed = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng).to_bytes();
                let stored = vault.create_secret(SECRET_NEXT_KEY, &seed).await?;
                Ok(KeyPair::from_seed(&stored))
            }
        }
    }

    /// The next key becomes the current one (its rotation event is durable).
    async fn promote_next(&self, next: &KeyPair) -> Result<(), CheckpointError> {
        match self {
            KeyHome::Dir(dir) => {
                let (next_path, key_path) =
                    (dir.join(NEXT_LEDGER_KEY_FILE), dir.join(LEDGER_KEY_FILE));
                std::fs::rename(&next_path, &key_path).map_err(|source| {
                    keys::KeyFileError::Io {
                        path: key_path.clone(),
                        source,
                    }
                })?;
                keys::sync_parent(&key_path);
                Ok(())
            }
            KeyHome::Vault { vault, .. } => {
                vault.replace_secret(SECRET_KEY, Some(&next.seed())).await?;
                vault.replace_secret(SECRET_NEXT_KEY, None).await?;
                Ok(())
            }
        }
    }
}

/// Replaces the ledger key by a new one, recording the change as a `LedgerKeyRotated`
/// event signed by the old key. Crash-safe: the new key waits as the next key until its
/// event is in the log, and a rerun finishes an interrupted rotation. Returns (old key
/// id, new key id).
pub async fn rotate_key(
    ledger: &Ledger,
    config: &CheckpointConfig,
    home: impl Into<KeyHome>,
) -> Result<(String, String), CheckpointError> {
    let home = home.into();
    let old = home.load().await?;
    let next = home.load_or_create_next().await?;
    let ring = read::read_key_ring(ledger.stream(), ledger.config(), config).await?;
    let current = ring.current().map(|k| k.key_id.clone()).unwrap_or_default();
    if current == old.key_id() {
        ledger
            .append(key_draft(config, sign::key_rotation(&next, Some(&old))))
            .await?;
    } else if current != next.key_id() {
        return Err(CheckpointError::KeyNotRegistered {
            local: old.key_id().to_string(),
            registered: current,
        });
    }
    // The event is durable: only now may the old key go.
    home.promote_next(&next).await?;
    Ok((old.key_id().to_string(), next.key_id().to_string()))
}

/// A running background checkpointer; see `spawn`.
pub struct CheckpointTask {
    stop: Option<oneshot::Sender<()>>,
    now: Arc<Notify>,
    handle: tokio::task::JoinHandle<Checkpointer>,
}

impl CheckpointTask {
    /// Starts a task that checkpoints each partition `policy.every_events` events after
    /// its last checkpoint, and every partition with new events every `policy.every`
    /// (the first time one period after start; call `checkpoint_now` to start with one).
    /// It learns of new events from an ordered consumer on the event stream (headers
    /// only), created before this returns, so it sees every event stored from now on
    /// and only events that are stored. Failures are logged and retried at the next
    /// trigger.
    pub async fn spawn(
        checkpointer: Checkpointer,
        policy: Policy,
    ) -> Result<Self, CheckpointError> {
        let events = new_events(&checkpointer).await?;
        let (stop, stopped) = oneshot::channel();
        let now = Arc::new(Notify::new());
        let handle = tokio::spawn(run(
            checkpointer,
            events,
            policy.clamped(),
            stopped,
            now.clone(),
        ));
        Ok(Self {
            stop: Some(stop),
            now,
            handle,
        })
    }

    /// Asks for a checkpoint of every partition now.
    pub fn checkpoint_now(&self) {
        self.now.notify_one();
    }

    /// Stops the task after its current checkpoint and hands the checkpointer back.
    pub async fn stop(mut self) -> Checkpointer {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.handle).await.expect("checkpoint task panicked")
    }
}

impl Policy {
    /// Zero would mean "checkpoint on every event" or a busy loop: bound both.
    fn clamped(self) -> Self {
        Self {
            every_events: self.every_events.max(1),
            every: self.every.max(Duration::from_millis(100)),
        }
    }
}

async fn run(
    mut checkpointer: Checkpointer,
    events: EventFeed,
    policy: Policy,
    mut stopped: oneshot::Receiver<()>,
    now: Arc<Notify>,
) -> Checkpointer {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + policy.every, policy.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events = Some(events);
    let log = checkpointer.ledger.config().clone();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => all(&mut checkpointer).await,
            _ = now.notified() => all(&mut checkpointer).await,
            message = next_event(&mut events) => {
                let Some(message) = message else {
                    tracing::warn!("checkpoint task: event feed ended; checkpoints by time only");
                    events = None;
                    continue;
                };
                let Some(partition) = log.partition_of(&message.0).and_then(|p| Partition::new(p).ok()) else {
                    continue;
                };
                if message.1 >= checkpointer.checkpointed_size(&partition).saturating_add(policy.every_events) {
                    if let Err(e) = checkpointer.checkpoint(&partition).await {
                        tracing::warn!(partition = %partition, error = %e, "checkpoint failed; will retry");
                    }
                }
            }
        }
    }
    checkpointer
}

async fn all(checkpointer: &mut Checkpointer) {
    match checkpointer.checkpoint_all().await {
        Ok(outcomes) => {
            for (partition, outcome) in outcomes {
                if let Err(e) = outcome {
                    tracing::warn!(partition = %partition, error = %e, "checkpoint failed; will retry");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "checkpoints failed; will retry"),
    }
}

type EventFeed = consumer::pull::Ordered;

async fn new_events(checkpointer: &Checkpointer) -> Result<EventFeed, CheckpointError> {
    checkpointer
        .ledger
        .stream()
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: checkpointer.ledger.config().wildcard(),
            deliver_policy: consumer::DeliverPolicy::New,
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(nats)?
        .messages()
        .await
        .map_err(nats)
}

/// The next stored event's (subject, partition sequence); pending forever without a feed.
async fn next_event(events: &mut Option<EventFeed>) -> Option<(String, u64)> {
    let Some(feed) = events else {
        return std::future::pending().await;
    };
    loop {
        match feed.next().await? {
            Ok(message) => {
                let sequence = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(HEADER_SEQUENCE))
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or(u64::MAX);
                return Some((message.subject.to_string(), sequence));
            }
            Err(e) => tracing::warn!(error = %e, "checkpoint task: event feed error"),
        }
    }
}
