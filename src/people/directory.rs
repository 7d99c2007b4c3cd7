//! Who may call the ledger: the staff (token hashes, roles, units) and the payment
//! gateways (their public keys), shared by every ledger process through one replicated
//! JetStream key-value bucket, `<stream>_DIRECTORY`, and followed live.
//!
//! Each process loads the bucket when it starts and then watches it: a member of staff
//! added with `ansinh admin add-staff` (or a gateway key with `admin add-gateway`) can
//! call every running process as soon as its watcher has applied the change, without a
//! restart. Keys: `staff-id.<staff id, hex>` -> a staff entry as JSON (the staff file's
//! format, `schemas/staff-file.json`); `gateway.<key id>` -> `{id, public_key, key_id}`
//! (the gateway registry file's format). A removed member is a deleted key. Entries of
//! earlier versions, `staff.<token BLAKE3 hex>`, are read as they are and only ever
//! deleted (ADR 0020).
//!
//! **Invariant:** one staff id, one entry, and one key id, one gateway key: each is a
//! bucket key written with `kv.create`, so the bucket itself refuses the second writer,
//! however many write at once.
//!
//! **Invariant:** every process derives the same views from the same entries: they are
//! admitted in revision order, each checked alone against those admitted before it
//! (`StaffDirectory::admitting`, `Registry::admitting`, the checks of the files). An entry
//! that fails (a later entry of an id, a bad key) is refused alone and logged; the rest
//! stay in force. A writer whose own entry is refused is told so, and the entry withdrawn.
//!
//! The files `<data-dir>/staff.json` and `<data-dir>/gateways.json` of earlier versions
//! are imported into the bucket when `serve` starts (`import_files`); from then on the
//! bucket is the record.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::access::Role;
use crate::gateway::keys::{GatewayKey, Registry, RegistryError};
use crate::http::auth::{STAFF_ENTRIES_MAX, StaffDirectory, StaffEntry, StaffFileError};

/// Revisions of each key kept (who had a token before, which keys a gateway had).
pub const DIRECTORY_HISTORY: i64 = 8;
/// Staff entries, one per staff id: the key names the id (in hex, since ids hold ':' and
/// '@', which keys may not), so creating the key is the check that the id is free.
const STAFF_PREFIX: &str = "staff-id.";
/// Staff entries written by earlier versions, keyed by token hash: a check apart from
/// the write let two entries of one id in. Read and deleted, never written.
const LEGACY_STAFF_PREFIX: &str = "staff.";
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
    /// The entry was written, but the directory refuses it (another writer's entry came
    /// first, say): it is in force nowhere, and it was withdrawn unless `withdrawn` says
    /// otherwise. Look at the directory and try again.
    #[error("{key}: refused by the directory: {reason}{}", if *withdrawn { "" } else { " (and still stored: remove it)" })]
    Refused {
        key: String,
        reason: String,
        withdrawn: bool,
    },
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

/// The bucket key of staff member `id`'s entry.
fn staff_key(id: &str) -> String {
    format!("{STAFF_PREFIX}{}", hex::encode(id))
}

/// The bucket key an earlier version gave the entry of the token hashed `token_blake3`.
fn legacy_staff_key(token_blake3: &str) -> String {
    format!("{LEGACY_STAFF_PREFIX}{token_blake3}")
}

