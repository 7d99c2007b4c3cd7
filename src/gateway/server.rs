//! The ledger's side of the gateway transport: answers `<prefix>.<gateway>.post` and
//! `<prefix>.<gateway>.fetch` requests, checks signed posts, and hands only verified
//! posts to a [`PostSink`].
//!
//! Each request is decoded defensively (size first, then protobuf), and answered with
//! protobuf (docs/GATEWAYS.md §5):
//!
//! - a post always gets a `GatewayReply`: the sink's, or "refused" (the signature or
//!   the gateway is wrong; the sink is never called) or "error" (unreadable request);
//! - a fetch gets an `InstructionList`, or a `GatewayReply` flagged by the header
//!   `Ansinh-Reply: GatewayReply` when the request is refused or unreadable.
//!
//! Replies go only to the requesting gateway's own inbox (`_INBOX_<gateway>.…`). A
//! request whose reply subject lies elsewhere is dropped unanswered: the NATS permissions
//! keep a gateway from reading other inboxes, and this keeps the ledger from writing
//! into them on a gateway's say-so.
//!
//! The server reads on a NATS connection of its own (`connect`), never on the one the log
//! writer gets its acknowledgements on, with a small buffer a subscription: a gateway
//! that floods it is shed (NATS drops what the buffer cannot hold, and the gateways
//! retry) instead of costing the ledger memory and delaying its writes.
//!
//! **Boundary:** knows nothing of the event log. Idempotency and the replay window are
//! the sink's (it receives `posted_at_unix_ms`).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::keys::Registry;
use super::sign::verify_post;
use super::{inbox_prefix, is_gateway_id};
use crate::proto::{
    FetchInstructions, GatewayPost, GatewayReply, InstructionList, SignedGatewayPost,
};

/// Requests handled at once. When all are busy, the server stops reading new requests
/// (they wait in the subscription's buffer, `SUBSCRIPTION_CAPACITY`; what comes beyond
/// is dropped, and the gateways' requests time out and are retried).
pub const IN_FLIGHT_REQUESTS_MAX: usize = 64;
/// Requests of one subscription (posts, fetches) the server's connection holds while
/// every slot is busy; the client drops what comes beyond (a slow consumer), and the
/// gateways retry. `REQUEST_BYTES_MAX` is checked only once a request is read, so a
/// flood of large requests holds at most this many messages of the NATS server's
/// `max_payload` a subscription (async-nats' default holds 65,536).
pub const SUBSCRIPTION_CAPACITY: usize = 2 * IN_FLIGHT_REQUESTS_MAX;
/// Largest request payload read; larger ones get an "error" reply without decoding.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Most instructions in one fetch reply, whatever the gateway asks for.
pub const FETCH_INSTRUCTIONS_MAX: u32 = 500;
/// All ledger processes answer in one queue group, so each request is answered once.
pub const QUEUE_GROUP: &str = "ansinh-gateway";
/// Header naming the message type of a reply that is not the operation's usual one.
pub const REPLY_TYPE_HEADER: &str = "Ansinh-Reply";
/// Its value on a fetch answered with a `GatewayReply` (refused or error).
pub const REPLY_TYPE_GATEWAY_REPLY: &str = "GatewayReply";

/// Reply statuses (`GatewayReply.status`).
pub const STATUS_ACCEPTED: &str = "accepted";
pub const STATUS_DUPLICATE: &str = "duplicate";
pub const STATUS_REFUSED: &str = "refused";
pub const STATUS_ERROR: &str = "error";
/// The `error_kind` of an "error" reply while the ledger cannot read or append (its read
/// model catching up, NATS away): the same request may pass later.
pub const KIND_LEDGER_UNAVAILABLE: &str = "ledger_unavailable";

