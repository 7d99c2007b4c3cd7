//! The staff and auditor console in a real headless Chromium, driven over WebDriver
//! (chromedriver), against a real ledger on a real nats-server: one server, one ledger
//! with its HTTP listener and one chromedriver per test binary, shared by the tests;
//! each test has its own browser session and its own households.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; scripts/test.sh installs them when missing).

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ansinh::access::Role;
use ansinh::http::{self, Api, StaffDirectory};
use ansinh::log::LogConfig;
use ansinh::projection::Projector;
use ansinh::service::Service;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest a test waits for a page element, chromedriver's start or a read: generous on
/// a loaded 2-core machine, and each wait polls the condition rather than sleeping.
const WAIT_MAX: Duration = Duration::from_secs(30);
/// Between two looks at a condition that is not met yet.
const POLL_EVERY: Duration = Duration::from_millis(50);

struct Tokens {
    officer: String,
    teller: String,
    auditor: String,
    manager: String,
}

struct Fixture {
    base: String,
    config: LogConfig,
    tokens: Tokens,
    /// A session cookie of the officer whose tag verifies but whose time has passed.
    expired_cookie: String,
    webdriver: String,
    /// Asks the server's thread to publish a signed checkpoint of every partition, and
    /// answers when it did.
    checkpoint: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
}

/// Publishes checkpoints of every partition (as `serve`'s checkpointer would) and waits
/// for them.
async fn checkpoint_now() {
    let (done, published) = tokio::sync::oneshot::channel();
    fixture().checkpoint.send(done).await.unwrap();
    published.await.unwrap();
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// Held by each test for its whole run: the tests share one log, and several assert that
/// the whole log grew by exactly one event (or by none), which another test appending at
/// the same moment would break.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The shared ledger, console and chromedriver, started by the first test that asks.
fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The server lives on a runtime of its own: each test's runtime ends with its
        // test, and the server must outlive them all.
        std::thread::spawn(move || {
            // Started from this thread, which lives as long as the process: the child is
            // killed when the thread that started it ends (PR_SET_PDEATHSIG).
            let (webdriver, chromedriver) = start_chromedriver();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (config, checkpoints) = fresh_checkpointed();
                let dir = tempfile::tempdir().unwrap();
                let ledger = ledger_at(&config, &dir.path().join("store")).await;
                let vault = Arc::new(vault_for(&ledger, &dir.path().join("secrets")).await);
                let projector = Arc::new(Projector::of_store(ledger.store()).unwrap());
                let service = Service::new(ledger, vault.clone(), projector);
                let path = dir.path().join(http::STAFF_FILE);
                let add = |id: &str, role, unit: &str| {
                    http::auth::add_staff(&path, id, role, unit).unwrap()
                };
                let tokens = Tokens {
                    officer: add("staff:officer", Role::CreditOfficer, "0100007"),
                    teller: add("staff:teller", Role::Teller, "0100007"),
                    auditor: add("staff:auditor", Role::Auditor, ""),
                    manager: add("staff:manager", Role::BranchManager, "01"),
                };
                // The session secret, made here as the first process of a ledger makes
                // it, so the test can forge an expired cookie with the real key.
                let secret = vault
                    .create_secret(http::console::session::SECRET_NAME, &[42; 32])
                    .await
                    .unwrap();
                let keys = http::console::session::Keys::from_secret(&secret);
                let expired_cookie = keys
                    .issue(
                        "staff:officer",
                        &http::auth::token_hash(&tokens.officer),
                        chrono::Utc::now().timestamp()
                            - http::console::session::SESSION_LIFETIME_S
                            - 60,
                    )
                    .unwrap();
                let ledger = service.ledger.clone();
                let api = Api::new(service, StaffDirectory::load(&path).unwrap())
                    .await
                    .unwrap();
                api.set_checkpoints(checkpoints.clone());
                let (checkpoint, mut asked) =
                    tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>(1);
                let keys = dir.path().join("checkpoint-keys");
                std::fs::create_dir_all(&keys).unwrap();
                tokio::spawn(async move {
                    while let Some(done) = asked.recv().await {
                        let mut c = ansinh::checkpoint::Checkpointer::open(
                            client().await,
                            ledger.clone(),
                            checkpoints.clone(),
                            keys.as_path(),
                        )
                        .await
                        .unwrap();
                        for (partition, outcome) in c.checkpoint_all().await.unwrap() {
                            outcome.unwrap_or_else(|e| panic!("checkpoint of {partition}: {e}"));
                        }
                        let _ = done.send(());
                    }
                });
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let base = format!("http://{}", listener.local_addr().unwrap());
                tx.send((base, config, tokens, expired_cookie, webdriver, checkpoint))
                    .unwrap();
                let _dir = dir;
                let _chromedriver = chromedriver;
                http::serve(listener, api, std::future::pending())
                    .await
                    .unwrap();
            });
        });
        let (base, config, tokens, expired_cookie, webdriver, checkpoint) = rx.recv().unwrap();
        Fixture {
            base,
            config,
            tokens,
            expired_cookie,
            webdriver,
            checkpoint,
        }
    })
}

