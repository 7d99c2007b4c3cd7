//! Console sessions and CSRF tokens, without server-side session state (ADR 0011).
//!
//! A session is a cookie any process of the ledger can check: `v2.<expiry unix
//! s>.<random id>.<staff id in hex>.<token binding>.<tag>`, where the tag is a keyed
//! BLAKE3 of the rest under a key derived from the ledger secret `console-session` (kept
//! in the vault's shared bucket, like the checkpoint-signing key), and the token binding
//! a hash of the hash of the staff token its reader signed in with. On every request the
//! staff id is looked up again in the live staff directory and its token's binding
//! compared with the cookie's, so a removed staff member, or one whose token was
//! replaced, is signed out at once. Each process reads the secret again at most
//! `SECRET_RECHECK_S` after it last did (`KeyCache`), so replacing it signs everyone out
//! of every process within that. The CSRF token of a session is a keyed BLAKE3 of its
//! random id (under another derived key): one per session, carried in a hidden field of
//! every form and checked on every POST; the cookie is also `SameSite=Strict`, so
//! another site's form never sends it.
//!
//! **Invariant:** a cookie whose tag does not verify (constant time), whose expiry has
//! passed, whose staff id is no longer in the directory or whose token binding is not
//! that of the id's token now (constant time) is no session: the reader is sent to sign
//! in.

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};

use crate::access::Caller;
use crate::http::auth::StaffDirectory;
use crate::personal::{Vault, VaultError};

use super::super::Api;
use super::i18n::{Lang, T};

/// How long a session lasts after sign-in: a working day at the counter. A reader must
/// sign in again after it, whatever they did in between.
pub const SESSION_LIFETIME_S: i64 = 8 * 3_600;
/// The session cookie's name where cookies are not `Secure` (`Cookies`).
pub const SESSION_COOKIE: &str = "ansinh_console";
/// The language cookie's name ("vi" or "en").
pub const LANG_COOKIE: &str = "ansinh_lang";
/// The sign-in form's own CSRF cookie (there is no session yet to bind a token to), where
/// cookies are not `Secure`.
pub const SIGN_IN_COOKIE: &str = "ansinh_sign_in";
/// The session and sign-in cookies' names where cookies are `Secure`. A browser keeps a
/// `__Host-` cookie only if it is `Secure`, for `Path=/` and with no `Domain`, so neither
/// another host of the domain nor a plain-HTTP answer can set one beside the reader's
/// (cookie tossing: a session of the attacker's, or a sign-in token they know).
pub const SECURE_SESSION_COOKIE: &str = "__Host-ansinh_console";
pub const SECURE_SIGN_IN_COOKIE: &str = "__Host-ansinh_sign_in";
/// How long a browser that was told so reaches the console only over HTTPS
/// (`Strict-Transport-Security`): a year.
pub const HSTS_MAX_AGE_S: u64 = 365 * 86_400;
/// The hidden form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// The ledger secret the session keys are derived from (`Vault::create_secret`).
pub const SECRET_NAME: &str = "console-session";
/// Random bytes of a session id.
const SESSION_ID_BYTES: usize = 16;
const SESSION_TAG_CONTEXT: &str = "ansinh v1 console session tag";
const CSRF_CONTEXT: &str = "ansinh v1 console csrf token";
/// Hashes a staff entry's token hash into the binding a cookie carries: not the token
/// hash itself, which the directory keeps to itself.
const TOKEN_BINDING_CONTEXT: &str = "ansinh v2 console session token binding";
/// The cookie format; a `v1` cookie names no token, so it is no session.
const COOKIE_VERSION: &str = "v2";
/// Largest cookie value read (a staff id is at most 40 bytes, hex 80; the cookie is
/// about 260 bytes at most: this is ample).
const COOKIE_BYTES_MAX: usize = 512;
/// Longest a process checks sessions with keys of a secret it has not read again:
/// replacing the secret (`ansinh admin end-console-sessions`) signs everyone out of every
/// running process within this. A read of one key of the vault bucket per process per
/// interval, not per request (ADR 0011).
pub const SECRET_RECHECK_S: u64 = 10;

/// The keys derived from the shared secret.
pub struct Keys {
    tag: [u8; 32],
    csrf: [u8; 32],
}

