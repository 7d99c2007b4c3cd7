//! Faults of the servers under the ledger, with real nats-servers (loopback, own ports and
//! stores, `sync_interval: always`): the stream leader of a 3-node cluster (stream on
//! three replicas) SIGKILLed mid-load, and a single server SIGKILLed mid-load and
//! restarted. Afterwards every acknowledged event is in one linear chain, byte for byte
//! where its receipt says.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ansinh::app;
use ansinh::chain::Partition;
use ansinh::log::{Draft, Ledger, LedgerStore, LogConfig, Receipt, reader};
use ansinh::nats_server::{NatsServer, Sync};
use ansinh::proto::{self, envelope::Payload};
use tokio::task::JoinHandle;

/// How long the cluster may take to elect its JetStream leaders, and a new stream
/// leader after one is killed.
const ELECTION_WAIT_MAX: Duration = Duration::from_secs(60);
/// Bound on a step after a fault that must end on its own (every append answered, the
/// chain read to its end): past it the test fails naming the step, where it would
/// otherwise wait for ever (seen once, under a heavily loaded machine, with the leader
/// killed).
const FAULT_STEP_MAX: Duration = Duration::from_secs(180);
/// Appending tasks and appends each: the load the leader is killed under.
const WRITERS: u64 = 8;
const APPENDS_PER_WRITER: u64 = 150;
/// Acknowledged appends before the leader is killed.
const KILL_AFTER_ACKS: u64 = 300;

fn note(partition: &Partition, key: String) -> Draft {
    Draft {
        partition: partition.clone(),
        actor: proto::Actor {
            id: "op:1".into(),
            role: "operator".into(),
            unit: String::new(),
        },
        idempotency_key: key,
        correlation_id: String::new(),
        request_fingerprint: None,
        subjects: vec![],
        payload: Payload::Note(proto::Note {
            text: "cluster load".into(),
        }),
    }
}

