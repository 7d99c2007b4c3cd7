//! A simulated payment gateway for the demo and the tests: fetches its instructions over
//! the real transport and posts signed results (settled, failed or returned) with its own
//! transaction ids, after a configurable latency, re-posting some results to exercise
//! the ledger's idempotency. A result the ledger did not record (its instruction offered
//! again) is signed again with a fresh time, as a real gateway must: the old bytes would
//! fall outside the ledger's replay window.
//!
//! Deterministic with the seed: the same seed and the same instructions give the same
//! outcomes, transaction ids and re-posts (only `posted_at_unix_ms` comes from the
//! clock, which is injected). A transaction id names its instruction, never the run, so
//! runs after runs (a month's, with the default seed) never reuse one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::client::{GatewayClient, GatewayClientError};
use super::server::{FETCH_INSTRUCTIONS_MAX, KIND_LEDGER_UNAVAILABLE, STATUS_REFUSED};
use super::sign::sign_post;
use crate::checkpoint::sign::KeyPair;
use crate::proto::{GatewayPost, PaymentInstruction, SignedGatewayPost};

/// Most fetch-and-post rounds in one run.
pub const ROUNDS_MAX: u32 = 100_000;
/// Results remembered to answer an instruction offered again with the same result; the
/// oldest are forgotten first.
pub const REMEMBERED_RESULTS_MAX: usize = 100_000;
/// Longest simulated latency.
pub const LATENCY_MS_MAX: u64 = 60_000;
/// Fetches of one round answered "ledger unavailable" (its read model catching up, say
/// after a restart) before the run gives up, and the wait before each next one: a
/// gateway comes back later.
pub const FETCH_UNAVAILABLE_ATTEMPTS_MAX: u32 = 30;
pub const FETCH_UNAVAILABLE_BACKOFF: Duration = Duration::from_secs(1);
/// Refused posts whose words a run keeps (all are counted in `by_status`): enough to
/// name the fault, bounded when every post is refused.
pub const REFUSALS_KEPT_MAX: usize = 20;
/// Why simulated payments fail, and why they come back.
const FAILURE_REASONS: [&str; 3] = [
    "beneficiary account closed",
    "beneficiary not found",
    "daily limit exceeded",
];
const RETURN_REASONS: [&str; 2] = [
    "returned by the beneficiary's bank",
    "unclaimed at the counter",
];

/// How the simulated gateway behaves.
pub struct SimConfig {
    /// Its signing key (registered for `client.gateway_id()`).
    pub key: KeyPair,
    /// Share of instructions whose payment fails, 0 to 1.
    pub failure_rate: f64,
    /// Share of instructions whose payment is returned, 0 to 1 (with `failure_rate`, at
    /// most 1).
    pub return_rate: f64,
    /// Share of results posted a second time, 0 to 1.
    pub duplicate_rate: f64,
    /// Wait before each post, as a gateway's processing time.
    pub latency_ms: u64,
    /// Fetch-and-post rounds; a round that fetches nothing ends the run.
    pub rounds: u32,
    /// Instructions asked for per fetch.
    pub fetch_max: u32,
    pub seed: u64,
    /// The gateway's clock, Unix milliseconds (tests pin it).
    pub clock: fn() -> i64,
}

impl SimConfig {
    /// The demo's defaults: 10 % fail, 2 % returned, 5 % re-posted, 20 ms latency.
    pub fn new(key: KeyPair, seed: u64) -> Self {
        Self {
            key,
            failure_rate: 0.1,
            return_rate: 0.02,
            duplicate_rate: 0.05,
            latency_ms: 20,
            rounds: 10,
            fetch_max: 100,
            seed,
            clock: system_clock,
        }
    }
}

/// Unix time in milliseconds from the system clock.
pub fn system_clock() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SimSummary {
    pub gateway_id: String,
    pub rounds: u32,
    /// Instructions received (an instruction offered again counts again).
    pub instructions: u64,
    /// Posts sent, re-posts included.
    pub posts: u64,
    /// Results posted a second time on purpose.
    pub duplicates_sent: u64,
    /// Instructions offered again, answered with the result posted before.
    pub reoffered: u64,
    /// Instructions for another gateway (skipped: the ledger should never send them).
    pub foreign_instructions: u64,
    /// First-time results by outcome.
    pub by_outcome: BTreeMap<String, u64>,
    /// Replies by status ("accepted", "duplicate", "refused", "error").
    pub by_status: BTreeMap<String, u64>,
    /// Posts that got no reply (timed out or transport failure).
    pub transport_errors: u64,
    /// The first refused posts (`REFUSALS_KEPT_MAX`): the instruction and the ledger's
    /// words, so that a run reporting refusals can say which and why.
    pub refusals: Vec<String>,
}

