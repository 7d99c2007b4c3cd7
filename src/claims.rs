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

use async_nats::jetstream::{
    self,
    kv::{self, CreateErrorKind, UpdateErrorKind},
};
use bytes::Bytes;

use crate::domain::registry::BlindIndex;

/// Compare-and-set attempts per citizen before giving up: each lost race means another
/// process changed the same claim in between, which is rare; an endless loop is not an
/// answer.
pub const CLAIM_ATTEMPTS_MAX: usize = 8;
/// Revisions of a claim kept in the bucket (who held it before): for operators.
pub const CLAIM_HISTORY: i64 = 8;
/// Citizens this process claims or releases at once. Each write to the bucket is fsynced
/// on its own, one after another, so the server answers a few thousand a second; with
/// no bound, the demo's 2,048 households in flight put thousands of claims before the
/// server at once, each with a 5 s request timeout running. Past this bound a claim
/// waits here, where no timeout runs.
pub const CLAIMS_IN_FLIGHT_MAX: usize = 256;

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
    /// log) when missing.
    pub async fn open(js: &jetstream::Context, stream_name: &str) -> Result<Self, ClaimError> {
        let bucket = bucket_name(stream_name);
        let kv = match js.get_key_value(&bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket,
                    description: "ansinh: household holding each citizen (blind index)".into(),
                    history: CLAIM_HISTORY,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(nats)?,
        };
        Ok(Self {
            kv,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(CLAIMS_IN_FLIGHT_MAX)),
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
            let entry = self.kv.entry(key.as_str()).await.map_err(nats)?;
            let result = match entry {
                None => match self.kv.create(&key, value.clone()).await {
                    Ok(_) => return Ok(true),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(nats(e)),
                },
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
                    self.kv.update(&key, value.clone(), e.revision).await
                }
            };
            match result {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(nats(e)),
            }
        }
        Err(ClaimError::Contended)
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
        let mut taken = Vec::new();
        for citizen in citizens {
            match self.take(citizen, household, from).await {
                Ok(true) => taken.push(*citizen),
                Ok(false) => {}
                Err(e) => {
                    // Best effort: a release that fails leaves a claim of `household`,
                    // which a retry of the same command reuses.
                    let _ = self.release(household, &taken).await;
                    return Err(e);
                }
            }
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
                let Some(e) = self.kv.entry(key.as_str()).await.map_err(nats)? else {
                    continue 'citizens;
                };
                if e.value != household.as_bytes() {
                    continue 'citizens;
                }
                match self.kv.update(&key, Bytes::new(), e.revision).await {
                    Ok(_) => continue 'citizens,
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                    Err(e) => return Err(nats(e)),
                }
            }
            return Err(ClaimError::Contended);
        }
        Ok(())
    }
}
