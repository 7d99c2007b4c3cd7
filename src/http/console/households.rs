//! Console pages for households: find one, its page (standing, loans with their
//! schedule, assistance per month, paged history with each event's hash), register,
//! classify. Reads go through `http::households::read_household`, writes through
//! `Service` under the form's idempotency key.

use axum::Router;
use axum::extract::State;

use super::Query;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use crate::access::{self, Operation};
use crate::domain::eligibility::{Area, ClassificationInputs};
use crate::domain::ids::HouseholdId;
use crate::personal::{Member, PersonalData};

use super::Path;
use super::i18n::{self, Lang, T};
use super::session::Session;
use super::{
    Fields, FormBody, Problems, begin_write, error_in, form_key, fresh_key, general_problem,
    household_form_page, may, page, posted_household, protocol_fields, receipt_block, select_field,
    text_field,
};
use crate::http::households::{Write, read_household};
use crate::http::{Api, ApiError};

/// History lines on one page of a household: a screen's worth; older ones are a click
/// away, and a page reads O(skip + this) trail keys.
pub const HISTORY_PAGE_LINES: usize = 25;
/// Member rows on the register form besides the head (more members: change them after).
pub const MEMBER_ROWS: usize = 3;
/// The indicators of the multidimensional standards (data/standards), offered as boxes;
/// the book checks those ticked against the standard in force.
const INDICATORS: [&str; 12] = [
    "employment",
    "dependants",
    "nutrition",
    "health_insurance",
    "adult_education",
    "children_school_attendance",
    "housing_quality",
    "housing_area_per_person",
    "drinking_water",
    "hygienic_latrine",
    "telecom_use",
    "information_access_means",
];

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/console/households", get(find).post(search_citizen))
        .route("/console/households/new", get(register_page).post(register))
        .route("/console/households/{id}", get(show))
        .route(
            "/console/households/{id}/classify",
            get(classify_page).post(classify),
        )
}

/// The search forms: by household id (a GET: ids are not personal), by citizen id (a
/// POST: a citizen id never goes in a URL or a log).
pub fn search_form(session: &Session, id: &str, problems: &Problems) -> Markup {
    let lang = session.lang;
    html! {
        form.card #find-household method="get" action="/console/households" {
            (text_field(lang.t(T::HouseholdId), "id", id, problems))
            button type="submit" { (lang.t(T::Find)) }
        }
        @if may(&session.caller, Operation::ChangeHousehold) {
            form.card #find-citizen method="post" action="/console/households" {
                (protocol_fields(session, &fresh_key()))
                (text_field(lang.t(T::CitizenId), "citizen_id", "", problems))
                button type="submit" { (lang.t(T::Find)) }
            }
        }
        @if may(&session.caller, Operation::RegisterHousehold) {
            p { a #register-link href="/console/households/new" { (lang.t(T::RegisterHousehold)) } }
        }
    }
}

#[derive(Deserialize)]
struct FindQuery {
    id: Option<String>,
}

/// `GET /console/households[?id=]`: the search page, or straight to the household.
async fn find(session: Session, Query(query): Query<FindQuery>) -> Response {
    let lang = session.lang;
    let mut problems = Problems::default();
    let id = query.id.unwrap_or_default();
    if !id.trim().is_empty() {
        match crate::input::household(id.trim()) {
            Ok(h) => return Redirect::to(&format!("/console/households/{h}")).into_response(),
            Err(e) => problems.field("id", e),
        }
    }
    let body = search_form(&session, &id, &problems);
    page(lang, lang.t(T::FindHousehold), Some(&session), body).into_response()
}

/// `POST /console/households`: the household of a citizen id, through the blind index.
async fn search_citizen(
    State(api): State<Api>,
    session: Session,
    FormBody(fields): FormBody,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&fields) {
        return refused;
    }
    let lang = session.lang;
    let mut problems = Problems::default();
    match crate::input::citizen_id(fields.get("citizen_id")) {
        Err(e) => problems.field("citizen_id", e),
        Ok(citizen) => match api
            .service()
            .household_of_citizen(&session.caller, &citizen)
            .await
        {
            Ok(Some(h)) => {
                return Redirect::to(&format!("/console/households/{h}")).into_response();
            }
            Ok(None) => problems.field("citizen_id", lang.t(T::NotFound)),
            Err(e) => problems.general = Some(super::plain_words(lang, &ApiError::from(e))),
        },
    }
    let body = html! { (general_problem(&problems)) (search_form(&session, "", &problems)) };
    page(lang, lang.t(T::FindHousehold), Some(&session), body).into_response()
}