impl SimSummary {
    /// One line for people.
    pub fn line(&self) -> String {
        let join = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "gateway {}: {} rounds, {} instructions, {} posts ({} duplicates sent, {} re-offered); outcomes: {}; replies: {}; transport errors {}",
            self.gateway_id,
            self.rounds,
            self.instructions,
            self.posts,
            self.duplicates_sent,
            self.reoffered,
            join(&self.by_outcome),
            join(&self.by_status),
            self.transport_errors
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A rate outside 0..=1, failure + return above 1, or a bound exceeded.
    #[error("invalid simulation setting: {0}")]
    InvalidConfig(String),
    /// Fetching failed: the run stops (posts already made stand).
    #[error("fetching instructions: {0}")]
    Fetch(GatewayClientError),
}

/// SplitMix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

fn check(config: &SimConfig) -> Result<(), SimError> {
    let rates = [
        ("failure_rate", config.failure_rate),
        ("return_rate", config.return_rate),
        ("duplicate_rate", config.duplicate_rate),
    ];
    for (name, rate) in rates {
        if !(0.0..=1.0).contains(&rate) {
            return Err(SimError::InvalidConfig(format!(
                "{name} {rate} is not between 0 and 1"
            )));
        }
    }
    if config.failure_rate + config.return_rate > 1.0 {
        return Err(SimError::InvalidConfig(
            "failure_rate + return_rate exceeds 1".into(),
        ));
    }
    if config.rounds > ROUNDS_MAX {
        return Err(SimError::InvalidConfig(format!(
            "more than {ROUNDS_MAX} rounds"
        )));
    }
    if config.latency_ms > LATENCY_MS_MAX {
        return Err(SimError::InvalidConfig(format!(
            "latency above {LATENCY_MS_MAX} ms"
        )));
    }
    if config.fetch_max == 0 || config.fetch_max > FETCH_INSTRUCTIONS_MAX {
        return Err(SimError::InvalidConfig(format!(
            "fetch_max must be 1 to {FETCH_INSTRUCTIONS_MAX}"
        )));
    }
    Ok(())
}

/// The result the gateway reports for one instruction, dated by its clock now.
fn result_for(
    gateway: &str,
    config: &SimConfig,
    rng: &mut Rng,
    instruction: &PaymentInstruction,
) -> (&'static str, GatewayPost) {
    // Always the same draws per instruction, whatever the outcome, so later results do
    // not depend on earlier ones' outcomes.
    let draw = rng.unit();
    let failure_reason = rng.pick(&FAILURE_REASONS);
    let return_reason = rng.pick(&RETURN_REASONS);
    let (outcome, reason) = if draw < config.failure_rate {
        ("failed", failure_reason)
    } else if draw < config.failure_rate + config.return_rate {
        ("returned", return_reason)
    } else {
        ("settled", "")
    };
    let post = GatewayPost {
        gateway_id: gateway.to_string(),
        instruction_id: instruction.instruction_id.clone(),
        outcome: outcome.to_string(),
        gateway_txn_id: transaction_id(gateway, &instruction.instruction_id),
        amount: instruction.amount.clone(),
        beneficiary_ref: instruction.beneficiary_ref.clone(),
        posted_at_unix_ms: (config.clock)(),
        reason: reason.to_string(),
    };
    (outcome, post)
}

/// The transaction id of the simulated payment of an instruction: the gateway and the
/// first 64 bits of the BLAKE3 hash of the instruction id (at most 32 + 1 + 16 characters,
/// within the 64 a reference may have). An instruction id names one attempt of one month,
/// so the transaction id is the same whichever run pays it and no two instructions share
/// one; a counter per run would repeat the ids of the run before, which the ledger refuses
/// (`transaction_id_reused`) and records.
fn transaction_id(gateway: &str, instruction_id: &str) -> String {
    let hash = blake3::hash(instruction_id.as_bytes());
    format!("{gateway}-{}", &hash.to_hex()[..16])
}

/// Runs the simulated gateway: each round fetches up to `fetch_max` instructions and
/// posts a result for each (after `latency_ms`), some twice (the same bytes); an
/// instruction offered again gets the result posted before, signed again with the time
/// now (`resign`). A round fetches the page after the last instruction of the one before
/// when that page was full, so a page of instructions still waiting (their posts not
/// recorded) never hides the rest; the end of the list, it starts from the first again.
/// Stops after `rounds` rounds, or at the first round with nothing to do. A fetch failure
/// stops the run with an error; a post without a reply is counted and the run goes on.
pub async fn run(client: &GatewayClient, config: &SimConfig) -> Result<SimSummary, SimError> {
    check(config)?;
    let gateway = client.gateway_id().to_string();
    let mut rng = Rng(config.seed);
    let mut summary = SimSummary {
        gateway_id: gateway.clone(),
        ..Default::default()
    };
    let mut results: HashMap<String, GatewayPost> = HashMap::new();
    let mut order: VecDeque<String> = VecDeque::new();
    // The last instruction of the previous page, when it was full; empty: from the first.
    let mut after = String::new();
    for _ in 0..config.rounds {
        let mut list = fetch(client, config.fetch_max, &after)
            .await
            .map_err(SimError::Fetch)?;
        if list.instructions.is_empty() && !after.is_empty() {
            // Past the end: the instructions before may wait still.
            list = fetch(client, config.fetch_max, "")
                .await
                .map_err(SimError::Fetch)?;
        }
        summary.rounds += 1;
        if list.instructions.is_empty() {
            break;
        }
        after = match list.instructions.last() {
            Some(last) if list.instructions.len() >= config.fetch_max as usize => {
                last.instruction_id.clone()
            }
            _ => String::new(),
        };
        for instruction in &list.instructions {
            summary.instructions += 1;
            if instruction.gateway_id != gateway {
                summary.foreign_instructions += 1;
                continue;
            }
            let duplicate = rng.unit() < config.duplicate_rate;
            let signed = match results.get(&instruction.instruction_id) {
                Some(post) => {
                    summary.reoffered += 1;
                    resign(config, post)
                }
                None => {
                    let (outcome, post) = result_for(&gateway, config, &mut rng, instruction);
                    *summary.by_outcome.entry(outcome.to_string()).or_default() += 1;
                    if order.len() >= REMEMBERED_RESULTS_MAX {
                        if let Some(oldest) = order.pop_front() {
                            results.remove(&oldest);
                        }
                    }
                    order.push_back(instruction.instruction_id.clone());
                    let signed = sign_post(&config.key, &post);
                    results.insert(instruction.instruction_id.clone(), post);
                    signed
                }
            };
            if config.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(config.latency_ms)).await;
            }
            let id = &instruction.instruction_id;
            send(client, id, &signed, &mut summary).await;
            if duplicate {
                summary.duplicates_sent += 1;
                send(client, id, &signed, &mut summary).await;
            }
        }
    }
    Ok(summary)
}

