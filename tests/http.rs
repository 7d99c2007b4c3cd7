//! The staff HTTP API over a real socket, a real ledger and a real nats-server: every
//! answer is checked against its JSON Schema, and every refusal is checked to append
//! nothing.

mod common;

use std::sync::Arc;

use ansinh::access::Role;
use ansinh::http::{self, Api, Schemas, StaffDirectory};
use ansinh::log::LogConfig;
use ansinh::projection::Projector;
use ansinh::proto::envelope::Payload;
use ansinh::service::Service;
use common::*;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};

const HOUSEHOLD: &str = "0100007-000001";

/// Tokens of the staff the tests act as.
struct Tokens {
    officer: String,
    teller: String,
    manager: String,
    auditor: String,
    /// A credit officer and a teller of another commune (0100014) of the same province.
    other_officer: String,
    other_teller: String,
    /// A teller of commune 7900003, in another province.
    teller79: String,
}

struct Server {
    base: String,
    client: reqwest::Client,
    config: LogConfig,
    service: Service,
    schemas: Schemas,
    staff: Tokens,
    /// The checkpoint stream of this server's log (one per test: no other test signs it).
    checkpoints: ansinh::checkpoint::CheckpointConfig,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// An answer whose body was already checked against `error.response` (4xx, 5xx) or the
/// schema the caller named (2xx).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn kind(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

async fn server() -> Server {
    serve_with_clock(None).await
}

/// A server whose clock reads `instant` (RFC 3339) for ever: today is its day in Vietnam.
async fn server_at(instant: &str) -> Server {
    let ms = chrono::DateTime::parse_from_rfc3339(instant)
        .unwrap()
        .timestamp_millis();
    serve_with_clock(Some(Arc::new(move || ms))).await
}

async fn serve_with_clock(clock: Option<ansinh::clock::Clock>) -> Server {
    serve_prepared(clock, |_| {}).await
}

/// `serve_with_clock`, its API given to `prepare` before it serves (a test hook).
async fn serve_prepared(clock: Option<ansinh::clock::Clock>, prepare: impl FnOnce(&Api)) -> Server {
    let (config, checkpoints) = fresh_checkpointed();
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_at(&config, &dir.path().join("store")).await;
    let vault = Arc::new(vault_for(&ledger, &dir.path().join("secrets")).await);
    let projector = Arc::new(Projector::of_store(ledger.store()).unwrap());
    let service = Service::new(ledger, vault, projector);
    let path = dir.path().join(http::STAFF_FILE);
    let add = |id: &str, role, unit: &str| http::auth::add_staff(&path, id, role, unit).unwrap();
    let staff = Tokens {
        officer: add("staff:officer", Role::CreditOfficer, "0100007"),
        teller: add("staff:teller", Role::Teller, "0100007"),
        manager: add("staff:manager", Role::BranchManager, "01"),
        auditor: add("staff:auditor", Role::Auditor, ""),
        other_officer: add("staff:officer14", Role::CreditOfficer, "0100014"),
        other_teller: add("staff:teller14", Role::Teller, "0100014"),
        teller79: add("staff:teller79", Role::Teller, "7900003"),
    };
    let api = Api::new(service.clone(), StaffDirectory::load(&path).unwrap())
        .await
        .unwrap();
    api.set_checkpoints(checkpoints.clone());
    if let Some(clock) = clock {
        api.set_clock(clock);
    }
    prepare(&api);
    let (base, stop) = common::serve(api).await;
    Server {
        base,
        client: reqwest::Client::new(),
        config,
        service,
        schemas: Schemas::compile(),
        staff,
        checkpoints,
        _stop: stop,
        _dir: dir,
    }
}

/// A second ledger process serving the API: its base URL, and what keeps it running.
type Running = (tokio::sync::oneshot::Sender<()>, tempfile::TempDir);

impl Server {
    /// Another ledger process on the same log and shared buckets (its own store, the
    /// same secrets and staff), serving the API on a port of its own.
    async fn second_process(&self) -> (String, Running) {
        self.second_process_with(|_| {}).await
    }

    /// `second_process`, its API given to `prepare` before it serves (a test hook).
    async fn second_process_with(&self, prepare: impl FnOnce(&Api)) -> (String, Running) {
        let elsewhere = tempfile::tempdir().unwrap();
        let ledger = ledger_at(&self.config, &elsewhere.path().join("store")).await;
        let vault = Arc::new(vault_for(&ledger, &self._dir.path().join("secrets")).await);
        let projector = Arc::new(Projector::of_store(ledger.store()).unwrap());
        let staff = StaffDirectory::load(&self._dir.path().join(http::STAFF_FILE)).unwrap();
        let other = Api::new(Service::new(ledger, vault, projector), staff)
            .await
            .unwrap();
        prepare(&other);
        let (base, stop) = common::serve(other).await;
        (base, (stop, elsewhere))
    }

    async fn answer(&self, response: reqwest::Response, schema: &str) -> Answer {
        let (status, body) = schema_checked(&self.schemas, response, schema).await;
        Answer { status, body }
    }

    /// POST a raw body (so tests can send malformed JSON) with an optional key.
    async fn post_raw(&self, token: &str, path: &str, key: Option<&str>, body: String) -> Answer {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let schema = if path.ends_with("/moves") {
            "move.response"
        } else if path.ends_with("/scans") {
            "job.response"
        } else {
            "receipt.response"
        };
        self.answer(request.send().await.unwrap(), schema).await
    }

    async fn post(&self, token: &str, path: &str, key: &str, body: Value) -> Answer {
        self.post_raw(token, path, Some(key), body.to_string())
            .await
    }

    /// Follows a job's `location` until it is no longer waiting or running, within a
    /// bounded time; its last record.
    async fn follow_job(&self, location: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let job = self
                .get(&self.staff.auditor, location, "job.response")
                .await;
            assert_eq!(job.status, StatusCode::OK, "{}", job.body);
            if !matches!(job.body["state"].as_str(), Some("waiting" | "running")) {
                return job.body;
            }
            assert!(std::time::Instant::now() < deadline, "{}", job.body);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn get(&self, token: &str, path: &str, schema: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        self.answer(response, schema).await
    }

    /// The household's view at the end of 2026, which must be readable.
    async fn view(&self, token: &str, id: &str) -> Value {
        let path = format!("/v1/households/{id}?as_of=2026-12-31");
        let view = self.get(token, &path, "household-view.response").await;
        assert_eq!(view.status, StatusCode::OK, "{}", view.body);
        view.body
    }

    async fn events(&self) -> u64 {
        event_count(&self.config).await
    }

    async fn register(&self, id: &str, head_citizen_id: &str) -> Answer {
        // Each household's spouse has their own id (the last digits of the household's):
        // a citizen belongs to one household, and a dead one is never registered again.
        let spouse = format!("0011900{}", &id[id.len() - 5..]);
        self.post(
            &self.staff.officer,
            "/v1/households",
            &format!("register-{id}"),
            json!({
                "household_id": id,
                "area": "rural",
                "registered_on": "2026-01-05",
                "personal": {
                    "head_name": "Nguyễn Thị Hạnh",
                    "head_citizen_id": head_citizen_id,
                    "phone": "0912345678",
                    "members": [
                        {"name": "Trần Văn Nam", "citizen_id": spouse, "relation": "spouse"},
                        {"name": "Trần Minh", "relation": "child"}
                    ]
                }
            }),
        )
        .await
    }

    async fn classify_poor(&self, id: &str) -> Answer {
        self.post(
            &self.staff.officer,
            &format!("/v1/households/{id}/classifications"),
            &format!("review-{id}"),
            json!({
                "income_per_person": "1200000",
                "area": "rural",
                "deprived": ["employment", "nutrition", "drinking_water"],
                "review_year": 2026,
                "decided_on": "2026-01-10"
            }),
        )
        .await
    }

    fn approval(id: &str) -> Value {
        json!({
            "household_id": id,
            "programme": "POOR_HOUSEHOLD",
            "amount": "30000000",
            "term_months": 36,
            "savings_group": "TK-01",
            "entrusted": "womens_union",
            "on": "2026-02-02",
            "reason": "production loan"
        })
    }

    /// Registered, classified poor, approved and disbursed 30,000,000: the loan reference.
    async fn disbursed_loan(&self) -> String {
        assert_eq!(
            self.register(HOUSEHOLD, "001085012345").await.status,
            StatusCode::CREATED
        );
        assert_eq!(
            self.classify_poor(HOUSEHOLD).await.status,
            StatusCode::CREATED
        );
        let approved = self
            .post(
                &self.staff.officer,
                "/v1/loans",
                "approve",
                Self::approval(HOUSEHOLD),
            )
            .await;
        assert_eq!(approved.status, StatusCode::CREATED, "{}", approved.body);
        let loan = approved.body["loan"].as_str().unwrap().to_owned();
        self.disburse_all(&loan, "disburse").await;
        loan
    }

    /// The teller pays out `loan`'s whole 30,000,000 on 2026-02-05, under `key`.
    async fn disburse_all(&self, loan: &str, key: &str) {
        let disbursed = self
            .post(
                &self.staff.teller,
                &format!("/v1/loans/{loan}/disbursements"),
                key,
                json!({"amount": "30000000", "on": "2026-02-05"}),
            )
            .await;
        assert_eq!(disbursed.status, StatusCode::CREATED, "{}", disbursed.body);
    }
}

impl Server {
    /// The branch manager allocates 2,000,000 đồng of commune 0100007's budget for
    /// `period`, on `on`, under `key`.
    async fn allocate(&self, key: &str, period: &str, on: &str) -> Answer {
        let body = json!({"period": period, "amount": "2000000", "on": on});
        let path = "/v1/communes/0100007/budgets";
        self.send(&self.staff.manager, path, key, body, "receipt.response")
            .await
    }

    /// The branch manager's payment run of commune 0100007 for `period`, dated `on`,
    /// under `key`.
    async fn run_commune(&self, key: &str, period: &str, on: &str) -> Answer {
        let body = json!({"period": period, "on": on});
        let path = "/v1/communes/0100007/payment-runs";
        self.send(&self.staff.manager, path, key, body, "payment-run.response")
            .await
    }

    /// A staff POST under `key`, its answer checked against `schema`.
    async fn send(&self, token: &str, path: &str, key: &str, body: Value, schema: &str) -> Answer {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body);
        self.answer(request.send().await.unwrap(), schema).await
    }

    /// The household registered, an entitlement granted from 2026-10 (gateway vcb) and
    /// October's budget of commune 0100007 allocated: ready to be paid.
    async fn funded_october(&self) {
        assert_eq!(
            self.register(HOUSEHOLD, "001090000001").await.status,
            StatusCode::CREATED
        );
        self.granted_and_funded_october(HOUSEHOLD, "grant-1").await;
    }

    /// After a death on 2026-10-20 of the beneficiary of entitlement 1: October's run pays
    /// the month of death, November's pays nothing and names the entitlement `deceased`.
    async fn october_paid_and_november_named_deceased(&self) {
        let october = self.run_commune("run-10", "2026-10", "2026-10-21").await;
        assert_eq!(october.status, StatusCode::CREATED, "{}", october.body);
        assert_eq!(
            (&october.body["instructions"], &october.body["deceased"]),
            (&json!(1), &json!([]))
        );
        let budget = self.allocate("budget-11", "2026-11", "2026-10-21").await;
        assert_eq!(budget.status, StatusCode::CREATED, "{}", budget.body);
        let november = self.run_commune("run-11", "2026-11", "2026-11-01").await;
        assert_eq!(november.status, StatusCode::CREATED, "{}", november.body);
        assert_eq!(
            (&november.body["instructions"], &november.body["deceased"]),
            (&json!(0), &json!([1]))
        );
    }

    /// The head of `household` granted the elderly allowance through the bank from
    /// October 2026 (under `key`), and October's budget allocated.
    async fn granted_and_funded_october(&self, household: &str, key: &str) {
        let granted = self
            .send(
                &self.staff.manager,
                "/v1/entitlements",
                key,
                json!({
                    "household_id": household, "member": "m1",
                    "category": "ELDERLY_80_PLUS_NO_PENSION", "channel": "bank", "gateway": "vcb",
                    "from": "2026-10", "on": "2026-10-01"
                }),
                "entitlement.response",
            )
            .await;
        assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.body);
        let budget = self.allocate("budget-10", "2026-10", "2026-10-01").await;
        assert_eq!(budget.status, StatusCode::CREATED, "{}", budget.body);
    }

    /// `funded_october`, then commune 0100007 paid for October on 2026-10-05 (one
    /// instruction through gateway vcb): the run's answer.
    async fn paid_october(&self) -> Answer {
        self.funded_october().await;
        let paid = self.run_commune("run-10", "2026-10", "2026-10-05").await;
        assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
        paid
    }

    /// A GET with extra headers, answering the status, the headers and the raw body.
    async fn get_raw(
        &self,
        token: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let mut request = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.bytes().await.unwrap().to_vec())
    }
}

fn money(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("money is a string, got {v}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loan_from_registration_to_repayment_reads_back_right() {
    let s = server().await;
    let loan = s.disbursed_loan().await;
    assert_eq!(loan, "01-L1");
    let repaid = s
        .post(
            &s.staff.teller,
            &format!("/v1/loans/{loan}/repayments"),
            "repay-03",
            // Paid on the instalment's due date: on time, nothing moves to overdue.
            json!({"amount": "1000000", "on": "2026-03-05"}),
        )
        .await;
    assert_eq!(repaid.status, StatusCode::CREATED, "{}", repaid.body);
    assert_eq!(repaid.body["duplicate"], false);
    assert_eq!(repaid.body["partition"], "01");
    assert_eq!(repaid.body["sequence"], 5);
    // How the book split the payment, from the recorded event itself.
    let receipt = ansinh::log::Receipt {
        partition: "01".into(),
        sequence: 5,
        hash: ansinh::chain::Digest::from_hex(repaid.body["hash"].as_str().unwrap()).unwrap(),
        stream_sequence: repaid.body["stream_sequence"].as_u64().unwrap(),
        index: repaid.body["index"].as_u64().unwrap() as u32,
        duplicate: false,
    };
    let Some(Payload::LoanRepaymentReceived(split)) =
        s.service.ledger.event_of(&receipt).await.unwrap().payload
    else {
        panic!("the receipt names the repayment");
    };
    let to_interest: Decimal = split.to_interest.parse().unwrap();
    let to_principal: Decimal = split.to_principal.parse().unwrap();
    assert!(to_interest > Decimal::ZERO);
    assert_eq!(to_interest + to_principal, Decimal::from(1_000_000));

    let view = s
        .get(
            &s.staff.officer,
            &format!("/v1/households/{HOUSEHOLD}?as_of=2026-03-05"),
            "household-view.response",
        )
        .await;
    assert_eq!(view.status, StatusCode::OK, "{}", view.body);
    let b = &view.body;
    assert_eq!(b["as_of"], "2026-03-05");
    assert_eq!(b["household"]["members"], 3);
    assert_eq!(b["household"]["residence"], "active");
    assert_eq!(b["household"]["standing"]["status"], "poor");
    assert_eq!(b["household"]["loans"], json!([loan]));
    let line = &b["loans"][0];
    assert_eq!(line["status"], "Active");
    assert_eq!(money(&line["approved"]), Decimal::from(30_000_000));
    assert_eq!(money(&line["disbursed"]), Decimal::from(30_000_000));
    assert_eq!(
        money(&line["principal_outstanding"]),
        Decimal::from(30_000_000) - to_principal
    );
    assert_eq!(money(&line["overdue_principal"]), Decimal::ZERO);
    // Interest was paid up to the repayment date: nothing more is owed on it.
    assert_eq!(money(&line["interest_to_date"]), Decimal::ZERO);
    assert_eq!(line["interest_counted_to"], "2026-03-05");
    // Priced on an earlier day, the view says the interest is counted to the day it was
    // last posted to, not to the day asked for.
    let earlier = s
        .get(
            &s.staff.officer,
            &format!("/v1/households/{HOUSEHOLD}?as_of=2026-03-01"),
            "household-view.response",
        )
        .await;
    assert_eq!(
        earlier.body["loans"][0]["interest_counted_to"],
        "2026-03-05"
    );
    let history: Vec<&str> = b["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(history.len(), 5, "{history:?}");
    assert!(history[0].ends_with("HouseholdRegistered"), "{history:?}");
    assert!(history[4].ends_with("LoanRepaymentReceived"), "{history:?}");
    assert_eq!(
        (&b["history_page"], &b["history_more"]),
        (&json!(0), &json!(false))
    );
    // The history comes a page at a time: pages of two lines hold the same five lines in
    // the same order, the last page saying that nothing follows it.
    let mut paged = Vec::new();
    for page in 0..3 {
        let path = format!("/v1/households/{HOUSEHOLD}?history_lines=2&history_page={page}");
        let answer = s
            .get(&s.staff.officer, &path, "household-view.response")
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let lines = answer.body["history"].as_array().unwrap().clone();
        assert_eq!(lines.len(), if page < 2 { 2 } else { 1 }, "page {page}");
        assert_eq!(answer.body["history_more"], json!(page < 2), "page {page}");
        paged.extend(lines);
    }
    assert_eq!(&Value::Array(paged), &b["history"]);
    // A position past the log's end is no receipt: refused at once, not waited for.
    for bad in [
        "history_lines=0",
        "history_lines=501",
        "history_page=-1",
        "after=999999999",
    ] {
        let path = format!("/v1/households/{HOUSEHOLD}?{bad}");
        let answer = s.get(&s.staff.officer, &path, "error.response").await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("InvalidParameter")),
            "{bad}: {}",
            answer.body
        );
    }
    // No personal data in the view: it is sealed in the log and not part of this answer.
    assert!(!b.to_string().contains("001085012345"));

    let folio = s
        .get(
            &s.staff.teller,
            "/v1/communes/0100007/portfolio",
            "portfolio.response",
        )
        .await;
    assert_eq!(folio.status, StatusCode::OK, "{}", folio.body);
    assert_eq!(folio.body["open_loans"], 1);
    assert_eq!(folio.body["households_active"], 1);
    assert_eq!(
        money(&folio.body["outstanding"]),
        money(&line["principal_outstanding"])
    );
    let tb = s
        .get(
            &s.staff.manager,
            "/v1/partitions/01/trial-balance",
            "trial-balance.response",
        )
        .await;
    assert_eq!(tb.status, StatusCode::OK, "{}", tb.body);
    assert_eq!(tb.body["balanced"], true);
    // The disbursement in cash (the point funded with 30,000,000, then paying it out),
    // and the repayment as two postings: interest accrued to its date (Dr
    // InterestReceivable, Cr InterestIncome), then the payment.
    assert_eq!(tb.body["events_checked"], 3);
    // The loans' nine accounts, then the budget side's four (all zero here).
    assert_eq!(tb.body["accounts"].as_array().unwrap().len(), 13);
    assert_eq!(
        money(&tb.body["total_debits"]),
        money(&tb.body["total_credits"])
    );
    assert_eq!(
        money(&tb.body["total_debits"]),
        Decimal::from(61_000_000) + to_interest
    );
    let receivable = &tb.body["accounts"][0];
    assert_eq!(receivable["account"], "LoanReceivable");
    assert_eq!(money(&receivable["credit"]), to_principal);
    // The point holds what it collected, not less than nothing.
    let cash = tb.body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "CashAtCommunePoint")
        .expect("the cash account is listed");
    assert_eq!(
        money(&cash["debit"]) - money(&cash["credit"]),
        Decimal::from(1_000_000)
    );
    // A commune-level caller may not read a whole province's books.
    let denied = s
        .get(
            &s.staff.teller,
            "/v1/partitions/01/trial-balance",
            "trial-balance.response",
        )
        .await;
    assert_eq!(
        (denied.status, denied.kind()),
        (StatusCode::FORBIDDEN, "OutsideUnit")
    );
    verified(&s.config).await;
}

