//! Hostile input at every entrance, as a table: staff HTTP bodies, paths, queries and
//! headers; gateway posts over HTTP (properly signed, so only the content is wrong); and
//! the CLI's arguments. Each case asserts the typed refusal (status and kind, or exit
//! code and the `--json` error's kind) and that the log did not grow.
//!
//! One nats-server, one ledger and one HTTP listener serve every case.

mod common;
mod common_gateway;

use std::sync::Arc;

use ansinh::access::Role;
use ansinh::gateway_ledger::{LedgerSink, system_clock};
use ansinh::http::{self, Api, GatewayEdge, Schemas, StaffDirectory};
use ansinh::log::LogConfig;
use ansinh::projection::Projector;
use ansinh::service::Service;
use common::*;
use common_gateway::{key, shared_registry, sign_request};
use reqwest::StatusCode;
use serde_json::{Value, json};

const HOUSEHOLD: &str = "0100007-000001";

struct Ledger {
    base: String,
    client: reqwest::Client,
    config: LogConfig,
    schemas: Schemas,
    officer: String,
    /// Head office: reads every partition.
    auditor: String,
    secrets: std::path::PathBuf,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn ledger() -> Ledger {
    let config = fresh_log();
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_at(&config, &dir.path().join("store")).await;
    let vault = Arc::new(vault_for(&ledger, &dir.path().join("secrets")).await);
    let projector = Arc::new(Projector::of_store(ledger.store()).unwrap());
    let service = Service::new(ledger, vault, projector);
    register_household(&service, HOUSEHOLD, 1).await;
    let staff = dir.path().join(http::STAFF_FILE);
    let officer =
        http::auth::add_staff(&staff, "staff:officer", Role::CreditOfficer, "0100007").unwrap();
    let auditor = http::auth::add_staff(&staff, "staff:auditor", Role::Auditor, "").unwrap();
    let edge = GatewayEdge {
        registry: shared_registry(),
        sink: Arc::new(LedgerSink::new(service.clone(), system_clock())),
    };
    let api = Api::with_gateways(
        service,
        ansinh::directory::Shared::new(StaffDirectory::load(&staff).unwrap()),
        Some(edge),
    )
    .await
    .unwrap();
    let (base, stop) = common::serve(api).await;
    let l = Ledger {
        base,
        client: reqwest::Client::new(),
        config,
        schemas: Schemas::compile(),
        officer,
        auditor,
        secrets: dir.path().join("secrets"),
        dir,
        _stop: stop,
    };
    // A poor household with a loan to send repayments to, so that a refusal below is
    // the input's, not a missing loan's.
    let classified = l
        .send(
            "POST",
            "/v1/households/0100007-000001/classifications",
            Some("review-1"),
            classification().to_string().into_bytes(),
        )
        .await;
    assert_eq!(classified.0, StatusCode::CREATED, "{}", classified.1);
    let approved = l
        .send(
            "POST",
            "/v1/loans",
            Some("approve-1"),
            approval().to_string().into_bytes(),
        )
        .await;
    assert_eq!(approved.0, StatusCode::CREATED, "{}", approved.1);
    l
}

fn approval() -> Value {
    json!({
        "household_id": HOUSEHOLD,
        "programme": "POOR_HOUSEHOLD",
        "amount": "30000000",
        "term_months": 36,
        "savings_group": "TK-01",
        "entrusted": "womens_union",
        "on": "2026-02-02",
        "reason": "production loan"
    })
}

fn registration() -> Value {
    json!({
        "household_id": "0100007-000002",
        "area": "rural",
        "registered_on": "2026-01-05",
        "personal": {"head_name": "Lê Văn Tám", "head_citizen_id": "001190000101", "members": []}
    })
}

fn repayment() -> Value {
    json!({"amount": "1000000", "on": "2026-05-01"})
}

fn classification() -> Value {
    json!({
        "income_per_person": "1200000",
        "area": "rural",
        "deprived": ["employment", "nutrition", "drinking_water"],
        "review_year": 2026,
        "decided_on": "2026-01-10"
    })
}

fn gateway_post() -> Value {
    json!({
        "instruction_id": "01/pay:1:2026-10:1",
        "outcome": "settled",
        "gateway_txn_id": "VCB-1",
        "amount": "500000",
        "beneficiary_ref": "0100007-000001/m1"
    })
}

/// `template` with `member` set to `value`, as JSON text.
fn with(template: Value, member: &str, value: Value) -> Vec<u8> {
    let mut v = template;
    let mut at = &mut v;
    let path: Vec<&str> = member.split('.').collect();
    for p in &path[..path.len() - 1] {
        at = &mut at[*p];
    }
    at[path[path.len() - 1]] = value;
    v.to_string().into_bytes()
}

/// `template` as JSON text with `from` (a piece of its text) replaced by `to`: for what a
/// `Value` cannot hold (a repeated member, an escape serde_json would not write).
fn text_with(template: Value, from: &str, to: &str) -> Vec<u8> {
    let text = template.to_string();
    assert!(text.contains(from), "{from} not in {text}");
    text.replacen(from, to, 1).into_bytes()
}

impl Ledger {
    async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(&self.officer);
        if method == "POST" {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let schema = if method == "GET" {
            "household-view.response"
        } else {
            "receipt.response"
        };
        schema_checked(&self.schemas, request.send().await.unwrap(), schema).await
    }

