//! A mixed staff load through 1, 2 and 3 `ansinh serve` processes of one ledger on a
//! 3-node cluster (loopback, `sync_interval: always`, streams and buckets on three
//! replicas): per household a registration with personal data, a classification, a
//! loan's approval, its disbursement and a repayment, each sent to the next process in
//! turn. Prints the commands per second and the p99 for each number of processes.
//!
//!     cargo build --release --bin ansinh --example processes_probe
//!     target/release/examples/processes_probe 600
//!
//! Every process and server shares this machine's two cores: the figures show what
//! running several processes costs or gains here, not on a cluster of machines.

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ansinh::nats_server::{NatsServer, Sync};

/// Households in flight at once.
const IN_FLIGHT: usize = 32;

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

fn ansinh(
    replicas: &str,
    urls: &str,
    run: &str,
    data: &std::path::Path,
    secrets: &std::path::Path,
) -> std::process::Command {
    let binary = std::env::current_exe()
        .expect("own path")
        .parent()
        .and_then(|examples| examples.parent())
        .expect("target/release")
        .join("ansinh");
    let mut c = std::process::Command::new(binary);
    c.arg("--data-dir")
        .arg(data)
        .arg("--secrets")
        .arg(secrets)
        .args(["--nats", urls, "--replicas", replicas])
        .args(["--stream", &format!("{run}_EVENTS")])
        .args([
            "--subject-prefix",
            &format!("{}.events", run.to_lowercase()),
        ])
        .args(["--checkpoint-stream", &format!("{run}_CHECKPOINTS")])
        .args([
            "--checkpoint-prefix",
            &format!("{}.checkpoints", run.to_lowercase()),
        ]);
    c
}

fn start_serve(mut command: std::process::Command) -> Process {
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("serve said where it listens")
            .expect("a line");
        if let Some(rest) = line.split("serving the staff API on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Its log goes to a file beside the probe's data (ANSINH_PROBE_LOG=dir), else away.
    let log = std::env::var_os("ANSINH_PROBE_LOG")
        .map(|dir| std::path::Path::new(&dir).join(format!("serve-{}.log", child.id())));
    std::thread::spawn(move || {
        use std::io::Write;
        let mut file = log.and_then(|p| std::fs::File::create(p).ok());
        for line in lines.map_while(Result::ok) {
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    Process { child, base }
}

#[tokio::main]
async fn main() {
    let households: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(600);
    let dir = tempfile::tempdir().unwrap();
    // ANSINH_PROBE_NODES=1: one server and one replica, to tell the cluster's part.
    let node_count: usize = std::env::var("ANSINH_PROBE_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let nodes = if node_count == 1 {
        vec![NatsServer::start(&dir.path().join("single"), Sync::Always).unwrap()]
    } else {
        NatsServer::start_cluster(&dir.path().join("cluster"), node_count, Sync::Always).unwrap()
    };
    let replicas = node_count.min(3).to_string();
    let urls = nodes
        .iter()
        .map(NatsServer::url)
        .collect::<Vec<_>>()
        .join(",");
    println!("| serve processes | commands | commands/s | p50 | p99 | failed (first) |");
    println!("|---|---|---|---|---|---|");
    for processes in 1..=3usize {
        let run = format!("P{processes}");
        let secrets = dir.path().join(format!("{run}.secrets"));
        // The first command waits for the cluster's leaders.
        let token = loop {
            let out = ansinh(
                &replicas,
                &urls,
                &run,
                &dir.path().join(format!("{run}-admin")),
                &secrets,
            )
            .args([
                "admin",
                "add-staff",
                "--id",
                "staff:m",
                "--role",
                "branch-manager",
                "--unit",
                "01",
            ])
            .output()
            .unwrap();
            if out.status.success() {
                break String::from_utf8(out.stdout).unwrap().trim().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let serving: Arc<Vec<Process>> = Arc::new(
            (0..processes)
                .map(|i| {
                    start_serve(ansinh(
                        &replicas,
                        &urls,
                        &run,
                        &dir.path().join(format!("{run}-{i}")),
                        &secrets,
                    ))
                })
                .collect(),
        );
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..IN_FLIGHT {
            let (serving, next, token) = (serving.clone(), next.clone(), token.clone());
            tasks.spawn(async move {
                let client = reqwest::Client::new();
                let mut latencies = Vec::new();
                let mut failures: Vec<String> = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= households {
                        break;
                    }
                    let id = format!("01{:05}-{:06}", 7 + n % 40, n + 1);
                    let mut loan = String::new();
                    for step in 0..5 {
                        let process = &serving[(n + step) % serving.len()];
                        let (path, body) = match step {
                            0 => ("/v1/households".to_string(), serde_json::json!({
                                "household_id": id, "area": "rural", "registered_on": "2026-01-05",
                                "personal": {"head_name": "Nguyễn Thị Hạnh",
                                    "head_citizen_id": format!("0010860{n:05}"),
                                    "members": [{"name": "Trần Văn Nam", "citizen_id": format!("0011900{n:05}"), "relation": "spouse"}]}})),
                            1 => (format!("/v1/households/{id}/classifications"), serde_json::json!({
                                "income_per_person": "1200000", "area": "rural",
                                "deprived": ["employment", "nutrition", "drinking_water"],
                                "review_year": 2026, "decided_on": "2026-01-10"})),
                            2 => ("/v1/loans".to_string(), serde_json::json!({
                                "household_id": id, "programme": "POOR_HOUSEHOLD", "amount": "30000000",
                                "term_months": 36, "savings_group": "TK-01", "entrusted": "womens_union",
                                "on": "2026-02-02", "reason": "production loan"})),
                            3 => (format!("/v1/loans/{loan}/disbursements"),
                                serde_json::json!({"amount": "30000000", "on": "2026-02-05"})),
                            _ => (format!("/v1/loans/{loan}/repayments"),
                                serde_json::json!({"amount": "1000000", "on": "2026-03-20"})),
                        };
                        let sent = Instant::now();
                        let response = client
                            .post(format!("{}{path}", process.base))
                            .bearer_auth(&token)
                            .header("idempotency-key", format!("{id}-{step}"))
                            .json(&body)
                            .timeout(Duration::from_secs(60))
                            .send()
                            .await;
                        let Ok(response) = response else {
                            failures.push(format!("{path}: no answer"));
                            break;
                        };
                        let status = response.status();
                        let answer: serde_json::Value = response.json().await.unwrap_or_default();
                        if !status.is_success() {
                            // The household's later steps need this one.
                            failures.push(format!("{path}: {status} {}", answer["message"]));
                            break;
                        }
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        if let Some(l) = answer["loan"].as_str() {
                            loan = l.to_owned();
                        }
                    }
                }
                (latencies, failures)
            });
        }
        let mut all = Vec::new();
        let mut failures = Vec::new();
        while let Some(l) = tasks.join_next().await {
            let (latencies, failed) = l.expect("a load task");
            all.extend(latencies);
            failures.extend(failed);
        }
        let seconds = started.elapsed().as_secs_f64();
        all.sort_by(f64::total_cmp);
        let at = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize];
        println!(
            "| {processes} | {} | {:.0} | {:.1} ms | {:.1} ms | {} |",
            all.len(),
            all.len() as f64 / seconds,
            at(0.5),
            at(0.99),
            failures
                .first()
                .map_or("none".to_string(), |f| format!("{} ({f})", failures.len()))
        );
    }
}
