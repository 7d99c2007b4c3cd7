//! Key files on disk and the ledger's key history (the key ring).
//!
//! A key file holds the 32-byte Ed25519 secret seed as 64 lowercase hex digits and a
//! newline. It is created with mode 0600 and refused if group or others may read it.
//! The ring is rebuilt from `LedgerKeyRotated` events of the key partition: the log,
//! not a file, says which key was the ledger's when.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::sign::{self, KeyPair, SignatureError};
use crate::proto;

/// File name of the ledger's signing key inside the data directory.
pub const LEDGER_KEY_FILE: &str = "ledger-key.ed25519";
/// Where a rotation keeps the next key until its event is in the log (crash-safe).
pub const NEXT_LEDGER_KEY_FILE: &str = "ledger-key.ed25519.next";
/// Most keys in one ring: rotations are rare, a flood of them is an attack or a bug.
pub const RING_KEYS_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file is readable by group or others: fix its mode (chmod 600) after checking
    /// nobody copied it.
    #[error("key file {path}: mode {mode:o} lets others read it; chmod 600 it")]
    Exposed { path: PathBuf, mode: u32 },
    /// The file is not 64 lowercase hex digits: restore it from a backup.
    #[error("key file {path} is malformed")]
    Malformed { path: PathBuf },
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a key file, refusing one that others may read.
pub fn load_key(path: &Path) -> Result<KeyPair, KeyFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(io_error(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Exposed {
                path: path.to_path_buf(),
                mode: mode & 0o777,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    let malformed = || KeyFileError::Malformed {
        path: path.to_path_buf(),
    };
    let text = text.strip_suffix('\n').unwrap_or(&text);
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(malformed());
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text, &mut seed).map_err(|_| malformed())?;
    Ok(KeyPair::from_seed(&seed))
}

/// Loads the key at `path`, or creates it (mode 0600) from the OS's random source when
/// there is none. Two processes racing to create it end up with the same key: the file
/// is written aside and linked into place, which fails if another got there first.
pub fn load_or_create_key(path: &Path) -> Result<(KeyPair, bool), KeyFileError> {
    if path.exists() {
        return Ok((load_key(path)?, false));
    }
    let key =
        KeyPair::from_seed(&ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng).to_bytes());
    let aside = path.with_extension(format!("tmp-{}", std::process::id()));
    write_key_file(&aside, &key)?;
    let linked = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => {
            sync_parent(path);
            Ok((key, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((load_key(path)?, false)),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Writes a new key file (mode 0600, fsynced); fails if the file exists.
pub fn write_key_file(path: &Path, key: &KeyPair) -> Result<(), KeyFileError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error(path))?;
    writeln!(file, "{}", hex::encode(key.seed())).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))?;
    Ok(())
}

/// Best effort: a rename or link is durable only once its directory is synced.
pub fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// One key of the ledger's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub public_key: [u8; 32],
    /// Sequence of its `LedgerKeyRotated` event in the key partition.
    pub sequence: u64,
    /// When that event was recorded (ledger clock).
    pub registered_at_unix_ms: i64,
    /// When the next key's event was recorded; None for the current key.
    pub retired_at_unix_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    /// A rotation event is invalid: its signature, key id or predecessor is wrong.
    /// Nothing signed by keys from here on is trusted; investigate the key partition.
    #[error("key rotation at key-partition sequence {sequence} is invalid: {cause}")]
    BadRotation {
        sequence: u64,
        cause: SignatureError,
    },
    /// The same key registered twice: a replay of an old key is refused.
    #[error("key {key_id} is registered twice (key-partition sequence {sequence})")]
    Reused { key_id: String, sequence: u64 },
    /// More than RING_KEYS_MAX rotations.
    #[error("more than {RING_KEYS_MAX} key rotations")]
    TooManyKeys,
    /// No key with this id was ever the ledger's: the signature is not the ledger's.
    #[error("key {0} was never a ledger key")]
    UnknownKey(String),
    /// Signed by a key after it was retired: a retired (perhaps leaked) key was used.
    #[error(
        "key {key_id} was retired at {retired_at_unix_ms} but signed a checkpoint issued at {issued_at_unix_ms}"
    )]
    Retired {
        key_id: String,
        retired_at_unix_ms: i64,
        issued_at_unix_ms: i64,
    },
}

/// The ledger's keys in the order the log registered them. Pure: built by `apply`ing
/// the key partition's events in chain order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<KeyRecord>,
}