    async fn gateway_send(&self, body: Vec<u8>) -> (StatusCode, Value) {
        let path = "/v1/gateways/vcb/posts";
        let now = chrono::Utc::now().timestamp_millis();
        let s = sign_request(&key(1), "POST", path, &body, now);
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("idempotency-key", "gw-post")
            .header("ansinh-gateway-timestamp", &s.timestamp)
            .header("ansinh-gateway-key-id", &s.key_id)
            .header("ansinh-gateway-signature", &s.signature)
            .body(s.body)
            .send()
            .await
            .unwrap();
        schema_checked(&self.schemas, response, "receipt.response").await
    }

    /// Runs the CLI against this very log, with `--json`, as a process of this ledger
    /// (its secrets file): an argument that got through would seal and append to what the
    /// cases count.
    fn cli_with_secrets(&self, args: &[&str]) -> (Option<i32>, Value) {
        self.cli_in(&["--secrets", self.secrets.to_str().unwrap()], args)
    }

    fn cli_in(&self, options: &[&str], args: &[&str]) -> (Option<i32>, Value) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ansinh"))
            .arg("--json")
            .args(options)
            .args(["--data-dir", self.dir.path().join("cli").to_str().unwrap()])
            .args(["--nats", &server_url()])
            .args(["--stream", &self.config.stream_name])
            .args(["--subject-prefix", &self.config.subject_prefix])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let body = serde_json::from_str(stdout.trim()).unwrap_or_else(
            |_| json!({"stdout": stdout, "stderr": String::from_utf8_lossy(&out.stderr)}),
        );
        (out.status.code(), body)
    }
}

const BAD: StatusCode = StatusCode::BAD_REQUEST;

/// What the case is, method, path, idempotency key, body, the status and error kind expected.
type HttpCase<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Vec<u8>,
    StatusCode,
    &'a str,
);

