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

/// Each partition's reconciliation, by partition name.
pub type Reconciliations = BTreeMap<String, Reconciliation>;

/// Every partition's payment events, in chain order, as domain events.
pub async fn payment_events(
    stream: &mut Stream,
    config: &LogConfig,
    keys_partition: &Partition,
    only: Option<&Partition>,
) -> Result<BTreeMap<String, Vec<Event>>, VerifyError> {
    let mut out: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    verify_with(stream, config, keys_partition, only, |_, envelope| {
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

/// Reconciliation of every partition as of `as_of`, folded from the verified log as it
/// is read (`reconcile::Reconciler`): memory is what reconciliation remembers of each
/// instruction and each gateway's day, not the events. `progress` gets the stream
/// sequence of every event verified (for a progress bar). A report, O(log):
/// `reconcile_every_day_projected` answers the same in O(result) when no payment event
/// is recorded after `as_of`.
pub async fn reconcile_from_log(
    stream: &mut Stream,
    config: &LogConfig,
    keys_partition: &Partition,
    as_of: NaiveDate,
    pending_days: u32,
    mut progress: impl FnMut(u64),
) -> Result<Reconciliations, VerifyError> {
    // Per partition: payment events read (numbered as `payment_events` numbers them)
    // and the fold.
    let mut folds: BTreeMap<String, (u64, reconcile::Reconciler)> = BTreeMap::new();
    verify_with(stream, config, keys_partition, None, |seq, envelope| {
        progress(seq);
        if let Some(Payload::PaymentRecorded(p)) = &envelope.payload {
            let (read, fold) = folds
                .entry(envelope.partition.clone())
                .or_insert_with(|| (0, reconcile::Reconciler::new(as_of, pending_days)));
            if let Ok(e) = event_of(*read + 1, envelope.actor.as_ref(), p) {
                *read += 1;
                fold.fold(&e);
            }
        }
    })
    .await?;
    Ok(folds
        .into_iter()
        .map(|(partition, (_, fold))| (partition, fold.finish()))
        .collect())
}

/// Reconciliation of every day of every partition, read from the projections
/// (`Projector::reconciliation_days`, then each day as `reconcile_day_projected` reads
/// it): O(the lines), in the shape `reconcile_from_log` gives (only partitions with
/// payments). `None` when some partition has payment events recorded after `as_of`: fold
/// the log.
pub fn reconcile_every_day_projected(
    projector: &Projector,
    as_of: NaiveDate,
    pending_days: u32,
) -> Result<Option<Reconciliations>, ProjectionError> {
    let mut all = reconcile_projected(projector, as_of, pending_days, |partition| {
        projector.reconciliation_days(partition)
    })?;
    if let Some(all) = &mut all {
        all.retain(|_, r| !r.days.is_empty());
    }
    Ok(all)
}

/// Each partition's reconciliation of the days `days_of` names, read from the projections
/// one day at a time (`Projector::reconciliation_day`); `None` as soon as one partition has
/// payment events recorded after `as_of`.
fn reconcile_projected(
    projector: &Projector,
    as_of: NaiveDate,
    pending_days: u32,
    days_of: impl Fn(&str) -> Result<Vec<NaiveDate>, ProjectionError>,
) -> Result<Option<Reconciliations>, ProjectionError> {
    // Every day of every partition as one state of the projections: a batch committed
    // between two days could move an instruction from one day's pending lines to a later
    // day's results.
    projector.read_consistent(|| reconcile_projected_read(projector, as_of, pending_days, &days_of))
}

fn reconcile_projected_read(
    projector: &Projector,
    as_of: NaiveDate,
    pending_days: u32,
    days_of: &impl Fn(&str) -> Result<Vec<NaiveDate>, ProjectionError>,
) -> Result<Option<Reconciliations>, ProjectionError> {
    let mut all = BTreeMap::new();
    for partition in projector.summaries()?.into_keys() {
        let mut days = BTreeMap::new();
        for date in days_of(&partition)? {
            let Some(lines) =
                projector.reconciliation_day_read(&partition, date, as_of, pending_days)?
            else {
                return Ok(None);
            };
            days.extend(
                lines
                    .into_iter()
                    .map(|(gateway, day)| ((gateway, date), day)),
            );
        }
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
/// day's lines) (`Projector::reconciliation_day`), in the shape `reconcile_from_log` gives.
/// `None` when some partition has payment events recorded after `as_of`: fold the log.
pub fn reconcile_day_projected(
    projector: &Projector,
    date: NaiveDate,
    as_of: NaiveDate,
    pending_days: u32,
) -> Result<Option<Reconciliations>, ProjectionError> {
    reconcile_projected(projector, as_of, pending_days, |_| Ok(vec![date]))
}

/// What `household` received, per month and channel, from the projections: one prefix
/// scan of the household's lines, O(result) (`views::apply_payment` keeps them as
/// `household_received` folds them). What the staff API and the CLI show.
pub fn household_received_projected(
    projector: &crate::projection::Projector,
    household: &crate::domain::ids::HouseholdId,
) -> Result<Vec<ReceivedLine>, crate::projection::ProjectionError> {
    Ok(received_lines(projector.received(household.as_str())?))
}

/// The lines of what a household received, from its projected totals
/// (`Projector::received`): one a month and channel that moved money.
pub fn received_lines(received: Vec<(String, String, reconcile::Received)>) -> Vec<ReceivedLine> {
    received
        .into_iter()
        .filter(|(_, _, r)| r.settled.count + r.returned.count > 0)
        .map(|(month, channel, r)| ReceivedLine::new(month, channel, &r))
        .collect()
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
    keys_partition: &Partition,
    household: &crate::domain::ids::HouseholdId,
) -> Result<Vec<ReceivedLine>, VerifyError> {
    let Ok(partition) = Partition::new(household.province().as_str()) else {
        return Ok(Vec::new());
    };
    let Ok(who) = crate::domain::payments::ids::HouseholdRef::parse(household.as_str()) else {
        return Ok(Vec::new());
    };
    let events = payment_events(stream, config, keys_partition, Some(&partition)).await?;
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

/// Most days one reconciliation over a range reads: a year and its leap day, so a yearly
/// report is one request. Each day costs two prefix scans of the projections, O(the day's
/// lines), so a range costs O(its lines) with at most this many empty scans.
pub const RECONCILIATION_RANGE_DAYS_MAX: i64 = 366;

/// Most instructions a range's line lists in `pending_overdue_ids`, the first in
/// instruction order; `pending_overdue` counts them all and
/// `pending_overdue_ids_not_listed` the rest. An outage leaves every instruction of its
/// days pending, so listing them all would grow the answer with the outage (a province's
/// run is tens of thousands a day, over up to `RECONCILIATION_RANGE_DAYS_MAX` days); the
/// one-day read and `ansinh payments reconcile --date` list a day's in full.
pub const RANGE_PENDING_IDS_LISTED_MAX: usize = 100;

/// Most mismatches a range's line lists, the first in event order; `mismatches_not_listed`
/// counts the rest, and the range's totals and its CSV count them all. Refused posts are
/// bounded a gateway and day, but first late settlements and returns after a settlement
/// are not: a bank that returns a month's batch for closed accounts would otherwise grow
/// the answer with it. The one-day read lists a day's in full.
pub const RANGE_MISMATCHES_LISTED_MAX: usize = 100;

/// One gateway's line of one day.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RangeLine {
    pub day: NaiveDate,
    pub gateway: String,
    /// The day's tallies; `pending_overdue_ids` at most `RANGE_PENDING_IDS_LISTED_MAX`.
    #[serde(flatten)]
    pub lines: reconcile::GatewayDay,
    /// Instructions counted in `pending_overdue` past `RANGE_PENDING_IDS_LISTED_MAX`, not
    /// listed in `pending_overdue_ids`.
    pub pending_overdue_ids_not_listed: u64,
    /// Mismatches of the day past `RANGE_MISMATCHES_LISTED_MAX`, not listed in
    /// `mismatches`.
    pub mismatches_not_listed: u64,
}

impl RangeLine {
    /// The line of `gateway` on `day`, its pending ids cut to
    /// `RANGE_PENDING_IDS_LISTED_MAX` (they come in instruction order) and its mismatches
    /// to `RANGE_MISMATCHES_LISTED_MAX` (in event order), the rest counted.
    fn listed(day: NaiveDate, gateway: String, mut lines: reconcile::GatewayDay) -> Self {
        let pending = lines.pending_overdue_ids.len();
        lines
            .pending_overdue_ids
            .truncate(RANGE_PENDING_IDS_LISTED_MAX);
        let mismatches = lines.mismatches.len();
        lines.mismatches.truncate(RANGE_MISMATCHES_LISTED_MAX);
        RangeLine {
            day,
            gateway,
            pending_overdue_ids_not_listed: (pending - lines.pending_overdue_ids.len()) as u64,
            mismatches_not_listed: (mismatches - lines.mismatches.len()) as u64,
            lines,
        }
    }
}

/// The reconciliation of a partition's days `from..=to`, as of `as_of`, one line per day
/// and gateway with anything that day (days without lines have none), and the totals of
/// every line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReconciliationRange {
    pub partition: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub as_of: NaiveDate,
    pub pending_days: u32,
    pub lines: Vec<RangeLine>,
    pub totals: RangeTotals,
}

/// The sums of a range's lines.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RangeTotals {
    pub instructed: reconcile::Tally,
    pub settled: reconcile::Tally,
    pub failed: reconcile::Tally,
    pub returned: reconcile::Tally,
    pub timed_out: reconcile::Tally,
    pub cancelled: reconcile::Tally,
    pub pending_overdue: reconcile::Tally,
    pub mismatches: u64,
}

impl RangeTotals {
    fn add(&mut self, day: &reconcile::GatewayDay) {
        let sum = |total: &mut reconcile::Tally, t: &reconcile::Tally| {
            total.count += t.count;
            total.amount += t.amount;
        };
        sum(&mut self.instructed, &day.instructed);
        sum(&mut self.settled, &day.settled);
        sum(&mut self.failed, &day.failed);
        sum(&mut self.returned, &day.returned);
        sum(&mut self.timed_out, &day.timed_out);
        sum(&mut self.cancelled, &day.cancelled);
        sum(&mut self.pending_overdue, &day.pending_overdue);
        self.mismatches += day.mismatches.len() as u64;
    }
}

/// Why a range's reconciliation cannot be read from the projections.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error("the range ends ({to}) before it starts ({from})")]
    Reversed { from: NaiveDate, to: NaiveDate },
    #[error(
        "the range {from}..{to} holds {days} days; at most {RECONCILIATION_RANGE_DAYS_MAX} are read at once"
    )]
    TooLong {
        from: NaiveDate,
        to: NaiveDate,
        days: i64,
    },
    /// The partition has payment events after `as_of`: the projections hold the days as
    /// of their latest events only, so the report as of an earlier day is folded from
    /// the log (`ansinh payments reconcile --as-of`).
    #[error(
        "partition {partition} has payment events recorded after {as_of}: ask as of a later day, or run `ansinh payments reconcile --as-of {as_of}` for the report over the log"
    )]
    AsOfTooEarly { partition: String, as_of: NaiveDate },
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

