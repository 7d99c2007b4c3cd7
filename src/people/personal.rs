//! Personal data vault: crypto-shredding for the disbursement ledger.
//!
//! Personal data of a household (names, citizen IDs, phone and account
//! numbers) never stands in clear in the hash-chained event log. Instead:
//!
//! * each household gets a random 32-byte **data key** (DEK), kept outside the
//!   log in the replicated JetStream key-value bucket `<stream>_VAULT`, itself
//!   encrypted ("wrapped") under the **key-wrapping key** (KEK) from the secrets
//!   file, so a copy of the bucket alone reveals nothing. Every ledger process of a
//!   deployment reads the same bucket, so a household sealed by one process opens
//!   in every other, and no process's disk holds anything the others need;
//! * the log stores only the sealed bytes returned by [`Vault::seal`]; the chain
//!   hashes those ciphertext bytes and nothing else;
//! * erasing a household ([`Vault::erase`], right to erasure under decree
//!   13/2023/ND-CP) deletes its data key: every sealed blob of that household
//!   becomes unreadable for good, while the chain, which never saw the
//!   plaintext or the key, still verifies;
//! * duplicate checks use a **blind index** ([`Vault::blind_index`]): a keyed
//!   blake3 hash of the citizen id, under a second key from the secrets file.
//!
//! # Formats (all "version 1"; any change needs a new version byte)
//!
//! * Secrets file: exactly 64 random bytes, mode 0600 (no group/other bits):
//!   bytes `0..32` = KEK, bytes `32..64` = blind-index key.
//! * Plaintext: [`PersonalData`] encoded as compact UTF-8 JSON by `serde_json`
//!   (object with the struct's field names; `None` as `null`), at most
//!   [`MAX_PLAINTEXT_LEN`] bytes.
//! * Sealed bytes: `0x01 || nonce (24 random bytes) || XChaCha20-Poly1305
//!   ciphertext+tag`, key = the household's DEK, AAD = `"ansinh/v1/personal\0"
//!   || household id` (so a blob cannot be replayed under another household);
//!   or, sealed under a pooled key (below), `0x02 || key id (16 bytes) || nonce ||
//!   ciphertext+tag`, the same AAD; or, sealed under a key of a page of pooled keys,
//!   `0x03 || page id (16 bytes) || slot (u16, big-endian) || nonce || ciphertext+tag`,
//!   the same AAD.
//! * Pooled keys: a registration must not wait for a bucket write of its own (an
//!   atomic batch of 5-17 ms under load, ADR 0007), so each process writes data keys
//!   ahead of need (`KeyPool`), in pages of up to [`PAGE_KEYS_MAX`] keys: bucket key
//!   `dp.<page id in hex>`, value = the slots one after another, 73 bytes each, a key
//!   wrapped like a household's with AAD = `dp.<page id in hex>/<slot in decimal>`, or
//!   an erased slot = the erasure tombstone (below) padded with zeros to 73 bytes.
//!   Earlier versions wrote one key per bucket key, `dk.<key id in hex>` with AAD = that
//!   bucket key (sealed version 2); those are still opened and erased. A household
//!   registered (or moved in) is sealed under a pooled key ([`Vault::seal_new`],
//!   [`Vault::seal_registering`]), and every later seal of it reuses the key its latest
//!   blob names ([`Vault::seal_again`]); erasing it erases that key (a compare-and-set
//!   of its page that tombstones its slot, the other slots unchanged) and tombstones the
//!   household ([`Vault::erase_sealed`]). A process that stops leaves the keys it wrote
//!   and never used, which protect nothing.
//! * The bucket (history 1: a key holds only its latest value) maps
//!   `hh.<household id>` to either the wrapped DEK = `0x01 || nonce (24) ||
//!   XChaCha20-Poly1305(KEK, DEK, AAD = household id)` (73 bytes), or the
//!   erasure tombstone = `0xE1 || erasure time` (i64 unix milliseconds,
//!   big-endian; 9 bytes). Every write is a compare-and-set on the key's
//!   revision (`kv_writes`), so two processes sealing one new household at once
//!   agree on one key, and an erasure replaces exactly the key it read.
//!   `meta.format` -> `[1]`; `meta.secrets-check` -> blake3
//!   `derive_key("ansinh v1 vault secrets check", secrets)`: the first process
//!   records it, and a process started with another secrets file refuses to
//!   start, naming the file.
//!
//! Household ids used as keys are 1..=256 ASCII letters, digits, `-` or `_`.
//!
//! # Erasure caveat
//!
//! An erasure writes the tombstone over the key; with history 1 the server then
//! removes the message that held the wrapped DEK (for a pooled key, the page's
//! earlier revision, which held it among the others). nats-server marks it deleted
//! in its block file and the bytes stay on each replica's disk until that block
//! is compacted or removed (and in any backup of the server's store). What
//! survives is only the *wrapped* DEK, useless without the KEK. Erasure is
//! therefore final against anyone who has the server's files but not the
//! secrets file; against someone who also holds the secrets file it is final
//! only once no copy of the wrapped DEK is left: the blocks rewritten and every
//! older backup of the store gone (docs/OPERATIONS.md, section 3). The KEK cannot
//! be rotated: nothing re-wraps the vault, `open` refuses any other secrets file
//! (`WrongSecrets`), and the file's second half is the blind-index key the
//! claims are computed with.
//!
//! Versions before the shared bucket kept the keys in the sled trees
//! `vault.keys` and `vault.meta` of one process's store; `admin migrate-vault`
//! moves them into the bucket ([`Vault::migrate_local`]).
//!
//! Keys in memory are held in [`Zeroizing`] buffers and the AEAD ciphers wipe
//! their key on drop; clear plaintext buffers are zeroized too. Decoded
//! [`PersonalData`] is ordinary Rust data: callers that want it wiped call
//! [`Zeroize::zeroize`] on it once done.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::kv_writes::{FencedWrites, WriteError, open_bucket};

/// Version byte of a blob sealed under the household's own key (`hh.<id>`).
pub const SEALED_VERSION: u8 = 1;
/// Version byte of a blob sealed under a pooled key of its own bucket key (`dk.<id>`),
/// whose id follows it. Opened and erased still; new seals use pages (version 3).
pub const SEALED_POOLED_VERSION: u8 = 2;
/// Version byte of a blob sealed under a pooled key kept in a page of keys (`dp.<page
/// id>`), whose page id and slot follow it.
pub const SEALED_PAGED_VERSION: u8 = 3;
/// Length of a pooled key's id, and of a page's.
pub const KEY_ID_LEN: usize = 16;
/// Length of a slot number in a version-3 blob (big-endian).
const SLOT_LEN: usize = 2;
/// Most keys one page holds. One page is one bucket message, so a registration no
/// longer costs the server a message of its own (measured with the province bench: the
/// pooled keys' messages, one per household, were a quarter of a registration's CPU);
/// a read of a household's data fetches its page, 128 × 73 B = 9.3 KiB at most.
pub const PAGE_KEYS_MAX: usize = 128;
/// Most keys one refill of the pool writes (in pages of `PAGE_KEYS_MAX`, one round of
/// the bucket's writer).
pub const POOL_REFILL_KEYS_MAX: usize = 512;
/// Length of the XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Largest accepted encoded plaintext ([`PersonalData`] as JSON): 16 KiB.
pub const MAX_PLAINTEXT_LEN: usize = 16 * 1024;
/// Bytes a sealed blob adds to its plaintext: version, nonce and tag.
pub const SEALED_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Largest sealed blob [`Vault::seal`] can produce; longer input is refused.
pub const MAX_SEALED_LEN: usize = SEALED_OVERHEAD + KEY_ID_LEN + SLOT_LEN + MAX_PLAINTEXT_LEN;
/// Largest accepted household id, in UTF-8 bytes.
pub const MAX_HOUSEHOLD_ID_LEN: usize = 256;
/// Exact size of the secrets file.
pub const SECRETS_LEN: usize = 64;