#[tokio::test]
async fn hostile_input_at_every_entrance_is_refused_for_what_it_is_and_appends_nothing() {
    let l = ledger().await;
    let before = event_count(&l.config).await;
    let long = |n: usize| "ă".repeat(n);
    let register = "/v1/households";
    let repay = "/v1/loans/01-L1/repayments";
    let classify = "/v1/households/0100007-000001/classifications";
    let k = Some("hostile-1");
    let key_65 = "k".repeat(65);

    // (what, method, path, idempotency key, body, status, kind)
    let http_cases: Vec<HttpCase> =
        vec![
        (
            "a member named twice",
            "POST",
            register,
            k,
            text_with(
                registration(),
                "\"area\":\"rural\"",
                "\"area\":\"rural\",\"area\":\"urban\"",
            ),
            BAD,
            "MalformedJson",
        ),
        (
            "a nested member named twice",
            "POST",
            register,
            k,
            text_with(
                registration(),
                "\"head_name\":",
                "\"head_name\":\"An\",\"head_name\":",
            ),
            BAD,
            "MalformedJson",
        ),
        (
            "a sequence to reverse past any the chain can reach",
            "POST",
            "/v1/loans/01-L1/reversals",
            k,
            br#"{"sequence": 9223372036854775850, "on": "2026-05-01", "reason": "keyed twice"}"#
                .to_vec(),
            BAD,
            "SchemaViolation",
        ),
        (
            "the amount named twice",
            "POST",
            repay,
            k,
            br#"{"amount": "1000", "amount": "29000000", "on": "2026-05-01"}"#.to_vec(),
            BAD,
            "MalformedJson",
        ),
        (
            "an escaped NUL in a name",
            "POST",
            register,
            k,
            with(registration(), "personal.head_name", json!("An\u{0}")),
            BAD,
            "MalformedJson",
        ),
        (
            "a raw control byte in a string",
            "POST",
            register,
            k,
            text_with(registration(), "Lê Văn Tám", "Lê\u{1}Tám"),
            BAD,
            "MalformedJson",
        ),
        (
            "a lone surrogate",
            "POST",
            register,
            k,
            text_with(registration(), "Lê Văn Tám", "Lê \\ud800"),
            BAD,
            "MalformedJson",
        ),
        (
            "a C1 control",
            "POST",
            register,
            k,
            with(registration(), "personal.head_name", json!("An\u{85}")),
            BAD,
            "MalformedJson",
        ),
        (
            "the non-character U+FFFE",
            "POST",
            register,
            k,
            with(registration(), "personal.head_name", json!("An\u{FFFE}")),
            BAD,
            "MalformedJson",
        ),
        (
            "the non-character U+FDD0",
            "POST",
            register,
            k,
            with(registration(), "personal.head_name", json!("An\u{FDD0}")),
            BAD,
            "MalformedJson",
        ),
        (
            "an escape in a member name",
            "POST",
            register,
            k,
            text_with(registration(), "\"area\"", "\"ar\\u0000ea\""),
            BAD,
            "MalformedJson",
        ),
        (
            "a name of 201 characters",
            "POST",
            register,
            k,
            with(registration(), "personal.head_name", json!(long(201))),
            BAD,
            "SchemaViolation",
        ),
        (
            "an empty name",
            "POST",
            register,
            k,
            with(registration(), "personal.head_name", json!("")),
            BAD,
            "SchemaViolation",
        ),
        (
            "a name of spaces",
            "POST",
            register,
            k,
            with(registration(), "personal.head_name", json!("   ")),
            BAD,
            "SchemaViolation",
        ),
        (
            "a name of a zero-width space",
            "POST",
            register,
            k,
            with(registration(), "personal.head_name", json!("\u{200B}")),
            BAD,
            "SchemaViolation",
        ),
        (
            "a member's relation of a space",
            "POST",
            register,
            k,
            with(
                registration(),
                "personal.members",
                json!([{"name": "Lê An", "relation": " "}]),
            ),
            BAD,
            "SchemaViolation",
        ),
        (
            "a member's name of invisible characters",
            "POST",
            register,
            k,
            with(
                registration(),
                "personal.members",
                json!([{"name": " \u{2060}\u{FEFF}", "relation": "con"}]),
            ),
            BAD,
            "SchemaViolation",
        ),
        (
            "a member change naming nobody",
            "POST",
            "/v1/households/0100007-000001/members",
            k,
            json!({
                "on": "2026-05-01",
                "reason": "a child born",
                "personal": {
                    "head_name": "\u{3164}",
                    "head_citizen_id": "001190000101",
                    "members": []
                }
            })
            .to_string()
            .into_bytes(),
            BAD,
            "SchemaViolation",
        ),
        (
            "a household path that is not UTF-8",
            "GET",
            "/v1/households/%FF",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a loan path that is not UTF-8",
            "POST",
            "/v1/loans/%FF-L1/repayments",
            k,
            repayment().to_string().into_bytes(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a citizen id of 11 digits",
            "POST",
            register,
            k,
            with(
                registration(),
                "personal.head_citizen_id",
                json!("00119000010"),
            ),
            BAD,
            "SchemaViolation",
        ),
        (
            "a citizen id with a letter",
            "POST",
            register,
            k,
            with(
                registration(),
                "personal.head_citizen_id",
                json!("00119000010A"),
            ),
            BAD,
            "SchemaViolation",
        ),
        (
            "a household id of 5-digit serial",
            "POST",
            register,
            k,
            with(registration(), "household_id", json!("0100007-00002")),
            BAD,
            "SchemaViolation",
        ),
        (
            "a household id as a number",
            "POST",
            register,
            k,
            with(registration(), "household_id", json!(100700002)),
            BAD,
            "SchemaViolation",
        ),
        (
            "an unknown area",
            "POST",
            register,
            k,
            with(registration(), "area", json!("mountain")),
            BAD,
            "SchemaViolation",
        ),
        (
            "an unpadded date",
            "POST",
            register,
            k,
            with(registration(), "registered_on", json!("2026-1-05")),
            BAD,
            "SchemaViolation",
        ),
        (
            "a day not in the calendar",
            "POST",
            register,
            k,
            with(registration(), "registered_on", json!("2026-02-30")),
            BAD,
            "SchemaViolation",
        ),
        (
            "an unknown member",
            "POST",
            register,
            k,
            with(registration(), "extra", json!(1)),
            BAD,
            "SchemaViolation",
        ),
        (
            "trailing data",
            "POST",
            register,
            k,
            [registration().to_string().as_bytes(), b" x"].concat(),
            BAD,
            "MalformedJson",
        ),
        (
            "a truncated body",
            "POST",
            register,
            k,
            b"{\"household_id\": ".to_vec(),
            BAD,
            "MalformedJson",
        ),
        (
            "an array for a body",
            "POST",
            register,
            k,
            b"[1, 2]".to_vec(),
            BAD,
            "SchemaViolation",
        ),
        (
            "an empty body",
            "POST",
            register,
            k,
            Vec::new(),
            BAD,
            "MalformedJson",
        ),
        (
            "bytes that are not UTF-8",
            "POST",
            register,
            k,
            text_with(registration(), "Lê Văn Tám", "L\u{0}")
                .into_iter()
                .map(|b| if b == 0 { 0xff } else { b })
                .collect(),
            BAD,
            "MalformedJson",
        ),
        (
            "nesting 40 deep",
            "POST",
            register,
            k,
            with(
                registration(),
                "extra",
                serde_json::from_str(&format!("{}1{}", "[".repeat(40), "]".repeat(40))).unwrap(),
            ),
            BAD,
            "MalformedJson",
        ),
        (
            "60 members besides the head",
            "POST",
            register,
            k,
            with(
                registration(),
                "personal.members",
                json!(vec![json!({"name": "Con", "relation": "child"}); 60]),
            ),
            BAD,
            "SchemaViolation",
        ),
        (
            "a phone with letters",
            "POST",
            register,
            k,
            with(registration(), "personal.phone", json!("09ab345678")),
            BAD,
            "SchemaViolation",
        ),
        (
            "no idempotency key",
            "POST",
            register,
            None,
            registration().to_string().into_bytes(),
            BAD,
            "MissingIdempotencyKey",
        ),
        (
            "an idempotency key with a space",
            "POST",
            register,
            Some("a b"),
            registration().to_string().into_bytes(),
            BAD,
            "InvalidIdempotencyKey",
        ),
        (
            // Staff ids hold ':', so a key with one could meet another caller's scoped key.
            "an idempotency key with a colon",
            "POST",
            register,
            Some("2:K"),
            registration().to_string().into_bytes(),
            BAD,
            "InvalidIdempotencyKey",
        ),
        (
            // '#' names the ledger's keys of a command's earlier events (K#1, ...).
            "an idempotency key with a hash sign",
            "POST",
            register,
            Some("K#1"),
            registration().to_string().into_bytes(),
            BAD,
            "InvalidIdempotencyKey",
        ),
        (
            "an idempotency key of 65 characters",
            "POST",
            register,
            Some(key_65.as_str()),
            registration().to_string().into_bytes(),
            BAD,
            "InvalidIdempotencyKey",
        ),
        (
            "an amount as a JSON number",
            "POST",
            repay,
            k,
            with(repayment(), "amount", json!(1000)),
            BAD,
            "SchemaViolation",
        ),
        (
            "an amount with a fraction",
            "POST",
            repay,
            k,
            with(repayment(), "amount", json!("1000.5")),
            BAD,
            "SchemaViolation",
        ),
        (
            "a negative amount",
            "POST",
            repay,
            k,
            with(repayment(), "amount", json!("-1000")),
            BAD,
            "SchemaViolation",
        ),
        (
            "an amount with a leading zero",
            "POST",
            repay,
            k,
            with(repayment(), "amount", json!("01000")),
            BAD,
            "SchemaViolation",
        ),
        (
            "an amount above 10^15",
            "POST",
            repay,
            k,
            with(repayment(), "amount", json!("1000000000000001")),
            BAD,
            "SchemaViolation",
        ),
        (
            "an amount with an exponent",
            "POST",
            repay,
            k,
            with(repayment(), "amount", json!("1e6")),
            BAD,
            "SchemaViolation",
        ),
        (
            "month 13",
            "POST",
            repay,
            k,
            with(repayment(), "on", json!("2026-13-01")),
            BAD,
            "SchemaViolation",
        ),
        (
            "a loan reference with a leading zero",
            "POST",
            "/v1/loans/01-L01/repayments",
            k,
            repayment().to_string().into_bytes(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a loan reference of a 1-digit province",
            "POST",
            "/v1/loans/1-L1/repayments",
            k,
            repayment().to_string().into_bytes(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a loan reference without a number",
            "POST",
            "/v1/loans/01-Lx/repayments",
            k,
            repayment().to_string().into_bytes(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a household path of 5-digit serial",
            "POST",
            "/v1/households/0100007-00001/classifications",
            k,
            classification().to_string().into_bytes(),
            BAD,
            "InvalidParameter",
        ),
        (
            "an indicator named twice",
            "POST",
            classify,
            k,
            with(
                classification(),
                "deprived",
                json!(["employment", "employment"]),
            ),
            BAD,
            "SchemaViolation",
        ),
        // Indicators belong to the standard in force (reference data, not the schema).
        (
            "an unknown indicator",
            "POST",
            classify,
            k,
            with(classification(), "deprived", json!(["wealth"])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "UnknownIndicator",
        ),
        (
            "a review year of 1999",
            "POST",
            classify,
            k,
            with(classification(), "review_year", json!(1999)),
            BAD,
            "SchemaViolation",
        ),
        (
            "a negative income",
            "POST",
            classify,
            k,
            with(classification(), "income_per_person", json!("-1")),
            BAD,
            "SchemaViolation",
        ),
        // A correction names a decision by its partition sequence, from 1 on.
        (
            "a correction of sequence 0",
            "POST",
            classify,
            k,
            with(classification(), "corrects", json!(0)),
            BAD,
            "SchemaViolation",
        ),
        (
            "a correction past any chain",
            "POST",
            classify,
            k,
            with(classification(), "corrects", json!(9_223_372_036_854_775_808u64)),
            BAD,
            "SchemaViolation",
        ),
        (
            "a bell in a reason",
            "POST",
            "/v1/loans",
            k,
            with(approval(), "reason", json!("ok\u{7}")),
            BAD,
            "MalformedJson",
        ),
        (
            "a reason of 501 characters",
            "POST",
            "/v1/loans",
            k,
            with(approval(), "reason", json!(long(501))),
            BAD,
            "SchemaViolation",
        ),
        // A reason or a decision's reference is what the audit trail reads: text of
        // spaces breaks the schema's `\S`, and text of only invisible characters reads
        // as nothing too, refused as the book refuses an empty one.
        (
            "a reason of spaces",
            "POST",
            "/v1/loans/01-L1/extensions",
            k,
            json!({"new_due": "2030-01-01", "on": "2026-05-01", "reason": "   "})
                .to_string()
                .into_bytes(),
            BAD,
            "SchemaViolation",
        ),
        (
            "a decision of an ideographic space",
            "POST",
            "/v1/loans/01-L1/freeze",
            k,
            json!({"decision": "\u{3000}", "on": "2026-05-01"})
                .to_string()
                .into_bytes(),
            BAD,
            "SchemaViolation",
        ),
        (
            "a loan's reason of a zero-width space",
            "POST",
            "/v1/loans",
            k,
            with(approval(), "reason", json!("\u{200B}")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "MissingReason",
        ),
        (
            "an extension's reason of a word joiner",
            "POST",
            "/v1/loans/01-L1/extensions",
            k,
            json!({"new_due": "2030-01-01", "on": "2026-05-01", "reason": " \u{2060} "})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "MissingReason",
        ),
        (
            "a cancellation's reason of a Hangul filler",
            "POST",
            "/v1/loans/01-L1/cancellation",
            k,
            json!({"on": "2026-05-01", "reason": "\u{3164}"})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "MissingReason",
        ),
        (
            "a reversal's reason of bidi controls",
            "POST",
            "/v1/loans/01-L1/reversals",
            k,
            json!({"sequence": 3, "on": "2026-05-01", "reason": "\u{202E}\u{200D}"})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "MissingReason",
        ),
        (
            "a freeze's decision of a word joiner and a zero-width space",
            "POST",
            "/v1/loans/01-L1/freeze",
            k,
            json!({"decision": "\u{2060}\u{200B}", "on": "2026-05-01"})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "MissingDisasterReference",
        ),
        (
            "a write-off's decision of a zero-width space",
            "POST",
            "/v1/loans/01-L1/write-off",
            k,
            json!({"decision": "\u{200B}", "on": "2026-05-01"})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "MissingDisasterReference",
        ),
        (
            "a member change's reason of a zero-width space",
            "POST",
            "/v1/households/0100007-000001/members",
            k,
            json!({
                "on": "2026-05-01",
                "reason": "\u{200B}",
                "personal": {
                    "head_name": "Đinh Thị Lụa",
                    "head_citizen_id": "001045000001",
                    "members": []
                }
            })
            .to_string()
            .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "MissingReason",
        ),
        (
            "an erasure's reference of a word joiner",
            "POST",
            "/v1/households/0100007-000001/erasure",
            k,
            json!({"reference": "\u{2060}", "on": "2026-05-01"})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "MissingReason",
        ),
        (
            "an empty savings group",
            "POST",
            "/v1/loans",
            k,
            with(approval(), "savings_group", json!("")),
            BAD,
            "SchemaViolation",
        ),
        (
            "a term as a string",
            "POST",
            "/v1/loans",
            k,
            with(approval(), "term_months", json!("36")),
            BAD,
            "SchemaViolation",
        ),
        (
            "an unknown entrusted association",
            "POST",
            "/v1/loans",
            k,
            with(approval(), "entrusted", json!("bank")),
            BAD,
            "SchemaViolation",
        ),
        (
            "a household path with 7 serial digits",
            "GET",
            "/v1/households/0100007-0000011",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "month 13 in a query",
            "GET",
            "/v1/households/0100007-000001?as_of=2026-13-01",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "an unpadded date in a query",
            "GET",
            "/v1/households/0100007-000001?as_of=2026-1-5",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a position that is not a number",
            "GET",
            "/v1/households/0100007-000001?after=abc",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "an unpadded last day of a reconciliation range",
            "GET",
            "/v1/partitions/01/reconciliation?from=2026-10-01&to=2026-10-1",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a reconciliation range in an unknown format",
            "GET",
            "/v1/partitions/01/reconciliation?from=2026-10-01&to=2026-10-31&format=xlsx",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a reconciliation range of a 3-digit partition",
            "GET",
            "/v1/partitions/001/reconciliation?from=2026-10-01&to=2026-10-31",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a bundle of a household with 7 serial digits",
            "GET",
            "/v1/audit/partitions/01/households/0100007-0000011/bundle",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a page of anomalies that is not a number",
            "GET",
            "/v1/audit/partitions/01/anomalies?page=x",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "anomalies as of month 13",
            "GET",
            "/v1/audit/partitions/01/anomalies?as_of=2026-13-01",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a negative page of recomputed decisions",
            "GET",
            "/v1/audit/partitions/01/recompute?page=-1",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "timeouts as of month 13",
            "POST",
            "/v1/partitions/01/timeouts",
            k,
            json!({"as_of": "2026-13-01"}).to_string().into_bytes(),
            BAD,
            "SchemaViolation",
        ),
        (
            "timeouts of a 1-digit partition",
            "POST",
            "/v1/partitions/1/timeouts",
            k,
            json!({"as_of": "2026-12-01"}).to_string().into_bytes(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a province's run of month 13",
            "POST",
            "/v1/partitions/01/payment-runs",
            k,
            json!({"period": "2026-13", "on": "2026-12-05"})
                .to_string()
                .into_bytes(),
            BAD,
            "SchemaViolation",
        ),
        (
            "a province's run of a 1-digit partition",
            "POST",
            "/v1/partitions/1/payment-runs",
            k,
            json!({"period": "2026-12", "on": "2026-12-05"})
                .to_string()
                .into_bytes(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a job id in upper case",
            "GET",
            "/v1/jobs/0123456789ABCDEF0123456789ABCDEF",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a job id of 33 digits",
            "GET",
            "/v1/jobs/0123456789abcdef0123456789abcdef0",
            None,
            Vec::new(),
            BAD,
            "InvalidParameter",
        ),
        (
            "a search by a household id with 7 serial digits",
            "POST",
            "/v1/households/search",
            None,
            json!({"household_id": "0100007-0000011"})
                .to_string()
                .into_bytes(),
            BAD,
            "SchemaViolation",
        ),
        (
            "a search by both a household id and a citizen id",
            "POST",
            "/v1/households/search",
            None,
            json!({"household_id": "0100007-000001", "citizen_id": "001090000001"})
                .to_string()
                .into_bytes(),
            BAD,
            "SchemaViolation",
        ),
    ];
    let gateway_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a post that is not JSON",
            b"{\"instruction_id\": ".to_vec(),
            "MalformedJson",
        ),
        (
            "a post naming the amount twice",
            text_with(
                gateway_post(),
                "\"amount\":\"500000\"",
                "\"amount\":\"1\",\"amount\":\"500000\"",
            ),
            "MalformedJson",
        ),
        (
            "a control character in the transaction id",
            with(gateway_post(), "gateway_txn_id", json!("VCB\u{1b}1")),
            "MalformedJson",
        ),
        (
            "a lone surrogate in the reason",
            text_with(
                gateway_post(),
                "\"outcome\"",
                "\"reason\":\"\\udc00\",\"outcome\"",
            ),
            "MalformedJson",
        ),
        (
            "an amount as a number",
            with(gateway_post(), "amount", json!(500000)),
            "SchemaViolation",
        ),
        (
            "an amount with a fraction",
            with(gateway_post(), "amount", json!("500000.0")),
            "SchemaViolation",
        ),
        (
            "an unknown outcome",
            with(gateway_post(), "outcome", json!("paid")),
            "SchemaViolation",
        ),
        (
            "an instruction id with a space",
            with(gateway_post(), "instruction_id", json!("01/pay 1")),
            "SchemaViolation",
        ),
        (
            "an unknown member",
            with(gateway_post(), "note", json!("x")),
            "SchemaViolation",
        ),
        (
            "a reason of 513 characters",
            with(with_reason(), "reason", json!("x".repeat(513))),
            "SchemaViolation",
        ),
    ];
    let actor = [
        "--as",
        "staff:m",
        "--role",
        "branch-manager",
        "--unit",
        "01",
    ];
    let alloc = |flag: &'static str, value: &'static str| {
        let mut args = vec![
            "payments",
            "allocate",
            "--commune",
            "0100007",
            "--period",
            "2027-01",
            "--amount",
            "5000000",
            "--on",
            "2027-01-02",
        ];
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = value;
        args
    };
    // A household registration with the head's particulars, and `extra` after them.
    let register = |extra: &[&'static str]| -> Vec<&'static str> {
        let head = [
            "household",
            "register",
            "--id",
            "0100007-000099",
            "--area",
            "rural",
            "--on",
            "2026-01-05",
            "--head-name",
            "Lê Văn Tám",
            "--head-citizen-id",
            "001085099999",
        ];
        [&head[..], extra].concat()
    };
    let cli_cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "a phone with letters",
            register(&["--phone", "09ab345678"]),
            "phone number",
        ),
        (
            "an account number with a space",
            register(&["--account", "0071 000123456"]),
            "account number",
        ),
        (
            "a member without a name",
            register(&["--member", ":001190000002:"]),
            "name",
        ),
        (
            "a member with a citizen id of 11 digits",
            register(&["--member", "Lê Thị Bình:00119000000:spouse"]),
            "citizen id",
        ),
        (
            "a member added with an empty relation",
            vec![
                "household",
                "change-members",
                "--id",
                "0100007-000001",
                "--on",
                "2026-03-01",
                "--reason",
                "birth",
                "--add-member",
                "Lê Thị Bình:001190000002:",
            ],
            "relation",
        ),
        ("a 5-digit commune", alloc("--commune", "01000"), "commune"),
        ("month 13", alloc("--period", "2027-13"), "month"),
        ("5.5 dong", alloc("--amount", "5.5"), "amount"),
        (
            "a negative amount",
            vec![
                "payments",
                "allocate",
                "--commune",
                "0100007",
                "--period",
                "2027-01",
                "--amount=-5",
                "--on",
                "2027-01-02",
            ],
            "amount",
        ),
        ("an unpadded date", alloc("--on", "2027-1-02"), "date"),
        (
            "a day not in the calendar",
            alloc("--on", "2027-02-30"),
            "date",
        ),
        (
            "a 1-digit partition",
            vec![
                "payments",
                "run",
                "--partition",
                "1",
                "--period",
                "2027-01",
                "--on",
                "2027-01-05",
            ],
            "partition",
        ),
        (
            "a control character in a name",
            vec![
                "household",
                "register",
                "--id",
                "0100007-000003",
                "--area",
                "rural",
                "--on",
                "2026-01-05",
                "--head-name",
                "An\u{1}",
                "--head-citizen-id",
                "001190000201",
            ],
            "name",
        ),
        (
            "a citizen id of 11 digits",
            vec![
                "household",
                "register",
                "--id",
                "0100007-000003",
                "--area",
                "rural",
                "--on",
                "2026-01-05",
                "--head-name",
                "An",
                "--head-citizen-id",
                "00119000020",
            ],
            "citizen id",
        ),
        (
            "a household of 5-digit serial",
            vec!["household", "show", "0100007-00001"],
            "household",
        ),
        (
            "a loan reference with a leading zero",
            vec![
                "loans",
                "repay",
                "--loan",
                "01-L01",
                "--amount",
                "1000",
                "--on",
                "2026-05-01",
            ],
            "loan reference",
        ),
        (
            "a sequence to reverse past any the chain can reach",
            vec![
                "loans",
                "reverse",
                "--loan",
                "01-L1",
                "--sequence",
                "9223372036854775850",
                "--on",
                "2026-05-01",
                "--reason",
                "keyed twice",
            ],
            "sequence",
        ),
        (
            "a decision to correct at sequence 0",
            vec![
                "review",
                "classify",
                "--household",
                "0100007-000001",
                "--income",
                "4000000",
                "--area",
                "rural",
                "--year",
                "2026",
                "--on",
                "2026-01-12",
                "--corrects",
                "0",
            ],
            "sequence",
        ),
        (
            "a repayment of 0",
            vec![
                "loans",
                "repay",
                "--loan",
                "01-L1",
                "--amount",
                "0",
                "--on",
                "2026-05-01",
            ],
            "amount",
        ),
        (
            "an empty reason",
            vec![
                "loans",
                "extend",
                "--loan",
                "01-L1",
                "--new-due",
                "2030-01-01",
                "--on",
                "2026-05-01",
                "--reason",
                "",
            ],
            "text",
        ),
        (
            "a reason of a zero-width space",
            vec![
                "loans",
                "extend",
                "--loan",
                "01-L1",
                "--new-due",
                "2030-01-01",
                "--on",
                "2026-05-01",
                "--reason",
                "\u{200B}",
            ],
            "text",
        ),
        (
            "a disaster decision of spaces and a word joiner",
            vec![
                "loans",
                "freeze",
                "--loan",
                "01-L1",
                "--decision",
                " \u{2060} ",
                "--on",
                "2026-05-01",
            ],
            "text",
        ),
        (
            "a gateway with a space",
            vec![
                "payments",
                "grant",
                "--household",
                "0100007-000001",
                "--member",
                "m1",
                "--category",
                "ELDERLY_80_PLUS_NO_PENSION",
                "--channel",
                "bank",
                "--gateway",
                "v cb",
                "--from",
                "2027-01",
                "--on",
                "2027-01-02",
            ],
            "gateway",
        ),
        (
            "an idempotency key with a space",
            vec![
                "--idempotency-key",
                "a b",
                "note",
                "--partition",
                "01",
                "--text",
                "x",
            ],
            "idempotency key",
        ),
        (
            "a staff id with a space",
            vec![
                "--as",
                "staff x",
                "loans",
                "repay",
                "--loan",
                "01-L1",
                "--amount",
                "1000",
                "--on",
                "2026-05-01",
            ],
            "staff id",
        ),
        (
            "a unit of 4 digits",
            vec![
                "--unit",
                "0100",
                "loans",
                "repay",
                "--loan",
                "01-L1",
                "--amount",
                "1000",
                "--on",
                "2026-05-01",
            ],
            "unit",
        ),
        (
            "a partition to verify of 1 digit",
            vec!["audit", "verify", "--partition", "1"],
            "partition",
        ),
        (
            "a partition listed twice",
            vec!["trial-balance", "--partitions", "01,01"],
            "partition",
        ),
        (
            "a bell in a note",
            vec!["note", "--partition", "01", "--text", "ring\u{7}"],
            "text",
        ),
        (
            "a household to export with a trailing letter",
            vec![
                "audit",
                "export",
                "--household",
                "0100007-000001x",
                "--out",
                "b",
            ],
            "household",
        ),
        (
            "a subject with a space",
            vec!["audit", "trail", "--subject", "household 1"],
            "reference",
        ),
    ];

    let mut cases = 0;
    eprintln!(
        "{} HTTP, {} gateway post and {} CLI cases",
        http_cases.len(),
        gateway_cases.len(),
        cli_cases.len()
    );
    for (what, method, path, key, body, status, kind) in http_cases {
        let (got, answer) = l.send(method, path, key, body).await;
        assert_eq!(
            (got, answer["error"].as_str().unwrap_or_default()),
            (status, kind),
            "HTTP, {what}: {answer}"
        );
        assert_eq!(
            event_count(&l.config).await,
            before,
            "HTTP, {what}: the log grew"
        );
        cases += 1;
    }
    for (what, body, kind) in gateway_cases {
        let (got, answer) = l.gateway_send(body).await;
        assert_eq!(
            (got, answer["error"].as_str().unwrap_or_default()),
            (BAD, kind),
            "gateway post, {what}: {answer}"
        );
        assert_eq!(
            event_count(&l.config).await,
            before,
            "gateway post, {what}: the log grew"
        );
        cases += 1;
    }
    for (what, args, kind) in cli_cases {
        let args: Vec<&str> = if args[0].starts_with("--") {
            args
        } else {
            actor.iter().copied().chain(args).collect()
        };
        // As a process of this ledger, with its secrets: an argument that got through
        // would seal and append.
        let (code, answer) = l.cli_with_secrets(&args);
        assert_eq!(code, Some(2), "CLI, {what}: {answer}");
        assert_eq!(
            (answer["error"].as_str(), answer["kind"].as_str()),
            (Some("InvalidArgument"), Some(kind)),
            "CLI, {what}: {answer}"
        );
        assert!(
            answer["expected"].as_str().is_some_and(|e| !e.is_empty()),
            "CLI, {what}: {answer}"
        );
        assert_eq!(
            event_count(&l.config).await,
            before,
            "CLI, {what}: the log grew"
        );
        cases += 1;
    }
    assert!(cases >= 60, "{cases} cases");
    eprintln!("{cases} hostile inputs refused, the log unchanged");
}

fn with_reason() -> Value {
    let mut post = gateway_post();
    post["outcome"] = json!("failed");
    post["reason"] = json!("account closed");
    post
}

/// Well-formed names of things the log has never seen: every report and audit says so
/// (404, or exit 1 with `not_found`), where an empty answer would read as "nothing
/// wrong with it".
#[tokio::test]
async fn reports_and_audits_name_what_the_log_has_never_seen() {
    let l = ledger().await;
    for (path, what) in [
        ("/v1/households/0100007-999999", "HouseholdNotRegistered"),
        ("/v1/communes/0100099/portfolio", "NotFound"),
        ("/v1/partitions/99/trial-balance", "NotFound"),
        (
            "/v1/partitions/99/reconciliation/2026-12-05?as_of=2026-12-31",
            "NotFound",
        ),
        (
            "/v1/partitions/99/reconciliation?from=2026-12-01&to=2026-12-31&as_of=2026-12-31",
            "NotFound",
        ),
        ("/v1/audit/partitions/99/anomalies", "NotFound"),
        ("/v1/audit/partitions/99/recompute", "NotFound"),
        (
            "/v1/audit/partitions/99/households/9900001-000001/bundle",
            "NotFound",
        ),
        ("/v1/jobs/0123456789abcdef0123456789abcdef", "NotFound"),
    ] {
        let response = l
            .client
            .get(format!("{}{path}", l.base))
            .bearer_auth(&l.auditor)
            .send()
            .await
            .unwrap();
        let (status, body) = schema_checked(&l.schemas, response, "error.response").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::NOT_FOUND, Some(what)),
            "{path}: {body}"
        );
    }
    // What exists answers.
    for path in [
        "/v1/communes/0100007/portfolio",
        "/v1/partitions/01/trial-balance",
    ] {
        let response = l
            .client
            .get(format!("{}{path}", l.base))
            .bearer_auth(&l.auditor)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }

    let actor = ["--as", "staff:a", "--role", "auditor", "--unit", ""];
    for (args, what, value) in [
        (
            vec!["audit", "verify", "--partition", "99"],
            "partition",
            "99",
        ),
        (
            vec!["audit", "checkpoint", "--partition", "99"],
            "partition",
            "99",
        ),
        (
            vec!["audit", "prove", "--partition", "99", "--seq", "1"],
            "partition",
            "99",
        ),
        (
            vec![
                "audit",
                "consistency",
                "--partition",
                "99",
                "--from",
                "1",
                "--to",
                "2",
            ],
            "partition",
            "99",
        ),
        // (recompute, trail, portfolio, trial balance and household show: tests/cli.rs)
        (
            vec![
                "payments",
                "reconcile",
                "--gateway",
                "nosuch",
                "--as-of",
                "2026-12-31",
            ],
            "gateway",
            "nosuch",
        ),
    ] {
        let args: Vec<&str> = actor.iter().copied().chain(args).collect();
        let (code, answer) = l.cli_with_secrets(&args);
        assert_eq!(code, Some(1), "{args:?}: {answer}");
        assert_eq!(
            (
                answer["error"].as_str(),
                answer["what"].as_str(),
                answer["value"].as_str()
            ),
            (Some("not_found"), Some(what), Some(value)),
            "{args:?}"
        );
    }
}