/// A write whose request is dropped part-way (here by the timeout's 503; a client that
/// hangs up does the same) runs to its end: a registration dropped after claiming its
/// citizens and before submitting its event left them held by a household never
/// recorded, so nobody could register them elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_whose_request_timed_out_is_recorded_all_the_same() {
    let s = serve_prepared(None, |api| {
        api.set_request_timeout(std::time::Duration::from_secs(1))
    })
    .await;
    let partition = ansinh::chain::Partition::new("01").unwrap();
    let mut appended = s
        .service
        .ledger
        .jetstream()
        .client()
        .subscribe(s.config.subject(&partition))
        .await
        .unwrap();
    let before = s.events().await;
    let held = s.service.hold_claims().await.unwrap();
    let dropped = s.register(HOUSEHOLD, "001085012346").await;
    assert_eq!(
        (dropped.status, dropped.kind()),
        (StatusCode::SERVICE_UNAVAILABLE, "Timeout"),
        "{}",
        dropped.body
    );
    assert_eq!(s.events().await, before);
    drop(held);
    // The registration goes on once its claims are stored, with no request waiting.
    let event = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures::StreamExt::next(&mut appended),
    )
    .await
    .expect("the dropped registration was never appended")
    .unwrap();
    assert_eq!(event.subject.as_str(), s.config.subject(&partition));
    assert_eq!(s.events().await, before + 1);
    let again = s.register(HOUSEHOLD, "001085012346").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["duplicate"], true);
}

/// `REQUESTS_IN_FLIGHT_MAX` bounds the requests of the whole server, not of each route:
/// with every slot held by registrations (waiting on held claims), a request to another
/// route waits for a slot, and is answered once one is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_bounded_across_routes() {
    let mut api = None;
    // Longer than the test can take: a registration or the probe that timed out while
    // the slots are held would free its slot, and this test is about the bound alone.
    let s = serve_prepared(None, |a| {
        a.set_request_timeout(std::time::Duration::from_secs(120));
        api = Some(a.clone());
    })
    .await;
    let api = api.unwrap();
    let held = s.service.hold_claims().await.unwrap();
    let max = http::REQUESTS_IN_FLIGHT_MAX;
    let households: Vec<_> = (0..max)
        .map(|n| format!("0100007-{:06}", 100 + n))
        .collect();
    let citizens: Vec<_> = (0..max).map(|n| format!("001085{:06}", 100 + n)).collect();
    let registrations =
        futures::future::join_all((0..max).map(|n| s.register(&households[n], &citizens[n])));
    tokio::pin!(registrations);
    // Until every registration holds a slot (each then waits on the held claims).
    let filled = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while api.requests_in_flight() < max {
            assert!(
                std::time::Instant::now() < deadline,
                "{} in flight",
                api.requests_in_flight()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = &mut registrations => panic!("a registration was answered while its claims were held"),
        () = filled => {}
    }
    let probe = s.client.get(format!("{}/healthz", s.base)).send();
    tokio::pin!(probe);
    // While the slots are held the probe cannot be answered, however long it waits: a
    // bound on the test, not a speed asserted.
    tokio::select! {
        _ = &mut registrations => panic!("a registration was answered while its claims were held"),
        answered = &mut probe => panic!(
            "/healthz was answered with every slot held: {:?}",
            answered.map(|r| r.status())
        ),
        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
    }
    assert_eq!(api.requests_in_flight(), max);
    drop(held);
    let (registered, probed) = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        tokio::join!(registrations, probe)
    })
    .await
    .expect("the requests were not answered once the claims were released");
    assert_eq!(probed.unwrap().status(), StatusCode::OK);
    for answer in registered {
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
}

/// A client that opens a connection and never finishes its request's headers (slowloris)
/// is disconnected once the header-read timeout passes, rather than holding a task and a
/// file descriptor of the server for as long as it likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = serve_prepared(None, |api| {
        api.set_header_read_timeout(std::time::Duration::from_secs(1))
    })
    .await;
    let address = s.base.trim_start_matches("http://");
    let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // A bound on the test, far past the timeout: without one the read never ends.
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        slow.read_to_end(&mut answer),
    )
    .await
    .expect("the server still holds a connection whose headers never came");
    // Closed, or reset; perhaps after a 408, never after an answer to the request.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // A client that sends its headers whole is answered as before.
    let health = s
        .client
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_write_returns_its_receipt_and_appends_nothing() {
    let s = server().await;
    let first = s.register(HOUSEHOLD, "001085012345").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.body["duplicate"], false);
    let events = s.events().await;
    assert_eq!(events, 1);

    let again = s.register(HOUSEHOLD, "001085012345").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["duplicate"], true);
    for field in ["partition", "sequence", "hash", "stream_sequence"] {
        assert_eq!(again.body[field], first.body[field], "{field}");
    }
    assert_eq!(s.events().await, events);

    // The same key with another body is refused, not answered with the first receipt.
    let changed = s.register(HOUSEHOLD, "001085099999").await;
    assert_eq!(
        (changed.status, changed.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "IdempotencyKeyReused")
    );
    assert_eq!(s.events().await, events);
    // Under that key, another household: the key's binding is checked while its citizen
    // is claimed, and the refusal gives the claim back, so the household registers
    // under its own key.
    let other = "0100007-000002";
    let body = json!({
        "household_id": other, "area": "rural", "registered_on": "2026-01-06",
        "personal": {"head_name": "Lò Văn Páo", "head_citizen_id": "001085066666", "members": []}
    });
    let reused = s
        .post(
            &s.staff.officer,
            "/v1/households",
            &format!("register-{HOUSEHOLD}"),
            body.clone(),
        )
        .await;
    assert_eq!(
        (reused.status, reused.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "IdempotencyKeyReused")
    );
    assert_eq!(s.events().await, events);
    let own = s
        .post(&s.staff.officer, "/v1/households", "register-other", body)
        .await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.body);
    let events = events + 1;
    assert_eq!(s.events().await, events);

    // A refused request binds nothing: corrected, it may go again under its key.
    let refused = s
        .post(
            &s.staff.officer,
            &format!("/v1/households/{HOUSEHOLD}/classifications"),
            "review",
            json!({"income_per_person": "1200000", "area": "rural", "deprived": ["not_an_indicator"],
                   "review_year": 2026, "decided_on": "2026-01-10"}),
        )
        .await;
    assert_eq!(
        (refused.status, refused.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "UnknownIndicator")
    );
    assert_eq!(s.events().await, events);
    let corrected = s
        .post(
            &s.staff.officer,
            &format!("/v1/households/{HOUSEHOLD}/classifications"),
            "review",
            json!({"income_per_person": "1200000", "area": "rural", "deprived": ["employment"],
                   "review_year": 2026, "decided_on": "2026-01-10"}),
        )
        .await;
    assert_eq!(corrected.status, StatusCode::CREATED, "{}", corrected.body);
    let events = s.events().await;

    // Keys are per caller: another officer's identical key is its own request (here
    // refused by the book, since the household exists).
    let other = s
        .post(
            &s.staff.manager,
            "/v1/households",
            &format!("register-{HOUSEHOLD}"),
            json!({
                "household_id": HOUSEHOLD, "area": "rural", "registered_on": "2026-01-05",
                "personal": {"head_name": "X", "head_citizen_id": "001085077777", "members": []}
            }),
        )
        .await;
    assert_eq!(
        (other.status, other.kind()),
        (StatusCode::CONFLICT, "HouseholdExists")
    );
    assert_eq!(s.events().await, events);
}

