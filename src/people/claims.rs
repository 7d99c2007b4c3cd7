//! Country-wide uniqueness of citizens: which household holds each citizen (by blind
//! index), across every partition.
//!
//! Each partition's writer refuses a citizen already in another household *of that
//! partition* (the book sees only its own chain). Provinces are separate chains, so a
//! citizen registered in Hà Nội and again in An Giang would pass both books. The claim
//! closes that gap: before a command that adds citizens is submitted, the service
//! claims each of them in a JetStream key-value bucket with compare-and-set
//! (create-if-absent, or update at the revision read), so of two racing claims across
//! any number of ledger processes exactly one wins.
//!
//! **The log stays the record.** A claim is an index for enforcement, like the
//! idempotency index: the events carry every household's blind indexes, and
//! `audit anomalies` re-derives "one citizen in two households" from the chains alone.
//!
//! Order and failure, per command (see `Service`):
//! - claim, then submit; a definite refusal of the submit releases what this call
//!   newly claimed. A crash between claim and submit leaves a claim held by the
//!   household that was being registered: retrying that command (same household)
//!   finds its own claim and completes; another household is refused, naming it.
//! - a released claim keeps its key with an empty value (the bucket is never purged),
//!   so the next claim is an update at a known revision.
//! - a move transfers the claims from the old household id to the new one; an erasure
//!   releases them; a death keeps the deceased's claim (an id of a dead citizen must
//!   not be registered again elsewhere).
//!
//! **Writes are batched** (`kv_writes`): each claim write is one compare-and-set
//! message on the bucket's stream, and the writes waiting are stored in one atomic
//! batch, one fsync for all of them; a few writes waiting (up to `KV_SINGLES_MAX`) go
//! as single publishes instead, cheaper than a batch's fixed cost.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use crate::domain::registry::BlindIndex;
use crate::kv_writes::{FencedWrites, KV_QUEUE_MAX, WriteError, open_bucket};

/// Compare-and-set attempts per citizen before giving up: each lost race means another
/// process changed the same claim in between, which is rare; an endless loop is not an
/// answer.
pub const CLAIM_ATTEMPTS_MAX: usize = 8;
/// Revisions of a claim kept in the bucket (who held it before): for operators.
pub const CLAIM_HISTORY: i64 = 8;
/// Citizens this process claims or releases at once (reads of the bucket and writes
/// waiting for the batcher). Past this bound a claim waits here, where no request
/// timeout runs.
pub const CLAIMS_IN_FLIGHT_MAX: usize = 1_024;
const _: () = assert!(CLAIMS_IN_FLIGHT_MAX <= KV_QUEUE_MAX);

/// Why a claim could not be made or released.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The citizen belongs to another household. Nothing was appended.
    #[error("citizen already in household {holder}")]
    Held { holder: String },
    /// The bucket could not be read or written: retry the command.
    #[error("citizen claims: {0}")]
    Nats(String),
    /// Lost the compare-and-set race too often: retry the command.
    #[error("citizen claim contended {CLAIM_ATTEMPTS_MAX} times; retry")]
    Contended,
}

/// The claims bucket of one ledger (named after its event stream, so test ledgers
/// sharing a server do not share claims).
#[derive(Clone)]
pub struct Claims {
    kv: kv::Store,
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    writes: FencedWrites,
}

fn nats(e: impl std::fmt::Display) -> ClaimError {
    ClaimError::Nats(e.to_string())
}

/// The bucket's name for an event stream.
pub fn bucket_name(stream_name: &str) -> String {
    format!("{stream_name}_CITIZENS")
}

fn key(citizen: &BlindIndex) -> String {
    blake3::Hash::from_bytes(*citizen).to_hex().to_string()
}

