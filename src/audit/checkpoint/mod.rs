//! Signed Merkle checkpoints of every partition, cosignatures, and the proofs built
//! on them (docs/PROOFS.md).
//!
//! - `sign`: what is signed and how (pure).
//! - `keys`: key files and the ledger's key history, rebuilt from the log (pure ring).
//! - `stream`: the checkpoint stream (deny delete, deny purge, no rollup).
//! - `read`: reading chains, checkpoints and cosignatures back, checked.
//! - `lookup`: one checkpoint of a partition (the latest valid, or of a size) in a few
//!   requests, without reading the others.
//! - `scratch`: the on-disk index `audit verify` keeps of a partition's checkpoints
//!   while it matches their cosignatures.
//! - `checkpointer`: builds and publishes checkpoints; the background task and policy.
//! - `cosigner`: what an audit office remembers of what it cosigned (its state file),
//!   and the rules it cosigns by: no shrink, no fork, a consistency proof, a pinned key.
//! - `audit`: prove, consistency, cosign and verify against a server.
//! - `pieces`: proofs from the subtrees the projections store and at most two chunks of
//!   the log, falling back to `audit`'s read of the whole chain (ADR 0026).
//! - `proofs`: the JSON proof documents and their offline check (pure).
//! - `cli`: what the `ansinh audit ...` commands print.
//!
//! **Boundary:** the only code that publishes to the checkpoint stream. It appends to
//! the event log only `LedgerKeyRotated` events, through `log::Ledger`.
//! **Invariant:** a checkpoint is published only after the checkpointer recomputed the
//! root from the log and found the partition's latest valid checkpoint still matching it
//! (paired check: verify, cosign and prove recompute again).

pub mod audit;
pub mod checkpointer;
pub mod cli;
pub mod cosigner;
pub mod keys;
pub mod lookup;
pub mod pieces;
pub mod proofs;
pub mod read;
pub mod scratch;
pub mod sign;
pub mod stream;

pub use audit::Auditor;
pub use checkpointer::{
    CheckpointTask, Checkpointer, Outcome, PartitionOutcome, Policy, Published, rotate_key,
};
pub use cosigner::{CosignRefusal, Cosigned, CosignerState, CosignerStateError, Cosigning};
pub use keys::{KeyRing, KeyRingError, load_key, load_or_create_key};
pub use pieces::StoredTree;
pub use sign::{CheckpointBody, KeyPair, SignatureError};
pub use stream::{CheckpointConfig, ensure_checkpoint_stream};

use crate::merkle::ProofError;

/// Header on checkpoint messages: the tree size, in decimal (a convenience; readers
/// decode the signed bytes).
pub const HEADER_TREE_SIZE: &str = "Ansinh-Tree-Size";
/// Most event hashes held in memory to build one proof (512 MiB; a bundle's prover
/// keeps the subtree roots above them too, under as much again: `merkle::Prover`).
/// A proof made from the projections' stored subtrees (`pieces`, the HTTP routes) holds
/// at most two chunks and has no such limit; one from the whole chain (the CLI, and the
/// routes' fallback) needs a streaming builder for larger partitions, not written yet
/// (a consistency proof has one: `merkle::ConsistencyBuilder`).
pub const PROOF_LEAVES_MAX: u64 = 1 << 24;
/// Checkpoint-stream messages `audit verify` holds in memory at once: it reads a
/// partition's checkpoints (and then its cosignatures) this many at a time, whatever
/// their number (`Auditor::with_messages_in_memory_max`).
pub const VERIFY_CHUNK_MESSAGES: usize = 1_024;
/// Problems `audit verify` lists; past these it counts them
/// (`CheckpointAudit::problems_not_listed`): whoever may publish on the checkpoint
/// stream can store any number of messages that are not checkpoints.
pub const PROBLEMS_LISTED_MAX: usize = 1_000;

/// Why a checkpoint operation failed. One enum for this boundary (the server-facing
/// checkpoint work); offline proof checking has its own, `proofs::CheckError`.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint or event stream is missing or unsafe.
    #[error(transparent)]
    Stream(#[from] crate::log::StreamError),
    /// NATS could not be asked; retry later.
    #[error("nats: {0}")]
    Nats(String),
    /// The key file cannot be used.
    #[error(transparent)]
    KeyFile(#[from] keys::KeyFileError),
    /// The signing key in the vault cannot be read or written.
    #[error(transparent)]
    Vault(#[from] crate::personal::VaultError),
    /// The key history in the log is invalid, or a signer is not a valid ledger key.
    #[error(transparent)]
    KeyRing(#[from] KeyRingError),
    /// A stored checkpoint or cosignature does not verify.
    #[error("stream sequence {stream_sequence}: {cause}")]
    Signature {
        stream_sequence: u64,
        cause: SignatureError,
    },
    /// A stored message is not what its subject says it is.
    #[error("stream sequence {stream_sequence}: {reason}")]
    Undecodable {
        stream_sequence: u64,
        reason: String,
    },
    /// Appending the key event failed.
    #[error(transparent)]
    Append(#[from] crate::log::AppendError),
    /// A signed checkpoint does not match the log: the log was rewritten or forked
    /// after it was signed. Alert; nothing more is signed for this partition.
    #[error(
        "partition {partition}: the signed checkpoint of size {tree_size} does not match the log: {reason}"
    )]
    Fork {
        partition: String,
        tree_size: u64,
        reason: String,
    },
    /// A signed checkpoint covers more events than the log holds: events were lost.
    #[error(
        "partition {partition}: a signed checkpoint covers {tree_size} events, the log holds {events}"
    )]
    LogBehind {
        partition: String,
        tree_size: u64,
        events: u64,
    },
    /// The local key is not the ledger's current key (e.g. a rotation was interrupted):
    /// run `ansinh admin rotate-key` to finish it, or restore the right key file.
    #[error("the local key {local} is not the ledger's current key {registered}")]
    KeyNotRegistered { local: String, registered: String },
    /// No checkpoint fits the request: publish one (`ansinh audit checkpoint`) or ask
    /// for another size.
    #[error("partition {partition}: {what}")]
    NoCheckpoint { partition: String, what: String },
    /// The partition is too large to build a proof in memory (PROOF_LEAVES_MAX).
    #[error(
        "partition {partition}: {events} events exceed the in-memory proof limit {PROOF_LEAVES_MAX}"
    )]
    TooLarge { partition: String, events: u64 },
    /// `audit verify`'s scratch index of checkpoints (a temporary file) could not be
    /// written or read: a full or unwritable temporary directory (`TMPDIR`).
    #[error("the scratch index of checkpoints (in the temporary directory): {0}")]
    Scratch(String),
    /// Another checkpointer published for this partition meanwhile; retry.
    #[error("partition {partition}: another checkpoint was published meanwhile: {reason}")]
    Raced { partition: String, reason: String },
    /// The cosigner refuses the checkpoint: it does not extend what the office cosigned
    /// before, or is signed by a key the office did not pin (each kind says what to do).
    #[error(transparent)]
    CosignRefused(#[from] CosignRefusal),
    /// The cosigner's state file cannot be read, locked or written.
    #[error(transparent)]
    CosignerState(#[from] CosignerStateError),
    /// Building a proof failed (a bug if the request was checked).
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The request itself is wrong: fix the arguments.
    #[error("{0}")]
    BadRequest(String),
}

/// Milliseconds since the Unix epoch, read at the edge and passed into pure code.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