fn gateway_key(key_id: &str) -> String {
    format!("{GATEWAY_PREFIX}{key_id}")
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

/// The entries the views refuse now: bucket key -> (revision, why).
type Refusals = BTreeMap<String, (u64, String)>;

/// The directory of one ledger: its bucket and the live views of it.
#[derive(Clone)]
pub struct Directory {
    kv: kv::Store,
    staff: SharedStaff,
    gateways: SharedRegistry,
    /// The entries the views leave out, so a writer can tell whether its own is one.
    refused: Arc<Mutex<Refusals>>,
    /// The last bucket revision the views reflect.
    applied: tokio::sync::watch::Receiver<u64>,
}

/// One live key's value as stored.
struct Stored {
    revision: u64,
    value: Bytes,
}

/// What the watcher folds: every live key's value.
#[derive(Default)]
struct Entries(BTreeMap<String, Stored>);

/// What a fold of one side of the directory gives: the view, and the entries it left
/// out.
struct Folded<T> {
    view: T,
    refused: Vec<(String, u64, String)>,
}

impl Entries {
    fn apply(&mut self, key: &str, revision: u64, value: &Bytes, operation: kv::Operation) {
        match operation {
            kv::Operation::Put => {
                self.0.insert(
                    key.to_owned(),
                    Stored {
                        revision,
                        value: value.clone(),
                    },
                );
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                self.0.remove(key);
            }
        }
    }

    /// The live keys under `prefix`.
    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Stored)> {
        self.0
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Every live key under `prefixes`, oldest revision first: the order in which
    /// entries are admitted, the same in every process.
    fn by_revision<'a>(&'a self, prefixes: &[&'a str]) -> Vec<(&'a String, &'a Stored)> {
        let mut all: Vec<_> = prefixes.iter().flat_map(|p| self.under(p)).collect();
        all.sort_by_key(|(_, s)| s.revision);
        all
    }

    fn staff(&self) -> Folded<StaffDirectory> {
        let stored = self.by_revision(&[STAFF_PREFIX, LEGACY_STAFF_PREFIX]);
        let (view, refused) = StaffDirectory::admitting(
            stored
                .into_iter()
                .map(|(k, s)| ((k.clone(), s.revision), staff_entry(k, &s.value))),
        );
        Folded {
            view,
            refused: refused
                .into_iter()
                .map(|((k, revision), why)| (k, revision, why))
                .collect(),
        }
    }

    fn gateways(&self) -> Folded<Registry> {
        let stored = self.by_revision(&[GATEWAY_PREFIX]);
        let (view, refused) = Registry::admitting(
            stored
                .into_iter()
                .map(|(k, s)| ((k.clone(), s.revision), gateway_entry(k, &s.value))),
        );
        Folded {
            view,
            refused: refused
                .into_iter()
                .map(|((k, revision), e)| (k, revision, e.to_string()))
                .collect(),
        }
    }
}

/// The staff entry stored under `key`, which must be its own key: an entry under
/// another id's key would escape the one-entry-per-id check of `kv.create`.
fn staff_entry(key: &str, value: &[u8]) -> Result<StaffEntry, String> {
    let entry: StaffEntry =
        crate::strict_json::from_slice(value).map_err(|e| format!("{key}: {e}"))?;
    let own = if key.starts_with(STAFF_PREFIX) {
        staff_key(&entry.id)
    } else {
        legacy_staff_key(&entry.token_blake3)
    };
    if key != own {
        return Err(format!("{key}: holds the entry of {}", entry.id));
    }
    Ok(entry)
}

/// The gateway key stored under `key`, which must be its own key id's.
fn gateway_entry(key: &str, value: &[u8]) -> Result<GatewayKey, RegistryError> {
    let invalid = |why: String| RegistryError::Json(format!("{key}: {why}"));
    let e: GatewayEntry =
        crate::strict_json::from_slice(value).map_err(|e| invalid(e.to_string()))?;
    if key != gateway_key(&e.key_id) {
        return Err(invalid(format!("holds the entry of key {}", e.key_id)));
    }
    let public_key = hex::decode(&e.public_key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| RegistryError::InvalidPublicKey {
            gateway: e.id.clone(),
        })?;
    Ok(GatewayKey {
        gateway_id: e.id,
        key_id: e.key_id,
        public_key,
    })
}

/// Puts one side's refusals in `refused` (every key under `prefixes` it held is
/// replaced) and logs each entry refused that was not refused before.
fn record_refusals(refused: &Mutex<Refusals>, prefixes: &[&str], now: Vec<(String, u64, String)>) {
    let mut refused = refused.lock().expect("refusals lock poisoned");
    let (before, others): (Refusals, Refusals) = std::mem::take(&mut *refused)
        .into_iter()
        .partition(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)));
    *refused = others;
    for (key, revision, reason) in now {
        if before.get(&key).is_none_or(|(r, _)| *r != revision) {
            tracing::error!(%key, revision, %reason, "directory entry refused: in force nowhere until it, or what it clashes with, is removed");
        }
        refused.insert(key, (revision, reason));
    }
}

