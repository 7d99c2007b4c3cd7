//! The registry of gateway public keys and the gateways' key files.
//!
//! A registry is what the ledger's directory holds of the gateways (`directory`, whose
//! entries are checked with `Registry::admitting`), and the format of
//! `<data-dir>/gateways.json` of earlier versions, which `serve` and `admin
//! import-directory` copy into the directory: a JSON array of
//! `{ "id": "vcb", "public_key": "<64 hex>", "key_id": "<16 hex>" }`. A gateway may have
//! several keys (a rotation: add the new key, move the gateway to it, then withdraw the
//! old key from the ledger's directory with `admin remove-gateway-key`; no import adds a
//! withdrawn key again); a key belongs to exactly one gateway. A file is checked whole
//! when read: a registry with one bad entry is refused, never partly used.
//!
//! A gateway's key file has the format of the ledger's (`checkpoint::keys`): the 32-byte
//! Ed25519 seed as 64 lowercase hex digits and a newline, mode 0600.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{is_gateway_id, is_reserved_gateway_id};
use crate::checkpoint::keys::{KeyFileError, sync_parent, write_key_file};
use crate::checkpoint::sign::{KeyPair, is_key_id, key_id};

/// File name of the registry inside the data directory.
pub const REGISTRY_FILE: &str = "gateways.json";
/// Most keys in one registry: a province has a handful of gateways.
pub const REGISTRY_KEYS_MAX: usize = 1_000;
/// Largest registry file read; a real one is about 150 bytes per key.
pub const REGISTRY_BYTES_MAX: u64 = 1024 * 1024;

/// One registered key of one gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayKey {
    pub gateway_id: String,
    pub key_id: String,
    pub public_key: [u8; 32],
}

/// The gateways and their public keys, checked: ids valid, every key a valid Ed25519
/// point whose id is `key_id(public_key)`, no key id twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    keys: Vec<GatewayKey>,
}

/// Why a registry was refused. Every variant means the file needs an operator's fix;
/// nothing in it is used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("gateway registry {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("gateway registry {path} is larger than {REGISTRY_BYTES_MAX} bytes")]
    TooLarge { path: PathBuf },
    #[error("gateway registry is not a JSON array of {{id, public_key, key_id}}: {0}")]
    Json(String),
    #[error("gateway id {0:?} is not 1-32 characters of a-z, 0-9 and '-'")]
    InvalidGatewayId(String),
    /// `gateway::RESERVED_GATEWAY_IDS`: choose another id.
    #[error(
        "gateway id {0:?} is reserved: its inbox would be another NATS user's; choose another id"
    )]
    ReservedGatewayId(String),
    #[error("gateway {gateway}: public key is not 64 hex digits of a valid Ed25519 key")]
    InvalidPublicKey { gateway: String },
    #[error("gateway {gateway}: key id {stated:?} is not the id of its public key ({actual})")]
    KeyIdMismatch {
        gateway: String,
        stated: String,
        actual: String,
    },
    #[error("key {0} is registered twice")]
    DuplicateKey(String),
    #[error("more than {REGISTRY_KEYS_MAX} gateway keys")]
    TooManyKeys,
}

/// The registry file's entries: serde lives here, at the edge.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    public_key: String,
    key_id: String,
}

/// The checks of one key alone: its gateway id, a valid Ed25519 point, its own key id.
fn check_key(k: &GatewayKey) -> Result<(), RegistryError> {
    if is_reserved_gateway_id(&k.gateway_id) {
        return Err(RegistryError::ReservedGatewayId(k.gateway_id.clone()));
    }
    if !is_gateway_id(&k.gateway_id) {
        return Err(RegistryError::InvalidGatewayId(k.gateway_id.clone()));
    }
    if ed25519_dalek::VerifyingKey::from_bytes(&k.public_key).is_err() {
        return Err(RegistryError::InvalidPublicKey {
            gateway: k.gateway_id.clone(),
        });
    }
    let actual = key_id(&k.public_key);
    if k.key_id != actual {
        return Err(RegistryError::KeyIdMismatch {
            gateway: k.gateway_id.clone(),
            stated: k.key_id.clone(),
            actual,
        });
    }
    Ok(())
}

impl Registry {
    /// A registry of these keys, checked.
    pub fn new(keys: Vec<GatewayKey>) -> Result<Self, RegistryError> {
        if keys.len() > REGISTRY_KEYS_MAX {
            return Err(RegistryError::TooManyKeys);
        }
        let (registry, refused) = Self::admitting(keys.into_iter().map(|k| ((), Ok(k))));
        match refused.into_iter().next() {
            Some(((), e)) => Err(e),
            None => Ok(registry),
        }
    }

    /// Admits `keys` in the order given, each checked on its own against the ones
    /// admitted before it: a key that is none (`Err`), fails a check of `new`, repeats an
    /// admitted key id or comes past `REGISTRY_KEYS_MAX` is refused alone and handed back
    /// with its label `L` and why. The same keys in the same order always give the same
    /// registry.
    pub fn admitting<L>(
        keys: impl IntoIterator<Item = (L, Result<GatewayKey, RegistryError>)>,
    ) -> (Self, Vec<(L, RegistryError)>) {
        let mut registry = Self::default();
        let mut seen = BTreeSet::new();
        let mut refused = Vec::new();
        for (label, key) in keys {
            let admitted = key.and_then(|k| {
                check_key(&k)?;
                if seen.contains(&k.key_id) {
                    return Err(RegistryError::DuplicateKey(k.key_id.clone()));
                }
                if registry.keys.len() >= REGISTRY_KEYS_MAX {
                    return Err(RegistryError::TooManyKeys);
                }
                Ok(k)
            });
            match admitted {
                Ok(k) => {
                    seen.insert(k.key_id.clone());
                    registry.keys.push(k);
                }
                Err(e) => refused.push((label, e)),
            }
        }
        (registry, refused)
    }