/// Opens the ledger once the cluster answers: its leaders are elected a moment after
/// the servers start. Polls a condition with a bounded wait; no fixed sleep.
async fn open_ledger(url: &str, config: &LogConfig, store_dir: &std::path::Path) -> Ledger {
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT_MAX;
    loop {
        let client = app::connect(url, &ansinh::app::NatsAuth::default())
            .await
            .expect("connect to the cluster");
        wait_for_meta_leader(&client, deadline).await;
        let store = LedgerStore::open(&store_dir.join("ledger.sled")).expect("open store");
        match Ledger::open(client, config.clone(), store).await {
            Ok((ledger, lost)) => {
                assert!(lost.is_empty(), "{lost:?}");
                return ledger;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("cluster not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the cluster never became ready: {e}"),
        }
    }
}

/// Waits until the cluster's JetStream answers an account query, which its meta leader
/// serves. Asked with a short timeout: a request sent before the election goes unanswered
/// for the context's whole timeout, which would add seconds to every cluster test.
async fn wait_for_meta_leader(client: &async_nats::Client, deadline: tokio::time::Instant) {
    const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(PROBE_TIMEOUT);
    while js.query_account().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster elected no JetStream meta leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stream_leader(ledger: &Ledger) -> Option<String> {
    let mut stream = ledger.stream().clone();
    let info = stream.info().await.ok()?;
    info.cluster.as_ref().and_then(|c| c.leader.clone())
}

/// The load a fault strikes: `WRITERS` tasks appending notes to partition 01 one after
/// another; each returns its receipts and how many appends were refused.
struct Load {
    acked: Arc<AtomicU64>,
    writers: Vec<JoinHandle<(Vec<Receipt>, u64)>>,
}

impl Load {
    fn start(ledger: &Ledger) -> Self {
        let partition = Partition::new("01").unwrap();
        let acked = Arc::new(AtomicU64::new(0));
        let writers = (0..WRITERS)
            .map(|w| {
                let (ledger, partition, acked) = (ledger.clone(), partition.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut receipts: Vec<Receipt> = Vec::new();
                    let mut failed = 0u64;
                    for i in 0..APPENDS_PER_WRITER {
                        match ledger.append(note(&partition, format!("w{w}-{i}"))).await {
                            Ok(r) => {
                                receipts.push(r);
                                acked.fetch_add(1, Ordering::SeqCst);
                            }
                            // Refused while no server answers: the caller's error (it
                            // retries with the same key), not a loss.
                            Err(_) => failed += 1,
                        }
                    }
                    (receipts, failed)
                })
            })
            .collect();
        Load { acked, writers }
    }

    /// Waits until `n` appends are acknowledged; returns how many are.
    async fn acknowledged(&self, n: u64) -> u64 {
        loop {
            let acked = self.acked.load(Ordering::SeqCst);
            if acked >= n {
                return acked;
            }
            tokio::task::yield_now().await;
        }
    }

    async fn finish(self) -> (Vec<Receipt>, u64) {
        let mut receipts = Vec::new();
        let mut failed = 0;
        for w in self.writers {
            let (r, f) = tokio::time::timeout(FAULT_STEP_MAX, w)
                .await
                .expect("every append is answered, landed or refused, after the fault")
                .unwrap();
            receipts.extend(r);
            failed += f;
        }
        eprintln!(
            "{} acknowledged, {failed} refused during the fault",
            receipts.len()
        );
        (receipts, failed)
    }
}

/// Every receipt's event is in the log where the receipt says, with its hash, and the
/// partition is one chain.
async fn every_acknowledged_event_is_there(
    ledger: &Ledger,
    config: &LogConfig,
    receipts: &[Receipt],
) {
    // The first read after a fault may find no responder while the client moves to a
    // live server: a transient error, retried within the bound (a chain that does not
    // verify is not retried).
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT_MAX;
    let mut stream = ledger.stream().clone();
    let report = loop {
        let verified = tokio::time::timeout(
            FAULT_STEP_MAX,
            ansinh::verify::verify(
                &mut stream,
                config,
                &ansinh::checkpoint::CheckpointConfig::default().keys_partition,
                None,
                |_| {},
            ),
        )
        .await
        .expect("the chain is read to its end after the fault");
        match verified {
            Ok(report) => break report,
            Err(ansinh::verify::VerifyError::Nats(e)) if tokio::time::Instant::now() < deadline => {
                eprintln!("reading after the fault: {e}; again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the chain does not verify after the fault: {e}"),
        }
    };
    let events = report.partitions["01"].events;
    assert!(events >= receipts.len() as u64, "{events} events");
    let mut sequences: Vec<u64> = receipts.iter().map(|r| r.sequence).collect();
    sequences.sort_unstable();
    sequences.dedup();
    assert_eq!(
        sequences.len(),
        receipts.len(),
        "no two receipts share a place"
    );
    for r in receipts {
        let stored = reader::at_sequence(ledger.stream(), r.stream_sequence)
            .await
            .expect("read")
            .expect("the acknowledged message is there");
        assert_eq!(stored[r.index as usize].hash, r.hash, "receipt {r:?}");
    }
}

fn cluster_config(name: &str) -> LogConfig {
    LogConfig {
        stream_name: format!("{name}_EVENTS"),
        subject_prefix: format!("{}.events", name.to_lowercase()),
        replicas: 3,
    }
}

fn urls(nodes: &[NatsServer]) -> String {
    nodes
        .iter()
        .map(NatsServer::url)
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_mid_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = NatsServer::start_cluster(dir.path(), 3, Sync::Always).expect("start cluster");
    let config = cluster_config("LEADER");
    let ledger = open_ledger(&urls(&nodes), &config, dir.path()).await;
    let mut stream = ledger.stream().clone();
    assert_eq!(stream.info().await.unwrap().config.num_replicas, 3);

    let load = Load::start(&ledger);
    let acked_before_kill = load.acknowledged(KILL_AFTER_ACKS).await;
    let leader = stream_leader(&ledger)
        .await
        .expect("the stream has a leader");
    let index: usize = leader.trim_start_matches('n').parse().unwrap();
    nodes[index].kill();
    eprintln!("killed the stream leader {leader} after {acked_before_kill} acknowledged appends");
    let (receipts, _) = load.finish().await;
    assert!(
        receipts.len() as u64 > acked_before_kill,
        "appends continued after a new leader was elected"
    );

    // A new leader, on another node.
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT_MAX;
    let new_leader = loop {
        match stream_leader(&ledger).await {
            Some(l) if l != leader => break l,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("no new leader: {other:?}"),
        }
    };
    assert_ne!(new_leader, leader);
    every_acknowledged_event_is_there(&ledger, &config, &receipts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_killed_mid_load_and_restarted_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(&dir.path().join("nats"), Sync::Always).expect("start");
    let config = LogConfig {
        replicas: 1,
        ..cluster_config("SINGLE")
    };
    let ledger = open_ledger(&server.url(), &config, dir.path()).await;
    let load = Load::start(&ledger);
    let acked_before_kill = load.acknowledged(KILL_AFTER_ACKS).await;
    server.kill();
    eprintln!("killed the server after {acked_before_kill} acknowledged appends");
    // The client reconnects by itself; appends in flight meanwhile fail, later ones land.
    let _restarted = server.restart().expect("restart on the same store");
    let (receipts, _) = load.finish().await;
    assert!(receipts.len() as u64 > acked_before_kill, "appends resumed");
    every_acknowledged_event_is_there(&ledger, &config, &receipts).await;
    // The chain goes on from where it stood.
    ledger
        .append(note(&Partition::new("01").unwrap(), "after".into()))
        .await
        .expect("an append after the restart");
}

#[test]
fn serve_stops_within_its_bound_on_sigterm_when_nats_has_gone_away() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(&dir.path().join("nats"), Sync::Always).expect("start");
    let data = dir.path().join("data");
    let ansinh = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ansinh"));
        c.arg("--data-dir")
            .arg(&data)
            .args(["--nats", &server.url()]);
        c
    };
    let added = ansinh()
        .args([
            "admin",
            "add-staff",
            "--id",
            "s:1",
            "--role",
            "auditor",
            "--unit",
            "01",
        ])
        .output()
        .unwrap();
    assert!(added.status.success());
    let mut serve = ansinh()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(serve.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("serve said it listens").unwrap();
        if line.contains("serving the staff API") {
            break;
        }
    }
    // NATS goes away for good; then the operator stops the service.
    server.kill();
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    // What the code allows (the gateway server, the checkpointer, the ledger's close),
    // and a little for the process to start stopping and to exit on a busy machine.
    let bound = 2 * ansinh::http::SHUTDOWN_STEP_WAIT_MAX
        + ansinh::app::CLOSE_WAIT_MAX
        + Duration::from_secs(3);
    let deadline = std::time::Instant::now() + bound;
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = serve.kill();
            panic!("serve still running {bound:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("serve exited with {status}");
}

/// A command on a cluster without `--replicas` would make the ledger's streams and
/// buckets on one node: refused (exit 2) as soon as it connects, naming the option.
#[test]
fn one_replica_on_a_cluster_is_refused_naming_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = NatsServer::start_cluster(&dir.path().join("cluster"), 3, Sync::Always).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ansinh"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--nats", &urls(&nodes)])
        .args(["--stream", "ONE_EVENTS", "--subject-prefix", "one.events"])
        .args(["note", "--partition", "01", "--text", "x"])
        .env_remove("ANSINH_REPLICAS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is a node of cluster") && stderr.contains("--replicas 3"),
        "{stderr}"
    );
}

