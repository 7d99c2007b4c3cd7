//! Personal data vault: crypto-shredding for the disbursement ledger.
//!
//! Personal data of a household (names, citizen IDs, phone and account
//! numbers) never stands in clear in the hash-chained event log. Instead:
//!
//! * each household gets a random 32-byte **data key** (DEK), kept outside the
//!   log in the sled tree `vault.keys`, itself encrypted ("wrapped") under the
//!   **key-wrapping key** (KEK) from the secrets file, so a copy of the sled
//!   store alone reveals nothing;
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
//!   || household id` (so a blob cannot be replayed under another household).
//! * `vault.keys`: household id (UTF-8 bytes) -> wrapped DEK = `0x01 || nonce
//!   (24) || XChaCha20-Poly1305(KEK, DEK, AAD = household id)` (73 bytes).
//! * `vault.meta`: `"format"` -> `[1]`; `"secrets_check"` -> blake3
//!   `derive_key("ansinh v1 vault secrets check", secrets)` (detects a wrong
//!   secrets file at open); `"erased\0" || household id` -> erasure time
//!   (i64 unix milliseconds, big-endian) — the tombstone.
//!
//! # Erasure caveat
//!
//! sled is log-structured: a removed value can survive in an old segment of the
//! store's files until sled reclaims it. What survives is only the *wrapped*
//! DEK, useless without the KEK. Erasure is therefore final against anyone who
//! has the store but not the secrets file; against someone who also holds the
//! secrets file (or an old backup of both) it is final only once the segment is
//! reclaimed or the KEK is rotated and the old secrets file destroyed.
//!
//! Keys in memory are held in [`Zeroizing`] buffers and the AEAD ciphers wipe
//! their key on drop; clear plaintext buffers are zeroized too. Decoded
//! [`PersonalData`] is ordinary Rust data: callers that want it wiped call
//! [`Zeroize::zeroize`] on it once done.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sled::IVec;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use zeroize::{Zeroize, Zeroizing};

/// Version byte that starts every sealed blob produced by this module.
pub const SEALED_VERSION: u8 = 1;
/// Length of the XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Largest accepted encoded plaintext ([`PersonalData`] as JSON): 16 KiB.
pub const MAX_PLAINTEXT_LEN: usize = 16 * 1024;
/// Bytes a sealed blob adds to its plaintext: version, nonce and tag.
pub const SEALED_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Largest sealed blob [`Vault::seal`] can produce; longer input is refused.
pub const MAX_SEALED_LEN: usize = SEALED_OVERHEAD + MAX_PLAINTEXT_LEN;
/// Largest accepted household id, in UTF-8 bytes.
pub const MAX_HOUSEHOLD_ID_LEN: usize = 256;
/// Exact size of the secrets file.
pub const SECRETS_LEN: usize = 64;