#[derive(Deserialize)]
struct ShowQuery {
    /// History page, from 0. Any number a query can carry is answered: the arithmetic on
    /// it saturates or is checked, never overflows (a page past the last is an empty page
    /// with no next one).
    #[serde(default)]
    page: usize,
    /// A receipt's stream sequence: show the page once it includes that write.
    after: Option<u64>,
}

/// `GET /console/households/{id}`: the household page.
async fn show(
    State(api): State<Api>,
    session: Session,
    Path(id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Response {
    match household_page(&api, &session, &id, &query).await {
        Ok(r) => r,
        Err(e) => error_in(&session, &e),
    }
}

async fn household_page(
    api: &Api,
    session: &Session,
    id: &str,
    query: &ShowQuery,
) -> Result<Response, ApiError> {
    let lang = session.lang;
    let h = crate::input::household(id)?;
    // Priced on the service's today, as the JSON route prices it.
    let read = read_household(
        api,
        &session.caller,
        &h,
        session.today,
        query.after,
        Some((query.page, HISTORY_PAGE_LINES)),
    )
    .await?;
    let crate::projection::HistoryPage {
        lines: history,
        more,
    } = read.history.expect("asked for");
    let v = &read.view;
    // Names in clear only for the staff who keep this household's registry (they typed
    // them): the role and the unit, as a change of the household is authorized. The role
    // alone would show them to the head office, which reads every household but changes
    // none, and to which the API shows no personal data either. The sealed data are
    // opened through the vault, never read from the log in clear. A household that moved
    // away is kept by the registry of where it lives now (its new id): the unit it left
    // no longer sees its people.
    let keeps_registry = access::authorize(
        &session.caller,
        Operation::ChangeHousehold,
        h.commune().as_str(),
    )
    .is_ok();
    let lives_here = v.residence != "moved_out";
    let personal = if keeps_registry && lives_here && !v.personal_data_erased {
        api.service().personal(&h).await.ok()
    } else {
        None
    };
    let body = html! {
        table #household {
            tr { th { (lang.t(T::HouseholdId)) } td #household-id { (v.household_id) } }
            tr { th { (lang.t(T::Commune)) } td { (v.commune) } }
            tr { th { (lang.t(T::Area)) } td { (v.area) } }
            tr { th { (lang.t(T::Members)) } td { (v.members) } }
            @if let Some(p) = &personal {
                tr { th { (lang.t(T::HeadName)) } td #head-name { (p.head_name) } }
                tr { th { (lang.t(T::Member)) } td #members {
                    @for m in &p.members { (m.name) " (" (m.relation) ")" br; }
                } }
            }
            tr { th { (lang.t(T::RegisteredOn)) } td { (i18n::date_str(&v.since)) } }
        }
        h2 { (lang.t(T::Standing)) }
        @match &v.standing {
            None => p #standing { (lang.t(T::NoStanding)) },
            Some(s) => table #standing {
                tr { th { (lang.t(T::Class)) } td #standing-class { (s.class) } }
                tr { th { (lang.t(T::Status)) } td { (s.status) } }
                tr { th { (lang.t(T::ValidFrom)) } td { (i18n::date_str(&s.valid_from)) } }
                tr { th { (lang.t(T::ValidTo)) } td { (i18n::date_str(&s.valid_to)) } }
                tr { th { (lang.t(T::Standard)) } td { (s.standard_id) } }
                tr { th { (lang.t(T::DecidedOn)) } td { (i18n::date_str(&s.decided_on)) } }
            },
        }
        p {
            @if may(&session.caller, Operation::Classify) {
                a #classify-link href={ "/console/households/" (h) "/classify" } { (lang.t(T::Classify)) } " "
            }
            @if may(&session.caller, Operation::ApproveLoan) {
                a #approve-link href={ "/console/households/" (h) "/loans/new" } { (lang.t(T::ApproveLoan)) } " "
            }
            @if may(&session.caller, Operation::ManagePayments) {
                a #grant-link href={ "/console/households/" (h) "/entitlements/new" } { (lang.t(T::GrantEntitlement)) }
            }
        }
        h2 { (lang.t(T::Loans)) }
        @if read.loans.is_empty() { p { (lang.t(T::Nothing)) } }
        @for (line, loan) in &read.loans {
            h3 { (lang.t(T::Loan)) " " span.loan-ref { (line.loan) } }
            table.loan data-loan=(line.loan) {
                tr { th { (lang.t(T::Programme)) } td { (line.programme) } }
                tr { th { (lang.t(T::Status)) } td { (line.status) } }
                tr { th { (lang.t(T::Approved)) } td.num { (i18n::money(line.approved)) } }
                tr { th { (lang.t(T::Disbursed)) } td.num.disbursed { (i18n::money(line.disbursed)) } }
                tr { th { (lang.t(T::Outstanding)) } td.num.outstanding { (i18n::money(line.principal_outstanding)) } }
                tr { th { (lang.t(T::InterestToDate)) } td.num { (i18n::money(line.interest_to_date)) } }
                tr { th { (lang.t(T::Overdue)) } td.num { (i18n::money(line.overdue_principal + line.overdue_interest_to_date)) } }
                tr { th { (lang.t(T::Due)) } td { (line.due.map(i18n::date).unwrap_or_default()) } }
            }
            p {
                @if may(&session.caller, Operation::Disburse) {
                    a.disburse-link href={ "/console/loans/" (line.loan) "/disburse?household=" (h) } { (lang.t(T::Disburse)) } " "
                }
                @if may(&session.caller, Operation::Repay) {
                    a.repay-link href={ "/console/loans/" (line.loan) "/repay?household=" (h) } { (lang.t(T::Repay)) }
                }
            }
            @if let Ok(schedule) = loan.schedule() {
                @if !schedule.is_empty() {
                    details.schedule {
                        summary { (lang.t(T::Schedule)) " (" (schedule.len()) ")" }
                        table {
                            tr { th { (lang.t(T::Due)) } th.num { (lang.t(T::Instalment)) } th.num { (lang.t(T::Cumulative)) } }
                            @for (d, amount, cumulative) in &schedule {
                                tr { td { (i18n::date(*d)) } td.num { (i18n::money(*amount)) } td.num { (i18n::money(*cumulative)) } }
                            }
                        }
                    }
                }
            }
        }
        h2 { (lang.t(T::Assistance)) }
        @if read.assistance.is_empty() { p { (lang.t(T::Nothing)) } } @else {
            table #assistance {
                tr { th { (lang.t(T::Month)) } th { (lang.t(T::Channel)) } th.num { (lang.t(T::Received)) } th.num { (lang.t(T::Returned)) } th.num { (lang.t(T::Net)) } }
                @for a in &read.assistance {
                    tr { td { (a.month) } td { (a.channel) } td.num { (i18n::money_str(&a.settled)) } td.num { (i18n::money_str(&a.returned)) } td.num { (i18n::money_str(&a.net)) } }
                }
            }
        }
        h2 { (lang.t(T::History)) " — " (lang.t(T::Page)) " " (query.page.saturating_add(1)) }
        table #history {
            tr { th { (lang.t(T::Sequence)) } th { (lang.t(T::Event)) } th { (lang.t(T::Actor)) } th { (lang.t(T::On)) } th { (lang.t(T::Detail)) } th { (lang.t(T::Hash)) } }
            @for e in &history {
                tr.event {
                    td { (e.partition) "/" (e.sequence) }
                    td { (e.event_type) }
                    td { (e.actor) }
                    td { (i18n::timestamp(e.recorded_at_unix_ms)) }
                    td { (e.detail) }
                    td.hash { (e.hash) }
                }
            }
        }
        nav.pages {
            @if let Some(previous) = query.page.checked_sub(1) {
                a #history-previous href={ "/console/households/" (h) "?page=" (previous) } { (lang.t(T::Previous)) }
            }
            @if let (true, Some(next)) = (more, query.page.checked_add(1)) {
                a #history-next href={ "/console/households/" (h) "?page=" (next) } { (lang.t(T::Next)) }
            }
        }
    };
    Ok(page(
        lang,
        &format!("{} {}", lang.t(T::Household), h),
        Some(session),
        body,
    )
    .into_response())
}