/// What a `create` found.
enum Created {
    /// Written, at this revision.
    Written(u64),
    /// The key holds an entry already: another writer's (or ours, if the answer to our
    /// write was lost).
    Taken(kv::Entry),
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
            if let Some(e) = kv.entry(&key).await.map_err(nats)? {
                entries.apply(&e.key, e.revision, &e.value, e.operation);
            }
        }
        // A bad entry does not stop the process: it is refused and logged (at every start,
        // until removed), and the others are in force. Refusing to start instead would take
        // every teller of the ledger off the counter for one entry, and take with them
        // the admin commands that remove it, which open the directory too.
        let refused = Arc::new(Mutex::new(Refusals::new()));
        let folded = entries.staff();
        record_refusals(
            &refused,
            &[STAFF_PREFIX, LEGACY_STAFF_PREFIX],
            folded.refused,
        );
        let staff = Shared::new(folded.view);
        let folded = entries.gateways();
        record_refusals(&refused, &[GATEWAY_PREFIX], folded.refused);
        let gateways = Shared::new(folded.view);
        let watch = kv.watch_all_from_revision(last + 1).await.map_err(nats)?;
        let (applied_tx, applied) = tokio::sync::watch::channel(last);
        tokio::spawn(follow(
            watch,
            entries,
            staff.clone(),
            gateways.clone(),
            refused.clone(),
            applied_tx,
        ));
        Ok(Self {
            kv,
            staff,
            gateways,
            refused,
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
    /// views hold it in force.
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
        // Checked first, so a plain mistake writes nothing; the bucket's `create` is the
        // check that counts when writers race.
        StaffDirectory::from_entries(std::slice::from_ref(&entry))
            .map_err(DirectoryError::Invalid)?;
        let current = self.staff.current();
        if current.by_id(id).is_some() {
            return Err(DirectoryError::Invalid(format!(
                "{id} is in the directory already (remove-staff first to give it a new token)"
            )));
        }
        if current.len() >= STAFF_ENTRIES_MAX {
            return Err(DirectoryError::Invalid(format!(
                "the directory holds {STAFF_ENTRIES_MAX} staff, its most"
            )));
        }
        let key = staff_key(id);
        let value = Bytes::from(serde_json::to_vec(&entry).expect("a staff entry serializes"));
        let revision = match self.create(&key, value.clone()).await? {
            Created::Written(revision) => revision,
            // Our own write, whose answer was lost: the value holds our new token's hash.
            Created::Taken(stored) if stored.value == value => stored.revision,
            Created::Taken(_) => {
                return Err(DirectoryError::Invalid(format!(
                    "{id} is in the directory already: another add-staff wrote it first"
                )));
            }
        };
        self.in_force(&key, revision).await?;
        Ok((token, revision))
    }

    /// `kv.create`, telling a key already taken from a failure.
    async fn create(&self, key: &str, value: Bytes) -> Result<Created, DirectoryError> {
        match self.kv.create(key, value).await {
            Ok(revision) => Ok(Created::Written(revision)),
            // Whatever the error's kind (two creates over one deletion marker fail as an
            // update would): a live entry there now means the key is taken.
            Err(e) => match self.kv.entry(key).await.map_err(nats)? {
                Some(stored) if stored.operation == kv::Operation::Put => {
                    Ok(Created::Taken(stored))
                }
                _ => Err(nats(e)),
            },
        }
    }

    /// Waits until this process's views reflect `revision`, our write of `key`; if they
    /// refuse it, withdraws it (unless changed since) and says why.
    async fn in_force(&self, key: &str, revision: u64) -> Result<(), DirectoryError> {
        self.applied_within(revision).await?;
        let refusal = self
            .refused
            .lock()
            .expect("refusals lock poisoned")
            .get(key)
            .filter(|(r, _)| *r == revision)
            .map(|(_, why)| why.clone());
        let Some(reason) = refusal else {
            return Ok(());
        };
        // Nobody was given what it holds (the writer reports the refusal instead), and
        // left there it would hold its key and come into force once what it clashes with
        // is gone.
        let withdrawn = self
            .kv
            .delete_expect_revision(key, Some(revision))
            .await
            .is_ok();
        Err(DirectoryError::Refused {
            key: key.to_owned(),
            reason,
            withdrawn,
        })
    }

    /// Every staff entry an earlier version wrote, with its key and revision (entries
    /// that are not staff entries are left out: no id to find them by).
    async fn legacy_staff(&self) -> Result<Vec<(String, u64, StaffEntry)>, DirectoryError> {
        let mut out = Vec::new();
        let mut keys = self.kv.keys().await.map_err(nats)?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(nats)?;
            if !key.starts_with(LEGACY_STAFF_PREFIX) {
                continue;
            }
            if let Some(stored) = self.kv.entry(&key).await.map_err(nats)? {
                if stored.operation != kv::Operation::Put {
                    continue;
                }
                if let Ok(entry) = staff_entry(&key, &stored.value) {
                    out.push((key, stored.revision, entry));
                }
            }
        }
        Ok(out)
    }

    /// Removes every entry of staff member `id` (its own, and any an earlier version
    /// wrote); returns the bucket revision after the removal, once this process's views
    /// hold it, None when `id` had none.
    pub async fn remove_staff(&self, id: &str) -> Result<Option<u64>, DirectoryError> {
        let mut doomed: Vec<(u64, String)> = Vec::new();
        let key = staff_key(id);
        if let Some(stored) = self.kv.entry(&key).await.map_err(nats)? {
            if stored.operation == kv::Operation::Put {
                doomed.push((stored.revision, key));
            }
        }
        for (key, revision, entry) in self.legacy_staff().await? {
            if entry.id == id {
                doomed.push((revision, key));
            }
        }
        // Latest first: the entry in force is the earliest, so it goes last, and no
        // refused entry of the id is in force between two deletions.
        doomed.sort_by(|a, b| b.cmp(a));
        let mut last = None;
        for (_, key) in doomed {
            self.kv.delete(&key).await.map_err(nats)?;
            // The deletion marker's revision.
            let marker = self.kv.entry(&key).await.map_err(nats)?;
            last = last.max(marker.map(|e| e.revision));
        }
        if let Some(revision) = last {
            self.applied_within(revision).await?;
        }
        Ok(last)
    }

    /// Withdraws gateway key `key_id`; returns the bucket revision of the removal, once
    /// this process's views hold it, None when the bucket holds no such key. The deletion
    /// marker stays in the key's history, so `import_files` never brings the key back.
    pub async fn remove_gateway_key(&self, key_id: &str) -> Result<Option<u64>, DirectoryError> {
        let key = gateway_key(key_id);
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

    /// Whether `key` has ever been written: held now, or removed on purpose (a deletion
    /// or purge marker is its latest revision; `kv.create` would succeed over it).
    async fn ever_written(&self, key: &str) -> Result<bool, DirectoryError> {
        Ok(self.kv.entry(key).await.map_err(nats)?.is_some())
    }

    /// Registers a gateway's public key; returns the bucket revision of the write, once
    /// this process's views hold it in force: the next key is checked against them (a key
    /// checked against a view that lagged once failed to create a key the bucket held).
    pub async fn add_gateway_key(&self, key: &GatewayKey) -> Result<u64, DirectoryError> {
        self.gateways.current().with_key(key.clone())?;
        let bucket_key = gateway_key(&key.key_id);
        let revision = match self.create(&bucket_key, gateway_value(key)).await? {
            Created::Written(revision) => revision,
            Created::Taken(_) => return Err(RegistryError::DuplicateKey(key.key_id.clone()).into()),
        };
        self.in_force(&bucket_key, revision).await?;
        Ok(revision)
    }

    /// Imports the staff and gateway files of an earlier version, if present: an entry
    /// whose key the bucket has never held is added, each in this process's views before
    /// the next. The bucket is the record, so a key it holds or held is left as it is: the
    /// same entry imported before (by this process, or by another `serve` starting at the
    /// same moment: finding it is no failure), a token given since, a removal
    /// (`remove_staff`, `remove_gateway_key`: the files still list it, and `serve` imports
    /// them at every start). An entry the directory refuses is logged and left out, not
    /// a reason to stop. Returns how many of each were added.
    pub async fn import_files(
        &self,
        staff_file: &Path,
        registry_file: &Path,
    ) -> Result<(usize, usize), DirectoryError> {
        let mut staff_added = 0;
        if staff_file.exists() {
            for entry in crate::http::auth::read_entries(staff_file)? {
                if self.import_staff(&entry).await? {
                    staff_added += 1;
                }
            }
        }
        let mut gateways_added = 0;
        if registry_file.exists() {
            for key in Registry::load(registry_file)?.keys() {
                let bucket_key = gateway_key(&key.key_id);
                if !self.ever_written(&bucket_key).await?
                    && self.import(&bucket_key, gateway_value(key)).await?
                {
                    gateways_added += 1;
                }
            }
        }
        Ok((staff_added, gateways_added))
    }

    /// Imports one staff entry of a file; whether it was added.
    async fn import_staff(&self, entry: &StaffEntry) -> Result<bool, DirectoryError> {
        let key = staff_key(&entry.id);
        // The id held or removed, the token imported or removed by an earlier version, or
        // the id held by an earlier version's entry under another token.
        if self.ever_written(&key).await?
            || self
                .ever_written(&legacy_staff_key(&entry.token_blake3))
                .await?
            || self.staff.current().by_id(&entry.id).is_some()
        {
            return Ok(false);
        }
        let value = serde_json::to_vec(entry).expect("a staff entry serializes");
        self.import(&key, value.into()).await
    }

    /// Creates `key` for an import; whether this call added it.
    async fn import(&self, key: &str, value: Bytes) -> Result<bool, DirectoryError> {
        let revision = match self.create(key, value).await? {
            Created::Written(revision) => revision,
            Created::Taken(_) => return Ok(false),
        };
        match self.in_force(key, revision).await {
            Ok(()) => Ok(true),
            Err(e @ DirectoryError::Refused { .. }) => {
                tracing::error!(error = %e, "an entry of the files was not imported");
                Ok(false)
            }
            Err(e) => Err(e),
        }
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

/// A gateway key as the bucket stores it.
fn gateway_value(key: &GatewayKey) -> Bytes {
    let entry = GatewayEntry {
        id: key.gateway_id.clone(),
        public_key: hex::encode(key.public_key),
        key_id: key.key_id.clone(),
    };
    serde_json::to_vec(&entry)
        .expect("a gateway entry serializes")
        .into()
}

/// Applies every change of the bucket to the views, in revision order, until the
/// watch ends (the connection closed for good). A change is applied (its entry in force,
/// or refused and recorded so) before `applied` passes its revision.
async fn follow(
    mut watch: kv::Watch,
    mut entries: Entries,
    staff: SharedStaff,
    gateways: SharedRegistry,
    refused: Arc<Mutex<Refusals>>,
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
        entries.apply(&entry.key, entry.revision, &entry.value, entry.operation);
        if entry.key.starts_with(STAFF_PREFIX) || entry.key.starts_with(LEGACY_STAFF_PREFIX) {
            let folded = entries.staff();
            record_refusals(
                &refused,
                &[STAFF_PREFIX, LEGACY_STAFF_PREFIX],
                folded.refused,
            );
            staff.replace(folded.view);
        } else if entry.key.starts_with(GATEWAY_PREFIX) {
            let folded = entries.gateways();
            record_refusals(&refused, &[GATEWAY_PREFIX], folded.refused);
            gateways.replace(folded.view);
        }
        let _ = applied.send(entry.revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staff_json(id: &str, token: &str) -> Bytes {
        serde_json::to_vec(&StaffEntry {
            token_blake3: crate::http::auth::token_hash(token).to_hex().to_string(),
            id: id.into(),
            role: Role::Teller,
            unit: "0100007".into(),
        })
        .unwrap()
        .into()
    }

    fn put(entries: &mut Entries, key: &str, revision: u64, value: Bytes) {
        entries.apply(key, revision, &value, kv::Operation::Put);
    }

    #[test]
    fn the_earliest_entry_of_an_id_holds_it_whatever_the_keys_order() {
        let mut entries = Entries::default();
        let legacy =
            |token: &str| legacy_staff_key(crate::http::auth::token_hash(token).to_hex().as_str());
        // Keys sort in another order than revisions: the fold goes by revision.
        put(
            &mut entries,
            &staff_key("staff:an"),
            2,
            staff_json("staff:an", "t2"),
        );
        put(&mut entries, &legacy("t1"), 1, staff_json("staff:an", "t1"));
        put(&mut entries, &legacy("t3"), 3, b"{".as_slice().into());
        put(
            &mut entries,
            &staff_key("staff:other"),
            4,
            staff_json("staff:an", "t4"),
        );
        put(
            &mut entries,
            &staff_key("staff:binh"),
            5,
            staff_json("staff:binh", "t5"),
        );
        let folded = entries.staff();
        assert_eq!(folded.view.authenticate("t1").unwrap().id, "staff:an");
        assert!(folded.view.authenticate("t2").is_none());
        assert!(
            folded.view.authenticate("t4").is_none(),
            "an entry under another id's key"
        );
        assert_eq!(folded.view.authenticate("t5").unwrap().id, "staff:binh");
        let refused: Vec<u64> = folded.refused.iter().map(|(_, r, _)| *r).collect();
        assert_eq!(refused, vec![2, 3, 4]);
        // The first removed, the next in revision order holds the id.
        entries.apply(&legacy("t1"), 6, &Bytes::new(), kv::Operation::Delete);
        assert_eq!(
            entries.staff().view.authenticate("t2").unwrap().id,
            "staff:an"
        );
    }

    #[test]
    fn a_bad_gateway_key_is_refused_alone() {
        let pair = crate::checkpoint::sign::KeyPair::from_seed(&[1; 32]);
        let good = GatewayKey {
            gateway_id: "vcb".into(),
            key_id: pair.key_id().into(),
            public_key: pair.public_key(),
        };
        let mut entries = Entries::default();
        put(
            &mut entries,
            &gateway_key(&good.key_id),
            2,
            gateway_value(&good),
        );
        put(
            &mut entries,
            &gateway_key("0000000000000000"),
            1,
            gateway_value(&GatewayKey {
                key_id: "0000000000000000".into(),
                ..good.clone()
            }),
        );
        let folded = entries.gateways();
        assert_eq!(folded.view.keys(), std::slice::from_ref(&good));
        assert_eq!(folded.refused.len(), 1);
        assert_eq!(folded.refused[0].0, gateway_key("0000000000000000"));
    }
}