/// chromedriver on a free loopback port, tied to this process (it dies with it).
fn start_chromedriver() -> (String, std::process::Child) {
    use std::os::unix::process::CommandExt;
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
        "the console tests need {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver (scripts/test.sh does)"
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut command = std::process::Command::new(CHROMEDRIVER);
    command
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child
    // when this process dies.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = command.spawn().expect("start chromedriver");
    let deadline = Instant::now() + WAIT_MAX;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(POLL_EVERY);
    }
    (format!("http://127.0.0.1:{port}"), child)
}

/// One browser session with a fresh profile.
struct Browser {
    client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open() -> Browser {
        let f = fixture();
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1600",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&f.webdriver)
            .await
            .expect("a chromium session");
        Browser {
            client,
            _profile: profile,
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", fixture().base))
            .await
            .unwrap();
    }

    /// Waits (polling, bounded) for an element.
    async fn wait(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT_MAX)
            .every(POLL_EVERY)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    async fn text(&self, css: &str) -> String {
        self.wait(css).await.text().await.unwrap()
    }

    async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    async fn fill(&self, name: &str, value: &str) {
        let field = self.wait(&format!("[name='{name}']")).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Fills the named fields of the form `form_css` (forms of one page share names).
    async fn fill_in(&self, form_css: &str, fields: &[(&str, &str)]) {
        let form = self.wait(form_css).await;
        for (name, value) in fields {
            let field = form
                .find(Locator::Css(&format!("[name='{name}']")))
                .await
                .unwrap();
            field.clear().await.unwrap();
            field.send_keys(value).await.unwrap();
        }
    }

    async fn submit(&self) {
        self.wait("#submit").await.click().await.unwrap();
    }

    async fn sign_in(&self, token: &str) {
        self.goto("/").await;
        self.fill("token", token).await;
        self.wait("#sign-in-submit").await.click().await.unwrap();
        self.wait("#who").await;
    }

    /// The session cookie, for a request made outside the browser.
    async fn session_cookie(&self) -> String {
        let cookie = self
            .client
            .get_named_cookie(http::console::session::SESSION_COOKIE)
            .await
            .unwrap();
        format!("{}={}", cookie.name(), cookie.value())
    }

    /// The named form's fields as the browser would send them.
    async fn form_body(&self, form_css: &str) -> String {
        let script = format!(
            "return new URLSearchParams(new FormData(document.querySelector(\"{form_css}\"))).toString();"
        );
        self.client
            .execute(&script, vec![])
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(self) {
        self.client.clone().close().await.unwrap();
    }
}

/// A test that fails stops before `close`, and chromedriver's death does not take the
/// browser with it: the browser of this profile is stopped here, by the profile's unique
/// path (nothing is left to stop after a `close`).
impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill")
            .arg("-f")
            .arg(self._profile.path())
            .status();
    }
}

/// A POST from outside the browser with its session cookie: a forged or repeated form.
async fn post_form(cookie: &str, path: &str, body: String) -> (reqwest::StatusCode, String) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", fixture().base))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// Registers a household through the form, with Vietnamese names.
async fn register(b: &Browser, household: &str, head: &str, head_id: &str, member: &str) {
    b.goto("/console/households/new").await;
    b.fill("household_id", household).await;
    b.fill("registered_on", "05/01/2026").await;
    b.fill("head_name", head).await;
    b.fill("head_citizen_id", head_id).await;
    b.fill("member1_name", member).await;
    b.fill("member1_relation", "con").await;
    b.submit().await;
    b.wait("#recorded").await;
}

/// Classifies a household poor under the standard in force on 10/01/2026.
async fn classify_poor(b: &Browser, household: &str) -> (String, String) {
    b.goto(&format!("/console/households/{household}/classify"))
        .await;
    b.fill("income_per_person", "1.200.000").await;
    for indicator in ["employment", "nutrition", "drinking_water"] {
        b.wait(&format!("input[value='{indicator}']"))
            .await
            .click()
            .await
            .unwrap();
    }
    b.fill("review_year", "2026").await;
    b.fill("decided_on", "10/01/2026").await;
    b.submit().await;
    (
        b.text("#result-class").await,
        b.text("#result-standard").await,
    )
}

#[tokio::test]
async fn sign_in_sign_out_csrf_and_expired_sessions() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let f = fixture();
    let b = Browser::open().await;
    // Vietnamese by default, diacritics intact.
    b.goto("/").await;
    assert_eq!(b.text("h1").await, "Đăng nhập");
    // An unknown token is refused on the sign-in page.
    b.fill("token", "ansinh_0000").await;
    b.wait("#sign-in-submit").await.click().await.unwrap();
    assert_eq!(b.text("#sign-in-problem").await, "Mã truy cập không đúng.");