/// Compare-and-set attempts on one household's key before giving up: each lost race
/// means another process wrote the same key in between, which is rare.
pub const VAULT_WRITE_ATTEMPTS_MAX: usize = 8;
/// sled trees where versions before the shared bucket kept the keys.
const LOCAL_KEYS_TREE: &str = "vault.keys";
const LOCAL_META_TREE: &str = "vault.meta";
const LOCAL_SECRETS_CHECK: &[u8] = b"secrets_check";
const LOCAL_TOMBSTONE_PREFIX: &[u8] = b"erased\0";
const KEY_FORMAT: &str = "meta.format";
const STORE_FORMAT: &[u8] = &[1];
const KEY_SECRETS_CHECK: &str = "meta.secrets-check";
const TOMBSTONE_VERSION: u8 = 0xE1;
const TOMBSTONE_LEN: usize = 9;
const SECRETS_CHECK_CONTEXT: &str = "ansinh v1 vault secrets check";
const PERSONAL_AAD_PREFIX: &[u8] = b"ansinh/v1/personal\0";
const BLIND_CITIZEN_PREFIX: &[u8] = b"ansinh/v1/blind/citizen\0";
const WRAP_VERSION: u8 = 1;
const KEY_LEN: usize = 32;
const WRAPPED_KEY_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;

/// Clear personal data of a household, the plaintext that gets sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalData {
    pub head_name: String,
    pub head_citizen_id: String,
    pub phone: Option<String>,
    pub account_number: Option<String>,
    pub members: Vec<Member>,
}

/// A household member other than (or besides) the head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub citizen_id: Option<String>,
    pub relation: String,
}

impl PersonalData {
    /// The data left after the death of the citizen `deceased`: without them, and if the
    /// head died, the first member with a citizen id as head. None when the head died
    /// and no member has an id to take their place (the household then has no head: the
    /// death is recorded without sealing again, `Service::record_death`).
    pub fn after_death(mut self, deceased: &str) -> Option<PersonalData> {
        if self.head_citizen_id == deceased {
            let pos = self.members.iter().position(|m| m.citizen_id.is_some())?;
            let next = self.members.remove(pos);
            self.head_name = next.name;
            self.head_citizen_id = next.citizen_id.expect("chosen with an id");
        } else {
            self.members
                .retain(|m| m.citizen_id.as_deref() != Some(deceased));
        }
        Some(self)
    }
}

impl Zeroize for PersonalData {
    /// Best-effort wipe of every string (and clears the member list).
    fn zeroize(&mut self) {
        self.head_name.zeroize();
        self.head_citizen_id.zeroize();
        self.phone.zeroize();
        self.account_number.zeroize();
        self.members.zeroize();
    }
}

impl Zeroize for Member {
    fn zeroize(&mut self) {
        self.name.zeroize();
        self.citizen_id.zeroize();
        self.relation.zeroize();
    }
}

/// Key state of one household, see [`Vault::key_status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    /// No data key was ever created for the household, and it was never erased.
    NoKey,
    /// The household has a live data key: its sealed blobs can be opened.
    Active,
    /// The household was erased at this time (unix milliseconds); its data key
    /// is gone and no new one will be created.
    Erased { erased_at_unix_ms: i64 },
}

/// Errors of the vault. No variant carries personal data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The secrets file could not be created, read or made durable.
    /// Handle: operator problem (path, directory permissions, disk); the vault
    /// cannot start. Never "fix" it by pointing at a new empty path while
    /// `vault.keys` holds keys: a new secrets file makes every key unreadable.
    #[error("vault secrets file {path}: {source}")]
    SecretsIo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The secrets file exists but is unusable (not a regular file, not exactly
    /// 64 bytes, or a key half is all zeros).
    /// Handle: restore the right file from backup; do not regenerate it.
    #[error("vault secrets file {path} is invalid: {reason}")]
    SecretsInvalid { path: PathBuf, reason: &'static str },
    /// The secrets file is readable by group or others (`mode` shows the bits).
    /// Handle: `chmod 600` (or 400) the file and open again.
    #[error(
        "vault secrets file {path} has mode {mode:o}; group/other bits must be clear (chmod 600)"
    )]
    SecretsPermissions { path: PathBuf, mode: u32 },
    /// The secrets file is not the one the ledger's vault was initialised with.
    /// Handle: configuration error at startup; give every process the same
    /// secrets file. Continuing would seal under keys no other process can open.
    #[error(
        "vault secrets file {path} is not the ledger's: every process of a ledger needs the same secrets file"
    )]
    WrongSecrets { path: PathBuf },
    /// The store carries a format marker this code does not know.
    /// Handle: written by newer software; upgrade before opening.
    #[error("vault store format {found} is not supported")]
    UnsupportedStoreFormat { found: String },
    /// The vault trees hold something malformed (wrapped key of wrong length or
    /// version, bad tombstone, keys without a secrets check).
    /// Handle: storage corruption; stop writing and restore from backup.
    #[error("vault store is corrupt: {what}")]
    StoreCorrupt { what: &'static str },
    /// A wrapped data key failed authentication under the key-wrapping key.
    /// Handle: the store was tampered with or mixed with another deployment's;
    /// raise a security alert and restore from backup. Do not retry.
    #[error("wrapped data key failed authentication")]
    KeyUnwrap,
    /// The vault's bucket could not be read or written (NATS unreachable, no
    /// quorum), or a local store being migrated failed.
    /// Handle: fail the request; a retry may succeed.
    #[error("vault storage: {0}")]
    Storage(String),
    /// The vault's bucket could not be opened: NATS unreachable (retry), or the bucket
    /// exists but is unsafe for the vault, kept on fewer replicas than `--replicas` asks.
    /// Handle: an operator raises its replicas (`nats stream edit KV_<stream>_VAULT
    /// --replicas N`); the vault never runs on fewer copies than promised.
    #[error("vault: {0}")]
    Bucket(#[from] crate::log::stream::StreamError),
    /// Lost the compare-and-set race on one key too often. Handle: retry.
    #[error("vault key contended {VAULT_WRITE_ATTEMPTS_MAX} times; retry")]
    Contended,
    /// The operating system random generator failed.
    /// Handle: fail the request and retry later; never substitute weaker
    /// randomness.
    #[error("system random generator failed: {0}")]
    Rng(getrandom::Error),
    /// The household id is empty, longer than [`MAX_HOUSEHOLD_ID_LEN`] bytes, or
    /// holds a character other than ASCII letters, digits, `-` and `_`.
    /// Handle: caller bug or bad input; reject it.
    #[error(
        "household id must be 1..={max} ASCII letters, digits, '-' or '_'; got {len} bytes",
        max = MAX_HOUSEHOLD_ID_LEN
    )]
    InvalidHouseholdId { len: usize },
    /// The encoded personal data exceeds [`MAX_PLAINTEXT_LEN`] bytes.
    /// Handle: validation error for the person entering data (too many members
    /// or over-long fields); nothing was stored and no key was created.
    #[error("encoded personal data is {len} bytes, limit {max}")]
    PlaintextTooLarge { len: usize, max: usize },
    /// Sealed input longer than anything [`Vault::seal`] produces.
    /// Handle: not a blob of this vault; treat as corrupt or hostile input.
    #[error("sealed input is {len} bytes, limit {max}")]
    SealedTooLarge { len: usize, max: usize },
    /// Sealed input too short to hold version, nonce and tag.
    /// Handle: corrupt or truncated input; do not retry.
    #[error("sealed input of {len} bytes is malformed")]
    Malformed { len: usize },
    /// Sealed input starts with an unknown version byte.
    /// Handle: written by newer software (upgrade) or corrupt input.
    #[error("sealed input has unsupported version {version}")]
    UnsupportedVersion { version: u8 },
    /// `admin migrate-vault` found a local key for a household that already has
    /// another key in the shared bucket (two processes each made one). The shared
    /// key is kept; data sealed under the local one cannot be opened.
    /// Handle: the household's personal data must be entered again.
    #[error("household {household} has another data key in the shared vault")]
    MigrationConflict { household: String },
    /// The household never had a data key in this vault and was never erased.
    /// Handle: wrong household id, or a blob from another deployment; for
    /// `open_sealed` investigate, do not retry.
    #[error("household has no data key")]
    NoKey,
    /// The household's data key was erased at this time (unix milliseconds).
    /// Handle: expected after an erasure request: show "personal data erased"
    /// in place of the data; the log event itself stays valid. `seal` refuses
    /// too: a household that comes back is registered under a new id.
    #[error("household personal data was erased at {erased_at_unix_ms} (unix ms)")]
    Erased { erased_at_unix_ms: i64 },
    /// Authentication failed: the blob was altered, truncated, moved to another
    /// household id, or sealed under another key.
    /// Handle: integrity alarm; show nothing of the blob; do not retry.
    #[error("sealed personal data failed authentication")]
    Tampered,
    /// The blob authenticated but its plaintext is not [`PersonalData`] JSON.
    /// Only a holder of the data key can cause this; treat as a bug or
    /// corruption. The parser's message is dropped so no plaintext leaks.
    #[error("sealed personal data decrypted but does not decode")]
    Undecodable,
    /// The AEAD library refused to encrypt. Cannot happen for the bounded
    /// sizes used here. Handle: bug; fail the request.
    #[error("encryption failed")]
    Crypto,
}

