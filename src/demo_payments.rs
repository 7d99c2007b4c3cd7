//! The payments part of `ansinh demo`: monthly social assistance for a year through
//! two simulated gateways, a bank (VCB) and the post office's cash pay-out (VNPOST).
//!
//! Each month, per province: the branch allocates the communes' budgets, runs the
//! payments, and the gateways post results: most settle, some fail (reissued as
//! post-office cash), a few are returned after settlement, and some results are
//! posted twice (answered with the first answer, appending nothing). Results are
//! signed with each gateway's Ed25519 key over the exact bytes posted.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use ed25519_dalek::{Signer, SigningKey};
use prost::Message as _;
use rust_decimal::Decimal;

use crate::access::{Caller, Role};
use crate::book::payments::SignedPost;
use crate::chain::Partition;
use crate::demo::{Seeded, communes};
use crate::domain::Rejection;
use crate::domain::payments::budget::BudgetKey;
use crate::domain::payments::entitlements::{Channel, Terms};
use crate::domain::payments::ids::{
    BeneficiaryRef, CategoryId, CommuneId, GatewayId, GatewayTxnId, HouseholdRef, InstructionRef,
    MemberRef, ProgrammeId,
};
use crate::domain::payments::instructions::{GatewayPost, InstructionId, Outcome};
use crate::domain::payments::month::Month;
use crate::domain::payments::{CommandKind, EventBody};
use crate::proto::envelope::Payload;
use crate::service::{Request, Service, ServiceError};

pub const PROGRAMME: &str = "SOCIAL_ASSISTANCE_MONTHLY";
const BANK: &str = "VCB";
const POST_OFFICE: &str = "VNPOST";
/// One household in this many receives monthly social assistance in the demo.
const BENEFICIARY_EVERY: u64 = 8;
const CATEGORIES: [&str; 4] = [
    "ELDERLY_80_PLUS_NO_PENSION",
    "DISABLED_SEVERE",
    "DISABLED_ESPECIALLY_SEVERE",
    "SINGLE_PARENT_POOR_PER_CHILD",
];
/// Budget per beneficiary and month: above the largest monthly amount the demo's
/// categories give (2.5 x 500,000), so runs are funded.
const BUDGET_PER_BENEFICIARY: i64 = 1_300_000;

#[derive(Debug, Default, serde::Serialize)]
pub struct PaymentsSummary {
    pub entitlements: u64,
    pub runs: u64,
    pub instructions: u64,
    pub instructed: Decimal,
    pub settled: u64,
    pub settled_amount: Decimal,
    pub failed: u64,
    pub returned: u64,
    pub reissued_to_post_office: u64,
    pub duplicate_posts_answered: u64,
    pub refused_posts: u64,
}

/// A simulated gateway's signing key, derived from the seed (demo only).
fn gateway_key(gateway: &str) -> SigningKey {
    let seed = blake3::derive_key("ansinh demo gateway key", gateway.as_bytes());
    SigningKey::from_bytes(&seed)
}

/// Signs a post the way gateways do over HTTP: the exact JSON body bytes, prefixed
/// for domain separation.
fn sign(post: &GatewayPost) -> SignedPost {
    let bytes = serde_json::to_vec(post).expect("posts serialize");
    let key = gateway_key(&post.gateway.to_string());
    let message = [b"ansinh/v1/gateway-post\0".as_slice(), &bytes].concat();
    let public = key.verifying_key().to_bytes();
    SignedPost {
        signature: key.sign(&message).to_bytes().to_vec(),
        key_id: blake3::hash(&public).to_hex()[..16].to_string(),
        bytes,
        format: Default::default(),
    }
}

fn manager(partition: &str) -> Caller {
    Caller {
        id: format!("staff:branch-manager-{partition}"),
        role: Role::BranchManager,
        unit: partition.to_owned(),
    }
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("valid demo date")
}

