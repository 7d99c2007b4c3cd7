//! Behaviour of the personal-data vault through its public API.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use ansinh::personal::{
    KeyStatus, MAX_HOUSEHOLD_ID_LEN, MAX_PLAINTEXT_LEN, MAX_SEALED_LEN, Member, PAGE_KEYS_MAX,
    POOL_REFILL_KEYS_MAX, PersonalData, PooledKeyRef, SEALED_OVERHEAD, SEALED_PAGED_VERSION,
    SEALED_POOLED_VERSION, Vault, VaultError, pooled_key_of,
};
mod common;

use common::{client, fresh_log};
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

/// One runtime for every test of this binary: the vault's bucket writer and the NATS
/// client run as tasks on it between the calls a test blocks on.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
});

fn block<F: std::future::Future>(future: F) -> F::Output {
    RUNTIME.block_on(future)
}

/// One ledger's vault bucket (on the binary's nats-server) and a secrets file.
struct Env {
    _dir: tempfile::TempDir,
    js: async_nats::jetstream::Context,
    stream: String,
    secrets: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let js = block(async { async_nats::jetstream::new(client().await) });
        Env {
            js,
            stream: fresh_log().stream_name,
            secrets: dir.path().join("vault.secret"),
            _dir: dir,
        }
    }

    /// A process's vault: opened anew each time, over the same bucket.
    fn open(&self) -> Vault {
        self.open_with(&self.secrets).unwrap()
    }

    fn open_with(&self, secrets: &Path) -> Result<Vault, VaultError> {
        block(Vault::open(&self.js, &self.stream, 1, secrets))
    }

    /// The vault's bucket, read and written behind the vault's back.
    fn bucket(&self) -> async_nats::jetstream::kv::Store {
        block(
            self.js
                .get_key_value(ansinh::personal::bucket_name(&self.stream)),
        )
        .unwrap()
    }

    /// What the bucket holds at a household's key.
    fn stored(&self, household: &str) -> Option<Vec<u8>> {
        let kv = self.bucket();
        block(kv.get(format!("hh.{household}")))
            .unwrap()
            .map(|b| b.to_vec())
    }
}

/// When the key of `blob` was erased, or None if the blob opens or fails otherwise.
fn erased_at(vault: &Vault, household: &str, blob: &[u8]) -> Option<i64> {
    match block(vault.open_sealed(household, blob)) {
        Err(VaultError::Erased { erased_at_unix_ms }) => Some(erased_at_unix_ms),
        _ => None,
    }
}

#[test]
fn round_trip() {
    let env = Env::new();
    let vault = env.open();
    assert_eq!(block(vault.key_status("hh-1")).unwrap(), KeyStatus::NoKey);
    let data = sample();
    let sealed = block(vault.seal("hh-1", &data)).unwrap();
    assert_eq!(block(vault.key_status("hh-1")).unwrap(), KeyStatus::Active);
    assert_eq!(sealed[0], 1);
    assert_eq!(block(vault.open_sealed("hh-1", &sealed)).unwrap(), data);
    // A second seal reuses the household's key.
    let other = PersonalData {
        phone: None,
        members: vec![],
        ..data.clone()
    };
    let sealed2 = block(vault.seal("hh-1", &other)).unwrap();
    assert_eq!(block(vault.open_sealed("hh-1", &sealed2)).unwrap(), other);
    assert_eq!(block(vault.open_sealed("hh-1", &sealed)).unwrap(), data);
}

#[test]
fn round_trip_survives_reopen() {
    let env = Env::new();
    let sealed = {
        let vault = env.open();
        block(vault.seal("hh-1", &sample())).unwrap()
    };
    let vault = env.open();
    assert_eq!(block(vault.open_sealed("hh-1", &sealed)).unwrap(), sample());
}

