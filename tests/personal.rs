//! Behaviour of the personal-data vault through its public API.

use std::fs;
use std::path::{Path, PathBuf};

use ansinh::personal::{
    KeyStatus, MAX_HOUSEHOLD_ID_LEN, MAX_PLAINTEXT_LEN, MAX_SEALED_LEN, Member, PersonalData,
    SEALED_OVERHEAD, Vault, VaultError,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn sample() -> PersonalData {
    PersonalData {
        head_name: "Nguyễn Văn An".into(),
        head_citizen_id: "001085012345".into(),
        phone: Some("0912345678".into()),
        account_number: Some("0071000123456".into()),
        members: vec![
            Member {
                name: "Trần Thị Bình".into(),
                citizen_id: Some("001190054321".into()),
                relation: "vợ".into(),
            },
            Member {
                name: "Nguyễn Văn Cường".into(),
                citizen_id: None,
                relation: "con".into(),
            },
        ],
    }
}

/// One store directory and secrets file. The sled store is opened once and shared by
/// every "reopen": sled releases its file lock asynchronously after a drop, so opening
/// the directory again at once could fail on the lock (it did, now and then). What a
/// reopen tests is the vault reading back what it stored, which this keeps.
struct Env {
    _dir: tempfile::TempDir,
    db: sled::Db,
    secrets: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Env {
            db: sled::open(dir.path().join("db")).unwrap(),
            secrets: dir.path().join("vault.secret"),
            _dir: dir,
        }
    }

    fn open(&self) -> (sled::Db, Vault) {
        self.open_with(&self.secrets)
    }

    fn open_with(&self, secrets: &Path) -> (sled::Db, Vault) {
        let db = self.db.clone();
        let vault = Vault::open(&db, secrets).unwrap();
        (db, vault)
    }
}

#[test]
fn round_trip() {
    let env = Env::new();
    let (_db, vault) = env.open();
    assert_eq!(vault.key_status("hh-1").unwrap(), KeyStatus::NoKey);
    let data = sample();
    let sealed = vault.seal("hh-1", &data).unwrap();
    assert_eq!(vault.key_status("hh-1").unwrap(), KeyStatus::Active);
    assert_eq!(sealed[0], 1);
    assert_eq!(vault.open_sealed("hh-1", &sealed).unwrap(), data);
    // A second seal reuses the household's key.
    let other = PersonalData {
        phone: None,
        members: vec![],
        ..data.clone()
    };
    let sealed2 = vault.seal("hh-1", &other).unwrap();
    assert_eq!(vault.open_sealed("hh-1", &sealed2).unwrap(), other);
    assert_eq!(vault.open_sealed("hh-1", &sealed).unwrap(), data);
}

#[test]
fn round_trip_survives_reopen() {
    let env = Env::new();
    let sealed = {
        let (_db, vault) = env.open();
        vault.seal("hh-1", &sample()).unwrap()
    };
    let (_db, vault) = env.open();
    assert_eq!(vault.open_sealed("hh-1", &sealed).unwrap(), sample());
}

#[test]
fn sealed_bytes_hold_no_clear_personal_data() {
    let env = Env::new();
    let (_db, vault) = env.open();
    let sealed = vault.seal("hh-1", &sample()).unwrap();
    for needle in ["001085012345", "0912345678", "Nguy", "con"] {
        assert!(
            !sealed.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} found in sealed bytes"
        );
    }
}

#[test]
fn aad_binds_household() {
    let env = Env::new();
    let (_db, vault) = env.open();
    let sealed = vault.seal("hh-1", &sample()).unwrap();
    // Household without a key.
    assert!(matches!(
        vault.open_sealed("hh-2", &sealed),
        Err(VaultError::NoKey)
    ));
    // Household with its own key: the blob still does not open there.
    vault.seal("hh-2", &sample()).unwrap();
    assert!(matches!(
        vault.open_sealed("hh-2", &sealed),
        Err(VaultError::Tampered)
    ));
    assert_eq!(vault.open_sealed("hh-1", &sealed).unwrap(), sample());
}