/// The reconciliation of `partition`'s days `from..=to` from the projections
/// (`Projector::reconciliation_day` for each day, every day of one state of them:
/// `Projector::read_consistent`): O(the range's lines), at most
/// `RECONCILIATION_RANGE_DAYS_MAX` days, each line listing at most
/// `RANGE_PENDING_IDS_LISTED_MAX` of its pending instructions (all are counted).
pub fn reconciliation_range(
    projector: &Projector,
    partition: &str,
    from: NaiveDate,
    to: NaiveDate,
    as_of: NaiveDate,
    pending_days: u32,
) -> Result<ReconciliationRange, RangeError> {
    if to < from {
        return Err(RangeError::Reversed { from, to });
    }
    let days = (to - from).num_days() + 1;
    if days > RECONCILIATION_RANGE_DAYS_MAX {
        return Err(RangeError::TooLong { from, to, days });
    }
    // One state for the whole range: a batch committed between two days could show an
    // instruction pending on its issue day and settled on a later one.
    projector
        .read_consistent(|| range_read(projector, partition, (from, to, days), as_of, pending_days))
}

fn range_read(
    projector: &Projector,
    partition: &str,
    (from, to, days): (NaiveDate, NaiveDate, i64),
    as_of: NaiveDate,
    pending_days: u32,
) -> Result<ReconciliationRange, RangeError> {
    let mut lines = Vec::new();
    let mut totals = RangeTotals::default();
    for day in from.iter_days().take(days as usize) {
        let Some(gateways) =
            projector.reconciliation_day_read(partition, day, as_of, pending_days)?
        else {
            return Err(RangeError::AsOfTooEarly {
                partition: partition.to_owned(),
                as_of,
            });
        };
        for (gateway, day_lines) in gateways {
            totals.add(&day_lines);
            lines.push(RangeLine::listed(day, gateway.to_string(), day_lines));
        }
    }
    Ok(ReconciliationRange {
        partition: partition.to_owned(),
        from,
        to,
        as_of,
        pending_days,
        lines,
        totals,
    })
}