/// The personal-data vault: data keys in a replicated JetStream bucket shared by every
/// ledger process, master keys from a secrets file.
pub struct Vault {
    kv: kv::Store,
    writes: FencedWrites,
    pool: Arc<KeyPool>,
    /// One erasure of a page's slot at a time in this process: households that share a
    /// page were registered together, often in one commune, so erasing them together
    /// would otherwise race on the page's revision until the attempts ran out.
    erasing_slot: tokio::sync::Mutex<()>,
    kek: Zeroizing<[u8; KEY_LEN]>,
    blind_key: Zeroizing<[u8; KEY_LEN]>,
    check: [u8; 32],
    secrets_path: PathBuf,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("bucket", &self.kv.name)
            .finish_non_exhaustive()
    }
}

/// The bucket's name for an event stream (test ledgers sharing a server do not share
/// vaults).
pub fn bucket_name(stream_name: &str) -> String {
    format!("{stream_name}_VAULT")
}

/// What the bucket holds for one household, with the revision to write over.
enum Slot {
    Empty { revision: u64 },
    Key { wrapped: Bytes, revision: u64 },
    Erased { at_unix_ms: i64 },
}

fn storage(e: impl fmt::Display) -> VaultError {
    VaultError::Storage(e.to_string())
}

fn bucket_key(household_id: &str) -> Result<String, VaultError> {
    check_household_id(household_id)?;
    Ok(format!("hh.{household_id}"))
}

impl Vault {
    /// Opens the vault of the ledger whose event stream is `stream_name`: its bucket
    /// (created with `replicas` when missing), and the master key and blind-index key
    /// from `secrets_path`, a 64-byte secret file created with mode 0600 and random
    /// bytes if missing (first 32 = key-wrapping key, last 32 = blind-index key). An
    /// existing file must be exactly 64 bytes with no group/other permission bits. The
    /// first open of a ledger records a check value of the secrets in the bucket; a
    /// later open with another secrets file fails with [`VaultError::WrongSecrets`].
    pub async fn open(
        js: &jetstream::Context,
        stream_name: &str,
        replicas: usize,
        secrets_path: &Path,
    ) -> Result<Self, VaultError> {
        let secrets = load_or_create_secrets(secrets_path)?;
        let mut kek = Zeroizing::new([0u8; KEY_LEN]);
        kek.copy_from_slice(&secrets[..KEY_LEN]);
        let mut blind_key = Zeroizing::new([0u8; KEY_LEN]);
        blind_key.copy_from_slice(&secrets[KEY_LEN..]);
        let check = blake3::derive_key(SECRETS_CHECK_CONTEXT, &secrets[..]);
        drop(secrets);
        let kv = open_bucket(
            js,
            kv::Config {
                bucket: bucket_name(stream_name),
                description: "ansinh: wrapped household data keys and erasure tombstones".into(),
                // Only the latest value: an erasure leaves no older revision holding the key.
                history: 1,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        let writes = FencedWrites::spawn(js, &kv);
        let pool = Arc::new(KeyPool {
            state: std::sync::Mutex::new(PoolState {
                keys: Vec::new(),
                batch: 1,
            }),
            refilling: tokio::sync::Mutex::new(()),
            writes: writes.clone(),
            kek: kek.clone(),
        });
        let vault = Self {
            kv,
            writes,
            pool,
            erasing_slot: tokio::sync::Mutex::new(()),
            kek,
            blind_key,
            check,
            secrets_path: secrets_path.to_path_buf(),
        };
        match vault.agree(KEY_FORMAT, STORE_FORMAT).await? {
            None => {}
            Some(found) => {
                return Err(VaultError::UnsupportedStoreFormat {
                    found: hex::encode(found),
                });
            }
        }
        if vault.agree(KEY_SECRETS_CHECK, &check).await?.is_some() {
            return Err(VaultError::WrongSecrets {
                path: secrets_path.to_path_buf(),
            });
        }
        Ok(vault)
    }

    /// Records `value` at `key` if the key was never written; None when the bucket
    /// then holds `value`, else what it holds instead.
    async fn agree(&self, key: &str, value: &[u8]) -> Result<Option<Bytes>, VaultError> {
        for _ in 0..VAULT_WRITE_ATTEMPTS_MAX {
            match self.leader_entry(key).await? {
                Some(e) if e.operation == kv::Operation::Put => {
                    return Ok((e.value != value).then_some(e.value));
                }
                found => {
                    let revision = found.map_or(0, |e| e.revision);
                    match self
                        .writes
                        .write(key, Bytes::copy_from_slice(value), revision)
                        .await
                    {
                        Ok(()) => return Ok(None),
                        Err(WriteError::WrongRevision) => continue,
                        Err(WriteError::Nats(e)) => return Err(VaultError::Storage(e)),
                    }
                }
            }
        }
        Err(VaultError::Contended)
    }

    /// A key's latest entry, as the bucket stream's leader has it. The bucket allows
    /// direct gets (`kv_writes` makes it so), and `kv::Store::entry` reads through them:
    /// on a cluster any replica may answer one before it has stored the latest write,
    /// so a key erased by another process a moment ago would still open there, for as
    /// long as that replica lags. An erasure is final in every process at once (ADR
    /// 0009), so the vault reads through the leader, as the claims do (ADR 0007).
    async fn leader_entry(&self, key: &str) -> Result<Option<kv::Entry>, VaultError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let subject = format!("{}{key}", self.kv.prefix);
        let read = || self.kv.stream.get_last_raw_message_by_subject(&subject);
        let found = crate::log::reader::retrying_transient(read, |e| {
            e.kind() == LastRawMessageErrorKind::Other
        })
        .await;
        let message = match found {
            Ok(message) => message,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        let operation = match message.headers.get("KV-Operation") {
            None => kv::Operation::Put,
            Some(op) => op
                .as_str()
                .parse()
                .map_err(|_| storage(format!("{key}: unknown KV-Operation {op:?}")))?,
        };
        Ok(Some(kv::Entry {
            bucket: self.kv.name.clone(),
            key: key.to_owned(),
            value: message.payload,
            revision: message.sequence,
            delta: 0,
            created: message.time,
            operation,
            seen_current: false,
        }))
    }

    async fn slot(&self, key: &str) -> Result<Slot, VaultError> {
        let Some(entry) = self.leader_entry(key).await? else {
            return Ok(Slot::Empty { revision: 0 });
        };
        let revision = entry.revision;
        if entry.operation != kv::Operation::Put {
            return Ok(Slot::Empty { revision });
        }
        match entry.value.first() {
            Some(&TOMBSTONE_VERSION) => Ok(Slot::Erased {
                at_unix_ms: decode_tombstone(&entry.value)?,
            }),
            _ => Ok(Slot::Key {
                wrapped: entry.value,
                revision,
            }),
        }
    }

    /// Writes `value` over the revision read; false when someone wrote it first.
    async fn write_over(&self, key: &str, value: Bytes, revision: u64) -> Result<bool, VaultError> {
        match self.writes.write(key, value, revision).await {
            Ok(()) => Ok(true),
            Err(WriteError::WrongRevision) => Ok(false),
            Err(WriteError::Nats(e)) => Err(VaultError::Storage(e)),
        }
    }

    /// The secrets file this vault was opened with.
    pub fn secrets_path(&self) -> &Path {
        &self.secrets_path
    }

    /// Blind index of a citizen id: keyed blake3 (key = blind-index key) over
    /// `"ansinh/v1/blind/citizen\0" || id`; 32 bytes.
    ///
    /// The id is hashed byte for byte: callers normalise it (trim, drop
    /// separators) before calling, or the same person gets two indexes.
    pub fn blind_index(&self, citizen_id: &str) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.blind_key);
        hasher.update(BLIND_CITIZEN_PREFIX);
        hasher.update(citizen_id.as_bytes());
        hasher.finalize().into()
    }

