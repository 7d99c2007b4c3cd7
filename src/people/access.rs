//! Who may do what, where. Pure: the edge authenticates a caller and asks here
//! before it builds a command.
//!
//! Roles follow the social-policy bank's desk: a teller takes money in and pays it
//! out at the commune transaction point; a credit officer keeps the registry, the
//! reviews and the approvals; a branch manager also restructures (extend, freeze,
//! write off, reverse, overdue runs, erasure); an auditor reads everything and
//! changes nothing. A caller acts only inside its unit: a 7-digit commune code, or
//! a 2-digit province code for a provincial branch. One command reaches past it: a move
//! is decided by the unit the household leaves, and its arrival in another commune or
//! province is recorded there without that unit acting, as a family does not ask its
//! new commune's leave to move (the arriving unit then reviews it as any household).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Teller,
    CreditOfficer,
    BranchManager,
    Auditor,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Teller => "teller",
            Role::CreditOfficer => "credit_officer",
            Role::BranchManager => "branch_manager",
            Role::Auditor => "auditor",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "teller" => Role::Teller,
            "credit_officer" => Role::CreditOfficer,
            "branch_manager" => Role::BranchManager,
            "auditor" => Role::Auditor,
            _ => return None,
        })
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub id: String,
    pub role: Role,
    /// Commune code (7 digits) or province code (2 digits) the caller acts for.
    pub unit: String,
}

/// What a caller asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Read,
    RegisterHousehold,
    ChangeHousehold,
    MoveHousehold,
    RecordDeath,
    ErasePersonalData,
    Classify,
    ApproveLoan,
    Disburse,
    Repay,
    AccrueInterest,
    MarkOverdue,
    Extend,
    Freeze,
    WriteOff,
    /// Cancel a loan's approval before anything is disbursed: like a reversal, a
    /// correction of what another officer decided, so a branch manager's.
    CancelApproval,
    Reverse,
    /// Grant, change, stop entitlements; payment runs, timeouts, reissues.
    ManagePayments,
    /// Allocate or take back budget.
    AllocateBudget,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The role does not allow the operation: ask someone who holds the right role.
    #[error("role {role} may not {operation:?}")]
    RoleDenied {
        role: &'static str,
        operation: Operation,
    },
    /// The household is outside the caller's unit: the unit that serves it must act.
    #[error("{caller} acts for unit {unit}, not for {}", place(commune))]
    OutsideUnit {
        caller: String,
        unit: String,
        commune: String,
    },
}

/// What a unit code names, for a sentence: a province's 2 digits, a commune's 7, or the
/// head office's nothing (a scan made for the head office, `covers`).
fn place(code: &str) -> String {
    match code.len() {
        0 => "the head office, which sees every province".into(),
        2 => format!("province {code}"),
        _ => format!("commune {code}"),
    }
}

fn allowed(role: Role, op: Operation) -> bool {
    use Operation::*;
    match role {
        Role::Auditor => op == Read,
        Role::Teller => matches!(op, Read | Disburse | Repay),
        Role::CreditOfficer => matches!(
            op,
            Read | RegisterHousehold
                | ChangeHousehold
                | MoveHousehold
                | RecordDeath
                | Classify
                | ApproveLoan
                | Disburse
                | Repay
                | AccrueInterest
                | ManagePayments
        ),
        Role::BranchManager => true,
    }
}

/// May `caller`'s role do `op` at all? (The unit is checked where the household is known.)
pub fn authorize_role(caller: &Caller, op: Operation) -> Result<(), AccessError> {
    if !allowed(caller.role, op) {
        return Err(AccessError::RoleDenied {
            role: caller.role.name(),
            operation: op,
        });
    }
    Ok(())
}

/// Is `commune` inside `unit` (a commune code, or a province code for a branch)?
pub fn within(unit: &str, commune: &str) -> bool {
    !unit.is_empty() && commune.starts_with(unit)
}