    /// Parses and checks the JSON text of a registry.
    pub fn from_json(text: &str) -> Result<Self, RegistryError> {
        let entries: Vec<Entry> =
            crate::strict_json::from_str(text).map_err(|e| RegistryError::Json(e.to_string()))?;
        if entries.len() > REGISTRY_KEYS_MAX {
            return Err(RegistryError::TooManyKeys);
        }
        let keys = entries
            .into_iter()
            .map(|e| {
                let mut public_key = [0u8; 32];
                let lower_hex = e.public_key.len() == 64
                    && e.public_key
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if !lower_hex || hex::decode_to_slice(&e.public_key, &mut public_key).is_err() {
                    return Err(RegistryError::InvalidPublicKey { gateway: e.id });
                }
                if !is_key_id(&e.key_id) {
                    let actual = key_id(&public_key);
                    return Err(RegistryError::KeyIdMismatch {
                        gateway: e.id,
                        stated: e.key_id,
                        actual,
                    });
                }
                Ok(GatewayKey {
                    gateway_id: e.id,
                    key_id: e.key_id,
                    public_key,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// The registry as JSON text (an array, one entry per key, in registry order).
    pub fn to_json(&self) -> String {
        let entries: Vec<Entry> = self
            .keys
            .iter()
            .map(|k| Entry {
                id: k.gateway_id.clone(),
                public_key: hex::encode(k.public_key),
                key_id: k.key_id.clone(),
            })
            .collect();
        let mut text = serde_json::to_string_pretty(&entries).expect("entries serialize");
        text.push('\n');
        text
    }

    /// Reads and checks a registry file.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let io = |source| RegistryError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        file.take(REGISTRY_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > REGISTRY_BYTES_MAX {
            return Err(RegistryError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        Self::from_json(&text)
    }

    /// Writes the registry to `path` atomically (a fsynced file renamed into place).
    pub fn save(&self, path: &Path) -> Result<(), RegistryError> {
        let io = |source| RegistryError::Io {
            path: path.to_path_buf(),
            source,
        };
        let aside = path.with_extension(format!("json.tmp-{}", std::process::id()));
        let mut file = std::fs::File::create(&aside).map_err(io)?;
        file.write_all(self.to_json().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&aside, path).map_err(io)?;
        sync_parent(path);
        Ok(())
    }

    /// This registry with one more key, checked.
    pub fn with_key(&self, key: GatewayKey) -> Result<Self, RegistryError> {
        let mut keys = self.keys.clone();
        keys.push(key);
        Self::new(keys)
    }

    /// Every registered key, in registry order.
    pub fn keys(&self) -> &[GatewayKey] {
        &self.keys
    }

    /// The key with this id, whichever gateway it belongs to.
    pub fn key(&self, key_id: &str) -> Option<&GatewayKey> {
        self.keys.iter().find(|k| k.key_id == key_id)
    }

    /// True if the gateway has at least one key.
    pub fn has_gateway(&self, gateway_id: &str) -> bool {
        self.keys.iter().any(|k| k.gateway_id == gateway_id)
    }

    /// The registered gateway ids, sorted, each once.
    pub fn gateways(&self) -> Vec<&str> {
        let ids: BTreeSet<&str> = self.keys.iter().map(|k| k.gateway_id.as_str()).collect();
        ids.into_iter().collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddGatewayError {
    #[error("gateway id {0:?} is not 1-32 characters of a-z, 0-9 and '-'")]
    InvalidGatewayId(String),
    /// `gateway::RESERVED_GATEWAY_IDS`: choose another id.
    #[error(
        "gateway id {0:?} is reserved: its inbox would be another NATS user's; choose another id"
    )]
    ReservedGatewayId(String),
    /// The key file exists (never overwritten) or cannot be written.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
}

/// A new key of gateway `gateway_id` (`ansinh admin add-gateway`): a key pair from the
/// OS's random source, the private key written to `key_out` (mode 0600, never
/// overwriting a file). Returns its public key, for the ledger's directory
/// (`Directory::add_gateway_key`). The key file comes first: a directory entry without
/// its key file would be a gateway nobody can sign for; a key file without its entry is
/// only refused.
pub fn new_gateway_key(gateway_id: &str, key_out: &Path) -> Result<GatewayKey, AddGatewayError> {
    if is_reserved_gateway_id(gateway_id) {
        return Err(AddGatewayError::ReservedGatewayId(gateway_id.to_string()));
    }
    if !is_gateway_id(gateway_id) {
        return Err(AddGatewayError::InvalidGatewayId(gateway_id.to_string()));
    }
    let key =
        KeyPair::from_seed(&ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng).to_bytes());
    write_key_file(key_out, &key)?;
    sync_parent(key_out);
    Ok(GatewayKey {
        gateway_id: gateway_id.to_string(),
        key_id: key.key_id().to_string(),
        public_key: key.public_key(),
    })
}

pub use crate::checkpoint::keys::load_key;