/// The ledger, not a process, tells a retry from another request under the same key: two
/// different requests sent at once under one key to two processes on the same log land
/// once, and the other is refused; afterwards each process answers the winner's retry
/// with its receipt and refuses the loser's body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_under_one_key_at_two_processes_land_once() {
    let s = server().await;
    assert_eq!(
        s.register(HOUSEHOLD, "001085012345").await.status,
        StatusCode::CREATED
    );
    let (other_base, _other) = s.second_process().await;
    let review = |income: &str| {
        json!({"income_per_person": income, "area": "rural", "deprived": ["employment"],
               "review_year": 2026, "decided_on": "2026-01-10"})
    };
    let path = format!("/v1/households/{HOUSEHOLD}/classifications");
    let send = |base: String, body: Value| {
        let (client, token, path) = (s.client.clone(), s.staff.officer.clone(), path.clone());
        async move {
            client
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .header("idempotency-key", "review-race")
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let events = s.events().await;
    let (here, there) = tokio::join!(
        send(s.base.clone(), review("1200000")),
        send(other_base.clone(), review("2900000"))
    );
    let here = s.answer(here, "receipt.response").await;
    let there = s.answer(there, "receipt.response").await;
    let (won, lost, winner) = match (here.status, there.status) {
        (StatusCode::CREATED, _) => (here, there, "1200000"),
        (_, StatusCode::CREATED) => (there, here, "2900000"),
        _ => panic!("neither landed: {} / {}", here.body, there.body),
    };
    assert_eq!(
        (lost.status, lost.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "IdempotencyKeyReused"),
        "{}",
        lost.body
    );
    assert_eq!(s.events().await, events + 1);
    let loser = if winner == "1200000" {
        "2900000"
    } else {
        "1200000"
    };
    for base in [s.base.clone(), other_base.clone()] {
        let again = s
            .answer(send(base.clone(), review(winner)).await, "receipt.response")
            .await;
        assert_eq!(
            (
                again.status,
                &again.body["duplicate"],
                &again.body["sequence"]
            ),
            (StatusCode::OK, &json!(true), &won.body["sequence"]),
            "{base}"
        );
        let refused = s
            .answer(send(base.clone(), review(loser)).await, "receipt.response")
            .await;
        assert_eq!(
            (refused.status, refused.kind()),
            (StatusCode::UNPROCESSABLE_ENTITY, "IdempotencyKeyReused"),
            "{base}"
        );
    }
    assert_eq!(s.events().await, events + 1);
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_the_ledger_and_appends_nothing() {
    let s = server().await;
    let loan = s.disbursed_loan().await;
    let events = s.events().await;
    let repay = format!("/v1/loans/{loan}/repayments");
    let teller = &s.staff.teller;

    let malformed = s
        .post_raw(
            teller,
            &repay,
            Some("k1"),
            r#"{"amount": "5", "on": "#.into(),
        )
        .await;
    assert_eq!(
        (malformed.status, malformed.kind()),
        (StatusCode::BAD_REQUEST, "MalformedJson")
    );
    for (amount, why) in [
        (json!("-500000"), "negative"),
        (json!("1500.5"), "not whole"),
        (json!(1500000), "a number, not a string"),
        (json!("0"), "zero"),
    ] {
        let refused = s
            .post(
                teller,
                &repay,
                "k2",
                json!({"amount": amount, "on": "2026-03-20"}),
            )
            .await;
        assert_eq!(
            (refused.status, refused.kind()),
            (StatusCode::BAD_REQUEST, "SchemaViolation"),
            "{why}"
        );
        assert_eq!(refused.body["violations"][0]["path"], "/amount", "{why}");
    }
    // Missing field, unknown field and an impossible date: all three reported at once.
    let refused = s
        .post(
            teller,
            &repay,
            "k3",
            json!({"on": "2026-02-30", "tip": "1"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.body["violations"].as_array().unwrap().len(),
        3,
        "{}",
        refused.body
    );

    let no_key = s
        .post_raw(
            teller,
            &repay,
            None,
            json!({"amount": "5", "on": "2026-03-20"}).to_string(),
        )
        .await;
    assert_eq!(
        (no_key.status, no_key.kind()),
        (StatusCode::BAD_REQUEST, "MissingIdempotencyKey")
    );
    let huge = s
        .post_raw(
            teller,
            &repay,
            Some("k4"),
            format!("\"{}\"", "x".repeat(http::REQUEST_BODY_BYTES_MAX)),
        )
        .await;
    assert_eq!(
        (huge.status, huge.kind()),
        (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge")
    );
    let not_json = s
        .answer(
            s.client
                .post(format!("{}{repay}", s.base))
                .bearer_auth(teller)
                .header("idempotency-key", "k5")
                .body("amount=5")
                .send()
                .await
                .unwrap(),
            "receipt.response",
        )
        .await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let bad_path = s
        .post(
            teller,
            "/v1/loans/nonsense/repayments",
            "k6",
            json!({"amount": "5", "on": "2026-03-20"}),
        )
        .await;
    assert_eq!(
        (bad_path.status, bad_path.kind()),
        (StatusCode::BAD_REQUEST, "InvalidParameter")
    );
    assert_eq!(s.events().await, events);

    // Well-formed but refused by the book: more than is owed (documented as 422).
    let over = s
        .post(
            teller,
            &repay,
            "too-much",
            json!({"amount": "90000000", "on": "2026-04-20"}),
        )
        .await;
    assert_eq!(
        (over.status, over.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "Overpayment")
    );
    let unknown = s
        .post(
            teller,
            "/v1/loans/01-L99/repayments",
            "k7",
            json!({"amount": "5", "on": "2026-03-20"}),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.kind()),
        (StatusCode::NOT_FOUND, "UnknownLoan")
    );
    let nobody = s
        .get(
            &s.staff.officer,
            "/v1/households/0100007-000099",
            "household-view.response",
        )
        .await;
    assert_eq!(
        (nobody.status, nobody.kind()),
        (StatusCode::NOT_FOUND, "HouseholdNotRegistered")
    );
    let second = s
        .post(
            &s.staff.officer,
            "/v1/loans",
            "approve-again",
            Server::approval(HOUSEHOLD),
        )
        .await;
    assert_eq!(
        (second.status, second.kind()),
        (StatusCode::CONFLICT, "ActiveLoanExists")
    );
    assert_eq!(s.events().await, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_json_and_text_that_is_not_text_are_refused_and_append_nothing() {
    let s = server().await;
    let loan = s.disbursed_loan().await;
    let events = s.events().await;
    // A member named twice: serde alone keeps the last, a reader may see the first.
    let twice = s
        .post_raw(
            &s.staff.teller,
            &format!("/v1/loans/{loan}/repayments"),
            Some("twice"),
            r#"{"amount": "1000", "amount": "29000000", "on": "2026-05-01"}"#.into(),
        )
        .await;
    assert_eq!(
        (twice.status, twice.kind()),
        (StatusCode::BAD_REQUEST, "MalformedJson")
    );
    assert!(
        twice.body["message"]
            .as_str()
            .unwrap()
            .contains("\"amount\""),
        "{}",
        twice.body
    );
    // A control character, escaped or not, is not part of a name.
    let registration = |name: &str, key: &str| {
        let body = json!({
            "household_id": "0100007-000077", "area": "rural", "registered_on": "2026-01-05",
            "personal": {"head_name": name, "head_citizen_id": "001085077701", "members": []}
        });
        (key.to_string(), body)
    };
    for name in ["An\u{0}", "An\u{1b}[2J", "An\u{85}"] {
        let (key, body) = registration(name, "ctl");
        let refused = s.post(&s.staff.officer, "/v1/households", &key, body).await;
        assert_eq!(
            (refused.status, refused.kind()),
            (StatusCode::BAD_REQUEST, "MalformedJson"),
            "{name:?}"
        );
    }
    assert_eq!(s.events().await, events);
    // One name, two spellings: decomposed marks are read as the composed name, so the
    // same request sent with the other spelling is the same request, recorded once.
    let (key, decomposed) = registration("Nguye\u{302}\u{303}n Va\u{306}n An", "nfc");
    let first = s
        .post(&s.staff.officer, "/v1/households", &key, decomposed)
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let (key, composed) = registration("Nguy\u{1ec5}n V\u{103}n An", "nfc");
    let again = s
        .post(&s.staff.officer, "/v1/households", &key, composed)
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(s.events().await, events + 1);
}

/// A loan command from outside the loan's unit is refused for its unit before anything
/// about the loan is told: whether it exists (a loan number of another province) or
/// whether its household still lives there (a dissolved household's loan). Only the
/// loan's own unit learns that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loan_outside_the_callers_unit_is_refused_before_it_is_looked_at() {
    let s = server().await;
    let officer = &s.staff.officer;
    let household = "0100007-000051";
    let registered = s
        .post(
            officer,
            "/v1/households",
            "register-51",
            json!({
                "household_id": household,
                "area": "rural",
                "registered_on": "2026-01-05",
                "personal": {"head_name": "Nguyễn Thị Hạnh", "head_citizen_id": "001090000051", "members": []}
            }),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    assert_eq!(s.classify_poor(household).await.status, StatusCode::CREATED);
    let approved = s
        .post(
            officer,
            "/v1/loans",
            "approve-51",
            Server::approval(household),
        )
        .await;
    assert_eq!(approved.status, StatusCode::CREATED, "{}", approved.body);
    let loan = approved.body["loan"].as_str().unwrap().to_owned();
    // The only member dies: the household is dissolved, its loan kept to collect.
    let died = s
        .post(
            officer,
            &format!("/v1/households/{household}/deaths"),
            "death-51",
            json!({"citizen_id": "001090000051", "died_on": "2026-02-03"}),
        )
        .await;
    assert_eq!(died.status, StatusCode::CREATED, "{}", died.body);
    let before = s.events().await;
    let disbursement = json!({"amount": "1000000", "on": "2026-02-05"});
    for (token, who, loan, status, kind) in [
        (
            &s.staff.teller79,
            "another province's teller",
            "01-L999",
            StatusCode::FORBIDDEN,
            "OutsideUnit",
        ),
        (
            &s.staff.teller79,
            "another province's teller",
            loan.as_str(),
            StatusCode::FORBIDDEN,
            "OutsideUnit",
        ),
        (
            &s.staff.other_teller,
            "another commune's teller",
            loan.as_str(),
            StatusCode::FORBIDDEN,
            "OutsideUnit",
        ),
        (
            &s.staff.teller,
            "the commune's teller",
            loan.as_str(),
            StatusCode::CONFLICT,
            "HouseholdInactive",
        ),
        (
            &s.staff.teller,
            "the commune's teller",
            "01-L999",
            StatusCode::NOT_FOUND,
            "UnknownLoan",
        ),
    ] {
        let refused = s
            .post(
                token,
                &format!("/v1/loans/{loan}/disbursements"),
                &format!("disburse-{loan}"),
                disbursement.clone(),
            )
            .await;
        assert_eq!(
            (refused.status, refused.kind()),
            (status, kind),
            "{who}, {loan}: {}",
            refused.body
        );
    }
    assert_eq!(s.events().await, before, "refusals append nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_act_only_in_their_role_and_unit() {
    let s = server().await;
    let loan = s.disbursed_loan().await;
    let events = s.events().await;
    let repay = format!("/v1/loans/{loan}/repayments");
    let payment = json!({"amount": "100000", "on": "2026-03-20"});

    let nobody = s
        .post("ansinh_not-a-token", &repay, "a", payment.clone())
        .await;
    assert_eq!(
        (nobody.status, nobody.kind()),
        (StatusCode::UNAUTHORIZED, "Unauthenticated")
    );
    let anonymous = s
        .answer(
            s.client
                .get(format!("{}/v1/households/{HOUSEHOLD}", s.base))
                .send()
                .await
                .unwrap(),
            "household-view.response",
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // A teller takes money in and pays it out, but does not approve.
    let approve = s
        .post(
            &s.staff.teller,
            "/v1/loans",
            "b",
            Server::approval(HOUSEHOLD),
        )
        .await;
    assert_eq!(
        (approve.status, approve.kind()),
        (StatusCode::FORBIDDEN, "RoleDenied")
    );
    // A credit officer of another commune may not register here...
    let register = s
        .post(
            &s.staff.other_officer,
            "/v1/households",
            "c",
            json!({
                "household_id": "0100007-000002", "area": "urban", "registered_on": "2026-01-05",
                "personal": {"head_name": "Lê Văn Cường", "head_citizen_id": "001085055555", "members": []}
            }),
        )
        .await;
    assert_eq!(
        (register.status, register.kind()),
        (StatusCode::FORBIDDEN, "OutsideUnit")
    );
    // ... nor a teller of another commune collect on this commune's loan (the book's check).
    let collect = s
        .post(&s.staff.other_teller, &repay, "d", payment.clone())
        .await;
    assert_eq!(
        (collect.status, collect.kind()),
        (StatusCode::FORBIDDEN, "OutsideUnit")
    );
    // ... nor read this commune's households.
    let peek = s
        .get(
            &s.staff.other_officer,
            &format!("/v1/households/{HOUSEHOLD}"),
            "household-view.response",
        )
        .await;
    assert_eq!(
        (peek.status, peek.kind()),
        (StatusCode::FORBIDDEN, "OutsideUnit")
    );

    // The auditor (head office) reads everything and changes nothing.
    let read = s
        .get(
            &s.staff.auditor,
            &format!("/v1/households/{HOUSEHOLD}"),
            "household-view.response",
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let tb = s
        .get(
            &s.staff.auditor,
            "/v1/partitions/01/trial-balance",
            "trial-balance.response",
        )
        .await;
    assert_eq!(tb.status, StatusCode::OK);
    let write = s.post(&s.staff.auditor, &repay, "e", payment.clone()).await;
    assert_eq!(
        (write.status, write.kind()),
        (StatusCode::FORBIDDEN, "RoleDenied")
    );
    assert_eq!(s.events().await, events);

    // The branch manager of the province restructures: extend the loan.
    let extended = s
        .post(
            &s.staff.manager,
            &format!("/v1/loans/{loan}/extensions"),
            "extend",
            json!({"new_due": "2029-08-05", "on": "2026-03-04", "reason": "harvest failed"}),
        )
        .await;
    assert_eq!(extended.status, StatusCode::CREATED, "{}", extended.body);
    assert_eq!(s.events().await, events + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_write_records_what_it_says() {
    let s = server().await;
    let loan = s.disbursed_loan().await;
    let (officer, teller, manager) = (&s.staff.officer, &s.staff.teller, &s.staff.manager);
    let household = format!("/v1/households/{HOUSEHOLD}");

    // The spouse dies; then a member joins (the whole sealed record is sent again).
    let died = s
        .post(
            officer,
            &format!("{household}/deaths"),
            "death",
            json!({"citizen_id": "001190000001", "died_on": "2026-02-10"}),
        )
        .await;
    assert_eq!(died.status, StatusCode::CREATED, "{}", died.body);
    assert_eq!(s.view(officer, HOUSEHOLD).await["household"]["members"], 2);
    let joined = s
        .post(
            officer,
            &format!("{household}/members"),
            "members",
            json!({
                "on": "2026-02-20", "reason": "daughter-in-law joins",
                "personal": {
                    "head_name": "Nguyễn Thị Hạnh", "head_citizen_id": "001085012345",
                    "members": [
                        {"name": "Trần Minh", "relation": "child"},
                        {"name": "Lê Thị Mai", "citizen_id": "001195000002", "relation": "daughter_in_law"}
                    ]
                }
            }),
        )
        .await;
    assert_eq!(joined.status, StatusCode::CREATED, "{}", joined.body);
    assert_eq!(s.view(officer, HOUSEHOLD).await["household"]["members"], 3);

    // A mistaken repayment is reversed by the branch manager, not by a teller.
    let repaid = s
        .post(
            teller,
            &format!("/v1/loans/{loan}/repayments"),
            "repay",
            json!({"amount": "1000000", "on": "2026-03-20"}),
        )
        .await;
    assert_eq!(repaid.status, StatusCode::CREATED);
    let reversal =
        json!({"sequence": repaid.body["sequence"], "on": "2026-03-21", "reason": "keyed twice"});
    let by_teller = s
        .post(
            teller,
            &format!("/v1/loans/{loan}/reversals"),
            "reverse-t",
            reversal.clone(),
        )
        .await;
    assert_eq!(
        (by_teller.status, by_teller.kind()),
        (StatusCode::FORBIDDEN, "RoleDenied")
    );
    let reversed = s
        .post(
            manager,
            &format!("/v1/loans/{loan}/reversals"),
            "reverse",
            reversal,
        )
        .await;
    assert_eq!(reversed.status, StatusCode::CREATED, "{}", reversed.body);

    // Nothing repaid by 30 November: 9 instalments of a 36-month schedule fall overdue,
    // each from the day after it fell due. The repayment of 03-20 moved the first (its
    // reversal took back only the repayment); the job moves the other 8, one call each,
    // then one accrues interest to 30 November, then nothing is left (409).
    let mut recorded = 0;
    loop {
        let overdue = s
            .post(
                manager,
                &format!("/v1/loans/{loan}/overdue"),
                &format!("overdue-{recorded}"),
                json!({"as_of": "2026-11-30"}),
            )
            .await;
        if overdue.status == StatusCode::CONFLICT {
            assert_eq!(overdue.body["error"], "NothingToRecord", "{}", overdue.body);
            break;
        }
        assert_eq!(overdue.status, StatusCode::CREATED, "{}", overdue.body);
        recorded += 1;
        assert!(recorded <= 9, "one call an instalment");
    }
    assert_eq!(recorded, 9);
    let line = &s.view(officer, HOUSEHOLD).await["loans"][0];
    assert_eq!(money(&line["overdue_principal"]), Decimal::from(7_500_000));
    assert_eq!(
        money(&line["principal_outstanding"]),
        Decimal::from(30_000_000)
    );

    // A typhoon: frozen; unfrozen (by the branch manager only), frozen again, then
    // written off by decision.
    let unfreeze = json!({"on": "2026-12-03", "reason": "frozen under the wrong decision"});
    let by_officer = s
        .post(
            officer,
            &format!("/v1/loans/{loan}/unfreeze"),
            "unfreeze-o",
            unfreeze.clone(),
        )
        .await;
    assert_eq!(
        (by_officer.status, by_officer.kind()),
        (StatusCode::FORBIDDEN, "RoleDenied")
    );
    for (path, key, on, status) in [
        ("freeze", "freeze", "2026-12-01", "Frozen"),
        ("unfreeze", "unfreeze", "2026-12-03", "Active"),
        ("freeze", "freeze-2", "2026-12-04", "Frozen"),
        ("write-off", "write-off", "2026-12-05", "WrittenOff"),
    ] {
        let body = if path == "unfreeze" {
            unfreeze.clone()
        } else {
            json!({"decision": "QĐ 77/2026/UBND", "on": on})
        };
        let done = s
            .post(manager, &format!("/v1/loans/{loan}/{path}"), key, body)
            .await;
        assert_eq!(done.status, StatusCode::CREATED, "{path}: {}", done.body);
        assert_eq!(
            s.view(officer, HOUSEHOLD).await["loans"][0]["status"],
            status
        );
    }
    let folio = s
        .get(
            officer,
            "/v1/communes/0100007/portfolio",
            "portfolio.response",
        )
        .await;
    assert_eq!(folio.body["open_loans"], 0);
    assert_eq!(money(&folio.body["written_off"]), Decimal::from(30_000_000));
    assert_eq!(money(&folio.body["outstanding"]), Decimal::ZERO);

    // A move to another province answers both halves; replaying it appends nothing.
    assert_eq!(
        s.register("0100007-000002", "001085033333").await.status,
        StatusCode::CREATED
    );
    let move_body =
        json!({"to_household_id": "7900007-000042", "area": "urban", "on": "2026-05-01"});
    let moved = s
        .post(
            officer,
            "/v1/households/0100007-000002/moves",
            "move",
            move_body.clone(),
        )
        .await;
    assert_eq!(moved.status, StatusCode::CREATED, "{}", moved.body);
    assert_eq!(moved.body["moved_out"]["partition"], "01");
    assert_eq!(moved.body["moved_in"]["partition"], "79");
    let events = s.events().await;
    let again = s
        .post(
            officer,
            "/v1/households/0100007-000002/moves",
            "move",
            move_body,
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["moved_in"]["duplicate"], true);
    assert_eq!(s.events().await, events);

    // Erasure is the branch manager's; afterwards the personal data cannot be opened.
    assert_eq!(
        s.register("0100007-000003", "001085044444").await.status,
        StatusCode::CREATED
    );
    let erasure = json!({"reference": "request 2026/15", "on": "2026-06-01"});
    let by_officer = s
        .post(
            officer,
            "/v1/households/0100007-000003/erasure",
            "erase-o",
            erasure.clone(),
        )
        .await;
    assert_eq!(
        (by_officer.status, by_officer.kind()),
        (StatusCode::FORBIDDEN, "RoleDenied")
    );
    let erased = s
        .post(
            manager,
            "/v1/households/0100007-000003/erasure",
            "erase",
            erasure,
        )
        .await;
    assert_eq!(erased.status, StatusCode::CREATED, "{}", erased.body);
    let shown = s
        .get(
            officer,
            "/v1/households/0100007-000003",
            "household-view.response",
        )
        .await;
    assert_eq!(shown.body["household"]["personal_data_erased"], true);
    let death = s
        .post(
            officer,
            "/v1/households/0100007-000003/deaths",
            "death-3",
            json!({"citizen_id": "001085044444", "died_on": "2026-07-01"}),
        )
        .await;
    assert_eq!(
        (death.status, death.kind()),
        (StatusCode::CONFLICT, "PersonalDataErased")
    );

    let tb = s
        .get(
            manager,
            "/v1/partitions/01/trial-balance",
            "trial-balance.response",
        )
        .await;
    assert_eq!(tb.body["balanced"], true);
    verified(&s.config).await;
}

/// A death recorded, then the household's data erased: the same request again is the
/// first one's receipt, as a registration's retry is, not a refusal to open the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_death_sent_again_after_the_erasure_gets_its_first_receipt() {
    let s = &server().await;
    let (officer, manager) = (&s.staff.officer, &s.staff.manager);
    assert_eq!(
        s.register("0100007-000031", "001085031031").await.status,
        StatusCode::CREATED
    );
    let path = "/v1/households/0100007-000031/deaths";
    let body = json!({"citizen_id": "001190000031", "died_on": "2026-07-01"});
    let first = s.post(officer, path, "death-31", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let erased = s
        .post(
            manager,
            "/v1/households/0100007-000031/erasure",
            "erase-31",
            json!({"reference": "request 2026/31", "on": "2026-07-02"}),
        )
        .await;
    assert_eq!(erased.status, StatusCode::CREATED, "{}", erased.body);
    let events = s.events().await;

    let again = s.post(officer, path, "death-31", body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.body["sequence"], first.body["sequence"]);
    assert_eq!(s.events().await, events);

    // Another death needs the data, which are gone.
    let other = s
        .post(
            officer,
            path,
            "death-31-head",
            json!({"citizen_id": "001085031031", "died_on": "2026-07-03"}),
        )
        .await;
    assert_eq!(
        (other.status, other.kind()),
        (StatusCode::CONFLICT, "PersonalDataErased")
    );
    assert_eq!(s.events().await, events);
}

/// Payments refusals answer by the rule of every refusal (ADR 0013): 404 for what does
/// not exist, 409 for a state that forbids the command, 422 for a value to correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_refusals_answer_404_409_or_422_by_what_the_caller_can_do() {
    let s = &server().await;
    s.funded_october().await;
    let m = &s.staff.manager;
    let stop = |n: u32, key: &'static str, on: &'static str| {
        let path = format!("/v1/partitions/01/entitlements/{n}/stop");
        async move {
            s.send(
                m,
                &path,
                key,
                json!({"reason": "death", "on": on}),
                "receipt.response",
            )
            .await
        }
    };
    let unknown = stop(999, "stop-999", "2026-11-01").await;
    assert_eq!(
        (unknown.status, unknown.kind()),
        (StatusCode::NOT_FOUND, "UnknownEntitlement"),
        "{}",
        unknown.body
    );
    let stopped = stop(1, "stop-1", "2026-11-01").await;
    assert_eq!(stopped.status, StatusCode::CREATED, "{}", stopped.body);
    let again = stop(1, "stop-1-again", "2026-11-02").await;
    assert_eq!(
        (again.status, again.kind()),
        (StatusCode::CONFLICT, "EntitlementStopped"),
        "{}",
        again.body
    );
    let run = s.run_commune("run-far", "2026-13", "2026-11-01").await;
    assert!(run.status.is_client_error(), "{}", run.body);
}

/// A run pays an allowance through the month its beneficiary died, and names it under
/// `deceased` (schema-checked) for a later month, with nothing to pay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_names_an_allowance_whose_beneficiary_died_before_its_month() {
    let s = &server().await;
    s.funded_october().await;
    let died = s
        .post(
            &s.staff.officer,
            &format!("/v1/households/{HOUSEHOLD}/deaths"),
            "death",
            json!({"citizen_id": "001090000001", "died_on": "2026-10-20"}),
        )
        .await;
    assert_eq!(died.status, StatusCode::CREATED, "{}", died.body);
    s.october_paid_and_november_named_deceased().await;
}

/// The death of a household's only member with a citizen id (the head, leaving young
/// children) is recorded: the registry knows it, so the next run pays the allowance through
/// the month of death and names it `deceased` after it, and the household, still living
/// here with its children, counts one member fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_death_of_the_only_member_with_a_citizen_id_is_recorded_and_stops_the_allowance() {
    let s = &server().await;
    let officer = &s.staff.officer;
    let household = "0100007-000041";
    let registered = s
        .post(
            officer,
            "/v1/households",
            "register-41",
            json!({
                "household_id": household,
                "area": "rural",
                "registered_on": "2026-01-05",
                "personal": {
                    "head_name": "Nguyễn Thị Hạnh",
                    "head_citizen_id": "001090000041",
                    "members": [
                        {"name": "Trần Minh", "relation": "child"},
                        {"name": "Trần An", "relation": "child"}
                    ]
                }
            }),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    s.granted_and_funded_october(household, "grant-41").await;

    let died = s
        .post(
            officer,
            &format!("/v1/households/{household}/deaths"),
            "death-41",
            json!({"citizen_id": "001090000041", "died_on": "2026-10-20"}),
        )
        .await;
    assert_eq!(died.status, StatusCode::CREATED, "{}", died.body);
    let view = s.view(officer, household).await;
    assert_eq!(view["household"]["members"], 2, "{view}");

    s.october_paid_and_november_named_deceased().await;
}

/// A budget allocated (or an entitlement granted) on a day still to come changes no day's
/// reconciliation: the day's lines are still served from the projections, as of today.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_dated_ahead_leaves_todays_reconciliation_served() {
    let s = &server_at("2026-10-10T12:00:00+07:00").await;
    s.funded_october().await;
    let m = &s.staff.manager;
    let paid = s.run_commune("run", "2026-10", "2026-10-10").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
    let ahead = s.allocate("budget-ahead", "2027-01", "2027-01-02").await;
    assert_eq!(ahead.status, StatusCode::CREATED, "{}", ahead.body);
    let day = s
        .get(
            m,
            "/v1/partitions/01/reconciliation/2026-10-10",
            "reconciliation-day.response",
        )
        .await;
    assert_eq!(day.status, StatusCode::OK, "{}", day.body);
    assert_eq!(day.body["gateways"][0]["gateway"], "vcb", "{}", day.body);
}

/// Instructions are never issued on a day still to come: gateways fetch them at once, and
/// every result they posted before that day would be refused as back-dated, leaving money
/// paid and unrecorded. A run, a province's run job and a reissue are dated today at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instructions_are_never_issued_on_a_day_still_to_come() {
    // 23:30 on 2026-10-10 in Vietnam: the 11th is still to come.
    let s = server_at("2026-10-10T23:30:00+07:00").await;
    s.funded_october().await;
    let m = &s.staff.manager;
    let before = s.events().await;
    for (path, key, schema) in [
        (
            "/v1/communes/0100007/payment-runs",
            "run-ahead",
            "payment-run.response",
        ),
        (
            "/v1/partitions/01/payment-runs",
            "job-ahead",
            "job.response",
        ),
    ] {
        let refused = s
            .send(
                m,
                path,
                key,
                json!({"period": "2026-10", "on": "2026-10-11"}),
                schema,
            )
            .await;
        assert_eq!(
            (refused.status, refused.kind()),
            (StatusCode::UNPROCESSABLE_ENTITY, "IssuedInFuture"),
            "{path}: {}",
            refused.body
        );
        assert!(
            refused.body["message"]
                .as_str()
                .unwrap()
                .contains("2026-10-10"),
            "{}",
            refused.body
        );
    }
    assert_eq!(s.events().await, before);
    let paid = s.run_commune("run", "2026-10", "2026-10-10").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
    assert_eq!(paid.body["instructions"], 1);
}

/// A loan approved by mistake is cancelled by the branch manager before money goes out:
/// the loan reads Cancelled, no longer counts as open, and the household is approved again
/// in the same programme; once a tranche is out, the cancellation is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistaken_approval_is_cancelled_and_the_household_approved_again() {
    let s = server().await;
    let (officer, manager) = (&s.staff.officer, &s.staff.manager);
    assert_eq!(
        s.register(HOUSEHOLD, "001085012345").await.status,
        StatusCode::CREATED
    );
    assert_eq!(s.classify_poor(HOUSEHOLD).await.status, StatusCode::CREATED);
    let approved = s
        .post(officer, "/v1/loans", "approve", Server::approval(HOUSEHOLD))
        .await;
    assert_eq!(approved.status, StatusCode::CREATED, "{}", approved.body);
    let loan = approved.body["loan"].as_str().unwrap().to_owned();
    let cancellation = format!("/v1/loans/{loan}/cancellation");
    let body = json!({"on": "2026-02-03", "reason": "approved for the wrong household"});
    let events = s.events().await;

    let by_officer = s
        .post(officer, &cancellation, "cancel-o", body.clone())
        .await;
    assert_eq!(
        (by_officer.status, by_officer.kind()),
        (StatusCode::FORBIDDEN, "RoleDenied")
    );
    let without_reason = s
        .post(
            manager,
            &cancellation,
            "cancel-r",
            json!({"on": "2026-02-03"}),
        )
        .await;
    assert!(
        without_reason.status.is_client_error(),
        "{}",
        without_reason.body
    );
    assert_eq!(s.events().await, events);

    let cancelled = s.post(manager, &cancellation, "cancel", body.clone()).await;
    assert_eq!(cancelled.status, StatusCode::CREATED, "{}", cancelled.body);
    let events = events + 1;
    assert_eq!(s.events().await, events);
    // A retry finds the work done and succeeds with the same receipt.
    let again = s.post(manager, &cancellation, "cancel", body.clone()).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["sequence"], cancelled.body["sequence"]);
    // A second cancellation under another key is refused: nothing is left to cancel.
    let twice = s.post(manager, &cancellation, "cancel-2", body).await;
    assert_eq!(
        (twice.status, twice.kind()),
        (StatusCode::CONFLICT, "WrongLoanStatus"),
        "{}",
        twice.body
    );
    assert_eq!(s.events().await, events);

    let view = s.view(officer, HOUSEHOLD).await;
    assert_eq!(view["loans"][0]["status"], "Cancelled");
    let folio = s
        .get(
            officer,
            "/v1/communes/0100007/portfolio",
            "portfolio.response",
        )
        .await;
    assert_eq!(folio.body["open_loans"], 0);

    // Approved again in the programme the cancelled loan held; once its tranche is out,
    // it cannot be cancelled.
    let mut second = Server::approval(HOUSEHOLD);
    second["on"] = json!("2026-02-04");
    let approved = s.post(officer, "/v1/loans", "approve-2", second).await;
    assert_eq!(approved.status, StatusCode::CREATED, "{}", approved.body);
    let loan = approved.body["loan"].as_str().unwrap().to_owned();
    s.disburse_all(&loan, "disburse-2").await;
    let late = s
        .post(
            manager,
            &format!("/v1/loans/{loan}/cancellation"),
            "cancel-3",
            json!({"on": "2026-02-06", "reason": "too late"}),
        )
        .await;
    assert_eq!(
        (late.status, late.kind()),
        (StatusCode::CONFLICT, "WrongLoanStatus"),
        "{}",
        late.body
    );
    verified(&s.config).await;
}

/// `ansinh admin add-staff` then `ansinh serve` as an operator runs them: the token it
/// prints opens the API, no file of tokens is written, and SIGTERM stops the server
/// cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_with_a_token_from_add_staff() {
    use std::io::BufRead;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let ansinh = |args: &[&str]| binary_on(dir.path(), args);
    let added = ansinh(&[
        "admin",
        "add-staff",
        "--id",
        "staff:kiem",
        "--role",
        "auditor",
    ])
    .output()
    .unwrap();
    assert!(added.status.success(), "{added:?}");
    let token = String::from_utf8(added.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with(http::auth::TOKEN_PREFIX), "{token}");
    // The directory bucket keeps the hash; no file of tokens is left in the data directory.
    assert!(!dir.path().join(http::STAFF_FILE).exists());

    let mut child = ansinh(&["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // The server says where it listens once it does; reading ends at EOF if it dies.
    let base = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let mut lines = std::io::BufReader::new(stderr).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.split("serving the staff API on ").nth(1) {
                // Keep draining: a pipe closed under the server fails its next line.
                std::thread::spawn(move || lines.for_each(drop));
                return rest.split_whitespace().next().unwrap().to_owned();
            }
            seen.push(line);
        }
        panic!("ansinh serve stopped: {seen:?}");
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let tb = client
        .get(format!("{base}/v1/partitions/01/trial-balance"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    // The token is taken; the ledger has no event of partition 01 yet, and says so.
    assert_eq!(tb.status(), StatusCode::NOT_FOUND);
    let tb: Value = tb.json().await.unwrap();
    assert_eq!(Schemas::compile().validate("error.response", &tb), Ok(()));
    assert_eq!(tb["error"], json!("NotFound"), "{tb}");
    let anonymous = client
        .get(format!("{base}/v1/partitions/01/trial-balance"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // SAFETY: plain kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// What an operator scrapes and collects from `ansinh serve`: `/metrics` in the
/// Prometheus text format counts appends by type, refusals by type, commits, requests by
/// route and status, and says the projection lag, each partition's checkpoint age and
/// the last verify; `--log-format json` writes one JSON object per log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_metrics_and_writes_json_logs() {
    use std::io::BufRead;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let ansinh = |args: &[&str]| binary_on(dir.path(), args);
    let added = ansinh(&[
        "admin",
        "add-staff",
        "--id",
        "staff:an",
        "--role",
        "credit-officer",
        "--unit",
        "0100007",
    ])
    .output()
    .unwrap();
    assert!(added.status.success(), "{added:?}");
    let token = String::from_utf8(added.stdout).unwrap().trim().to_owned();

    let mut child = ansinh(&[
        "--log-format",
        "json",
        "--checkpoint-every-events",
        "1",
        "serve",
        "--listen",
        "127.0.0.1:0",
    ])
    .env("RUST_LOG", "info")
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (base_tx, base_rx) = tokio::sync::oneshot::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut base_tx = Some(base_tx);
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.split("serving the staff API on ").nth(1) {
                if let Some(tx) = base_tx.take() {
                    let _ = tx.send(rest.split_whitespace().next().unwrap().to_owned());
                }
            }
            let _ = lines_tx.send(line);
        }
    });
    let base = base_rx
        .await
        .expect("ansinh serve stopped before it listened");
    let client = reqwest::Client::new();
    let post = |path: String, key: &'static str, body: Value| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            client
                .post(path)
                .bearer_auth(token)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let registered = post(
        format!("{base}/v1/households"),
        "register-1",
        json!({
            "household_id": "0100007-000001",
            "area": "rural",
            "registered_on": "2026-01-05",
            "personal": {
                "head_name": "Nguyễn Thị Hạnh",
                "head_citizen_id": "001085000001",
                "members": []
            }
        }),
    )
    .await;
    assert_eq!(registered, StatusCode::CREATED);
    // A household the ledger has never seen: the writer refuses the classification.
    let refused = post(
        format!("{base}/v1/households/0100007-000099/classifications"),
        "review-99",
        json!({
            "income_per_person": "1200000",
            "area": "rural",
            "deprived": ["employment"],
            "review_year": 2026,
            "decided_on": "2026-01-10"
        }),
    )
    .await;
    assert!(refused.is_client_error(), "{refused}");

    // The checkpoint (one per event here) and the verify at start run in the
    // background: read the log until both said they were done.
    let mut lines: Vec<String> = Vec::new();
    let message = |line: &str| -> Option<(String, String)> {
        let v: Value = serde_json::from_str(line).ok()?;
        let fields = &v["fields"];
        Some((
            fields["message"].as_str()?.to_owned(),
            fields["partition"].as_str().unwrap_or_default().to_owned(),
        ))
    };
    let (mut verified_seen, mut checkpoint_seen) = (false, false);
    while !(verified_seen && checkpoint_seen) {
        // A bound, not a pace: a serve that never says so fails here rather than hang.
        let line = tokio::time::timeout(std::time::Duration::from_secs(120), lines_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no verify or checkpoint line in {lines:?}"))
            .unwrap_or_else(|| panic!("ansinh serve stopped: {lines:?}"));
        match message(&line) {
            Some((m, _)) if m == "the log verifies" => verified_seen = true,
            Some((m, p)) if m == "checkpoint signed" && p == "01" => checkpoint_seen = true,
            _ => {}
        }
        lines.push(line);
    }
    let r = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
    );
    let text = r.text().await.unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
    };
    assert_eq!(
        value("ansinh_appends_total{partition=\"01\",type=\"ansinh.v1.HouseholdRegistered\"}"),
        1.0
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ansinh_refusals_total{type=\"") && l.ends_with(" 1")),
        "{text}"
    );
    assert!(value("ansinh_commit_events_count") >= 1.0);
    assert!(value("ansinh_commit_seconds_count") >= 1.0);
    assert_eq!(
        value("ansinh_http_requests_total{route=\"/v1/households\",status=\"201\"}"),
        1.0
    );
    assert_eq!(value("ansinh_verify_last_ok"), 1.0);
    assert!(value("ansinh_verify_last_events") >= 0.0);
    assert!(value("ansinh_checkpoint_age_seconds{partition=\"01\"}") >= 0.0);
    assert!(value("ansinh_projection_lag_events") >= 0.0);
    // The scrape itself holds one of the server's slots, and nothing else runs.
    assert_eq!(value("ansinh_http_requests_in_flight"), 1.0);
    // The process's memory: more than nothing, less than this machine has.
    let resident = value("ansinh_process_resident_bytes");
    assert!(resident > 1e6 && resident < 1e12, "{resident}");
    // A route template, never a household id, labels a request.
    assert!(!text.contains("0100007-000099"), "{text}");

    // SAFETY: plain kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    reader.join().unwrap();
    while let Ok(line) = lines_rx.try_recv() {
        lines.push(line);
    }
    let logged: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    assert!(!logged.is_empty(), "no JSON log line in {lines:?}");
    for entry in &logged {
        assert!(
            entry["timestamp"].is_string() && entry["level"].is_string(),
            "{entry}"
        );
    }
    // Every log line is JSON but the operator's own lines (`ansinh: ...`).
    for line in &lines {
        assert!(
            line.starts_with("ansinh: ") || serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_in_the_next_read_while_a_load_keeps_the_projector_busy() {
    let s = server().await;
    // A load of notes in another partition, appended as fast as the ledger takes them,
    // for as long as the test reads.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|w| {
            let (ledger, stop) = (s.service.ledger.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("load-{w}-{n}");
                    ledger.append(note("79", &key, "load")).await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 1..=20 {
        let id = format!("0100007-{i:06}");
        let written = s.register(&id, &format!("0010850{i:05}")).await;
        assert_eq!(written.status, StatusCode::CREATED, "{}", written.body);
        let after = written.body["stream_sequence"].as_u64().unwrap();
        // With the receipt's position, and without it: both include the write.
        for path in [
            format!("/v1/households/{id}?after={after}"),
            format!("/v1/households/{id}"),
        ] {
            let read = s
                .get(&s.staff.officer, &path, "household-view.response")
                .await;
            assert_eq!(read.status, StatusCode::OK, "{path}: {}", read.body);
            assert_eq!(read.body["household"]["household_id"], id.as_str());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut appended = 0;
    for l in load {
        appended += l.await.unwrap();
    }
    assert!(appended > 0, "the load ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_say_what_stops_the_ledger() {
    let s = server().await;
    let get = |path: &'static str| {
        let (client, base) = (s.client.clone(), s.base.clone());
        async move {
            let r = client.get(format!("{base}{path}")).send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, StatusCode::OK);
    // Ready once the read model has held the log since start (a moment on a new log).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (status, ready) = loop {
        let (status, ready) = get("/readyz").await;
        if ready["ready"] == true || std::time::Instant::now() > deadline {
            break (status, ready);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["ready"], true);
    assert!(ready["projection_lag_messages"].is_u64(), "{ready}");
    // A partition stopped for lost data: the process stays ready (its other partitions
    // and every read still work), says which partition and why, and the metric shows it.
    s.service
        .ledger
        .store()
        .quarantine("01", "remembered head 7 is not in the stream")
        .unwrap();
    let (status, ready) = get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(
        ready["stopped_partitions"],
        serde_json::json!([{"partition": "01", "reason": "remembered head 7 is not in the stream"}]),
        "{ready}"
    );
    let metrics = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ansinh_partition_stopped{partition=\"01\"} 1"),
        "{metrics}"
    );
    s.service.ledger.store().accept_stream_head("01").unwrap();
    let (_, ready) = get("/readyz").await;
    assert_eq!(
        ready["stopped_partitions"],
        serde_json::json!([]),
        "{ready}"
    );
    // Liveness is not readiness: the process still answers.
    assert_eq!(get("/healthz").await.0, StatusCode::OK);
}

/// A message someone else published on a partition's subject (with the ledger's
/// credentials) stops that partition's appends at the writer's next catch-up, and the
/// probes say so at once, not after the daily verify: `/readyz` lists the partition and
/// stays ready, the metric operators alert on reads 1, and other partitions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_message_stops_its_partition_and_the_probes_say_so_at_once() {
    let s = server().await;
    s.service
        .ledger
        .append(note("01", "before", "before"))
        .await
        .unwrap();
    let partition = ansinh::chain::Partition::new("01").unwrap();
    let foreign = async_nats::jetstream::new(client().await)
        .publish(
            s.config.subject(&partition),
            b"not the ledger's".to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let refused = s.service.ledger.append(note("01", "after", "after")).await;
    assert!(
        matches!(
            &refused,
            Err(ansinh::log::AppendError::ChainBroken { stream_sequence, .. })
                if *stream_sequence == foreign
        ),
        "{refused:?}"
    );

    let answer = s
        .client
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let ready: Value = answer.json().await.unwrap();
    assert_eq!(ready["stopped_partitions"][0]["partition"], "01", "{ready}");
    let reason = ready["stopped_partitions"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("chain broken at stream sequence {foreign}")),
        "{ready}"
    );
    assert_eq!(
        ready["stopped_partitions"].as_array().unwrap().len(),
        1,
        "{ready}"
    );
    // Ready or not for its own reasons (the read model), never for the stopped partition.
    assert!(
        !ready["reasons"].to_string().contains("01"),
        "{status}: {ready}"
    );
    let metrics = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ansinh_partition_stopped{partition=\"01\"} 1"),
        "{metrics}"
    );
    // Another partition still takes appends.
    s.service
        .ledger
        .append(note("79", "elsewhere", "elsewhere"))
        .await
        .unwrap();
}

/// A process started on a long log says it is not ready until its projections have held
/// the whole log once (every read before that would wait, then answer 503), so a load
/// balancer does not send staff to it; whenever it says ready, its read model holds every
/// message the log held when it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_is_ready_only_once_its_read_model_holds_the_log() {
    let s = server().await;
    let writers: Vec<_> = (0..64)
        .map(|w| {
            let ledger = s.service.ledger.clone();
            tokio::spawn(async move {
                for n in 0..300 {
                    let key = format!("start-{w}-{n}");
                    ledger.append(note("79", &key, "before")).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let mut stream = s.service.ledger.stream().clone();
    let end = ansinh::log::reader::last_stream_sequence(&mut stream)
        .await
        .unwrap();
    let (base, _other) = s.second_process().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let answer = s.client.get(format!("{base}/readyz")).send().await.unwrap();
        let status = answer.status();
        let ready: Value = answer.json().await.unwrap();
        if ready["ready"] == true {
            assert_eq!(status, StatusCode::OK, "{ready}");
            let through = ready["projected_through"].as_u64().unwrap();
            assert!(
                through >= end,
                "ready at {through}, the log held {end}: {ready}"
            );
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
        assert!(
            ready["reasons"][0].as_str().unwrap().starts_with(
                "the read model is catching up with the log since the process started"
            ),
            "{ready}"
        );
        assert!(std::time::Instant::now() < deadline, "{ready}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Ready: a read answers at once, from the projections the probe waited for.
    let view = s
        .client
        .get(format!("{base}/v1/households/0100007-000001"))
        .bearer_auth(&s.staff.auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(
        view.status(),
        StatusCode::NOT_FOUND,
        "no such household, answered"
    );
}

/// Staff live in the ledger's directory bucket: a member added through one process (the
/// operator's CLI, say) is accepted by a serving process as soon as its watcher applied
/// the change, and a removed one is refused, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_added_or_removed_elsewhere_reach_a_running_server_without_a_restart() {
    use ansinh::directory::Directory;
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_at(&config, &dir.path().join("store")).await;
    let vault = Arc::new(vault_for(&ledger, &dir.path().join("secrets")).await);
    let projector = Arc::new(Projector::of_store(ledger.store()).unwrap());
    let service = Service::new(ledger.clone(), vault, projector);
    let serving = Directory::open(ledger.jetstream(), &config.stream_name, 1)
        .await
        .unwrap();
    let api = Api::with_gateways(service, serving.staff(), None)
        .await
        .unwrap();
    let (base, _stop) = common::serve(api).await;
    let client = reqwest::Client::new();
    let status = |token: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .get(format!("{base}/v1/households/0100007-000001"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Another process's view of the same bucket.
    let operator = Directory::open(ledger.jetstream(), &config.stream_name, 1)
        .await
        .unwrap();
    let (token, revision) = operator
        .add_staff("staff:new", Role::Auditor, "")
        .await
        .unwrap();
    serving.applied(revision).await;
    assert_eq!(
        status(token.clone()).await,
        404,
        "accepted: the household is unknown"
    );
    // One id, one member: a second entry for it is refused and nothing is written.
    assert!(
        operator
            .add_staff("staff:new", Role::Teller, "0100007")
            .await
            .is_err()
    );
    let removed = operator.remove_staff("staff:new").await.unwrap().unwrap();
    serving.applied(removed).await;
    assert_eq!(status(token).await, 401, "refused once removed");
    assert_eq!(operator.remove_staff("staff:new").await.unwrap(), None);
}

/// The `ansinh` binary on the data directory `dir`, its embedded server (no --nats).
fn binary_on(dir: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ansinh"));
    command
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("ANSINH_NATS_URL");
    command
}

/// Payments over HTTP, as `ansinh payments` does them: a grant answers the entitlement's
/// number; a commune's run no budget covers is refused and appends nothing; once
/// budgeted it pays, its replay answers the same receipt, and a new run of the month
/// finds nothing left (200); an entitlement stops; malformed paths and a teller's budget
/// are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_budget_grant_run_and_stop_over_http() {
    let s = server().await;
    assert_eq!(
        s.register(HOUSEHOLD, "001090000001").await.status,
        StatusCode::CREATED
    );
    let s = &s;
    let send = |token: &str, path: &str, key: &str, body: Value, schema: &'static str| {
        let request = s
            .client
            .post(format!("{}{path}", s.base))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body);
        async move {
            let (status, body) =
                schema_checked(&s.schemas, request.send().await.unwrap(), schema).await;
            Answer { status, body }
        }
    };
    let m = &s.staff.manager;
    let grant = json!({
        "household_id": HOUSEHOLD, "member": "m1",
        "category": "ELDERLY_80_PLUS_NO_PENSION", "channel": "bank", "gateway": "vcb",
        "from": "2026-10", "on": "2026-10-01"
    });
    let granted = send(
        m,
        "/v1/entitlements",
        "grant-1",
        grant.clone(),
        "entitlement.response",
    )
    .await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.body);
    let number = granted.body["entitlement"].as_u64().unwrap();
    let again = send(
        m,
        "/v1/entitlements",
        "grant-1",
        grant,
        "entitlement.response",
    )
    .await;
    assert_eq!(
        (again.status, again.body["entitlement"].as_u64()),
        (StatusCode::OK, Some(number))
    );

    let run = json!({"period": "2026-10", "on": "2026-10-05"});
    let before = s.events().await;
    let unfunded = send(
        m,
        "/v1/communes/0100007/payment-runs",
        "run-0",
        run.clone(),
        "payment-run.response",
    )
    .await;
    assert_eq!(
        (unfunded.status, unfunded.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "RunUnfunded"),
        "{}",
        unfunded.body
    );
    assert_eq!(s.events().await, before, "a refused run appends nothing");

    let teller = send(
        &s.staff.teller,
        "/v1/communes/0100007/budgets",
        "budget-t",
        json!({"period": "2026-10", "amount": "2000000", "on": "2026-10-01"}),
        "receipt.response",
    )
    .await;
    assert_eq!(
        (teller.status, teller.kind()),
        (StatusCode::FORBIDDEN, "RoleDenied")
    );
    let budget = send(
        m,
        "/v1/communes/0100007/budgets",
        "budget-1",
        json!({"period": "2026-10", "amount": "2000000", "on": "2026-10-01"}),
        "receipt.response",
    )
    .await;
    assert_eq!(budget.status, StatusCode::CREATED, "{}", budget.body);

    let paid = send(
        m,
        "/v1/communes/0100007/payment-runs",
        "run-1",
        run.clone(),
        "payment-run.response",
    )
    .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.body);
    assert_eq!(
        (
            paid.body["outcome"].as_str(),
            paid.body["instructions"].as_u64()
        ),
        (Some("paid"), Some(1))
    );
    let replay = send(
        m,
        "/v1/communes/0100007/payment-runs",
        "run-1",
        run.clone(),
        "payment-run.response",
    )
    .await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(
        replay.body["receipt"]["sequence"],
        paid.body["receipt"]["sequence"]
    );
    let after = s.events().await;
    let done = send(
        m,
        "/v1/communes/0100007/payment-runs",
        "run-2",
        run,
        "payment-run.response",
    )
    .await;
    assert_eq!(
        (done.status, done.body["outcome"].as_str()),
        (StatusCode::OK, Some("nothing_left"))
    );
    assert_eq!(s.events().await, after, "nothing left: nothing appended");

    // The month's unused budget goes back; more than that is refused and appends nothing.
    let spent = money(&paid.body["amount"]);
    let unused = Decimal::from(2_000_000) - spent;
    let release = |amount: Decimal| json!({"period": "2026-10", "amount": amount.to_string(), "on": "2026-10-20"});
    let before = s.events().await;
    let too_much = send(
        m,
        "/v1/communes/0100007/budget-releases",
        "release-0",
        release(unused + Decimal::ONE),
        "receipt.response",
    )
    .await;
    assert_eq!(
        too_much.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        too_much.body
    );
    assert_eq!(s.events().await, before);
    let by_teller = send(
        &s.staff.teller,
        "/v1/communes/0100007/budget-releases",
        "release-t",
        release(unused),
        "receipt.response",
    )
    .await;
    assert_eq!(
        (by_teller.status, by_teller.kind()),
        (StatusCode::FORBIDDEN, "RoleDenied")
    );
    let released = send(
        m,
        "/v1/communes/0100007/budget-releases",
        "release-1",
        release(unused),
        "receipt.response",
    )
    .await;
    assert_eq!(released.status, StatusCode::CREATED, "{}", released.body);
    let replayed = send(
        m,
        "/v1/communes/0100007/budget-releases",
        "release-1",
        release(unused),
        "receipt.response",
    )
    .await;
    assert_eq!(
        (replayed.status, &replayed.body["sequence"]),
        (StatusCode::OK, &released.body["sequence"])
    );
    assert_eq!(s.events().await, before + 1);

    // New terms from November: paid through the post office from then on.
    let change = json!({
        "category": "ELDERLY_80_PLUS_NO_PENSION", "channel": "post_office", "gateway": "vnpost",
        "from": "2026-11", "on": "2026-10-25"
    });
    let changed = send(
        m,
        &format!("/v1/partitions/01/entitlements/{number}/changes"),
        "change-1",
        change.clone(),
        "receipt.response",
    )
    .await;
    assert_eq!(changed.status, StatusCode::CREATED, "{}", changed.body);
    let unknown = send(
        m,
        "/v1/partitions/01/entitlements/999/changes",
        "change-2",
        change,
        "receipt.response",
    )
    .await;
    assert!(unknown.status.is_client_error(), "{}", unknown.body);
    assert_eq!(s.events().await, before + 2, "the refusal appends nothing");

    let stopped = send(
        m,
        &format!("/v1/partitions/01/entitlements/{number}/stop"),
        "stop-1",
        json!({"reason": "death", "on": "2026-11-10"}),
        "receipt.response",
    )
    .await;
    assert_eq!(stopped.status, StatusCode::CREATED, "{}", stopped.body);
    for (path, body) in [
        (
            "/v1/partitions/01/entitlements/01/stop",
            json!({"reason": "death", "on": "2026-11-10"}),
        ),
        (
            "/v1/partitions/1/entitlements/1/stop",
            json!({"reason": "death", "on": "2026-11-10"}),
        ),
        (
            "/v1/partitions/01/instructions/pay:01:2026-10:1/reissue",
            json!({"on": "2026-11-10"}),
        ),
        (
            "/v1/communes/01000/budgets",
            json!({"period": "2026-10", "amount": "1", "on": "2026-10-01"}),
        ),
    ] {
        let refused = send(m, path, "bad-1", body, "receipt.response").await;
        assert_eq!(
            (refused.status, refused.kind()),
            (StatusCode::BAD_REQUEST, "InvalidParameter"),
            "{path}: {}",
            refused.body
        );
    }
    let halves = send(
        m,
        "/v1/partitions/01/instructions/pay:1:2026-10:1/reissue",
        "bad-2",
        json!({"channel": "bank", "on": "2026-11-10"}),
        "receipt.response",
    )
    .await;
    assert_eq!(
        (halves.status, halves.kind()),
        (StatusCode::BAD_REQUEST, "SchemaViolation"),
        "{}",
        halves.body
    );
}

/// A gateway id is one NATS subject token and one HTTP path segment (`a-z`, `0-9`, `-`,
/// at most 32): an entitlement paid through any other could never be fetched nor
/// settled. Grant, change and reissue refuse it (400) and append nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_no_transport_can_serve_is_refused_and_nothing_is_appended() {
    let s = server().await;
    s.paid_october().await;
    let m = &s.staff.manager;
    let before = s.events().await;
    for gateway in ["VBSP-BANK", "VCB", "-vcb", &"v".repeat(33)] {
        let grant = json!({
            "household_id": HOUSEHOLD, "member": "m1",
            "category": "ELDERLY_80_PLUS_NO_PENSION", "channel": "bank", "gateway": gateway,
            "from": "2026-11", "on": "2026-10-20"
        });
        let change = json!({
            "category": "ELDERLY_80_PLUS_NO_PENSION", "channel": "bank", "gateway": gateway,
            "from": "2026-11", "on": "2026-10-20"
        });
        let reissue = json!({"channel": "post_office", "gateway": gateway, "on": "2026-10-20"});
        for (path, body, schema) in [
            ("/v1/entitlements", grant, "entitlement.response"),
            (
                "/v1/partitions/01/entitlements/1/changes",
                change,
                "receipt.response",
            ),
            (
                "/v1/partitions/01/instructions/pay:1:2026-10:1/reissue",
                reissue,
                "receipt.response",
            ),
        ] {
            let refused = s
                .send(m, path, &format!("bad-{gateway}"), body, schema)
                .await;
            assert_eq!(
                refused.status,
                StatusCode::BAD_REQUEST,
                "{path} {gateway}: {}",
                refused.body
            );
            assert!(
                refused.body.to_string().contains("gateway"),
                "{path} {gateway}: the answer names the gateway: {}",
                refused.body
            );
        }
    }
    assert_eq!(s.events().await, before, "nothing appended");
}

/// The OpenAPI 3.1 document: served at /v1/openapi.json without a token, equal to the
/// copy in the repository (docs/openapi.json; `ANSINH_WRITE_OPENAPI=1` rewrites it), every
/// reference in it resolves, and every route it lists is served with its method (the
/// router and the document come from one list, `http::routes`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_every_reference_resolves() {
    let s = server().await;
    let response = s
        .client
        .get(format!("{}/v1/openapi.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], json!("3.1.0"));

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let text = serde_json::to_string_pretty(&document).unwrap() + "\n";
    if std::env::var_os("ANSINH_WRITE_OPENAPI").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap_or_default(),
        text,
        "docs/openapi.json is not the served document: run ANSINH_WRITE_OPENAPI=1 cargo test --test http openapi"
    );

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(found.len() > 50, "{} references", found.len());
    for r in found {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r} is not local"));
        assert!(document.pointer(pointer).is_some(), "{r} does not resolve");
    }

    let docs = ansinh::http::routes().docs;
    assert!(docs.len() >= 29, "{} routes", docs.len());
    for doc in &docs {
        let operation = &document["paths"][doc.path][doc.method];
        assert!(
            operation.is_object(),
            "{} {} is not in the document",
            doc.method,
            doc.path
        );
        // Served: any answer but "no such route" or "method not allowed".
        let url = format!("{}{}", s.base, doc.path.replace('{', "x").replace('}', ""));
        let request = match doc.method {
            "get" => s.client.get(url),
            _ => s.client.post(url).json(&json!({})),
        };
        let answer = request.send().await.unwrap();
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or_default();
        assert!(
            !matches!(
                body["error"].as_str(),
                Some("NoSuchRoute" | "MethodNotAllowed")
            ),
            "{} {}: {status} {body}",
            doc.method,
            doc.path
        );
    }
}

/// `POST /v1/households/search`: a citizen's household through the blind index, for the
/// officers of its unit; another unit's officer and an unknown citizen get 404 (nothing
/// says where else a person is registered), a teller or an auditor 403, and nothing is
/// appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_is_found_by_a_citizen_id_within_the_callers_unit() {
    let s = server().await;
    assert_eq!(
        s.register(HOUSEHOLD, "001090000007").await.status,
        StatusCode::CREATED
    );
    let before = s.events().await;
    let s = &s;
    let search = |token: &str, citizen: &str| {
        let request = s
            .client
            .post(format!("{}/v1/households/search", s.base))
            .bearer_auth(token)
            .json(&json!({ "citizen_id": citizen }));
        async move {
            let (status, body) = schema_checked(
                &s.schemas,
                request.send().await.unwrap(),
                "household-search.response",
            )
            .await;
            (status, body)
        }
    };
    let (status, body) = search(&s.staff.officer, "001090000007").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"household_id": HOUSEHOLD, "commune": "0100007"})
    );
    // The spouse, registered with the household, finds it too.
    let (status, body) = search(
        &s.staff.manager,
        &format!("0011900{}", &HOUSEHOLD[HOUSEHOLD.len() - 5..]),
    )
    .await;
    assert_eq!(
        (status, body["household_id"].as_str()),
        (StatusCode::OK, Some(HOUSEHOLD))
    );
    for (token, citizen, expected, kind) in [
        (
            &s.staff.other_officer,
            "001090000007",
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            &s.staff.officer,
            "001090000999",
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            &s.staff.teller,
            "001090000007",
            StatusCode::FORBIDDEN,
            "RoleDenied",
        ),
        (
            &s.staff.auditor,
            "001090000007",
            StatusCode::FORBIDDEN,
            "RoleDenied",
        ),
        (
            &s.staff.officer,
            "00109000000",
            StatusCode::BAD_REQUEST,
            "SchemaViolation",
        ),
    ] {
        let (status, body) = search(token, citizen).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (expected, Some(kind)),
            "{citizen}: {body}"
        );
    }
    assert_eq!(s.events().await, before, "a search appends nothing");
}

/// `GET /v1/partitions/{p}/reconciliation?from&to`: every day of the range per gateway
/// with totals, as JSON, and as CSV for people on `Accept: text/csv` or `format=csv` (the
/// same figures, whole đồng digits); a reversed, too long or half-given range is a typed
/// 400, and nothing is appended by any of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_of_days_reconciles_as_json_and_as_csv() {
    let s = server().await;
    let paid = s.paid_october().await;
    let amount = money(&paid.body["amount"]);
    let before = s.events().await;
    let path = "/v1/partitions/01/reconciliation?from=2026-10-01&to=2026-10-31&as_of=2026-10-06";
    let range = s
        .get(&s.staff.auditor, path, "reconciliation-range.response")
        .await;
    assert_eq!(range.status, StatusCode::OK, "{}", range.body);
    let lines = range.body["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{}", range.body);
    assert_eq!(
        (lines[0]["day"].as_str(), lines[0]["gateway"].as_str()),
        (Some("2026-10-05"), Some("vcb"))
    );
    assert_eq!(lines[0]["instructed"]["count"], json!(1));
    assert_eq!(money(&lines[0]["instructed"]["amount"]), amount);
    assert_eq!(range.body["totals"]["instructed"], lines[0]["instructed"]);
    assert_eq!(range.body["totals"]["settled"]["count"], json!(0));

    for (extra, headers) in [("&format=csv", vec![]), ("", vec![("accept", "text/csv")])] {
        let (status, answered, bytes) = s
            .get_raw(&s.staff.manager, &format!("{path}{extra}"), &headers)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            answered["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv"),
            "{answered:?}"
        );
        assert!(
            answered["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("attachment"),
            "{answered:?}"
        );
        let text = String::from_utf8(bytes).unwrap();
        let rows: Vec<&str> = text.trim_start_matches('\u{feff}').split("\r\n").collect();
        assert_eq!(
            rows,
            vec![
                ansinh::payments_report::RECONCILIATION_CSV_HEADER,
                &format!(
                    "01,2026-10-05,vcb,1,\"{}\"{}",
                    ansinh::domain::money::format_vnd(amount),
                    ",0,\"0 ₫\"".repeat(6) + ",0"
                ),
                "",
            ]
        );
    }

    for (query, why) in [
        ("from=2026-10-31&to=2026-10-01", "reversed"),
        ("from=2026-01-01&to=2027-01-02", "367 days"),
        ("from=2026-10-01", "no end"),
        ("from=2026-10-01&to=2026-10-1", "an unpadded day"),
        (
            "from=2026-10-01&to=2026-10-31&format=xml",
            "an unknown format",
        ),
        (
            "from=2026-10-01&to=2026-10-31&as_of=2026-10-04",
            "as of before the run",
        ),
    ] {
        let refused = s
            .get(
                &s.staff.auditor,
                &format!("/v1/partitions/01/reconciliation?{query}"),
                "reconciliation-range.response",
            )
            .await;
        assert_eq!(
            (refused.status, refused.kind()),
            (StatusCode::BAD_REQUEST, "InvalidParameter"),
            "{why}: {}",
            refused.body
        );
    }
    let outside = s
        .get(
            &s.staff.officer,
            "/v1/partitions/01/reconciliation?from=2026-10-01&to=2026-10-31",
            "reconciliation-range.response",
        )
        .await;
    assert_eq!(
        (outside.status, outside.kind()),
        (StatusCode::FORBIDDEN, "OutsideUnit")
    );
    assert_eq!(s.events().await, before, "reading a range appends nothing");
}

/// `GET /v1/audit/partitions/{p}/households/{id}/bundle`: before a checkpoint covers the
/// household's events it is 409 `NotCovered`; after, the download is one tar archive
/// that `ansinh audit verify-bundle` accepts offline (and refuses with one byte changed),
/// holding every event of the household. A household of another partition, a malformed
/// id, a commune officer and a household the log never saw are refused; nothing is
/// appended by any of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_households_bundle_downloads_as_one_archive_that_verifies_offline() {
    let s = server().await;
    s.disbursed_loan().await;
    let path = format!("/v1/audit/partitions/01/households/{HOUSEHOLD}/bundle");
    let (status, _, body) = s.get_raw(&s.staff.auditor, &path, &[]).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("NotCovered")),
        "{body}"
    );

    let mut checkpointer = ansinh::checkpoint::Checkpointer::open(
        client().await,
        s.service.ledger.clone(),
        s.checkpoints.clone(),
        s._dir.path(),
    )
    .await
    .unwrap();
    for (partition, outcome) in checkpointer.checkpoint_all().await.unwrap() {
        outcome.unwrap_or_else(|e| panic!("checkpoint of {partition}: {e}"));
    }
    let before = s.events().await;

    let (status, headers, tar) = s.get_raw(&s.staff.auditor, &path, &[]).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&tar));
    assert_eq!(headers["content-type"], "application/x-tar");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"bundle-{HOUSEHOLD}.tar\"").as_str()
    );
    let files = ansinh::bundle::archive::from_tar(&tar).unwrap();
    let verified = ansinh::bundle::verify(&files, &[]).unwrap();
    // Registered, classified, approved, disbursed.
    assert_eq!(verified.events, 4, "{verified:?}");
    assert_eq!(verified.households, 1);

    // The same check `ansinh audit verify-bundle` makes, on the downloaded file.
    let download = s._dir.path().join(format!("bundle-{HOUSEHOLD}.tar"));
    std::fs::write(&download, &tar).unwrap();
    let run = |file: &std::path::Path| {
        binary_on(s._dir.path(), &["--json", "audit", "verify-bundle"])
            .arg(file)
            .args(["--trust", &verified.latest_public_key])
            .output()
            .unwrap()
    };
    let accepted = run(&download);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stdout)
    );
    let mut damaged = tar.clone();
    // A byte of the first file's content (after the directory's and its own header).
    damaged[2 * 512 + 10] ^= 1;
    let changed = s._dir.path().join("changed.tar");
    std::fs::write(&changed, &damaged).unwrap();
    assert!(!run(&changed).status.success(), "a changed byte is refused");

    for (token, path, expected, kind) in [
        (
            &s.staff.auditor,
            format!("/v1/audit/partitions/02/households/{HOUSEHOLD}/bundle"),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            &s.staff.auditor,
            "/v1/audit/partitions/01/households/0100007-00001/bundle".to_owned(),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            &s.staff.officer,
            path.clone(),
            StatusCode::FORBIDDEN,
            "OutsideUnit",
        ),
        (
            &s.staff.auditor,
            "/v1/audit/partitions/01/households/0100007-000999/bundle".to_owned(),
            StatusCode::NOT_FOUND,
            "NothingToExport",
        ),
    ] {
        let (status, _, body) = s.get_raw(token, &path, &[]).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        if let Err(v) = s.schemas.validate("error.response", &body) {
            panic!("{path}: {v:?}");
        }
        assert_eq!(
            (status, body["error"].as_str()),
            (expected, Some(kind)),
            "{path}: {body}"
        );
    }
    assert_eq!(s.events().await, before, "a download appends nothing");
}

