//! The console's forms and pages over plain HTTP, without a browser: each test signs in
//! through the sign-in page as a browser would (its CSRF cookie and hidden field), then
//! reads pages and posts forms with the session cookie and the session's CSRF token.
//! Each test has its own ledger (its own stream) on the binary's nats-server, so counting
//! the log's events is exact.
//!
//! What a browser adds (rendering, a click, a reload) is in `tests/console.rs`; what is
//! here is what the server decides of a form or a page.

mod common;

use std::sync::Arc;

use ansinh::access::Role;
use ansinh::http::console::i18n::{Lang, T};
use ansinh::http::console::session::{CSRF_FIELD, SESSION_COOKIE, SIGN_IN_COOKIE};
use ansinh::http::{self, Api, StaffDirectory};
use ansinh::log::LogConfig;
use ansinh::projection::Projector;
use ansinh::service::Service;
use common::*;
use reqwest::StatusCode;

/// Tokens of the staff the tests act as.
struct Tokens {
    /// A credit officer of commune 0100007.
    officer: String,
    /// A credit officer and a branch manager of the head office (unit ""): they read
    /// every household but change none.
    head_office_officer: String,
    head_office_manager: String,
    auditor: String,
}

struct Console {
    base: String,
    /// Follows no redirect: a test looks at where a form sends the browser.
    client: reqwest::Client,
    config: LogConfig,
    service: Service,
    tokens: Tokens,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// A signed-in reader: the session cookie (as a `Cookie` header) and its CSRF token.
struct Reader {
    cookie: String,
    csrf: String,
}

/// An answer: its status, where it redirects (if it does) and its page.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    cache_control: Option<String>,
    page: String,
}

impl Answer {
    /// The page's content without its frame (the header and the style), for a failure's
    /// message.
    fn main(&self) -> &str {
        let start = self.page.find("<main>").unwrap_or(0);
        &self.page[start..]
    }

    /// Whether the page shows a refusal beside the form field `name`.
    fn refuses(&self, name: &str) -> bool {
        self.page.contains(&format!("data-field=\"{name}\""))
    }

    /// The console's own refusal page (400, in its frame) answered `path`, not axum's bare
    /// plain text.
    fn assert_refusal_page(&self, path: &str) {
        assert_eq!(
            self.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            self.page
        );
        assert!(
            self.page.starts_with("<!DOCTYPE html>") && self.page.contains("id=\"refusal\""),
            "{path}: {}",
            self.page
        );
    }

    /// The form came back refused (400), with a refusal beside each of `fields`.
    fn assert_refused_at(&self, fields: &[&str]) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "{}", self.main());
        for field in fields {
            assert!(self.refuses(field), "{field}: {}", self.main());
        }
    }
}

/// A ledger serving the API and the console on a free loopback port.
async fn console() -> Console {
    console_with_clock(None).await
}

/// `console`, with the service's clock reading `instant` (RFC 3339) for ever when given.
async fn console_with_clock(instant: Option<&str>) -> Console {
    console_with(instant, None).await
}

/// `console_with_clock`, with requests given `request_timeout` rather than the API's.
async fn console_with(
    instant: Option<&str>,
    request_timeout: Option<std::time::Duration>,
) -> Console {
    console_listening(instant, request_timeout, "127.0.0.1:0").await
}

/// `console_with`, listening on `listen` (`serve` decides how cookies are set from it),
/// reached on loopback.
async fn console_listening(
    instant: Option<&str>,
    request_timeout: Option<std::time::Duration>,
    listen: &str,
) -> Console {
    let (config, checkpoints) = fresh_checkpointed();
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_at(&config, &dir.path().join("store")).await;
    let vault = Arc::new(vault_for(&ledger, &dir.path().join("secrets")).await);
    let projector = Arc::new(Projector::of_store(ledger.store()).unwrap());
    let service = Service::new(ledger, vault, projector);
    let path = dir.path().join(http::STAFF_FILE);
    let add = |id: &str, role, unit: &str| http::auth::add_staff(&path, id, role, unit).unwrap();
    let tokens = Tokens {
        officer: add("staff:officer", Role::CreditOfficer, "0100007"),
        head_office_officer: add("staff:hq-officer", Role::CreditOfficer, ""),
        head_office_manager: add("staff:hq-manager", Role::BranchManager, ""),
        auditor: add("staff:auditor", Role::Auditor, ""),
    };
    let api = Api::new(service.clone(), StaffDirectory::load(&path).unwrap())
        .await
        .unwrap();
    api.set_checkpoints(checkpoints);
    if let Some(instant) = instant {
        let ms = chrono::DateTime::parse_from_rfc3339(instant)
            .unwrap()
            .timestamp_millis();
        api.set_clock(Arc::new(move || ms));
    }
    if let Some(timeout) = request_timeout {
        api.set_request_timeout(timeout);
    }
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(http::serve(listener, api, async {
        let _ = stopped.await;
    }));
    Console {
        base,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        config,
        service,
        tokens,
        _stop: stop,
        _dir: dir,
    }
}

/// The value of cookie `name` that an answer sets.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The whole `Set-Cookie` line that sets cookie `name` in an answer, attributes included.
fn set_cookie_line(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The value of the first hidden field `name` on a page.
fn hidden_field(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} on the page: {page}"))
        + marker.len();
    let end = start + page[start..].find('"').unwrap();
    page[start..end].to_owned()
}

/// The text of the element with id `id` on a page (no markup inside it).
fn text_of(page: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} on the page: {page}"))
        + marker.len();
    let end = start + page[start..].find('<').unwrap();
    page[start..end].to_owned()
}

