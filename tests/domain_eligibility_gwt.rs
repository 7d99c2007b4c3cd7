#[path = "common_domain/mod.rs"]
mod common;
use common::*;

use ansinh::book::codec::decided_to_proto;
use ansinh::domain::Rejection;
use ansinh::domain::eligibility::{
    Area, Class, Mismatch, Status, classify as classify_fn, load_standard, recompute,
    recompute_against, standard_in_force, standards,
};
use ansinh::domain::loans::{EventBody, HouseholdStanding};
use ansinh::proto;
use ansinh::recompute::Rechecker;
use rust_decimal_macros::dec;

#[test]
fn standard_switches_on_1_jan_2027() {
    assert_eq!(
        standard_in_force(d("2026-12-31")).unwrap().id,
        "VN-MDP-2022-2025"
    );
    assert_eq!(
        standard_in_force(d("2027-01-01")).unwrap().id,
        "VN-MDP-2027-2030"
    );
    assert_eq!(
        standard_in_force(d("2021-12-31")),
        Err(Rejection::NoStandardInForce {
            date: d("2021-12-31")
        })
    );
    // The same household (1 800 000, 3 deprivations) is above the old line, under the new one.
    given(&[])
        .when(classify("2026-12-31", 1_800_000, POOR3, 2026))
        .then(|b, _| assert_eq!(b.households[&hh()].class, Class::AverageLivingStandard));
    given(&[])
        .when(classify("2027-01-01", 1_800_000, POOR3, 2027))
        .then(|b, _| assert_eq!(b.households[&hh()].class, Class::Poor));
}

#[test]
fn income_exactly_at_the_line_is_under_it() {
    let s = standard_in_force(d("2025-06-01")).unwrap();
    let at = inputs(1_500_000, POOR3, 2025);
    assert_eq!(classify_fn(s, &at), Ok(Class::Poor));
    let one_over = inputs(1_500_001, POOR3, 2025);
    assert_eq!(classify_fn(s, &one_over), Ok(Class::AverageLivingStandard));
    let mut urban = inputs(2_000_000, &[], 2025);
    urban.area = Area::Urban;
    assert_eq!(classify_fn(s, &urban), Ok(Class::NearPoor));
    urban.income_per_person_month = dec!(3000000);
    assert_eq!(classify_fn(s, &urban), Ok(Class::AverageLivingStandard));
    urban.income_per_person_month = dec!(3000001);
    assert_eq!(classify_fn(s, &urban), Ok(Class::NotPoor));
}

#[test]
fn three_indicators_poor_two_near_poor() {
    let s = standard_in_force(d("2025-06-01")).unwrap();
    assert_eq!(
        classify_fn(s, &inputs(1_000_000, POOR3, 2025)),
        Ok(Class::Poor)
    );
    assert_eq!(
        classify_fn(s, &inputs(1_000_000, &POOR3[..2], 2025)),
        Ok(Class::NearPoor)
    );
}

#[test]
fn bad_inputs_rejected() {
    let s = standard_in_force(d("2025-06-01")).unwrap();
    assert_eq!(
        classify_fn(s, &inputs(1_000_000, &["owns_a_tv"], 2025)),
        Err(Rejection::UnknownIndicator {
            name: "owns_a_tv".into(),
            standard: s.id.clone()
        })
    );
    let mut neg = inputs(0, &[], 2025);
    neg.income_per_person_month = dec!(-1);
    assert_eq!(
        classify_fn(s, &neg),
        Err(Rejection::NegativeAmount { amount: dec!(-1) })
    );
    neg.income_per_person_month = dec!(100.5);
    assert_eq!(
        classify_fn(s, &neg),
        Err(Rejection::FractionalDong {
            amount: dec!(100.5)
        })
    );
    given(&[])
        .when(classify("2025-06-01", 1_000_000, POOR3, 2024))
        .then_rejects(Rejection::ReviewYearOutOfRange {
            review_year: 2024,
            decision_date: d("2025-06-01"),
        });
}

#[test]
fn escaping_poverty_gives_three_years() {
    given(&history(&[classify("2025-01-02", 1_200_000, POOR3, 2025)]))
        .when(classify("2025-11-15", 2_000_000, &[], 2026))
        .then(|b, evs| {
            let h = &b.households[&hh()];
            assert_eq!(h.status, Status::EscapedPoverty);
            assert_eq!(
                (h.valid_from, h.valid_to),
                (d("2025-11-15"), d("2028-11-14"))
            );
            assert_eq!(h.escaped_until, Some(d("2028-11-14")));
            let EventBody::HouseholdClassified { decision, .. } = &evs[0].body else {
                panic!()
            };
            assert_eq!(decision.prior_class, Some(Class::Poor));
            assert_eq!(recompute(decision), Ok(()));
        });
}

