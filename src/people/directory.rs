//! Who may call the ledger: the staff (token hashes, roles, units) and the payment
//! gateways (their public keys), shared by every ledger process through one replicated
//! JetStream key-value bucket, `<stream>_DIRECTORY`, and followed live.
//!
//! Each process loads the bucket when it starts and then watches it: a member of staff
//! added with `ansinh admin add-staff` (or a gateway key with `admin add-gateway`) can
//! call every running process as soon as its watcher has applied the change, without a
//! restart. Keys: `staff.<token BLAKE3 hex>` -> a staff entry as JSON (the staff file's
//! format, `schemas/staff-file.json`); `gateway.<key id>` -> `{id, public_key, key_id}`
//! (the gateway registry file's format). A removed member is a deleted key.
//!
//! **Invariant:** a process serves with a directory that passed the same checks as the
//! files did (`StaffDirectory::from_entries`, `Registry::new`); a change that would make
//! the whole invalid (a token listed twice, a bad key) is logged and not applied, and the
//! last valid directory stays in force.
//!
//! The files `<data-dir>/staff.json` and `<data-dir>/gateways.json` of earlier versions
//! are imported into the bucket when `serve` starts (`import_files`); from then on the
//! bucket is the record.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::access::Role;
use crate::gateway::keys::{GatewayKey, Registry, RegistryError};
use crate::http::auth::{StaffDirectory, StaffEntry, StaffFileError};

/// Revisions of each key kept (who had a token before, which keys a gateway had).
pub const DIRECTORY_HISTORY: i64 = 8;
const STAFF_PREFIX: &str = "staff.";
const GATEWAY_PREFIX: &str = "gateway.";
/// Longest a write waits for this process's watcher to apply it (normally a few
/// milliseconds): past it the watch is stuck, and the write says so.
pub const APPLIED_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The bucket could not be read or written: NATS is unreachable or refused.
    #[error("directory bucket: {0}")]
    Nats(String),
    /// The change would make the directory invalid (the reason says how); nothing was
    /// written.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    StaffFile(#[from] StaffFileError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The bucket could not be opened: NATS unreachable (retry), or it exists on fewer
    /// replicas than `--replicas` asks (an operator raises them; retrying changes nothing).
    #[error("directory: {0}")]
    Bucket(#[from] crate::log::stream::StreamError),
}

fn nats(e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Nats(e.to_string())
}

/// The bucket's name for an event stream.
pub fn bucket_name(stream_name: &str) -> String {
    format!("{stream_name}_DIRECTORY")
}

/// A value every request reads and the watcher replaces whole.
#[derive(Debug, Default)]
pub struct Shared<T>(RwLock<Arc<T>>);

impl<T> Shared<T> {
    pub fn new(value: T) -> Arc<Self> {
        Arc::new(Self(RwLock::new(Arc::new(value))))
    }

    pub fn current(&self) -> Arc<T> {
        self.0.read().expect("directory lock poisoned").clone()
    }

    fn replace(&self, value: T) {
        *self.0.write().expect("directory lock poisoned") = Arc::new(value);
    }
}

pub type SharedStaff = Arc<Shared<StaffDirectory>>;
pub type SharedRegistry = Arc<Shared<Registry>>;

/// A gateway key as stored: the registry file's entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayEntry {
    id: String,
    public_key: String,
    key_id: String,
}

/// The directory of one ledger: its bucket and the live views of it.
#[derive(Clone)]
pub struct Directory {
    kv: kv::Store,
    staff: SharedStaff,
    gateways: SharedRegistry,
    /// The last bucket revision the views reflect.
    applied: tokio::sync::watch::Receiver<u64>,
}

/// What the watcher folds: every live key's value.
#[derive(Default)]
struct Entries(BTreeMap<String, Bytes>);

impl Entries {
    fn apply(&mut self, entry: &kv::Entry) {
        match entry.operation {
            kv::Operation::Put => {
                self.0.insert(entry.key.clone(), entry.value.clone());
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                self.0.remove(&entry.key);
            }
        }
    }

    fn staff(&self) -> Result<StaffDirectory, String> {
        let entries: Vec<StaffEntry> = self
            .0
            .range(STAFF_PREFIX.to_string()..)
            .take_while(|(k, _)| k.starts_with(STAFF_PREFIX))
            .map(|(k, v)| crate::strict_json::from_slice(v).map_err(|e| format!("{k}: {e}")))
            .collect::<Result<_, _>>()?;
        StaffDirectory::from_entries(&entries)
    }

    fn gateways(&self) -> Result<Registry, String> {
        let keys: Vec<GatewayKey> = self
            .0
            .range(GATEWAY_PREFIX.to_string()..)
            .take_while(|(k, _)| k.starts_with(GATEWAY_PREFIX))
            .map(|(k, v)| {
                let e: GatewayEntry =
                    crate::strict_json::from_slice(v).map_err(|e| format!("{k}: {e}"))?;
                let public_key = hex::decode(&e.public_key)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| format!("{k}: public key is not 64 hex digits"))?;
                Ok(GatewayKey {
                    gateway_id: e.id,
                    key_id: e.key_id,
                    public_key,
                })
            })
            .collect::<Result<_, String>>()?;
        Registry::new(keys).map_err(|e| e.to_string())
    }
}