/// A form body, each name and value percent-encoded (UTF-8) as a browser sends them.
fn form_body(fields: &[(&str, &str)]) -> String {
    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                other => format!("%{other:02X}"),
            })
            .collect()
    }
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Console {
    /// Signs in through the sign-in page with `token`, as a browser does.
    async fn sign_in(&self, token: &str) -> Reader {
        let form = self
            .client
            .get(format!("{}/", self.base))
            .send()
            .await
            .unwrap();
        let sign_in = set_cookie(&form, SIGN_IN_COOKIE).expect("a sign-in cookie");
        let page = form.text().await.unwrap();
        assert_eq!(hidden_field(&page, CSRF_FIELD), sign_in);
        let signed_in = self
            .client
            .post(format!("{}/sign-in", self.base))
            .header("cookie", format!("{SIGN_IN_COOKIE}={sign_in}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[(CSRF_FIELD, &sign_in), ("token", token)]))
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
        let session = set_cookie(&signed_in, SESSION_COOKIE).expect("a session cookie");
        let cookie = format!("{SESSION_COOKIE}={session}");
        let home = self.get(&cookie, "/console").await;
        assert_eq!(home.status, StatusCode::OK, "{}", home.main());
        // The session's CSRF token, as every form of the session carries it (the
        // sign-out form in the page's header is on every page).
        let csrf = hidden_field(&home.page, CSRF_FIELD);
        Reader { cookie, csrf }
    }

    async fn get(&self, cookie: &str, path: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: no answer: {e}"));
        answer(response).await
    }

    /// Posts a form of `reader`'s session, with its CSRF token and the idempotency key
    /// `key` the form would carry.
    async fn post(
        &self,
        reader: &Reader,
        path: &str,
        key: &str,
        fields: &[(&str, &str)],
    ) -> Answer {
        let mut all = vec![(CSRF_FIELD, reader.csrf.as_str()), ("idem", key)];
        all.extend_from_slice(fields);
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", &reader.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&all))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: no answer: {e}"));
        answer(response).await
    }

    async fn events(&self) -> u64 {
        event_count(&self.config).await
    }

    /// Registers `household` through the form as `reader`, with a head and one member.
    async fn register(&self, reader: &Reader, household: &str, person: &Person<'_>) {
        let registered = self
            .post(
                reader,
                "/console/households/new",
                &format!("register-{household}"),
                &register_fields(household, person),
            )
            .await;
        assert_eq!(registered.status, StatusCode::OK, "{}", registered.main());
        assert!(
            registered.page.contains("id=\"recorded\""),
            "{}",
            registered.main()
        );
    }

    /// Classifies `household` through the form as `reader`, with `income` a person a
    /// month and three deprivations, under the standard in force on 10/01/2026.
    async fn classify(&self, reader: &Reader, household: &str, key: &str, income: &str) -> Answer {
        self.post(
            reader,
            &format!("/console/households/{household}/classify"),
            key,
            &classify_fields(income),
        )
        .await
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let cache_control = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Answer {
        status,
        location,
        cache_control,
        page: response.text().await.unwrap(),
    }
}

/// The classify form's fields: `income` a person a month, three deprivations, the
/// review of 2026 decided on 10/01/2026.
fn classify_fields(income: &str) -> Vec<(&str, &str)> {
    vec![
        ("income_per_person", income),
        ("area", "rural"),
        ("deprived", "employment"),
        ("deprived", "nutrition"),
        ("deprived", "drinking_water"),
        ("review_year", "2026"),
        ("decided_on", "10/01/2026"),
    ]
}

/// `fields` with every value of `name` replaced by `values`.
fn replaced<'a>(
    fields: &[(&'a str, &'a str)],
    name: &'a str,
    values: &[&'a str],
) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<_> = fields.iter().copied().filter(|(k, _)| *k != name).collect();
    out.extend(values.iter().map(|v| (name, *v)));
    out
}

/// The people of a household as the register form takes them.
struct Person<'a> {
    head: &'a str,
    head_id: &'a str,
    member: &'a str,
    relation: &'a str,
}

fn register_fields<'a>(household: &'a str, p: &Person<'a>) -> Vec<(&'a str, &'a str)> {
    vec![
        ("household_id", household),
        ("area", "rural"),
        ("registered_on", "05/01/2026"),
        ("head_name", p.head),
        ("head_citizen_id", p.head_id),
        ("phone", ""),
        ("member1_name", p.member),
        ("member1_citizen_id", ""),
        ("member1_relation", p.relation),
    ]
}

/// No other site shows a console page in a frame of its own, and the language switch
/// goes back only to a console page of this site, never to what a browser would read as
/// another host.
#[tokio::test]
async fn console_pages_refuse_frames_and_the_language_switch_stays_on_the_console() {
    let c = console().await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let page = c
        .client
        .get(format!("{}/console", c.base))
        .header("cookie", &officer.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    // Nothing but the page's own style, and forms that post to this site only: markup
    // slipped into a page could neither run a script nor send a form elsewhere.
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "style-src 'sha256-",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive}: {policy}");
    }
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    for (referer, back) in [
        (
            "http://h/console/households/0100007-000101",
            "/console/households/0100007-000101",
        ),
        ("http://h/console", "/console"),
        ("http://h/sign-in", "/sign-in"),
        ("http://h/\\evil.example/x", "/console"),
        ("http://h//evil.example/x", "/console"),
        ("http://h/v1/households", "/console"),
        ("http://h/lang/en", "/console"),
    ] {
        let switched = c
            .client
            .get(format!("{}/lang/en", c.base))
            .header("cookie", &officer.cookie)
            .header("referer", referer)
            .send()
            .await
            .unwrap();
        assert!(switched.status().is_redirection(), "{referer}");
        assert_eq!(switched.headers()["location"], back, "{referer}");
    }
}

