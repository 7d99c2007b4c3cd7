//! The auditor's tools: each checks the log itself, or lets someone check it without
//! trusting the server. `verify` recomputes every hash and link; `recompute` re-derives
//! every eligibility decision; `rebuild_check` rebuilds the projections beside the live
//! ones; `anomalies` lists patterns to investigate; `checkpoint` signs Merkle checkpoints
//! and makes proofs over the log's Merkle tree (`merkle`; `merkle_pieces` assembles them
//! from the subtrees the projections store); `bundle` exports what an auditor verifies
//! offline.

pub mod anomalies;
pub mod bundle;
pub mod checkpoint;
pub mod merkle;
pub mod merkle_pieces;
pub mod rebuild_check;
pub mod recompute;
pub mod verify;