/// What a cookie whose tag verifies says.
struct Claims {
    staff_id: String,
    session_id: String,
    token_binding: blake3::Hash,
}

/// The binding of a session to the staff token whose hash is `token_hash`.
fn token_binding(token_hash: &blake3::Hash) -> blake3::Hash {
    blake3::Hasher::new_derive_key(TOKEN_BINDING_CONTEXT)
        .update(token_hash.as_bytes())
        .finalize()
}

impl Keys {
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Self {
            tag: blake3::derive_key(SESSION_TAG_CONTEXT, secret),
            csrf: blake3::derive_key(CSRF_CONTEXT, secret),
        }
    }

    fn tag(&self, body: &str) -> blake3::Hash {
        blake3::keyed_hash(&self.tag, body.as_bytes())
    }

    /// A new session cookie value for `staff_id`, signed in with the token whose hash is
    /// `token_hash`, valid until `now + SESSION_LIFETIME_S`.
    pub fn issue(
        &self,
        staff_id: &str,
        token_hash: &blake3::Hash,
        now_unix_s: i64,
    ) -> Result<String, getrandom::Error> {
        let mut id = [0u8; SESSION_ID_BYTES];
        getrandom::getrandom(&mut id)?;
        let body = format!(
            "{COOKIE_VERSION}.{}.{}.{}.{}",
            now_unix_s + SESSION_LIFETIME_S,
            hex::encode(id),
            hex::encode(staff_id),
            token_binding(token_hash).to_hex()
        );
        let tag = self.tag(&body).to_hex();
        Ok(format!("{body}.{tag}"))
    }

    /// What a cookie value says, if its tag verifies and it has not expired at
    /// `now_unix_s`.
    fn check(&self, value: &str, now_unix_s: i64) -> Option<Claims> {
        if value.len() > COOKIE_BYTES_MAX {
            return None;
        }
        let (body, tag) = value.rsplit_once('.')?;
        let tag = blake3::Hash::from_hex(tag).ok()?;
        // blake3::Hash equality is constant time.
        if self.tag(body) != tag {
            return None;
        }
        let mut parts = body.split('.');
        let (Some(COOKIE_VERSION), Some(expiry), Some(id), Some(staff), Some(binding), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if expiry.parse::<i64>().ok()? <= now_unix_s {
            return None;
        }
        Some(Claims {
            staff_id: String::from_utf8(hex::decode(staff).ok()?).ok()?,
            session_id: id.to_owned(),
            token_binding: blake3::Hash::from_hex(binding).ok()?,
        })
    }

    /// The reader a cookie value signs in at `now_unix_s`, and its session id: its tag
    /// verifies, it has not expired, and its staff id is in `staff` with the token it
    /// was issued for.
    pub fn signed_in(
        &self,
        value: &str,
        staff: &StaffDirectory,
        now_unix_s: i64,
    ) -> Option<(Caller, String)> {
        let claims = self.check(value, now_unix_s)?;
        let (token_hash, caller) = staff.with_token_hash(&claims.staff_id)?;
        // blake3::Hash equality is constant time.
        (token_binding(token_hash) == claims.token_binding)
            .then(|| (caller.clone(), claims.session_id))
    }

    /// The CSRF token of session `id`.
    pub fn csrf(&self, session_id: &str) -> String {
        blake3::keyed_hash(&self.csrf, session_id.as_bytes())
            .to_hex()
            .to_string()
    }
}

/// Why the session keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// No randomness for a first secret: the host is broken.
    #[error("random: {0}")]
    Random(getrandom::Error),
    /// The vault bucket could not be read or written: NATS unreachable (retry).
    #[error("console secret: {0}")]
    Vault(#[from] VaultError),
}

/// The session keys of one process, read again from the shared secret at most
/// `SECRET_RECHECK_S` (or what `set_recheck` says) after the last read.
pub struct KeyCache {
    recheck: std::sync::OnceLock<std::time::Duration>,
    /// Held across a read of the secret, so one request reads it and the others wait
    /// for what it read.
    loaded: tokio::sync::Mutex<Option<Loaded>>,
}

struct Loaded {
    keys: std::sync::Arc<Keys>,
    read_at: tokio::time::Instant,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self {
            recheck: std::sync::OnceLock::new(),
            loaded: tokio::sync::Mutex::new(None),
        }
    }
}