#[tokio::test]
async fn the_head_office_reads_a_household_without_its_personal_data() {
    let c = console().await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let h = "0100007-000101";
    let person = Person {
        head: "Lương Thị Bích Ngọc",
        head_id: "001095000101",
        member: "Trịnh Quốc Bảo",
        relation: "con trai",
    };
    c.register(&officer, h, &person).await;
    let path = format!("/console/households/{h}");
    // The commune's officer keeps the registry: the names are shown to them.
    let theirs = c.get(&officer.cookie, &path).await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.main());
    assert_eq!(text_of(&theirs.page, "head-name"), person.head);
    assert!(theirs.page.contains(person.member), "{}", theirs.main());
    // No browser keeps a copy of the page for Back to show after sign-out.
    assert_eq!(theirs.cache_control.as_deref(), Some("no-store"));
    // The head office may read the household (its standing, loans, history) but may not
    // change it: no name, no relation, in clear, for either role that could elsewhere.
    for token in [&c.tokens.head_office_officer, &c.tokens.head_office_manager] {
        let reader = c.sign_in(token).await;
        let page = c.get(&reader.cookie, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.main());
        assert_eq!(text_of(&page.page, "household-id"), h);
        for shown in [
            person.head,
            person.member,
            person.relation,
            "id=\"head-name\"",
            "id=\"members\"",
        ] {
            assert!(!page.page.contains(shown), "{shown} shown: {}", page.main());
        }
    }
}

/// A form's default day is the service's today, as the JSON routes read it, not the
/// system clock's: they differ when the service's clock is set (the demo's year, tests),
/// and an untouched form dated by the system clock was refused as dated ahead.
#[tokio::test]
async fn a_forms_default_day_is_the_services_today() {
    // 02:00 UTC is 09:00 in Vietnam, the same day.
    let c = console_with_clock(Some("2026-03-15T02:00:00Z")).await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let form = c.get(&officer.cookie, "/console/households/new").await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.main());
    assert!(
        form.page
            .contains("id=\"registered_on\" value=\"15/03/2026\""),
        "{}",
        form.main()
    );
}

/// A classification the ledger recorded is shown as recorded, with its receipt, though
/// the household's view cannot be read back after it (here the projections stop at it):
/// it used to come back as the form refused with "the ledger is not answering", and a
/// clerk who then opened a new form recorded a second decision.
#[tokio::test]
async fn a_recorded_classification_is_shown_recorded_when_its_view_cannot_be_read_back() {
    let c = console().await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let h = "0100007-000103";
    let person = Person {
        head: "Mai Văn Bình",
        head_id: "001095000103",
        member: "Mai Thị Lan",
        relation: "vợ",
    };
    c.register(&officer, h, &person).await;
    let mut stream = c.service.ledger.stream().clone();
    let last = ansinh::log::reader::last_stream_sequence(&mut stream)
        .await
        .unwrap();
    c.service.projector.stop_at_for_tests(last + 1);
    let before = c.events().await;
    let classified = c
        .classify(&officer, h, "classify-unread", "1.200.000")
        .await;
    assert_eq!(classified.status, StatusCode::OK, "{}", classified.main());
    assert!(
        classified.page.contains("id=\"details-not-yet\""),
        "{}",
        classified.main()
    );
    assert!(
        classified.page.contains("id=\"recorded\""),
        "the receipt: {}",
        classified.main()
    );
    assert_eq!(c.events().await, before + 1);
}

/// A form whose write outlasts the time its page has comes back as it was, with its key
/// and a 503 in the console's words, not the router's JSON 503 that loses the form and
/// its key (a fresh form could then record the write twice); sent again once the ledger
/// answers, the same form is recorded once.
#[tokio::test]
async fn a_write_that_outlasts_its_time_gives_back_the_same_form() {
    // The page's time less the longest read-back is what the write gets: one second here.
    let timeout = http::READ_WAIT_MAX + std::time::Duration::from_secs(3);
    let c = console_with(None, Some(timeout)).await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let h = "0100007-000104";
    let person = Person {
        head: "Mai Văn Tâm",
        head_id: "001095000104",
        member: "Mai Thị Thu",
        relation: "vợ",
    };
    c.register(&officer, h, &person).await;
    let before = c.events().await;
    let held = c.service.ledger.hold_publishes().await;
    let late = c.classify(&officer, h, "classify-late", "1.200.000").await;
    assert_eq!(
        late.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        late.main()
    );
    assert!(
        late.page.contains("form class=\"card\" id=\"classify\""),
        "the form again: {}",
        late.main()
    );
    assert_eq!(hidden_field(&late.page, "idem"), "classify-late");
    assert_eq!(
        text_of(&late.page, "refusal"),
        Lang::Vi.t(T::Unavailable),
        "{}",
        late.main()
    );
    drop(held);
    let again = c.classify(&officer, h, "classify-late", "1.200.000").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.main());
    // The first sending went on once the ledger answered; this one finds it done.
    assert!(again.page.contains("id=\"duplicate\""), "{}", again.main());
    assert_eq!(c.events().await, before + 1);
}

