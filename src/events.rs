//! Names of the payloads, as written in `Envelope.event_type`.

use crate::proto::envelope::Payload;

/// The fully-qualified protobuf name of a payload.
pub fn type_name(payload: &Payload) -> &'static str {
    match payload {
        Payload::Note(_) => "ansinh.v1.Note",
        Payload::HouseholdRegistered(_) => "ansinh.v1.HouseholdRegistered",
        Payload::HouseholdMembersChanged(_) => "ansinh.v1.HouseholdMembersChanged",
        Payload::HouseholdMovedOut(_) => "ansinh.v1.HouseholdMovedOut",
        Payload::HouseholdMovedIn(_) => "ansinh.v1.HouseholdMovedIn",
        Payload::MemberDied(_) => "ansinh.v1.MemberDied",
        Payload::PersonalDataErased(_) => "ansinh.v1.PersonalDataErased",
        Payload::EligibilityDecided(_) => "ansinh.v1.EligibilityDecided",
        Payload::LoanApproved(_) => "ansinh.v1.LoanApproved",
        Payload::LoanTrancheDisbursed(_) => "ansinh.v1.LoanTrancheDisbursed",
        Payload::LoanRepaymentReceived(_) => "ansinh.v1.LoanRepaymentReceived",
        Payload::LoanInterestAccrued(_) => "ansinh.v1.LoanInterestAccrued",
        Payload::LoanMovedToOverdue(_) => "ansinh.v1.LoanMovedToOverdue",
        Payload::LoanExtended(_) => "ansinh.v1.LoanExtended",
        Payload::LoanFrozen(_) => "ansinh.v1.LoanFrozen",
        Payload::LoanApprovalCancelled(_) => "ansinh.v1.LoanApprovalCancelled",
        Payload::LoanUnfrozen(_) => "ansinh.v1.LoanUnfrozen",
        Payload::LoanWrittenOff(_) => "ansinh.v1.LoanWrittenOff",
        Payload::LoanPostingReversed(_) => "ansinh.v1.LoanPostingReversed",
        Payload::PaymentRecorded(_) => "ansinh.v1.PaymentRecorded",
        Payload::LedgerKeyRotated(_) => "ansinh.v1.LedgerKeyRotated",
        Payload::MessageExcluded(_) => "ansinh.v1.MessageExcluded",
    }
}