    b.sign_in(&f.tokens.officer).await;
    assert_eq!(b.text("#who").await, "staff:officer");
    let cookie = b
        .client
        .get_named_cookie(http::console::session::SESSION_COOKIE)
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );
    b.screenshot("home").await;

    // The English switch, and back.
    b.wait("#lang-switch").await.click().await.unwrap();
    b.wait("#who").await;
    assert_eq!(b.text("h1").await, "Home");
    b.wait("#lang-switch").await.click().await.unwrap();
    b.wait("#who").await;
    assert_eq!(b.text("h1").await, "Trang chính");

    // A form without the CSRF token is refused with 403, and records nothing.
    let before = event_count(&f.config).await;
    let session = b.session_cookie().await;
    let forged = "idem=forged-1&household_id=0100007-000901&area=rural&registered_on=05/01/2026&head_name=K%E1%BA%BB+gi%E1%BA%A3&head_citizen_id=001099000901";
    let (status, page) = post_form(&session, "/console/households/new", forged.into()).await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
    assert!(page.contains("id=\"forbidden\""), "{page}");
    // The same from inside the browser: a form built without the token.
    b.client
        .execute(
            "const f=document.createElement('form');f.method='post';f.action='/console/households/new';\
             for (const [k,v] of [['idem','forged-2'],['household_id','0100007-000902']]) {\
             const i=document.createElement('input');i.name=k;i.value=v;f.appendChild(i);}\
             document.body.appendChild(f);f.submit();",
            vec![],
        )
        .await
        .unwrap();
    b.wait("#forbidden").await;
    assert_eq!(event_count(&f.config).await, before);

    // Sign-out clears the session: the console sends the reader to sign in.
    b.goto("/console").await;
    b.wait("#sign-out").await.click().await.unwrap();
    b.wait("#sign-in").await;
    b.goto("/console").await;
    b.wait("#sign-in").await;
    assert!(!b.has("#who").await);

    // A cookie whose time has passed, or garbage: to sign-in, saying the session ended.
    for value in [f.expired_cookie.as_str(), "garbage"] {
        // WebDriver's add-cookie refuses a loopback IP as a domain; the page may set it
        // (the session cookie was cleared at sign-out, so none is HttpOnly in the way).
        let script = format!(
            "document.cookie = '{}={value}; path=/; SameSite=Strict';",
            http::console::session::SESSION_COOKIE
        );
        b.client.execute(&script, vec![]).await.unwrap();
        b.goto("/console/households").await;
        assert_eq!(
            b.text("#sign-in-problem").await,
            "Phiên làm việc đã hết hạn hoặc không hợp lệ. Vui lòng đăng nhập lại."
        );
    }
    b.close().await;
}

#[tokio::test]
async fn register_classify_and_the_household_page() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let b = Browser::open().await;
    b.sign_in(&fixture().tokens.officer).await;
    let h = "0100007-000101";
    register(
        &b,
        h,
        "Nguyễn Thị Hồng Nhung",
        "001095000101",
        "Trần Văn Đức",
    )
    .await;
    // A refusal is shown beside the field, in plain words, and records nothing.
    b.goto("/console/households/new").await;
    b.fill("household_id", "0100007-000102").await;
    b.fill("head_name", "Lê Văn Tám").await;
    b.fill("head_citizen_id", "12").await;
    b.submit().await;
    let refusal = b.text("span.err[data-field='head_citizen_id']").await;
    assert!(!refusal.is_empty() && !refusal.contains('{'), "{refusal}");

    let (class, standard) = classify_poor(&b, h).await;
    assert_eq!(class, "poor");
    assert_eq!(standard, "VN-MDP-2022-2025");

    // Found again by a member's citizen id (a POST: the id never goes in a URL).
    b.goto("/console/households").await;
    b.fill("citizen_id", "001095000101").await;
    b.wait("#find-citizen button").await.click().await.unwrap();
    assert_eq!(b.text("#household-id").await, h);
    assert_eq!(b.text("#head-name").await, "Nguyễn Thị Hồng Nhung");
    assert!(b.text("#members").await.contains("Trần Văn Đức"));
    assert_eq!(b.text("#standing-class").await, "poor");
    // History with each event's hash: registration and classification.
    let history = b
        .client
        .find_all(Locator::Css("#history tr.event"))
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
    let hash = b.text("#history tr.event td.hash").await;
    assert_eq!(hash.len(), 64, "{hash}");
    b.close().await;
}