/// Submits, counting a refusal instead of failing (re-runs of the demo are refused
/// with NothingToRecord or answered as duplicates).
async fn officer(
    service: &Service,
    partition: &Partition,
    key: String,
    kind: CommandKind,
    on: NaiveDate,
) -> Result<Option<crate::log::Receipt>, ServiceError> {
    let caller = manager(partition.as_str());
    let req = Request {
        caller: &caller,
        idempotency_key: &key,
        correlation_id: "demo:payments",
    };
    match service.payment(&req, partition, kind, on).await {
        Ok(r) => Ok(Some(r)),
        Err(ServiceError::Rejected(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A year of monthly payments in every partition, for `months` months.
pub async fn run(
    service: &Service,
    partitions: &[Partition],
    households: u64,
    year: i32,
    months: u32,
) -> Result<PaymentsSummary, ServiceError> {
    let mut s = PaymentsSummary::default();
    let mut rng = Seeded::new(4242);
    let programme = ProgrammeId::parse(PROGRAMME)?;
    for partition in partitions {
        // Grants: one member of every BENEFICIARY_EVERY-th household.
        let communes = communes(partition.as_str());
        let mut per_commune: BTreeMap<String, u64> = BTreeMap::new();
        for n in (BENEFICIARY_EVERY..=households).step_by(BENEFICIARY_EVERY as usize) {
            let commune = &communes[(n as usize / BENEFICIARY_EVERY as usize) % communes.len()];
            let household = format!("{commune}-{:06}", 500_000 + n);
            let channel = if rng.below(3) == 0 {
                Channel::PostOffice {
                    gateway: GatewayId::parse(POST_OFFICE)?,
                }
            } else {
                Channel::BankAccount {
                    gateway: GatewayId::parse(BANK)?,
                }
            };
            let kind = CommandKind::Grant {
                programme: programme.clone(),
                beneficiary: BeneficiaryRef {
                    household: HouseholdRef::parse(&household)?,
                    member: MemberRef::parse("m1")?,
                },
                commune: CommuneId::parse(commune.as_str())?,
                from: Month::new(year, 1)?,
                terms: Terms {
                    category: CategoryId::parse(CATEGORIES[rng.below(4) as usize])?,
                    channel,
                    provincial_base: None,
                },
            };
            let key = format!("demo:{year}:grant:{household}");
            if officer(service, partition, key, kind, d(year, 1, 2))
                .await?
                .is_some()
            {
                s.entitlements += 1;
            }
            *per_commune.entry(commune.to_string()).or_default() += 1;
        }
        for month in 1..=months {
            let period = Month::new(year, month)?;
            for (commune, count) in &per_commune {
                let kind = CommandKind::Allocate {
                    budget: BudgetKey {
                        programme: programme.clone(),
                        commune: CommuneId::parse(commune)?,
                        period,
                    },
                    amount: Decimal::from(BUDGET_PER_BENEFICIARY * *count as i64),
                };
                let key = format!("demo:{year}:alloc:{commune}:{period}");
                officer(service, partition, key, kind, d(year, month, 1)).await?;
            }
            let key = format!("demo:{year}:run:{partition}:{period}");
            let run = CommandKind::Run {
                period,
                commune: None,
            };
            let Some(receipt) = officer(service, partition, key, run, d(year, month, 5)).await?
            else {
                continue;
            };
            s.runs += 1;
            for (id, post) in run_instructions(service, &receipt).await? {
                s.instructions += 1;
                s.instructed += post.amount;
                gateway_year(service, partition, &mut rng, id, post, year, month, &mut s).await?;
            }
        }
    }
    Ok(s)
}

/// The instructions a run issued: its events precede its closing event contiguously
/// (a command's events commit in one atomic batch, in order).
async fn run_instructions(
    service: &Service,
    receipt: &crate::log::Receipt,
) -> Result<Vec<(InstructionId, GatewayPost)>, ServiceError> {
    let closing = service.ledger.event_of(receipt).await?;
    let Some(Payload::PaymentRecorded(p)) = closing.payload else {
        return Ok(Vec::new());
    };
    let Ok(EventBody::PaymentRunCompleted { issued, .. }) = serde_json::from_str(&p.body_json)
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for back in 1..=issued {
        let at = receipt.stream_sequence - back;
        let Some(raw) = crate::log::reader::at_sequence(service.ledger.stream(), at)
            .await
            .map_err(crate::log::AppendError::Nats)?
        else {
            continue;
        };
        let Ok(env) = crate::proto::Envelope::decode(raw.payload.as_ref()) else {
            continue;
        };
        if let Some(Payload::PaymentRecorded(p)) = env.payload {
            if let Ok(EventBody::InstructionIssued { instruction, .. }) =
                serde_json::from_str(&p.body_json)
            {
                out.push((
                    instruction.id,
                    GatewayPost {
                        gateway: instruction.channel.gateway().clone(),
                        instruction: InstructionRef::parse(&instruction.id.to_string())?,
                        outcome: Outcome::Settled,
                        gateway_txn: GatewayTxnId::parse("placeholder")?,
                        amount: instruction.amount,
                        beneficiary: instruction.beneficiary.clone(),
                    },
                ));
            }
        }
    }
    out.reverse();
    Ok(out)
}

/// What the gateway does with one instruction; returns nothing but counts.
#[allow(clippy::too_many_arguments)]
async fn gateway_year(
    service: &Service,
    partition: &Partition,
    rng: &mut Seeded,
    id: InstructionId,
    template: GatewayPost,
    year: i32,
    month: u32,
    s: &mut PaymentsSummary,
) -> Result<(), ServiceError> {
    let roll = rng.below(100);
    let outcome = if roll < 6 {
        Outcome::Failed
    } else {
        Outcome::Settled
    };
    let txn = format!("{}-{year}{month:02}-{}", template.gateway, id.entitlement);
    let post = GatewayPost {
        outcome,
        gateway_txn: GatewayTxnId::parse(&txn)?,
        ..template.clone()
    };
    let received = d(year, month, 12);
    let answer = post_it(service, partition, &post, received).await?;
    count(s, &answer, &post);
    if rng.below(20) == 0 {
        // The gateway posts the same result again (a retry after a lost reply).
        if let Some((receipt, _)) = post_it(service, partition, &post, received).await? {
            if receipt.duplicate {
                s.duplicate_posts_answered += 1;
            }
        }
    }
    if outcome == Outcome::Settled && roll >= 98 {
        // The beneficiary's account was closed: the bank returns the money.
        let returned = GatewayPost {
            outcome: Outcome::Returned,
            ..post.clone()
        };
        let answer = post_it(service, partition, &returned, d(year, month, 18)).await?;
        count(s, &answer, &returned);
    }
    if outcome == Outcome::Failed {
        // Failed: reissued as post-office cash, which the post office pays out.
        let key = format!("demo:{year}:reissue:{partition}:{id}");
        let kind = CommandKind::Reissue {
            instruction: id,
            channel: Some(Channel::PostOffice {
                gateway: GatewayId::parse(POST_OFFICE)?,
            }),
        };
        if officer(service, partition, key, kind, d(year, month, 15))
            .await?
            .is_some()
        {
            s.reissued_to_post_office += 1;
            let again = InstructionId {
                attempt: id.attempt + 1,
                ..id
            };
            let cash = GatewayPost {
                gateway: GatewayId::parse(POST_OFFICE)?,
                instruction: InstructionRef::parse(&again.to_string())?,
                outcome: Outcome::Settled,
                gateway_txn: GatewayTxnId::parse(&format!(
                    "VNPOST-{year}{month:02}-{}",
                    id.entitlement
                ))?,
                amount: template.amount,
                beneficiary: template.beneficiary.clone(),
            };
            let answer = post_it(service, partition, &cash, d(year, month, 20)).await?;
            count(s, &answer, &cash);
        }
    }
    Ok(())
}

fn count(
    s: &mut PaymentsSummary,
    answer: &Option<(crate::log::Receipt, String)>,
    post: &GatewayPost,
) {
    match answer {
        Some((r, kind)) if !r.duplicate && kind == "GatewayPostAccepted" => match post.outcome {
            Outcome::Settled => {
                s.settled += 1;
                s.settled_amount += post.amount;
            }
            Outcome::Failed => s.failed += 1,
            Outcome::Returned => {
                s.returned += 1;
                s.settled_amount -= post.amount;
            }
        },
        Some((r, _)) if !r.duplicate => s.refused_posts += 1,
        _ => {}
    }
}

async fn post_it(
    service: &Service,
    partition: &Partition,
    post: &GatewayPost,
    received_on: NaiveDate,
) -> Result<Option<(crate::log::Receipt, String)>, ServiceError> {
    let now = chrono::Utc::now().timestamp_millis();
    let signed = sign(post);
    match service
        .gateway_post(partition, post.clone(), signed, now, now, received_on)
        .await
    {
        Ok((receipt, event)) => Ok(Some((receipt, event.kind))),
        Err(ServiceError::Rejected(Rejection::DuplicatePost { .. })) => Ok(None),
        Err(ServiceError::Rejected(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Months of `year` whose payment runs lie in the past on `today` (all twelve for a
/// past year), so that results are never dated before their instructions.
pub fn months_played(year: i32, today: NaiveDate) -> u32 {
    if year < today.year() {
        12
    } else if year == today.year() {
        today.month().saturating_sub(1).max(1)
    } else {
        0
    }
}