/// One `ansinh serve` process of a ledger on the cluster: its own data directory, the
/// ledger's one secrets file.
struct Process {
    child: std::process::Child,
    base: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CLI against the cluster ledger `name`, with data directory `data`.
fn ansinh_on(
    name: &str,
    urls: &str,
    data: &std::path::Path,
    secrets: &std::path::Path,
) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ansinh"));
    c.arg("--data-dir")
        .arg(data)
        .arg("--secrets")
        .arg(secrets)
        .args(["--nats", urls, "--replicas", "3"])
        .args(["--stream", &format!("{name}_EVENTS")])
        .args([
            "--subject-prefix",
            &format!("{}.events", name.to_lowercase()),
        ])
        .args(["--checkpoint-stream", &format!("{name}_CHECKPOINTS")])
        .args([
            "--checkpoint-prefix",
            &format!("{}.checkpoints", name.to_lowercase()),
        ]);
    c
}

/// Starts `serve` and waits for the line that says where it listens.
fn start_serve(mut command: std::process::Command) -> Process {
    use std::io::BufRead;
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let base = loop {
        let Some(line) = lines.next() else {
            panic!("serve stopped before listening: {seen:?}");
        };
        let line = line.unwrap();
        if let Some(rest) = line.split("serving the staff API on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        seen.push(line);
    };
    // Keep draining its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Process { child, base }
}

/// POSTs `body` to `path` of `process` under an idempotency key; the status and body.
async fn post(
    client: &reqwest::Client,
    process: &Process,
    token: &str,
    path: &str,
    key: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client
        .post(format!("{}{path}", process.base))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .expect("the process answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// A month of social assistance for the households of one commune through `processes`,
/// each step through the next one: the commune's budget, an entitlement of each head,
/// the month's run. Returns the events recorded (a run: one per instruction, and its
/// close).
async fn a_month_of_payments(
    client: &reqwest::Client,
    processes: &[Process],
    token: &str,
    commune: &str,
    heads: &[(String, String)],
) -> u64 {
    let p = |k: usize| &processes[k % processes.len()];
    let mut events = 0;
    let (status, answer) = post(
        client,
        p(0),
        token,
        &format!("/v1/communes/{commune}/budgets"),
        &format!("budget-{commune}"),
        serde_json::json!({"period": "2026-10", "amount": "10000000", "on": "2026-10-01"}),
    )
    .await;
    assert_eq!(status, 201, "budget of {commune}: {answer}");
    events += 1;
    for (n, (household, _head)) in heads.iter().enumerate() {
        let (status, answer) = post(
            client,
            p(n + 1),
            token,
            "/v1/entitlements",
            &format!("grant-{household}"),
            serde_json::json!({
                "household_id": household, "member": "m1",
                "category": "ELDERLY_80_PLUS_NO_PENSION", "channel": "bank",
                "gateway": "vcb", "from": "2026-10", "on": "2026-10-01"
            }),
        )
        .await;
        assert_eq!(status, 201, "entitlement of {household}: {answer}");
        events += 1;
    }
    let (status, answer) = post(
        client,
        p(heads.len() + 1),
        token,
        &format!("/v1/communes/{commune}/payment-runs"),
        &format!("run-{commune}"),
        serde_json::json!({"period": "2026-10", "on": "2026-10-05"}),
    )
    .await;
    assert_eq!(status, 201, "run of {commune}: {answer}");
    assert_eq!(
        answer["instructions"].as_u64(),
        Some(heads.len() as u64),
        "{answer}"
    );
    events + heads.len() as u64 + 1
}

/// Three `serve` processes of one ledger on the 3-node cluster, each with its own data
/// directory. Every household is registered through one process, classified through
/// the next, its loan approved through the third and disbursed through the first again,
/// and a member's death (which opens the sealed personal data) recorded through yet
/// another: no valid command is refused, whichever process's book or vault it meets.
/// Half way, one process is SIGKILLed, its data directory deleted, and it is started
/// again. Then a month of social assistance in both provinces at once (budget,
/// entitlements, the run), each step through another process. Every process reads every
/// household, personal data included, and the chain verifies with every write in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_serve_processes_share_one_ledger_and_one_loses_its_directory() {
    const HOUSEHOLDS: usize = 18;
    let dir = tempfile::tempdir().unwrap();
    let nodes = NatsServer::start_cluster(&dir.path().join("cluster"), 3, Sync::Always).unwrap();
    let urls = urls(&nodes);
    let name = "THREE";
    // The streams on three replicas once the cluster has its leaders.
    drop(open_ledger(&urls, &cluster_config(name), &dir.path().join("probe")).await);
    let secrets = dir.path().join("secrets.key");
    let data = |i: usize| dir.path().join(format!("data-{i}"));
    // A branch manager of each province, added through the directory bucket.
    let manager = |id: &str, unit: &str| {
        let added = ansinh_on(name, &urls, &data(9), &secrets)
            .args([
                "admin",
                "add-staff",
                "--id",
                id,
                "--role",
                "branch-manager",
                "--unit",
                unit,
            ])
            .output()
            .unwrap();
        assert!(
            added.status.success(),
            "{}",
            String::from_utf8_lossy(&added.stderr)
        );
        String::from_utf8(added.stdout).unwrap().trim().to_owned()
    };
    let token_01 = manager("staff:m", "01");
    let token_79 = manager("staff:n", "79");
    let mut processes: Vec<Process> = (0..3)
        .map(|i| start_serve(ansinh_on(name, &urls, &data(i), &secrets)))
        .collect();
    let client = reqwest::Client::new();
    let mut receipts = 0u64;
    for i in 0..HOUSEHOLDS {
        if i == HOUSEHOLDS / 2 {
            // One process dies with its disk; a new one starts on an empty directory.
            drop(processes.remove(1));
            std::fs::remove_dir_all(data(1)).unwrap();
            processes.insert(1, start_serve(ansinh_on(name, &urls, &data(1), &secrets)));
        }
        let p = |k: usize| &processes[(i + k) % 3];
        // Two provinces, so two partitions' writers in every process.
        let (id, token) = if i % 2 == 0 {
            (format!("0100007-{:06}", i + 1), &token_01)
        } else {
            (format!("7900001-{:06}", i + 1), &token_79)
        };
        let spouse = format!("0011900{:05}", i + 1);
        let steps: Vec<(usize, String, String, serde_json::Value)> = vec![
            (
                0,
                "/v1/households".into(),
                format!("reg-{id}"),
                serde_json::json!({
                    "household_id": id, "area": "rural", "registered_on": "2026-01-05",
                    "personal": {
                        "head_name": "Nguyễn Thị Hạnh", "head_citizen_id": format!("0010860{:05}", i + 1),
                        "members": [{"name": "Trần Văn Nam", "citizen_id": spouse, "relation": "spouse"}]
                    }
                }),
            ),
            (
                1,
                format!("/v1/households/{id}/classifications"),
                format!("review-{id}"),
                serde_json::json!({
                    "income_per_person": "1200000", "area": "rural",
                    "deprived": ["employment", "nutrition", "drinking_water"],
                    "review_year": 2026, "decided_on": "2026-01-10"
                }),
            ),
            (
                2,
                "/v1/loans".into(),
                format!("approve-{id}"),
                serde_json::json!({
                    "household_id": id, "programme": "POOR_HOUSEHOLD", "amount": "30000000",
                    "term_months": 36, "savings_group": "TK-01", "entrusted": "womens_union",
                    "on": "2026-02-02", "reason": "production loan"
                }),
            ),
        ];
        let mut loan = String::new();
        for (k, path, key, body) in steps {
            let (status, answer) = post(&client, p(k), token, &path, &key, body).await;
            assert_eq!(
                status,
                201,
                "household {i}, {path} through process {}: {answer}",
                (i + k) % 3
            );
            if let Some(l) = answer["loan"].as_str() {
                loan = l.to_owned();
            }
            receipts += 1;
        }
        // Then the loan's money, and a death (which opens the sealed data), each through
        // yet another process.
        let later: Vec<(usize, String, String, serde_json::Value)> = vec![
            (
                3,
                format!("/v1/loans/{loan}/disbursements"),
                format!("disburse-{id}"),
                serde_json::json!({"amount": "30000000", "on": "2026-02-05"}),
            ),
            (
                4,
                format!("/v1/loans/{loan}/repayments"),
                format!("repay-{id}"),
                serde_json::json!({"amount": "1000000", "on": "2026-03-05"}),
            ),
            (
                5,
                format!("/v1/households/{id}/deaths"),
                format!("death-{id}"),
                serde_json::json!({"citizen_id": spouse, "died_on": "2026-03-01"}),
            ),
        ];
        for (k, path, key, body) in later {
            let (status, answer) = post(&client, p(k), token, &path, &key, body).await;
            assert_eq!(
                status,
                201,
                "household {i}, {path} through process {}: {answer}",
                (i + k) % 3
            );
            receipts += 1;
        }
    }
    // A month of payments in both provinces at once, each step through another process.
    let heads = |parity: usize, commune: &str| -> Vec<(String, String)> {
        (0..HOUSEHOLDS)
            .filter(|i| i % 2 == parity)
            .map(|i| {
                (
                    format!("{commune}-{:06}", i + 1),
                    format!("0010860{:05}", i + 1),
                )
            })
            .collect()
    };
    let (heads_01, heads_79) = (heads(0, "0100007"), heads(1, "7900001"));
    let (paid_01, paid_79) = tokio::join!(
        a_month_of_payments(&client, &processes, &token_01, "0100007", &heads_01),
        a_month_of_payments(&client, &processes[1..], &token_79, "7900001", &heads_79),
    );
    receipts += paid_01 + paid_79;
    // Every process, the restarted one too, reads every household.
    for process in &processes {
        for i in 0..HOUSEHOLDS {
            let (id, token) = if i % 2 == 0 {
                (format!("0100007-{:06}", i + 1), &token_01)
            } else {
                (format!("7900001-{:06}", i + 1), &token_79)
            };
            let response = client
                .get(format!("{}/v1/households/{id}", process.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status().as_u16(),
                200,
                "{id} through {}",
                process.base
            );
        }
    }
    drop(processes);
    // The chain verifies and holds every acknowledged write (each one event, plus the
    // ledger's key event), and no citizen is in two households.
    let verify = ansinh_on(name, &urls, &data(9), &secrets)
        .args(["--json", "audit", "verify"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let stdout = String::from_utf8(verify.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let events = |p: &str| report["partitions"][p]["events"].as_u64().unwrap_or(0);
    assert!(events("01") > 0 && events("79") > 0, "{report}");
    assert_eq!(events("01") + events("79"), receipts, "{report}");
    let anomalies = ansinh_on(name, &urls, &data(9), &secrets)
        .args(["audit", "anomalies"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&anomalies.stdout);
    assert!(
        text.contains("events scanned"),
        "{}: {text}\n{}",
        anomalies.status,
        String::from_utf8_lossy(&anomalies.stderr)
    );
    assert!(!text.contains("citizen_in_two_households"), "{text}");
}

/// A node cut off from the other two (here: they stop answering, SIGSTOP) is a minority:
/// the ledger that reaches the cluster only through it gets its append refused within
/// the writer's bounds, never acknowledged on one node alone. When the two come back,
/// the chain goes on: the same append retried lands once, and every acknowledged event
/// is in one linear chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_refuses_appends_and_the_chain_goes_on_once_it_heals() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = NatsServer::start_cluster(dir.path(), 3, Sync::Always).expect("start cluster");
    let config = cluster_config("MINORITY");
    let ledger = open_ledger(&nodes[0].url(), &config, dir.path()).await;
    let partition = Partition::new("01").unwrap();
    let mut receipts = Vec::new();
    for i in 0..20 {
        receipts.push(
            ledger
                .append(note(&partition, format!("before-{i}")))
                .await
                .expect("an append on the whole cluster"),
        );
    }
    let signal = |node: &NatsServer, signal: i32| {
        // SAFETY: plain kill(2) on a server child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(node.pid() as i32, signal) }, 0);
    };
    for node in &nodes[1..] {
        signal(node, libc::SIGSTOP);
    }
    let started = std::time::Instant::now();
    let during = ledger.append(note(&partition, "during".into())).await;
    eprintln!(
        "the minority answered in {:.1} s: {during:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(during.is_err(), "acknowledged by a minority: {during:?}");
    for node in &nodes[1..] {
        signal(node, libc::SIGCONT);
    }
    // The same append again (a client's retry): once a leader is elected, it lands, once.
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT_MAX;
    let after = loop {
        match ledger.append(note(&partition, "during".into())).await {
            Ok(receipt) => break receipt,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("appends did not resume after the heal: {e}"),
        }
    };
    receipts.push(after);
    every_acknowledged_event_is_there(&ledger, &config, &receipts).await;
    let mut stream = ledger.stream().clone();
    let report = ansinh::verify::verify(
        &mut stream,
        &config,
        &ansinh::checkpoint::CheckpointConfig::default().keys_partition,
        None,
        |_| {},
    )
    .await
    .expect("one chain");
    assert_eq!(
        report.partitions["01"].events, 21,
        "the retried append is there once"
    );
}

/// A node whose disk was replaced (killed, its store deleted, started again empty)
/// catches up from the other two: once its replica reports current it can lead the
/// stream, and every acknowledged event is then read back through it as leader. The
/// chain goes on after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_an_empty_store_catches_up_and_can_lead() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = NatsServer::start_cluster(dir.path(), 3, Sync::Always).expect("start cluster");
    let config = cluster_config("EMPTY");
    let ledger = open_ledger(&urls(&nodes), &config, dir.path()).await;
    let partition = Partition::new("01").unwrap();
    let mut receipts = Vec::new();
    for i in 0..200 {
        receipts.push(
            ledger
                .append(note(&partition, format!("before-{i}")))
                .await
                .expect("append"),
        );
    }
    nodes[2].kill();
    let store = dir.path().join("n2").join("jetstream");
    std::fs::remove_dir_all(&store).unwrap();
    let n2 = nodes[2]
        .restart()
        .expect("start n2 again on an empty store");

    // Bounded polls of the cluster's own report, no fixed sleep: n2 is a replica again
    // and current, then (asked to) the stream's leader.
    let js = async_nats::jetstream::new(
        app::connect(&urls(&nodes), &ansinh::app::NatsAuth::default())
            .await
            .unwrap(),
    );
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT_MAX;
    loop {
        let mut stream = ledger.stream().clone();
        let info = stream.info().await.ok();
        let cluster = info.as_ref().and_then(|i| i.cluster.clone());
        let leader = cluster.as_ref().and_then(|c| c.leader.clone());
        let n2_current = cluster.as_ref().is_some_and(|c| {
            leader.as_deref() == Some("n2")
                || c.replicas
                    .iter()
                    .any(|r| r.name == "n2" && r.current && r.lag.unwrap_or(0) == 0)
        });
        if leader.as_deref() == Some("n2") {
            break;
        }
        if n2_current {
            // Ask the leader to hand over to n2; raft lets only an up-to-date node lead.
            let _ = js
                .request::<_, _, serde_json::Value>(
                    format!("STREAM.LEADER.STEPDOWN.{}", config.stream_name),
                    &serde_json::json!({"placement": {"preferred": "n2"}}),
                )
                .await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "n2 never caught up and led: {cluster:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("n2 leads the stream after starting empty");
    every_acknowledged_event_is_there(&ledger, &config, &receipts).await;
    assert_eq!(
        stream_leader(&ledger).await.as_deref(),
        Some("n2"),
        "the reads above were served by n2"
    );
    // And the chain goes on, with n2 in the quorum.
    ledger
        .append(note(&partition, "after".into()))
        .await
        .expect("an append after the catch-up");
    drop(n2);
}

/// Two ledger processes appending to one partition at once on a 3-node cluster, each
/// through another server, with the stream on three replicas: every append is answered,
/// each in its own place of one linear chain. The fence (the subject's expected last
/// sequence) is checked by the stream's leader whatever server a publish comes through;
/// a fence checked against a replica's stale view would fork the chain here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_on_one_partition_of_three_replicas_leave_one_chain() {
    const PER_PROCESS: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let nodes = NatsServer::start_cluster(&dir.path().join("cluster"), 3, Sync::Always).unwrap();
    let config = cluster_config("RACE");
    let a = open_ledger(&nodes[0].url(), &config, &dir.path().join("a")).await;
    let b = open_ledger(&nodes[2].url(), &config, &dir.path().join("b")).await;
    let partition = Partition::new("01").unwrap();
    let run = |ledger: Ledger, name: &'static str| {
        let partition = partition.clone();
        tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..PER_PROCESS {
                let (l, p) = (ledger.clone(), partition.clone());
                set.spawn(async move { l.append(note(&p, format!("{name}{i}"))).await });
            }
            let mut receipts = Vec::new();
            while let Some(answer) = set.join_next().await {
                receipts.push(answer.unwrap().expect("every append is answered"));
            }
            receipts
        })
    };
    let (from_a, from_b) = tokio::join!(run(a.clone(), "a"), run(b, "b"));
    let receipts: Vec<Receipt> = from_a.unwrap().into_iter().chain(from_b.unwrap()).collect();
    let mut sequences: Vec<u64> = receipts.iter().map(|r| r.sequence).collect();
    sequences.sort_unstable();
    assert_eq!(
        sequences,
        (1..=2 * PER_PROCESS).collect::<Vec<_>>(),
        "every append got its own place"
    );
    every_acknowledged_event_is_there(&a, &config, &receipts).await;
}

/// Two processes making the citizen claims stream at once on a 3-node cluster (R3), then
/// claiming at once from both, as two `serve` processes do when they start together:
/// every claim is answered (this once stalled ~10 s and failed with a JetStream timeout),
/// and of a citizen claimed by both processes' households exactly one holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_making_the_claims_stream_at_once_both_claim_at_once() {
    use ansinh::claims::Claims;
    type ClaimResult = Result<Vec<[u8; 32]>, ansinh::claims::ClaimError>;
    let dir = tempfile::tempdir().unwrap();
    let nodes = NatsServer::start_cluster(&dir.path().join("cluster"), 3, Sync::Always).unwrap();
    let urls = urls(&nodes);
    let config = cluster_config("CLAIMS");
    let a = open_ledger(&urls, &config, &dir.path().join("a")).await;
    let b = open_ledger(&urls, &config, &dir.path().join("b")).await;
    let (ca, cb) = tokio::join!(
        Claims::open(a.jetstream(), &config.stream_name, 3),
        Claims::open(b.jetstream(), &config.stream_name, 3)
    );
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    fn claims(
        c: &Claims,
        side: u8,
    ) -> Vec<impl std::future::Future<Output = (ClaimResult, ClaimResult)> + '_> {
        (0..16u8)
            .map(move |i| {
                let household = format!("010000{side}-{i:06}");
                async move {
                    let own = [side * 32 + i; 32];
                    let shared = [200 + i; 32];
                    (
                        c.claim(&household, &[own]).await,
                        c.claim(&household, &[shared]).await,
                    )
                }
            })
            .collect()
    }
    let (from_a, from_b) = tokio::join!(
        futures::future::join_all(claims(&ca, 1)),
        futures::future::join_all(claims(&cb, 2))
    );
    let mut shared_held = [0u32; 16];
    for (i, ((own_a, shared_a), (own_b, shared_b))) in from_a.into_iter().zip(from_b).enumerate() {
        assert_eq!(own_a.unwrap().len(), 1, "a's own citizen {i}");
        assert_eq!(own_b.unwrap().len(), 1, "b's own citizen {i}");
        for shared in [shared_a, shared_b] {
            match shared {
                Ok(taken) => shared_held[i] += taken.len() as u32,
                Err(ansinh::claims::ClaimError::Held { .. }) => {}
                Err(e) => panic!("shared citizen {i}: {e}"),
            }
        }
    }
    assert_eq!(
        shared_held, [1; 16],
        "each shared citizen in exactly one household"
    );
}

/// Messages on the read tests' subject, one event each: more than a paused read holds in
/// its pulls and its read-ahead (1.5 pulls of 500 messages, 17 chunks of 256 events), so
/// the read must pull again after the fault.
const READ_MESSAGES: u64 = 8_000;

/// Which server a read test freezes, given the one holding the read's consumer and the
/// one its client is connected to.
#[derive(Clone, Copy)]
enum Freeze {
    ConsumersServer,
    ClientsServer,
}

/// A read whose consumer's server stops answering in the middle (frozen with SIGSTOP: a
/// hung disk, a machine paused) goes on with a new consumer after the last message it
/// visited: every message once, in order. The other servers keep the route to the frozen
/// one and pass the read's pulls to it; without idle heartbeats the client pulled again
/// every expiry, unanswered, and the read stood still for a minute (measured: 64 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_consumers_server_stops_answering_goes_on_with_a_new_consumer() {
    read_through_a_frozen_server(Freeze::ConsumersServer).await;
}

/// A read whose client's own server stops answering goes on once the client has left
/// that server for another (two pings unanswered) with a new consumer: every message
/// once, in order. Before, the client waited for the default minute between pings, and
/// the read then failed on the old consumer's missing answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_clients_server_stops_answering_goes_on_from_another_server() {
    read_through_a_frozen_server(Freeze::ClientsServer).await;
}