#[tokio::test]
async fn a_household_without_income_is_classified_from_the_console() {
    let c = console().await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let h = "0100007-000102";
    let person = Person {
        head: "Mai Văn Thắng",
        head_id: "001095000102",
        member: "Mai Thị Hoa",
        relation: "vợ",
    };
    c.register(&officer, h, &person).await;
    let before = c.events().await;
    let classified = c.classify(&officer, h, "classify-zero", "0").await;
    assert_eq!(classified.status, StatusCode::OK, "{}", classified.main());
    assert!(
        !classified.refuses("income_per_person"),
        "{}",
        classified.main()
    );
    assert_eq!(text_of(&classified.page, "result-class"), "poor");
    assert_eq!(c.events().await, before + 1);
    // What is not an amount at all is still refused beside the field, recording nothing.
    for (n, typed) in ["-1", "không", ""].into_iter().enumerate() {
        let refused = c
            .classify(&officer, h, &format!("classify-refused-{n}"), typed)
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{typed:?}");
        assert!(
            refused.refuses("income_per_person"),
            "{typed:?}: {}",
            refused.main()
        );
    }
    assert_eq!(c.events().await, before + 1);
}

#[tokio::test]
async fn the_register_form_refuses_what_the_api_refuses_beside_each_field() {
    let c = console().await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let h = "0100007-000103";
    let person = Person {
        head: "Cao Thị Lan",
        head_id: "001095000103",
        member: "Cao Văn Nam",
        relation: "con",
    };
    let before = c.events().await;
    // A phone that is not a number and an area the API does not know: 400, both named,
    // nothing appended (an unknown area is not taken for rural).
    let mut fields = register_fields(h, &person);
    fields.retain(|(k, _)| !matches!(*k, "phone" | "area"));
    fields.extend([("phone", "call neighbour"), ("area", "URBAN")]);
    let refused = c
        .post(&officer, "/console/households/new", "register-bad", &fields)
        .await;
    refused.assert_refused_at(&["phone", "area"]);
    assert_eq!(c.events().await, before);
    // A relation longer than the API's 50 characters, alone: refused beside it.
    let long = "c".repeat(51);
    let mut fields = register_fields(h, &person);
    fields.retain(|(k, _)| *k != "member1_relation");
    fields.push(("member1_relation", &long));
    let refused = c
        .post(
            &officer,
            "/console/households/new",
            "register-long",
            &fields,
        )
        .await;
    refused.assert_refused_at(&["member1_relation"]);
    assert_eq!(c.events().await, before);
    // A member row with a citizen id and a relation but no name is a member to record,
    // not a row to drop: refused beside the name, in the page's words.
    let mut fields = register_fields(h, &person);
    fields.retain(|(k, _)| !matches!(*k, "member1_name" | "member1_citizen_id"));
    fields.extend([
        ("member1_name", " "),
        ("member1_citizen_id", "001190000103"),
    ]);
    let refused = c
        .post(
            &officer,
            "/console/households/new",
            "register-noname",
            &fields,
        )
        .await;
    refused.assert_refused_at(&["member1_name"]);
    assert!(
        refused.page.contains(Lang::Vi.t(T::MemberNameMissing)),
        "{}",
        refused.main()
    );
    assert_eq!(c.events().await, before);
    // The API refuses the same values in its JSON (the rule the form follows).
    for (phone, area, relation) in [
        ("call neighbour", "rural", "con"),
        ("0912345678", "URBAN", "con"),
        ("0912345678", "rural", long.as_str()),
    ] {
        let response = c
            .client
            .post(format!("{}/v1/households", c.base))
            .bearer_auth(&c.tokens.officer)
            .header("idempotency-key", "api-register")
            .json(&serde_json::json!({
                "household_id": h, "area": area, "registered_on": "2026-01-05",
                "personal": {
                    "head_name": person.head, "head_citizen_id": person.head_id,
                    "phone": phone,
                    "members": [{"name": person.member, "relation": relation}]
                }
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{phone} {area}");
    }
    assert_eq!(c.events().await, before);
    // The same form with a phone number and a known area records the household.
    let mut fields = register_fields(h, &person);
    fields.retain(|(k, _)| !matches!(*k, "phone" | "area"));
    fields.extend([("phone", "+84912345678"), ("area", "urban")]);
    let recorded = c
        .post(
            &officer,
            "/console/households/new",
            "register-good",
            &fields,
        )
        .await;
    assert_eq!(recorded.status, StatusCode::OK, "{}", recorded.main());
    assert!(
        recorded.page.contains("id=\"recorded\""),
        "{}",
        recorded.main()
    );
    assert_eq!(c.events().await, before + 1);
}

#[tokio::test]
async fn loan_and_grant_forms_refuse_a_choice_the_api_does_not_offer() {
    let c = console().await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let h = "0100007-000104";
    let person = Person {
        head: "Kiều Thị Mận",
        head_id: "001095000104",
        member: "Kiều Văn Tùng",
        relation: "chồng",
    };
    c.register(&officer, h, &person).await;
    let classified = c.classify(&officer, h, "classify-104", "1.200.000").await;
    assert_eq!(text_of(&classified.page, "result-class"), "poor");
    let approve_path = format!("/console/households/{h}/loans/new");
    let approval = |entrusted: &'static str| {
        [
            ("programme", "POOR_HOUSEHOLD"),
            ("amount", "30.000.000"),
            ("term_months", "36"),
            ("savings_group", "TK-01"),
            ("entrusted", entrusted),
            ("on", "02/02/2026"),
            ("reason", "vay sản xuất"),
        ]
    };
    let before = c.events().await;
    // An organisation the API does not know is refused, not taken for the Women's Union.
    let refused = c
        .post(
            &officer,
            &approve_path,
            "approve-bad",
            &approval("red_cross"),
        )
        .await;
    refused.assert_refused_at(&["entrusted"]);
    assert_eq!(c.events().await, before);
    let approved = c
        .post(
            &officer,
            &approve_path,
            "approve-good",
            &approval("farmers_union"),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.main());
    let loan = text_of(&approved.page, "loan-ref");
    assert_eq!(c.events().await, before + 1);

    // A disbursement channel the API does not know is refused, not taken for the
    // commune point.
    let disburse_path = format!("/console/loans/{loan}/disburse?household={h}");
    let disbursement = |channel: &'static str| {
        [
            ("amount", "30.000.000"),
            ("channel", channel),
            ("on", "05/02/2026"),
        ]
    };
    let refused = c
        .post(
            &officer,
            &disburse_path,
            "disburse-bad",
            &disbursement("cash"),
        )
        .await;
    refused.assert_refused_at(&["channel"]);
    assert_eq!(c.events().await, before + 1);
    let disbursed = c
        .post(
            &officer,
            &disburse_path,
            "disburse-good",
            &disbursement("bank_transfer"),
        )
        .await;
    assert_eq!(disbursed.status, StatusCode::OK, "{}", disbursed.main());
    assert!(
        disbursed.page.contains("id=\"recorded\""),
        "{}",
        disbursed.main()
    );
    assert_eq!(c.events().await, before + 2);

    // A payment channel the API does not know is refused, not taken for a bank account.
    let grant_path = format!("/console/households/{h}/entitlements/new");
    let grant = |channel: &'static str| {
        [
            ("member", "m1"),
            ("category", "ELDERLY_80_PLUS_NO_PENSION"),
            ("channel", channel),
            ("gateway", "vcb"),
            ("from", "2026-02"),
            ("on", "01/02/2026"),
        ]
    };
    let refused = c
        .post(&officer, &grant_path, "grant-bad", &grant("carrier_pigeon"))
        .await;
    refused.assert_refused_at(&["channel"]);
    assert_eq!(c.events().await, before + 2);
    let granted = c
        .post(&officer, &grant_path, "grant-good", &grant("post_office"))
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.main());
    assert!(
        granted.page.contains("id=\"entitlement-number\""),
        "{}",
        granted.main()
    );
    assert_eq!(c.events().await, before + 3);
}