    /// [`Vault::blind_index`] as 64 lowercase hex characters.
    pub fn blind_index_hex(&self, citizen_id: &str) -> String {
        hex::encode(self.blind_index(citizen_id))
    }

    /// Seals data for a household: creates the household's data key if it has
    /// none (durable in the bucket before returning); returns sealed bytes =
    /// version byte 1 || 24-byte nonce || XChaCha20-Poly1305 ciphertext, AAD =
    /// `"ansinh/v1/personal\0" || household id`.
    ///
    /// Fails with [`VaultError::Erased`] for an erased household and with
    /// [`VaultError::PlaintextTooLarge`] when the JSON encoding exceeds
    /// [`MAX_PLAINTEXT_LEN`] (then no key is created).
    pub async fn seal(
        &self,
        household_id: &str,
        data: &PersonalData,
    ) -> Result<Vec<u8>, VaultError> {
        let plaintext = plaintext_of(household_id, data)?;
        let dek = self.data_key_or_create(household_id).await?;
        seal_under(household_id, &dek, None, &plaintext)
    }

    /// Seals the data of a household new here (moved in) under a pooled key: no bucket
    /// write waits on it, only a read that the household was never erased. A household
    /// that already has a key of its own (`hh.<id>`, from an earlier version) keeps
    /// sealing under it. The blob names its key (version 3), and every later seal of the
    /// household reuses it ([`Vault::seal_again`]). Registrations skip the read
    /// ([`Vault::seal_registering`]).
    ///
    /// Errors as [`Vault::seal`].
    pub async fn seal_new(
        &self,
        household_id: &str,
        data: &PersonalData,
    ) -> Result<Vec<u8>, VaultError> {
        let plaintext = plaintext_of(household_id, data)?;
        match self.slot(&bucket_key(household_id)?).await? {
            Slot::Erased { at_unix_ms } => Err(VaultError::Erased {
                erased_at_unix_ms: at_unix_ms,
            }),
            Slot::Key { wrapped, .. } => {
                let dek = self.unwrap_key(household_id, &wrapped)?;
                seal_under(household_id, &dek, None, &plaintext)
            }
            Slot::Empty { .. } => {
                let pooled = self.pool.take().await?;
                seal_under(household_id, &pooled.key, Some(&pooled.at), &plaintext)
            }
        }
    }