impl KeyCache {
    /// Sets how long keys are used before the secret is read again (once; later calls
    /// change nothing), so a test can see a replaced secret at once.
    pub fn set_recheck(&self, recheck: std::time::Duration) {
        let _ = self.recheck.set(recheck);
    }

    /// The keys of the secret as of at most the recheck interval ago; the first process
    /// of a ledger to need the secret makes it.
    pub async fn current(&self, vault: &Vault) -> Result<std::sync::Arc<Keys>, KeysError> {
        let recheck = *self
            .recheck
            .get_or_init(|| std::time::Duration::from_secs(SECRET_RECHECK_S));
        let mut loaded = self.loaded.lock().await;
        if let Some(l) = loaded.as_ref().filter(|l| l.read_at.elapsed() < recheck) {
            return Ok(l.keys.clone());
        }
        match read_secret(vault).await {
            Ok(secret) => {
                let keys = std::sync::Arc::new(Keys::from_secret(&secret));
                *loaded = Some(Loaded {
                    keys: keys.clone(),
                    read_at: tokio::time::Instant::now(),
                });
                Ok(keys)
            }
            // The bucket unreachable: go on with the keys read last, as the staff
            // directory goes on with its last view, rather than sign everyone out of a
            // console that reads local projections; try again after another interval.
            Err(KeysError::Vault(e)) if loaded.is_some() => {
                tracing::warn!(error = %e, "console secret not read again; its last keys stay in use");
                let l = loaded.as_mut().expect("checked above");
                l.read_at = tokio::time::Instant::now();
                Ok(l.keys.clone())
            }
            Err(e) => Err(e),
        }
    }
}

/// The console secret, made when the ledger has none (its first process, or after it
/// was cleared).
async fn read_secret(vault: &Vault) -> Result<zeroize::Zeroizing<[u8; 32]>, KeysError> {
    if let Some(secret) = vault.secret(SECRET_NAME).await? {
        return Ok(secret);
    }
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::getrandom(&mut seed[..]).map_err(KeysError::Random)?;
    Ok(vault.create_secret(SECRET_NAME, &seed).await?)
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    match (blake3::Hash::from_hex(a), blake3::Hash::from_hex(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The values of cookie `name` in the request, in the order sent.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The value of cookie `name` in the request, if any (the first: for the language, which
/// decides nothing).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookie_values(headers, name).next()
}

/// What a request carries of a cookie that must come once.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent<'a> {
    Absent,
    Once(&'a str),
    /// More than once: one was planted beside the reader's own (a browser sends the one
    /// of a longer path first), and either could be the planted one, so none is taken.
    Repeated,
}

/// Cookie `name` of the request, which must come once.
pub fn sent<'a>(headers: &'a HeaderMap, name: &str) -> Sent<'a> {
    let mut values = cookie_values(headers, name);
    match (values.next(), values.next()) {
        (None, _) => Sent::Absent,
        (Some(v), None) => Sent::Once(v),
        (Some(_), Some(_)) => Sent::Repeated,
    }
}

/// How a request's cookies are named and set: `Secure` (and named `__Host-`) unless the
/// server listens on loopback only and the request did not come over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cookies {
    secure: bool,
}

impl Cookies {
    /// `Secure` when `serve` listens on an address other than loopback (`Api::secure_cookies`:
    /// it is then reached through a TLS proxy, docs/OPERATIONS.md), or when a proxy says the
    /// request came over HTTPS; plain HTTP on loopback (a desk machine, the tests) works
    /// without.
    pub fn of(api: &Api, headers: &HeaderMap) -> Self {
        let tls = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
        Cookies {
            secure: api.secure_cookies() || tls,
        }
    }

    pub fn secure(self) -> bool {
        self.secure
    }

    /// The session cookie's name.
    pub fn session(self) -> &'static str {
        if self.secure {
            SECURE_SESSION_COOKIE
        } else {
            SESSION_COOKIE
        }
    }

    /// The sign-in form's CSRF cookie's name.
    pub fn sign_in(self) -> &'static str {
        if self.secure {
            SECURE_SIGN_IN_COOKIE
        } else {
            SIGN_IN_COOKIE
        }
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for the whole site, and `Secure`
    /// where it applies, so the cookie is never sent back in clear.
    pub fn set(self, name: &str, value: &str, max_age_s: i64) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{}",
            if self.secure { "; Secure" } else { "" }
        ))
        .expect("cookie values are ASCII")
    }
}

