//! The staff and auditor web console: server-rendered HTML (maud, compiled in; no
//! script but none), served by `ansinh serve` on the same listener as the JSON API.
//!
//! Sign-in takes a staff token once and gives a session cookie (`session`); every form
//! carries the session's CSRF token and an idempotency key made when the form was
//! rendered, handed to the ledger exactly as the API's `Idempotency-Key` (`Write`), so a
//! double click or a reload of the POST records once.
//!
//! **Boundary:** pages call the same `Service` operations and projection reads as the
//! JSON handlers (`super::households::read_household`, ...). No rule is decided here:
//! refusals come from `access` and the book, and are shown in plain words beside the
//! form. Which forms a page offers follows `access::authorize_role`, so an auditor sees
//! none, and a forged POST is refused by the same check as over the API.

mod audit;
mod entitlements;
pub mod households;
pub mod i18n;
mod jobs;
mod loans;
mod reports;
pub mod session;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::access::{self, Caller, Operation};
use crate::chain::Digest;
use crate::log::Receipt;

use super::extract::IdempotencyKey;
use super::households::Write;
use super::{Api, ApiError};
use i18n::{Lang, T};
use session::{CSRF_FIELD, Cookies, PageLang, Sent, Session};

/// The hidden field carrying a form's idempotency key.
pub const IDEMPOTENCY_FIELD: &str = "idem";
/// Fields a form sends that are not part of what it asks the ledger to do: they are left
/// out of the request's fingerprint.
const PROTOCOL_FIELDS: [&str; 2] = [CSRF_FIELD, IDEMPOTENCY_FIELD];
/// Domain separation of console form fingerprints (see `Api::claim`).
const FORM_FINGERPRINT_CONTEXT: &str = "ansinh v1 console form fingerprint";
/// Most fields one form may send; more is not a form of ours.
const FORM_FIELDS_MAX: usize = 64;

/// The console's routes, merged into `http::router`.
pub fn routes() -> Router<Api> {
    Router::new()
        .route("/", get(sign_in_page))
        .route("/sign-in", post(sign_in))
        .route("/lang/{code}", get(switch_language))
        .route("/console", get(home))
        .route("/console/sign-out", post(sign_out))
        .merge(households::routes())
        .merge(loans::routes())
        .merge(reports::routes())
        .merge(audit::routes())
        .merge(jobs::routes())
        .merge(entitlements::routes())
}

/// The route's path parameters, read as the API reads them (`extract::Path`), a
/// refusal answered with the console's error page (400) in the reader's frame and
/// language: axum's own rejection is plain text, which a browser shows bare (a segment
/// that percent-decodes to bytes that are not UTF-8).
pub struct Path<T>(pub T);

impl<T> FromRequestParts<Api> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Api,
    ) -> Result<Self, Response> {
        match super::extract::Path::<T>::from_request_parts(parts, api).await {
            Ok(super::extract::Path(value)) => Ok(Path(value)),
            Err(e) => Err(refused_in_frame(parts, api, &e).await),
        }
    }
}

/// A request part the console's extractors refused, answered with its error page in the
/// reader's frame and language. Only now is the session read again, for the frame: a
/// reader not signed in gets the page without it.
async fn refused_in_frame(
    parts: &mut axum::http::request::Parts,
    api: &Api,
    e: &ApiError,
) -> Response {
    match Session::from_request_parts(parts, api).await {
        Ok(session) => error_in(&session, e),
        Err(_) => error_page(session::lang_of(parts), e),
    }
}

/// The query string, read as `axum::extract::Query` reads it, a refusal answered with
/// the console's error page (400) in the reader's frame and language, as `Path` does: a
/// page number that is not one (`?page=abc`) used to get axum's bare plain text.
pub struct Query<T>(pub T);

impl<T> FromRequestParts<Api> for Query<T>
where
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Api,
    ) -> Result<Self, Response> {
        match axum::extract::Query::<T>::from_request_parts(parts, api).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(e) => {
                let e = ApiError::InvalidParameter(e.body_text());
                Err(refused_in_frame(parts, api, &e).await)
            }
        }
    }
}