#[tokio::test]
async fn approve_disburse_repay_and_a_double_submit_records_once() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let f = fixture();
    let b = Browser::open().await;
    b.sign_in(&f.tokens.officer).await;
    let h = "0100007-000201";
    register(&b, h, "Phạm Thị Ngọc Ánh", "001095000201", "Hoàng Văn Lợi").await;
    classify_poor(&b, h).await;

    // Approve: the answer names the new loan.
    b.goto(&format!("/console/households/{h}")).await;
    b.wait("#approve-link").await.click().await.unwrap();
    b.fill("amount", "30.000.000").await;
    b.fill("term_months", "36").await;
    b.fill("savings_group", "TK-01").await;
    b.fill("on", "02/02/2026").await;
    b.fill("reason", "vay sản xuất chăn nuôi").await;
    b.submit().await;
    let loan = b.text("#loan-ref").await;
    assert!(loan.starts_with("01-L"), "{loan}");

    // Disburse, from the link on the answer.
    b.wait("#disburse-link").await.click().await.unwrap();
    b.fill("amount", "30.000.000").await;
    b.fill("on", "05/02/2026").await;
    b.submit().await;
    b.wait("#recorded").await;

    // Repay: the answer shows the split. Sent twice (the browser, then the very same
    // form's fields again, as a double click or a reload of the POST sends them): the
    // log grows by one, and the second answer says it was already recorded.
    b.goto(&format!("/console/loans/{loan}/repay?household={h}"))
        .await;
    b.fill("amount", "2.000.000").await;
    b.fill("on", "05/03/2026").await;
    let form = b.form_body("#loan-form").await;
    let before = event_count(&f.config).await;
    b.submit().await;
    assert_eq!(b.text("#split-amount").await, "2.000.000 ₫");
    let interest = b.text("#split-interest").await;
    let principal = b.text("#split-principal").await;
    assert!(interest.ends_with(" ₫") && interest != "0 ₫", "{interest}");
    assert!(principal.ends_with(" ₫"), "{principal}");
    b.screenshot("repayment").await;
    let cookie = b.session_cookie().await;
    let path = format!("/console/loans/{loan}/repay?household={h}");
    let (status, again) = post_form(&cookie, &path, form.clone()).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(again.contains("id=\"duplicate\""), "{again}");
    assert_eq!(event_count(&f.config).await, before + 1);
    // The same key with another amount is refused, in plain words, and records nothing.
    let changed = form.replace("amount=2.000.000", "amount=3.000.000");
    assert_ne!(changed, form);
    let (status, refused) = post_form(&cookie, &path, changed).await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.contains("id=\"refusal\""), "{refused}");
    assert_eq!(event_count(&f.config).await, before + 1);

    // A book refusal is shown beside the field it concerns, in plain words.
    b.goto(&format!("/console/loans/{loan}/repay?household={h}"))
        .await;
    b.fill("amount", "999.000.000").await;
    b.fill("on", "06/03/2026").await;
    let before = event_count(&f.config).await;
    b.submit().await;
    let refusal = b.text("span.err[data-field='amount']").await;
    assert!(refusal.starts_with("Sổ từ chối"), "{refusal}");
    assert_eq!(event_count(&f.config).await, before);

    // The household page: the loan with its schedule, disbursed and outstanding.
    b.goto(&format!("/console/households/{h}")).await;
    let table = format!("table.loan[data-loan='{loan}']");
    assert_eq!(
        b.text(&format!("{table} td.disbursed")).await,
        "30.000.000 ₫"
    );
    let schedule = b
        .client
        .find_all(Locator::Css("details.schedule tr"))
        .await
        .unwrap();
    assert_eq!(schedule.len(), 1 + 36);
    b.screenshot("household").await;

    // A long history is paged: more events than a page, then the next page holds the rest.
    let csrf = b
        .wait("form[action='/console/sign-out'] input[name='csrf']")
        .await
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let shown = b
        .client
        .find_all(Locator::Css("#history tr.event"))
        .await
        .unwrap()
        .len();
    let more = http::console::households::HISTORY_PAGE_LINES + 3 - shown;
    for i in 0..more {
        let body = format!("csrf={csrf}&idem=page-{i}&amount=10.000&on=10/03/2026");
        let (status, page) = post_form(&cookie, &path, body).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    }
    b.goto(&format!("/console/households/{h}")).await;
    let first = b
        .client
        .find_all(Locator::Css("#history tr.event"))
        .await
        .unwrap();
    assert_eq!(first.len(), http::console::households::HISTORY_PAGE_LINES);
    assert!(!b.has("#history-previous").await);
    b.wait("#history-next").await.click().await.unwrap();
    b.wait("#history-previous").await;
    let second = b
        .client
        .find_all(Locator::Css("#history tr.event"))
        .await
        .unwrap();
    assert_eq!(second.len(), 3);
    assert!(!b.has("#history-next").await);
    b.close().await;
}

