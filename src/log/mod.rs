//! The event log on NATS JetStream: the stream, the durable head store, the
//! group-commit writer and the readers.
//!
//! **Boundary:** this is the only module that publishes to the event stream.
//! **Invariant:** one partition = one chain = one subject; a batch is published only
//! with `Nats-Expected-Last-Subject-Sequence` equal to the head the writer checked
//! its batch against, so two writers can never fork a chain.

mod envelope;
pub mod follow;
pub mod frame;
pub mod reader;
pub mod snapshot;
pub mod store;
pub mod stream;
pub mod writer;

pub use reader::{EventAt, Position, RawEvent, read_after, read_range};
pub use store::{HeadRecord, LedgerStore, StoreError};
pub use stream::{LogConfig, StreamError, ensure_stream};
pub use writer::{AppendError, Draft, Ledger, Receipt, Submission};

/// Header carrying the event's hash (lowercase hex); for a frame, its last event's. A
/// convenience for readers; the verifier recomputes it and reports a difference.
pub const HEADER_HASH: &str = "Ansinh-Hash";
/// Header carrying the partition sequence (decimal). Like `Ansinh-Hash`, it names the
/// message's last event when the message holds a frame.
pub const HEADER_SEQUENCE: &str = "Ansinh-Seq";
