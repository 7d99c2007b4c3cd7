//! Whom the ledger knows, and who may act: `access` (roles and units: who may do what,
//! where; pure), `directory` (the staff and the gateways' keys, shared by every process),
//! `personal` (households' personal data sealed under per-household keys, never in the
//! log), and `claims` (each citizen in one household across every province).

pub mod access;
pub mod claims;
pub mod directory;
pub mod personal;
