//! The console page that puts a household member on monthly social assistance: the grant
//! of an entitlement, through `Service::payment` as `POST /v1/entitlements` does. The
//! answer names the entitlement's number, which stopping or changing it takes.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};

use crate::access::Operation;
use crate::domain::ids::HouseholdId;
use crate::domain::payments::entitlements::{Channel, ChannelKind, Terms};
use crate::domain::payments::ids::{
    BeneficiaryRef, CategoryId, CommuneId, HouseholdRef, MemberRef, ProgrammeId,
};
use crate::domain::payments::{CommandKind, EventBody};

use super::Path;
use super::i18n::{self, Lang, T};
use super::session::Session;
use super::{
    Fields, FormBody, Problems, begin_write, error_in, general_problem, household_form_page, page,
    posted_household, protocol_fields, receipt_block, select_field, text_field,
};
use crate::http::payments::{PROGRAMME, bad, recorded};
use crate::http::{Api, ApiError};

/// The category a grant form offers first: the most common monthly allowance.
const CATEGORY_SHOWN_FIRST: &str = "ELDERLY_80_PLUS_NO_PENSION";

pub fn routes() -> Router<Api> {
    Router::new().route(
        "/console/households/{id}/entitlements/new",
        get(grant_page).post(grant),
    )
}

fn channel_options(lang: Lang) -> [(&'static str, &'static str); 3] {
    [
        ("bank", lang.t(T::ChannelBank)),
        ("mobile_money", lang.t(T::ChannelMobileMoney)),
        ("post_office", lang.t(T::ChannelPostOffice)),
    ]
}

fn grant_form(session: &Session, h: &HouseholdId, key: &str, f: &Fields, p: &Problems) -> Markup {
    let lang = session.lang;
    let or = |name: &str, default: String| match f.get(name) {
        "" => default,
        v => v.to_owned(),
    };
    html! {
        (general_problem(p))
        form.card #grant method="post" action={ "/console/households/" (h) "/entitlements/new" } {
            (protocol_fields(session, key))
            (text_field(lang.t(T::Member), "member", f.get("member"), p))
            (text_field(lang.t(T::Category), "category", &or("category", CATEGORY_SHOWN_FIRST.into()), p))
            (select_field(lang.t(T::Channel), "channel", &channel_options(lang), f.get("channel"), p))
            (text_field(lang.t(T::Gateway), "gateway", f.get("gateway"), p))
            (text_field(lang.t(T::FromMonth), "from", f.get("from"), p))
            (text_field(lang.t(T::On), "on", &f.day_or_today("on", session.today), p))
            button #submit type="submit" { (lang.t(T::Submit)) }
        }
    }
}

/// `GET /console/households/{id}/entitlements/new`.
async fn grant_page(session: Session, Path(id): Path<String>) -> Response {
    let title = session.lang.t(T::GrantEntitlement);
    household_form_page(&session, &id, Operation::ManagePayments, title, |h, key| {
        grant_form(&session, h, key, &Fields::empty(), &Problems::default())
    })
}

/// `POST /console/households/{id}/entitlements/new`: the grant; the answer names the
/// entitlement.
async fn grant(
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
    let title = lang.t(T::GrantEntitlement);
    let key = f.get(super::IDEMPOTENCY_FIELD).to_owned();
    let again = |p: &Problems, status| {
        let body = grant_form(&session, &h, &key, &f, p);
        (status, page(lang, title, Some(&session), body)).into_response()
    };
    let mut p = Problems::default();
    let member = crate::input::reference_of(f.get("member"))
        .map_err(|e| p.field("member", e))
        .ok();
    let category = crate::input::code(f.get("category"))
        .map_err(|e| p.field("category", e))
        .ok();
    let gateway = crate::input::gateway(f.get("gateway"))
        .map_err(|e| p.field("gateway", e))
        .ok();
    let from = crate::input::month(f.get("from"))
        .map_err(|e| p.field("from", e))
        .ok();
    let on = i18n::parse_date(f.get("on"))
        .map_err(|e| p.field("on", e))
        .ok();
    let channel = crate::input::payment_channel(f.get("channel"))
        .map_err(|e| p.field("channel", e))
        .ok();
    let (Some(member), Some(category), Some(gateway), Some(from), Some(on), Some(channel)) =
        (member, category, gateway, from, on, channel)
    else {
        return again(&p, axum::http::StatusCode::BAD_REQUEST);
    };
    let channel = match channel {
        ChannelKind::BankAccount => Channel::BankAccount { gateway },
        ChannelKind::MobileMoney => Channel::MobileMoney { gateway },
        ChannelKind::PostOffice => Channel::PostOffice { gateway },
    };
    let route = format!("POST /console/households/{h}/entitlements/new");
    let result = async {
        let partition = crate::input::partition(h.province().as_str())?;
        let kind = CommandKind::Grant {
            programme: ProgrammeId::parse(PROGRAMME).map_err(bad)?,
            beneficiary: BeneficiaryRef {
                household: HouseholdRef::parse(h.as_str()).map_err(bad)?,
                member: MemberRef::parse(&member).map_err(bad)?,
            },
            commune: CommuneId::parse(h.commune().as_str()).map_err(bad)?,
            from,
            terms: Terms {
                category: CategoryId::parse(&category).map_err(bad)?,
                channel,
                provincial_base: None,
            },
            citizen: None, // found by the service
        };
        let write = begin_write(&session.caller, &f, &route)?;
        let receipt = {
            let (service, caller) = (api.service().clone(), session.caller.clone());
            super::write_in_time(&session, async move {
                service
                    .payment(&write.request(&caller), &partition, kind, on)
                    .await
            })
            .await?
        };
        // Recorded: the number is only shown (a failed read must not make the grant look
        // refused, or the clerk grants again from a new form).
        let entitlement = match super::read_back_in_time(&session, recorded(&api, &receipt)).await {
            Ok(EventBody::EntitlementGranted { entitlement, .. }) => Some(entitlement),
            Ok(_) => {
                return Err(ApiError::Internal(
                    "the receipt of a grant names another event".into(),
                ));
            }
            Err(_) => None,
        };
        Ok((receipt, entitlement))
    }
    .await;
    match result {
        Ok((receipt, entitlement)) => {
            let body = html! {
                (receipt_block(lang, &receipt))
                @match &entitlement {
                    Some(entitlement) => {
                        table #granted {
                            tr { th { (lang.t(T::Entitlement)) } td #entitlement-number { (entitlement) } }
                            tr { th { (lang.t(T::FromMonth)) } td { (from) } }
                        }
                    }
                    None => p #details-not-yet { (lang.t(T::DetailsNotYetReadable)) },
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
