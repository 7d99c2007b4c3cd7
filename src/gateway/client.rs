//! A gateway's side of the transport: connects as the gateway's NATS user, with the
//! inbox prefix its permissions allow (`_INBOX_<gateway>`), fetches instructions and
//! posts signed results, with a timeout per request and a bounded number of attempts.
//!
//! Resending a post is safe: the ledger knows a result by its content (all of it but
//! `posted_at_unix_ms`) and answers a second copy with "duplicate". A request's own
//! attempts resend the same bytes within seconds; a post sent again later is the same
//! content signed again with a fresh `posted_at_unix_ms`, since a new post dated outside
//! the ledger's replay window (docs/GATEWAYS.md §5) is refused.

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::broadcast;

use super::server::{REPLY_TYPE_GATEWAY_REPLY, REPLY_TYPE_HEADER};
use super::{DEFAULT_SUBJECT_PREFIX, fetch_subject, inbox_prefix, is_gateway_id, post_subject};
use crate::proto::{FetchInstructions, GatewayReply, InstructionList, SignedGatewayPost};

/// How long one attempt waits for the ledger's reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per request (the first included) when the ledger does not answer in time
/// or nobody is listening.
pub const REQUEST_ATTEMPTS_MAX: u32 = 3;
/// Wait before the second attempt; doubled before each later one.
pub const RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Server errors (e.g. permission violations) kept for requests to look at; older
/// ones are dropped.
pub const SERVER_ERRORS_BUFFERED: usize = 64;

/// Why a request failed. `PermissionDenied`, `Refused` and `MalformedReply` are final;
/// `TimedOut`, `NoResponders` and `Transport` may pass (the ledger restarting): retry
/// later with the same result signed again with a fresh `posted_at_unix_ms` (the old
/// bytes may be dated outside the ledger's replay window by then).
#[derive(Debug, thiserror::Error)]
pub enum GatewayClientError {
    #[error("gateway id {0:?} is not 1-32 characters of a-z, 0-9 and '-'")]
    InvalidGatewayId(String),
    #[error("connecting to NATS: {0}")]
    Connect(String),
    /// The NATS server refused to let this user publish on the subject.
    #[error("the NATS server refused publishing to {subject}: {message}")]
    PermissionDenied { subject: String, message: String },
    #[error("no reply after {attempts} attempts")]
    TimedOut { attempts: u32 },
    #[error("nobody answers on {subject} (after {attempts} attempts)")]
    NoResponders { subject: String, attempts: u32 },
    #[error("NATS: {0}")]
    Transport(String),
    /// The reply is not the protobuf it should be.
    #[error("malformed reply: {0}")]
    MalformedReply(String),
    /// The ledger answered a fetch with a refusal or an error.
    #[error("{}: {} ({})", .0.status, .0.error_kind, .0.message)]
    Refused(Box<GatewayReply>),
}

/// A gateway's connection to the ledger.
#[derive(Clone, Debug)]
pub struct GatewayClient {
    client: async_nats::Client,
    gateway_id: String,
    subject_prefix: String,
    server_errors: broadcast::Sender<String>,
}

impl GatewayClient {
    /// Connects to `url` as NATS user `user`, for gateway `gateway_id`, with the
    /// default subject prefix.
    pub async fn connect(
        url: &str,
        gateway_id: &str,
        user: &str,
        password: &str,
    ) -> Result<Self, GatewayClientError> {
        Self::connect_with_prefix(url, gateway_id, user, password, DEFAULT_SUBJECT_PREFIX).await
    }

