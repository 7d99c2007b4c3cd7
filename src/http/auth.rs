//! Who is calling: bearer tokens looked up in the staff file.
//!
//! The staff file (`<data-dir>/staff.json`, schema `schemas/staff-file.json`) lists
//! `{token_blake3, id, role, unit}` per caller. Only a hash of each token is stored: a
//! copy of the file does not let anyone call the API. Tokens are 32 random bytes, so
//! a fast hash is enough (nothing to brute-force), and the hash is domain-separated
//! (BLAKE3 derive-key mode, `TOKEN_CONTEXT`) so it matches no other hash in ansinh.
//!
//! **Invariant:** a presented token is compared with every stored hash in constant time
//! (`blake3::Hash` equality), and never logged.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::access::{Caller, Role};

/// BLAKE3 derive-key context of token hashes.
pub const TOKEN_CONTEXT: &str = "ansinh v1 http staff token";
/// Random bytes in a token.
pub const TOKEN_RANDOM_BYTES: usize = 32;
/// Tokens start with this, so a leaked one is easy to recognise and grep for.
pub const TOKEN_PREFIX: &str = "ansinh_";
/// Most callers one file may list.
pub const STAFF_ENTRIES_MAX: usize = 10_000;
/// Largest staff file read (10,000 entries are about 1.5 MiB).
pub const STAFF_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Longest staff id (it becomes part of every idempotency key and event actor).
pub const STAFF_ID_BYTES_MAX: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum StaffFileError {
    /// Missing or unreadable: create it with `ansinh admin add-staff`, or fix the path.
    #[error("staff file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Group or other may read or write it (anyone who can write it can add a caller).
    #[error("staff file {path} has mode {mode:o}; group/other bits must be clear (chmod 600)")]
    Permissions { path: PathBuf, mode: u32 },
    /// Not the format of `schemas/staff-file.json`: fix the entry named.
    #[error("staff file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// A temporary file from another (or an interrupted) add-staff is in the way.
    #[error("{tmp} exists: another add-staff is running, or one was interrupted (then remove it)")]
    Busy { tmp: PathBuf },
}

/// One line of the staff file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffEntry {
    pub token_blake3: String,
    pub id: String,
    pub role: Role,
    pub unit: String,
}

/// The callers the API knows, by token hash.
///
/// Found by a map lookup, not by comparing every entry: every request, signed in or not,
/// is authenticated, and a bank lists thousands of staff (up to `STAFF_ENTRIES_MAX`). The
/// map's key is the token's hash, not the token, so what a lookup's timing could tell
/// about the key tells nothing about a token (finding a token from its hash is a
/// preimage of BLAKE3), and the map's hasher is keyed at random per process.
#[derive(Debug, Default)]
pub struct StaffDirectory {
    entries: Vec<(blake3::Hash, Caller)>,
    /// Index in `entries` by token hash.
    by_hash: std::collections::HashMap<[u8; 32], usize>,
    /// Index in `entries` by staff id.
    by_id: std::collections::HashMap<String, usize>,
}

/// The hash stored for `token`.
pub fn token_hash(token: &str) -> blake3::Hash {
    blake3::Hasher::new_derive_key(TOKEN_CONTEXT)
        .update(token.as_bytes())
        .finalize()
}

/// A fresh token: the prefix and 32 random bytes in hex.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut random = [0u8; TOKEN_RANDOM_BYTES];
    getrandom::getrandom(&mut random)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(random)))
}

fn check_entry(entry: &StaffEntry) -> Result<(blake3::Hash, Caller), String> {
    let hash = blake3::Hash::from_hex(&entry.token_blake3)
        .ok()
        .filter(|_| {
            entry.token_blake3.len() == 64
                && !entry.token_blake3.bytes().any(|b| b.is_ascii_uppercase())
        })
        .ok_or_else(|| format!("{}: token_blake3 is not 64 lowercase hex digits", entry.id))?;
    let id_ok = !entry.id.is_empty()
        && entry.id.len() <= STAFF_ID_BYTES_MAX
        && entry
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b));
    if !id_ok {
        return Err(format!(
            "id {:?} must be 1 to {STAFF_ID_BYTES_MAX} of A-Z a-z 0-9 . _ : @ -",
            entry.id
        ));
    }
    let unit_ok =
        matches!(entry.unit.len(), 0 | 2 | 7) && entry.unit.bytes().all(|b| b.is_ascii_digit());
    if !unit_ok {
        return Err(format!(
            "{}: unit {:?} must be a commune (7 digits), a province (2 digits) or \"\" (head office)",
            entry.id, entry.unit
        ));
    }
    Ok((
        hash,
        Caller {
            id: entry.id.clone(),
            role: entry.role,
            unit: entry.unit.clone(),
        },
    ))
}