#[test]
fn erasure_makes_data_unreadable_and_leaves_sealed_bytes_unchanged() {
    let env = Env::new();
    let (sealed, digest_before) = {
        let (_db, vault) = env.open();
        let sealed = vault.seal("hh-1", &sample()).unwrap();
        vault.seal("hh-keep", &sample()).unwrap();
        let digest = blake3::hash(&sealed);
        let copy = sealed.clone();
        assert!(vault.erase("hh-1", 1_700_000_000_123).unwrap());
        // Erasure touches only the vault: the caller's bytes (and their chain hash) are the same.
        assert_eq!(sealed, copy);
        assert_eq!(blake3::hash(&sealed), digest);
        assert!(matches!(
            vault.open_sealed("hh-1", &sealed),
            Err(VaultError::Erased {
                erased_at_unix_ms: 1_700_000_000_123
            })
        ));
        // Idempotent, first time kept.
        assert!(!vault.erase("hh-1", 1_800_000_000_000).unwrap());
        assert_eq!(
            vault.key_status("hh-1").unwrap(),
            KeyStatus::Erased {
                erased_at_unix_ms: 1_700_000_000_123
            }
        );
        // No new key is created for an erased household.
        assert!(matches!(
            vault.seal("hh-1", &sample()),
            Err(VaultError::Erased {
                erased_at_unix_ms: 1_700_000_000_123
            })
        ));
        (sealed, digest)
    };
    // Durable: after reopening, still erased; other households unaffected.
    let (db, vault) = env.open();
    assert_eq!(blake3::hash(&sealed), digest_before);
    assert!(matches!(
        vault.open_sealed("hh-1", &sealed),
        Err(VaultError::Erased {
            erased_at_unix_ms: 1_700_000_000_123
        })
    ));
    assert!(
        db.open_tree("vault.keys")
            .unwrap()
            .get("hh-1")
            .unwrap()
            .is_none()
    );
    assert_eq!(vault.key_status("hh-keep").unwrap(), KeyStatus::Active);
}

#[test]
fn erasing_unknown_household_records_tombstone() {
    let env = Env::new();
    let (_db, vault) = env.open();
    assert!(!vault.erase("hh-never", 5).unwrap());
    assert_eq!(
        vault.key_status("hh-never").unwrap(),
        KeyStatus::Erased {
            erased_at_unix_ms: 5
        }
    );
    assert!(matches!(
        vault.seal("hh-never", &sample()),
        Err(VaultError::Erased { .. })
    ));
}

#[test]
fn blind_index_stable_across_reopen_and_secret_specific() {
    let env = Env::new();
    let first = {
        let (_db, vault) = env.open();
        let a = vault.blind_index("001085012345");
        assert_eq!(a, vault.blind_index("001085012345"));
        assert_ne!(a, vault.blind_index("001085012346"));
        assert_eq!(vault.blind_index_hex("001085012345"), hex::encode(a));
        a
    };
    let (_db, vault) = env.open();
    assert_eq!(vault.blind_index("001085012345"), first);

    // Another secrets file (with another store) gives another index.
    let other = Env::new();
    let (_db2, vault2) = other.open();
    assert_ne!(vault2.blind_index("001085012345"), first);
}

#[test]
fn sealing_twice_gives_different_ciphertexts() {
    let env = Env::new();
    let (_db, vault) = env.open();
    let a = vault.seal("hh-1", &sample()).unwrap();
    let b = vault.seal("hh-1", &sample()).unwrap();
    assert_ne!(a, b);
    assert_ne!(a[1..25], b[1..25], "nonces differ");
    assert_eq!(a.len(), b.len());
    assert_eq!(
        vault.open_sealed("hh-1", &a).unwrap(),
        vault.open_sealed("hh-1", &b).unwrap()
    );
}

#[cfg(unix)]
#[test]
fn secrets_file_created_0600_with_64_bytes() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let (_db, _vault) = env.open();
    let meta = fs::metadata(&env.secrets).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 64);
    // No temporary file left beside it.
    let dir = env.secrets.parent().unwrap();
    let names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
}