#[test]
fn sealed_bytes_hold_no_clear_personal_data() {
    let env = Env::new();
    let vault = env.open();
    let sealed = block(vault.seal("hh-1", &sample())).unwrap();
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
    let vault = env.open();
    let sealed = block(vault.seal("hh-1", &sample())).unwrap();
    // Household without a key.
    assert!(matches!(
        block(vault.open_sealed("hh-2", &sealed)),
        Err(VaultError::NoKey)
    ));
    // Household with its own key: the blob still does not open there.
    block(vault.seal("hh-2", &sample())).unwrap();
    assert!(matches!(
        block(vault.open_sealed("hh-2", &sealed)),
        Err(VaultError::Tampered)
    ));
    assert_eq!(block(vault.open_sealed("hh-1", &sealed)).unwrap(), sample());
}

#[test]
fn erasure_makes_data_unreadable_and_leaves_sealed_bytes_unchanged() {
    let env = Env::new();
    let (sealed, digest_before) = {
        let vault = env.open();
        let sealed = block(vault.seal("hh-1", &sample())).unwrap();
        block(vault.seal("hh-keep", &sample())).unwrap();
        let digest = blake3::hash(&sealed);
        let copy = sealed.clone();
        assert!(block(vault.erase("hh-1", 1_700_000_000_123)).unwrap());
        // Erasure touches only the vault: the caller's bytes (and their chain hash) are the same.
        assert_eq!(sealed, copy);
        assert_eq!(blake3::hash(&sealed), digest);
        assert!(matches!(
            block(vault.open_sealed("hh-1", &sealed)),
            Err(VaultError::Erased {
                erased_at_unix_ms: 1_700_000_000_123
            })
        ));
        // Idempotent, first time kept.
        assert!(!block(vault.erase("hh-1", 1_800_000_000_000)).unwrap());
        assert_eq!(
            block(vault.key_status("hh-1")).unwrap(),
            KeyStatus::Erased {
                erased_at_unix_ms: 1_700_000_000_123
            }
        );
        // No new key is created for an erased household.
        assert!(matches!(
            block(vault.seal("hh-1", &sample())),
            Err(VaultError::Erased {
                erased_at_unix_ms: 1_700_000_000_123
            })
        ));
        (sealed, digest)
    };
    // Durable: after reopening, still erased; other households unaffected.
    let vault = env.open();
    assert_eq!(blake3::hash(&sealed), digest_before);
    assert!(matches!(
        block(vault.open_sealed("hh-1", &sealed)),
        Err(VaultError::Erased {
            erased_at_unix_ms: 1_700_000_000_123
        })
    ));
    // The bucket holds the tombstone, not the wrapped key.
    assert_eq!(env.stored("hh-1").unwrap().len(), 9);
    assert_eq!(
        block(vault.key_status("hh-keep")).unwrap(),
        KeyStatus::Active
    );
}

#[test]
fn erasing_unknown_household_records_tombstone() {
    let env = Env::new();
    let vault = env.open();
    assert!(!block(vault.erase("hh-never", 5)).unwrap());
    assert_eq!(
        block(vault.key_status("hh-never")).unwrap(),
        KeyStatus::Erased {
            erased_at_unix_ms: 5
        }
    );
    assert!(matches!(
        block(vault.seal("hh-never", &sample())),
        Err(VaultError::Erased { .. })
    ));
}

#[test]
fn blind_index_stable_across_reopen_and_secret_specific() {
    let env = Env::new();
    let first = {
        let vault = env.open();
        let a = vault.blind_index("001085012345");
        assert_eq!(a, vault.blind_index("001085012345"));
        assert_ne!(a, vault.blind_index("001085012346"));
        assert_eq!(vault.blind_index_hex("001085012345"), hex::encode(a));
        a
    };
    let vault = env.open();
    assert_eq!(vault.blind_index("001085012345"), first);

    // Another secrets file (with another store) gives another index.
    let other = Env::new();
    let vault2 = other.open();
    assert_ne!(vault2.blind_index("001085012345"), first);
}

#[test]
fn sealing_twice_gives_different_ciphertexts() {
    let env = Env::new();
    let vault = env.open();
    let a = block(vault.seal("hh-1", &sample())).unwrap();
    let b = block(vault.seal("hh-1", &sample())).unwrap();
    assert_ne!(a, b);
    assert_ne!(a[1..25], b[1..25], "nonces differ");
    assert_eq!(a.len(), b.len());
    assert_eq!(
        block(vault.open_sealed("hh-1", &a)).unwrap(),
        block(vault.open_sealed("hh-1", &b)).unwrap()
    );
}