/// The session keys of the ledger secret every process shares (made by the first process
/// that needs it), read again at most `session::SECRET_RECHECK_S` after the last read, so
/// a replaced secret signs everyone out of this process too.
pub(super) async fn keys(api: &Api) -> Result<std::sync::Arc<session::Keys>, ApiError> {
    api.0
        .console_keys
        .current(&api.service().vault)
        .await
        .map_err(|e| match e {
            session::KeysError::Random(_) => ApiError::Internal(e.to_string()),
            session::KeysError::Vault(_) => ApiError::Unavailable(e.to_string()),
        })
}

// ---- forms ----------------------------------------------------------------------------

/// A submitted form's fields, in the order sent.
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn new(fields: Vec<(String, String)>) -> Self {
        Self(fields)
    }

    /// The field's value, trimmed ("" when absent).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.trim())
    }

    /// Every value sent under `name` (checkboxes).
    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.trim())
    }

    pub fn empty() -> Self {
        Self(Vec::new())
    }

    /// The day typed in the field, or `today` (dd/mm/yyyy) when it is empty: a form's
    /// default day.
    pub fn day_or_today(&self, name: &str, today: chrono::NaiveDate) -> String {
        match self.get(name) {
            "" => i18n::date(today),
            typed => typed.to_owned(),
        }
    }

    /// What the form asks, for the idempotency binding: the route and every field but the
    /// CSRF token and the key itself, sorted, so the same form sent twice is one request
    /// and the same key with other values is refused (`IdempotencyKeyReused`).
    fn fingerprint(&self, route: &str) -> Digest {
        let mut fields: Vec<&(String, String)> = self
            .0
            .iter()
            .filter(|(k, _)| !PROTOCOL_FIELDS.contains(&k.as_str()))
            .collect();
        fields.sort();
        let mut hasher = blake3::Hasher::new_derive_key(FORM_FINGERPRINT_CONTEXT);
        for part in std::iter::once(route).chain(fields.iter().flat_map(|(k, v)| [&**k, &**v])) {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        Digest(*hasher.finalize().as_bytes())
    }
}

/// A form body read as fields; a body that is not a form, or has too many fields, is
/// refused before anything is done.
pub struct FormBody(pub Fields);

impl axum::extract::FromRequest<Api> for FormBody {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, api: &Api) -> Result<Self, Response> {
        let axum::Form(fields) = axum::Form::<Vec<(String, String)>>::from_request(req, api)
            .await
            .map_err(|e| e.into_response())?;
        if fields.len() > FORM_FIELDS_MAX {
            return Err((StatusCode::BAD_REQUEST, "too many fields").into_response());
        }
        Ok(FormBody(Fields(fields)))
    }
}

/// What went wrong with a form: a message per field, and one for the whole form.
#[derive(Default)]
pub struct Problems {
    pub general: Option<String>,
    pub fields: Vec<(&'static str, String)>,
}

impl Problems {
    pub fn field(&mut self, name: &'static str, message: impl ToString) {
        self.fields.push((name, message.to_string()));
    }

    pub fn of(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, m)| m.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.general.is_none() && self.fields.is_empty()
    }

    /// A refusal of the ledger or of `access`, in plain words, placed beside the field it
    /// is about when that is clear, else above the form.
    pub fn refusal(lang: Lang, e: &ApiError) -> Self {
        let mut p = Problems::default();
        let message = plain_words(lang, e);
        match field_of(e) {
            Some(name) => p.field(name, message),
            None => p.general = Some(message),
        }
        p
    }
}

/// Which form field a refusal is about, when its kind says so.
fn field_of(e: &ApiError) -> Option<&'static str> {
    let ApiError::Rejected(r) = e else {
        return None;
    };
    let kind = r.kind();
    if kind.contains("Amount") || kind.contains("Overpayment") || kind.contains("OverApproved") {
        Some("amount")
    } else if kind.contains("Citizen") {
        Some("head_citizen_id")
    } else if kind.contains("Programme") {
        Some("programme")
    } else {
        None
    }
}

