//! Citizen claims against a real nats-server: claims gathered into frames, one message
//! per shard and round, fenced on the shard's last sequence, keep compare-and-set
//! semantics: of two households claiming one citizen exactly one wins, whether both
//! claims meet in one frame or come through two processes.

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
async fn ledgers_opening_one_new_claims_stream_at_once_all_open_it() {
    let js = async_nats::jetstream::new(client().await);
    let stream = fresh_log().stream_name;
    let opened = futures::future::join_all((0..4).map(|_| Claims::open(&js, &stream, 1))).await;
    for claims in opened {
        let claims = claims.expect("every opener gets the bucket");
        claims.claim("0100007-000001", &[citizen(1)]).await.unwrap();
    }
}

/// Two processes (connections of their own, each with its shard tasks) claiming at once:
/// their frames meet at the fence, the loser folds the winner's frame and decides
/// again, so every contested citizen ends in exactly one household, and each process
/// then answers who holds it from what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_processes_claiming_one_citizen_at_once_exactly_one_wins() {
    let stream = fresh_log().stream_name;
    let a = Claims::open(&async_nats::jetstream::new(client().await), &stream, 1)
        .await
        .unwrap();
    let b = Claims::open(&async_nats::jetstream::new(client().await), &stream, 1)
        .await
        .unwrap();
    const CONTESTED: u32 = 200;
    let side = |claims: Claims, name: u32| {
        futures::future::join_all((0..CONTESTED).map(move |k| {
            let claims = claims.clone();
            async move {
                let household = format!("0{name}00007-{k:06}");
                (
                    k,
                    household.clone(),
                    claims.claim(&household, &[citizen(k)]).await,
                )
            }
        }))
    };
    let (from_a, from_b) = tokio::join!(side(a.clone(), 1), side(b.clone(), 2));
    for ((k, house_a, got_a), (_, house_b, got_b)) in from_a.into_iter().zip(from_b) {
        let winner = match (got_a, got_b) {
            (Ok(taken), Err(ClaimError::Held { holder })) => {
                assert_eq!((taken.len(), &holder), (1, &house_a), "citizen {k}");
                house_a
            }
            (Err(ClaimError::Held { holder }), Ok(taken)) => {
                assert_eq!((taken.len(), &holder), (1, &house_b), "citizen {k}");
                house_b
            }
            (x, y) => panic!("citizen {k}: {x:?} / {y:?}"),
        };
        for claims in [&a, &b] {
            assert_eq!(
                claims.holder(&citizen(k)).await.unwrap(),
                Some(winner.clone())
            );
        }
    }
}

/// A process that opens later folds every frame; one that was open all along learns of
/// another's claims when it asks, or when its own frame meets the fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_folded_at_open_and_seen_from_every_process() {
    let stream = fresh_log().stream_name;
    let js = async_nats::jetstream::new(client().await);
    let first = Claims::open(&js, &stream, 1).await.unwrap();
    let early = Claims::open(&js, &stream, 1).await.unwrap();
    for k in 0..64 {
        first
            .claim(&format!("0100007-{k:06}"), &[citizen(5_000 + k)])
            .await
            .unwrap();
    }
    first
        .release("0100007-000003", &[citizen(5_003)])
        .await
        .unwrap();
    // `early` has folded nothing since it opened: its frame meets the fence, and the
    // claim is decided again on what it then folds.
    assert!(matches!(
        early.claim("0200001-000001", &[citizen(5_020)]).await,
        Err(ClaimError::Held { holder }) if holder == "0100007-000020"
    ));
    let late = Claims::open(&js, &stream, 1).await.unwrap();
    for claims in [&late, &early] {
        assert_eq!(
            claims.holder(&citizen(5_010)).await.unwrap().as_deref(),
            Some("0100007-000010")
        );
        assert_eq!(claims.holder(&citizen(5_003)).await.unwrap(), None);
    }
    assert_eq!(
        late.claim("0200001-000001", &[citizen(5_003)])
            .await
            .unwrap(),
        vec![citizen(5_003)]
    );
}

