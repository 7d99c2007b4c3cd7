//! `audit rebuild-check` against a real nats-server and real sled stores: a live store
//! equals its rebuild; a value changed behind the projector's back is reported.

mod common;

use ansinh::chain::Partition;
use ansinh::log::Draft;
use ansinh::projection::Projector;
use ansinh::proto::{self, envelope::Payload};
use ansinh::rebuild_check::rebuild_check;

use common::*;

fn registered(household: &str) -> Draft {
    Draft {
        partition: Partition::new("01").unwrap(),
        actor: proto::Actor {
            id: "staff:t".into(),
            role: "credit_officer".into(),
            unit: "0100007".into(),
        },
        idempotency_key: format!("reg:{household}"),
        correlation_id: String::new(),
        request_fingerprint: None,
        subjects: vec![format!("household:{household}"), "commune:0100007".into()],
        payload: Payload::HouseholdRegistered(proto::HouseholdRegistered {
            household_id: household.into(),
            commune_code: "0100007".into(),
            area: "rural".into(),
            members: 3,
            registered_on: "2026-01-05".into(),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_store_equals_its_rebuild_until_a_view_is_changed_behind_its_back() {
    let log = fresh_log();
    let (ledger, _dir) = ledger(&log).await;
    for h in ["0100007-000001", "0100007-000002"] {
        ledger.append_unchecked(registered(h)).await.unwrap();
    }
    ledger.append(note("01", "n1", "Xã Tân Phú")).await.unwrap();
    let db = ledger.store().db();
    let projector = Projector::of_store(ledger.store()).unwrap();
    let mut stream = stream_of(&log).await;

    let report = rebuild_check(&projector, &mut stream, &log).await.unwrap();
    assert!(report.ok(), "{:?}", report.difference);
    assert_eq!(report.position, 3);
    let views = report
        .trees
        .iter()
        .find(|t| t.tree == "proj.views")
        .unwrap();
    assert!(
        views.keys >= 3,
        "two households and a commune: {:?}",
        report.trees
    );

    // Someone edits the live view directly in sled.
    let tree = db.open_tree("proj.views").unwrap();
    let key = "hh/0100007-000002";
    let original = tree.get(key).unwrap().expect("the household view exists");
    // The household's record: its view, and where its sealed data sit.
    let mut record: ansinh::views::HouseholdRecord =
        ansinh::views::decode_record(&original).unwrap();
    assert_eq!(record.view.members, 3, "{record:?}");
    record.view.members = 9;
    let tampered_bytes = ansinh::views::encode_record(&record);
    assert_ne!(tampered_bytes.as_slice(), original.as_ref());
    tree.insert(key, tampered_bytes.as_slice()).unwrap();
    // The report shows a record as JSON with its field names, though the store keeps
    // records without them.
    let printable =
        |bytes: &[u8]| ansinh::rebuild_check::printable("proj.views", key.as_bytes(), bytes);
    let tampered = printable(&tampered_bytes);
    assert!(tampered.contains("\"members\":9"), "{tampered}");
    assert!(!String::from_utf8_lossy(&tampered_bytes).contains("members"));

    let report = rebuild_check(&projector, &mut stream, &log).await.unwrap();
    let d = report.difference.expect("the changed key is reported");
    assert_eq!(d.tree, "proj.views");
    assert_eq!(d.key, key);
    assert_eq!(d.live.as_deref(), Some(tampered.as_str()));
    assert_eq!(d.rebuilt, Some(printable(&original)));

    // A key only the live store has is reported too.
    tree.insert(key, original).unwrap();
    tree.insert("hh/0100007-999999", b"{}".as_slice()).unwrap();
    let d = rebuild_check(&projector, &mut stream, &log)
        .await
        .unwrap()
        .difference
        .expect("the extra key is reported");
    assert_eq!((d.key.as_str(), d.rebuilt), ("hh/0100007-999999", None));
}