    /// Seals the data of a household being registered under a pooled key, without the
    /// read of its own slot that [`Vault::seal_new`] makes: the book refuses to register
    /// a household id it has seen in any state, erased included, so for a registration
    /// that read only repeats the book's check. One bucket read less per registration
    /// (a round trip and the server's work; measured as about a tenth of a
    /// registration's CPU in the province bench). A registration the book refuses leaves
    /// a pooled key unused, which protects nothing.
    pub fn seal_registering(
        &self,
        household_id: &str,
        data: &PersonalData,
    ) -> impl Future<Output = Result<Vec<u8>, VaultError>> + Send + '_ {
        let plaintext =
            check_household_id(household_id).and_then(|()| plaintext_of(household_id, data));
        let household_id = household_id.to_owned();
        async move {
            let plaintext = plaintext?;
            let pooled = self.pool.take().await?;
            seal_under(&household_id, &pooled.key, Some(&pooled.at), &plaintext)
        }
    }

    /// Seals new data of a registered household under the key its `latest` sealed blob
    /// names, so one erasure removes every blob of the household: the pooled key of a
    /// version-2 or version-3 blob, else the household's own key ([`Vault::seal`]).
    ///
    /// Errors as [`Vault::seal`]; [`VaultError::Erased`] once that key is erased.
    pub async fn seal_again(
        &self,
        household_id: &str,
        data: &PersonalData,
        latest: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let Some(at) = pooled_key_of(latest) else {
            return self.seal(household_id, data).await;
        };
        let plaintext = plaintext_of(household_id, data)?;
        let dek = self.pooled_key(&at).await?;
        seal_under(household_id, &dek, Some(&at), &plaintext)
    }

    /// A pooled key, unwrapped.
    async fn pooled_key(&self, at: &PooledKeyRef) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
        match at {
            PooledKeyRef::Single(id) => {
                let name = pooled_bucket_key(id);
                match self.slot(&name).await? {
                    Slot::Key { wrapped, .. } => unwrap_key_under(&self.kek, &name, &wrapped),
                    Slot::Erased { at_unix_ms } => Err(VaultError::Erased {
                        erased_at_unix_ms: at_unix_ms,
                    }),
                    Slot::Empty { .. } => Err(VaultError::NoKey),
                }
            }
            PooledKeyRef::Paged { page, slot } => {
                let name = page_bucket_key(page);
                let Some(entry) = self.page(&name).await? else {
                    return Err(VaultError::NoKey);
                };
                let wrapped = page_slot(&entry.value, *slot)?;
                match wrapped.first() {
                    Some(&TOMBSTONE_VERSION) => Err(VaultError::Erased {
                        erased_at_unix_ms: decode_tombstone(&wrapped[..TOMBSTONE_LEN])?,
                    }),
                    _ => unwrap_key_under(&self.kek, &page_slot_aad(&name, *slot), wrapped),
                }
            }
        }
    }

    /// A page of pooled keys as stored, with its revision; None when it was never
    /// written.
    async fn page(&self, name: &str) -> Result<Option<kv::Entry>, VaultError> {
        let entry = self.leader_entry(name).await?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put))
    }

    /// Writes the erasure tombstone over one slot of a page of pooled keys, the other
    /// slots unchanged (a compare-and-set on the page's revision, so two erasures in
    /// one page both land; in one process they take turns); whether a key was there.
    async fn erase_page_slot(
        &self,
        page: &[u8; KEY_ID_LEN],
        slot: u16,
        erased_at_unix_ms: i64,
    ) -> Result<bool, VaultError> {
        let name = page_bucket_key(page);
        let _one_at_a_time = self.erasing_slot.lock().await;
        for _ in 0..VAULT_WRITE_ATTEMPTS_MAX {
            let Some(entry) = self.page(&name).await? else {
                return Ok(false);
            };
            let at = usize::from(slot) * WRAPPED_KEY_LEN;
            if page_slot(&entry.value, slot)?.first() == Some(&TOMBSTONE_VERSION) {
                return Ok(false);
            }
            let mut erased = entry.value.to_vec();
            erased[at..at + WRAPPED_KEY_LEN].fill(0);
            erased[at] = TOMBSTONE_VERSION;
            erased[at + 1..at + TOMBSTONE_LEN].copy_from_slice(&erased_at_unix_ms.to_be_bytes());
            if self
                .write_over(&name, Bytes::from(erased), entry.revision)
                .await?
            {
                return Ok(true);
            }
        }
        Err(VaultError::Contended)
    }

    /// Opens sealed bytes of `household_id`.
    ///
    /// Errors: [`VaultError::Erased`] when the household's key was erased,
    /// [`VaultError::Tampered`] on a bad tag (including a blob of another
    /// household), [`VaultError::NoKey`] when the household never had a key,
    /// [`VaultError::Malformed`] / [`VaultError::UnsupportedVersion`] /
    /// [`VaultError::SealedTooLarge`] for input that is not a version-1 blob.
    /// Never panics on arbitrary input.
    pub async fn open_sealed(
        &self,
        household_id: &str,
        sealed: &[u8],
    ) -> Result<PersonalData, VaultError> {
        let key = bucket_key(household_id)?;
        if sealed.len() > MAX_SEALED_LEN {
            return Err(VaultError::SealedTooLarge {
                len: sealed.len(),
                max: MAX_SEALED_LEN,
            });
        }
        let overhead = match sealed.first() {
            Some(&SEALED_POOLED_VERSION) => SEALED_OVERHEAD + KEY_ID_LEN,
            Some(&SEALED_PAGED_VERSION) => SEALED_OVERHEAD + KEY_ID_LEN + SLOT_LEN,
            _ => SEALED_OVERHEAD,
        };
        if sealed.len() < overhead {
            return Err(VaultError::Malformed { len: sealed.len() });
        }
        let (dek, rest) = match sealed[0] {
            SEALED_VERSION => {
                let dek = match self.slot(&key).await? {
                    Slot::Key { wrapped, .. } => self.unwrap_key(household_id, &wrapped)?,
                    Slot::Erased { at_unix_ms, .. } => {
                        return Err(VaultError::Erased {
                            erased_at_unix_ms: at_unix_ms,
                        });
                    }
                    Slot::Empty { .. } => return Err(VaultError::NoKey),
                };
                (dek, &sealed[1..])
            }
            SEALED_POOLED_VERSION | SEALED_PAGED_VERSION => {
                let at = pooled_key_of(sealed).expect("length checked above");
                (
                    self.pooled_key(&at).await?,
                    &sealed[overhead - NONCE_LEN - TAG_LEN..],
                )
            }
            version => return Err(VaultError::UnsupportedVersion { version }),
        };
        let plaintext =
            decrypt(&dek, rest, &personal_aad(household_id)).ok_or(VaultError::Tampered)?;
        serde_json::from_slice(&plaintext).map_err(|_| VaultError::Undecodable)
    }

    /// Erases a household sealed as `latest` (its latest sealed blob, if any): first
    /// the pooled key that blob names, if it names one, then the household's own slot
    /// ([`Vault::erase`]: its key if it has one, and the tombstone that keeps any key
    /// from being made for it again). Returns whether a key was erased. Idempotent.
    pub async fn erase_sealed(
        &self,
        household_id: &str,
        latest: Option<&[u8]>,
        erased_at_unix_ms: i64,
    ) -> Result<bool, VaultError> {
        check_household_id(household_id)?;
        let mut erased = false;
        match latest.and_then(pooled_key_of) {
            Some(PooledKeyRef::Single(id)) => {
                erased = self
                    .tombstone(&pooled_bucket_key(&id), erased_at_unix_ms)
                    .await?;
            }
            Some(PooledKeyRef::Paged { page, slot }) => {
                erased = self.erase_page_slot(&page, slot, erased_at_unix_ms).await?;
            }
            None => {}
        }
        Ok(self.erase(household_id, erased_at_unix_ms).await? || erased)
    }

    /// Erases the household's data key by writing the tombstone with
    /// `erased_at_unix_ms` over it, so "erased" differs from "never had a key";
    /// returns whether a key was erased. Durable in the bucket before returning.
    ///
    /// Idempotent: erasing again returns `false` and keeps the first erasure
    /// time. Erasing a household that never had a key returns `false` but
    /// still records the tombstone, so no key is created for it later.
    pub async fn erase(
        &self,
        household_id: &str,
        erased_at_unix_ms: i64,
    ) -> Result<bool, VaultError> {
        self.tombstone(&bucket_key(household_id)?, erased_at_unix_ms)
            .await
    }

    /// Writes the erasure tombstone over the bucket key `key`; whether a key was there.
    async fn tombstone(&self, key: &str, erased_at_unix_ms: i64) -> Result<bool, VaultError> {
        let mut tomb = Vec::with_capacity(TOMBSTONE_LEN);
        tomb.push(TOMBSTONE_VERSION);
        tomb.extend_from_slice(&erased_at_unix_ms.to_be_bytes());
        let tomb = Bytes::from(tomb);
        for _ in 0..VAULT_WRITE_ATTEMPTS_MAX {
            let (had_key, revision) = match self.slot(key).await? {
                Slot::Erased { .. } => return Ok(false),
                Slot::Key { revision, .. } => (true, revision),
                Slot::Empty { revision } => (false, revision),
            };
            if self.write_over(key, tomb.clone(), revision).await? {
                return Ok(had_key);
            }
        }
        Err(VaultError::Contended)
    }

    /// Key state of a household: never keyed, active, or erased (with time).
    pub async fn key_status(&self, household_id: &str) -> Result<KeyStatus, VaultError> {
        let key = bucket_key(household_id)?;
        Ok(match self.slot(&key).await? {
            Slot::Empty { .. } => KeyStatus::NoKey,
            Slot::Key { .. } => KeyStatus::Active,
            Slot::Erased { at_unix_ms, .. } => KeyStatus::Erased {
                erased_at_unix_ms: at_unix_ms,
            },
        })
    }

    /// The household's data key, created (durably) when it has none. Of two
    /// processes creating it at once, one write wins and both use its key.
    async fn data_key_or_create(
        &self,
        household_id: &str,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
        let key = bucket_key(household_id)?;
        for _ in 0..VAULT_WRITE_ATTEMPTS_MAX {
            let revision = match self.slot(&key).await? {
                Slot::Key { wrapped, .. } => return self.unwrap_key(household_id, &wrapped),
                Slot::Erased { at_unix_ms, .. } => {
                    return Err(VaultError::Erased {
                        erased_at_unix_ms: at_unix_ms,
                    });
                }
                Slot::Empty { revision } => revision,
            };
            let fresh = Zeroizing::new(random_array::<KEY_LEN>()?);
            let wrapped = self.wrap_key(household_id, &fresh)?;
            if self
                .write_over(&key, Bytes::from(wrapped), revision)
                .await?
            {
                return Ok(fresh);
            }
            // Lost a race with a concurrent seal or erasure: read what won.
        }
        Err(VaultError::Contended)
    }

    /// A 32-byte secret of the ledger kept in the bucket (`secret.<name>`), wrapped under
    /// the key-wrapping key with the key name as AAD (no household id holds a '.', so a
    /// secret's AAD is never a household's): the checkpoint-signing key lives here, so
    /// every process of the ledger signs with one key. None when absent or cleared.
    pub async fn secret(&self, name: &str) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, VaultError> {
        let key = format!("secret.{name}");
        match self.slot(&key).await? {
            Slot::Key { wrapped, .. } if !wrapped.is_empty() => {
                self.unwrap_key(&key, &wrapped).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Stores `seed` as secret `name` unless one is there; returns the secret stored
    /// (ours, or the one another process stored first).
    pub async fn create_secret(
        &self,
        name: &str,
        seed: &[u8; KEY_LEN],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
        let key = format!("secret.{name}");
        for _ in 0..VAULT_WRITE_ATTEMPTS_MAX {
            let revision = match self.slot(&key).await? {
                Slot::Key { wrapped, .. } if !wrapped.is_empty() => {
                    return self.unwrap_key(&key, &wrapped);
                }
                Slot::Key { revision, .. } | Slot::Empty { revision } => revision,
                Slot::Erased { .. } => {
                    return Err(VaultError::StoreCorrupt {
                        what: "a ledger secret holds an erasure tombstone",
                    });
                }
            };
            let wrapped = self.wrap_key(&key, seed)?;
            if self
                .write_over(&key, Bytes::from(wrapped), revision)
                .await?
            {
                return Ok(Zeroizing::new(*seed));
            }
        }
        Err(VaultError::Contended)
    }

    /// Sets secret `name` to `seed` (Some) or clears it (None), whatever it held.
    pub async fn replace_secret(
        &self,
        name: &str,
        seed: Option<&[u8; KEY_LEN]>,
    ) -> Result<(), VaultError> {
        let key = format!("secret.{name}");
        let value = match seed {
            Some(seed) => Bytes::from(self.wrap_key(&key, seed)?),
            None => Bytes::new(),
        };
        for _ in 0..VAULT_WRITE_ATTEMPTS_MAX {
            let revision = match self.slot(&key).await? {
                Slot::Key { revision, .. } | Slot::Empty { revision } => revision,
                Slot::Erased { .. } => {
                    return Err(VaultError::StoreCorrupt {
                        what: "a ledger secret holds an erasure tombstone",
                    });
                }
            };
            if self.write_over(&key, value.clone(), revision).await? {
                return Ok(());
            }
        }
        Err(VaultError::Contended)
    }

    /// Moves the data keys and tombstones an earlier version kept in the sled trees
    /// of a local store into the shared bucket, then drops those trees. Idempotent: a
    /// household already in the bucket with the same key, or erased there, is counted
    /// and left; an erasure always wins over a key. A local store made with other
    /// secrets is refused. Conflicting keys are reported, not overwritten.
    pub async fn migrate_local(&self, db: &sled::Db) -> Result<Migration, VaultError> {
        let mut report = Migration::default();
        if !has_local_keys(db)? {
            return Ok(report);
        }
        let meta = db.open_tree(LOCAL_META_TREE).map_err(storage)?;
        let keys = db.open_tree(LOCAL_KEYS_TREE).map_err(storage)?;
        match meta.get(LOCAL_SECRETS_CHECK).map_err(storage)? {
            Some(stored) if stored.as_ref() == self.check.as_slice() => {}
            Some(_) => {
                return Err(VaultError::WrongSecrets {
                    path: self.secrets_path.clone(),
                });
            }
            None if keys.is_empty() => {}
            None => {
                return Err(VaultError::StoreCorrupt {
                    what: "vault.keys holds keys but vault.meta has no secrets check",
                });
            }
        }
        for entry in meta.scan_prefix(LOCAL_TOMBSTONE_PREFIX) {
            let (k, v) = entry.map_err(storage)?;
            let household =
                String::from_utf8_lossy(&k[LOCAL_TOMBSTONE_PREFIX.len()..]).into_owned();
            let at = <[u8; 8]>::try_from(v.as_ref())
                .map(i64::from_be_bytes)
                .map_err(|_| VaultError::StoreCorrupt {
                    what: "erasure tombstone is not 8 bytes",
                })?;
            if matches!(self.key_status(&household).await?, KeyStatus::Erased { .. }) {
                report.already += 1;
            } else {
                self.erase(&household, at).await?;
                report.tombstones += 1;
            }
        }
        for entry in keys.iter() {
            let (k, wrapped) = entry.map_err(storage)?;
            let household = String::from_utf8_lossy(&k).into_owned();
            // Proves the local key is this deployment's before it is shared.
            self.unwrap_key(&household, &wrapped)?;
            let key = bucket_key(&household)?;
            let mut moved = false;
            for _ in 0..VAULT_WRITE_ATTEMPTS_MAX {
                match self.slot(&key).await? {
                    Slot::Erased { .. } => break,
                    Slot::Key {
                        wrapped: shared, ..
                    } if shared == wrapped.as_ref() => break,
                    Slot::Key { .. } => {
                        report.conflicts.push(household.clone());
                        break;
                    }
                    Slot::Empty { revision } => {
                        if self
                            .write_over(&key, Bytes::copy_from_slice(&wrapped), revision)
                            .await?
                        {
                            moved = true;
                            break;
                        }
                    }
                }
            }
            if moved {
                report.keys += 1;
            } else if !report.conflicts.contains(&household) {
                report.already += 1;
            }
        }
        if report.conflicts.is_empty() {
            // Every key is in the bucket: the local copies go, so an erasure in the
            // bucket is not undone by a copy left on one disk.
            db.drop_tree(LOCAL_KEYS_TREE).map_err(storage)?;
            db.drop_tree(LOCAL_META_TREE).map_err(storage)?;
            db.flush().map_err(storage)?;
        }
        Ok(report)
    }

    fn wrap_key(&self, household_id: &str, dek: &[u8; KEY_LEN]) -> Result<Vec<u8>, VaultError> {
        wrap_key_under(&self.kek, household_id, dek)
    }

    fn unwrap_key(
        &self,
        household_id: &str,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
        unwrap_key_under(&self.kek, household_id, wrapped)
    }
}

/// A data key wrapped under the key-wrapping key, bound to `aad` (a household id, or the
/// bucket key of a pooled key or a secret).
fn wrap_key_under(
    kek: &[u8; KEY_LEN],
    aad: &str,
    dek: &[u8; KEY_LEN],
) -> Result<Vec<u8>, VaultError> {
    let mut wrapped = Vec::with_capacity(WRAPPED_KEY_LEN);
    wrapped.push(WRAP_VERSION);
    encrypt(kek, dek, aad.as_bytes(), &mut wrapped)?;
    Ok(wrapped)
}

fn unwrap_key_under(
    kek: &[u8; KEY_LEN],
    aad: &str,
    wrapped: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
    if wrapped.len() != WRAPPED_KEY_LEN || wrapped[0] != WRAP_VERSION {
        return Err(VaultError::StoreCorrupt {
            what: "wrapped data key has wrong length or version",
        });
    }
    let plain = decrypt(kek, &wrapped[1..], aad.as_bytes()).ok_or(VaultError::KeyUnwrap)?;
    let mut dek = Zeroizing::new([0u8; KEY_LEN]);
    // Length is fixed by the check above: 73 - 1 - 24 - 16 = 32.
    dek.copy_from_slice(&plain[..]);
    Ok(dek)
}

/// Sealed bytes of `plaintext` for `household_id` under `dek`: version 1, or version 2
/// or 3 naming the pooled key `pooled` (module docs).
fn seal_under(
    household_id: &str,
    dek: &[u8; KEY_LEN],
    pooled: Option<&PooledKeyRef>,
    plaintext: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let mut sealed =
        Vec::with_capacity(1 + KEY_ID_LEN + SLOT_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
    match pooled {
        None => sealed.push(SEALED_VERSION),
        Some(PooledKeyRef::Single(id)) => {
            sealed.push(SEALED_POOLED_VERSION);
            sealed.extend_from_slice(id);
        }
        Some(PooledKeyRef::Paged { page, slot }) => {
            sealed.push(SEALED_PAGED_VERSION);
            sealed.extend_from_slice(page);
            sealed.extend_from_slice(&slot.to_be_bytes());
        }
    }
    encrypt(dek, plaintext, &personal_aad(household_id), &mut sealed)?;
    Ok(sealed)
}

/// Appends a random nonce and XChaCha20-Poly1305(`key`, `msg`, `aad`) to `out`.
fn encrypt(
    key: &[u8; KEY_LEN],
    msg: &[u8],
    aad: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), VaultError> {
    let nonce = random_array::<NONCE_LEN>()?;
    let ciphertext = XChaCha20Poly1305::new(Key::from_slice(&key[..]))
        .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
        .map_err(|_| VaultError::Crypto)?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(())
}

/// Opens `nonce || ciphertext` (as `encrypt` appends them) under `key`; None when the
/// tag does not verify. The caller checked it is at least a nonce and a tag long.
fn decrypt(key: &[u8; KEY_LEN], sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (nonce, msg) = sealed.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(Key::from_slice(&key[..]))
        .decrypt(XNonce::from_slice(nonce), Payload { msg, aad })
        .ok()
        .map(Zeroizing::new)
}

/// Where a pooled key is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PooledKeyRef {
    /// Alone under `dk.<id>` (sealed version 2).
    Single([u8; KEY_ID_LEN]),
    /// In slot `slot` of the page `dp.<page>` (sealed version 3).
    Paged { page: [u8; KEY_ID_LEN], slot: u16 },
}

/// The pooled key a sealed blob names: Some for a version-2 or version-3 blob long
/// enough to hold one.
pub fn pooled_key_of(sealed: &[u8]) -> Option<PooledKeyRef> {
    match sealed {
        [SEALED_POOLED_VERSION, rest @ ..] if rest.len() >= KEY_ID_LEN + NONCE_LEN + TAG_LEN => {
            Some(PooledKeyRef::Single(rest[..KEY_ID_LEN].try_into().ok()?))
        }
        [SEALED_PAGED_VERSION, rest @ ..]
            if rest.len() >= KEY_ID_LEN + SLOT_LEN + NONCE_LEN + TAG_LEN =>
        {
            Some(PooledKeyRef::Paged {
                page: rest[..KEY_ID_LEN].try_into().ok()?,
                slot: u16::from_be_bytes(rest[KEY_ID_LEN..KEY_ID_LEN + SLOT_LEN].try_into().ok()?),
            })
        }
        _ => None,
    }
}

/// The bucket key of a pooled key kept alone (no household id holds a '.').
fn pooled_bucket_key(id: &[u8; KEY_ID_LEN]) -> String {
    format!("dk.{}", hex::encode(id))
}

/// The bucket key of a page of pooled keys.
fn page_bucket_key(page: &[u8; KEY_ID_LEN]) -> String {
    format!("dp.{}", hex::encode(page))
}

/// What a page's key in `slot` is wrapped with: the page's bucket key and the slot, so a
/// wrapped key cannot be moved to another slot or page.
fn page_slot_aad(page_name: &str, slot: u16) -> String {
    format!("{page_name}/{slot}")
}

/// The 73 bytes of `slot` in a page: a wrapped key, or an erasure tombstone padded
/// with zeros.
fn page_slot(page: &[u8], slot: u16) -> Result<&[u8], VaultError> {
    let at = usize::from(slot) * WRAPPED_KEY_LEN;
    if page.len() % WRAPPED_KEY_LEN != 0 {
        return Err(VaultError::StoreCorrupt {
            what: "a page of pooled keys is not a whole number of slots",
        });
    }
    page.get(at..at + WRAPPED_KEY_LEN)
        .ok_or(VaultError::StoreCorrupt {
            what: "a sealed blob names a slot its page does not have",
        })
}

/// Data keys written to the bucket before they are needed, so that sealing a new
/// household waits for no bucket write (module docs). One per `Vault`.
struct KeyPool {
    state: std::sync::Mutex<PoolState>,
    /// One refill at a time.
    refilling: tokio::sync::Mutex<()>,
    writes: FencedWrites,
    kek: Zeroizing<[u8; KEY_LEN]>,
}

struct PoolState {
    keys: Vec<PooledKey>,
    /// Keys the next refill writes. It starts at one and doubles each time a seal finds
    /// the pool empty, up to `POOL_REFILL_KEYS_MAX`: a command-line process that seals
    /// once writes one key, a server registering thousands a second writes full batches.
    batch: usize,
}

struct PooledKey {
    at: PooledKeyRef,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl KeyPool {
    /// A key stored in the bucket that no blob uses yet. When fewer than half a batch
    /// remain, a refill starts in the background; an empty pool waits for one. Other
    /// seals waiting too may take what a refill stored first, but each refill stores
    /// keys or fails, and batches double while the pool runs dry, so the wait ends.
    async fn take(self: &Arc<Self>) -> Result<PooledKey, VaultError> {
        loop {
            let (key, low) = {
                let mut state = self.state.lock().expect("key pool lock");
                let key = state.keys.pop();
                (key, state.keys.len() < state.batch / 2)
            };
            match key {
                Some(key) => {
                    if low {
                        let pool = Arc::clone(self);
                        tokio::spawn(async move {
                            if let Err(e) = pool.refill(false).await {
                                tracing::warn!("data keys written ahead: {e}");
                            }
                        });
                    }
                    return Ok(key);
                }
                None => self.refill(true).await?,
            }
        }
    }

    /// Writes a batch of fresh keys (one round of the bucket's writer: one atomic batch)
    /// and adds those stored. `wait`: a seal found the pool empty, so queue behind a
    /// refill under way (and skip this one if that one filled the pool) and grow the
    /// next batch; else leave the work to a refill under way.
    async fn refill(&self, wait: bool) -> Result<(), VaultError> {
        let _one = if wait {
            self.refilling.lock().await
        } else {
            match self.refilling.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(()),
            }
        };
        let count = {
            let mut state = self.state.lock().expect("key pool lock");
            if wait && !state.keys.is_empty() {
                return Ok(());
            }
            let count = state.batch;
            if wait {
                state.batch = (state.batch * 2).min(POOL_REFILL_KEYS_MAX);
            }
            count
        };
        // Pages of up to PAGE_KEYS_MAX keys, each one bucket write of its own.
        let mut fresh: Vec<(Vec<PooledKey>, String, Bytes)> = Vec::new();
        let mut left = count;
        while left > 0 {
            let size = left.min(PAGE_KEYS_MAX);
            left -= size;
            let page = random_array::<KEY_ID_LEN>()?;
            let name = page_bucket_key(&page);
            let mut keys = Vec::with_capacity(size);
            let mut value = Vec::with_capacity(size * WRAPPED_KEY_LEN);
            // The page's keys in one draw from the system: a call per key was a tenth
            // of taking a pooled key.
            let mut drawn = Zeroizing::new(vec![0u8; size * KEY_LEN]);
            getrandom::getrandom(&mut drawn).map_err(VaultError::Rng)?;
            for (slot, bytes) in (0..size as u16).zip(drawn.chunks_exact(KEY_LEN)) {
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                key.copy_from_slice(bytes);
                value.extend_from_slice(&wrap_key_under(
                    &self.kek,
                    &page_slot_aad(&name, slot),
                    &key,
                )?);
                keys.push(PooledKey {
                    at: PooledKeyRef::Paged { page, slot },
                    key,
                });
            }
            fresh.push((keys, name, Bytes::from(value)));
        }
        let written = futures::future::join_all(
            fresh
                .iter()
                .map(|(_, name, value)| self.writes.write(name, value.clone(), 0)),
        )
        .await;
        let mut state = self.state.lock().expect("key pool lock");
        let mut failed = None;
        for ((keys, _, _), written) in fresh.into_iter().zip(written) {
            match written {
                Ok(()) => state.keys.extend(keys),
                // An id drawn twice (2^-128): that key is someone else's.
                Err(WriteError::WrongRevision) => {}
                Err(WriteError::Nats(e)) => failed = Some(e),
            }
        }
        match failed {
            Some(e) if state.keys.is_empty() => Err(VaultError::Storage(e)),
            // Every id drawn was taken (never, in practice): no key to wait for.
            None if state.keys.is_empty() => Err(VaultError::Contended),
            _ => Ok(()),
        }
    }
}

fn check_household_id(household_id: &str) -> Result<(), VaultError> {
    let len = household_id.len();
    let keyable = household_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if len == 0 || len > MAX_HOUSEHOLD_ID_LEN || !keyable {
        return Err(VaultError::InvalidHouseholdId { len });
    }
    Ok(())
}

fn personal_aad(household_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(PERSONAL_AAD_PREFIX.len() + household_id.len());
    aad.extend_from_slice(PERSONAL_AAD_PREFIX);
    aad.extend_from_slice(household_id.as_bytes());
    aad
}

fn decode_tombstone(value: &[u8]) -> Result<i64, VaultError> {
    if value.len() != TOMBSTONE_LEN || value[0] != TOMBSTONE_VERSION {
        return Err(VaultError::StoreCorrupt {
            what: "erasure tombstone is not 9 bytes starting 0xE1",
        });
    }
    Ok(i64::from_be_bytes(value[1..].try_into().expect("8 bytes")))
}

/// What `admin migrate-vault` moved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Migration {
    /// Data keys copied into the bucket.
    pub keys: u64,
    /// Erasures recorded in the bucket.
    pub tombstones: u64,
    /// Keys or erasures the bucket already held.
    pub already: u64,
    /// Households whose local key differs from the bucket's (the local trees are then
    /// kept, for the operator to look at).
    pub conflicts: Vec<String>,
}

/// Whether a local store still holds keys of the version before the shared bucket.
pub fn has_local_keys(db: &sled::Db) -> Result<bool, VaultError> {
    let names = db.tree_names();
    let present = |name: &str| names.iter().any(|n| n.as_ref() == name.as_bytes());
    if !present(LOCAL_KEYS_TREE) && !present(LOCAL_META_TREE) {
        return Ok(false);
    }
    let keys = db.open_tree(LOCAL_KEYS_TREE).map_err(storage)?;
    let meta = db.open_tree(LOCAL_META_TREE).map_err(storage)?;
    Ok(!keys.is_empty() || meta.scan_prefix(LOCAL_TOMBSTONE_PREFIX).next().is_some())
}

fn random_array<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).map_err(VaultError::Rng)?;
    Ok(out)
}