    /// Like `connect`, with another subject prefix.
    pub async fn connect_with_prefix(
        url: &str,
        gateway_id: &str,
        user: &str,
        password: &str,
        subject_prefix: &str,
    ) -> Result<Self, GatewayClientError> {
        if !is_gateway_id(gateway_id) {
            return Err(GatewayClientError::InvalidGatewayId(gateway_id.to_string()));
        }
        let (server_errors, _) = broadcast::channel(SERVER_ERRORS_BUFFERED);
        let errors = server_errors.clone();
        let client = async_nats::ConnectOptions::new()
            .user_and_password(user.to_string(), password.to_string())
            .custom_inbox_prefix(inbox_prefix(gateway_id))
            .name(format!("ansinh-gateway-{gateway_id}"))
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .event_callback(move |event| {
                let errors = errors.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        tracing::warn!("NATS server error: {e}");
                        // No receiver is fine: nobody is waiting on a request.
                        let _ = errors.send(e.to_string());
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| GatewayClientError::Connect(e.to_string()))?;
        Ok(Self {
            client,
            gateway_id: gateway_id.to_string(),
            subject_prefix: subject_prefix.to_string(),
            server_errors,
        })
    }

    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// The underlying connection (its permissions are the gateway user's).
    pub fn nats(&self) -> &async_nats::Client {
        &self.client
    }

    /// Errors the NATS server reports from now on (e.g. "Permissions Violation for
    /// Subscription to ..."), as text.
    pub fn server_errors(&self) -> broadcast::Receiver<String> {
        self.server_errors.subscribe()
    }

    /// Asks for up to `max` instructions waiting for this gateway, from the first.
    pub async fn fetch(&self, max: u32) -> Result<InstructionList, GatewayClientError> {
        self.fetch_after(max, "").await
    }

    /// Asks for up to `max` instructions waiting for this gateway after the instruction
    /// `after` (the last of the previous page; empty: from the first).
    pub async fn fetch_after(
        &self,
        max: u32,
        after: &str,
    ) -> Result<InstructionList, GatewayClientError> {
        let subject = fetch_subject(&self.subject_prefix, &self.gateway_id);
        let payload = FetchInstructions {
            max,
            after: after.to_owned(),
        }
        .encode_to_vec();
        let reply = self.request(&subject, payload.into()).await?;
        let is_failure = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLY_TYPE_HEADER))
            .is_some_and(|v| v.as_str() == REPLY_TYPE_GATEWAY_REPLY);
        if is_failure {
            let failure = GatewayReply::decode(reply.payload)
                .map_err(|e| GatewayClientError::MalformedReply(e.to_string()))?;
            return Err(GatewayClientError::Refused(Box::new(failure)));
        }
        InstructionList::decode(reply.payload)
            .map_err(|e| GatewayClientError::MalformedReply(e.to_string()))
    }

    /// Sends a signed post and returns the ledger's reply, whatever its status.
    pub async fn post(
        &self,
        signed: &SignedGatewayPost,
    ) -> Result<GatewayReply, GatewayClientError> {
        let subject = post_subject(&self.subject_prefix, &self.gateway_id);
        let reply = self
            .request(&subject, signed.encode_to_vec().into())
            .await?;
        GatewayReply::decode(reply.payload)
            .map_err(|e| GatewayClientError::MalformedReply(e.to_string()))
    }

    /// One request with up to REQUEST_ATTEMPTS_MAX attempts of REQUEST_TIMEOUT each.
    /// Fails at once with `PermissionDenied` when the NATS server refuses the publish.
    /// Public so operators (and tests) can check what the permissions allow.
    pub async fn request(
        &self,
        subject: &str,
        payload: Bytes,
    ) -> Result<async_nats::Message, GatewayClientError> {
        use async_nats::RequestErrorKind as Kind;
        let mut backoff = RETRY_BACKOFF_FIRST;
        let mut attempt = 1;
        loop {
            // Listen for the server's verdict before publishing, so it cannot be missed.
            let mut errors = self.server_errors.subscribe();
            let request = self.client.request(subject.to_string(), payload.clone());
            let denied = denied_publish(&mut errors, subject);
            let failure = tokio::select! {
                r = request => match r {
                    Ok(message) => return Ok(message),
                    Err(e) => e,
                },
                message = denied => {
                    return Err(GatewayClientError::PermissionDenied {
                        subject: subject.to_string(),
                        message,
                    });
                }
            };
            let retryable = matches!(failure.kind(), Kind::TimedOut | Kind::NoResponders);
            if !retryable {
                return Err(GatewayClientError::Transport(failure.to_string()));
            }
            if attempt >= REQUEST_ATTEMPTS_MAX {
                return Err(match failure.kind() {
                    Kind::NoResponders => GatewayClientError::NoResponders {
                        subject: subject.to_string(),
                        attempts: attempt,
                    },
                    _ => GatewayClientError::TimedOut { attempts: attempt },
                });
            }
            tracing::debug!(
                subject,
                attempt,
                "gateway request failed ({failure}); retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }
}

/// Completes with the server's message when it refuses a publish to `subject`; never
/// completes otherwise.
async fn denied_publish(errors: &mut broadcast::Receiver<String>, subject: &str) -> String {
    loop {
        match errors.recv().await {
            Ok(message) if is_publish_violation(&message, subject) => return message,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// nats-server says `Permissions Violation for Publish to "<subject>"` (older servers
/// quote with ' or not at all).
fn is_publish_violation(message: &str, subject: &str) -> bool {
    let Some(rest) = message
        .find("Permissions Violation for Publish to ")
        .map(|at| &message[at + "Permissions Violation for Publish to ".len()..])
    else {
        return false;
    };
    rest.trim().trim_matches(|c| c == '"' || c == '\'') == subject
}

#[cfg(test)]
mod tests {
    use super::is_publish_violation;

    #[test]
    fn publish_violations_are_recognised_for_their_subject_only() {
        let s = "ansinh.v1.events.01";
        assert!(is_publish_violation(
            "nats: Permissions Violation for Publish to \"ansinh.v1.events.01\"",
            s
        ));
        assert!(is_publish_violation(
            "Permissions Violation for Publish to ansinh.v1.events.01",
            s
        ));
        assert!(!is_publish_violation(
            "nats: Permissions Violation for Publish to \"ansinh.v1.events.02\"",
            s
        ));
        assert!(!is_publish_violation(
            "nats: Permissions Violation for Subscription to \"ansinh.v1.events.01\"",
            s
        ));
    }
}