/// A correction restates the review it corrects, so an escaped-poverty window still runs
/// three years from that review, whatever day the correction is recorded on: counted
/// from a correction months later it ran up to a year longer, and an escaped-poverty loan
/// could be approved past the three years.
#[test]
fn a_correction_of_an_escaped_poverty_decision_keeps_the_window_of_the_review_it_corrects() {
    let escaped = history(&[
        classify("2025-01-02", 1_200_000, POOR3, 2025),
        classify("2025-11-15", 2_000_000, &[], 2026),
    ]);
    given(&escaped)
        .when(correct("2026-06-01", 2_100_000, &[], 2026, 2))
        .then(|b, evs| {
            let h = &b.households[&hh()];
            assert_eq!(h.status, Status::EscapedPoverty);
            assert_eq!(
                (h.valid_from, h.valid_to, h.escaped_until),
                (d("2025-11-15"), d("2028-11-14"), Some(d("2028-11-14")))
            );
            assert!(h.statuses_on(d("2029-03-01")).is_err());
            let EventBody::HouseholdClassified { decision, .. } = &evs[0].body else {
                panic!()
            };
            assert_eq!(decision.decision_date, d("2025-11-15"));
            assert_eq!(decision.inputs.income_per_person_month, dec!(2100000));
            assert_eq!(recompute(decision), Ok(()));
        });
}

#[test]
fn validity_is_cut_at_review_year_end_and_standard_end() {
    given(&[])
        .when(classify("2025-03-01", 1_200_000, POOR3, 2025))
        .then(|b, _| assert_eq!(b.households[&hh()].valid_to, d("2025-12-31")));
    // A Q4-2026 review for 2027's list holds through 2027.
    given(&[])
        .when(classify("2026-12-31", 1_200_000, POOR3, 2027))
        .then(|b, _| assert_eq!(b.households[&hh()].valid_to, d("2027-12-31")));
}

/// A review at a year's end draws up the next year's list, so it takes the lines that
/// list is held against: 2,100,000 a person in a rural household is near-poor under the
/// 2027-2030 standard (line 2,200,000) and above the line under 2022-2025 (1,500,000),
/// whatever the date the review is made on. The year before the first standard has a
/// list too: reviewed at the end of 2021 under the standard of 2022.
#[test]
fn a_review_is_decided_under_the_standard_of_its_review_year() {
    let standard_of = |evs: &[ansinh::domain::loans::Event]| {
        let EventBody::HouseholdClassified { decision, .. } = &evs[0].body else {
            panic!("{evs:?}")
        };
        (decision.standard_id.clone(), decision.class)
    };
    given(&[])
        .when(classify("2026-11-20", 2_100_000, &[], 2027))
        .then(|_, evs| {
            assert_eq!(
                standard_of(evs),
                ("VN-MDP-2027-2030".to_string(), Class::NearPoor)
            );
        });
    given(&[])
        .when(classify("2026-11-20", 2_100_000, &[], 2026))
        .then(|_, evs| {
            assert_eq!(
                standard_of(evs),
                ("VN-MDP-2022-2025".to_string(), Class::AverageLivingStandard)
            );
        });
    given(&[])
        .when(classify("2021-11-15", 1_200_000, POOR3, 2022))
        .then(|b, evs| {
            assert_eq!(
                standard_of(evs),
                ("VN-MDP-2022-2025".to_string(), Class::Poor)
            );
            assert_eq!(b.households[&hh()].valid_to, d("2022-12-31"));
        });
}

#[test]
fn recompute_detects_tampering_and_changed_standard() {
    let evs = history(&[classify("2025-01-02", 1_200_000, POOR3, 2025)]);
    let EventBody::HouseholdClassified { decision, .. } = &evs[0].body else {
        panic!()
    };
    assert_eq!(recompute(decision), Ok(()));

    let mut tampered = decision.clone();
    tampered.class = Class::NearPoor;
    assert_eq!(
        recompute(&tampered),
        Err(Mismatch::ClassDiffers {
            recorded: Class::NearPoor,
            recomputed: Class::Poor
        })
    );

    // The file for that standard id was edited (even only whitespace).
    let mut edited: Vec<_> = standards().to_vec();
    let original_text = include_str!("../data/standards/2022-2025.json");
    edited[0] = load_standard(&format!("{original_text} ")).unwrap();
    assert!(matches!(
        recompute_against(&edited, decision),
        Err(Mismatch::StandardChanged { .. })
    ));

    let mut unknown = decision.clone();
    unknown.standard_id = "VN-MDP-1999".into();
    assert!(matches!(
        recompute(&unknown),
        Err(Mismatch::UnknownStandard { .. })
    ));
}