impl Claims {
    /// Opens the bucket, creating it (file storage, so acknowledged = fsynced like the
    /// log) when missing, and lets its stream take atomic batches.
    pub async fn open(
        js: &jetstream::Context,
        stream_name: &str,
        replicas: usize,
    ) -> Result<Self, ClaimError> {
        let kv = open_bucket(
            js,
            kv::Config {
                bucket: bucket_name(stream_name),
                description: "ansinh: household holding each citizen (blind index)".into(),
                history: CLAIM_HISTORY,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await
        .map_err(ClaimError::Nats)?;
        let writes = FencedWrites::spawn(js, &kv);
        Ok(Self {
            kv,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(CLAIMS_IN_FLIGHT_MAX)),
            writes,
        })
    }

    /// Waits for one of the CLAIMS_IN_FLIGHT_MAX places.
    async fn turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    /// Makes `household` the holder of `citizen` if it is free or already held by
    /// `household` or by `from` (a move). Returns true when this call changed it.
    async fn take(
        &self,
        citizen: &BlindIndex,
        household: &str,
        from: Option<&str>,
    ) -> Result<bool, ClaimError> {
        let key = key(citizen);
        let value = Bytes::copy_from_slice(household.as_bytes());
        let _turn = self.turn().await;
        for _ in 0..CLAIM_ATTEMPTS_MAX {
            let revision = match self.read(&key).await? {
                None => 0,
                Some(e) => {
                    let held = e.operation == kv::Operation::Put && !e.value.is_empty();
                    if held && e.value == household.as_bytes() {
                        return Ok(false);
                    }
                    if held && from.is_none_or(|f| e.value != f.as_bytes()) {
                        return Err(ClaimError::Held {
                            holder: String::from_utf8_lossy(&e.value).into_owned(),
                        });
                    }
                    e.revision
                }
            };
            match self.writes.write(&key, value.clone(), revision).await {
                Ok(()) => return Ok(true),
                Err(WriteError::WrongRevision) => continue,
                Err(WriteError::Nats(e)) => return Err(ClaimError::Nats(e)),
            }
        }
        Err(ClaimError::Contended)
    }

    /// A claim's last entry. A bucket just made on a cluster may answer "no responders"
    /// for a moment: read again within the reader's bounds for transient reads.
    async fn read(&self, key: &str) -> Result<Option<kv::Entry>, ClaimError> {
        crate::log::reader::retrying_transient(
            || self.kv.entry(key),
            |e| crate::log::reader::no_responders(e),
        )
        .await
        .map_err(nats)
    }

    /// The household holding `citizen`, if any: one read of the bucket.
    pub async fn holder(&self, citizen: &BlindIndex) -> Result<Option<String>, ClaimError> {
        Ok(self.read(&key(citizen)).await?.and_then(|e| {
            (e.operation == kv::Operation::Put && !e.value.is_empty())
                .then(|| String::from_utf8_lossy(&e.value).into_owned())
        }))
    }

    /// Claims every citizen for `household`, all or nothing: on a refusal, the claims
    /// this call made are released again. Returns the citizens newly claimed (to release
    /// if the command is then refused).
    pub async fn claim(
        &self,
        household: &str,
        citizens: &[BlindIndex],
    ) -> Result<Vec<BlindIndex>, ClaimError> {
        self.claim_from(household, None, citizens).await
    }

    /// Moves the claims of `citizens` from `from` to `to` (a household moving to a new
    /// id); free citizens are claimed for `to`.
    pub async fn transfer(
        &self,
        from: &str,
        to: &str,
        citizens: &[BlindIndex],
    ) -> Result<Vec<BlindIndex>, ClaimError> {
        self.claim_from(to, Some(from), citizens).await
    }

    async fn claim_from(
        &self,
        household: &str,
        from: Option<&str>,
        citizens: &[BlindIndex],
    ) -> Result<Vec<BlindIndex>, ClaimError> {
        // A household's citizens are claimed together, so their writes share a batch.
        let outcomes = futures::future::join_all(
            citizens
                .iter()
                .map(|citizen| self.take(citizen, household, from)),
        )
        .await;
        let mut taken = Vec::new();
        let mut first_error = None;
        for (citizen, outcome) in citizens.iter().zip(outcomes) {
            match outcome {
                Ok(true) => taken.push(*citizen),
                Ok(false) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            // Best effort: a release that fails leaves a claim of `household`, which a
            // retry of the same command reuses.
            let _ = self.release(household, &taken).await;
            return Err(e);
        }
        Ok(taken)
    }

    /// Releases the citizens `household` holds (others' claims are left alone).
    pub async fn release(
        &self,
        household: &str,
        citizens: &[BlindIndex],
    ) -> Result<(), ClaimError> {
        'citizens: for citizen in citizens {
            let key = key(citizen);
            let _turn = self.turn().await;
            for _ in 0..CLAIM_ATTEMPTS_MAX {
                let Some(e) = self.read(&key).await? else {
                    continue 'citizens;
                };
                if e.value != household.as_bytes() {
                    continue 'citizens;
                }
                match self.writes.write(&key, Bytes::new(), e.revision).await {
                    Ok(()) => continue 'citizens,
                    Err(WriteError::WrongRevision) => {}
                    Err(WriteError::Nats(e)) => return Err(ClaimError::Nats(e)),
                }
            }
            return Err(ClaimError::Contended);
        }
        Ok(())
    }
}