#[tokio::test]
async fn one_scan_key_sent_to_another_partition_is_refused_not_redirected() {
    let c = console().await;
    // A household in each of two provinces: both partitions are known to the ledger.
    register_household(&c.service, "0100007-000105", 105).await;
    register_household(&c.service, "7900007-000105", 106).await;
    let auditor = c.sign_in(&c.tokens.auditor).await;
    let scan = [("report", "recompute")];
    let first = c
        .post(
            &auditor,
            "/console/audit/partitions/01/scans",
            "scan-1",
            &scan,
        )
        .await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.main());
    let first_job = first.location.expect("the job's page");
    assert!(first_job.starts_with("/console/jobs/"), "{first_job}");
    // The same form again finds the same job.
    let again = c
        .post(
            &auditor,
            "/console/audit/partitions/01/scans",
            "scan-1",
            &scan,
        )
        .await;
    assert_eq!(again.location.as_deref(), Some(first_job.as_str()));
    // The same key and body for partition 79 asks for another scan: refused as a reused
    // key, in plain words; it does not send the reader to partition 01's job.
    let other = c
        .post(
            &auditor,
            "/console/audit/partitions/79/scans",
            "scan-1",
            &scan,
        )
        .await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?} {}",
        other.location,
        other.main()
    );
    assert!(
        other.page.contains(Lang::Vi.t(T::KeyReused)),
        "{}",
        other.main()
    );
    // Under a fresh key, partition 79's scan starts: a job of its own.
    let fresh = c
        .post(
            &auditor,
            "/console/audit/partitions/79/scans",
            "scan-2",
            &scan,
        )
        .await;
    assert_eq!(fresh.status, StatusCode::SEE_OTHER, "{}", fresh.main());
    let fresh_job = fresh.location.expect("the job's page");
    assert_ne!(fresh_job, first_job);
}

#[tokio::test]
async fn the_largest_page_number_is_answered() {
    let c = console().await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let h = "0100007-000106";
    let person = Person {
        head: "Lâm Thị Xuân",
        head_id: "001095000106",
        member: "Lâm Văn Đức",
        relation: "con",
    };
    c.register(&officer, h, &person).await;
    let auditor = c.sign_in(&c.tokens.auditor).await;
    let started = c
        .post(
            &auditor,
            "/console/audit/partitions/01/scans",
            "scan-pages",
            &[("report", "recompute")],
        )
        .await;
    let job = started.location.expect("the job's page");
    let last = u64::MAX.to_string();
    for (reader, path) in [
        (&auditor, format!("{job}?page={last}")),
        (&auditor, format!("{job}?page={}", u64::MAX - 1)),
        (&officer, format!("/console/households/{h}?page={last}")),
    ] {
        // An answer, not a dropped connection (an overflow would panic the handler).
        let page = c.get(&reader.cookie, &path).await;
        assert!(
            matches!(page.status, StatusCode::OK | StatusCode::BAD_REQUEST),
            "{path}: {}",
            page.status
        );
        // A page past the last one offers no next page.
        assert!(!page.page.contains("-next\""), "{path}: {}", page.main());
    }
}