#[tokio::test]
async fn an_auditor_sees_no_write_form_and_a_forged_post_is_refused() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let f = fixture();
    let officer = Browser::open().await;
    officer.sign_in(&f.tokens.officer).await;
    let h = "0100007-000301";
    register(&officer, h, "Đỗ Thị Thu Hà", "001095000301", "Vũ Minh Khôi").await;
    officer.close().await;

    let b = Browser::open().await;
    b.sign_in(&f.tokens.auditor).await;
    b.goto(&format!("/console/households/{h}")).await;
    assert_eq!(b.text("#household-id").await, h);
    for link in [
        "#classify-link",
        "#approve-link",
        "#find-citizen",
        "#head-name",
    ] {
        assert!(!b.has(link).await, "an auditor is offered {link}");
    }
    b.goto("/console/households/new").await;
    b.wait("#refusal").await;
    assert!(!b.has("#register").await);

    // A forged POST with the auditor's own session and CSRF token: refused by `access`,
    // 403, nothing recorded.
    let csrf = b
        .wait("form[action='/console/sign-out'] input[name='csrf']")
        .await
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let cookie = b.session_cookie().await;
    let before = event_count(&f.config).await;
    let body = format!(
        "csrf={csrf}&idem=auditor-1&household_id=0100007-000302&area=rural&registered_on=05/01/2026&head_name=Ai+%C4%90%C3%B3&head_citizen_id=001095000302"
    );
    let (status, page) = post_form(&cookie, "/console/households/new", body).await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
    assert!(page.contains("id=\"refusal\""), "{page}");
    assert!(
        !page.contains("id=\"register\""),
        "a form is offered again: {page}"
    );
    let body = format!("csrf={csrf}&idem=auditor-2&amount=1000000&on=05/03/2026");
    let (status, _) = post_form(&cookie, "/console/loans/01-L1/repay", body).await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
    assert_eq!(event_count(&f.config).await, before);
    // An officer sees only their commune: another commune's pages are refused.
    let officer = Browser::open().await;
    officer.sign_in(&f.tokens.officer).await;
    for path in [
        "/console/households/0100014-000001",
        "/console/communes/0100014/portfolio",
    ] {
        officer.goto(path).await;
        assert_eq!(
            officer.text("#refusal").await,
            "Hộ hoặc khoản vay này không thuộc đơn vị của bạn."
        );
    }
    officer.close().await;
    // A teller may repay but not register.
    let teller = Browser::open().await;
    teller.sign_in(&f.tokens.teller).await;
    teller.goto("/console/households/new").await;
    teller.wait("#refusal").await;
    teller.close().await;
    b.close().await;
}

/// Approves and disburses a loan of `household` (already classified poor); its reference.
async fn approve_and_disburse(b: &Browser, household: &str, amount: &str) -> String {
    b.goto(&format!("/console/households/{household}/loans/new"))
        .await;
    b.fill("amount", amount).await;
    b.fill("term_months", "24").await;
    b.fill("savings_group", "TK-02").await;
    b.fill("on", "02/02/2026").await;
    b.fill("reason", "vay sản xuất").await;
    b.submit().await;
    let loan = b.text("#loan-ref").await;
    b.wait("#disburse-link").await.click().await.unwrap();
    b.fill("amount", amount).await;
    b.fill("on", "05/02/2026").await;
    b.submit().await;
    b.wait("#recorded").await;
    loan
}

#[tokio::test]
async fn the_portfolio_charts_and_a_payment_run_reconciled_to_csv() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let f = fixture();
    let b = Browser::open().await;
    b.sign_in(&f.tokens.manager).await;
    let h = "0100007-000401";
    register(&b, h, "Bùi Thị Xuân", "001095000401", "Lý Văn Thường").await;
    classify_poor(&b, h).await;
    approve_and_disburse(&b, h, "20.000.000").await;

    // The portfolio: outstanding by programme and the month's disbursement, as bars.
    b.goto("/console/communes/0100007/portfolio").await;
    let bar = b
        .wait("#chart-programmes rect.bar")
        .await
        .attr("data-value")
        .await
        .unwrap()
        .unwrap();
    assert!(bar.parse::<f64>().unwrap() > 0.0, "{bar}");
    let flows = b
        .client
        .find_all(Locator::Css("#chart-flows rect.bar"))
        .await
        .unwrap();
    let mut disbursed_in_february = false;
    for bar in &flows {
        let title = bar.find(Locator::Css("title")).await.unwrap();
        let text = title.html(true).await.unwrap();
        if text.starts_with("2026-02")
            && bar
                .attr("data-value")
                .await
                .unwrap()
                .is_some_and(|v| v != "0")
        {
            disbursed_in_february = true;
        }
    }
    assert!(disbursed_in_february, "no February disbursement bar");
    b.screenshot("portfolio").await;

    // A monthly entitlement (over the JSON API, on the same listener), a budget and a
    // run through the console, then the run day's reconciliation and its CSV. October is
    // paid by a run dated 2026-11-05, the day the other tests' runs of this partition are
    // dated: a partition's runs are dated in order, and the tests run in any order.
    let grant = reqwest::Client::new()
        .post(format!("{}/v1/entitlements", f.base))
        .bearer_auth(&f.tokens.officer)
        .header("idempotency-key", "console-grant-1")
        .json(&serde_json::json!({
            "household_id": h, "member": "m1",
            "category": "ELDERLY_80_PLUS_NO_PENSION", "channel": "bank", "gateway": "vcb",
            "from": "2026-10", "on": "2026-10-01"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(grant.status(), reqwest::StatusCode::CREATED);
    b.goto("/console/payments").await;
    b.fill("commune", "0100007").await;
    b.fill_in(
        "#budget",
        &[
            ("period", "2026-10"),
            ("amount", "2.000.000"),
            ("on", "01/10/2026"),
        ],
    )
    .await;
    b.wait("#budget-submit").await.click().await.unwrap();
    b.wait("#recorded").await;
    b.goto("/console/payments").await;
    b.fill_in(
        "#run",
        &[
            ("commune", "0100007"),
            ("period", "2026-10"),
            ("on", "05/11/2026"),
        ],
    )
    .await;
    b.wait("#run-submit").await.click().await.unwrap();
    assert_eq!(b.text("#run-issued").await, "1");

    b.goto("/console/payments/reconciliation?partition=01&day=05/11/2026")
        .await;
    let line = b.text("#reconciliation tr.gateway").await;
    assert!(line.starts_with("vcb"), "{line}");
    // Money back in the budget has columns of its own: none timed out or cancelled yet.
    let timed_out = b.text("#reconciliation tr.gateway td.timed-out").await;
    assert!(timed_out.starts_with("0 "), "{timed_out}");
    let cancelled = b.text("#reconciliation tr.gateway td.cancelled").await;
    assert!(cancelled.starts_with("0 "), "{cancelled}");
    let href = b
        .wait("#csv-link")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let csv = reqwest::Client::new()
        .get(format!("{}{href}", f.base))
        .header("cookie", b.session_cookie().await)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), reqwest::StatusCode::OK);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.trim_start_matches('\u{feff}').lines().collect();
    assert_eq!(lines[0], ansinh::payments_report::RECONCILIATION_CSV_HEADER);
    assert_eq!(lines.len(), 2, "{text}");
    // This run's instruction, and those of the other tests' runs of that day made
    // before it.
    assert!(lines[1].starts_with("01,2026-11-05,vcb,"), "{}", lines[1]);
    assert!(lines[1].contains(" ₫\""), "{}", lines[1]);
    // Without a session, no CSV.
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}{href}", f.base))
        .send()
        .await
        .unwrap();
    assert!(anonymous.status().is_redirection());
    b.close().await;
}