/// The decisions of `commands` (classifications only) as the book records them
/// (`EligibilityDecided`). In these histories a decision's id is its place, 1 on, which
/// stands for its partition sequence: `rechecked` gives them the same.
fn recorded(commands: &[ansinh::domain::loans::Command]) -> Vec<proto::EligibilityDecided> {
    history(commands)
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::HouseholdClassified {
                decision,
                escaped_until,
                ..
            } => Some(proto::EligibilityDecided {
                corrects: decision.corrects.unwrap_or(0),
                ..decided_to_proto(decision, *escaped_until)
            }),
            _ => None,
        })
        .collect()
}

/// Folds `chain` (decisions of partition 01 at sequences 1, 2, ...) and returns the
/// problem found at each.
fn rechecked(chain: &[proto::EligibilityDecided]) -> Vec<Option<String>> {
    let mut rechecker = Rechecker::default();
    (1..)
        .zip(chain)
        .map(|(sequence, d)| rechecker.decision("01", sequence, d))
        .collect()
}

/// Poor, then above the line on 2024-03-01 (escaped poverty until 2027-02-28), then
/// above it again on 2025-01-10 (status average, the window carried).
fn poor_escaped_reviewed() -> Vec<proto::EligibilityDecided> {
    recorded(&[
        classify("2024-01-05", 1_200_000, POOR3, 2024),
        classify("2024-03-01", 2_000_000, &[], 2024),
        classify("2025-01-10", 2_000_000, &[], 2025),
    ])
}

#[test]
fn the_audit_recheck_passes_genuine_decisions_and_a_standing_carried_by_a_move() {
    let genuine = poor_escaped_reviewed();
    assert_eq!(
        (
            genuine[1].status.as_str(),
            genuine[1].escaped_until.as_str()
        ),
        ("escaped_poverty", "2027-02-28")
    );
    assert_eq!(
        (
            genuine[2].status.as_str(),
            genuine[2].escaped_until.as_str()
        ),
        ("average", "2027-02-28")
    );
    assert_eq!(rechecked(&genuine), [None, None, None]);

    // Given the escaped-poverty standing carried by a move into a new household,
    let mut rechecker = Rechecker::default();
    let arrived = "0100101-000002";
    rechecker.moved_in(
        "01",
        &proto::HouseholdMovedIn {
            household_id: arrived.into(),
            standing: Some(genuine[1].clone()),
            ..Default::default()
        },
    );
    // when it is reviewed above the line again, then its prior class and window follow
    // from the standing it brought.
    let mut review = genuine[2].clone();
    review.household_id = arrived.into();
    assert_eq!(rechecker.decision("01", 2, &review), None);
}

/// What the book refuses, the audit reports when a chain holds it anyway: a decision
/// dated before the household's previous one, and one decided in another area than the
/// household is registered in (ADR 0021).
#[test]
fn the_audit_recheck_reports_a_back_dated_decision_and_one_in_another_area() {
    let genuine = poor_escaped_reviewed();
    let early = recorded(&[classify("2024-02-01", 1_200_000, POOR3, 2024)]);
    let found = rechecked(&[genuine[0].clone(), genuine[1].clone(), early[0].clone()]);
    let problem = found[2].clone().expect("a back-dated decision is reported");
    assert!(
        problem.contains(
            "dated 2024-02-01 before the household's previous decision, which holds from 2024-03-01"
        ),
        "{problem}"
    );

    // A decision for an earlier review year than the one before it.
    let next_year = recorded(&[classify("2026-11-20", 1_200_000, POOR3, 2027)]);
    let this_year = recorded(&[classify("2026-12-01", 1_200_000, POOR3, 2026)]);
    let found = rechecked(&[next_year[0].clone(), this_year[0].clone()]);
    let problem = found[1]
        .clone()
        .expect("an earlier review year is reported");
    assert!(
        problem.contains("for review year 2026 after the household's decision for 2027"),
        "{problem}"
    );

    let mut rechecker = Rechecker::default();
    rechecker.registered("01", &genuine[0].household_id, "urban");
    let problem = rechecker
        .decision("01", 1, &genuine[0])
        .expect("a review in another area is reported");
    assert!(
        problem
            .contains("decided for the rural area; the household is registered in the urban one"),
        "{problem}"
    );
    // Registered rural, the same decision passes.
    let mut rechecker = Rechecker::default();
    rechecker.registered("01", &genuine[0].household_id, "rural");
    assert_eq!(rechecker.decision("01", 1, &genuine[0]), None);
}