#[tokio::test]
async fn the_forms_numbers_codes_and_names_keep_the_apis_bounds() {
    let c = console().await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let h = "0100007-000107";
    let person = Person {
        head: "Tôn Nữ Minh Châu",
        head_id: "001095000107",
        member: "Tôn Thất Quang",
        relation: "con",
    };
    c.register(&officer, h, &person).await;
    let classified = c.classify(&officer, h, "classify-107", "1.200.000").await;
    assert_eq!(text_of(&classified.page, "result-class"), "poor");
    let before = c.events().await;
    let classify = classify_fields("1.200.000");
    let approve = [
        ("programme", "POOR_HOUSEHOLD"),
        ("amount", "30.000.000"),
        ("term_months", "36"),
        ("savings_group", "TK-01"),
        ("entrusted", "womens_union"),
        ("on", "02/02/2026"),
        ("reason", "vay sản xuất"),
    ];
    let grant = [
        ("member", "m1"),
        ("category", "ELDERLY_80_PLUS_NO_PENSION"),
        ("channel", "bank"),
        ("gateway", "vcb"),
        ("from", "2026-02"),
        ("on", "01/02/2026"),
    ];
    let long_group = "Tổ tiết kiệm và vay vốn thôn Đông, xã Yên Phú, huyện Yên Mỹ, tỉnh Hưng Yên";
    assert!(long_group.chars().count() > 64);
    let classify_path = format!("/console/households/{h}/classify");
    let approve_path = format!("/console/households/{h}/loans/new");
    let grant_path = format!("/console/households/{h}/entitlements/new");
    // Each a value the API's schema refuses, alone in an otherwise good form: refused
    // beside its field, 400, nothing appended.
    for (n, (path, fields, field)) in [
        (
            &classify_path,
            replaced(&classify, "deprived", &["nutrition", "nutrition"]),
            "deprived",
        ),
        (
            &classify_path,
            replaced(&classify, "deprived", &["clean water"]),
            "deprived",
        ),
        (
            &classify_path,
            replaced(&classify, "review_year", &["2101"]),
            "review_year",
        ),
        (
            &classify_path,
            replaced(&classify, "corrects", &["0"]),
            "corrects",
        ),
        (
            &approve_path,
            replaced(&approve, "savings_group", &[long_group]),
            "savings_group",
        ),
        (
            &approve_path,
            replaced(&approve, "term_months", &["601"]),
            "term_months",
        ),
        (
            &approve_path,
            replaced(&approve, "term_months", &["+36"]),
            "term_months",
        ),
        (
            &approve_path,
            replaced(&approve, "programme", &["poor household"]),
            "programme",
        ),
        (
            &grant_path,
            replaced(&grant, "category", &["elderly 80+"]),
            "category",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let refused = c
            .post(&officer, path, &format!("bounds-{n}"), &fields)
            .await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{field}: {}",
            refused.main()
        );
        assert!(refused.refuses(field), "{field}: {}", refused.main());
        assert_eq!(c.events().await, before, "{field}");
    }
    // The same forms with good values are recorded.
    for (path, fields, key) in [
        (&approve_path, &approve[..], "approve-107"),
        (&grant_path, &grant[..], "grant-107"),
    ] {
        let recorded = c.post(&officer, path, key, fields).await;
        assert_eq!(
            recorded.status,
            StatusCode::OK,
            "{path}: {}",
            recorded.main()
        );
        assert!(
            recorded.page.contains("id=\"recorded\""),
            "{}",
            recorded.main()
        );
    }
    assert_eq!(c.events().await, before + 2);
}

/// A register request with `phone`, `area` and a member of `relation`, as the API takes it.
fn register_request(phone: &str, area: &str, relation: &str) -> serde_json::Value {
    serde_json::json!({
        "household_id": "0100007-000199", "area": area, "registered_on": "2026-01-05",
        "personal": {
            "head_name": "Hồ Thị Thu", "head_citizen_id": "001095000199", "phone": phone,
            "members": [{"name": "Hồ Văn Vũ", "relation": relation}]
        }
    })
}

proptest::proptest! {
    /// The parsers the register form reads its phone, area and relations with accept
    /// exactly what the API's schema accepts.
    #[test]
    fn the_register_forms_rules_are_the_apis_schema(
        phone in "\\+{0,2}[0-9a -]{0,17}",
        area in "(rural|urban|URBAN|Rural|city|)",
        relation_chars in 0usize..60,
    ) {
        static SCHEMAS: std::sync::OnceLock<http::Schemas> = std::sync::OnceLock::new();
        let schemas = SCHEMAS.get_or_init(http::Schemas::compile);
        // A letter of two bytes: the limit is in characters, as the schema counts them.
        let relation = "ậ".repeat(relation_chars);
        let valid = |phone: &str, area: &str, relation: &str| {
            schemas
                .validate("register-household.request", &register_request(phone, area, relation))
                .is_ok()
        };
        proptest::prop_assert_eq!(
            ansinh::input::phone(&phone).is_ok(),
            valid(&phone, "rural", "con"),
            "phone {:?}", phone
        );
        proptest::prop_assert_eq!(
            ansinh::input::area(&area).is_ok(),
            valid("0912345678", &area, "con"),
            "area {:?}", area
        );
        proptest::prop_assert_eq!(
            ansinh::input::relation(&relation).is_ok(),
            valid("0912345678", "rural", &relation),
            "relation of {} characters", relation_chars
        );
    }
}

/// A path segment no parser can read (bytes that are not UTF-8 once percent-decoded) is
/// answered on every console route that takes one with the console's own error page
/// (400), as the API answers it in its JSON error body: never the framework's plain text.
/// A query parameter that does not read (a page number that is not one) is answered
/// with the console's own refusal page (400), as a bad path segment is, not axum's bare
/// plain text.
#[tokio::test]
async fn a_query_parameter_that_does_not_read_is_answered_with_a_console_page() {
    let c = console().await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let auditor = c.sign_in(&c.tokens.auditor).await;
    for (reader, path) in [
        (&officer, "/console/households/0100007-000001?page=abc"),
        (&officer, "/console/households/0100007-000001?page=-1"),
        (&officer, "/console/households/0100007-000001?after=x"),
        (
            &auditor,
            "/console/jobs/0123456789abcdef0123456789abcdef?page=x",
        ),
    ] {
        c.get(&reader.cookie, path).await.assert_refusal_page(path);
    }
}