impl KeyRing {
    /// Applies one `LedgerKeyRotated` event. The first key stands alone; every later
    /// one must be signed by the key before it.
    pub fn apply(
        &mut self,
        rotation: &proto::LedgerKeyRotated,
        sequence: u64,
        recorded_at_unix_ms: i64,
    ) -> Result<(), KeyRingError> {
        if self.keys.len() >= RING_KEYS_MAX {
            return Err(KeyRingError::TooManyKeys);
        }
        let previous = self.keys.last().map(|k| k.public_key);
        let public_key = sign::verify_key_rotation(rotation, previous.as_ref())
            .map_err(|cause| KeyRingError::BadRotation { sequence, cause })?;
        if self.get(&rotation.key_id).is_some() {
            return Err(KeyRingError::Reused {
                key_id: rotation.key_id.clone(),
                sequence,
            });
        }
        if let Some(last) = self.keys.last_mut() {
            last.retired_at_unix_ms = Some(recorded_at_unix_ms);
        }
        self.keys.push(KeyRecord {
            key_id: rotation.key_id.clone(),
            public_key,
            sequence,
            registered_at_unix_ms: recorded_at_unix_ms,
            retired_at_unix_ms: None,
        });
        Ok(())
    }

    pub fn current(&self) -> Option<&KeyRecord> {
        self.keys.last()
    }

    pub fn get(&self, key_id: &str) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.key_id == key_id)
    }

    pub fn keys(&self) -> &[KeyRecord] {
        &self.keys
    }

    /// Whether a key an auditor pinned (`--trust`: a public key of 64 hex digits, or a
    /// key id of 16) vouches for what `signer_key_id` signed: the pinned key is in this
    /// history at or before the signer. A history cut short at a retired key lacks every
    /// later key, and a backdated signature by an older key comes before the pin, so
    /// pinning the latest key one knows shuts out every retired key (docs/PROOFS.md
    /// section 7.4). The one rule of `verify-bundle --trust` and `audit cosign --trust`.
    pub fn admits(&self, pin: &str, signer_key_id: &str) -> bool {
        let Some(signer) = self.get(signer_key_id) else {
            return false;
        };
        self.keys
            .iter()
            .find(|k| crate::input::pins(pin, &k.key_id, &k.public_key))
            .is_some_and(|pinned| pinned.sequence <= signer.sequence)
    }

    /// The key that may have signed what was recorded at `at_unix_ms` and stored at a
    /// stream sequence `before`, when the key history's events were stored at the stream
    /// sequences `stored_at` (one per key, in order): a key stored before it, not retired
    /// by a key also stored before it, before that time. The rule of an operator's
    /// exclusion (docs/CHAIN.md, section 4a): every reader knows the key history stored
    /// before a message, whenever it reads, so all judge it alike.
    pub fn signer_before(
        &self,
        stored_at: &[u64],
        key_id: &str,
        at_unix_ms: i64,
        before: u64,
    ) -> Result<&KeyRecord, KeyRingError> {
        let known = stored_at.iter().take_while(|s| **s < before).count();
        let keys = &self.keys[..known.min(self.keys.len())];
        let index = keys
            .iter()
            .position(|k| k.key_id == key_id)
            .ok_or_else(|| KeyRingError::UnknownKey(key_id.to_string()))?;
        match keys.get(index + 1) {
            Some(next) if at_unix_ms > next.registered_at_unix_ms => Err(KeyRingError::Retired {
                key_id: key_id.to_string(),
                retired_at_unix_ms: next.registered_at_unix_ms,
                issued_at_unix_ms: at_unix_ms,
            }),
            _ => Ok(&keys[index]),
        }
    }

    /// The key that may have signed a checkpoint issued at `issued_at_unix_ms`: it must
    /// be a ledger key, and not one retired before that time.
    pub fn signer(&self, key_id: &str, issued_at_unix_ms: i64) -> Result<&KeyRecord, KeyRingError> {
        let key = self
            .get(key_id)
            .ok_or_else(|| KeyRingError::UnknownKey(key_id.to_string()))?;
        match key.retired_at_unix_ms {
            Some(retired) if issued_at_unix_ms > retired => Err(KeyRingError::Retired {
                key_id: key_id.to_string(),
                retired_at_unix_ms: retired,
                issued_at_unix_ms,
            }),
            _ => Ok(key),
        }
    }
}