/// `GET /v1/audit/partitions/{p}/anomalies` and `.../recompute`: what `ansinh audit
/// anomalies` and `recompute-eligibility` find, for auditors, a page at a time: an
/// instruction pending past the allowed days is listed as of a late day and not as of
/// the day after it was issued; the review and its correction re-derive; pages are
/// numbered from 1; a
/// partition the log never saw is 404, a commune officer 403; nothing is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_read_the_anomalies_and_the_recomputed_decisions_a_page_at_a_time() {
    let s = server().await;
    s.paid_october().await;
    let mistaken = s.classify_poor(HOUSEHOLD).await;
    assert_eq!(mistaken.status, StatusCode::CREATED);
    // The review was recorded poor by mistake: its correction names it, and is decided
    // as the household's first decision (not poor, no escaped-poverty window). Only the
    // latest decision, and for its own review year, is corrected.
    let corrects = mistaken.body["sequence"].as_u64().unwrap();
    let path = format!("/v1/households/{HOUSEHOLD}/classifications");
    let correction = |corrects: u64, review_year: u32| {
        json!({"income_per_person": "4000000", "area": "rural", "deprived": [],
               "review_year": review_year, "decided_on": "2026-01-12", "corrects": corrects})
    };
    let officer = &s.staff.officer;
    for (key, body, status, kind) in [
        (
            "correct-earlier",
            correction(corrects - 1, 2026),
            StatusCode::CONFLICT,
            "CorrectsNotLatest",
        ),
        (
            "correct-year",
            correction(corrects, 2027),
            StatusCode::UNPROCESSABLE_ENTITY,
            "CorrectionForAnotherReviewYear",
        ),
    ] {
        let refused = s.post(officer, &path, key, body).await;
        assert_eq!(
            (refused.status, refused.kind()),
            (status, kind),
            "{}",
            refused.body
        );
    }
    let corrected = s
        .post(officer, &path, "correct", correction(corrects, 2026))
        .await;
    assert_eq!(corrected.status, StatusCode::CREATED, "{}", corrected.body);
    let view = s.view(officer, HOUSEHOLD).await;
    let standing = &view["household"]["standing"];
    assert_eq!(
        (&standing["status"], &standing["escaped_until"]),
        (&json!("not_poor"), &json!("")),
        "{view}"
    );
    let before = s.events().await;
    let a = &s.staff.auditor;
    let late = s
        .get(
            a,
            "/v1/audit/partitions/01/anomalies?as_of=2026-12-31&pending_days=10",
            "anomalies.response",
        )
        .await;
    assert_eq!(late.status, StatusCode::OK, "{}", late.body);
    assert_eq!(late.body["total"], json!(1), "{}", late.body);
    let found = &late.body["anomalies"][0];
    assert_eq!(
        (found["kind"].as_str(), found["household"].as_str()),
        (Some("instruction_pending"), Some(HOUSEHOLD))
    );
    assert_eq!(found["at"]["partition"], json!("01"));
    assert_eq!(late.body["events_scanned"], json!(before));
    let early = s
        .get(
            a,
            "/v1/audit/partitions/01/anomalies?as_of=2026-10-06",
            "anomalies.response",
        )
        .await;
    assert_eq!(
        (early.status, &early.body["total"]),
        (StatusCode::OK, &json!(0))
    );
    let past = s
        .get(
            a,
            "/v1/audit/partitions/01/anomalies?as_of=2026-12-31&page=2",
            "anomalies.response",
        )
        .await;
    assert_eq!(past.status, StatusCode::OK, "{}", past.body);
    assert_eq!(
        (
            &past.body["page"],
            &past.body["pages"],
            &past.body["anomalies"]
        ),
        (&json!(2), &json!(1), &json!([]))
    );

    let recomputed = s
        .get(a, "/v1/audit/partitions/01/recompute", "recompute.response")
        .await;
    assert_eq!(recomputed.status, StatusCode::OK, "{}", recomputed.body);
    assert_eq!(
        (
            &recomputed.body["decisions"],
            &recomputed.body["total"],
            &recomputed.body["mismatches"]
        ),
        (&json!(2), &json!(0), &json!([]))
    );

    for (token, path, expected, kind) in [
        (
            a,
            "/v1/audit/partitions/01/anomalies?page=0",
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            a,
            "/v1/audit/partitions/01/anomalies?as_of=2026-1-1",
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            a,
            "/v1/audit/partitions/01/recompute?page=x",
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            a,
            "/v1/audit/partitions/1/recompute",
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            a,
            "/v1/audit/partitions/99/anomalies",
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            a,
            "/v1/audit/partitions/99/recompute",
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            &s.staff.officer,
            "/v1/audit/partitions/01/anomalies",
            StatusCode::FORBIDDEN,
            "OutsideUnit",
        ),
        (
            &s.staff.officer,
            "/v1/audit/partitions/01/recompute",
            StatusCode::FORBIDDEN,
            "OutsideUnit",
        ),
    ] {
        let refused = s.get(token, path, "recompute.response").await;
        assert_eq!(
            (refused.status, refused.kind()),
            (expected, kind),
            "{path}: {}",
            refused.body
        );
    }

    // The same reports made in jobs, for logs too large to read within one request: the
    // record says how far the scan has read and ends with the same findings.
    let scans = "/v1/audit/partitions/01/scans";
    let anomalies = json!({"report": "anomalies", "as_of": "2026-12-31", "pending_days": 10});
    let started = s.post(a, scans, "scan-1", anomalies.clone()).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    assert_eq!(started.body["kind"], json!("anomalies"));
    let location = format!("/v1/jobs/{}", started.body["job"].as_str().unwrap());
    let done = s.follow_job(&location).await;
    assert_eq!(
        (
            &done["state"],
            &done["findings_total"],
            &done["events_scanned"]
        ),
        (&json!("done"), &json!(1), &json!(before)),
        "{done}"
    );
    assert_eq!(
        done["stream_sequence_reached"],
        done["stream_last_sequence"]
    );
    assert_eq!(done["findings"][0], late.body["anomalies"][0]);
    let again = s.post(a, scans, "scan-1", anomalies).await;
    assert_eq!(
        (again.status, &again.body["job"]),
        (StatusCode::OK, &started.body["job"])
    );
    let started = s
        .post(a, scans, "scan-2", json!({"report": "recompute"}))
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let location = format!("/v1/jobs/{}", started.body["job"].as_str().unwrap());
    let done = s.follow_job(&location).await;
    assert_eq!(
        (
            &done["kind"],
            &done["state"],
            &done["decisions"],
            &done["findings_total"]
        ),
        (&json!("recompute"), &json!("done"), &json!(2), &json!(0)),
        "{done}"
    );
    for (token, path, body, expected, kind) in [
        (
            a,
            scans,
            json!({"report": "verify"}),
            StatusCode::BAD_REQUEST,
            "SchemaViolation",
        ),
        (
            a,
            "/v1/audit/partitions/99/scans",
            json!({"report": "recompute"}),
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            &s.staff.officer,
            scans,
            json!({"report": "recompute"}),
            StatusCode::FORBIDDEN,
            "OutsideUnit",
        ),
    ] {
        let refused = s.post(token, path, "scan-refused", body).await;
        assert_eq!(
            (refused.status, refused.kind()),
            (expected, kind),
            "{path}: {}",
            refused.body
        );
    }
    assert_eq!(s.events().await, before, "audits append nothing");
}