/// The claims an earlier version kept in its bucket are the first frames of their
/// shards: held citizens stay held, released ones are free, and opening again copies
/// nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_of_the_earlier_bucket_are_carried_into_the_frames_once() {
    let stream = fresh_log().stream_name;
    let js = async_nats::jetstream::new(client().await);
    let bucket = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: ansinh::claims::bucket_name(&stream),
            history: 8,
            ..Default::default()
        })
        .await
        .unwrap();
    let key = |n: u32| hex::encode(citizen(n));
    for n in 0..40 {
        bucket
            .put(key(n), format!("0100007-{n:06}").into())
            .await
            .unwrap();
    }
    // Released in the bucket: an empty value.
    bucket.put(key(7), bytes::Bytes::new()).await.unwrap();
    let claims = Claims::open(&js, &stream, 1).await.unwrap();
    assert_eq!(
        claims.holder(&citizen(12)).await.unwrap().as_deref(),
        Some("0100007-000012")
    );
    assert_eq!(claims.holder(&citizen(7)).await.unwrap(), None);
    assert!(matches!(
        claims.claim("0200001-000001", &[citizen(12)]).await,
        Err(ClaimError::Held { .. })
    ));
    let frames = || frames_of(&js, &stream);
    let copied = frames().await;
    assert!(copied > 0);
    let again = Claims::open(&js, &stream, 1).await.unwrap();
    assert_eq!(frames().await, copied);
    assert_eq!(
        again.holder(&citizen(39)).await.unwrap().as_deref(),
        Some("0100007-000039")
    );
}

/// How many frames the claims stream of `stream` holds.
async fn frames_of(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    js.get_stream(ansinh::claims::stream_name(stream))
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// A copy from the earlier bucket that did not finish (a shard already holds frames: a
/// copy cut short, or a claim served by another process meanwhile) is finished by the
/// next open, which copies what the frames lack and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_earlier_bucket_cut_short_is_finished_by_the_next_open() {
    let stream = fresh_log().stream_name;
    let js = async_nats::jetstream::new(client().await);
    // A frame is on the shard before the copy: citizen 0, held already.
    let first = Claims::open(&js, &stream, 1).await.unwrap();
    first.claim("0100007-000000", &[citizen(0)]).await.unwrap();
    let bucket = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: ansinh::claims::bucket_name(&stream),
            history: 8,
            ..Default::default()
        })
        .await
        .unwrap();
    for n in 0..40 {
        bucket
            .put(hex::encode(citizen(n)), format!("0100007-{n:06}").into())
            .await
            .unwrap();
    }
    let claims = Claims::open(&js, &stream, 1).await.unwrap();
    for n in [0, 1, 39] {
        assert_eq!(
            claims.holder(&citizen(n)).await.unwrap(),
            Some(format!("0100007-{n:06}")),
            "citizen {n}"
        );
    }
    let frames = || frames_of(&js, &stream);
    let copied = frames().await;
    assert_eq!(
        copied, 2,
        "the claim served, then one frame of the other 39"
    );
    Claims::open(&js, &stream, 1).await.unwrap();
    assert_eq!(frames().await, copied, "copied once");
}

/// Four processes claiming at once, as four `serve` processes in a registration
/// campaign: every claim is decided (none gives up contended), and each contested
/// citizen ends in exactly one household.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_claiming_at_once_all_get_answers() {
    let stream = fresh_log().stream_name;
    let mut processes = Vec::new();
    for _ in 0..4 {
        let js = async_nats::jetstream::new(client().await);
        processes.push(Claims::open(&js, &stream, 1).await.unwrap());
    }
    const OWN: u32 = 150;
    const SHARED: u32 = 40;
    let outcomes =
        futures::future::join_all(processes.iter().enumerate().flat_map(|(p, claims)| {
            (0..OWN + SHARED).map(move |k| async move {
                let household = format!("0{}00007-{k:06}", p + 1);
                let who = if k < OWN {
                    citizen(100_000 * (p as u32 + 1) + k)
                } else {
                    citizen(900_000 + k)
                };
                (k, claims.claim(&household, &[who]).await)
            })
        }))
        .await;
    let mut shared_held = vec![0u32; SHARED as usize];
    for (k, outcome) in outcomes {
        match outcome {
            Ok(taken) if k >= OWN => shared_held[(k - OWN) as usize] += taken.len() as u32,
            Ok(taken) => assert_eq!(taken.len(), 1, "own citizen {k}"),
            Err(ClaimError::Held { .. }) if k >= OWN => {}
            Err(e) => panic!("citizen {k}: {e}"),
        }
    }
    assert_eq!(shared_held, vec![1; SHARED as usize]);
}