fn area_options(lang: Lang) -> [(&'static str, &'static str); 2] {
    [("rural", lang.t(T::Rural)), ("urban", lang.t(T::Urban))]
}

fn register_form(session: &Session, key: &str, f: &Fields, problems: &Problems) -> Markup {
    let lang = session.lang;
    let on = f.day_or_today("registered_on", session.today);
    html! {
        (general_problem(problems))
        form.card #register method="post" action="/console/households/new" {
            (protocol_fields(session, key))
            (text_field(lang.t(T::HouseholdId), "household_id", f.get("household_id"), problems))
            (select_field(lang.t(T::Area), "area", &area_options(lang), f.get("area"), problems))
            (text_field(lang.t(T::RegisteredOn), "registered_on", &on, problems))
            (text_field(lang.t(T::HeadName), "head_name", f.get("head_name"), problems))
            (text_field(lang.t(T::HeadCitizenId), "head_citizen_id", f.get("head_citizen_id"), problems))
            (text_field(lang.t(T::Phone), "phone", f.get("phone"), problems))
            @for i in 1..=MEMBER_ROWS {
                fieldset {
                    legend { (lang.t(T::Member)) " " (i) }
                    (text_field(lang.t(T::Name), &format!("member{i}_name"), f.get(&format!("member{i}_name")), problems))
                    (text_field(lang.t(T::CitizenId), &format!("member{i}_citizen_id"), f.get(&format!("member{i}_citizen_id")), problems))
                    (text_field(lang.t(T::Relation), &format!("member{i}_relation"), f.get(&format!("member{i}_relation")), problems))
                }
            }
            button #submit type="submit" { (lang.t(T::Submit)) }
        }
    }
}