/// A refusal as people read it: what kind of refusal, in the page's language, and the
/// ledger's own reason.
pub fn plain_words(lang: Lang, e: &ApiError) -> String {
    match e {
        ApiError::Denied(access::AccessError::RoleDenied { .. }) => lang.t(T::RoleDenied).into(),
        ApiError::Denied(access::AccessError::OutsideUnit { .. }) => lang.t(T::OutsideUnit).into(),
        ApiError::Rejected(r) => format!("{}: {r}", lang.t(T::Refused)),
        ApiError::IdempotencyKeyReused => lang.t(T::KeyReused).into(),
        ApiError::Unavailable(_) | ApiError::Timeout => lang.t(T::Unavailable).into(),
        ApiError::NotFound { .. } => format!("{} ({e})", lang.t(T::NotFound)),
        // The detail goes to the server's log, not to the counter.
        ApiError::Internal(_) => {
            tracing::error!("console: {e}");
            lang.t(T::Internal).into()
        }
        // An export that failed inside the server is told as such: its detail (NATS
        // addresses, key files) is for the log. What the reader can act on (not yet
        // covered, nothing to export, too many events) is told whole.
        ApiError::Export(_) => match e.kind().as_str() {
            "LedgerUnavailable" => {
                tracing::warn!("console: {e}");
                lang.t(T::Unavailable).into()
            }
            "Internal" => {
                tracing::error!("console: {e}");
                lang.t(T::Internal).into()
            }
            _ => e.to_string(),
        },
        other => other.to_string(),
    }
}

/// A fresh idempotency key for a form being rendered.
pub fn fresh_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The hidden fields every form carries: the session's CSRF token and the form's key.
pub fn protocol_fields(session: &Session, key: &str) -> Markup {
    html! {
        input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
        input type="hidden" name=(IDEMPOTENCY_FIELD) value=(key);
    }
}

/// A labelled text field, with its refusal beside it.
pub fn text_field(label: &str, name: &str, value: &str, problems: &Problems) -> Markup {
    html! {
        label {
            span.label { (label) }
            input type="text" name=(name) id=(name) value=(value);
            @if let Some(m) = problems.of(name) { span.err data-field=(name) { (m) } }
        }
    }
}

/// A labelled choice among `(value, label)` options.
pub fn select_field(
    label: &str,
    name: &str,
    options: &[(&str, &str)],
    chosen: &str,
    problems: &Problems,
) -> Markup {
    html! {
        label {
            span.label { (label) }
            select name=(name) id=(name) {
                @for (value, text) in options {
                    option value=(value) selected[*value == chosen] { (text) }
                }
            }
            @if let Some(m) = problems.of(name) { span.err data-field=(name) { (m) } }
        }
    }
}