/// A message on a claims subject that no ledger process wrote (not a frame) is skipped
/// by the fold at open and by a running process's catch-up alike: the claims before and
/// after it hold, and claiming goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_message_among_the_frames_is_skipped_and_claiming_goes_on() {
    let stream = fresh_log().stream_name;
    let js = async_nats::jetstream::new(client().await);
    let running = Claims::open(&js, &stream, 1).await.unwrap();
    running
        .claim("0100007-000001", &[citizen(1)])
        .await
        .unwrap();
    js.publish(
        format!("ansinh.claims.{stream}.00"),
        bytes::Bytes::from_static(b"\x07not a frame"),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // The running process's frame meets the fence, folds past the foreign message.
    assert_eq!(
        running
            .claim("0100007-000002", &[citizen(2)])
            .await
            .unwrap(),
        vec![citizen(2)]
    );
    let opened = Claims::open(&js, &stream, 1).await.unwrap();
    for (n, household) in [(1, "0100007-000001"), (2, "0100007-000002")] {
        assert_eq!(
            opened.holder(&citizen(n)).await.unwrap().as_deref(),
            Some(household)
        );
    }
    assert!(matches!(
        opened.claim("0200001-000001", &[citizen(1)]).await,
        Err(ClaimError::Held { .. })
    ));
}

/// Two processes (connections and shard tasks of their own) opened on one new stream.
async fn two_processes() -> (String, Claims, Claims) {
    let stream = fresh_log().stream_name;
    let a = Claims::open(&async_nats::jetstream::new(client().await), &stream, 1)
        .await
        .unwrap();
    let b = Claims::open(&async_nats::jetstream::new(client().await), &stream, 1)
        .await
        .unwrap();
    (stream, a, b)
}

/// A release through a process that never folded the claim it releases (opened before
/// the claim, and it asked nothing since) still frees the citizen: a round whose
/// decisions change nothing is decided again on what is stored before it is answered,
/// so the release is published (an erasure through that process would otherwise keep
/// its citizens held for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_through_a_process_that_never_saw_the_claim_frees_the_citizen() {
    let (stream, a, b) = two_processes().await;
    let c = citizen(1);
    assert_eq!(a.claim("0100007-000001", &[c]).await.unwrap(), vec![c]);
    b.release("0100007-000001", &[c]).await.unwrap();
    assert_eq!(a.holder(&c).await.unwrap(), None);
    let fresh = Claims::open(&async_nats::jetstream::new(client().await), &stream, 1)
        .await
        .unwrap();
    assert_eq!(
        fresh.holder(&c).await.unwrap(),
        None,
        "the release is stored"
    );
    assert_eq!(fresh.claim("7900001-000001", &[c]).await.unwrap(), vec![c]);
}

/// A process whose fold still says a citizen is its household's (released and claimed
/// by another household through another process since) refuses the claim again rather
/// than answering it from the stale fold: the citizen would be in two households.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_a_stale_fold_says_is_held_already_is_decided_on_what_is_stored() {
    let stream = fresh_log().stream_name;
    let a = Claims::open(&async_nats::jetstream::new(client().await), &stream, 1)
        .await
        .unwrap();
    let c = citizen(2);
    assert_eq!(a.claim("0100007-000001", &[c]).await.unwrap(), vec![c]);
    let b = Claims::open(&async_nats::jetstream::new(client().await), &stream, 1)
        .await
        .unwrap();
    b.release("0100007-000001", &[c]).await.unwrap();
    assert_eq!(b.claim("0100007-000009", &[c]).await.unwrap(), vec![c]);
    assert!(
        matches!(
            a.claim("0100007-000001", &[c]).await,
            Err(ClaimError::Held { ref holder }) if holder == "0100007-000009"
        ),
        "a stale fold admitted a citizen of another household"
    );
    assert_eq!(
        a.holder(&c).await.unwrap().as_deref(),
        Some("0100007-000009")
    );
}