/// Writer that keeps at most `limit` bytes in a buffer allocated once (so no
/// reallocation leaves plaintext copies behind) and counts everything written.
struct BoundedBuf {
    buf: Zeroizing<Vec<u8>>,
    limit: usize,
    total: usize,
}

impl Write for BoundedBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.total = self.total.saturating_add(data.len());
        if self.total <= self.limit {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// JSON encoding of `data`, refused past [`MAX_PLAINTEXT_LEN`].
/// The plaintext to seal for a household, once its id is checked.
fn plaintext_of(household_id: &str, data: &PersonalData) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    check_household_id(household_id)?;
    encode_bounded(data)
}

fn encode_bounded(data: &PersonalData) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let mut out = BoundedBuf {
        buf: Zeroizing::new(Vec::with_capacity(MAX_PLAINTEXT_LEN)),
        limit: MAX_PLAINTEXT_LEN,
        total: 0,
    };
    // Serialising these plain structs into an infallible writer cannot fail.
    serde_json::to_writer(&mut out, data).map_err(|_| VaultError::Crypto)?;
    if out.total > MAX_PLAINTEXT_LEN {
        return Err(VaultError::PlaintextTooLarge {
            len: out.total,
            max: MAX_PLAINTEXT_LEN,
        });
    }
    Ok(out.buf)
}