/// Does a reader of `reader_unit` see at least what one of `unit` sees? The head office
/// (empty) sees everything; a province sees itself and its communes. What was filtered
/// for one caller (an anomalies scan's findings, `seen_by`) is shown only to readers who
/// cover that caller's unit.
pub fn covers(reader_unit: &str, unit: &str) -> bool {
    unit.starts_with(reader_unit)
}

/// Can a household of `place` (a province's or a commune's code) lie inside `unit`? One
/// contains the other, or the unit is the head office's (empty), which is refused where a
/// household is known (`within`) and reads every place.
pub fn overlaps(unit: &str, place: &str) -> bool {
    unit.is_empty() || unit.starts_with(place) || place.starts_with(unit)
}

/// May `caller` do `op` for a household of `commune`?
pub fn authorize(caller: &Caller, op: Operation, commune: &str) -> Result<(), AccessError> {
    authorize_role(caller, op)?;
    // A unit is a prefix of the commune code: "0100101" (that commune) or "01"
    // (the province). An empty unit is the head office (only for reading and auditing).
    let inside = if caller.unit.is_empty() {
        op == Operation::Read
    } else {
        within(&caller.unit, commune)
    };
    if !inside {
        return Err(AccessError::OutsideUnit {
            caller: caller.id.clone(),
            unit: caller.unit.clone(),
            commune: commune.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, unit: &str) -> Caller {
        Caller {
            id: "staff:1".into(),
            role,
            unit: unit.into(),
        }
    }

    #[test]
    fn roles() {
        let commune = "0100101";
        assert!(authorize(&caller(Role::Teller, commune), Operation::Repay, commune).is_ok());
        assert!(matches!(
            authorize(
                &caller(Role::Teller, commune),
                Operation::ApproveLoan,
                commune
            ),
            Err(AccessError::RoleDenied { .. })
        ));
        assert!(matches!(
            authorize(&caller(Role::Auditor, ""), Operation::Repay, commune),
            Err(AccessError::RoleDenied { .. })
        ));
        assert!(authorize(&caller(Role::Auditor, ""), Operation::Read, commune).is_ok());
        assert!(
            authorize(
                &caller(Role::BranchManager, "01"),
                Operation::WriteOff,
                commune
            )
            .is_ok()
        );
        assert!(matches!(
            authorize(
                &caller(Role::CreditOfficer, commune),
                Operation::WriteOff,
                commune
            ),
            Err(AccessError::RoleDenied { .. })
        ));
    }

    #[test]
    fn units() {
        let officer = caller(Role::CreditOfficer, "0100101");
        assert!(authorize(&officer, Operation::ApproveLoan, "0100101").is_ok());
        assert!(matches!(
            authorize(&officer, Operation::ApproveLoan, "0100102"),
            Err(AccessError::OutsideUnit { .. })
        ));
        let branch = caller(Role::BranchManager, "79");
        assert!(matches!(
            authorize(&branch, Operation::Read, "0100102"),
            Err(AccessError::OutsideUnit { .. })
        ));
        assert!(matches!(
            authorize(
                &caller(Role::BranchManager, ""),
                Operation::Extend,
                "0100102"
            ),
            Err(AccessError::OutsideUnit { .. })
        ));
    }

    #[test]
    fn a_reader_covers_its_own_unit_and_those_inside_it() {
        assert!(covers("", ""));
        assert!(covers("", "01"));
        assert!(covers("01", "01"));
        assert!(covers("01", "0100101"));
        assert!(!covers("01", ""));
        assert!(!covers("01", "79"));
        assert!(!covers("0100101", "01"));
    }

    #[test]
    fn a_unit_overlaps_the_places_it_contains_or_lies_in() {
        assert!(overlaps("0100101", "01"));
        assert!(overlaps("01", "01"));
        assert!(overlaps("01", "0100101"));
        assert!(overlaps("", "01"));
        assert!(!overlaps("7900003", "01"));
        assert!(!overlaps("79", "01"));
        assert!(!overlaps("0100101", "0100102"));
    }
}