impl FromRequestParts<Api> for Cookies {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Self::Rejection> {
        Ok(Cookies::of(api, &parts.headers))
    }
}

/// The language of a request: `?lang=` if given, else the cookie, else Vietnamese.
pub fn lang_of(parts: &Parts) -> Lang {
    let from_query = parts.uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == "lang")
            .and_then(|(_, v)| Lang::parse(v))
    });
    from_query
        .or_else(|| cookie(&parts.headers, LANG_COOKIE).and_then(Lang::parse))
        .unwrap_or_default()
}

/// The language of a page, as an extractor.
pub struct PageLang(pub Lang);

impl FromRequestParts<Api> for PageLang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &Api) -> Result<Self, Self::Rejection> {
        Ok(PageLang(lang_of(parts)))
    }
}

/// A signed-in reader: who, their CSRF token, and their language.
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    pub lang: Lang,
    /// Today in Vietnam by the service's clock (`Api::today`), as the JSON routes read
    /// it: a form's default day, the day a page prices loans on.
    pub today: chrono::NaiveDate,
    /// When the page must be on its way: the request's timeout from its arrival, less a
    /// margin to render it (`ANSWER_MARGIN`). Past the timeout the router answers the
    /// API's JSON 503 instead, and a form's page (with its idempotency key) is lost.
    pub answer_by: std::time::Instant,
}

/// Kept, of a request's timeout, to render and send the page once its work is done.
pub const ANSWER_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

impl Session {
    /// The refusal (403, nothing done) of a form that does not carry the caller's CSRF
    /// token; None when it does.
    pub fn csrf_refusal(&self, fields: &super::Fields) -> Option<Response> {
        (!tokens_equal(fields.get(CSRF_FIELD), &self.csrf))
            .then(|| super::forbidden(self.lang, self.lang.t(T::CsrfRefused)))
    }
}

/// To the sign-in page, saying why, with the session cookie cleared.
fn to_sign_in(cookies: Cookies) -> Response {
    let mut response = Redirect::to("/?expired=1").into_response();
    response
        .headers_mut()
        .insert(SET_COOKIE, cookies.set(cookies.session(), "", 0));
    response
}

pub fn now_unix_s() -> i64 {
    chrono::Utc::now().timestamp()
}