async fn read_through_a_frozen_server(freeze: Freeze) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = NatsServer::start_cluster(dir.path(), 3, Sync::Always).expect("start cluster");
    let client = app::connect(&urls(&nodes), &ansinh::app::NatsAuth::default())
        .await
        .expect("connect to the cluster");
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT_MAX;
    wait_for_meta_leader(&client, deadline).await;
    let js = async_nats::jetstream::new(client.clone());
    let stream = loop {
        let config = async_nats::jetstream::stream::Config {
            name: "READS".into(),
            subjects: vec!["reads.>".into()],
            num_replicas: 3,
            ..Default::default()
        };
        match js.get_or_create_stream(config).await {
            Ok(stream) => break stream,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("stream not made yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the stream was never made: {e}"),
        }
    };
    for first in (1..=READ_MESSAGES).step_by(500) {
        let mut acks = Vec::new();
        for i in first..(first + 500).min(READ_MESSAGES + 1) {
            let ack = js.publish("reads.one", format!("message {i}").into());
            acks.push(ack.await.expect("publish"));
        }
        for ack in acks {
            ack.await.expect("stored");
        }
    }

    // The read stops at its first message until the server is frozen: its visitor
    // blocks one of the two workers, the pulls run on the other.
    let (paused, on_pause) = tokio::sync::oneshot::channel();
    let (resume, on_resume) = std::sync::mpsc::channel::<()>();
    let read = {
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut pause = Some((paused, on_resume));
            let read = reader::read_range(&stream, "reads.one", 1, READ_MESSAGES, |event| {
                seen.push(event.stream_sequence);
                if let Some((paused, on_resume)) = pause.take() {
                    paused.send(()).unwrap();
                    on_resume.recv().unwrap();
                }
                Ok::<(), std::convert::Infallible>(())
            })
            .await;
            (read.map_err(|e| e.to_string()), seen)
        })
    };
    on_pause.await.expect("the read started");
    let info = stream.clone();
    let consumers: Vec<String> = futures::TryStreamExt::try_collect(info.consumer_names())
        .await
        .expect("list consumers");
    assert_eq!(consumers.len(), 1, "the read's consumer: {consumers:?}");
    let holder = info
        .consumer_info(&consumers[0])
        .await
        .expect("consumer info")
        .cluster
        .and_then(|c| c.leader)
        .expect("the consumer has a server");
    let connected = client.server_info().server_name;
    let target = match freeze {
        Freeze::ConsumersServer => holder.clone(),
        Freeze::ClientsServer => connected.clone(),
    };
    eprintln!("freezing {target}; the read's consumer is on {holder}, its client on {connected}");
    let frozen = nodes[target.trim_start_matches('n').parse::<usize>().unwrap()].pid();
    let _thaw = Frozen::freeze(frozen);
    resume.send(()).unwrap();

    let (read, seen) = tokio::time::timeout(FAULT_STEP_MAX, read)
        .await
        .expect("the read ended within its bound")
        .unwrap();
    assert_eq!(read, Ok(READ_MESSAGES));
    assert_eq!(seen, (1..=READ_MESSAGES).collect::<Vec<_>>());
}

/// A server stopped with SIGSTOP, let go on (SIGCONT) when dropped, also when the test
/// fails: a stopped server would never act on the SIGTERM that ends it.
struct Frozen(u32);

impl Frozen {
    fn freeze(pid: u32) -> Self {
        // SAFETY: a signal to a child process this test started and still owns.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as in `freeze`.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}