#[test]
fn the_audit_recheck_reports_a_wrong_status_validity_prior_class_or_window() {
    let genuine = poor_escaped_reviewed();
    let problem_of = |chain: &[proto::EligibilityDecided]| {
        rechecked(chain)
            .last()
            .cloned()
            .flatten()
            .unwrap_or_else(|| panic!("{:?} passed", chain.last()))
    };

    // A first decision of class average recorded as escaped poverty for three years.
    let mut escaped = genuine[1].clone();
    escaped.prior_class = String::new();
    let problem = problem_of(&[escaped.clone()]);
    assert!(
        problem.contains("recorded status escaped_poverty, class and prior class give average"),
        "{problem}"
    );
    // The same with a prior class the chain never recorded.
    escaped.prior_class = "poor".into();
    let problem = problem_of(&[escaped]);
    assert!(
        problem.contains("recorded prior class poor, the household's previous decision gives none"),
        "{problem}"
    );
    // A poor decision valid until 2030 instead of the end of its review year.
    let mut poor = genuine[0].clone();
    poor.valid_to = "2030-12-31".into();
    let problem = problem_of(&[poor]);
    assert!(
        problem.contains(
            "recorded validity 2024-01-05 to 2030-12-31, the rule gives 2024-01-05 to 2024-12-31"
        ),
        "{problem}"
    );
    // A review above the line that stretches the escaped-poverty window it carries.
    let mut stretched = genuine.clone();
    stretched[2].escaped_until = "2029-12-31".into();
    let problem = problem_of(&stretched);
    assert!(
        problem
            .contains("recorded escaped-poverty window to 2029-12-31, the rule gives 2027-02-28"),
        "{problem}"
    );
    // A review above the line that opens a window nothing before it opened.
    let mut opened = recorded(&[classify("2025-01-10", 2_000_000, &[], 2025)]);
    opened[0].escaped_until = "2027-12-31".into();
    let problem = problem_of(&opened);
    assert!(
        problem.contains("recorded escaped-poverty window to 2027-12-31, the rule gives none"),
        "{problem}"
    );
}

/// The decision of the one classification among `events`.
fn decided(
    events: &[ansinh::domain::loans::Event],
) -> &ansinh::domain::eligibility::ClassificationDecided {
    match events {
        [
            ansinh::domain::loans::Event {
                body: EventBody::HouseholdClassified { decision, .. },
                ..
            },
        ] => decision,
        other => panic!("{other:?}"),
    }
}

/// Not poor in 2024 (decision 1), then recorded poor by mistake in the review for 2025
/// (decision 2).
fn not_poor_then_poor_by_mistake() -> Vec<ansinh::domain::loans::Event> {
    history(&[
        classify("2024-06-01", 4_000_000, &[], 2024),
        classify("2025-03-01", 1_200_000, POOR3, 2025),
    ])
}