#[cfg(unix)]
#[test]
fn secrets_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    drop(env.open());
    fs::set_permissions(&env.secrets, fs::Permissions::from_mode(0o644)).unwrap();
    let db = env.db.clone();
    assert!(matches!(
        Vault::open(&db, &env.secrets),
        Err(VaultError::SecretsPermissions { mode: 0o644, .. })
    ));
    drop(db);
    fs::set_permissions(&env.secrets, fs::Permissions::from_mode(0o400)).unwrap();
    drop(env.open());
}

#[cfg(unix)]
#[test]
fn malformed_secrets_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().temporary(true).open().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let short = write("short", &[7u8; 63]);
    let long = write("long", &[7u8; 65]);
    let zero_half = write("zero", &[[7u8; 32], [0u8; 32]].concat());
    for p in [short, long, zero_half] {
        assert!(
            matches!(Vault::open(&db, &p), Err(VaultError::SecretsInvalid { .. })),
            "{p:?}"
        );
    }
    assert!(matches!(
        Vault::open(&db, dir.path()),
        Err(VaultError::SecretsInvalid { .. } | VaultError::SecretsIo { .. })
    ));
    assert!(matches!(
        Vault::open(&db, &dir.path().join("missing-dir/secret")),
        Err(VaultError::SecretsIo { .. })
    ));
}

#[test]
fn wrong_secrets_file_for_existing_store_is_refused() {
    let env = Env::new();
    drop(env.open());
    let other_dir = tempfile::tempdir().unwrap();
    let db = env.db.clone();
    assert!(matches!(
        Vault::open(&db, &other_dir.path().join("other.secret")),
        Err(VaultError::WrongSecrets)
    ));
}

#[test]
fn oversized_personal_data_is_refused_without_creating_a_key() {
    let env = Env::new();
    let (_db, vault) = env.open();
    let mut data = sample();
    data.members = (0..2000)
        .map(|i| Member {
            name: format!("Thành viên {i}"),
            citizen_id: Some(format!("{i:012}")),
            relation: "con".into(),
        })
        .collect();
    match vault.seal("hh-big", &data) {
        Err(VaultError::PlaintextTooLarge { len, max }) => {
            assert_eq!(max, MAX_PLAINTEXT_LEN);
            assert_eq!(len, serde_json::to_vec(&data).unwrap().len());
        }
        other => panic!("expected PlaintextTooLarge, got {other:?}"),
    }
    assert_eq!(vault.key_status("hh-big").unwrap(), KeyStatus::NoKey);
}

#[test]
fn household_id_is_bounded() {
    let env = Env::new();
    let (_db, vault) = env.open();
    let long = "h".repeat(MAX_HOUSEHOLD_ID_LEN + 1);
    let max = "h".repeat(MAX_HOUSEHOLD_ID_LEN);
    assert!(matches!(
        vault.seal("", &sample()),
        Err(VaultError::InvalidHouseholdId { len: 0 })
    ));
    assert!(matches!(
        vault.seal(&long, &sample()),
        Err(VaultError::InvalidHouseholdId { .. })
    ));
    assert!(matches!(
        vault.open_sealed(&long, &[1; 60]),
        Err(VaultError::InvalidHouseholdId { .. })
    ));
    assert!(matches!(
        vault.erase("", 0),
        Err(VaultError::InvalidHouseholdId { .. })
    ));
    let sealed = vault.seal(&max, &sample()).unwrap();
    assert_eq!(vault.open_sealed(&max, &sealed).unwrap(), sample());
}

