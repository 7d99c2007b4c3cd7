//! Citizen claims against a real nats-server: claims gathered into atomic batches keep
//! compare-and-set semantics, so of two households claiming one citizen exactly one
//! wins, even when both writes meet in one batch.

mod common;

use ansinh::claims::{ClaimError, Claims};
use common::{client, fresh_log};

fn citizen(n: u32) -> [u8; 32] {
    *blake3::hash(&n.to_be_bytes()).as_bytes()
}

async fn claims() -> Claims {
    let js = async_nats::jetstream::new(client().await);
    Claims::open(&js, &fresh_log().stream_name, 1)
        .await
        .expect("open claims")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_households_claiming_one_citizen_at_once_exactly_one_wins() {
    let claims = claims().await;
    const PAIRS: u32 = 300;
    // Household 2k and 2k+1 both claim citizen k (and one citizen of their own each),
    // all at once, so contested writes share batches with uncontested ones.
    let attempts = (0..PAIRS * 2).map(|h| {
        let claims = claims.clone();
        async move {
            let household = format!("0100007-{h:06}");
            let own = citizen(1_000_000 + h);
            let contested = citizen(h / 2);
            (h, claims.claim(&household, &[own, contested]).await)
        }
    });
    let outcomes = futures::future::join_all(attempts).await;
    let mut winners = vec![None; PAIRS as usize];
    for (h, outcome) in &outcomes {
        match outcome {
            Ok(taken) => {
                assert_eq!(taken.len(), 2, "household {h} took both its citizens");
                let pair = &mut winners[(*h / 2) as usize];
                assert!(pair.is_none(), "two winners for citizen {}", h / 2);
                *pair = Some(*h);
            }
            Err(ClaimError::Held { holder }) => {
                assert_eq!(*holder, format!("0100007-{:06}", h ^ 1), "held by its pair");
            }
            Err(e) => panic!("household {h}: {e}"),
        }
    }
    assert!(winners.iter().all(Option::is_some), "every citizen claimed");
    // A loser released its own citizen again: another household may take it.
    for (h, outcome) in &outcomes {
        if outcome.is_err() {
            let taken = claims
                .claim("7900001-000001", &[citizen(1_000_000 + h)])
                .await
                .expect("a released citizen is free");
            assert_eq!(taken.len(), 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_finds_its_own_claims_and_a_release_frees_them() {
    let claims = claims().await;
    let (a, b) = (citizen(7), citizen(8));
    assert_eq!(
        claims.claim("0100007-000001", &[a, b]).await.unwrap().len(),
        2
    );
    // The same household again (a retried command): nothing new, no refusal.
    assert!(
        claims
            .claim("0100007-000001", &[a, b])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        claims.claim("0100007-000002", &[b]).await,
        Err(ClaimError::Held { .. })
    ));
    claims.release("0100007-000001", &[a, b]).await.unwrap();
    assert_eq!(claims.claim("0100007-000002", &[b]).await.unwrap(), vec![b]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledgers_opening_one_new_bucket_at_once_all_open_it() {
    let js = async_nats::jetstream::new(client().await);
    let stream = fresh_log().stream_name;
    let opened = futures::future::join_all((0..4).map(|_| Claims::open(&js, &stream, 1))).await;
    for claims in opened {
        let claims = claims.expect("every opener gets the bucket");
        claims.claim("0100007-000001", &[citizen(1)]).await.unwrap();
    }
}