#[tokio::test]
async fn an_auditor_reads_checkpoints_proves_an_event_and_verifies_a_bundle_offline() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let f = fixture();
    let h = "0100007-000501";
    poor_household(h, "Ngô Thị Thanh Hương", "001095000501", "Đặng Quốc Bảo").await;
    checkpoint_now().await;

    let b = Browser::open().await;
    b.sign_in(&f.tokens.auditor).await;
    b.goto("/console/audit").await;
    b.wait("#partitions a.partition-link[href='/console/audit/partitions/01']")
        .await
        .click()
        .await
        .unwrap();
    let checkpoints: u64 = b.text("#status-checkpoints").await.parse().unwrap();
    assert!(checkpoints >= 1);
    let size: u64 = b.text("#checkpoint-size").await.parse().unwrap();
    assert!(size >= 2, "{size}");
    b.screenshot("audit-status").await;

    // An event's inclusion proof, shown and downloaded; it checks offline.
    b.fill("seq", "1").await;
    b.wait("#inclusion-form button")
        .await
        .click()
        .await
        .unwrap();
    b.wait("#proof").await;
    let href = b
        .wait("#proof-download")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let cookie = b.session_cookie().await;
    let get = |path: String| {
        let cookie = cookie.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{}{path}", fixture().base))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
        }
    };
    let document = get(href).await;
    assert_eq!(document.status(), reqwest::StatusCode::OK);
    let checked =
        ansinh::checkpoint::proofs::check_document(&document.bytes().await.unwrap(), &[]).unwrap();
    assert_eq!(checked.partition, "01");

    // The household's bundle: a tar of its directory that verify-bundle accepts.
    b.goto("/console/audit").await;
    b.fill("household", h).await;
    let bundle = get(format!("/console/audit/bundle?household={h}")).await;
    assert_eq!(bundle.status(), reqwest::StatusCode::OK);
    let tar = bundle.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bundle.tar"), &tar).unwrap();
    let untar = std::process::Command::new("tar")
        .arg("-xf")
        .arg("bundle.tar")
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(untar.success());
    let files = ansinh::bundle::BundleFiles::read(&dir.path().join(format!("bundle-{h}"))).unwrap();
    let verified = ansinh::bundle::verify(&files, &[]).unwrap();
    assert_eq!(verified.events, 2, "registration and classification");
    // The CLI's own offline check agrees, pinned to the key the bundle's history ends at.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_ansinh"))
        .args(["audit", "verify-bundle"])
        .arg(dir.path().join(format!("bundle-{h}")))
        .args(["--trust", &verified.latest_public_key])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stdout)
    );
    b.close().await;
}

/// A household registered and classified poor by the commune's officer, in a browser
/// of its own, for a test that goes on as someone else.
async fn poor_household(h: &str, head: &str, head_id: &str, member: &str) {
    let officer = Browser::open().await;
    officer.sign_in(&fixture().tokens.officer).await;
    register(&officer, h, head, head_id, member).await;
    classify_poor(&officer, h).await;
    officer.close().await;
}