#[cfg(unix)]
#[test]
fn secrets_file_created_0600_with_64_bytes() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let _vault = env.open();
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
    assert!(matches!(
        env.open_with(&env.secrets),
        Err(VaultError::SecretsPermissions { mode: 0o644, .. })
    ));
    fs::set_permissions(&env.secrets, fs::Permissions::from_mode(0o400)).unwrap();
    drop(env.open());
}

#[cfg(unix)]
#[test]
fn malformed_secrets_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new();
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
            matches!(env.open_with(&p), Err(VaultError::SecretsInvalid { .. })),
            "{p:?}"
        );
    }
    assert!(matches!(
        env.open_with(dir.path()),
        Err(VaultError::SecretsInvalid { .. } | VaultError::SecretsIo { .. })
    ));
    assert!(matches!(
        env.open_with(&dir.path().join("missing-dir/secret")),
        Err(VaultError::SecretsIo { .. })
    ));
}

#[test]
fn wrong_secrets_file_for_existing_store_is_refused() {
    let env = Env::new();
    drop(env.open());
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path().join("other.secret");
    match env.open_with(&other) {
        Err(e @ VaultError::WrongSecrets { .. }) => {
            // The refusal names the file, so an operator knows which one to replace.
            assert!(e.to_string().contains(other.to_str().unwrap()), "{e}");
        }
        other => panic!("expected WrongSecrets, got {other:?}"),
    }
}

#[test]
fn oversized_personal_data_is_refused_without_creating_a_key() {
    let env = Env::new();
    let vault = env.open();
    let mut data = sample();
    data.members = (0..2000)
        .map(|i| Member {
            name: format!("Thành viên {i}"),
            citizen_id: Some(format!("{i:012}")),
            relation: "con".into(),
        })
        .collect();
    match block(vault.seal("hh-big", &data)) {
        Err(VaultError::PlaintextTooLarge { len, max }) => {
            assert_eq!(max, MAX_PLAINTEXT_LEN);
            assert_eq!(len, serde_json::to_vec(&data).unwrap().len());
        }
        other => panic!("expected PlaintextTooLarge, got {other:?}"),
    }
    assert_eq!(block(vault.key_status("hh-big")).unwrap(), KeyStatus::NoKey);
}

#[test]
fn household_id_is_bounded() {
    let env = Env::new();
    let vault = env.open();
    let long = "h".repeat(MAX_HOUSEHOLD_ID_LEN + 1);
    let max = "h".repeat(MAX_HOUSEHOLD_ID_LEN);
    assert!(matches!(
        block(vault.seal("", &sample())),
        Err(VaultError::InvalidHouseholdId { len: 0 })
    ));
    assert!(matches!(
        block(vault.seal(&long, &sample())),
        Err(VaultError::InvalidHouseholdId { .. })
    ));
    assert!(matches!(
        block(vault.open_sealed(&long, &[1; 60])),
        Err(VaultError::InvalidHouseholdId { .. })
    ));
    assert!(matches!(
        block(vault.erase("", 0)),
        Err(VaultError::InvalidHouseholdId { .. })
    ));
    let sealed = block(vault.seal(&max, &sample())).unwrap();
    assert_eq!(block(vault.open_sealed(&max, &sealed)).unwrap(), sample());
}

