//! The read side: state derived from the log, served to people and gateways in
//! O(result). `projection` applies events in batches into sled, each batch with its position
//! in one atomic step (`journal`); `views` are the read models it keeps; `trail_codec` how
//! the audit trail's lines are stored, `trail_store` the file of their runs and
//! `trail_heads` its index of subjects on disk; `tree_nodes` each partition's Merkle
//! subtrees that proofs are assembled from; `payments_report` the
//! payments reports, from the projections where one day is asked, from the log otherwise.

pub mod journal;
pub mod payments_report;
pub mod projection;
pub mod trail_codec;
mod trail_heads;
pub mod trail_store;
mod tree_nodes;
pub mod views;