/// `GET /console/households/new`.
async fn register_page(session: Session) -> Response {
    if let Some(refused) = super::refuse_role(&session, Operation::RegisterHousehold) {
        return refused;
    }
    let lang = session.lang;
    let body = register_form(
        &session,
        &fresh_key(),
        &Fields::empty(),
        &Problems::default(),
    );
    page(lang, lang.t(T::RegisterHousehold), Some(&session), body).into_response()
}

/// What the register form asks: the household, where it lives, since when, and its
/// people.
struct Registration {
    household: HouseholdId,
    area: Area,
    on: chrono::NaiveDate,
    data: PersonalData,
}

/// The register form's values, each read by its kind's parser, the one that holds the
/// API's rule for the same field (register-household.request.json); the first refusal
/// of each field is kept beside it.
fn read_register(lang: Lang, f: &Fields, problems: &mut Problems) -> Option<Registration> {
    let h = crate::input::household(f.get("household_id"))
        .map_err(|e| problems.field("household_id", e))
        .ok();
    let area = crate::input::area(f.get("area"))
        .map_err(|e| problems.field("area", e))
        .ok();
    let on = i18n::parse_date(f.get("registered_on"))
        .map_err(|e| problems.field("registered_on", e))
        .ok();
    let head_name = crate::input::name(f.get("head_name"))
        .map_err(|e| problems.field("head_name", e))
        .ok();
    let head_id = crate::input::citizen_id(f.get("head_citizen_id"))
        .map_err(|e| problems.field("head_citizen_id", e))
        .ok();
    let phone = match f.get("phone") {
        "" => None,
        p => crate::input::phone(p)
            .map_err(|e| problems.field("phone", e))
            .ok(),
    };
    let mut members = Vec::new();
    for i in 1..=MEMBER_ROWS {
        const NAMES: [&str; MEMBER_ROWS] = ["member1_name", "member2_name", "member3_name"];
        const IDS: [&str; MEMBER_ROWS] = [
            "member1_citizen_id",
            "member2_citizen_id",
            "member3_citizen_id",
        ];
        const RELATIONS: [&str; MEMBER_ROWS] =
            ["member1_relation", "member2_relation", "member3_relation"];
        let (name, id, relation) = (NAMES[i - 1], IDS[i - 1], RELATIONS[i - 1]);
        let blank = |field: &str| f.get(field).trim().is_empty();
        // Only a row left wholly blank is no member. A row with an id or a relation but
        // no name is a member the clerk meant to record: dropped, the household would be
        // registered without them and without their citizen claimed.
        if blank(name) && blank(id) && blank(relation) {
            continue;
        }
        let member_name = if blank(name) {
            problems.field(name, lang.t(T::MemberNameMissing));
            None
        } else {
            crate::input::name(f.get(name))
                .map_err(|e| problems.field(name, e))
                .ok()
        };
        let citizen = match f.get(id) {
            "" => Some(None),
            c => crate::input::citizen_id(c)
                .map(|c| Some(c.as_str().to_owned()))
                .map_err(|e| problems.field(id, e))
                .ok(),
        };
        let rel = crate::input::relation(f.get(relation))
            .map_err(|e| problems.field(relation, e))
            .ok();
        if let (Some(name), Some(citizen_id), Some(relation)) = (member_name, citizen, rel) {
            members.push(Member {
                name,
                citizen_id,
                relation,
            });
        }
    }
    let (household, area, on, head_name, head_id) = (h?, area?, on?, head_name?, head_id?);
    if !problems.is_empty() {
        return None;
    }
    Some(Registration {
        household,
        area,
        on,
        data: PersonalData {
            head_name,
            head_citizen_id: head_id.as_str().to_owned(),
            phone,
            account_number: None,
            members,
        },
    })
}