/// A JSON API request on the console's listener, for what a test needs recorded but does
/// not exercise through pages (an entitlement, a month's budget, a commune's run).
async fn api_post(token: &str, path: &str, key: &str, body: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", fixture().base))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.text().await.unwrap()
    );
}

/// The household's monthly entitlement from `from`, and the commune's budget for that
/// month (10.000.000 ₫, enough for every entitlement the tests grant).
async fn entitled_and_funded(h: &str, member: &str, from: &str, key: &str) {
    let f = fixture();
    api_post(
        &f.tokens.officer,
        "/v1/entitlements",
        &format!("{key}-grant"),
        serde_json::json!({
            "household_id": h, "member": member,
            "category": "ELDERLY_80_PLUS_NO_PENSION", "channel": "bank", "gateway": "vcb",
            "from": from, "on": format!("{from}-01")
        }),
    )
    .await;
    api_post(
        &f.tokens.manager,
        "/v1/communes/0100007/budgets",
        &format!("{key}-budget"),
        serde_json::json!({"period": from, "amount": "10000000", "on": format!("{from}-01")}),
    )
    .await;
}

/// Waits for the job page (which reloads itself while the job runs) to say the job
/// ended, and that it is done.
async fn job_done(b: &Browser) {
    let state = b
        .wait("#job-state[data-state='done'], #job-state[data-state='failed']")
        .await;
    let state = state.attr("data-state").await.unwrap().unwrap();
    if state != "done" {
        panic!("the job {state}: {}", b.client.source().await.unwrap());
    }
}