/// The refusal of the whole form, if any.
pub fn general_problem(problems: &Problems) -> Markup {
    html! { @if let Some(m) = &problems.general { p.err #refusal { (m) } } }
}

/// A form's write, as the API's: the form's key scoped by the caller, with the
/// fingerprint of what the form asks, or a refusal of a malformed key.
pub fn begin_write(caller: &Caller, fields: &Fields, route: &str) -> Result<Write, ApiError> {
    let (key, fingerprint) = form_key(fields, route)?;
    Ok(Write::new(caller, &key, fingerprint))
}

/// A form's write, run to its end whatever becomes of the request, and waited for until
/// the page must be on its way (`Session::answer_by`) less the longest read-back
/// (`READ_WAIT_MAX`). Past that the form comes back as it was, with its idempotency key,
/// as a 503 saying the ledger did not answer and that sending the same form again
/// records nothing twice. Otherwise such a write outlasted the router's timeout, whose
/// JSON 503 lost the form and its key: a clerk who then opened a fresh form could record
/// the write twice. The write goes on in a task of its own (dropped, it could stop
/// between claiming citizens and submitting), so the same form sent again finds it done
/// and gets its receipt.
pub async fn write_in_time<T, E>(
    session: &Session,
    work: impl Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Send + 'static,
    ApiError: From<E>,
{
    let by = session
        .answer_by
        .checked_sub(crate::http::READ_WAIT_MAX)
        .unwrap_or(session.answer_by);
    match tokio::time::timeout_at(by.into(), tokio::spawn(work)).await {
        Ok(Ok(result)) => result.map_err(ApiError::from),
        Ok(Err(failed)) => Err(ApiError::Internal(format!(
            "a console write failed: {failed}"
        ))),
        Err(_) => Err(ApiError::Timeout),
    }
}

/// What the page of a recorded write reads back to show, waited for until the page must
/// be on its way: past that the read counts as failed, and the page shows the receipt and
/// says the details will show on the household's page.
pub async fn read_back_in_time<T>(
    session: &Session,
    read: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout_at(session.answer_by.into(), read)
        .await
        .unwrap_or(Err(ApiError::Timeout))
}

/// A form's idempotency key and the fingerprint of what it asks, for work that binds the
/// key itself (a job: `http::jobs`).
pub fn form_key(fields: &Fields, route: &str) -> Result<(IdempotencyKey, Digest), ApiError> {
    let key = IdempotencyKey::parse(fields.get(IDEMPOTENCY_FIELD))?;
    Ok((key, fields.fingerprint(route)))
}

/// A form page about one household: refused (403) for a role that may not do `op`, and
/// for an id that is not a household's; else the blank form `form(household, key)`, its
/// idempotency key made now.
pub fn household_form_page(
    session: &Session,
    id: &str,
    op: Operation,
    title: &str,
    form: impl FnOnce(&crate::domain::ids::HouseholdId, &str) -> Markup,
) -> Response {
    if let Some(refused) = refuse_role(session, op) {
        return refused;
    }
    match crate::input::household(id) {
        Ok(h) => page(session.lang, title, Some(session), form(&h, &fresh_key())).into_response(),
        Err(e) => error_in(session, &e.into()),
    }
}

/// The household a form POST is about, once the form carries the session's CSRF token;
/// else the refusal to answer (nothing is done either way).
pub fn posted_household(
    session: &Session,
    id: &str,
    f: &Fields,
) -> Result<crate::domain::ids::HouseholdId, Box<Response>> {
    if let Some(refused) = session.csrf_refusal(f) {
        return Err(Box::new(refused));
    }
    crate::input::household(id).map_err(|e| Box::new(error_in(session, &e.into())))
}

/// Whether the caller's role may do `op` at all: which forms a page offers. The unit is
/// checked by the operation itself when the form is sent.
pub fn may(caller: &Caller, op: Operation) -> bool {
    access::authorize_role(caller, op).is_ok()
}

/// A form page for an operation the reader's role may not do is not shown: a 403 page
/// says so (an auditor sees no write form).
pub fn refuse_role(session: &Session, op: Operation) -> Option<Response> {
    access::authorize_role(&session.caller, op)
        .err()
        .map(|e| error_in(session, &ApiError::Denied(e)))
}

// ---- pages ----------------------------------------------------------------------------

const STYLE: &str = r#"
body{font-family:system-ui,"Noto Sans",sans-serif;margin:0;color:#1d2733;background:#f6f7f9}
header{background:#8a1c1c;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}
header a,header button{color:#fff}header .who{margin-left:auto;font-size:.9em}
header form{display:inline}header button{background:none;border:1px solid #fff;border-radius:3px;cursor:pointer}
main{padding:1em 1.5em;max-width:70em}
table{border-collapse:collapse;margin:.5em 0 1.2em;background:#fff}
td,th{border:1px solid #d5d9de;padding:.25em .6em;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code,.hash{font-family:ui-monospace,monospace;font-size:.85em;word-break:break-all}
form.card{background:#fff;border:1px solid #d5d9de;padding:.8em 1em;margin:.6em 0;max-width:44em}
label{display:block;margin:.35em 0}label .label{display:inline-block;min-width:14em}
input[type=text]{min-width:16em}
.err{color:#b00020;font-weight:600;margin-left:.6em}
.ok{color:#0b6b2b;font-weight:600}
nav.pages a{margin-right:1em}
progress{width:24em;height:1.1em}
svg text{font-family:system-ui,sans-serif;font-size:11px}
"#;

/// What a page may load (`Content-Security-Policy`, on every answer): its one inline
/// style, named by its SHA-256, and nothing else (no script, image, font or frame); its
/// forms post to this site only, and no `<base>` may move its links.
pub fn content_security_policy() -> axum::http::HeaderValue {
    static POLICY: std::sync::OnceLock<axum::http::HeaderValue> = std::sync::OnceLock::new();
    POLICY
        .get_or_init(|| {
            use sha2::Digest as _;
            let style = base64(&sha2::Sha256::digest(STYLE.as_bytes()));
            axum::http::HeaderValue::from_str(&format!(
                "default-src 'none'; style-src 'sha256-{style}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
            ))
            .expect("the policy is ASCII")
        })
        .clone()
}

/// Standard base64 with padding (RFC 4648), as a CSP hash source spells a digest.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The page frame: header with the areas the reader may use, language switch, sign-out.
pub fn page(lang: Lang, title: &str, session: Option<&Session>, body: Markup) -> Html<String> {
    framed(lang, title, session, None, body)
}

/// `page`, reloaded by the browser every `refresh_seconds` when given: a job's progress
/// without a line of script.
pub fn framed(
    lang: Lang,
    title: &str,
    session: Option<&Session>,
    refresh_seconds: Option<u32>,
    body: Markup,
) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = refresh_seconds {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (title) " · " (lang.t(T::Title)) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { (lang.t(T::Title)) }
                    @if let Some(s) = session {
                        a href="/console" { (lang.t(T::Home)) }
                        a href="/console/households" { (lang.t(T::FindHousehold)) }
                        @if s.caller.unit.len() == 7 {
                            a #nav-portfolio href={ "/console/communes/" (s.caller.unit) "/portfolio" } { (lang.t(T::Portfolio)) }
                        }
                        a href="/console/payments" { (lang.t(T::Payments)) }
                        a href="/console/audit" { (lang.t(T::Audit)) }
                    }
                    a #lang-switch href={ "/lang/" (lang.other().code()) } { (lang.other().t(T::LanguageName)) }
                    @if let Some(s) = session {
                        span.who { (lang.t(T::SignedInAs)) " " b #who { (s.caller.id) } " (" (s.caller.role.name()) ", " (s.caller.unit) ")" }
                        form method="post" action="/console/sign-out" {
                            input type="hidden" name=(CSRF_FIELD) value=(s.csrf);
                            button #sign-out type="submit" { (lang.t(T::SignOut)) }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string())
}

/// 403 with a page that says why.
pub fn forbidden(lang: Lang, why: &str) -> Response {
    let body = html! { p.err #forbidden { (why) } };
    (
        StatusCode::FORBIDDEN,
        page(lang, lang.t(T::Forbidden), None, body),
    )
        .into_response()
}

/// An error as a page with the error's own status.
pub fn error_page(lang: Lang, e: &ApiError) -> Response {
    // An internal error is logged where it is put in words (`plain_words`).
    if e.status().is_server_error() && !matches!(e, ApiError::Internal(_)) {
        tracing::error!("console: {e}");
    }
    let body = html! { p.err #refusal { (plain_words(lang, e)) } };
    (e.status(), page(lang, lang.t(T::Refused), None, body)).into_response()
}

/// An error page inside the signed-in frame.
pub fn error_in(session: &Session, e: &ApiError) -> Response {
    let lang = session.lang;
    let body = html! { p.err #refusal { (plain_words(lang, e)) } };
    (
        e.status(),
        page(lang, lang.t(T::Refused), Some(session), body),
    )
        .into_response()
}

/// The receipt of a recorded form: where the event is, and whether it was recorded
/// before (a second click or a reload records nothing more).
pub fn receipt_block(lang: Lang, receipt: &Receipt) -> Markup {
    html! {
        @if receipt.duplicate {
            p.ok #duplicate { (lang.t(T::AlreadyRecorded)) }
        } @else {
            p.ok #recorded { (lang.t(T::Recorded)) }
        }
        table #receipt {
            tr { th { (lang.t(T::Partition)) } td { (receipt.partition) } }
            tr { th { (lang.t(T::Sequence)) } td #receipt-sequence { (receipt.sequence) } }
            tr { th { (lang.t(T::Hash)) } td.hash { (receipt.hash.to_hex()) } }
        }
    }
}

#[derive(serde::Deserialize)]
struct SignInQuery {
    #[serde(default)]
    expired: Option<u8>,
}

/// `GET /`: the sign-in page, or the console for a reader already signed in.
async fn sign_in_page(
    State(api): State<Api>,
    PageLang(lang): PageLang,
    cookies: Cookies,
    headers: axum::http::HeaderMap,
    query: axum::extract::Query<SignInQuery>,
) -> Response {
    // Two session cookies are none (`Sent::Repeated`): the form, to sign in again.
    if let (Sent::Once(value), Ok(keys)) =
        (session::sent(&headers, cookies.session()), keys(&api).await)
    {
        if keys
            .signed_in(value, &api.staff(), session::now_unix_s())
            .is_some()
        {
            return Redirect::to("/console").into_response();
        }
    }
    let message = query.expired.map(|_| lang.t(T::SessionExpired));
    sign_in_form(lang, cookies, message, StatusCode::OK)
}

/// The sign-in form, with a fresh sign-in CSRF token in a cookie and a hidden field.
fn sign_in_form(
    lang: Lang,
    cookies: Cookies,
    message: Option<&str>,
    status: StatusCode,
) -> Response {
    let mut nonce = [0u8; 32];
    if getrandom::getrandom(&mut nonce).is_err() {
        return error_page(lang, &ApiError::Internal("no randomness".into()));
    }
    let token = hex::encode(nonce);
    let body = html! {
        @if let Some(m) = message { p.err #sign-in-problem { (m) } }
        form.card #sign-in method="post" action="/sign-in" {
            input type="hidden" name=(CSRF_FIELD) value=(token);
            label {
                span.label { (lang.t(T::StaffToken)) }
                input type="password" name="token" id="token" autocomplete="off";
            }
            button type="submit" #sign-in-submit { (lang.t(T::SignIn)) }
        }
    };
    let mut response = (status, page(lang, lang.t(T::SignIn), None, body)).into_response();
    response.headers_mut().append(
        SET_COOKIE,
        cookies.set(cookies.sign_in(), &token, session::SESSION_LIFETIME_S),
    );
    response
}

/// `POST /sign-in`: a staff token known to the directory gives a session cookie.
async fn sign_in(
    State(api): State<Api>,
    PageLang(lang): PageLang,
    cookies: Cookies,
    headers: axum::http::HeaderMap,
    FormBody(fields): FormBody,
) -> Response {
    // Sent twice, one of them could be a token another host of the domain planted.
    let expected = match session::sent(&headers, cookies.sign_in()) {
        Sent::Once(token) => token,
        Sent::Absent | Sent::Repeated => "",
    };
    if !session::tokens_equal(fields.get(CSRF_FIELD), expected) {
        return forbidden(lang, lang.t(T::CsrfRefused));
    }
    let Some(caller) = api.staff().authenticate(fields.get("token")).cloned() else {
        return sign_in_form(
            lang,
            cookies,
            Some(lang.t(T::UnknownToken)),
            StatusCode::UNAUTHORIZED,
        );
    };
    let keys = match keys(&api).await {
        Ok(keys) => keys,
        Err(e) => return error_page(lang, &e),
    };
    // Bound to the token just presented: replacing it ends the session.
    let token_hash = crate::http::auth::token_hash(fields.get("token"));
    let value = match keys.issue(&caller.id, &token_hash, session::now_unix_s()) {
        Ok(v) => v,
        Err(e) => return error_page(lang, &ApiError::Internal(format!("random: {e}"))),
    };
    let mut response = Redirect::to("/console").into_response();
    let h = response.headers_mut();
    h.append(
        SET_COOKIE,
        cookies.set(cookies.session(), &value, session::SESSION_LIFETIME_S),
    );
    h.append(SET_COOKIE, cookies.set(cookies.sign_in(), "", 0));
    response
}

/// `POST /console/sign-out`: clears the session cookie. The cookie is the whole session
/// (ADR 0011): a copy taken before sign-out stays good until it expires.
async fn sign_out(session: Session, cookies: Cookies, FormBody(fields): FormBody) -> Response {
    if let Some(refused) = session.csrf_refusal(&fields) {
        return refused;
    }
    let mut response = Redirect::to("/").into_response();
    response
        .headers_mut()
        .append(SET_COOKIE, cookies.set(cookies.session(), "", 0));
    response
}

/// `GET /lang/{vi|en}`: remembers the language and goes back to the page it came from.
async fn switch_language(
    Path(code): Path<String>,
    cookies: Cookies,
    headers: axum::http::HeaderMap,
) -> Response {
    let lang = Lang::parse(&code).unwrap_or_default();
    // Back to the referring page of the console only: its path, never another host. A
    // path that is not the console's own is refused rather than filtered for what a
    // browser might read as a host (`//host`, and `/\host`, which browsers take as
    // `//host` in a Location).
    let back = headers
        .get(axum::http::header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.parse::<axum::http::Uri>().ok())
        .map(|u| u.path().to_owned())
        .filter(|p| {
            matches!(p.as_str(), "/" | "/sign-in" | "/console")
                || (p.starts_with("/console/") && !p.contains('\\'))
        })
        .unwrap_or_else(|| "/console".to_owned());
    let mut response = Redirect::to(&back).into_response();
    response.headers_mut().append(
        SET_COOKIE,
        cookies.set(session::LANG_COOKIE, lang.code(), 365 * 86_400),
    );
    response
}

/// `GET /console`: where to go from here.
async fn home(session: Session) -> Response {
    let lang = session.lang;
    let body = html! {
        p { (lang.t(T::SignedInAs)) " " b { (session.caller.id) } }
        (households::search_form(&session, "", &Problems::default()))
    };
    page(lang, lang.t(T::Home), Some(&session), body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console's own rule for internal failures holds for an export's too: the
    /// counter reads that the ledger is unavailable (or failed), never the detail.
    #[test]
    fn an_export_failure_is_told_without_its_detail() {
        use crate::bundle::BundleError;
        use crate::bundle::export::ExportError;
        use crate::checkpoint::CheckpointError;
        let unreachable = ApiError::Export(ExportError::Checkpoint(CheckpointError::Nats(
            "nats://10.1.2.3:4222 gone".into(),
        )));
        assert_eq!(
            plain_words(Lang::En, &unreachable),
            Lang::En.t(T::Unavailable)
        );
        let broken = ApiError::Export(ExportError::SelfCheck(BundleError::Read {
            file: "/srv/ansinh/10.1.2.3".into(),
            reason: "no such file".into(),
        }));
        assert_eq!(plain_words(Lang::En, &broken), Lang::En.t(T::Internal));
        // What the reader can act on is told whole.
        let too_many = ApiError::Export(ExportError::TooMany);
        assert_eq!(plain_words(Lang::En, &too_many), too_many.to_string());
    }

    /// The policy names the style a page carries, byte for byte (a browser applies no
    /// other), and base64 is spelled as RFC 4648's known answers.
    #[test]
    fn the_policy_allows_the_pages_own_style() {
        use sha2::Digest as _;
        for (bytes, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(bytes), text);
        }
        let html = page(Lang::Vi, "x", None, html! {}).0;
        let start = html.find("<style>").unwrap() + "<style>".len();
        let end = html.find("</style>").unwrap();
        let hash = base64(&sha2::Sha256::digest(&html.as_bytes()[start..end]));
        let policy = content_security_policy();
        let policy = policy.to_str().unwrap();
        assert!(
            policy.contains(&format!("style-src 'sha256-{hash}'")),
            "{policy}"
        );
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
    }
}