#[test]
fn malformed_sealed_inputs_return_errors() {
    let env = Env::new();
    let vault = env.open();
    let sealed = block(vault.seal("hh-1", &sample())).unwrap();

    assert!(matches!(
        block(vault.open_sealed("hh-1", &[])),
        Err(VaultError::Malformed { len: 0 })
    ));
    assert!(matches!(
        block(vault.open_sealed("hh-1", &[1u8; SEALED_OVERHEAD - 1])),
        Err(VaultError::Malformed { .. })
    ));
    // Header and tag only: an empty ciphertext fails authentication.
    assert!(matches!(
        block(vault.open_sealed("hh-1", &[1u8; SEALED_OVERHEAD])),
        Err(VaultError::Tampered)
    ));
    let mut v4 = sealed.clone();
    v4[0] = 4;
    assert!(matches!(
        block(vault.open_sealed("hh-1", &v4)),
        Err(VaultError::UnsupportedVersion { version: 4 })
    ));
    // Versions 2 and 3 name a pooled key: here the nonce's first bytes, a key (a page)
    // never written.
    for version in [2, 3] {
        let mut pooled = sealed.clone();
        pooled[0] = version;
        assert!(matches!(
            block(vault.open_sealed("hh-1", &pooled)),
            Err(VaultError::NoKey)
        ));
    }
    assert!(matches!(
        block(vault.open_sealed("hh-1", &vec![1u8; MAX_SEALED_LEN + 1])),
        Err(VaultError::SealedTooLarge { .. })
    ));

    // Every truncation and extension fails.
    for cut in 0..sealed.len() {
        assert!(
            block(vault.open_sealed("hh-1", &sealed[..cut])).is_err(),
            "cut {cut}"
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert!(matches!(
        block(vault.open_sealed("hh-1", &longer)),
        Err(VaultError::Tampered)
    ));

    // Every single-bit flip fails with a typed error.
    for i in 0..sealed.len() {
        for bit in 0..8 {
            let mut m = sealed.clone();
            m[i] ^= 1 << bit;
            match block(vault.open_sealed("hh-1", &m)) {
                Err(VaultError::UnsupportedVersion { .. }) => assert_eq!(i, 0),
                // 1 ^ 2 = 3: a version-3 blob, whose page was never written.
                Err(VaultError::NoKey) => assert_eq!((i, bit), (0, 1)),
                Err(VaultError::Tampered) => assert!(i > 0),
                other => panic!("byte {i} bit {bit}: {other:?}"),
            }
        }
    }
    assert_eq!(block(vault.open_sealed("hh-1", &sealed)).unwrap(), sample());
}

#[test]
fn arbitrary_sealed_bytes_never_panic() {
    let env = Env::new();
    let vault = env.open();
    let sealed = block(vault.seal("hh-1", &sample())).unwrap();
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
                prop_assert!(block(vault.open_sealed(hh, &input)).is_err());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_personal_data_round_trips() {
    let env = Env::new();
    let vault = env.open();
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
            let sealed = block(vault.seal("hh-p", &data)).unwrap();
            prop_assert_eq!(
                sealed.len(),
                SEALED_OVERHEAD + serde_json::to_vec(&data).unwrap().len()
            );
            prop_assert_eq!(block(vault.open_sealed("hh-p", &sealed)).unwrap(), data);
            Ok(())
        })
        .unwrap();
}

#[test]
fn concurrent_first_seals_in_two_processes_share_one_key() {
    let env = Env::new();
    let (a, b) = (env.open(), env.open());
    let blobs: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .map(|vault| s.spawn(|| block(vault.seal("hh-race", &sample())).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for blob in &blobs {
        assert_eq!(block(a.open_sealed("hh-race", blob)).unwrap(), sample());
        assert_eq!(block(b.open_sealed("hh-race", blob)).unwrap(), sample());
    }
}

#[test]
fn an_erasure_through_one_process_is_final_in_every_other() {
    let env = Env::new();
    let (a, b) = (env.open(), env.open());
    let sealed = block(a.seal("hh-1", &sample())).unwrap();
    assert_eq!(block(b.open_sealed("hh-1", &sealed)).unwrap(), sample());
    assert!(block(b.erase("hh-1", 42)).unwrap());
    assert!(matches!(
        block(a.open_sealed("hh-1", &sealed)),
        Err(VaultError::Erased {
            erased_at_unix_ms: 42
        })
    ));
    assert!(matches!(
        block(a.seal("hh-1", &sample())),
        Err(VaultError::Erased { .. })
    ));
}

#[test]
fn concurrent_vault_opens_agree_on_secrets() {
    let env = Env::new();
    let indexes: Vec<[u8; 32]> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| env.open().blind_index("x")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(indexes.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn blind_index_matches_specified_construction() {
    let env = Env::new();
    let vault = env.open();
    let secrets = fs::read(&env.secrets).unwrap();
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

/// The data key of a household, unwrapped by hand from the bucket with the documented
/// layout and the key-wrapping key of the secrets file.
fn unwrap_by_hand(env: &Env, household: &str) -> [u8; 32] {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
    let wrapped = env.stored(household).expect("a wrapped key");
    assert_eq!((wrapped.len(), wrapped[0]), (73, 1));
    let secrets = fs::read(&env.secrets).unwrap();
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&secrets[..32]));
    let dek = cipher
        .decrypt(
            XNonce::from_slice(&wrapped[1..25]),
            Payload {
                msg: &wrapped[25..],
                aad: household.as_bytes(),
            },
        )
        .expect("the wrapped key opens with the KEK and the household id");
    dek.try_into().unwrap()
}

#[test]
fn sealed_and_wrapped_layouts_are_as_specified_and_the_bucket_holds_no_clear_key() {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
    let env = Env::new();
    let vault = env.open();
    let data = sample();
    let sealed = block(vault.seal("hh-1", &data)).unwrap();
    let json = serde_json::to_vec(&data).unwrap();
    assert_eq!(sealed[0], 1);
    assert_eq!(sealed.len(), SEALED_OVERHEAD + json.len());
    let dek = unwrap_by_hand(&env, "hh-1");
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&dek));
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
    let stored = env.stored("hh-1").unwrap();
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(&dek), "clear data key must not be in the bucket");
}

#[test]
fn corrupt_values_in_the_bucket_are_typed_errors() {
    let env = Env::new();
    let vault = env.open();
    let kv = env.bucket();
    block(kv.put("hh.hh-t", vec![0xE1u8, 1, 2].into())).unwrap();
    block(kv.put("hh.hh-k", vec![1u8; 10].into())).unwrap();
    assert!(matches!(
        block(vault.open_sealed("hh-t", &[1u8; 60])),
        Err(VaultError::StoreCorrupt { .. })
    ));
    assert!(matches!(
        block(vault.seal("hh-k", &sample())),
        Err(VaultError::StoreCorrupt { .. })
    ));
    // A page of pooled keys cut short, or whose slot holds no key wrapped for it.
    let blob = block(vault.seal_new("hh-p", &sample())).unwrap();
    let Some(PooledKeyRef::Paged { page, .. }) = pooled_key_of(&blob) else {
        panic!("a version-3 blob")
    };
    let page = format!("dp.{}", hex::encode(page));
    block(kv.put(&page, vec![1u8; 10].into())).unwrap();
    assert!(matches!(
        block(vault.open_sealed("hh-p", &blob)),
        Err(VaultError::StoreCorrupt { .. })
    ));
    block(kv.put(&page, vec![1u8; 73 * 128].into())).unwrap();
    assert!(matches!(
        block(vault.open_sealed("hh-p", &blob)),
        Err(VaultError::KeyUnwrap)
    ));
    let shown = format!("{vault:?}");
    assert!(
        shown.starts_with("Vault") && !shown.contains("kek"),
        "{shown}"
    );
}

/// `nonce || XChaCha20-Poly1305(key, msg, aad)`, as the documented formats write a
/// wrapped key or sealed data after their version byte: for writing by hand what an
/// earlier version wrote.
fn xchacha(key: &[u8], nonce: &[u8; 24], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
    let mut out = nonce.to_vec();
    out.extend(
        XChaCha20Poly1305::new(Key::from_slice(key))
            .encrypt(XNonce::from_slice(nonce), Payload { msg, aad })
            .unwrap(),
    );
    out
}

/// A store of the version before the shared bucket, written by hand from its documented
/// layout: household `hh-old` keyed (and a blob sealed under its key), `hh-gone` erased.
fn local_store_of_an_earlier_version(env: &Env, dir: &Path) -> (sled::Db, Vec<u8>) {
    let secrets = fs::read(&env.secrets).unwrap();
    let db = sled::open(dir).unwrap();
    let meta = db.open_tree("vault.meta").unwrap();
    meta.insert("format", &[1u8][..]).unwrap();
    let check = blake3::derive_key("ansinh v1 vault secrets check", &secrets);
    meta.insert("secrets_check", &check[..]).unwrap();
    meta.insert(b"erased\0hh-gone", &77i64.to_be_bytes()[..])
        .unwrap();
    let dek = [5u8; 32];
    let nonce = [9u8; 24];
    let mut wrapped = vec![1u8];
    wrapped.extend(xchacha(&secrets[..32], &nonce, &dek, b"hh-old"));
    db.open_tree("vault.keys")
        .unwrap()
        .insert("hh-old", wrapped)
        .unwrap();
    let mut sealed = vec![1u8];
    sealed.extend(xchacha(
        &dek,
        &nonce,
        &serde_json::to_vec(&sample()).unwrap(),
        b"ansinh/v1/personal\0hh-old",
    ));
    (db, sealed)
}

#[test]
fn keys_of_an_earlier_version_move_into_the_shared_vault_once() {
    let env = Env::new();
    let vault = env.open();
    let dir = tempfile::tempdir().unwrap();
    let (db, sealed) = local_store_of_an_earlier_version(&env, dir.path());
    assert!(ansinh::personal::has_local_keys(&db).unwrap());
    // Before the move, no process can open what the old one sealed.
    assert!(matches!(
        block(vault.open_sealed("hh-old", &sealed)),
        Err(VaultError::NoKey)
    ));
    let report = block(vault.migrate_local(&db)).unwrap();
    assert_eq!((report.keys, report.tombstones, report.already), (1, 1, 0));
    assert!(report.conflicts.is_empty());
    // Every process now opens it, the erasure holds, and no local copy is left.
    assert_eq!(
        block(env.open().open_sealed("hh-old", &sealed)).unwrap(),
        sample()
    );
    assert_eq!(
        block(vault.key_status("hh-gone")).unwrap(),
        KeyStatus::Erased {
            erased_at_unix_ms: 77
        }
    );
    assert!(!ansinh::personal::has_local_keys(&db).unwrap());
    // Run again (say the first run's output was lost, or on a copy): nothing moves twice.
    drop(db);
    let dir2 = tempfile::tempdir().unwrap();
    let (db2, _) = local_store_of_an_earlier_version(&env, dir2.path());
    let again = block(vault.migrate_local(&db2)).unwrap();
    assert_eq!((again.keys, again.tombstones, again.already), (0, 0, 2));
    // A store made with other secrets is refused, naming the file.
    let other = Env::new();
    drop(other.open()); // makes its secrets file
    let dir3 = tempfile::tempdir().unwrap();
    let (db3, _) = local_store_of_an_earlier_version(&other, dir3.path());
    let e = block(vault.migrate_local(&db3)).unwrap_err();
    assert!(matches!(e, VaultError::WrongSecrets { .. }), "{e}");
    assert!(ansinh::personal::has_local_keys(&db3).unwrap(), "kept");
}

/// A registration's seal takes a key written ahead (no bucket write of its own): the
/// blob names it and opens in any process; later seals of the household reuse it; one
/// erasure makes every blob unreadable and keeps any key from being made again.
#[test]
fn pooled_keys_seal_new_households_and_one_erasure_removes_them() {
    let env = Env::new();
    let (a, b) = (env.open(), env.open());
    let first = block(a.seal_new("hh-p1", &sample())).unwrap();
    let id = pooled_key_of(&first).expect("a version-3 blob naming its key");
    assert_eq!(first[0], SEALED_PAGED_VERSION);
    // The household has no key of its own: its key is the pooled one.
    assert_eq!(env.stored("hh-p1"), None);
    assert_eq!(block(b.open_sealed("hh-p1", &first)).unwrap(), sample());
    // A blob cannot be moved to another household, whatever key it names.
    assert!(matches!(
        block(b.open_sealed("hh-p2", &first)),
        Err(VaultError::Tampered)
    ));

    let mut changed = sample();
    changed.members.pop();
    let second = block(b.seal_again("hh-p1", &changed, &first)).unwrap();
    assert_eq!(pooled_key_of(&second), Some(id));
    assert_eq!(block(a.open_sealed("hh-p1", &second)).unwrap(), changed);

    // Another household gets another key.
    let other = block(a.seal_new("hh-p2", &sample())).unwrap();
    assert_ne!(pooled_key_of(&other), Some(id));

    assert!(block(b.erase_sealed("hh-p1", Some(&second), 77)).unwrap());
    for blob in [&first, &second] {
        assert!(matches!(
            block(a.open_sealed("hh-p1", blob)),
            Err(VaultError::Erased {
                erased_at_unix_ms: 77
            })
        ));
    }
    assert!(matches!(
        block(a.seal_new("hh-p1", &sample())),
        Err(VaultError::Erased { .. })
    ));
    assert!(matches!(
        block(a.seal_again("hh-p1", &sample(), &first)),
        Err(VaultError::Erased { .. })
    ));
    // Again: nothing more to erase, the first time kept.
    assert!(!block(a.erase_sealed("hh-p1", Some(&first), 99)).unwrap());
    assert_eq!(block(b.open_sealed("hh-p2", &other)).unwrap(), sample());
}

/// Seals from many tasks at once drain and refill the pool many times over (its batches
/// grow to `POOL_REFILL_KEYS_MAX`): every blob has a key of its own, and opens.
#[test]
fn many_registrations_at_once_each_get_their_own_pooled_key() {
    let env = Env::new();
    let vault = std::sync::Arc::new(env.open());
    let count = 3 * POOL_REFILL_KEYS_MAX;
    let blobs = block(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..count {
            let vault = vault.clone();
            set.spawn(async move {
                let household = format!("hh-many-{i}");
                let blob = vault.seal_new(&household, &sample()).await.unwrap();
                (household, blob)
            });
        }
        set.join_all().await
    });
    let ids: std::collections::HashSet<_> = blobs
        .iter()
        .map(|(_, blob)| pooled_key_of(blob).expect("pooled"))
        .collect();
    assert_eq!(ids.len(), count);
    let other = env.open();
    for (household, blob) in blobs.iter().step_by(97) {
        assert_eq!(block(other.open_sealed(household, blob)).unwrap(), sample());
    }
}