impl StaffDirectory {
    /// Checks every entry; ids and token hashes must be unique.
    pub fn from_entries(entries: &[StaffEntry]) -> Result<Self, String> {
        if entries.len() > STAFF_ENTRIES_MAX {
            return Err(format!("more than {STAFF_ENTRIES_MAX} entries"));
        }
        let (directory, refused) = Self::admitting(entries.iter().map(|e| ((), Ok(e.clone()))));
        match refused.into_iter().next() {
            Some(((), reason)) => Err(reason),
            None => Ok(directory),
        }
    }

    /// Admits `entries` in the order given, each checked on its own against the ones
    /// admitted before it: an entry that is no staff entry (`Err` with why), fails
    /// `check_entry`, repeats an admitted id or token, or comes past `STAFF_ENTRIES_MAX`
    /// is refused alone and handed back with its label `K` and why. The same entries in
    /// the same order always give the same directory.
    pub fn admitting<K>(
        entries: impl IntoIterator<Item = (K, Result<StaffEntry, String>)>,
    ) -> (Self, Vec<(K, String)>) {
        let mut directory = Self::default();
        let mut refused = Vec::new();
        for (label, entry) in entries {
            let admitted = entry.and_then(|entry| {
                let (hash, caller) = check_entry(&entry)?;
                if directory.by_id.contains_key(&caller.id)
                    || directory.by_hash.contains_key(hash.as_bytes())
                {
                    return Err(format!("{}: id or token listed twice", caller.id));
                }
                if directory.entries.len() >= STAFF_ENTRIES_MAX {
                    return Err(format!(
                        "{}: more than {STAFF_ENTRIES_MAX} entries",
                        caller.id
                    ));
                }
                Ok((hash, caller))
            });
            match admitted {
                Ok((hash, caller)) => {
                    let at = directory.entries.len();
                    directory.by_id.insert(caller.id.clone(), at);
                    directory.by_hash.insert(*hash.as_bytes(), at);
                    directory.entries.push((hash, caller));
                }
                Err(reason) => refused.push((label, reason)),
            }
        }
        (directory, refused)
    }

