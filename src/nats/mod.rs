//! What the ledger needs of NATS beyond the event stream (`log`): `server` starts and
//! supervises an embedded nats-server (fsync before every acknowledgement), and
//! `kv_writes` makes the fenced, batched compare-and-set writes every shared bucket uses
//! (claims, vault keys, idempotency bindings, jobs).

pub mod kv_writes;
pub mod server;