/// `POST /console/households/new`.
async fn register(State(api): State<Api>, session: Session, FormBody(f): FormBody) -> Response {
    if let Some(refused) = session.csrf_refusal(&f) {
        return refused;
    }
    let lang = session.lang;
    let title = lang.t(T::RegisterHousehold);
    let mut problems = Problems::default();
    let key = f.get(super::IDEMPOTENCY_FIELD).to_owned();
    let again = |problems: &Problems, status| {
        let body = register_form(&session, &key, &f, problems);
        (status, page(lang, title, Some(&session), body)).into_response()
    };
    let Some(Registration {
        household: h,
        area,
        on,
        data,
    }) = read_register(lang, &f, &mut problems)
    else {
        return again(&problems, axum::http::StatusCode::BAD_REQUEST);
    };
    let result = async {
        let (key, fingerprint) = form_key(&f, "POST /console/households/new")?;
        let caller = session.caller.clone();
        let write = Write::new(&caller, &key, fingerprint);
        let (service, h) = (api.service().clone(), h.clone());
        super::write_in_time(&session, async move {
            service
                .register(&write.request(&caller), &h, area, on, &data)
                .await
        })
        .await
    }
    .await;
    match result {
        Ok(receipt) => {
            let body = html! {
                (receipt_block(lang, &receipt))
                p { a #household-link href={ "/console/households/" (h) "?after=" (receipt.stream_sequence) } { (lang.t(T::Household)) " " (h) } }
            };
            page(lang, title, Some(&session), body).into_response()
        }
        // Not allowed at all: no form to correct, only the refusal.
        Err(e @ ApiError::Denied(_)) => error_in(&session, &e),
        Err(e) => again(&Problems::refusal(lang, &e), e.status()),
    }
}

fn classify_form(
    session: &Session,
    h: &HouseholdId,
    key: &str,
    f: &Fields,
    problems: &Problems,
) -> Markup {
    let lang = session.lang;
    let year = match f.get("review_year") {
        "" => session.today.format("%Y").to_string(),
        y => y.to_owned(),
    };
    let on = f.day_or_today("decided_on", session.today);
    let ticked: Vec<&str> = f.all("deprived").collect();
    html! {
        (general_problem(problems))
        form.card #classify method="post" action={ "/console/households/" (h) "/classify" } {
            (protocol_fields(session, key))
            (text_field(lang.t(T::IncomePerPerson), "income_per_person", f.get("income_per_person"), problems))
            (select_field(lang.t(T::Area), "area", &area_options(lang), f.get("area"), problems))
            fieldset {
                legend { (lang.t(T::Deprived)) }
                @for indicator in INDICATORS {
                    label { input type="checkbox" name="deprived" value=(indicator) checked[ticked.contains(&indicator)]; " " (indicator) }
                }
                @if let Some(m) = problems.of("deprived") { span.err data-field="deprived" { (m) } }
            }
            (text_field(lang.t(T::ReviewYear), "review_year", &year, problems))
            (text_field(lang.t(T::DecidedOn), "decided_on", &on, problems))
            (text_field(lang.t(T::Corrects), "corrects", f.get("corrects"), problems))
            button #submit type="submit" { (lang.t(T::Submit)) }
        }
    }
}

/// `GET /console/households/{id}/classify`.
async fn classify_page(session: Session, Path(id): Path<String>) -> Response {
    let title = session.lang.t(T::Classify);
    household_form_page(&session, &id, Operation::Classify, title, |h, key| {
        classify_form(&session, h, key, &Fields::empty(), &Problems::default())
    })
}