    /// Reads and checks the staff file.
    pub fn load(path: &Path) -> Result<Self, StaffFileError> {
        let entries = read_entries(path)?;
        Self::from_entries(&entries).map_err(|reason| StaffFileError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The caller holding `token`, if any: one lookup by the token's hash, then that
    /// entry's hash compared in constant time.
    pub fn authenticate(&self, token: &str) -> Option<&Caller> {
        if token.is_empty() {
            return None;
        }
        let presented = token_hash(token);
        let (hash, caller) = &self.entries[*self.by_hash.get(presented.as_bytes())?];
        (*hash == presented).then_some(caller)
    }

    /// The caller with staff id `id`, if the directory still lists it (a console session
    /// names its staff member by id and is good only while they are listed).
    pub fn by_id(&self, id: &str) -> Option<&Caller> {
        self.with_token_hash(id).map(|(_, c)| c)
    }

    /// The caller with staff id `id` and the hash of its token now: a console session is
    /// bound to the token its reader signed in with, so a replaced token ends it.
    pub fn with_token_hash(&self, id: &str) -> Option<(&blake3::Hash, &Caller)> {
        let (h, c) = &self.entries[*self.by_id.get(id)?];
        Some((h, c))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> StaffFileError + '_ {
    move |source| StaffFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and checks the entries of a staff file (permissions, size, strict JSON).
pub fn read_entries(path: &Path) -> Result<Vec<StaffEntry>, StaffFileError> {
    let file = File::open(path).map_err(io_error(path))?;
    let meta = file.metadata().map_err(io_error(path))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StaffFileError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let mut text = String::new();
    file.take(STAFF_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(io_error(path))?;
    if text.len() as u64 > STAFF_FILE_BYTES_MAX {
        return Err(StaffFileError::Invalid {
            path: path.to_path_buf(),
            reason: format!("larger than {STAFF_FILE_BYTES_MAX} bytes"),
        });
    }
    crate::strict_json::from_str(&text).map_err(|e| StaffFileError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// `ansinh admin add-staff`: makes a token for a new caller, adds its hash to the staff
/// file (created 0600 if missing) and returns the token, which exists nowhere else.
///
/// The file is rewritten whole through a temporary file created exclusively beside it
/// (so two concurrent add-staff cannot lose an entry: the second one fails) and renamed
/// into place after an fsync.
pub fn add_staff(path: &Path, id: &str, role: Role, unit: &str) -> Result<String, StaffFileError> {
    let mut entries = match read_entries(path) {
        Ok(entries) => entries,
        Err(StaffFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let token = new_token().map_err(|e| StaffFileError::Io {
        path: path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    })?;
    entries.push(StaffEntry {
        token_blake3: token_hash(&token).to_hex().to_string(),
        id: id.to_owned(),
        role,
        unit: unit.to_owned(),
    });
    let invalid = |reason| StaffFileError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    StaffDirectory::from_entries(&entries).map_err(invalid)?;
    let mut text = serde_json::to_string_pretty(&entries).expect("entries serialize");
    text.push('\n');

    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
    }
    .map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => StaffFileError::Busy { tmp: tmp.clone() },
        _ => io_error(&tmp)(e),
    })?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(path)(e));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(parent))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full directory: every token finds its own entry, and an id its own, whatever
    /// its place; an unknown token finds none.
    #[test]
    fn each_of_the_largest_directory_is_found_by_its_token_and_its_id() {
        let tokens: Vec<String> = (0..STAFF_ENTRIES_MAX)
            .map(|i| format!("ansinh_t{i:05}"))
            .collect();
        let entries: Vec<StaffEntry> = tokens
            .iter()
            .enumerate()
            .map(|(i, token)| StaffEntry {
                id: format!("staff:{i}"),
                token_blake3: token_hash(token).to_hex().to_string(),
                role: if i % 2 == 0 {
                    Role::Teller
                } else {
                    Role::Auditor
                },
                unit: if i % 2 == 0 {
                    "0100007".into()
                } else {
                    String::new()
                },
            })
            .collect();
        let staff = StaffDirectory::from_entries(&entries).unwrap();
        assert_eq!(staff.len(), STAFF_ENTRIES_MAX);
        for i in [0, 1, 4_321, STAFF_ENTRIES_MAX - 1] {
            let caller = staff.authenticate(&tokens[i]).unwrap();
            assert_eq!(caller.id, format!("staff:{i}"));
            let (hash, by_id) = staff.with_token_hash(&format!("staff:{i}")).unwrap();
            assert_eq!(by_id.id, caller.id);
            assert_eq!(*hash, token_hash(&tokens[i]));
        }
        assert!(staff.authenticate("ansinh_t99999").is_none());
        assert!(staff.by_id("staff:10000").is_none());
    }

    #[test]
    fn a_token_is_found_by_its_hash_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staff.json");
        let teller = add_staff(&path, "staff:an", Role::Teller, "0100007").unwrap();
        let auditor = add_staff(&path, "staff:binh", Role::Auditor, "").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&teller) && !text.contains(&teller[TOKEN_PREFIX.len()..]));
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let staff = StaffDirectory::load(&path).unwrap();
        assert_eq!(staff.len(), 2);
        assert_eq!(staff.authenticate(&teller).unwrap().role, Role::Teller);
        assert_eq!(staff.authenticate(&auditor).unwrap().unit, "");
        assert!(staff.authenticate("ansinh_00").is_none());
        assert!(staff.authenticate("").is_none());
        // The same id twice is refused and leaves the file as it was.
        assert!(matches!(
            add_staff(&path, "staff:an", Role::Teller, "0100007"),
            Err(StaffFileError::Invalid { .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        // A unit that is neither a commune nor a province is refused.
        assert!(add_staff(&path, "staff:c", Role::Teller, "0100").is_err());
    }

    #[test]
    fn a_readable_staff_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staff.json");
        add_staff(&path, "staff:an", Role::Teller, "0100007").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            StaffDirectory::load(&path),
            Err(StaffFileError::Permissions { mode: 0o644, .. })
        ));
    }
}