/// A household recorded poor by mistake is not one that escaped poverty: the right
/// decision, recorded as the mistaken one's correction, takes the class before the
/// mistake as its prior one, and opens no escaped-poverty window. Recorded as a plain new
/// decision instead, it takes the mistaken Poor as its prior class: escaped poverty, a
/// window of 36 months.
#[test]
fn a_correction_of_a_mistaken_poor_decision_opens_no_escaped_poverty_window() {
    let mistaken = not_poor_then_poor_by_mistake();
    given(&mistaken)
        .when(correct("2025-03-05", 4_000_000, &[], 2025, 2))
        .then(|b, evs| {
            let h = &b.households[&hh()];
            assert_eq!((h.class, h.status), (Class::NotPoor, Status::NotPoor));
            assert_eq!(h.escaped_until, None);
            // In the mistaken one's place, from its review's date.
            assert_eq!(
                (h.valid_from, h.valid_to),
                (d("2025-03-01"), d("2025-12-31"))
            );
            let decision = decided(evs);
            assert_eq!(decision.prior_class, Some(Class::NotPoor));
            assert_eq!(decision.corrects, Some(2));
            assert_eq!(recompute(decision), Ok(()));
        });
    given(&mistaken)
        .when(classify("2025-03-05", 4_000_000, &[], 2025))
        .then(|b, evs| {
            let h = &b.households[&hh()];
            assert_eq!(h.status, Status::EscapedPoverty);
            assert_eq!(h.escaped_until, Some(d("2028-03-04")));
            assert_eq!(decided(evs).prior_class, Some(Class::Poor));
        });
    // A correction that was itself mistaken (near-poor) is corrected the same way: each
    // takes the first mistake's place, so the prior class stays the one before it.
    let mut corrected_twice = mistaken.clone();
    corrected_twice.extend(
        given(&mistaken)
            .when(correct("2025-03-05", 1_200_000, &POOR3[..2], 2025, 2))
            .events()
            .to_vec(),
    );
    given(&corrected_twice)
        .when(correct("2025-03-06", 4_000_000, &[], 2025, 3))
        .then(|b, evs| {
            assert_eq!(b.households[&hh()].status, Status::NotPoor);
            assert_eq!(b.households[&hh()].escaped_until, None);
            assert_eq!(decided(evs).prior_class, Some(Class::NotPoor));
        });
}

/// A mistaken Poor decision wipes the escaped-poverty window the household earned in an
/// earlier year; its correction is decided with the window before it, so the window
/// runs on to its own end. A plain new decision would open a new, longer one.
#[test]
fn a_correction_restores_the_escaped_poverty_window_a_mistaken_poor_decision_wiped() {
    let mistaken = history(&[
        classify("2024-01-05", 1_200_000, POOR3, 2024),
        // Escaped poverty: the window runs to 2027-02-28.
        classify("2024-03-01", 2_000_000, &[], 2024),
        // Reviewed above the line again: the window runs on.
        classify("2025-01-10", 2_000_000, &[], 2025),
        // Poor by mistake: the window is cleared.
        classify("2025-02-01", 1_200_000, POOR3, 2025),
    ]);
    assert_eq!(given(&mistaken).book.households[&hh()].escaped_until, None);
    given(&mistaken)
        .when(correct("2025-02-03", 2_000_000, &[], 2025, 4))
        .then(|b, evs| {
            let h: &HouseholdStanding = &b.households[&hh()];
            assert_eq!(h.status, Status::AverageLivingStandard);
            assert_eq!(h.escaped_until, Some(d("2027-02-28")));
            assert_eq!(
                h.statuses_on(d("2026-06-01")),
                Ok(vec![Status::EscapedPoverty])
            );
            assert_eq!(decided(evs).prior_class, Some(Class::AverageLivingStandard));
        });
    given(&mistaken)
        .when(classify("2025-02-03", 2_000_000, &[], 2025))
        .then(|b, _| {
            let h = &b.households[&hh()];
            assert_eq!(h.status, Status::EscapedPoverty);
            assert_eq!(h.escaped_until, Some(d("2028-02-02")));
        });
}

/// Only the household's latest decision, for its own review year and not back-dated,
/// can be corrected; a standing a move carried in is no decision of this book.
#[test]
fn a_correction_of_anything_but_the_latest_decision_of_its_review_year_is_refused() {
    let mistaken = not_poor_then_poor_by_mistake();
    given(&mistaken)
        .when(correct("2025-03-05", 4_000_000, &[], 2025, 1))
        .then_rejects(Rejection::CorrectsNotLatest {
            corrects: 1,
            latest: Some(2),
        });
    given(&[])
        .when(correct("2025-03-05", 4_000_000, &[], 2025, 1))
        .then_rejects(Rejection::CorrectsNotLatest {
            corrects: 1,
            latest: None,
        });
    // The review for 2025 is another year's decision than 2024's.
    given(&mistaken)
        .when(correct("2025-03-05", 4_000_000, &[], 2024, 2))
        .then_rejects(Rejection::CorrectionForAnotherReviewYear {
            corrected: 2025,
            review_year: 2024,
        });
    given(&mistaken)
        .when(correct("2025-02-28", 4_000_000, &[], 2025, 2))
        .then_rejects(Rejection::ClassificationBackDated {
            latest: d("2025-03-01"),
            effective: d("2025-02-28"),
        });
    let mut carried = history(&[classify("2025-03-01", 1_200_000, POOR3, 2025)]);
    let EventBody::HouseholdClassified {
        carried_by_move, ..
    } = &mut carried[0].body
    else {
        panic!()
    };
    *carried_by_move = true;
    given(&carried)
        .when(correct("2025-03-05", 4_000_000, &[], 2025, 1))
        .then_rejects(Rejection::CorrectsNotLatest {
            corrects: 1,
            latest: None,
        });
}

