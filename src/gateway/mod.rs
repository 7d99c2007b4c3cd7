//! The payment-gateway transport: how banks, mobile-money operators and the post office
//! fetch payment instructions and post signed results over NATS request/reply.
//!
//! - `keys` is the registry of gateway public keys (what the ledger's directory holds of
//!   the gateways, and `<data-dir>/gateways.json` of earlier versions) and the gateway
//!   key files;
//! - `sign` (pure) says what a gateway signs and checks it;
//! - `server` answers the gateways on the ledger's side and hands verified posts to a
//!   [`PostSink`](server::PostSink);
//! - `client` is a gateway's side of the transport;
//! - `sim` is a simulated gateway for the demo and the tests.
//!
//! docs/GATEWAYS.md is the normative text (subjects, permissions, signed bytes, replies).
//!
//! **Boundary:** this module knows nothing of the event log. What an accepted post
//! becomes (an event, its idempotency, the replay window) is the sink's business.

pub mod client;
pub mod keys;
pub mod server;
pub mod sign;
pub mod sim;

/// Subjects are `<prefix>.<gateway id>.post` and `<prefix>.<gateway id>.fetch`. The
/// shipped NATS permissions (deploy/nats/ansinh-accounts.conf) name this prefix.
pub const DEFAULT_SUBJECT_PREFIX: &str = "ansinh.v1.gateway";
/// The shipped accounts file, as compiled in, so tests and tools run the exact bytes
/// that are deployed.
pub const ACCOUNTS_CONF: &str = include_str!("../../deploy/nats/ansinh-accounts.conf");
/// File name of the accounts file, for `include` lines.
pub const ACCOUNTS_CONF_FILE: &str = "ansinh-accounts.conf";
/// Environment variable holding the `ledger` NATS user's password.
pub const LEDGER_PASSWORD_ENV: &str = "ANSINH_NATS_LEDGER_PASSWORD";
/// NATS user of the ledger process in the shipped accounts file.
pub const LEDGER_USER: &str = "ledger";
/// The read-only auditor of the shipped accounts file, its password's variable and the
/// inbox prefix its permissions allow.
pub const AUDITOR_USER: &str = "auditor";
pub const AUDITOR_PASSWORD_ENV: &str = "ANSINH_NATS_AUDITOR_PASSWORD";
pub const AUDITOR_INBOX_PREFIX: &str = "_INBOX_auditor";
/// Longest gateway id, in bytes.
pub const GATEWAY_ID_BYTES_MAX: usize = 32;

/// A demo gateway of the shipped accounts file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoGateway {
    /// The gateway id (subject token, inbox suffix, registry id).
    pub id: &'static str,
    /// Its NATS user.
    pub user: &'static str,
    /// The environment variable the server reads its password from.
    pub password_env: &'static str,
    /// The payment channel it serves.
    pub channel: &'static str,
}

/// The gateways of deploy/nats/ansinh-accounts.conf.
pub const DEMO_GATEWAYS: [DemoGateway; 3] = [
    DemoGateway {
        id: "vcb",
        user: "gw-vcb",
        password_env: "ANSINH_NATS_GW_VCB_PASSWORD",
        channel: "bank",
    },
    DemoGateway {
        id: "momo",
        user: "gw-momo",
        password_env: "ANSINH_NATS_GW_MOMO_PASSWORD",
        channel: "mobile_money",
    },
    DemoGateway {
        id: "vnpost",
        user: "gw-vnpost",
        password_env: "ANSINH_NATS_GW_VNPOST_PASSWORD",
        channel: "post_office",
    },
];

/// Ids no gateway may take, since its inbox prefix (`_INBOX_<id>`, below which its NATS
/// user may subscribe: GATEWAYS.md section 7) would be another user's: the auditor's
/// (`AUDITOR_INBOX_PREFIX`), which receives the event and checkpoint streams, and the
/// ledger's, whose user may be given the same form of prefix.
pub const RESERVED_GATEWAY_IDS: [&str; 2] = [AUDITOR_USER, LEDGER_USER];

/// True for an id of `RESERVED_GATEWAY_IDS`.
pub fn is_reserved_gateway_id(id: &str) -> bool {
    RESERVED_GATEWAY_IDS.contains(&id)
}

/// True for a gateway id: 1 to GATEWAY_ID_BYTES_MAX bytes of `a-z`, `0-9` and `-`, not
/// starting with `-`, and not reserved (`RESERVED_GATEWAY_IDS`). So it is one NATS subject
/// token (no `.`, `*`, `>` or space) and its inbox prefix is its own.
pub fn is_gateway_id(id: &str) -> bool {
    !is_reserved_gateway_id(id) && is_gateway_id_shaped(id)
}

fn is_gateway_id_shaped(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= GATEWAY_ID_BYTES_MAX
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

/// `<prefix>.<gateway>.post`: where a gateway sends `SignedGatewayPost` requests.
pub fn post_subject(prefix: &str, gateway: &str) -> String {
    format!("{prefix}.{gateway}.post")
}

/// `<prefix>.<gateway>.fetch`: where a gateway sends `FetchInstructions` requests.
pub fn fetch_subject(prefix: &str, gateway: &str) -> String {
    format!("{prefix}.{gateway}.fetch")
}

/// `_INBOX_<gateway>`: the inbox prefix of a gateway's connection. Its NATS user may
/// subscribe only below it, and the ledger answers only there.
pub fn inbox_prefix(gateway: &str) -> String {
    format!("_INBOX_{gateway}")
}