const KEYS_TREE: &str = "vault.keys";
const META_TREE: &str = "vault.meta";
const META_FORMAT: &[u8] = b"format";
const STORE_FORMAT: &[u8] = &[1];
const META_SECRETS_CHECK: &[u8] = b"secrets_check";
const TOMBSTONE_PREFIX: &[u8] = b"erased\0";
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
    /// The secrets file is not the one this store was initialised with.
    /// Handle: configuration error at startup; point the service at the right
    /// secrets file. Continuing would make every stored key unreadable.
    #[error("vault secrets file does not match this store")]
    WrongSecrets,
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
    /// The underlying sled store failed (I/O, corruption reported by sled).
    /// Handle: fail the request; retry may succeed for transient I/O errors.
    #[error("vault storage: {0}")]
    Storage(#[from] sled::Error),
    /// The operating system random generator failed.
    /// Handle: fail the request and retry later; never substitute weaker
    /// randomness.
    #[error("system random generator failed: {0}")]
    Rng(getrandom::Error),
    /// The household id is empty or longer than [`MAX_HOUSEHOLD_ID_LEN`] bytes.
    /// Handle: caller bug or bad input; reject it.
    #[error("household id must be 1..={max} bytes, got {len}", max = MAX_HOUSEHOLD_ID_LEN)]
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

/// The personal-data vault: data keys in sled, master keys from a secrets file.
pub struct Vault {
    db: sled::Db,
    keys: sled::Tree,
    meta: sled::Tree,
    kek: Zeroizing<[u8; KEY_LEN]>,
    blind_key: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("households_with_keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault in `db`; the master key and blind-index key come from
    /// `secrets_path`, a 64-byte secret file created with mode 0600 and random
    /// bytes if missing (first 32 = key-wrapping key, last 32 = blind-index
    /// key). An existing file must be exactly 64 bytes with no group/other
    /// permission bits. The first open of a store records a check value of the
    /// secrets; a later open with another secrets file fails with
    /// [`VaultError::WrongSecrets`].
    pub fn open(db: &sled::Db, secrets_path: &Path) -> Result<Self, VaultError> {
        let secrets = load_or_create_secrets(secrets_path)?;
        let mut kek = Zeroizing::new([0u8; KEY_LEN]);
        kek.copy_from_slice(&secrets[..KEY_LEN]);
        let mut blind_key = Zeroizing::new([0u8; KEY_LEN]);
        blind_key.copy_from_slice(&secrets[KEY_LEN..]);
        let check = blake3::derive_key(SECRETS_CHECK_CONTEXT, &secrets[..]);
        drop(secrets);

        let keys = db.open_tree(KEYS_TREE)?;
        let meta = db.open_tree(META_TREE)?;

        if let Err(cas) = meta.compare_and_swap(META_FORMAT, None::<&[u8]>, Some(STORE_FORMAT))? {
            match cas.current {
                Some(found) if found.as_ref() == STORE_FORMAT => {}
                found => {
                    return Err(VaultError::UnsupportedStoreFormat {
                        found: hex::encode(found.as_deref().unwrap_or_default()),
                    });
                }
            }
        }
        match meta.get(META_SECRETS_CHECK)? {
            Some(stored) if stored.as_ref() == check.as_slice() => {}
            Some(_) => return Err(VaultError::WrongSecrets),
            None => {
                if !keys.is_empty() {
                    return Err(VaultError::StoreCorrupt {
                        what: "vault.keys holds keys but vault.meta has no secrets check",
                    });
                }
                if let Err(cas) =
                    meta.compare_and_swap(META_SECRETS_CHECK, None::<&[u8]>, Some(&check[..]))?
                {
                    // Someone else initialised the store concurrently.
                    if cas.current.as_deref() != Some(&check[..]) {
                        return Err(VaultError::WrongSecrets);
                    }
                }
                db.flush()?;
            }
        }

        Ok(Self {
            db: db.clone(),
            keys,
            meta,
            kek,
            blind_key,
        })
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
    /// none (and makes it durable before returning); returns sealed bytes =
    /// version byte 1 || 24-byte nonce || XChaCha20-Poly1305 ciphertext, AAD =
    /// `"ansinh/v1/personal\0" || household id`.
    ///
    /// Fails with [`VaultError::Erased`] for an erased household and with
    /// [`VaultError::PlaintextTooLarge`] when the JSON encoding exceeds
    /// [`MAX_PLAINTEXT_LEN`] (then no key is created).
    pub fn seal(&self, household_id: &str, data: &PersonalData) -> Result<Vec<u8>, VaultError> {
        check_household_id(household_id)?;
        let plaintext = encode_bounded(data)?;
        let dek = self.data_key_or_create(household_id)?;
        let nonce = random_array::<NONCE_LEN>()?;
        let aad = personal_aad(household_id);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&dek[..]));
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Crypto)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(SEALED_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Opens sealed bytes of `household_id`.
    ///
    /// Errors: [`VaultError::Erased`] when the household's key was erased,
    /// [`VaultError::Tampered`] on a bad tag (including a blob of another
    /// household), [`VaultError::NoKey`] when the household never had a key,
    /// [`VaultError::Malformed`] / [`VaultError::UnsupportedVersion`] /
    /// [`VaultError::SealedTooLarge`] for input that is not a version-1 blob.
    /// Never panics on arbitrary input.
    pub fn open_sealed(
        &self,
        household_id: &str,
        sealed: &[u8],
    ) -> Result<PersonalData, VaultError> {
        check_household_id(household_id)?;
        if sealed.len() > MAX_SEALED_LEN {
            return Err(VaultError::SealedTooLarge {
                len: sealed.len(),
                max: MAX_SEALED_LEN,
            });
        }
        if sealed.len() < SEALED_OVERHEAD {
            return Err(VaultError::Malformed { len: sealed.len() });
        }
        let (version, rest) = (sealed[0], &sealed[1..]);
        if version != SEALED_VERSION {
            return Err(VaultError::UnsupportedVersion { version });
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);

        let dek = match self.keys.get(household_id.as_bytes())? {
            Some(wrapped) => self.unwrap_key(household_id, &wrapped)?,
            None => {
                return Err(match self.tombstone(household_id)? {
                    Some(erased_at_unix_ms) => VaultError::Erased { erased_at_unix_ms },
                    None => VaultError::NoKey,
                });
            }
        };
        let aad = personal_aad(household_id);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&dek[..]));
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| VaultError::Tampered)?,
        );
        serde_json::from_slice(&plaintext).map_err(|_| VaultError::Undecodable)
    }

    /// Erases the household's data key and keeps a tombstone with
    /// `erased_at_unix_ms`, so "erased" differs from "never had a key"; returns
    /// whether a key was erased. Flushes sled before returning.
    ///
    /// Idempotent: erasing again returns `false` and keeps the first erasure
    /// time. Erasing a household that never had a key returns `false` but
    /// still records the tombstone, so no key is created for it later.
    pub fn erase(&self, household_id: &str, erased_at_unix_ms: i64) -> Result<bool, VaultError> {
        check_household_id(household_id)?;
        let tomb_key = tombstone_key(household_id);
        let at = erased_at_unix_ms.to_be_bytes();
        let result = (&self.keys, &self.meta).transaction(
            |(keys, meta)| -> Result<bool, ConflictableTransactionError<std::convert::Infallible>> {
                let removed = keys.remove(household_id.as_bytes())?;
                if meta.get(&tomb_key[..])?.is_none() {
                    meta.insert(&tomb_key[..], &at[..])?;
                }
                Ok(removed.is_some())
            },
        );
        let erased = match result {
            Ok(erased) => erased,
            Err(TransactionError::Storage(e)) => return Err(VaultError::Storage(e)),
            Err(TransactionError::Abort(never)) => match never {},
        };
        self.db.flush()?;
        Ok(erased)
    }

    /// Key state of a household: never keyed, active, or erased (with time).
    pub fn key_status(&self, household_id: &str) -> Result<KeyStatus, VaultError> {
        check_household_id(household_id)?;
        if self.keys.contains_key(household_id.as_bytes())? {
            return Ok(KeyStatus::Active);
        }
        Ok(match self.tombstone(household_id)? {
            Some(erased_at_unix_ms) => KeyStatus::Erased { erased_at_unix_ms },
            None => KeyStatus::NoKey,
        })
    }

    fn tombstone(&self, household_id: &str) -> Result<Option<i64>, VaultError> {
        self.meta
            .get(tombstone_key(household_id))?
            .map(|v| decode_tombstone(&v))
            .transpose()
    }

    /// The household's data key, created (and flushed) when it has none.
    fn data_key_or_create(
        &self,
        household_id: &str,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
        if let Some(wrapped) = self.keys.get(household_id.as_bytes())? {
            return self.unwrap_key(household_id, &wrapped);
        }
        let fresh = Zeroizing::new(random_array::<KEY_LEN>()?);
        let wrapped = self.wrap_key(household_id, &fresh)?;
        let tomb_key = tombstone_key(household_id);
        let result = (&self.keys, &self.meta).transaction(
            |(keys, meta)| -> Result<Option<IVec>, ConflictableTransactionError<IVec>> {
                if let Some(tomb) = meta.get(&tomb_key[..])? {
                    return Err(ConflictableTransactionError::Abort(tomb));
                }
                if let Some(existing) = keys.get(household_id.as_bytes())? {
                    return Ok(Some(existing));
                }
                keys.insert(household_id.as_bytes(), wrapped.as_slice())?;
                Ok(None)
            },
        );
        match result {
            // Durable before any blob sealed under it leaves this function.
            Ok(None) => {
                self.db.flush()?;
                Ok(fresh)
            }
            // Lost a race with a concurrent seal: use the winner's key.
            Ok(Some(existing)) => self.unwrap_key(household_id, &existing),
            Err(TransactionError::Abort(tomb)) => Err(VaultError::Erased {
                erased_at_unix_ms: decode_tombstone(&tomb)?,
            }),
            Err(TransactionError::Storage(e)) => Err(VaultError::Storage(e)),
        }
    }

    fn wrap_key(&self, household_id: &str, dek: &[u8; KEY_LEN]) -> Result<Vec<u8>, VaultError> {
        let nonce = random_array::<NONCE_LEN>()?;
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&self.kek[..]));
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: dek,
                    aad: household_id.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Crypto)?;
        let mut wrapped = Vec::with_capacity(WRAPPED_KEY_LEN);
        wrapped.push(WRAP_VERSION);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&ciphertext);
        Ok(wrapped)
    }

    fn unwrap_key(
        &self,
        household_id: &str,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
        if wrapped.len() != WRAPPED_KEY_LEN || wrapped[0] != WRAP_VERSION {
            return Err(VaultError::StoreCorrupt {
                what: "wrapped data key has wrong length or version",
            });
        }
        let (nonce, ciphertext) = wrapped[1..].split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&self.kek[..]));
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: household_id.as_bytes(),
                    },
                )
                .map_err(|_| VaultError::KeyUnwrap)?,
        );
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        // Length is fixed by the check above: 73 - 1 - 24 - 16 = 32.
        dek.copy_from_slice(&plain[..]);
        Ok(dek)
    }
}