/// The header of the reconciliation CSV for people.
pub const RECONCILIATION_CSV_HEADER: &str = "partition,day,gateway,instructed_count,instructed_amount,settled_count,settled_amount,failed_count,failed_amount,returned_count,returned_amount,timed_out_count,timed_out_amount,cancelled_count,cancelled_amount,pending_overdue_count,pending_overdue_amount,mismatches";

/// A range's reconciliation as the CSV for people (`reconciliation_csv_rows`), every
/// mismatch counted, listed or not.
pub fn reconciliation_csv(range: &ReconciliationRange) -> String {
    csv_rows(range.lines.iter().map(|line| {
        (
            &range.partition,
            line.day,
            &line.gateway,
            &line.lines,
            line.mismatches_not_listed,
        )
    }))
}

/// Reconciliation lines (partition, day, gateway, that day's tallies) as the CSV for
/// people that `payments reconcile --csv` writes, the staff API answers for `text/csv`
/// and the console downloads: RFC 4180 (CRLF line ends; a field holding a comma, a quote
/// or a line end quoted, its quotes doubled), UTF-8 with a byte-order mark so spreadsheets
/// open it as UTF-8, one row per day and gateway. Amounts as staff read them,
/// `"1.500.000 ₫"`, always quoted (a fractional amount holds a comma); JSON keeps the
/// decimal strings.
pub fn reconciliation_csv_rows<'a, P, G>(
    rows: impl IntoIterator<Item = (P, NaiveDate, G, &'a reconcile::GatewayDay)>,
) -> String
where
    P: std::fmt::Display,
    G: std::fmt::Display,
{
    csv_rows(rows.into_iter().map(|(p, day, g, d)| (p, day, g, d, 0)))
}