/// A household registered in `partition` (its commune's unit acting) holding the
/// citizen whose blind index is `citizen`, appended unchecked: the claims would refuse a
/// citizen in two households, which is what the anomalies are there to find in a log.
async fn seeded_registration(s: &Server, household: &str, citizen: u8, key: &str) {
    use ansinh::proto;
    let draft = ansinh::log::Draft {
        partition: ansinh::chain::Partition::new(&household[..2]).unwrap(),
        actor: proto::Actor {
            id: "staff:seed".into(),
            role: "credit_officer".into(),
            unit: household[..7].into(),
        },
        idempotency_key: key.into(),
        correlation_id: String::new(),
        request_fingerprint: None,
        subjects: vec![format!("household:{household}")],
        payload: Payload::HouseholdRegistered(proto::HouseholdRegistered {
            household_id: household.into(),
            commune_code: household[..7].into(),
            area: "rural".into(),
            members: 1,
            citizen_indexes: vec![vec![citizen; 32].into()],
            registered_on: "2026-01-05".into(),
            ..Default::default()
        }),
    };
    s.service.ledger.append_unchecked(draft).await.unwrap();
}

/// An anomalies scan's findings are what its starter may see (a head-office auditor sees
/// every province's households), so its record is readable only by a reader who sees at
/// least as much: a province's manager reading the head office's scan of their own
/// province is refused (403), and not shown the other province's household the paged
/// report hides from them; the head office reads the province's own scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_is_read_only_by_who_sees_as_much_as_its_starter() {
    let s = server().await;
    seeded_registration(&s, "0100007-000010", 9, "seed-01").await;
    seeded_registration(&s, "7900003-000010", 9, "seed-79").await;
    let (auditor, manager) = (&s.staff.auditor, &s.staff.manager);
    let scans = "/v1/audit/partitions/01/scans";
    let body = json!({"report": "anomalies", "as_of": "2026-12-31", "pending_days": 10});
    let started = s.post(auditor, scans, "scan-ho", body.clone()).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let location = format!("/v1/jobs/{}", started.body["job"].as_str().unwrap());
    let done = s.follow_job(&location).await;
    assert_eq!(done["state"], json!("done"), "{done}");
    assert!(done["findings"].to_string().contains("7900003-"), "{done}");
    // What the province's manager is shown of the same anomalies: the other household
    // hidden.
    let paged = s
        .get(
            manager,
            "/v1/audit/partitions/01/anomalies?as_of=2026-12-31",
            "anomalies.response",
        )
        .await;
    assert_eq!(paged.status, StatusCode::OK, "{}", paged.body);
    assert_eq!(paged.body["total"], json!(1), "{}", paged.body);
    assert!(
        !paged.body.to_string().contains("7900003-"),
        "{}",
        paged.body
    );
    let read = s.get(manager, &location, "job.response").await;
    assert_eq!(
        (read.status, read.kind()),
        (StatusCode::FORBIDDEN, "OutsideUnit"),
        "{}",
        read.body
    );
    assert!(!read.body.to_string().contains("7900003-"), "{}", read.body);
    // The manager's own scan of the province: theirs to read, and the head office's too.
    let own = s.post(manager, scans, "scan-01", body).await;
    assert_eq!(own.status, StatusCode::ACCEPTED, "{}", own.body);
    let own_location = format!("/v1/jobs/{}", own.body["job"].as_str().unwrap());
    let done = s.follow_job(&own_location).await;
    assert_eq!(done["findings_total"], json!(1), "{done}");
    assert!(!done["findings"].to_string().contains("7900003-"), "{done}");
    let read = s.get(manager, &own_location, "job.response").await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
}

