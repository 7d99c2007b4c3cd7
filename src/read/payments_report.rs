//! Reports over the payments part of the log: reconciliation per gateway and day,
//! what a household received. Folded straight from the verified chain (each partition
//! numbers its payment events alike to the book), so a report never trusts a
//! projection and can be made again for a past day with the same result.

use std::collections::BTreeMap;

use async_nats::jetstream::stream::Stream;
use chrono::NaiveDate;

use crate::book::payments::event_of;
use crate::chain::Partition;
use crate::domain::payments::Event;
use crate::domain::payments::reconcile::{self, Reconciliation};
use crate::log::LogConfig;
use crate::projection::{ProjectionError, Projector};
use crate::proto::envelope::Payload;
use crate::verify::{VerifyError, verify_with};

/// Every partition's payment events, in chain order, as domain events.
pub async fn payment_events(
    stream: &mut Stream,
    config: &LogConfig,
    only: Option<&Partition>,
) -> Result<BTreeMap<String, Vec<Event>>, VerifyError> {
    let mut out: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    verify_with(stream, config, only, |_, envelope| {
        if let Some(Payload::PaymentRecorded(p)) = &envelope.payload {
            let events = out.entry(envelope.partition.clone()).or_default();
            // Numbered over the readable ones, as the book numbers them.
            let id = events.len() as u64 + 1;
            if let Ok(e) = event_of(id, envelope.actor.as_ref(), p) {
                events.push(e);
            }
        }
    })
    .await?;
    Ok(out)
}

/// Reconciliation of every partition as of `as_of`.
pub fn reconcile_all(
    events: &BTreeMap<String, Vec<Event>>,
    as_of: NaiveDate,
    pending_days: u32,
) -> BTreeMap<String, Reconciliation> {
    events
        .iter()
        .map(|(p, e)| (p.clone(), reconcile::reconcile(e, as_of, pending_days)))
        .collect()
}

/// What a household received in one month through one channel (`household show`, the
/// HTTP household view). Amounts in whole VND as strings, like every amount read back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReceivedLine {
    /// "YYYY-MM": the month the entitlement was for.
    pub month: String,
    /// "bank_account", "mobile_money" or "post_office".
    pub channel: String,
    pub settled_count: u64,
    pub settled: String,
    /// Settled payments that came back afterwards (a closed account, a wrong number).
    pub returned_count: u64,
    pub returned: String,
    /// Settled − returned: what reached the household.
    pub net: String,
}

/// Reconciliation of one day in every partition, read from the projections in O(the
/// day's lines) (`Projector::reconciliation_day`), in the shape `reconcile_all` gives.
/// `None` when some partition has payment events recorded after `as_of`: fold the log.
pub fn reconcile_day_projected(
    projector: &Projector,
    date: NaiveDate,
    as_of: NaiveDate,
    pending_days: u32,
) -> Result<Option<BTreeMap<String, Reconciliation>>, ProjectionError> {
    let mut all = BTreeMap::new();
    for partition in projector.summaries()?.into_keys() {
        let Some(lines) = projector.reconciliation_day(&partition, date, as_of, pending_days)?
        else {
            return Ok(None);
        };
        let days = lines
            .into_iter()
            .map(|(gateway, day)| ((gateway, date), day))
            .collect();
        all.insert(
            partition,
            Reconciliation {
                as_of,
                pending_days,
                days,
            },
        );
    }
    Ok(Some(all))
}

/// What `household` received, per month and channel, from the projections: one prefix
/// scan of the household's lines, O(result) (`views::apply_payment` keeps them as
/// `household_received` folds them). What the staff API and the CLI show.
pub fn household_received_projected(
    projector: &crate::projection::Projector,
    household: &crate::domain::ids::HouseholdId,
) -> Result<Vec<ReceivedLine>, crate::projection::ProjectionError> {
    Ok(projector
        .received(household.as_str())?
        .into_iter()
        .filter(|(_, _, r)| r.settled.count + r.returned.count > 0)
        .map(|(month, channel, r)| ReceivedLine::new(month, channel, &r))
        .collect())
}

impl ReceivedLine {
    fn new(month: String, channel: String, r: &reconcile::Received) -> Self {
        ReceivedLine {
            month,
            channel,
            settled_count: r.settled.count,
            settled: r.settled.amount.normalize().to_string(),
            returned_count: r.returned.count,
            returned: r.returned.amount.normalize().to_string(),
            net: r.net.normalize().to_string(),
        }
    }
}

/// What `household` received, per month and channel, folded from its partition's
/// verified chain (the chain, not a projection, so the figure is the log's own). Reads
/// the whole partition: for audits and to check the projection, not for a person
/// waiting (`household_received_projected`).
pub async fn household_received(
    stream: &mut Stream,
    config: &LogConfig,
    household: &crate::domain::ids::HouseholdId,
) -> Result<Vec<ReceivedLine>, VerifyError> {
    let Ok(partition) = Partition::new(household.province().as_str()) else {
        return Ok(Vec::new());
    };
    let Ok(who) = crate::domain::payments::ids::HouseholdRef::parse(household.as_str()) else {
        return Ok(Vec::new());
    };
    let events = payment_events(stream, config, Some(&partition)).await?;
    let events = events
        .get(partition.as_str())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    Ok(reconcile::household_view(events, &who)
        .into_iter()
        // A month whose only result was a failure moved no money: no line.
        .filter(|(_, r)| r.settled.count + r.returned.count > 0)
        .map(|((month, channel), r)| {
            ReceivedLine::new(
                month.to_string(),
                crate::views::channel_name(channel).to_string(),
                &r,
            )
        })
        .collect())
}

/// The header of the reconciliation CSV for people.
pub const RECONCILIATION_CSV_HEADER: &str = "partition,gateway,day,instructed_count,instructed_amount,settled_count,settled_amount,failed_count,failed_amount,returned_count,returned_amount,pending_overdue_count,pending_overdue_amount,mismatches";

/// Reconciliation lines (partition, gateway, day, the day's tallies) as the CSV for
/// people that `payments reconcile --csv` writes and the console downloads: a UTF-8
/// byte-order mark so that spreadsheets open it as UTF-8, then one line per gateway and
/// day, amounts as `1.500.000 ₫`, quoted for the commas a fractional amount would hold
/// (JSON keeps decimal strings).
pub fn reconciliation_csv<'a, P, G>(
    rows: impl IntoIterator<Item = (P, G, NaiveDate, &'a reconcile::GatewayDay)>,
) -> String
where
    P: std::fmt::Display,
    G: std::fmt::Display,
{
    use crate::domain::money::format_vnd;
    use std::fmt::Write as _;
    let vnd = |amount: rust_decimal::Decimal| format!("\"{}\"", format_vnd(amount));
    let mut out = String::from("\u{feff}");
    out.push_str(RECONCILIATION_CSV_HEADER);
    out.push('\n');
    for (p, g, d, day) in rows {
        let _ = writeln!(
            out,
            "{p},{g},{d},{},{},{},{},{},{},{},{},{},{},{}",
            day.instructed.count,
            vnd(day.instructed.amount),
            day.settled.count,
            vnd(day.settled.amount),
            day.failed.count,
            vnd(day.failed.amount),
            day.returned.count,
            vnd(day.returned.amount),
            day.pending_overdue.count,
            vnd(day.pending_overdue.amount),
            day.mismatches.len()
        );
    }
    out
}