#[tokio::test]
async fn a_path_segment_that_is_not_text_is_answered_with_a_console_page() {
    let c = console().await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let auditor = c.sign_in(&c.tokens.auditor).await;
    for (reader, path) in [
        (&officer, "/console/households/%FF"),
        (&officer, "/console/households/%FF/classify"),
        (&officer, "/console/households/%FF/loans/new"),
        (&officer, "/console/households/%FF/entitlements/new"),
        (&officer, "/console/loans/%FF-L1/disburse"),
        (&officer, "/console/loans/01-L1/%FF"),
        (&officer, "/console/communes/%FF/portfolio"),
        (&auditor, "/console/audit/partitions/%FF"),
        (&auditor, "/console/audit/partitions/%FF/inclusion"),
        (&auditor, "/console/audit/partitions/%FF/inclusion.json"),
        (&auditor, "/console/jobs/%FF"),
        (&officer, "/lang/%FF"),
    ] {
        c.get(&reader.cookie, path).await.assert_refusal_page(path);
    }
    let before = c.events().await;
    let posted = c
        .post(
            &auditor,
            "/console/audit/partitions/%FF/scans",
            "scan-bad-path",
            &[("report", "recompute")],
        )
        .await;
    assert_eq!(posted.status, StatusCode::BAD_REQUEST, "{}", posted.page);
    assert!(posted.page.contains("id=\"refusal\""), "{}", posted.page);
    assert_eq!(c.events().await, before);
}

/// A console whose staff are the ledger's directory bucket, followed live as `serve`
/// follows it, with that directory; it reads the session secret again at every request,
/// so a test sees a replaced secret at once.
async fn console_on_directory() -> (Console, ansinh::directory::Directory) {
    let (config, checkpoints) = fresh_checkpointed();
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_at(&config, &dir.path().join("store")).await;
    let vault = Arc::new(vault_for(&ledger, &dir.path().join("secrets")).await);
    let projector = Arc::new(Projector::of_store(ledger.store()).unwrap());
    let directory = ansinh::directory::Directory::open(ledger.jetstream(), &config.stream_name, 1)
        .await
        .unwrap();
    let service = Service::new(ledger, vault, projector);
    let mut tokens = Vec::new();
    for (id, role, unit) in [
        ("staff:officer", Role::CreditOfficer, "0100007"),
        ("staff:hq-officer", Role::CreditOfficer, ""),
        ("staff:hq-manager", Role::BranchManager, ""),
        ("staff:auditor", Role::Auditor, ""),
    ] {
        tokens.push(directory.add_staff(id, role, unit).await.unwrap().0);
    }
    let [officer, head_office_officer, head_office_manager, auditor] =
        <[String; 4]>::try_from(tokens).unwrap();
    let api = Api::with_gateways(service.clone(), directory.staff(), None)
        .await
        .unwrap();
    api.set_checkpoints(checkpoints);
    api.set_console_secret_recheck(std::time::Duration::ZERO);
    let (base, stop) = common::serve(api).await;
    let console = Console {
        base,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        config,
        service,
        tokens: Tokens {
            officer,
            head_office_officer,
            head_office_manager,
            auditor,
        },
        _stop: stop,
        _dir: dir,
    };
    (console, directory)
}

/// A leaked token is replaced by removing the member and adding the same id again: every
/// session signed in with the old token ends then, in a running server, though the id is
/// still in the directory; the new token signs in.
#[tokio::test]
async fn a_session_ends_when_its_staff_token_is_replaced() {
    let (c, directory) = console_on_directory().await;
    let leaked = c.sign_in(&c.tokens.officer).await;
    let other = c.sign_in(&c.tokens.auditor).await;
    directory
        .remove_staff("staff:officer")
        .await
        .unwrap()
        .unwrap();
    let (token, _) = directory
        .add_staff("staff:officer", Role::CreditOfficer, "0100007")
        .await
        .unwrap();
    let old = c.get(&leaked.cookie, "/console").await;
    assert_eq!(old.status, StatusCode::SEE_OTHER, "{}", old.main());
    assert_eq!(old.location.as_deref(), Some("/?expired=1"));
    let sign_in_page = c.get(&leaked.cookie, "/").await;
    assert_eq!(
        sign_in_page.status,
        StatusCode::OK,
        "the sign-in form, not /console"
    );
    // Another member's session goes on; the new token signs in.
    assert_eq!(
        c.get(&other.cookie, "/console").await.status,
        StatusCode::OK
    );
    c.sign_in(&token).await;
}

/// Replacing the console's session secret (`admin end-console-sessions`) signs everyone
/// out of a running server; signing in again works.
#[tokio::test]
async fn replacing_the_session_secret_signs_everyone_out() {
    let (c, _directory) = console_on_directory().await;
    let reader = c.sign_in(&c.tokens.auditor).await;
    c.service
        .vault
        .replace_secret(http::console::session::SECRET_NAME, Some(&[9; 32]))
        .await
        .unwrap();
    let old = c.get(&reader.cookie, "/console").await;
    assert_eq!(old.status, StatusCode::SEE_OTHER, "{}", old.main());
    assert_eq!(old.location.as_deref(), Some("/?expired=1"));
    c.sign_in(&c.tokens.auditor).await;
}