/// A stop is recorded on the day it is recorded, today in Vietnam by the ledger's clock,
/// whatever day it names: one naming a later day is refused (422 `StopDateInFuture`), and
/// the cancellations of a past stop are dated today, so the reconciliation of the days
/// before stays as it was. Timeouts as of a later day than today are refused (422
/// `TimeoutsAsOfInFuture`): they would give up on payments the gateway may be making; as
/// of a day before the partition's latest run, too (409 `PaymentOperationBackDated`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_and_timeouts_are_dated_by_the_ledgers_clock() {
    // 00:30 on 2026-11-20 in Vietnam: still the 19th in UTC.
    let s = &server_at("2026-11-20T00:30:00+07:00").await;
    s.paid_october().await;
    let m = &s.staff.manager;
    // November paid ahead, by a run dated 2026-10-25.
    let allocated = s.allocate("budget-11", "2026-11", "2026-10-20").await;
    assert_eq!(allocated.status, StatusCode::CREATED, "{}", allocated.body);
    let ahead = s.run_commune("run-11", "2026-11", "2026-10-25").await;
    assert_eq!(ahead.status, StatusCode::CREATED, "{}", ahead.body);
    // A day's lines as of today, but for what is still pending (which the cancellation
    // below rightly ends): what the day's own events recorded.
    let day = |day: &'static str| async move {
        let path = format!("/v1/partitions/01/reconciliation/{day}");
        let answer = s.get(m, &path, "reconciliation-day.response").await;
        assert_eq!(answer.status, StatusCode::OK, "{day}: {}", answer.body);
        let mut gateways = answer.body["gateways"].clone();
        for line in gateways.as_array_mut().unwrap() {
            let line = line.as_object_mut().unwrap();
            line.remove("pending_overdue");
            line.remove("pending_overdue_ids");
        }
        gateways
    };
    let run_day = day("2026-10-25").await;
    let before = s.events().await;

    for (key, on) in [("stop-future", "2026-11-21"), ("stop-far", "2099-12-31")] {
        let refused = s
            .send(
                m,
                "/v1/partitions/01/entitlements/1/stop",
                key,
                json!({"reason": "death", "on": on}),
                "receipt.response",
            )
            .await;
        assert_eq!(
            (refused.status, refused.kind()),
            (StatusCode::UNPROCESSABLE_ENTITY, "StopDateInFuture"),
            "{on}: {}",
            refused.body
        );
        assert!(
            refused.body["message"]
                .as_str()
                .unwrap()
                .contains("2026-11-20"),
            "{}",
            refused.body
        );
    }
    for as_of in ["2026-11-21", "2099-12-31"] {
        let refused = s
            .send(
                m,
                "/v1/partitions/01/timeouts",
                &format!("timeouts-{as_of}"),
                json!({ "as_of": as_of }),
                "timeouts.response",
            )
            .await;
        assert_eq!(
            (refused.status, refused.kind()),
            (StatusCode::UNPROCESSABLE_ENTITY, "TimeoutsAsOfInFuture"),
            "{as_of}: {}",
            refused.body
        );
    }
    // As of a day before the run of 2026-10-25, though October's transfer was due: each
    // timeout would be dated before the partition's latest run, so the request is refused
    // as a whole (409), not answered as if nothing were due.
    let back_dated = s
        .send(
            m,
            "/v1/partitions/01/timeouts",
            "timeouts-back-dated",
            json!({ "as_of": "2026-10-24" }),
            "timeouts.response",
        )
        .await;
    assert_eq!(
        (back_dated.status, back_dated.kind()),
        (StatusCode::CONFLICT, "PaymentOperationBackDated"),
        "{}",
        back_dated.body
    );
    assert_eq!(s.events().await, before, "the refusals append nothing");

    // A death on 2026-10-31, recorded today: November's instruction is cancelled today.
    let stopped = s
        .send(
            m,
            "/v1/partitions/01/entitlements/1/stop",
            "stop-1",
            json!({"reason": "death", "on": "2026-10-31"}),
            "receipt.response",
        )
        .await;
    assert_eq!(stopped.status, StatusCode::CREATED, "{}", stopped.body);
    let today = day("2026-11-20").await;
    assert_eq!(today[0]["cancelled"]["count"], json!(1), "{today}");
    assert_eq!(day("2026-10-31").await, json!([]));
    assert_eq!(
        day("2026-10-25").await,
        run_day,
        "a past day stays as it was"
    );

    // Timeouts as of today: October's bank transfer, due since 2026-10-15.
    let done = s
        .send(
            m,
            "/v1/partitions/01/timeouts",
            "timeouts-today",
            json!({"as_of": "2026-11-20"}),
            "timeouts.response",
        )
        .await;
    assert_eq!(done.status, StatusCode::CREATED, "{}", done.body);
    assert_eq!(done.body["timed_out"], json!(["pay:1:2026-10:1"]));
}