/// The audit checks a correction against the corrected decision's own prior class and
/// the window before it, and reports one that names another decision than the latest.
#[test]
fn the_audit_recheck_passes_a_correction_and_reports_one_not_of_the_latest_decision() {
    let chain = recorded(&[
        classify("2024-01-05", 1_200_000, POOR3, 2024),
        classify("2024-03-01", 2_000_000, &[], 2024),
        classify("2025-01-10", 2_000_000, &[], 2025),
        classify("2025-02-01", 1_200_000, POOR3, 2025),
        correct("2025-02-03", 2_000_000, &[], 2025, 4),
    ]);
    assert_eq!(
        (
            chain[4].status.as_str(),
            chain[4].escaped_until.as_str(),
            chain[4].corrects
        ),
        ("average", "2027-02-28", 4)
    );
    assert_eq!(rechecked(&chain), [None, None, None, None, None]);
    // A correction of the decision before the latest.
    let mut earlier = chain.clone();
    earlier[4].corrects = 3;
    let problem = rechecked(&earlier)[4].clone().expect("reported");
    assert!(
        problem.contains(
            "corrects decision 3, which is not the household's latest decision in the partition (that is 4)"
        ),
        "{problem}"
    );
    // A correction that took the mistaken decision as its prior, as a plain decision does.
    let plain = recorded(&[
        classify("2024-01-05", 1_200_000, POOR3, 2024),
        classify("2024-03-01", 2_000_000, &[], 2024),
        classify("2025-01-10", 2_000_000, &[], 2025),
        classify("2025-02-01", 1_200_000, POOR3, 2025),
        classify("2025-02-03", 2_000_000, &[], 2025),
    ]);
    let mut as_plain = chain.clone();
    as_plain[4] = proto::EligibilityDecided {
        corrects: 4,
        ..plain[4].clone()
    };
    let problem = rechecked(&as_plain)[4].clone().expect("reported");
    assert!(
        problem.contains(
            "recorded prior class poor, the household's corrected decision gives average"
        ),
        "{problem}"
    );
    // A correction of the standing a move carried in.
    let mut rechecker = Rechecker::default();
    rechecker.moved_in(
        "01",
        &proto::HouseholdMovedIn {
            household_id: chain[3].household_id.clone(),
            standing: Some(chain[3].clone()),
            ..Default::default()
        },
    );
    let problem = rechecker.decision("01", 2, &chain[4]).expect("reported");
    assert!(problem.contains("(it has none)"), "{problem}");
}

/// A decision records the standard's hash, BLAKE3 of its data file's exact bytes, and a
/// payment run the reference files' hashes the same way: a checkout that changed line
/// endings would hash other bytes, and no recorded decision would re-derive. Git keeps
/// those files byte for byte (`.gitattributes`), and the hashes are pinned here.
#[test]
fn hashed_reference_data_is_kept_byte_for_byte() {
    let attributes = include_str!("../.gitattributes");
    for pattern in ["data/standards/*.json", "data/social_assistance/*.json"] {
        assert!(
            attributes
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [pattern, "-text"]),
            "{pattern} is not marked -text in .gitattributes"
        );
    }
    let hashes: Vec<(&str, &str)> = standards()
        .iter()
        .map(|s| (s.id.as_str(), s.content_hash.as_str()))
        .collect();
    assert_eq!(
        hashes,
        [
            (
                "VN-MDP-2022-2025",
                "a85f6f7fbb34857ae7a7de805bd3759ae336b752c6268e25e3c8fd20f34246bd"
            ),
            (
                "VN-MDP-2027-2030",
                "541dad596964daf1254efb449de674bf26167e3cb5ef1f25adf60ab5969075ac"
            )
        ]
    );
    let reference = &ansinh::domain::payments::reference::reference().hashes;
    assert_eq!(
        (
            reference.base_levels.as_str(),
            reference.categories.as_str()
        ),
        (
            "9038b23066d088ca1d5d0f4f6751928cf610a4f2756d6f5cfaed8bb4fb598e9e",
            "debdfb43a701807c1f7a41558eddebe7955b74f555a219e3ed68a0ece4fe1419"
        )
    );
}