/// Keys written ahead share pages (one bucket message holds many): erasing one
/// household tombstones its slot and no other, two erasures in one page at once from two
/// processes both land, and a blob that names another slot of its page does not open.
#[test]
fn households_whose_keys_share_a_page_are_erased_one_by_one() {
    let env = Env::new();
    let (a, b) = (env.open(), env.open());
    // Seals at once run the pool dry, so its pages grow past one key.
    let households: Vec<String> = (0..40).map(|i| format!("hh-page-{i}")).collect();
    let data = sample();
    let sealed = block(futures::future::join_all(
        households.iter().map(|h| a.seal_new(h, &data)),
    ));
    let blobs: Vec<(String, Vec<u8>)> = households
        .into_iter()
        .zip(sealed)
        .map(|(h, blob)| (h, blob.unwrap()))
        .collect();
    /// Each household sealed under a page's key: (slot, household, blob).
    type Slots<'a> = Vec<(u16, &'a str, &'a [u8])>;
    let mut pages: std::collections::HashMap<[u8; 16], Slots> = std::collections::HashMap::new();
    for (household, blob) in &blobs {
        match pooled_key_of(blob) {
            Some(PooledKeyRef::Paged { page, slot }) => {
                pages
                    .entry(page)
                    .or_default()
                    .push((slot, household.as_str(), blob.as_slice()));
            }
            other => panic!("a version-3 blob names a page: {other:?}"),
        }
    }
    let (_, shared) = pages
        .into_iter()
        .max_by_key(|(_, keys)| keys.len())
        .unwrap();
    assert!(
        shared.len() >= 3 && shared.len() <= PAGE_KEYS_MAX,
        "{}",
        shared.len()
    );
    let [(s0, h0, b0), (_, h1, b1), (s2, h2, b2), ..] = shared[..] else {
        unreachable!()
    };

    // Slot numbers are bound to their keys: a blob edited to name its neighbour's slot
    // does not open.
    let mut moved = b2.to_vec();
    moved[17..19].copy_from_slice(&s0.to_be_bytes());
    assert_ne!(s0, s2);
    assert!(matches!(
        block(a.open_sealed(h2, &moved)),
        Err(VaultError::Tampered)
    ));

    // Two processes erase two households of the page at once: both land.
    let (first, second) = block(async {
        tokio::join!(
            a.erase_sealed(h0, Some(b0), 10),
            b.erase_sealed(h1, Some(b1), 11)
        )
    });
    assert!(first.unwrap() && second.unwrap());
    assert_eq!(erased_at(&b, h0, b0), Some(10));
    assert_eq!(erased_at(&b, h1, b1), Some(11));
    // Its neighbours in the page still open, in either process.
    for (_, household, blob) in &shared[2..] {
        assert_eq!(block(b.open_sealed(household, blob)).unwrap(), sample());
        assert_eq!(block(a.open_sealed(household, blob)).unwrap(), sample());
    }
    // Erasing again changes nothing and keeps the first time.
    assert!(!block(b.erase_sealed(h0, Some(b0), 99)).unwrap());
    assert_eq!(erased_at(&a, h0, b0), Some(10));

    // The rest of the page erased at once (a commune's households erased together):
    // every erasure lands.
    let rest = &shared[2..];
    let erased = block(futures::future::join_all(
        rest.iter()
            .map(|(_, household, blob)| a.erase_sealed(household, Some(blob), 12)),
    ));
    assert!(erased.into_iter().all(|e| e.unwrap()));
    for (_, household, blob) in rest {
        assert_eq!(erased_at(&b, household, blob), Some(12));
    }
}