/// `reconciliation_csv_rows`, each row with the mismatches its line counts but does not
/// list.
fn csv_rows<'a, P, G>(
    rows: impl IntoIterator<Item = (P, NaiveDate, G, &'a reconcile::GatewayDay, u64)>,
) -> String
where
    P: std::fmt::Display,
    G: std::fmt::Display,
{
    use crate::domain::money::format_vnd;
    let vnd = |amount: rust_decimal::Decimal| format!("\"{}\"", format_vnd(amount));
    let mut out = String::from("\u{feff}");
    out.push_str(RECONCILIATION_CSV_HEADER);
    out.push_str("\r\n");
    for (partition, day, gateway, d, mismatches_not_listed) in rows {
        let fields = [
            csv_field(&partition.to_string()),
            day.to_string(),
            csv_field(&gateway.to_string()),
            d.instructed.count.to_string(),
            vnd(d.instructed.amount),
            d.settled.count.to_string(),
            vnd(d.settled.amount),
            d.failed.count.to_string(),
            vnd(d.failed.amount),
            d.returned.count.to_string(),
            vnd(d.returned.amount),
            d.timed_out.count.to_string(),
            vnd(d.timed_out.amount),
            d.cancelled.count.to_string(),
            vnd(d.cancelled.amount),
            d.pending_overdue.count.to_string(),
            vnd(d.pending_overdue.amount),
            (d.mismatches.len() as u64 + mismatches_not_listed).to_string(),
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

/// One CSV field (RFC 4180): quoted, with its quotes doubled, when it holds a comma, a
/// quote or a line end; as it is otherwise. A gateway id may hold any printable ASCII.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_field_is_quoted_only_when_it_must_be() {
        assert_eq!(csv_field("vcb"), "vcb");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\r\nlines"), "\"two\r\nlines\"");
    }

    #[test]
    fn a_range_renders_one_row_per_day_and_gateway_with_money_as_staff_read_it() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        let mut lines = reconcile::GatewayDay::default();
        lines.instructed.add(rust_decimal::Decimal::from(1_500_000));
        let range = ReconciliationRange {
            partition: "01".into(),
            from: day,
            to: day,
            as_of: day,
            pending_days: 10,
            lines: vec![RangeLine::listed(day, "v,\"cb".into(), lines)],
            totals: RangeTotals::default(),
        };
        let csv = reconciliation_csv(&range);
        let rows: Vec<&str> = csv.trim_start_matches('\u{feff}').split("\r\n").collect();
        assert_eq!(rows[0], RECONCILIATION_CSV_HEADER);
        assert_eq!(
            rows[1],
            "01,2026-12-05,\"v,\"\"cb\",1,\"1.500.000 ₫\",0,\"0 ₫\",0,\"0 ₫\",0,\"0 ₫\",0,\"0 ₫\",0,\"0 ₫\",0,\"0 ₫\",0"
        );
        assert_eq!(rows[2], "");
        assert_eq!(rows.len(), 3);
    }
}