#[test]
fn malformed_sealed_inputs_return_errors() {
    let env = Env::new();
    let (_db, vault) = env.open();
    let sealed = vault.seal("hh-1", &sample()).unwrap();

    assert!(matches!(
        vault.open_sealed("hh-1", &[]),
        Err(VaultError::Malformed { len: 0 })
    ));
    assert!(matches!(
        vault.open_sealed("hh-1", &[1u8; SEALED_OVERHEAD - 1]),
        Err(VaultError::Malformed { .. })
    ));
    // Header and tag only: an empty ciphertext fails authentication.
    assert!(matches!(
        vault.open_sealed("hh-1", &[1u8; SEALED_OVERHEAD]),
        Err(VaultError::Tampered)
    ));
    let mut v2 = sealed.clone();
    v2[0] = 2;
    assert!(matches!(
        vault.open_sealed("hh-1", &v2),
        Err(VaultError::UnsupportedVersion { version: 2 })
    ));
    assert!(matches!(
        vault.open_sealed("hh-1", &vec![1u8; MAX_SEALED_LEN + 1]),
        Err(VaultError::SealedTooLarge { .. })
    ));

    // Every truncation and extension fails.
    for cut in 0..sealed.len() {
        assert!(
            vault.open_sealed("hh-1", &sealed[..cut]).is_err(),
            "cut {cut}"
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert!(matches!(
        vault.open_sealed("hh-1", &longer),
        Err(VaultError::Tampered)
    ));

    // Every single-bit flip fails with a typed error.
    for i in 0..sealed.len() {
        for bit in 0..8 {
            let mut m = sealed.clone();
            m[i] ^= 1 << bit;
            match vault.open_sealed("hh-1", &m) {
                Err(VaultError::UnsupportedVersion { .. }) => assert_eq!(i, 0),
                Err(VaultError::Tampered) => assert!(i > 0),
                other => panic!("byte {i} bit {bit}: {other:?}"),
            }
        }
    }
    assert_eq!(vault.open_sealed("hh-1", &sealed).unwrap(), sample());
}

#[test]
fn arbitrary_sealed_bytes_never_panic() {
    let env = Env::new();
    let (_db, vault) = env.open();
    let sealed = vault.seal("hh-1", &sample()).unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 512,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..400),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(random, edits, mutate_real)| {
            let input = if mutate_real {
                let mut m = sealed.clone();
                for (idx, byte) in &edits {
                    let i = idx.index(m.len());
                    m[i] ^= byte;
                }
                if edits.iter().all(|(_, b)| *b == 0) {
                    return Ok(());
                }
                m
            } else {
                random
            };
            for hh in ["hh-1", "hh-none"] {
                prop_assert!(vault.open_sealed(hh, &input).is_err());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_personal_data_round_trips() {
    let env = Env::new();
    let (_db, vault) = env.open();
    let text = || "\\PC{0,40}";
    let member =
        (text(), prop::option::of(text()), text()).prop_map(|(name, citizen_id, relation)| {
            Member {
                name,
                citizen_id,
                relation,
            }
        });
    let data = (
        text(),
        text(),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::collection::vec(member, 0..6),
    )
        .prop_map(
            |(head_name, head_citizen_id, phone, account_number, members)| PersonalData {
                head_name,
                head_citizen_id,
                phone,
                account_number,
                members,
            },
        );
    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    runner
        .run(&data, |data| {
            let sealed = vault.seal("hh-p", &data).unwrap();
            prop_assert_eq!(
                sealed.len(),
                SEALED_OVERHEAD + serde_json::to_vec(&data).unwrap().len()
            );
            prop_assert_eq!(vault.open_sealed("hh-p", &sealed).unwrap(), data);
            Ok(())
        })
        .unwrap();
}

#[test]
fn concurrent_first_seals_share_one_key() {
    let env = Env::new();
    let (_db, vault) = env.open();
    let blobs: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| vault.seal("hh-race", &sample()).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for blob in &blobs {
        assert_eq!(vault.open_sealed("hh-race", blob).unwrap(), sample());
    }
}

#[test]
fn concurrent_vault_opens_agree_on_secrets() {
    let env = Env::new();
    let db = env.db.clone();
    let indexes: Vec<[u8; 32]> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Vault::open(&db, &env.secrets).unwrap().blind_index("x")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(indexes.windows(2).all(|w| w[0] == w[1]));
}
