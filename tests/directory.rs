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