/// Where verified posts go, and where instructions come from: the ledger's payment
/// domain, or a test's recorder.
pub trait PostSink: Send + Sync + 'static {
    /// Records a verified post from `gateway` (the subject's gateway, equal to
    /// `post.gateway_id`). `signed` holds the exact bytes and signature to keep. The
    /// sink decides idempotency ("duplicate") and the replay window.
    fn post(
        &self,
        gateway: &str,
        post: GatewayPost,
        signed: SignedGatewayPost,
    ) -> impl Future<Output = GatewayReply> + Send;

    /// Up to `max` (1..=FETCH_INSTRUCTIONS_MAX) instructions waiting for `gateway`, after
    /// the instruction `after` in the ledger's order (empty: from the first); a reply
    /// instead when `after` is not an instruction id the ledger gives out.
    fn fetch(
        &self,
        gateway: &str,
        max: u32,
        after: &str,
    ) -> impl Future<Output = Result<InstructionList, GatewayReply>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The subject prefix is not a valid subject (empty, a wildcard or a space).
    #[error("invalid gateway subject prefix {0:?}")]
    InvalidPrefix(String),
    /// Could not subscribe or flush: the connection is down or lacks the permission.
    #[error("subscribing to gateway requests: {0}")]
    Subscribe(String),
    /// Could not open the server's own connection: NATS unreachable or the credentials
    /// refused.
    #[error("connecting the gateway server to NATS: {0}")]
    Connect(String),
}

/// The gateway server's own NATS connection, made by `connect` only, so that no caller
/// serves gateways on a connection the ledger shares or with an unbounded buffer.
pub struct Connection {
    client: async_nats::Client,
}

impl Connection {
    /// The underlying client, e.g. to flush or to watch what reaches this connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// Opens the gateway server's connection to `servers` with `options` (the ledger's user
/// and credentials), each subscription buffering at most `SUBSCRIPTION_CAPACITY`
/// requests. A connection of its own: on the ledger's, a flood of gateway requests would
/// be read off the socket the writer's acknowledgements arrive on, and held beside them.
pub async fn connect(
    servers: impl async_nats::ToServerAddrs,
    options: async_nats::ConnectOptions,
) -> Result<Connection, ServeError> {
    let client = options
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .connect(servers)
        .await
        .map_err(|e| ServeError::Connect(e.to_string()))?;
    Ok(Connection { client })
}

/// A gateway request server whose subscriptions are in place at the NATS server (so a
/// request sent after `bind` returns is answered).
pub struct Bound<S: PostSink> {
    client: async_nats::Client,
    prefix: String,
    registry: crate::directory::SharedRegistry,
    sink: Arc<S>,
    requests: futures::stream::Select<async_nats::Subscriber, async_nats::Subscriber>,
}

/// Serves gateway requests until `shutdown` completes or the connection closes, then
/// waits for the requests under way to be answered. Requests not yet started when it
/// stops are left unanswered; gateways retry them, and posts are idempotent.
pub async fn serve(
    connection: Connection,
    subject_prefix: &str,
    registry: crate::directory::SharedRegistry,
    sink: Arc<impl PostSink>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    bind(connection, subject_prefix, registry, sink)
        .await?
        .run(shutdown)
        .await;
    Ok(())
}

/// Subscribes (queue group QUEUE_GROUP) to `<prefix>.*.post` and `<prefix>.*.fetch` on
/// the server's own `connection` and waits until the NATS server has the subscriptions.
pub async fn bind<S: PostSink>(
    connection: Connection,
    subject_prefix: &str,
    registry: crate::directory::SharedRegistry,
    sink: Arc<S>,
) -> Result<Bound<S>, ServeError> {
    let valid = !subject_prefix.is_empty()
        && subject_prefix
            .split('.')
            .all(|t| !t.is_empty() && t != "*" && t != ">" && !t.contains(char::is_whitespace));
    if !valid {
        return Err(ServeError::InvalidPrefix(subject_prefix.to_string()));
    }
    let Connection { client } = connection;
    let subscribe = |op: &str| {
        let client = client.clone();
        let subject = format!("{subject_prefix}.*.{op}");
        async move {
            client
                .queue_subscribe(subject, QUEUE_GROUP.to_string())
                .await
                .map_err(|e| ServeError::Subscribe(e.to_string()))
        }
    };
    let posts = subscribe("post").await?;
    let fetches = subscribe("fetch").await?;
    client
        .flush()
        .await
        .map_err(|e| ServeError::Subscribe(e.to_string()))?;
    Ok(Bound {
        client,
        prefix: subject_prefix.to_string(),
        registry,
        sink,
        requests: futures::stream::select(posts, fetches),
    })
}

impl<S: PostSink> Bound<S> {
    /// Answers requests until `shutdown` completes or the connection closes, with at most
    /// IN_FLIGHT_REQUESTS_MAX under way; then waits for those under way.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let Bound {
            client,
            prefix,
            registry,
            sink,
            mut requests,
        } = self;
        let limit = Arc::new(Semaphore::new(IN_FLIGHT_REQUESTS_MAX));
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            // Take a slot first, so a full server stops reading instead of queueing.
            let slot = tokio::select! {
                _ = &mut shutdown => break,
                slot = limit.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let message = tokio::select! {
                _ = &mut shutdown => break,
                m = requests.next() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            while let Some(done) = tasks.try_join_next() {
                log_task_end(done);
            }
            let (client, registry, sink, prefix) = (
                client.clone(),
                registry.clone(),
                sink.clone(),
                prefix.clone(),
            );
            tasks.spawn(async move {
                let _slot = slot;
                answer(
                    &client,
                    &prefix,
                    &registry.current(),
                    sink.as_ref(),
                    message,
                )
                .await;
            });
        }
        // Stop receiving (dropping the subscribers unsubscribes), then finish what started.
        drop(requests);
        while let Some(done) = tasks.join_next().await {
            log_task_end(done);
        }
        if let Err(e) = client.flush().await {
            tracing::warn!("flushing gateway replies: {e}");
        }
    }
}

fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!("a gateway request handler failed: {e}");
    }
}

/// What a request asks for, read from its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Post,
    Fetch,
}

/// `<prefix>.<gateway>.<post|fetch>` → (gateway, operation).
fn parse_subject<'a>(prefix: &str, subject: &'a str) -> Option<(&'a str, Operation)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let (gateway, op) = rest.split_once('.')?;
    let op = match op {
        "post" => Operation::Post,
        "fetch" => Operation::Fetch,
        _ => return None,
    };
    Some((gateway, op))
}

/// A reply with no event: "refused" or "error".
pub fn failure_reply(status: &str, error_kind: &str, message: impl Into<String>) -> GatewayReply {
    GatewayReply {
        status: status.to_string(),
        error_kind: error_kind.to_string(),
        message: message.into(),
        ..Default::default()
    }
}

/// The answer to one request, before it is sent.
enum Answer {
    Reply(GatewayReply),
    Instructions(InstructionList),
}

async fn answer<S: PostSink>(
    client: &async_nats::Client,
    prefix: &str,
    registry: &Registry,
    sink: &S,
    message: async_nats::Message,
) {
    let subject = message.subject.as_str();
    let Some((gateway, operation)) = parse_subject(prefix, subject) else {
        tracing::warn!(subject, "gateway request on an unexpected subject; dropped");
        return;
    };
    let Some(reply_to) = message.reply.as_ref() else {
        tracing::warn!(subject, "gateway request without a reply subject; dropped");
        return;
    };
    let own_inbox = format!("{}.", inbox_prefix(gateway));
    if !reply_to.as_str().starts_with(&own_inbox) {
        tracing::warn!(
            subject,
            reply = reply_to.as_str(),
            "gateway request asks for its reply outside the gateway's inbox; dropped"
        );
        return;
    }
    let answer = decide(registry, sink, gateway, operation, &message.payload).await;
    let (headers, payload) = match (answer, operation == Operation::Fetch) {
        (Answer::Instructions(list), _) => (None, list.encode_to_vec()),
        (Answer::Reply(reply), true) => {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(REPLY_TYPE_HEADER, REPLY_TYPE_GATEWAY_REPLY);
            (Some(headers), reply.encode_to_vec())
        }
        (Answer::Reply(reply), false) => (None, reply.encode_to_vec()),
    };
    let payload = Bytes::from(payload);
    let sent = match headers {
        Some(h) => {
            client
                .publish_with_headers(reply_to.clone(), h, payload)
                .await
        }
        None => client.publish(reply_to.clone(), payload).await,
    };
    if let Err(e) = sent {
        tracing::warn!(subject, "sending a gateway reply: {e}");
    }
}

