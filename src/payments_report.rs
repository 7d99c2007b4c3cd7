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