/// Up to `max` instructions after `after`, fetched again while the ledger answers
/// "unavailable", at most FETCH_UNAVAILABLE_ATTEMPTS_MAX times.
async fn fetch(
    client: &GatewayClient,
    max: u32,
    after: &str,
) -> Result<crate::proto::InstructionList, GatewayClientError> {
    let mut attempt = 1;
    loop {
        match client.fetch_after(max, after).await {
            Err(GatewayClientError::Refused(reply))
                if reply.error_kind == KIND_LEDGER_UNAVAILABLE
                    && attempt < FETCH_UNAVAILABLE_ATTEMPTS_MAX =>
            {
                tracing::debug!(attempt, "the ledger is unavailable: {}", reply.message);
                tokio::time::sleep(FETCH_UNAVAILABLE_BACKOFF).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A result posted before, signed again with the time now. The ledger offers an
/// instruction again only while it has no result for it, so the first post was not
/// recorded, and its bytes may by now be dated outside the ledger's replay window (a new
/// post is refused for ever then). The ledger's key for a result leaves the time out, so
/// a first post recorded after all is answered `duplicate`, not recorded twice.
fn resign(config: &SimConfig, post: &GatewayPost) -> SignedGatewayPost {
    let fresh = GatewayPost {
        posted_at_unix_ms: (config.clock)(),
        ..post.clone()
    };
    sign_post(&config.key, &fresh)
}

async fn send(
    client: &GatewayClient,
    instruction: &str,
    signed: &SignedGatewayPost,
    summary: &mut SimSummary,
) {
    summary.posts += 1;
    match client.post(signed).await {
        Ok(reply) => {
            if reply.status == STATUS_REFUSED && summary.refusals.len() < REFUSALS_KEPT_MAX {
                summary.refusals.push(format!(
                    "instruction {instruction}: {} ({})",
                    reply.message, reply.error_kind
                ));
            }
            *summary.by_status.entry(reply.status).or_default() += 1
        }
        Err(e) => {
            tracing::warn!("posting a result: {e}");
            summary.transport_errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_generator_is_splitmix64() {
        // Reference values of SplitMix64 seeded with 0.
        let mut rng = Rng(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
