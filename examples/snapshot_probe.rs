//! Times the encoding and decoding of a writer's book snapshot of N households
//! (registered, one citizen each, classified): `cargo run --release --example
//! snapshot_probe -- 200000`.

use std::time::Instant;

// As in the binary and the benches.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ansinh::book::{PartitionBook, RecordedStanding, snapshot};
use ansinh::domain::eligibility::Area;
use ansinh::domain::ids::HouseholdId;
use ansinh::domain::registry::{Household, Residence};
use ansinh::proto;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let mut book = PartitionBook::new("01");
    let day = chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    for i in 0..n {
        let id = HouseholdId::parse(&format!("01{:05}-{i:06}", 7 + i % 40)).unwrap();
        let citizen: [u8; 32] = *blake3::hash(&i.to_be_bytes()).as_bytes();
        book.registry.citizens.insert(citizen, id.clone());
        book.registry.households.insert(
            id.clone(),
            Household {
                id: id.clone(),
                area: Area::Rural,
                members: 1,
                citizens: [citizen].into_iter().collect(),
                residence: Residence::Active,
                since: day,
                erased: false,
                died: Default::default(),
            },
        );
        book.standings.insert(
            id.clone(),
            RecordedStanding::of(&proto::EligibilityDecided {
                household_id: id.to_string(),
                review_year: 2026,
                income_per_person_vnd: "1200000".into(),
                area: "rural".into(),
                deprived_indicators: vec!["employment".into(), "nutrition".into()],
                standard_id: "VN-MDP-2022-2025".into(),
                standard_hash: "ab".repeat(32),
                class: "poor".into(),
                decided_on: "2026-01-10".into(),
                valid_from: "2026-01-10".into(),
                valid_to: "2026-12-31".into(),
                prior_class: String::new(),
                status: "poor".into(),
                escaped_until: String::new(),
                corrects: 0,
                validity_rule: 1,
            }),
        );
    }
    let started = Instant::now();
    let bytes = snapshot::encode(&book);
    let encoded = started.elapsed();
    let started = Instant::now();
    let back = snapshot::decode(&bytes).unwrap();
    let decoded = started.elapsed();
    let started = Instant::now();
    let again = snapshot::encode(&book);
    let reencoded = started.elapsed();
    assert_eq!(again, bytes);
    assert!(back == book);
    println!(
        "{n} households: {} bytes ({:.0} B each), encode {:.3} s, decode {:.3} s, encode again {:.3} s",
        bytes.len(),
        bytes.len() as f64 / n as f64,
        encoded.as_secs_f64(),
        decoded.as_secs_f64(),
        reencoded.as_secs_f64()
    );
}