/// Decides the answer to one request: pure apart from the sink.
async fn decide<S: PostSink>(
    registry: &Registry,
    sink: &S,
    gateway: &str,
    operation: Operation,
    payload: &[u8],
) -> Answer {
    if !is_gateway_id(gateway) || !registry.has_gateway(gateway) {
        return Answer::Reply(failure_reply(
            STATUS_REFUSED,
            "unknown_gateway",
            format!("gateway {gateway:?} is not registered"),
        ));
    }
    if payload.len() > REQUEST_BYTES_MAX {
        return Answer::Reply(failure_reply(
            STATUS_ERROR,
            "oversized_request",
            format!(
                "request of {} bytes exceeds {REQUEST_BYTES_MAX}",
                payload.len()
            ),
        ));
    }
    match operation {
        Operation::Post => {
            let signed = match SignedGatewayPost::decode(payload) {
                Ok(s) => s,
                Err(e) => {
                    return Answer::Reply(failure_reply(
                        STATUS_ERROR,
                        "malformed_request",
                        format!("not a SignedGatewayPost: {e}"),
                    ));
                }
            };
            match verify_post(registry, gateway, &signed) {
                Ok(post) => Answer::Reply(sink.post(gateway, post, signed).await),
                Err(e) => Answer::Reply(failure_reply(STATUS_REFUSED, e.kind(), e.to_string())),
            }
        }
        Operation::Fetch => {
            let request = match FetchInstructions::decode(payload) {
                Ok(r) => r,
                Err(e) => {
                    return Answer::Reply(failure_reply(
                        STATUS_ERROR,
                        "malformed_request",
                        format!("not a FetchInstructions: {e}"),
                    ));
                }
            };
            let max = request.max.clamp(1, FETCH_INSTRUCTIONS_MAX);
            let mut list = match sink.fetch(gateway, max, &request.after).await {
                Ok(list) => list,
                Err(reply) => return Answer::Reply(reply),
            };
            // Never hand a gateway more than it asked for, nor an instruction the sink
            // says is another gateway's. The ledger's sink fills `gateway_id` from the
            // key it read the line under (`gateway_ledger::instruction_of`), so this
            // catches a sink that lists the wrong gateway's lines, not a line stored
            // under the wrong gateway.
            list.instructions.retain(|i| i.gateway_id == gateway);
            list.instructions.truncate(max as usize);
            Answer::Instructions(list)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_only_with_the_prefix_one_gateway_token_and_a_known_operation() {
        let p = "ansinh.v1.gateway";
        assert_eq!(
            parse_subject(p, "ansinh.v1.gateway.vcb.post"),
            Some(("vcb", Operation::Post))
        );
        assert_eq!(
            parse_subject(p, "ansinh.v1.gateway.momo.fetch"),
            Some(("momo", Operation::Fetch))
        );
        assert_eq!(parse_subject(p, "ansinh.v1.gateway.vcb.other"), None);
        assert_eq!(parse_subject(p, "ansinh.v1.gatewayx.vcb.post"), None);
        assert_eq!(parse_subject(p, "ansinh.v1.events.01"), None);
        // A gateway id with a dot would be two tokens: the wildcard subscription never
        // delivers it, and the parser refuses it too.
        assert_eq!(parse_subject(p, "ansinh.v1.gateway.a.b.post"), None);
    }
}