/// `POST /console/households/{id}/classify`: the answer shows the class the book decided
/// and the standard it applied, read back from the household's view.
async fn classify(
    State(api): State<Api>,
    session: Session,
    Path(id): Path<String>,
    FormBody(f): FormBody,
) -> Response {
    let h = match posted_household(&session, &id, &f) {
        Ok(h) => h,
        Err(refused) => return *refused,
    };
    let lang = session.lang;
    let title = lang.t(T::Classify);
    let key = f.get(super::IDEMPOTENCY_FIELD).to_owned();
    let again = |problems: &Problems, status| {
        let body = classify_form(&session, &h, &key, &f, problems);
        (status, page(lang, title, Some(&session), body)).into_response()
    };
    let mut problems = Problems::default();
    // Zero is an income (a household may have none), as the API's `money_non_negative`.
    let income = i18n::parse_money_or_zero(f.get("income_per_person"))
        .map_err(|e| problems.field("income_per_person", e))
        .ok();
    let area = crate::input::area(f.get("area"))
        .map_err(|e| problems.field("area", e))
        .ok();
    let year = crate::input::review_year(f.get("review_year"))
        .map_err(|e| problems.field("review_year", e))
        .ok();
    let on = i18n::parse_date(f.get("decided_on"))
        .map_err(|e| problems.field("decided_on", e))
        .ok();
    // The boxes a browser sends are each one of INDICATORS, once; a forged form may name
    // others or one twice, which the API's schema refuses too.
    let deprived = crate::input::indicators(f.all("deprived"))
        .map_err(|e| problems.field("deprived", e))
        .ok();
    // Left blank for a new decision; else the sequence of the one it corrects.
    let corrects = match f.get("corrects") {
        "" => Some(None),
        s => crate::input::sequence(s)
            .map(Some)
            .map_err(|e| problems.field("corrects", e))
            .ok(),
    };
    let (Some(income), Some(area), Some(year), Some(on), Some(deprived), Some(corrects)) =
        (income, area, year, on, deprived, corrects)
    else {
        return again(&problems, axum::http::StatusCode::BAD_REQUEST);
    };
    let inputs = ClassificationInputs {
        income_per_person_month: income,
        area,
        deprived,
        review_year: year,
    };
    let route = format!("POST /console/households/{h}/classify");
    let result = async {
        let write = begin_write(&session.caller, &f, &route)?;
        let caller = &session.caller;
        let receipt = {
            let (service, caller, h) = (api.service().clone(), caller.clone(), h.clone());
            super::write_in_time(&session, async move {
                service
                    .classify(&write.request(&caller), &h, inputs, on, corrects)
                    .await
            })
            .await?
        };
        // Recorded: what follows is only shown. A read that fails now (the projections
        // slow to catch up) must not make the write look refused, or the clerk records
        // it again from a new form.
        let read = super::read_back_in_time(
            &session,
            read_household(
                &api,
                caller,
                &h,
                session.today,
                Some(receipt.stream_sequence),
                None,
            ),
        )
        .await
        .ok();
        Ok::<_, ApiError>((receipt, read.map(|r| r.view.standing)))
    }
    .await;
    match result {
        Ok((receipt, standing)) => {
            let body = html! {
                (receipt_block(lang, &receipt))
                @if standing.is_none() {
                    p #details-not-yet { (lang.t(T::DetailsNotYetReadable)) }
                }
                @if let Some(Some(s)) = standing {
                    table #classified {
                        tr { th { (lang.t(T::ResultClass)) } td #result-class { (s.class) } }
                        tr { th { (lang.t(T::Standard)) } td #result-standard { (s.standard_id) } }
                        tr { th { (lang.t(T::ValidFrom)) } td { (i18n::date_str(&s.valid_from)) } }
                        tr { th { (lang.t(T::ValidTo)) } td { (i18n::date_str(&s.valid_to)) } }
                    }
                }
                p { a #household-link href={ "/console/households/" (h) } { (lang.t(T::BackToHousehold)) } }
            };
            page(lang, title, Some(&session), body).into_response()
        }
        // Not allowed at all: no form to correct, only the refusal.
        Err(e @ ApiError::Denied(_)) => error_in(&session, &e),
        Err(e) => again(&Problems::refusal(lang, &e), e.status()),
    }
}