fn check_household_id(household_id: &str) -> Result<(), VaultError> {
    let len = household_id.len();
    if len == 0 || len > MAX_HOUSEHOLD_ID_LEN {
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

fn tombstone_key(household_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(TOMBSTONE_PREFIX.len() + household_id.len());
    key.extend_from_slice(TOMBSTONE_PREFIX);
    key.extend_from_slice(household_id.as_bytes());
    key
}

fn decode_tombstone(value: &[u8]) -> Result<i64, VaultError> {
    <[u8; 8]>::try_from(value)
        .map(i64::from_be_bytes)
        .map_err(|_| VaultError::StoreCorrupt {
            what: "erasure tombstone is not 8 bytes",
        })
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

    fn vault_in(dir: &Path) -> (sled::Db, Vault) {
        let db = sled::open(dir.join("db")).unwrap();
        let vault = Vault::open(&db, &dir.join("secrets")).unwrap();
        (db, vault)
    }

    #[test]
    fn blind_index_matches_specified_construction() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, vault) = vault_in(dir.path());
        let secrets = fs::read(dir.path().join("secrets")).unwrap();
        let key: [u8; 32] = secrets[32..].try_into().unwrap();
        let mut input = b"ansinh/v1/blind/citizen\0".to_vec();
        input.extend_from_slice(b"001085012345");
        let expected = blake3::keyed_hash(&key, &input);
        assert_eq!(vault.blind_index("001085012345"), *expected.as_bytes());
        assert_eq!(
            vault.blind_index_hex("001085012345"),
            expected.to_hex().as_str()
        );
    }

    #[test]
    fn sealed_layout_and_aad_are_as_specified() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, vault) = vault_in(dir.path());
        let data = sample();
        let sealed = vault.seal("hh-1", &data).unwrap();
        let json = serde_json::to_vec(&data).unwrap();
        assert_eq!(sealed[0], 1);
        assert_eq!(sealed.len(), SEALED_OVERHEAD + json.len());
        // Decrypt by hand with the documented AAD.
        let dek = vault.data_key_or_create("hh-1").unwrap();
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&dek[..]));
        let plain = cipher
            .decrypt(
                XNonce::from_slice(&sealed[1..25]),
                Payload {
                    msg: &sealed[25..],
                    aad: b"ansinh/v1/personal\0hh-1",
                },
            )
            .unwrap();
        assert_eq!(plain, json);
    }

    #[test]
    fn wrapped_key_layout_and_store_never_holds_clear_key() {
        let dir = tempfile::tempdir().unwrap();
        let (db, vault) = vault_in(dir.path());
        let sealed = vault.seal("hh-1", &sample()).unwrap();
        let wrapped = vault.keys.get("hh-1").unwrap().unwrap();
        assert_eq!(wrapped.len(), WRAPPED_KEY_LEN);
        assert_eq!(wrapped[0], WRAP_VERSION);
        let dek = vault.unwrap_key("hh-1", &wrapped).unwrap();
        // Wrapped key is bound to its household id.
        assert!(matches!(
            vault.unwrap_key("hh-2", &wrapped),
            Err(VaultError::KeyUnwrap)
        ));
        let mut bad = wrapped.to_vec();
        bad[30] ^= 1;
        assert!(matches!(
            vault.unwrap_key("hh-1", &bad),
            Err(VaultError::KeyUnwrap)
        ));
        assert!(matches!(
            vault.unwrap_key("hh-1", &wrapped[..40]),
            Err(VaultError::StoreCorrupt { .. })
        ));

        db.flush().unwrap();
        let mut on_disk = Vec::new();
        let mut stack = vec![dir.path().join("db")];
        while let Some(p) = stack.pop() {
            for entry in fs::read_dir(&p).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    stack.push(entry.path());
                } else {
                    on_disk.extend(fs::read(entry.path()).unwrap());
                }
            }
        }
        let contains = |needle: &[u8]| on_disk.windows(needle.len()).any(|w| w == needle);
        assert!(
            contains(&wrapped),
            "sanity: the wrapped key is found on disk"
        );
        assert!(!contains(&dek[..]), "clear data key must not be on disk");
        assert!(
            !contains(b"001085012345"),
            "clear citizen id must not be on disk"
        );
        assert!(
            !contains(&sealed[25..]),
            "ciphertext lives in the log, not the vault"
        );
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
        assert_eq!(decode_tombstone(&(-5i64).to_be_bytes()).unwrap(), -5);
        assert!(matches!(
            decode_tombstone(&[1, 2, 3]),
            Err(VaultError::StoreCorrupt { .. })
        ));
    }

    #[test]
    fn corrupt_tombstone_and_wrapped_key_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, vault) = vault_in(dir.path());
        vault
            .meta
            .insert(tombstone_key("hh-t"), &[9u8][..])
            .unwrap();
        assert!(matches!(
            vault.open_sealed("hh-t", &[1u8; 60]),
            Err(VaultError::StoreCorrupt { .. })
        ));
        vault.keys.insert("hh-k", &[1u8; 10][..]).unwrap();
        assert!(matches!(
            vault.seal("hh-k", &sample()),
            Err(VaultError::StoreCorrupt { .. })
        ));
    }

    #[test]
    fn personal_data_zeroize_clears_everything() {
        let mut data = sample();
        data.zeroize();
        assert!(data.head_name.is_empty() && data.head_citizen_id.is_empty());
        assert!(data.phone.is_none() && data.account_number.is_none());
        assert!(data.members.is_empty());
    }

    #[test]
    fn debug_does_not_print_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, vault) = vault_in(dir.path());
        let shown = format!("{vault:?}");
        assert!(!shown.contains(&hex::encode(&vault.kek[..])));
        assert!(shown.starts_with("Vault"));
    }
}