/// Blobs sealed under a pooled key of its own bucket key (sealed version 2, written by
/// earlier versions) still open, take new seals under the same key, and are erased.
#[test]
fn blobs_of_the_earlier_pooled_format_open_and_are_erased() {
    let env = Env::new();
    let vault = env.open();
    // What an earlier version wrote: a key under `dk.<id>`, wrapped under the secrets
    // file's first 32 bytes with that bucket key as AAD, and a blob naming it.
    let secrets = fs::read(&env.secrets).unwrap();
    let (id, dek, nonce) = ([7u8; 16], [9u8; 32], [5u8; 24]);
    let name = format!("dk.{}", hex::encode(id));
    let mut wrapped = vec![1u8];
    wrapped.extend(xchacha(&secrets[..32], &nonce, &dek, name.as_bytes()));
    block(env.bucket().put(&name, wrapped.into())).unwrap();
    let mut old = vec![SEALED_POOLED_VERSION];
    old.extend_from_slice(&id);
    old.extend(xchacha(
        &dek,
        &nonce,
        &serde_json::to_vec(&sample()).unwrap(),
        b"ansinh/v1/personal\0hh-old",
    ));
    assert_eq!(pooled_key_of(&old), Some(PooledKeyRef::Single(id)));
    assert_eq!(block(vault.open_sealed("hh-old", &old)).unwrap(), sample());
    let again = block(vault.seal_again("hh-old", &sample(), &old)).unwrap();
    assert_eq!(pooled_key_of(&again), Some(PooledKeyRef::Single(id)));
    assert!(block(vault.erase_sealed("hh-old", Some(&again), 3)).unwrap());
    assert_eq!(erased_at(&vault, "hh-old", &old), Some(3));
    assert_eq!(erased_at(&vault, "hh-old", &again), Some(3));
}

/// A household with a key of its own (sealed by an earlier version) keeps it: new
/// seals use it, and the erasure removes it.
#[test]
fn a_household_with_its_own_key_keeps_sealing_under_it() {
    let env = Env::new();
    let vault = env.open();
    let old = block(vault.seal("hh-own", &sample())).unwrap();
    assert_eq!(old[0], 1);
    let again = block(vault.seal_again("hh-own", &sample(), &old)).unwrap();
    let new = block(vault.seal_new("hh-own", &sample())).unwrap();
    assert_eq!((again[0], new[0]), (1, 1));
    assert!(block(vault.erase_sealed("hh-own", Some(&again), 5)).unwrap());
    assert!(matches!(
        block(vault.open_sealed("hh-own", &new)),
        Err(VaultError::Erased { .. })
    ));
}
