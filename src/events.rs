//! Names of the payloads, as written in `Envelope.event_type`.

use crate::proto::envelope::Payload;

/// The fully-qualified protobuf name of a payload.
pub fn type_name(payload: &Payload) -> &'static str {
    match payload {
        Payload::Note(_) => "ansinh.v1.Note",
        Payload::HouseholdRegistered(_) => "ansinh.v1.HouseholdRegistered",
        Payload::EligibilityDecided(_) => "ansinh.v1.EligibilityDecided",
        Payload::LedgerKeyRotated(_) => "ansinh.v1.LedgerKeyRotated",
    }
}