/// `POST /v1/partitions/{p}/timeouts`: as `ansinh payments timeouts`; before the bank's
/// timeout nothing is due (200 `nothing_left`, nothing appended); after it the instruction
/// is timed out (201, one event), and a retry under the same key, or a new key, finds the
/// work done (200 `nothing_left`) and appends nothing. Only the province's payments staff
/// may; a missing key and a malformed partition or date are 400.
/// The timeouts append under keys of their own, so their request's key is bound apart:
/// the same key with another body is refused, whichever process is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeouts_key_sent_again_with_another_body_is_refused() {
    let s = server().await;
    let m = &s.staff.manager;
    let path = "/v1/partitions/01/timeouts";
    s.register(HOUSEHOLD, "001085012345").await;
    let first = s
        .send(
            m,
            path,
            "timeouts-k",
            json!({"as_of": "2026-10-06"}),
            "timeouts.response",
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let (other_base, _other) = s.second_process().await;
    for base in [s.base.clone(), other_base] {
        let response = s
            .client
            .post(format!("{base}{path}"))
            .bearer_auth(m)
            .header("idempotency-key", "timeouts-k")
            .json(&json!({"as_of": "2026-12-31"}))
            .send()
            .await
            .unwrap();
        let changed = s.answer(response, "timeouts.response").await;
        assert_eq!(
            (changed.status, changed.kind()),
            (StatusCode::UNPROCESSABLE_ENTITY, "IdempotencyKeyReused"),
            "{base}"
        );
    }
}

/// Timeouts are a branch's: a caller who may not ask for them is refused before their
/// key is bound in the requests bucket, so the refusal writes nothing there and no
/// answer kept under the key is ever replayed to a caller without the right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_asked_by_a_caller_without_the_right_bind_no_key() {
    let s = server().await;
    s.register(HOUSEHOLD, "001085012345").await;
    let requests = async_nats::jetstream::new(client().await)
        .get_key_value(http::requests_bucket_name(&s.config.stream_name))
        .await
        .unwrap();
    let path = "/v1/partitions/01/timeouts";
    for (token, id, kind) in [
        (&s.staff.auditor, "staff:auditor", "RoleDenied"),
        (&s.staff.other_officer, "staff:officer14", "OutsideUnit"),
    ] {
        let refused = s
            .send(
                token,
                path,
                "t-1",
                json!({"as_of": "2026-10-06"}),
                "timeouts.response",
            )
            .await;
        assert_eq!(
            (refused.status, refused.kind()),
            (StatusCode::FORBIDDEN, kind),
            "{id}: {}",
            refused.body
        );
        let binding = blake3::hash(format!("http:{id}:t-1").as_bytes()).to_hex();
        assert!(
            requests.entry(binding.as_str()).await.unwrap().is_none(),
            "{id}: the key was bound in the requests bucket"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_over_http_time_out_each_instruction_once() {
    let s = server_at("2026-12-31T09:00:00+07:00").await;
    s.paid_october().await;
    let m = &s.staff.manager;
    let path = "/v1/partitions/01/timeouts";
    let before = s.events().await;
    let early = s
        .send(
            m,
            path,
            "timeouts-early",
            json!({"as_of": "2026-10-06"}),
            "timeouts.response",
        )
        .await;
    assert_eq!(
        (early.status, early.body["outcome"].as_str()),
        (StatusCode::OK, Some("nothing_left")),
        "{}",
        early.body
    );
    assert_eq!(s.events().await, before);

    let late = json!({"as_of": "2026-12-31"});
    let done = s
        .send(m, path, "timeouts-1", late.clone(), "timeouts.response")
        .await;
    assert_eq!(done.status, StatusCode::CREATED, "{}", done.body);
    assert_eq!(done.body["outcome"], json!("timed_out"));
    let ids = done.body["timed_out"].as_array().unwrap();
    assert_eq!(ids.len(), 1);
    assert!(
        ids[0].as_str().unwrap().starts_with("pay:"),
        "{}",
        done.body
    );
    assert_eq!(s.events().await, before + 1);

    // The same request again, as after a lost answer: the first answer, with the
    // instruction it timed out, which a new request no longer finds due.
    let again = s
        .send(m, path, "timeouts-1", late.clone(), "timeouts.response")
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body, done.body);
    let other = s
        .send(m, path, "timeouts-2", late.clone(), "timeouts.response")
        .await;
    assert_eq!(
        (other.status, other.body["outcome"].as_str()),
        (StatusCode::OK, Some("nothing_left")),
        "{}",
        other.body
    );
    assert_eq!(s.events().await, before + 1, "a retry appends nothing");

    for (token, path, key, body, expected, kind) in [
        (
            &s.staff.teller,
            path,
            Some("t"),
            late.clone(),
            StatusCode::FORBIDDEN,
            "RoleDenied",
        ),
        (
            &s.staff.officer,
            path,
            Some("t"),
            late.clone(),
            StatusCode::FORBIDDEN,
            "OutsideUnit",
        ),
        (
            m,
            "/v1/partitions/1/timeouts",
            Some("t"),
            late.clone(),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            m,
            path,
            None,
            late.clone(),
            StatusCode::BAD_REQUEST,
            "MissingIdempotencyKey",
        ),
        (
            m,
            path,
            Some("t"),
            json!({"as_of": "2026-12-1"}),
            StatusCode::BAD_REQUEST,
            "SchemaViolation",
        ),
    ] {
        let refused = s.post_raw(token, path, key, body.to_string()).await;
        assert_eq!(
            (refused.status, refused.kind()),
            (expected, kind),
            "{path}: {}",
            refused.body
        );
    }
    assert_eq!(s.events().await, before + 1, "refusals append nothing");
}

/// A loan or registry command dated after today is refused and appends nothing: a
/// repayment with a mistyped year would accrue decades of interest and leave every
/// correctly dated command on the loan refused as back-dated. The loan stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_dated_after_today_is_refused_and_the_loan_stays_usable() {
    let s = &server().await;
    let loan = s.disbursed_loan().await;
    let teller = &s.staff.teller;
    let before = s.events().await;
    let tomorrow = (ansinh::clock::today() + chrono::Days::new(1)).to_string();
    for (path, key, body) in [
        (
            format!("/v1/loans/{loan}/repayments"),
            "far",
            json!({"amount": "1000000", "on": "2062-03-20"}),
        ),
        (
            format!("/v1/loans/{loan}/repayments"),
            "tomorrow",
            json!({"amount": "1000000", "on": tomorrow}),
        ),
        (
            "/v1/households".to_string(),
            "later",
            json!({
                "household_id": "0100007-000009", "area": "rural", "registered_on": "2099-01-01",
                "personal": {"head_name": "Lê An", "head_citizen_id": "001085099999", "members": []}
            }),
        ),
    ] {
        let who = if path == "/v1/households" {
            &s.staff.officer
        } else {
            teller
        };
        let refused = s.post(who, &path, key, body).await;
        assert_eq!(
            (refused.status, refused.kind()),
            (StatusCode::UNPROCESSABLE_ENTITY, "DatedInFuture"),
            "{path}: {}",
            refused.body
        );
    }
    assert_eq!(s.events().await, before, "refusals append nothing");
    let now = s
        .post(
            teller,
            &format!("/v1/loans/{loan}/repayments"),
            "now",
            json!({"amount": "1000000", "on": "2026-03-20"}),
        )
        .await;
    assert_eq!(now.status, StatusCode::CREATED, "{}", now.body);
}

/// A move's arrival is recorded under the move's key with "/in": a client's own write
/// under a key that ends so is not taken for it. The move is refused before its first
/// half is appended, and the household stays where it lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_is_never_answered_by_another_write_under_its_arrivals_key() {
    a_move_onto_a_used_arrival_key_is_refused(&server().await, false).await;
}

/// The same refusal while the log index has not yet recorded the client's write (its
/// commit runs after the answer; held back here, as a slow disk would): the keys answered
/// and not yet in the index are looked up too. Before, the move-out landed, the arrival
/// was refused, and the household was active nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_is_refused_on_its_arrivals_key_before_the_index_records_that_key() {
    a_move_onto_a_used_arrival_key_is_refused(&server().await, true).await;
}

/// Registers 0100007-000006, then another household under the key "m/in", and moves the
/// first under the key "m", whose arrival key that is: refused, nothing appended, the
/// household still living where it did. With `hold_index`, the log index's commits are
/// held back throughout.
// The hold is kept across the requests on purpose: it stands for a slow disk while they
// are made, and only the writers' commit tasks wait on it.
#[allow(clippy::await_holding_lock)]
async fn a_move_onto_a_used_arrival_key_is_refused(s: &Server, hold_index: bool) {
    let officer = &s.staff.officer;
    assert_eq!(
        s.register("0100007-000006", "001085066666").await.status,
        StatusCode::CREATED
    );
    let held = hold_index.then(|| s.service.ledger.store().hold_commits());
    let other = s
        .post(
            officer,
            "/v1/households",
            "m/in",
            json!({
                "household_id": "0100007-000007", "area": "rural", "registered_on": "2026-01-05",
                "personal": {"head_name": "Lê An", "head_citizen_id": "001085077777", "members": []}
            }),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
    let before = s.events().await;
    let moved = s
        .post(
            officer,
            "/v1/households/0100007-000006/moves",
            "m",
            json!({"to_household_id": "0100008-000001", "area": "rural", "on": "2026-06-01"}),
        )
        .await;
    assert_eq!(
        (moved.status, moved.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "IdempotencyKeyReused"),
        "{}",
        moved.body
    );
    assert_eq!(s.events().await, before, "a refused move appends nothing");
    drop(held);
    let home = s
        .get(
            officer,
            "/v1/households/0100007-000006",
            "household-view.response",
        )
        .await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    assert_eq!(
        home.body["household"]["residence"],
        json!("active"),
        "{}",
        home.body
    );
}

/// A province's run whose process stopped mid-way stays `running` with an old time: the
/// same request again, once `JOB_ABANDONED_AFTER` has passed, takes the job over and runs
/// it to its end, paying nothing twice; while the record is fresh, it is only answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_process_stopped_is_taken_over_by_the_same_request() {
    let s = server().await;
    s.funded_october().await;
    let m = &s.staff.manager;
    let path = "/v1/partitions/01/payment-runs";
    let run = json!({"period": "2026-10", "on": "2026-10-05"});
    let start = || s.send(m, path, "prun-stopped", run.clone(), "job.response");
    let started = start().await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.body["job"].as_str().unwrap().to_owned();
    let location = format!("/v1/jobs/{id}");
    let done = s.follow_job(&location).await;
    assert_eq!(
        (&done["state"], &done["instructions"]),
        (&json!("done"), &json!(1))
    );
    let paid = s.events().await;

    // The record as a process that stopped after starting leaves it, last saved `ago`.
    let jobs = async_nats::jetstream::new(common::client().await)
        .get_key_value(ansinh::http::jobs_bucket_name(&s.config.stream_name))
        .await
        .unwrap();
    let left_running = |ago: std::time::Duration| {
        let mut record = done.clone();
        record["state"] = json!("running");
        record["communes_done"] = json!(0);
        record["instructions"] = json!(0);
        record["amount"] = json!("0");
        record["communes"] = json!([]);
        record["updated_at_unix_ms"] =
            json!(chrono::Utc::now().timestamp_millis() - ago.as_millis() as i64);
        serde_json::to_vec(&record).unwrap()
    };
    jobs.put(&id, left_running(std::time::Duration::ZERO).into())
        .await
        .unwrap();
    let fresh = start().await;
    assert_eq!(
        (fresh.status, &fresh.body["state"]),
        (StatusCode::OK, &json!("running")),
        "a job still saving is answered, not run twice: {}",
        fresh.body
    );

    let stopped = ansinh::http::JOB_ABANDONED_AFTER + std::time::Duration::from_secs(60);
    jobs.put(&id, left_running(stopped).into()).await.unwrap();
    let taken = start().await;
    assert_eq!(taken.status, StatusCode::ACCEPTED, "{}", taken.body);
    assert_eq!(taken.body["job"].as_str(), Some(id.as_str()));
    let finished = s.follow_job(&location).await;
    assert_eq!(
        (
            &finished["state"],
            &finished["communes_done"],
            &finished["instructions"]
        ),
        (&json!("done"), &json!(1), &json!(1)),
        "{finished}"
    );
    assert_eq!(
        s.events().await,
        paid,
        "the communes paid before are not paid twice"
    );
}

/// A scan whose process stopped while it waited for one of the log's readers stays
/// `waiting`: once its record has not changed for `JOB_ABANDONED_AFTER`, the same request
/// takes it over and runs it, as it does a running job's. A waiting record still fresh is
/// answered, not run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_job_whose_process_stopped_is_taken_over_by_the_same_request() {
    let s = server().await;
    assert_eq!(
        s.register(HOUSEHOLD, "001090000001").await.status,
        StatusCode::CREATED
    );
    let a = &s.staff.auditor;
    let scans = "/v1/audit/partitions/01/scans";
    let recompute = json!({"report": "recompute"});
    let started = s.post(a, scans, "scan-stopped", recompute.clone()).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.body["job"].as_str().unwrap().to_owned();
    let location = format!("/v1/jobs/{id}");
    let done = s.follow_job(&location).await;
    assert_eq!(done["state"], json!("done"), "{done}");

    // The record as a process that stopped before its turn came leaves it, last saved
    // `ago`.
    let jobs = async_nats::jetstream::new(common::client().await)
        .get_key_value(ansinh::http::jobs_bucket_name(&s.config.stream_name))
        .await
        .unwrap();
    let left_waiting = |ago: std::time::Duration| {
        let mut record = done.clone();
        record["state"] = json!("waiting");
        for count in [
            "stream_last_sequence",
            "stream_sequence_reached",
            "events_scanned",
            "decisions",
            "findings_total",
        ] {
            record[count] = json!(0);
        }
        record["findings"] = json!([]);
        record["updated_at_unix_ms"] =
            json!(chrono::Utc::now().timestamp_millis() - ago.as_millis() as i64);
        serde_json::to_vec(&record).unwrap()
    };
    jobs.put(&id, left_waiting(std::time::Duration::ZERO).into())
        .await
        .unwrap();
    let fresh = s.post(a, scans, "scan-stopped", recompute.clone()).await;
    assert_eq!(
        (fresh.status, &fresh.body["state"]),
        (StatusCode::OK, &json!("waiting")),
        "a job still saving is answered, not run twice: {}",
        fresh.body
    );

    let stopped = ansinh::http::JOB_ABANDONED_AFTER + std::time::Duration::from_secs(60);
    jobs.put(&id, left_waiting(stopped).into()).await.unwrap();
    let taken = s.post(a, scans, "scan-stopped", recompute).await;
    assert_eq!(
        (taken.status, &taken.body["job"]),
        (StatusCode::ACCEPTED, &json!(id)),
        "{}",
        taken.body
    );
    let finished = s.follow_job(&location).await;
    assert_eq!(
        (&finished["state"], &finished["events_scanned"]),
        (&json!("done"), &done["events_scanned"]),
        "{finished}"
    );
}