impl Directory {
    /// Opens (creating when missing) the bucket of the ledger whose event stream is
    /// `stream_name`, loads it, and follows it from then on.
    pub async fn open(
        js: &jetstream::Context,
        stream_name: &str,
        replicas: usize,
    ) -> Result<Self, DirectoryError> {
        let kv = crate::kv_writes::open_bucket(
            js,
            kv::Config {
                bucket: bucket_name(stream_name),
                description: "ansinh: staff token hashes and gateway public keys".into(),
                history: DIRECTORY_HISTORY,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        // Everything up to the bucket's last revision now, then a watch from the next.
        // (`kv.status()` answers the stream info cached when the bucket was opened.)
        let last = js
            .get_stream(&kv.stream_name)
            .await
            .map_err(nats)?
            .info()
            .await
            .map_err(nats)?
            .state
            .last_sequence;
        let mut entries = Entries::default();
        let mut keys = kv.keys().await.map_err(nats)?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(nats)?;
            if let Some(entry) = kv.entry(&key).await.map_err(nats)? {
                entries.apply(&entry);
            }
        }
        let staff = Shared::new(entries.staff().map_err(DirectoryError::Invalid)?);
        let gateways = Shared::new(entries.gateways().map_err(DirectoryError::Invalid)?);
        let watch = kv.watch_all_from_revision(last + 1).await.map_err(nats)?;
        let (applied_tx, applied) = tokio::sync::watch::channel(last);
        tokio::spawn(follow(
            watch,
            entries,
            staff.clone(),
            gateways.clone(),
            applied_tx,
        ));
        Ok(Self {
            kv,
            staff,
            gateways,
            applied,
        })
    }

    pub fn staff(&self) -> SharedStaff {
        self.staff.clone()
    }

    pub fn gateways(&self) -> SharedRegistry {
        self.gateways.clone()
    }

    /// Waits until this process's views reflect bucket revision `revision` (a write's
    /// answer): from then on its requests see the change.
    pub async fn applied(&self, revision: u64) {
        let mut applied = self.applied.clone();
        let _ = applied.wait_for(|r| *r >= revision).await;
    }

    /// Adds a member of staff: a fresh token, of which only the hash is stored. Returns
    /// the token (shown once) and the bucket revision of the write, once this process's
    /// views hold it.
    pub async fn add_staff(
        &self,
        id: &str,
        role: Role,
        unit: &str,
    ) -> Result<(String, u64), DirectoryError> {
        let token = crate::http::auth::new_token()
            .map_err(|e| DirectoryError::Invalid(format!("no random token: {e}")))?;
        let entry = StaffEntry {
            token_blake3: crate::http::auth::token_hash(&token).to_hex().to_string(),
            id: id.to_string(),
            role,
            unit: unit.to_string(),
        };
        let revision = self.put_staff(&entry).await?;
        Ok((token, revision))
    }

    /// Stores one staff entry, refused if the directory would then be invalid (the id
    /// already used, say); returns once this process's views hold it.
    async fn put_staff(&self, entry: &StaffEntry) -> Result<u64, DirectoryError> {
        let mut entries: Vec<StaffEntry> = self.current_staff_entries().await?;
        entries.push(entry.clone());
        StaffDirectory::from_entries(&entries).map_err(DirectoryError::Invalid)?;
        let key = format!("{STAFF_PREFIX}{}", entry.token_blake3);
        let value = serde_json::to_vec(entry).expect("a staff entry serializes");
        // Create, not put: a token hash is never written twice.
        let revision = self.kv.create(&key, value.into()).await.map_err(nats)?;
        self.applied_within(revision).await?;
        Ok(revision)
    }

    async fn current_staff_entries(&self) -> Result<Vec<StaffEntry>, DirectoryError> {
        let mut out = Vec::new();
        let mut keys = self.kv.keys().await.map_err(nats)?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(nats)?;
            if !key.starts_with(STAFF_PREFIX) {
                continue;
            }
            if let Some(value) = self.kv.get(&key).await.map_err(nats)? {
                out.push(
                    crate::strict_json::from_slice(&value)
                        .map_err(|e| DirectoryError::Invalid(format!("{key}: {e}")))?,
                );
            }
        }
        Ok(out)
    }

    /// Removes every token of staff member `id`; returns the bucket revision after the
    /// removal, None when `id` had none.
    pub async fn remove_staff(&self, id: &str) -> Result<Option<u64>, DirectoryError> {
        let mut last = None;
        for entry in self.current_staff_entries().await? {
            if entry.id == id {
                let key = format!("{STAFF_PREFIX}{}", entry.token_blake3);
                self.kv.delete(&key).await.map_err(nats)?;
                // The deletion marker's revision.
                let marker = self.kv.entry(&key).await.map_err(nats)?;
                last = last.max(marker.map(|e| e.revision));
            }
        }
        Ok(last)
    }