impl FromRequestParts<Api> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Response> {
        let lang = lang_of(parts);
        let cookies = Cookies::of(api, &parts.headers);
        let value = match sent(&parts.headers, cookies.session()) {
            Sent::Once(value) => value,
            Sent::Absent => return Err(Redirect::to("/").into_response()),
            Sent::Repeated => return Err(to_sign_in(cookies)),
        };
        let keys = super::keys(api)
            .await
            .map_err(|e| super::error_page(lang, &e))?;
        let Some((caller, id)) = keys.signed_in(value, &api.staff(), now_unix_s()) else {
            return Err(to_sign_in(cookies));
        };
        let arrived = parts
            .extensions
            .get::<crate::http::Arrived>()
            .map_or_else(std::time::Instant::now, |a| a.0);
        Ok(Session {
            caller,
            csrf: keys.csrf(&id),
            lang,
            today: api.today(),
            answer_by: (arrived + api.request_timeout())
                .checked_sub(ANSWER_MARGIN)
                .unwrap_or(arrived),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staff(entries: &[(&str, &str)]) -> StaffDirectory {
        let entries: Vec<_> = entries
            .iter()
            .map(|(id, token)| crate::http::auth::StaffEntry {
                token_blake3: crate::http::auth::token_hash(token).to_hex().to_string(),
                id: (*id).into(),
                role: crate::access::Role::Teller,
                unit: "0100007".into(),
            })
            .collect();
        StaffDirectory::from_entries(&entries).unwrap()
    }

    #[test]
    fn a_session_verifies_until_it_expires_and_not_after_any_change() {
        let keys = Keys::from_secret(&[7; 32]);
        let directory = staff(&[("staff:an", "ansinh_an"), ("staff:bo", "ansinh_bo")]);
        let token_hash = crate::http::auth::token_hash("ansinh_an");
        let cookie = keys.issue("staff:an", &token_hash, 1_000).unwrap();
        let (caller, id) = keys.signed_in(&cookie, &directory, 1_000).unwrap();
        assert_eq!(caller.id, "staff:an");
        assert_eq!(keys.csrf(&id).len(), 64);
        assert!(
            keys.signed_in(&cookie, &directory, 1_000 + SESSION_LIFETIME_S)
                .is_none()
        );
        // Another key, a changed expiry or staff id, garbage: no session.
        assert!(
            Keys::from_secret(&[8; 32])
                .signed_in(&cookie, &directory, 1_000)
                .is_none()
        );
        let later = cookie.replacen(
            &format!("v2.{}", 1_000 + SESSION_LIFETIME_S),
            &format!("v2.{}", 9_000 + SESSION_LIFETIME_S),
            1,
        );
        assert!(keys.signed_in(&later, &directory, 1_000).is_none());
        let other = cookie.replacen(&hex::encode("staff:an"), &hex::encode("staff:bo"), 1);
        assert!(keys.signed_in(&other, &directory, 1_000).is_none());
        assert!(keys.signed_in("garbage", &directory, 1_000).is_none());
        assert!(keys.signed_in("", &directory, 1_000).is_none());
        // Two sessions of one staff member have two CSRF tokens.
        let (_, id2) = keys
            .signed_in(
                &keys.issue("staff:an", &token_hash, 1_000).unwrap(),
                &directory,
                1_000,
            )
            .unwrap();
        assert_ne!(keys.csrf(&id), keys.csrf(&id2));
    }

    #[test]
    fn a_session_ends_with_its_staff_token() {
        let keys = Keys::from_secret(&[7; 32]);
        let cookie = keys
            .issue(
                "staff:an",
                &crate::http::auth::token_hash("ansinh_an"),
                1_000,
            )
            .unwrap();
        // The id given a new token, or gone: no session.
        assert!(
            keys.signed_in(&cookie, &staff(&[("staff:an", "ansinh_new")]), 1_000)
                .is_none()
        );
        assert!(keys.signed_in(&cookie, &staff(&[]), 1_000).is_none());
        // A cookie of the earlier format, tagged with the right key, names no token.
        let body = format!(
            "v1.{}.{}.{}",
            1_000 + SESSION_LIFETIME_S,
            "00".repeat(SESSION_ID_BYTES),
            hex::encode("staff:an")
        );
        let v1 = format!("{body}.{}", keys.tag(&body).to_hex());
        assert!(
            keys.signed_in(&v1, &staff(&[("staff:an", "ansinh_an")]), 1_000)
                .is_none()
        );
    }

    #[test]
    fn cookies_are_strict_http_only_and_secure_where_it_applies() {
        let plain = Cookies { secure: false };
        assert_eq!(
            plain.set(plain.session(), "v", 60).to_str().unwrap(),
            "ansinh_console=v; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
        );
        let secure = Cookies { secure: true };
        assert_eq!(
            secure.set(secure.session(), "v", 60).to_str().unwrap(),
            "__Host-ansinh_console=v; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
        assert_eq!(SECURE_SESSION_COOKIE, format!("__Host-{SESSION_COOKIE}"));
        assert_eq!(SECURE_SIGN_IN_COOKIE, format!("__Host-{SIGN_IN_COOKIE}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; ansinh_console=xyz; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(sent(&headers, SESSION_COOKIE), Sent::Once("xyz"));
        assert_eq!(cookie(&headers, "c"), None);
        assert_eq!(sent(&headers, "c"), Sent::Absent);
        headers.append(COOKIE, HeaderValue::from_static("ansinh_console=abc"));
        assert_eq!(sent(&headers, SESSION_COOKIE), Sent::Repeated);
    }

    #[test]
    fn tokens_compare_as_hashes() {
        let t = blake3::hash(b"x").to_hex().to_string();
        assert!(tokens_equal(&t, &t));
        assert!(!tokens_equal(&t, ""));
        assert!(!tokens_equal("", ""));
    }
}