/// A job taken over while its first runner is still alive (its saves failed for two
/// minutes, or its host's clock is behind the taker's): the first runner's next save is
/// refused, it stops there, and the record stays the one the taker wrote. Nothing is paid
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_job_was_taken_over_writes_nothing_more() {
    let s = &server().await;
    s.funded_october().await;
    let mut held = None;
    let (first_base, _first) = s.second_process_with(|api| held = api.hold_jobs()).await;
    let mut held = held.expect("the first process's jobs are held");
    let start = |base: String| {
        let request = s
            .client
            .post(format!("{base}/v1/partitions/01/payment-runs"))
            .bearer_auth(&s.staff.manager)
            .header("idempotency-key", "prun-two-runners")
            .json(&json!({"period": "2026-10", "on": "2026-10-05"}));
        async move {
            s.answer(request.send().await.unwrap(), "job.response")
                .await
        }
    };

    // The first process accepts the run; its runner waits before any work.
    let first = start(first_base).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let id = first.body["job"].as_str().unwrap().to_owned();
    let jobs = async_nats::jetstream::new(common::client().await)
        .get_key_value(ansinh::http::jobs_bucket_name(&s.config.stream_name))
        .await
        .unwrap();
    // Its record as it stands after two minutes of saves that did not reach the bucket.
    let mut record: Value = serde_json::from_slice(&jobs.get(&id).await.unwrap().unwrap()).unwrap();
    assert_eq!(record["state"], json!("running"), "{record}");
    let stopped = ansinh::http::JOB_ABANDONED_AFTER + std::time::Duration::from_secs(60);
    record["updated_at_unix_ms"] =
        json!(chrono::Utc::now().timestamp_millis() - stopped.as_millis() as i64);
    jobs.put(&id, serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();

    // The same request to another process takes the job over and runs it to its end.
    let taken = start(s.base.clone()).await;
    assert_eq!(taken.status, StatusCode::ACCEPTED, "{}", taken.body);
    let finished = s.follow_job(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (&finished["state"], &finished["instructions"]),
        (&json!("done"), &json!(1)),
        "{finished}"
    );
    let paid = s.events().await;
    let taker = jobs.entry(&id).await.unwrap().unwrap();

    // The first runner goes on: its commune was paid by the taker, and its save is
    // refused, so it ends without writing.
    held.release_one();
    assert_eq!(held.next_ended().await, id);
    let after = jobs.entry(&id).await.unwrap().unwrap();
    assert_eq!(
        (after.revision, &after.value),
        (taker.revision, &taker.value),
        "the record stays the taker's: {}",
        String::from_utf8_lossy(&after.value)
    );
    assert_eq!(s.events().await, paid, "nothing is paid twice");
}

/// Scans need only read access and run O(log): they have slots of their own, so scans
/// filling theirs (one more is refused, 503) leave a province's payment run its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_filling_their_slots_leave_payment_runs_theirs() {
    let s = &server().await;
    s.funded_october().await;
    let mut held = None;
    let (base, _other) = s.second_process_with(|api| held = api.hold_jobs()).await;
    let mut held = held.expect("the process's jobs are held");
    let start = |token: &str, path: &str, key: String, body: Value| {
        let request = s
            .client
            .post(format!("{base}{path}"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body);
        async move {
            s.answer(request.send().await.unwrap(), "job.response")
                .await
        }
    };
    let scans = "/v1/audit/partitions/01/scans";
    let mut started = Vec::new();
    for n in 0..ansinh::http::SCANS_RUNNING_MAX {
        let scan = start(
            &s.staff.auditor,
            scans,
            format!("scan-slot-{n}"),
            json!({"report": "recompute"}),
        )
        .await;
        assert_eq!(scan.status, StatusCode::ACCEPTED, "{}", scan.body);
        started.push(scan.body["job"].as_str().unwrap().to_owned());
    }
    let one_more = start(
        &s.staff.auditor,
        scans,
        "scan-slot-more".into(),
        json!({"report": "recompute"}),
    )
    .await;
    assert_eq!(
        (one_more.status, one_more.kind()),
        (StatusCode::SERVICE_UNAVAILABLE, "LedgerUnavailable"),
        "{}",
        one_more.body
    );

    let run = start(
        &s.staff.manager,
        "/v1/partitions/01/payment-runs",
        "prun-beside-scans".into(),
        json!({"period": "2026-10", "on": "2026-10-05"}),
    )
    .await;
    assert_eq!(run.status, StatusCode::ACCEPTED, "{}", run.body);
    started.push(run.body["job"].as_str().unwrap().to_owned());

    let mut ended = Vec::new();
    for _ in 0..started.len() {
        held.release_one();
        ended.push(held.next_ended().await);
    }
    started.sort();
    ended.sort();
    assert_eq!(ended, started);
}

/// A run that failed is resumed by the same request again (the key of a 5xx, ADR 0013):
/// the retry takes the failed record over and runs the communes again, and those paid
/// before answer with their first receipts, so nothing is paid twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_resumed_by_the_same_request() {
    let s = server().await;
    s.funded_october().await;
    let path = "/v1/partitions/01/payment-runs";
    let run = json!({"period": "2026-10", "on": "2026-10-05"});
    let start = || {
        s.send(
            &s.staff.manager,
            path,
            "prun-failed",
            run.clone(),
            "job.response",
        )
    };
    let started = start().await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.body["job"].as_str().unwrap().to_owned();
    let location = format!("/v1/jobs/{id}");
    let done = s.follow_job(&location).await;
    assert_eq!(done["state"], json!("done"), "{done}");
    let paid = s.events().await;

    // The record as a run that failed at its first commune (the ledger unavailable, say)
    // leaves it, just saved.
    let jobs = async_nats::jetstream::new(common::client().await)
        .get_key_value(ansinh::http::jobs_bucket_name(&s.config.stream_name))
        .await
        .unwrap();
    let mut failed = done.clone();
    failed["state"] = json!("failed");
    failed["error"] = json!("commune 0100007: the ledger is unavailable");
    failed["communes_done"] = json!(0);
    failed["instructions"] = json!(0);
    failed["amount"] = json!("0");
    failed["communes"] = json!([]);
    failed["updated_at_unix_ms"] = json!(chrono::Utc::now().timestamp_millis());
    jobs.put(&id, serde_json::to_vec(&failed).unwrap().into())
        .await
        .unwrap();

    let resumed = start().await;
    assert_eq!(
        (resumed.status, &resumed.body["job"]),
        (StatusCode::ACCEPTED, &json!(id)),
        "{}",
        resumed.body
    );
    let finished = s.follow_job(&location).await;
    assert_eq!(
        (
            &finished["state"],
            &finished["communes_done"],
            &finished["instructions"]
        ),
        (&json!("done"), &json!(1), &json!(1)),
        "{finished}"
    );
    assert_eq!(s.events().await, paid, "what was paid is not paid twice");
}

/// A province's run pays commune by commune, each dated the run's date; a run, reissue or
/// timeout of the partition dated later may land between two of them (here: the run
/// stopped after commune 0100007, and November was paid ahead on 2026-10-25 before it was
/// run again). The communes left are then dated that later day, the partition's payment
/// operations staying in date order, instead of being refused as back-dated and leaving
/// the run failed for good: each line says the day its commune was recorded on, and
/// nothing is paid twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provinces_run_goes_on_past_a_later_dated_payment_operation() {
    let s = server().await;
    s.funded_october().await;
    let m = &s.staff.manager;
    // A second commune, 0100014, with its household granted and funded for October.
    let other = "0100014-000001";
    let registered = s
        .post(
            &s.staff.other_officer,
            "/v1/households",
            "register-14",
            json!({
                "household_id": other, "area": "rural", "registered_on": "2026-01-05",
                "personal": {
                    "head_name": "Lê Văn Bình", "head_citizen_id": "001090000014",
                    "phone": "0912345614", "members": []
                }
            }),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    let granted = s
        .send(
            m,
            "/v1/entitlements",
            "grant-14",
            json!({
                "household_id": other, "member": "m1",
                "category": "ELDERLY_80_PLUS_NO_PENSION", "channel": "bank", "gateway": "vcb",
                "from": "2026-10", "on": "2026-10-01"
            }),
            "entitlement.response",
        )
        .await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.body);
    let budget = s
        .send(
            m,
            "/v1/communes/0100014/budgets",
            "budget-14-10",
            json!({"period": "2026-10", "amount": "2000000", "on": "2026-10-01"}),
            "receipt.response",
        )
        .await;
    assert_eq!(budget.status, StatusCode::CREATED, "{}", budget.body);

    // October's run of 0100007 on 2026-10-05, as the run had paid it before it stopped;
    // then November paid ahead on 2026-10-25.
    let first = s.run_commune("run-10", "2026-10", "2026-10-05").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let budget = s.allocate("budget-11", "2026-11", "2026-10-20").await;
    assert_eq!(budget.status, StatusCode::CREATED, "{}", budget.body);
    let ahead = s.run_commune("run-11", "2026-11", "2026-10-25").await;
    assert_eq!(ahead.status, StatusCode::CREATED, "{}", ahead.body);
    let before = s.events().await;

    let started = s
        .send(
            m,
            "/v1/partitions/01/payment-runs",
            "prun-late",
            json!({"period": "2026-10", "on": "2026-10-05"}),
            "job.response",
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.body["job"].as_str().unwrap().to_owned();
    let done = s.follow_job(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (
            &done["state"],
            &done["communes_done"],
            &done["instructions"]
        ),
        (&json!("done"), &json!(2), &json!(1)),
        "{done}"
    );
    assert_eq!(done["on"], json!("2026-10-05"), "the run's date as asked");
    let lines: Vec<(&Value, &Value, &Value)> = done["communes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (&l["commune"], &l["outcome"], &l["on"]))
        .collect();
    assert_eq!(
        lines,
        [
            (&json!("0100007"), &json!("nothing_left"), &Value::Null),
            (&json!("0100014"), &json!("paid"), &json!("2026-10-25")),
        ],
        "{done}"
    );
    assert_eq!(
        s.events().await,
        before + 2,
        "0100014's instruction and run, once"
    );
}

/// `POST /v1/partitions/{p}/payment-runs`: a whole province's run as a job, 202 with its
/// `Location`; `GET /v1/jobs/{id}` follows it to `done` with the communes, instructions
/// and amount, and another ledger process answers the same record. The same key again answers the same job (200) and another body under it
/// 422; a second run of the month under a new key pays nothing twice. Commune desks,
/// tellers and another province's branch are refused; a job is read only by who may
/// read its partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provinces_payment_run_is_a_job_followed_to_its_result() {
    let s = server().await;
    s.funded_october().await;
    let m = &s.staff.manager;

    let s = &s;
    let path = "/v1/partitions/01/payment-runs";
    let run = json!({"period": "2026-10", "on": "2026-10-05"});
    let start = |key: &'static str, body: Value| {
        let request = s
            .client
            .post(format!("{}{path}", s.base))
            .bearer_auth(m)
            .header("idempotency-key", key)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let location = response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned());
            (s.answer(response, "job.response").await, location)
        }
    };

    let before = s.events().await;
    let (started, location) = start("prun-1", run.clone()).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.body["job"].as_str().unwrap().to_owned();
    let location = location.expect("a Location to follow");
    assert_eq!(location, format!("/v1/jobs/{id}"));
    let done = s.follow_job(&location).await;
    assert_eq!(done["state"], json!("done"), "{done}");
    assert_eq!(
        (
            &done["communes_total"],
            &done["communes_done"],
            &done["instructions"]
        ),
        (&json!(1), &json!(1), &json!(1)),
        "{done}"
    );
    assert_eq!(done["communes"][0]["commune"], json!("0100007"));
    assert_eq!(done["communes"][0]["outcome"], json!("paid"));
    assert!(money(&done["amount"]) > Decimal::ZERO, "{done}");
    let paid = s.events().await;
    assert!(paid > before);

    // Another ledger process on the same log (its own store, the shared buckets) answers
    // the job too: the record is in the jobs bucket, not in the process that ran it.
    let (other_base, _other) = s.second_process().await;
    let response = s
        .client
        .get(format!("{other_base}{location}"))
        .bearer_auth(&s.staff.auditor)
        .send()
        .await
        .unwrap();
    let there = s.answer(response, "job.response").await;
    assert_eq!((there.status, &there.body), (StatusCode::OK, &done));

    let (again, again_location) = start("prun-1", run.clone()).await;
    assert_eq!(
        (again.status, again.body["job"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
    assert_eq!(again_location.as_deref(), Some(location.as_str()));
    let (reused, _) = start("prun-1", json!({"period": "2026-11", "on": "2026-11-05"})).await;
    assert_eq!(
        (reused.status, reused.kind()),
        (StatusCode::UNPROCESSABLE_ENTITY, "IdempotencyKeyReused")
    );

    let (rerun, rerun_location) = start("prun-2", run.clone()).await;
    assert_eq!(rerun.status, StatusCode::ACCEPTED, "{}", rerun.body);
    assert_ne!(rerun.body["job"].as_str(), Some(id.as_str()));
    let rerun = s.follow_job(&rerun_location.unwrap()).await;
    assert_eq!(
        (
            &rerun["state"],
            &rerun["instructions"],
            &rerun["communes"][0]["outcome"]
        ),
        (&json!("done"), &json!(0), &json!("nothing_left")),
        "{rerun}"
    );
    assert_eq!(s.events().await, paid, "a second run pays nothing twice");

    // A commune's own run under a key that spells the job's key and that commune is its
    // own request, not taken for the job's run of that commune.
    let budget = s.allocate("budget-11", "2026-11", "2026-10-20").await;
    assert_eq!(budget.status, StatusCode::CREATED, "{}", budget.body);
    let november = s
        .run_commune("prun-1/0100007", "2026-11", "2026-10-25")
        .await;
    assert_eq!(
        (
            november.status,
            &november.body["outcome"],
            &november.body["period"]
        ),
        (StatusCode::CREATED, &json!("paid"), &json!("2026-11")),
        "{}",
        november.body
    );
    let paid = s.events().await;

    for (token, path, expected, kind) in [
        (
            &s.staff.officer,
            "/v1/partitions/01/payment-runs",
            StatusCode::FORBIDDEN,
            "OutsideUnit",
        ),
        (
            &s.staff.teller,
            "/v1/partitions/01/payment-runs",
            StatusCode::FORBIDDEN,
            "RoleDenied",
        ),
        (
            m,
            "/v1/partitions/79/payment-runs",
            StatusCode::FORBIDDEN,
            "OutsideUnit",
        ),
        (
            m,
            "/v1/partitions/1/payment-runs",
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
    ] {
        let refused = s.post(token, path, "prun-x", run.clone()).await;
        assert_eq!(
            (refused.status, refused.kind()),
            (expected, kind),
            "{path}: {}",
            refused.body
        );
    }
    for (token, path, expected, kind) in [
        (
            &s.staff.officer,
            location.clone(),
            StatusCode::FORBIDDEN,
            "OutsideUnit",
        ),
        (
            m,
            "/v1/jobs/0123456789abcdef0123456789abcdef".to_owned(),
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            m,
            format!("/v1/jobs/{}", id.to_uppercase()),
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
    ] {
        let refused = s.get(token, &path, "job.response").await;
        assert_eq!(
            (refused.status, refused.kind()),
            (expected, kind),
            "{path}: {}",
            refused.body
        );
    }
    assert_eq!(s.events().await, paid, "refusals append nothing");
}

/// `POST /v1/households/search` with a household id: the same answer as by a citizen id,
/// under the same rule (officers and managers of its unit; outside it, or unknown, 404);
/// a body with both, neither, or a malformed id breaks the schema's `oneOf` (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_is_found_by_its_id_in_the_same_search() {
    let s = server().await;
    assert_eq!(
        s.register(HOUSEHOLD, "001090000008").await.status,
        StatusCode::CREATED
    );
    let before = s.events().await;
    let s = &s;
    let search = |token: &str, body: Value| {
        let request = s
            .client
            .post(format!("{}/v1/households/search", s.base))
            .bearer_auth(token)
            .json(&body);
        async move {
            s.answer(request.send().await.unwrap(), "household-search.response")
                .await
        }
    };
    let by_id = search(&s.staff.officer, json!({"household_id": HOUSEHOLD})).await;
    let by_citizen = search(&s.staff.officer, json!({"citizen_id": "001090000008"})).await;
    assert_eq!(by_id.status, StatusCode::OK, "{}", by_id.body);
    assert_eq!(
        by_id.body,
        json!({"household_id": HOUSEHOLD, "commune": "0100007"})
    );
    assert_eq!(by_id.body, by_citizen.body);
    let manager = search(&s.staff.manager, json!({"household_id": HOUSEHOLD})).await;
    assert_eq!(manager.status, StatusCode::OK);
    for (token, body, expected, kind) in [
        (
            &s.staff.other_officer,
            json!({"household_id": HOUSEHOLD}),
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            &s.staff.officer,
            json!({"household_id": "0100007-000999"}),
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            &s.staff.teller,
            json!({"household_id": HOUSEHOLD}),
            StatusCode::FORBIDDEN,
            "RoleDenied",
        ),
        (
            &s.staff.officer,
            json!({"household_id": HOUSEHOLD, "citizen_id": "001090000008"}),
            StatusCode::BAD_REQUEST,
            "SchemaViolation",
        ),
        (
            &s.staff.officer,
            json!({}),
            StatusCode::BAD_REQUEST,
            "SchemaViolation",
        ),
        (
            &s.staff.officer,
            json!({"household_id": "0100007-00001"}),
            StatusCode::BAD_REQUEST,
            "SchemaViolation",
        ),
    ] {
        let refused = search(token, body.clone()).await;
        assert_eq!(
            (refused.status, refused.kind()),
            (expected, kind),
            "{body}: {}",
            refused.body
        );
    }
    assert_eq!(s.events().await, before, "a search appends nothing");
}

/// A message on the log's subjects that names no partition is in no chain: the read model
/// passes over it and goes on (stopping there would stop every read for ever, at a message
/// nobody can delete or exclude). So does a flood of foreign messages on one partition,
/// held for the operator's exclusion. A read model that stopped (here at a message a test
/// hook makes it fail on) makes the process say it is not ready, and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_message_stops_no_read_and_a_stopped_read_model_is_not_ready() {
    let s = server().await;
    let js = s.service.ledger.jetstream().clone();
    let publish = |subject: String| {
        let js = js.clone();
        async move {
            js.publish(subject, "not the ledger's".into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        }
    };
    let prefix = &s.config.subject_prefix;
    publish(format!("{prefix}.x.y")).await;
    publish(format!("{prefix}.bad+name")).await;
    let id = "0100007-000031";
    let written = s.register(id, "001085000031").await;
    assert_eq!(written.status, StatusCode::CREATED, "{}", written.body);
    let after = written.body["stream_sequence"].as_u64().unwrap();
    let read = s
        .get(
            &s.staff.officer,
            &format!("/v1/households/{id}?after={after}"),
            "household-view.response",
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let ready = |s: &Server| {
        let (client, base) = (s.client.clone(), s.base.clone());
        async move {
            let answer = client.get(format!("{base}/readyz")).send().await.unwrap();
            (answer.status(), answer.json::<Value>().await.unwrap())
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = ready(&s).await;
        if status == StatusCode::OK {
            assert!(
                body["projected_through"].as_u64().unwrap() >= after,
                "{body}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // A flood of foreign messages on one partition, more than a reader lists one by one:
    // held until an exclusion names them, and the read model goes on past them.
    let mut flood = 0;
    for _ in 0..=2 * ansinh::log::follow::HELD_LISTED_MAX {
        flood = publish(format!("{prefix}.77")).await;
    }
    loop {
        let (status, body) = ready(&s).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["projected_through"].as_u64().unwrap() >= flood {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // A message the projections cannot get past stops them (the log itself no longer
    // can: what breaks a chain is held, CHAIN.md section 4a).
    let first = publish(format!("{prefix}.78")).await;
    s.service.projector.stop_at_for_tests(first);
    loop {
        let (status, body) = ready(&s).await;
        let reasons = body["reasons"].to_string();
        if reasons.contains("the read model stopped") {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert!(
                reasons.contains(&format!("stream sequence {first}")),
                "names the message it stopped at: {body}"
            );
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A savings group of only invisible characters, or with a control character, is refused
/// at the API as the console and the CLI refuse it, and nothing is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_or_invisible_savings_group_is_refused_and_appends_nothing() {
    let s = server().await;
    assert_eq!(
        s.register(HOUSEHOLD, "001085012345").await.status,
        StatusCode::CREATED
    );
    assert_eq!(s.classify_poor(HOUSEHOLD).await.status, StatusCode::CREATED);
    let events = s.events().await;
    for (n, group) in ["\u{200B}", "\u{200B}\u{2060}", "TK\u{0007}01"]
        .into_iter()
        .enumerate()
    {
        let mut body = Server::approval(HOUSEHOLD);
        body["savings_group"] = json!(group);
        let refused = s
            .post(&s.staff.officer, "/v1/loans", &format!("approve-{n}"), body)
            .await;
        assert_eq!(
            refused.status.as_u16() / 100,
            4,
            "{group:?}: {}",
            refused.body
        );
        assert_eq!(s.events().await, events, "{group:?}");
    }
}