    /// Withdraws gateway key `key_id`; returns the bucket revision of the removal, once
    /// this process's views hold it, None when the bucket holds no such key. The deletion
    /// marker stays in the key's history, so `import_files` never brings the key back.
    pub async fn remove_gateway_key(&self, key_id: &str) -> Result<Option<u64>, DirectoryError> {
        let key = format!("{GATEWAY_PREFIX}{key_id}");
        if self.kv.get(&key).await.map_err(nats)?.is_none() {
            return Ok(None);
        }
        self.kv.delete(&key).await.map_err(nats)?;
        let Some(marker) = self.kv.entry(&key).await.map_err(nats)? else {
            return Err(DirectoryError::Nats(format!(
                "{key}: deleted, but the bucket answers no deletion marker"
            )));
        };
        self.applied_within(marker.revision).await?;
        Ok(Some(marker.revision))
    }

    /// Whether `key`'s latest revision is a deletion or purge marker: it was removed on
    /// purpose, and an import must not create it again (`kv.create` succeeds over a
    /// marker).
    async fn was_removed(&self, key: &str) -> Result<bool, DirectoryError> {
        Ok(self
            .kv
            .entry(key)
            .await
            .map_err(nats)?
            .is_some_and(|e| e.operation != kv::Operation::Put))
    }

    /// Registers a gateway's public key; returns the bucket revision of the write, once
    /// this process's views hold it: the next key is checked against them (a key checked
    /// against a view that lagged once failed to create a key the bucket held).
    pub async fn add_gateway_key(&self, key: &GatewayKey) -> Result<u64, DirectoryError> {
        self.gateways.current().with_key(key.clone())?;
        let entry = GatewayEntry {
            id: key.gateway_id.clone(),
            public_key: hex::encode(key.public_key),
            key_id: key.key_id.clone(),
        };
        let value = serde_json::to_vec(&entry).expect("a gateway entry serializes");
        let revision = self
            .kv
            .create(format!("{GATEWAY_PREFIX}{}", key.key_id), value.into())
            .await
            .map_err(nats)?;
        self.applied_within(revision).await?;
        Ok(revision)
    }

    /// Imports the staff and gateway files of an earlier version, if present: entries the
    /// bucket does not hold yet are added, each in this process's views before the next is
    /// checked (so a second import right after finds nothing to add). A token or key
    /// removed from the bucket (`remove_staff`, `remove_gateway_key`) is skipped: the
    /// files still list it, and `serve` imports them at every start. Returns how many of
    /// each were added.
    pub async fn import_files(
        &self,
        staff_file: &Path,
        registry_file: &Path,
    ) -> Result<(usize, usize), DirectoryError> {
        let mut staff_added = 0;
        if staff_file.exists() {
            let known = self.current_staff_entries().await?;
            for entry in crate::http::auth::read_entries(staff_file)? {
                let key = format!("{STAFF_PREFIX}{}", entry.token_blake3);
                if !known.iter().any(|k| k.token_blake3 == entry.token_blake3)
                    && !self.was_removed(&key).await?
                {
                    self.put_staff(&entry).await?;
                    staff_added += 1;
                }
            }
        }
        let mut gateways_added = 0;
        if registry_file.exists() {
            for key in Registry::load(registry_file)?.keys() {
                // This process's view, which holds every key added before this one.
                let known = self.gateways.current();
                if !known.keys().iter().any(|k| k.key_id == key.key_id)
                    && !self
                        .was_removed(&format!("{GATEWAY_PREFIX}{}", key.key_id))
                        .await?
                {
                    self.add_gateway_key(key).await?;
                    gateways_added += 1;
                }
            }
        }
        Ok((staff_added, gateways_added))
    }

    /// `applied`, bounded by `APPLIED_WAIT_MAX`.
    async fn applied_within(&self, revision: u64) -> Result<(), DirectoryError> {
        tokio::time::timeout(APPLIED_WAIT_MAX, self.applied(revision))
            .await
            .map_err(|_| {
                DirectoryError::Nats(format!(
                    "this process's view of the bucket did not reach revision {revision} \
                     within {APPLIED_WAIT_MAX:?}: its watch is stuck"
                ))
            })
    }
}

/// Applies every change of the bucket to the views, in revision order, until the
/// watch ends (the connection closed for good).
async fn follow(
    mut watch: kv::Watch,
    mut entries: Entries,
    staff: SharedStaff,
    gateways: SharedRegistry,
    applied: tokio::sync::watch::Sender<u64>,
) {
    while let Some(next) = watch.next().await {
        let entry = match next {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(error = %e, "directory watch: a change could not be read");
                continue;
            }
        };
        entries.apply(&entry);
        if entry.key.starts_with(STAFF_PREFIX) {
            match entries.staff() {
                Ok(d) => staff.replace(d),
                Err(e) => {
                    tracing::error!(key = %entry.key, error = %e, "staff change not applied: the directory would be invalid")
                }
            }
        } else if entry.key.starts_with(GATEWAY_PREFIX) {
            match entries.gateways() {
                Ok(r) => gateways.replace(r),
                Err(e) => {
                    tracing::error!(key = %entry.key, error = %e, "gateway change not applied: the registry would be invalid")
                }
            }
        }
        let _ = applied.send(entry.revision);
    }
}