fn secrets_io(path: &Path) -> impl FnOnce(io::Error) -> VaultError + '_ {
    move |source| VaultError::SecretsIo {
        path: path.to_path_buf(),
        source,
    }
}

fn load_or_create_secrets(path: &Path) -> Result<Zeroizing<[u8; SECRETS_LEN]>, VaultError> {
    match File::open(path) {
        Ok(file) => read_secrets(file, path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match create_secrets(path)? {
            Some(secrets) => Ok(secrets),
            // Another process created it first: use theirs.
            None => read_secrets(File::open(path).map_err(secrets_io(path))?, path),
        },
        Err(e) => Err(secrets_io(path)(e)),
    }
}

fn read_secrets(mut file: File, path: &Path) -> Result<Zeroizing<[u8; SECRETS_LEN]>, VaultError> {
    let invalid = |reason| VaultError::SecretsInvalid {
        path: path.to_path_buf(),
        reason,
    };
    let meta = file.metadata().map_err(secrets_io(path))?;
    if !meta.is_file() {
        return Err(invalid("not a regular file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(VaultError::SecretsPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    if meta.len() != SECRETS_LEN as u64 {
        return Err(invalid("must be exactly 64 bytes"));
    }
    let mut secrets = Zeroizing::new([0u8; SECRETS_LEN]);
    file.read_exact(&mut secrets[..])
        .map_err(secrets_io(path))?;
    let mut extra = [0u8; 1];
    if file.read(&mut extra).map_err(secrets_io(path))? != 0 {
        return Err(invalid("must be exactly 64 bytes"));
    }
    if secrets[..KEY_LEN].iter().all(|&b| b == 0) || secrets[KEY_LEN..].iter().all(|&b| b == 0) {
        return Err(invalid("a key half is all zeros"));
    }
    Ok(secrets)
}

/// Creates the secrets file atomically: random bytes go to a 0600 temporary
/// file beside it, made durable, then hard-linked into place (which fails if
/// the file appeared meanwhile, so two processes never end with two secrets).
/// Returns `None` when another process won that race.
fn create_secrets(path: &Path) -> Result<Option<Zeroizing<[u8; SECRETS_LEN]>>, VaultError> {
    let secrets = Zeroizing::new(random_array::<SECRETS_LEN>()?);
    let file_name = path.file_name().ok_or_else(|| VaultError::SecretsInvalid {
        path: path.to_path_buf(),
        reason: "path has no file name",
    })?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", hex::encode(random_array::<8>()?)));
    let tmp = path.with_file_name(tmp_name);

    let written = (|| -> io::Result<()> {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(&secrets[..])?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(secrets_io(path)(e));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent_dir(path).map_err(secrets_io(path))?;
            Ok(Some(secrets))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(secrets_io(path)(e)),
    }
}

fn sync_parent_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersonalData {
        PersonalData {
            head_name: "Nguyễn Văn An".into(),
            head_citizen_id: "001085012345".into(),
            phone: Some("0912345678".into()),
            account_number: None,
            members: vec![Member {
                name: "Trần Thị Bình".into(),
                citizen_id: None,
                relation: "vợ".into(),
            }],
        }
    }

    #[test]
    fn plaintext_limit_is_exact() {
        let mut data = sample();
        data.head_name.clear();
        let base = serde_json::to_vec(&data).unwrap().len();
        data.head_name = "a".repeat(MAX_PLAINTEXT_LEN - base);
        assert_eq!(encode_bounded(&data).unwrap().len(), MAX_PLAINTEXT_LEN);
        data.head_name.push('a');
        assert!(matches!(
            encode_bounded(&data),
            Err(VaultError::PlaintextTooLarge { len, max: MAX_PLAINTEXT_LEN }) if len == MAX_PLAINTEXT_LEN + 1
        ));
    }

    #[test]
    fn tombstone_decoding() {
        let mut tomb = vec![TOMBSTONE_VERSION];
        tomb.extend_from_slice(&(-5i64).to_be_bytes());
        assert_eq!(decode_tombstone(&tomb).unwrap(), -5);
        for bad in [&[1u8, 2, 3][..], &tomb[1..], &[0xE2; 9][..]] {
            assert!(matches!(
                decode_tombstone(bad),
                Err(VaultError::StoreCorrupt { .. })
            ));
        }
    }

    #[test]
    fn household_ids_are_bucket_keys_or_refused() {
        assert_eq!(bucket_key("0100007-000001").unwrap(), "hh.0100007-000001");
        for bad in [
            "",
            "a.b",
            "a*",
            "a b",
            "hộ",
            &"h".repeat(MAX_HOUSEHOLD_ID_LEN + 1),
        ] {
            assert!(
                matches!(bad_key(bad), Err(VaultError::InvalidHouseholdId { .. })),
                "{bad:?}"
            );
        }
    }

    fn bad_key(id: &str) -> Result<String, VaultError> {
        bucket_key(id)
    }

    #[test]
    fn personal_data_zeroize_clears_everything() {
        let mut data = sample();
        data.zeroize();
        assert!(data.head_name.is_empty() && data.head_citizen_id.is_empty());
        assert!(data.phone.is_none() && data.account_number.is_none());
        assert!(data.members.is_empty());
    }
}