/// A household that moved to another province is kept by the registry of its new
/// commune: the officer of the commune it left reads its page (its history, its standing)
/// without its people's names.
#[tokio::test]
async fn the_commune_a_household_left_no_longer_sees_its_people() {
    let c = console().await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let h = "0100007-000102";
    let person = Person {
        head: "Đinh Văn Khải",
        head_id: "001095000102",
        member: "Đinh Thị Mai",
        relation: "vợ",
    };
    c.register(&officer, h, &person).await;
    let path = format!("/console/households/{h}");
    let before = c.get(&officer.cookie, &path).await;
    assert_eq!(text_of(&before.page, "head-name"), person.head);
    let manager = ansinh::access::Caller {
        id: "staff:manager-01".into(),
        role: Role::BranchManager,
        unit: "01".into(),
    };
    c.service
        .move_household(
            &ansinh::service::Request {
                caller: &manager,
                idempotency_key: "move-000102",
                correlation_id: "test",
                fingerprint: None,
            },
            &ansinh::domain::ids::HouseholdId::parse(h).unwrap(),
            &ansinh::domain::ids::HouseholdId::parse("7900001-000102").unwrap(),
            ansinh::domain::eligibility::Area::Urban,
            chrono::NaiveDate::from_ymd_opt(2026, 5, 1).unwrap(),
        )
        .await
        .unwrap();
    let after = c
        .get(
            &officer.cookie,
            &format!("{path}?after={}", c.events().await),
        )
        .await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.main());
    assert_eq!(text_of(&after.page, "household-id"), h);
    for shown in [person.head, person.member, "id=\"head-name\""] {
        assert!(
            !after.page.contains(shown),
            "{shown} shown: {}",
            after.main()
        );
    }
}

/// Served on an address other than loopback, the console can be reached only through a
/// TLS proxy: its cookies are `Secure` (never sent back over plain HTTP, where anyone on
/// the way could copy a session) and named `__Host-` (which no sibling host and no
/// plain-HTTP answer can set), and its answers say to use HTTPS only (HSTS). On loopback
/// (a desk machine, these tests) they are not, unless a proxy says the request came over
/// HTTPS.
#[tokio::test]
async fn a_session_cookie_is_secure_unless_served_on_loopback() {
    let public = console_listening(None, None, "0.0.0.0:0").await;
    let form = public
        .client
        .get(format!("{}/", public.base))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    assert_eq!(
        form.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let line = set_cookie_line(&form, "__Host-ansinh_sign_in").expect("a __Host- sign-in cookie");
    assert!(
        line.contains("; Path=/;") && line.ends_with("; Secure"),
        "{line}"
    );
    assert!(set_cookie(&form, SIGN_IN_COOKIE).is_none());
    let sign_in = set_cookie(&form, "__Host-ansinh_sign_in").unwrap();
    let signed_in = public
        .client
        .post(format!("{}/sign-in", public.base))
        .header("cookie", format!("__Host-ansinh_sign_in={sign_in}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            (CSRF_FIELD, &sign_in),
            ("token", &public.tokens.officer),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let line = set_cookie_line(&signed_in, "__Host-ansinh_console").expect("a __Host- session");
    assert!(
        line.contains("; HttpOnly; SameSite=Strict") && line.ends_with("; Secure"),
        "{line}"
    );
    let session = set_cookie(&signed_in, "__Host-ansinh_console").unwrap();
    let home = public
        .get(&format!("__Host-ansinh_console={session}"), "/console")
        .await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.main());
    // The same session under the name a plain-HTTP answer could have set is none.
    let unprefixed = public
        .get(&format!("{SESSION_COOKIE}={session}"), "/console")
        .await;
    assert_eq!(unprefixed.status, StatusCode::SEE_OTHER);

    let desk = console().await;
    let form = desk
        .client
        .get(format!("{}/", desk.base))
        .send()
        .await
        .unwrap();
    let line = set_cookie_line(&form, SIGN_IN_COOKIE).expect("a sign-in cookie");
    assert!(!line.contains("Secure"), "{line}");
    assert!(form.headers().get("strict-transport-security").is_none());
    let proxied = desk
        .client
        .get(format!("{}/", desk.base))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let line = set_cookie_line(&proxied, "__Host-ansinh_sign_in").expect("a __Host- cookie");
    assert!(line.ends_with("; Secure"), "{line}");
    assert_eq!(
        proxied.headers()["strict-transport-security"],
        "max-age=31536000"
    );
}

/// A request that carries two session cookies (one planted by another host of the same
/// domain, with a longer path that the browser sends first, beside the reader's own) has
/// no session: taking either could record the reader's work under someone else's name.
#[tokio::test]
async fn two_session_cookies_are_no_session() {
    let c = console().await;
    let officer = c.sign_in(&c.tokens.officer).await;
    let auditor = c.sign_in(&c.tokens.auditor).await;
    let both = c
        .client
        .get(format!("{}/console", c.base))
        .header("cookie", format!("{}; {}", auditor.cookie, officer.cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), StatusCode::SEE_OTHER);
    assert_eq!(both.headers()["location"], "/?expired=1");
    let cleared = set_cookie_line(&both, SESSION_COOKIE).expect("the session cookie cleared");
    assert!(
        cleared.starts_with(&format!("{SESSION_COOKIE}=;")) && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // Nor is a form posted with them taken.
    let before = c.events().await;
    let posted = c
        .client
        .post(format!("{}/console/sign-out", c.base))
        .header("cookie", format!("{}; {}", auditor.cookie, officer.cookie))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[(CSRF_FIELD, &auditor.csrf)]))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.headers()["location"], "/?expired=1");
    assert_eq!(c.events().await, before);
    // Each alone is still its reader's session.
    let home = c.get(&officer.cookie, "/console").await;
    assert_eq!(text_of(&home.page, "who"), "staff:officer");
    let home = c.get(&auditor.cookie, "/console").await;
    assert_eq!(text_of(&home.page, "who"), "staff:auditor");
}