#[tokio::test]
async fn a_provinces_payment_run_is_followed_on_its_job_page_and_a_resubmit_finds_it() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let f = fixture();
    let h = "0100007-000601";
    poor_household(h, "Trịnh Thị Huyền Trân", "001095000601", "Lê Văn Đức").await;
    entitled_and_funded(h, "m1", "2026-11", "console-prun").await;

    let b = Browser::open().await;
    b.sign_in(&f.tokens.manager).await;
    b.goto("/console/payments").await;
    b.fill_in(
        "#partition-run",
        &[
            ("partition", "01"),
            ("period", "2026-11"),
            ("on", "05/11/2026"),
        ],
    )
    .await;
    let fields = b.form_body("#partition-run").await;
    b.wait("#partition-run-submit").await.click().await.unwrap();
    let job = b.text("#job-id").await;
    job_done(&b).await;
    let url = b.client.current_url().await.unwrap();
    assert_eq!(url.path(), format!("/console/jobs/{job}"));
    let communes = b.text("#job-communes").await;
    let (done, total) = communes.split_once(" / ").unwrap();
    assert_eq!(done, total, "{communes}");
    let row = b.wait("#job-lines tr:nth-child(2)").await;
    assert!(
        row.text()
            .await
            .unwrap()
            .starts_with("0100007 đã lập lệnh chi")
    );
    let outcome = row.find(Locator::Css("td.outcome")).await.unwrap();
    assert_eq!(
        outcome.attr("data-outcome").await.unwrap().as_deref(),
        Some("paid")
    );
    let issued: u64 = b.text("#job-instructions").await.parse().unwrap();
    assert!(issued >= 1, "{issued}");
    assert!(b.text("#job-amount").await.ends_with(" ₫"));
    b.screenshot("job-payment-run").await;

    // The same form sent again (a reload of the POST) finds the same job, and pays
    // nothing twice.
    let before = event_count(&f.config).await;
    let again = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/console/payments/partition-runs", f.base))
        .header("cookie", b.session_cookie().await)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(fields.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(
        again.headers()["location"].to_str().unwrap(),
        format!("/console/jobs/{job}")
    );
    assert_eq!(event_count(&f.config).await, before);
    // Without the session's CSRF token the form starts nothing.
    let forged = fields
        .split('&')
        .filter(|kv| !kv.starts_with("csrf="))
        .collect::<Vec<_>>()
        .join("&")
        .replace("idem=", "idem=x");
    let (status, _) = post_form(
        &b.session_cookie().await,
        "/console/payments/partition-runs",
        forged,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);
    assert_eq!(event_count(&f.config).await, before);
    b.close().await;

    // A commune's officer neither reads a province's job nor starts a province's run.
    let officer = Browser::open().await;
    officer.sign_in(&f.tokens.officer).await;
    let cookie = officer.session_cookie().await;
    let job_page = reqwest::Client::new()
        .get(format!("{}/console/jobs/{job}", f.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(job_page.status(), reqwest::StatusCode::FORBIDDEN);
    officer.goto("/console/payments").await;
    officer.wait("#partition-run").await;
    let (status, page) = post_form(
        &cookie,
        "/console/payments/partition-runs",
        officer
            .form_body("#partition-run")
            .await
            .replace("period=&", "period=2026-11&"),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("id=\"refusal\""), "{page}");
    assert_eq!(event_count(&f.config).await, before);
    officer.close().await;
}

#[tokio::test]
async fn an_auditor_finds_anomalies_and_recomputes_decisions_in_jobs() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let f = fixture();
    let h = "0100007-000701";
    poor_household(h, "Đoàn Thị Mỹ Duyên", "001095000701", "Vũ Đình Khôi").await;
    // A November instruction that no gateway answers: pending past ten days by 2027.
    // (Whether or not the province's run of November came first, this run issues the
    // household's instruction: one per entitlement and month, whatever the run.) Every
    // date is in the past, so the day's reconciliation can be read as of today.
    entitled_and_funded(h, "m1", "2026-11", "console-scan").await;
    api_post(
        &f.tokens.manager,
        "/v1/communes/0100007/payment-runs",
        "console-scan-run",
        serde_json::json!({"period": "2026-11", "on": "2026-11-05"}),
    )
    .await;
    checkpoint_now().await;

    let b = Browser::open().await;
    b.sign_in(&f.tokens.auditor).await;
    let before = event_count(&f.config).await;
    b.goto("/console/audit/partitions/01").await;
    b.fill_in(
        "#scan-anomalies",
        &[("as_of", "31/01/2027"), ("pending_days", "10")],
    )
    .await;
    b.wait("#scan-anomalies-submit")
        .await
        .click()
        .await
        .unwrap();
    job_done(&b).await;
    let reached = b.text("#job-reached").await;
    let (read, last) = reached.split_once(" / ").unwrap();
    assert_eq!(read, last, "the scan read the whole log: {reached}");
    let events: u64 = b.text("#job-events").await.parse().unwrap();
    assert!(events >= before, "{events} of {before}");
    let findings: u64 = b.text("#job-findings").await.parse().unwrap();
    assert!(findings >= 1, "{findings}");
    let rows = b
        .client
        .find_all(Locator::Css("#job-lines tr.finding"))
        .await
        .unwrap();
    let mut pending_here = None;
    for row in &rows {
        let text = row.text().await.unwrap();
        if text.starts_with("instruction_pending") && text.contains(h) {
            pending_here = Some(row.find(Locator::Css("a.proof-link")).await.unwrap());
        }
    }
    let link = pending_here.expect("the November instruction is listed as pending");
    b.screenshot("job-anomalies").await;
    // Where it is in the log links to that event's inclusion proof.
    link.click().await.unwrap();
    b.wait("#proof").await;

    // The partition's eligibility decisions, re-derived from their recorded inputs.
    b.goto("/console/audit/partitions/01").await;
    b.wait("#scan-recompute-submit")
        .await
        .click()
        .await
        .unwrap();
    job_done(&b).await;
    let decisions: u64 = b.text("#job-decisions").await.parse().unwrap();
    assert!(decisions >= 1, "{decisions}");
    assert_eq!(b.text("#job-findings").await, "0");
    assert!(!b.has("#job-lines tr.finding").await);
    assert_eq!(
        event_count(&f.config).await,
        before,
        "audits record nothing"
    );
    b.close().await;
}

#[tokio::test]
async fn an_officer_grants_a_monthly_allowance_from_the_household_page_once() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let f = fixture();
    let b = Browser::open().await;
    b.sign_in(&f.tokens.officer).await;
    let h = "0100007-000801";
    register(&b, h, "Hà Thị Nguyệt", "001095000801", "Tạ Văn Sơn").await;
    b.goto(&format!("/console/households/{h}")).await;
    b.wait("#grant-link").await.click().await.unwrap();
    // From 2027, a month no other test pays; decided on a past day, as every payments
    // event of these tests (a day's reconciliation is read as of today).
    b.fill_in(
        "#grant",
        &[
            ("member", "m1"),
            ("gateway", "vcb"),
            ("from", "2027-01"),
            ("on", "01/12/2026"),
        ],
    )
    .await;
    let form = b.form_body("#grant").await;
    let before = event_count(&f.config).await;
    b.submit().await;
    b.wait("#recorded").await;
    let number: u64 = b.text("#entitlement-number").await.parse().unwrap();
    assert!(number >= 1, "{number}");
    // The same form again (a reload of the POST): already recorded, the same number.
    let path = format!("/console/households/{h}/entitlements/new");
    let (status, again) = post_form(&b.session_cookie().await, &path, form.clone()).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(again.contains("id=\"duplicate\""), "{again}");
    assert!(
        again.contains(&format!("id=\"entitlement-number\">{number}<")),
        "{again}"
    );
    assert_eq!(event_count(&f.config).await, before + 1);
    // A malformed month is refused beside its field, and records nothing.
    b.goto(&path).await;
    b.fill_in(
        "#grant",
        &[("member", "m1"), ("gateway", "vcb"), ("from", "2027-13")],
    )
    .await;
    b.submit().await;
    b.wait("span.err[data-field='from']").await;
    assert_eq!(event_count(&f.config).await, before + 1);
    b.close().await;
}
