//! The ledger's directory of staff and gateway keys, in its bucket on a real nats-server:
//! a change made through one process is in force in another once applied, a change that
//! would make the directory invalid is refused, and the files of earlier versions are
//! imported once.

mod common;

use ansinh::access::Role;
use ansinh::directory::Directory;
use ansinh::gateway::keys::{GatewayKey, Registry};
use ansinh::http;
use common::*;

fn gateway_key(id: &str, seed: u8) -> GatewayKey {
    let pair = ansinh::checkpoint::sign::KeyPair::from_seed(&[seed; 32]);
    GatewayKey {
        gateway_id: id.into(),
        key_id: pair.key_id().into(),
        public_key: pair.public_key(),
    }
}

async fn open(config: &ansinh::log::LogConfig) -> Directory {
    let js = async_nats::jetstream::new(client().await);
    Directory::open(&js, &config.stream_name, 1).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_key_added_through_one_process_is_in_force_in_another() {
    let config = fresh_log();
    let (serving, operator) = (open(&config).await, open(&config).await);
    assert!(!serving.gateways().current().has_gateway("vcb"));
    let revision = operator
        .add_gateway_key(&gateway_key("vcb", 1))
        .await
        .unwrap();
    serving.applied(revision).await;
    assert!(serving.gateways().current().has_gateway("vcb"));
    // The same key twice, or a key whose id is not its own, is refused unwritten.
    assert!(
        operator
            .add_gateway_key(&gateway_key("vcb", 1))
            .await
            .is_err()
    );
    let mut forged = gateway_key("momo", 2);
    forged.key_id = "0000000000000000".into();
    assert!(operator.add_gateway_key(&forged).await.is_err());
    // The auditor's inbox is not a gateway's to take.
    assert!(matches!(
        operator.add_gateway_key(&gateway_key("auditor", 3)).await,
        Err(ansinh::directory::DirectoryError::Registry(
            ansinh::gateway::keys::RegistryError::ReservedGatewayId(_)
        ))
    ));
    // A process opened later loads what is there.
    assert_eq!(
        open(&config).await.gateways().current().gateways(),
        vec!["vcb"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_of_an_earlier_version_are_imported_once() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let staff_file = dir.path().join(http::STAFF_FILE);
    let token = http::auth::add_staff(&staff_file, "staff:lan", Role::Teller, "0100007").unwrap();
    let registry_file = dir.path().join(ansinh::gateway::keys::REGISTRY_FILE);
    Registry::new(vec![gateway_key("vcb", 3)])
        .unwrap()
        .save(&registry_file)
        .unwrap();
    let directory = open(&config).await;
    assert_eq!(
        directory
            .import_files(&staff_file, &registry_file)
            .await
            .unwrap(),
        (1, 1)
    );
    // In this process's views as soon as the import returns: a second import checks
    // against them (it once found the key missing there and failed to create it again).
    assert!(directory.gateways().current().has_gateway("vcb"));
    assert!(directory.staff().current().authenticate(&token).is_some());
    assert_eq!(
        directory
            .import_files(&staff_file, &registry_file)
            .await
            .unwrap(),
        (0, 0),
        "nothing twice"
    );
    let later = open(&config).await;
    let caller = later
        .staff()
        .current()
        .authenticate(&token)
        .cloned()
        .unwrap();
    assert_eq!(
        (caller.id.as_str(), caller.role),
        ("staff:lan", Role::Teller)
    );
    assert!(later.gateways().current().has_gateway("vcb"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_or_gateway_key_is_not_imported_again() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let staff_file = dir.path().join(http::STAFF_FILE);
    let token = http::auth::add_staff(&staff_file, "staff:lan", Role::Teller, "0100007").unwrap();
    let registry_file = dir.path().join(ansinh::gateway::keys::REGISTRY_FILE);
    let key = gateway_key("vcb", 4);
    Registry::new(vec![key.clone()])
        .unwrap()
        .save(&registry_file)
        .unwrap();
    let directory = open(&config).await;
    assert_eq!(
        directory
            .import_files(&staff_file, &registry_file)
            .await
            .unwrap(),
        (1, 1)
    );
    assert!(directory.remove_staff("staff:lan").await.unwrap().is_some());
    let revision = directory
        .remove_gateway_key(&key.key_id)
        .await
        .unwrap()
        .expect("the key was there");
    directory.applied(revision).await;
    assert!(!directory.gateways().current().has_gateway("vcb"));
    assert_eq!(
        directory.remove_gateway_key(&key.key_id).await.unwrap(),
        None,
        "a key removed is no longer there to remove"
    );
    // Both files still list them, as they do at every `serve` start.
    assert_eq!(
        directory
            .import_files(&staff_file, &registry_file)
            .await
            .unwrap(),
        (0, 0),
        "a removal sticks"
    );
    let later = open(&config).await;
    assert!(later.staff().current().authenticate(&token).is_none());
    assert!(!later.gateways().current().has_gateway("vcb"));
}

/// `ansinh admin add-gateway` against a running ledger: when it returns, the key is in
/// the ledger's directory, so a process serving gateways (which follows the directory)
/// takes it without an import or a restart, and a process opened later loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_gateway_puts_the_key_in_the_directory_running_processes_follow() {
    let config = fresh_log();
    let serving = open(&config).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("vcb.key");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ansinh"))
        .arg("--json")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--nats", &server_url()])
        .args(["--stream", &config.stream_name])
        .args(["--subject-prefix", &config.subject_prefix])
        .args(["admin", "add-gateway", "--id", "vcb", "--key-out"])
        .arg(&key_file)
        .env_remove("ANSINH_NATS_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key_id = added["key_id"].as_str().unwrap();
    let pair = ansinh::gateway::keys::load_key(&key_file).unwrap();
    assert_eq!(pair.key_id(), key_id);

    let later = open(&config).await;
    let registered = later.gateways().current().key(key_id).cloned();
    assert_eq!(
        registered.map(|k| (k.gateway_id, k.public_key)),
        Some(("vcb".to_owned(), pair.public_key())),
        "{added}"
    );
    let revision = added["directory_revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("the revision of the directory's write: {added}"));
    serving.applied(revision).await;
    assert!(serving.gateways().current().key(key_id).is_some());
    // The directory is the record: no file of keys is left in the data directory.
    assert!(
        !dir.path()
            .join("data")
            .join(ansinh::gateway::keys::REGISTRY_FILE)
            .exists()
    );
}

/// The bucket itself, as another writer (an earlier version, another operator) sees it.
async fn bucket(config: &ansinh::log::LogConfig) -> async_nats::jetstream::kv::Store {
    async_nats::jetstream::new(client().await)
        .get_key_value(ansinh::directory::bucket_name(&config.stream_name))
        .await
        .unwrap()
}

/// A staff entry as the staff file and the bucket hold it, for `token`.
fn staff_entry(id: &str, token: &str) -> bytes::Bytes {
    serde_json::to_vec(&serde_json::json!({
        "token_blake3": http::auth::token_hash(token).to_hex().to_string(),
        "id": id,
        "role": "teller",
        "unit": "0100007",
    }))
    .unwrap()
    .into()
}

/// How many operators run `admin add-staff` (or `serve` starts) at once below: enough
/// that, with a check apart from the write, two of them would pass the check together.
const AT_ONCE: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_of_one_staff_id_at_once_accept_one_and_every_process_still_opens() {
    let config = fresh_log();
    let mut operators = Vec::new();
    for _ in 0..AT_ONCE {
        operators.push(open(&config).await);
    }
    let outcomes = futures::future::join_all(
        operators
            .iter()
            .map(|d| d.add_staff("staff:an", Role::Teller, "0100007")),
    )
    .await;
    let accepted: Vec<String> = outcomes
        .into_iter()
        .filter_map(|o| o.ok().map(|(token, _)| token))
        .collect();
    assert_eq!(accepted.len(), 1, "one id, one member: one add is told yes");
    // A process started afterwards opens the directory (it once refused to, and with it
    // every `serve` and admin command) and accepts the token it was told of.
    let later = open(&config).await;
    let staff = later.staff().current();
    assert_eq!(staff.len(), 1);
    assert_eq!(
        staff.authenticate(&accepted[0]).map(|c| c.id.as_str()),
        Some("staff:an")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_starting_together_each_import_the_files_without_failing() {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let staff_file = dir.path().join(http::STAFF_FILE);
    let token = http::auth::add_staff(&staff_file, "staff:lan", Role::Teller, "0100007").unwrap();
    let registry_file = dir.path().join(ansinh::gateway::keys::REGISTRY_FILE);
    Registry::new(vec![gateway_key("vcb", 5)])
        .unwrap()
        .save(&registry_file)
        .unwrap();
    let mut serves = Vec::new();
    for _ in 0..AT_ONCE {
        serves.push(open(&config).await);
    }
    let imports = futures::future::join_all(
        serves
            .iter()
            .map(|d| d.import_files(&staff_file, &registry_file)),
    )
    .await;
    let mut added = (0, 0);
    for import in imports {
        let (staff, gateways) = import.expect("finding the entry already there is no failure");
        added = (added.0 + staff, added.1 + gateways);
    }
    assert_eq!(added, (1, 1), "each entry written once");
    let later = open(&config).await;
    assert!(later.staff().current().authenticate(&token).is_some());
    assert!(later.gateways().current().has_gateway("vcb"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_entry_is_refused_alone_and_every_other_stays_in_force() {
    let config = fresh_log();
    let serving = open(&config).await;
    let (first, _) = serving
        .add_staff("staff:an", Role::Teller, "0100007")
        .await
        .unwrap();
    serving
        .add_gateway_key(&gateway_key("vcb", 6))
        .await
        .unwrap();
    // What an earlier version could leave, keyed by token hash: a second entry for an id
    // (two add-staff that raced), an entry that is not one, a gateway key that is not
    // one; then good entries after them.
    let kv = bucket(&config).await;
    let raced = "ansinh_raced";
    let legacy = |token: &str| format!("staff.{}", http::auth::token_hash(token).to_hex());
    kv.put(legacy(raced), staff_entry("staff:an", raced))
        .await
        .unwrap();
    kv.put(legacy("ansinh_garbled"), "{not json".into())
        .await
        .unwrap();
    kv.put(
        "gateway.0000000000000000",
        serde_json::to_vec(&serde_json::json!({
            "id": "momo", "public_key": "00", "key_id": "0000000000000000"
        }))
        .unwrap()
        .into(),
    )
    .await
    .unwrap();
    let binh = "ansinh_binh";
    kv.put(legacy(binh), staff_entry("staff:binh", binh))
        .await
        .unwrap();
    let last = kv
        .create(
            format!("gateway.{}", gateway_key("momo", 7).key_id),
            serde_json::to_vec(&serde_json::json!({
                "id": "momo",
                "public_key": hex::encode(gateway_key("momo", 7).public_key),
                "key_id": gateway_key("momo", 7).key_id,
            }))
            .unwrap()
            .into(),
        )
        .await
        .unwrap();
    serving.applied(last).await;
    // The running process and one started now agree: the first entry of an id holds it,
    // the later one and the broken ones are refused, the good ones are in force.
    let later = open(&config).await;
    for directory in [&serving, &later] {
        let staff = directory.staff().current();
        assert_eq!(
            staff.authenticate(&first).map(|c| c.id.as_str()),
            Some("staff:an")
        );
        assert!(staff.authenticate(raced).is_none());
        assert_eq!(
            staff.authenticate(binh).map(|c| c.id.as_str()),
            Some("staff:binh")
        );
        let gateways = directory.gateways().current();
        assert!(gateways.has_gateway("vcb") && gateways.has_gateway("momo"));
    }
    // Removing the member removes both of its entries: the refused one does not step in.
    let removed = later.remove_staff("staff:an").await.unwrap().unwrap();
    serving.applied(removed).await;
    for directory in [&serving, &open(&config).await] {
        let staff = directory.staff().current();
        assert!(staff.authenticate(&first).is_none());
        assert!(staff.authenticate(raced).is_none());
        assert!(staff.by_id("staff:an").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_token_ends_the_old_one_and_an_id_held_in_the_old_layout_is_taken() {
    let config = fresh_log();
    let operator = open(&config).await;
    let (old, _) = operator
        .add_staff("staff:an", Role::Teller, "0100007")
        .await
        .unwrap();
    operator.remove_staff("staff:an").await.unwrap().unwrap();
    let (new, _) = operator
        .add_staff("staff:an", Role::Teller, "0100007")
        .await
        .expect("a removed id can be given a new token");
    let staff = open(&config).await.staff().current();
    assert!(staff.authenticate(&old).is_none());
    assert!(staff.authenticate(&new).is_some());
    // An id an earlier version's entry holds is taken like any other.
    let kv = bucket(&config).await;
    let binh = "ansinh_binh";
    let revision = kv
        .put(
            format!("staff.{}", http::auth::token_hash(binh).to_hex()),
            staff_entry("staff:binh", binh),
        )
        .await
        .unwrap();
    operator.applied(revision).await;
    assert!(
        operator
            .add_staff("staff:binh", Role::Teller, "0100007")
            .await
            .is_err()
    );
    assert_eq!(
        open(&config)
            .await
            .staff()
            .current()
            .authenticate(binh)
            .map(|c| c.id.as_str()),
        Some("staff:binh")
    );
}
