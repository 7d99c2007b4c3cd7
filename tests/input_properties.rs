//! Properties of the boundary's parsers (`ansinh::input`): random strings and bytes never
//! make one panic, whatever one accepts reads back as itself (one spelling per value),
//! and every well-formed value is accepted and round-trips.

use ansinh::input::{self, Kind};
use proptest::prelude::*;

/// Random text: any Unicode, with a bias to the characters the parsers look at.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9\\-L:. +e]{0,24}",
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[\\x00-\\x{9F}\\x{FDD0}\\x{FFFE}a-zA-Zàáảãạăâđêôơư ]{0,40}",
    ]
}

/// Applies every parser to `s`; each accepted value, printed, parses to itself.
fn check_all(s: &str) -> Result<(), TestCaseError> {
    if let Ok(v) = input::commune(s) {
        prop_assert_eq!(v.as_str(), s);
        prop_assert!(v.as_str().len() == 7 && v.as_str().bytes().all(|b| b.is_ascii_digit()));
    }
    if let Ok(v) = input::partition(s) {
        prop_assert_eq!(v.as_str(), s);
        prop_assert!(v.as_str().len() == 2);
    }
    if let Ok(v) = input::partitions(s) {
        let joined: Vec<String> = v.iter().map(|p| p.to_string()).collect();
        prop_assert_eq!(joined.join(","), s);
    }
    if let Ok(v) = input::household(s) {
        prop_assert_eq!(v.as_str(), s);
        prop_assert_eq!(v.commune().as_str().to_owned(), s[..7].to_owned());
    }
    if let Ok(v) = input::loan_ref(s) {
        prop_assert_eq!(v.to_string(), s);
        prop_assert!(v.number > 0);
    }
    if let Ok(v) = input::citizen_id(s) {
        prop_assert_eq!(v.as_str(), s);
    }
    if let Ok(v) = input::money_or_zero(s) {
        prop_assert_eq!(v.to_string(), s);
        prop_assert!(v.scale() == 0 && !v.is_sign_negative());
        if let Ok(positive) = input::money(s) {
            prop_assert!(positive > rust_decimal::Decimal::ZERO);
        }
    }
    if let Ok(v) = input::sequence(s) {
        prop_assert_eq!(v.to_string(), s);
        prop_assert!((1..=input::SEQUENCE_MAX).contains(&v));
    }
    if let Ok(v) = input::date(s) {
        prop_assert_eq!(v.format("%Y-%m-%d").to_string(), s);
    }
    if let Ok(v) = input::month(s) {
        prop_assert_eq!(v.to_string(), s);
    }
    if let Ok(v) = input::gateway(s) {
        prop_assert_eq!(v.as_str(), s);
        prop_assert!(ansinh::gateway::is_gateway_id(s));
    }
    for parse in [
        input::key_id,
        input::idempotency_key,
        input::actor,
        input::reference_of,
        input::phone,
        input::account_number,
    ] {
        if let Ok(v) = parse(s) {
            prop_assert_eq!(&v, s);
            prop_assert!(!v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
    if let Ok(v) = input::unit(s) {
        prop_assert_eq!(&v, s);
    }
    for parse in [input::name, input::text] {
        if let Ok(v) = parse(s) {
            // Normalised, free of what text may not hold, and stable: parsing the
            // result again gives the result.
            prop_assert!(v.chars().all(|c| input::bad_char(c).is_none()));
            prop_assert_eq!(parse(&v).ok(), Some(v.clone()));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn no_input_panics_a_parser_and_what_is_accepted_reads_back_as_itself(s in any_text()) {
        check_all(&s)?;
    }

    #[test]
    fn well_formed_ids_round_trip(
        province in 0u32..100,
        local in 0u32..100_000,
        serial in 0u32..1_000_000,
        loan in 1u64..u64::MAX,
        card in 0u64..1_000_000_000_000,
    ) {
        let commune = format!("{province:02}{local:05}");
        prop_assert_eq!(input::commune(&commune).unwrap().as_str().to_owned(), commune.clone());
        let p = format!("{province:02}");
        prop_assert_eq!(input::partition(&p).unwrap().as_str().to_owned(), p.clone());
        let h = format!("{commune}-{serial:06}");
        prop_assert_eq!(input::household(&h).unwrap().as_str().to_owned(), h.clone());
        let l = format!("{p}-L{loan}");
        prop_assert_eq!(input::loan_ref(&l).unwrap().to_string(), l);
        let c = format!("{card:012}");
        prop_assert_eq!(input::citizen_id(&c).unwrap().as_str().to_owned(), c.clone());
        for unit in [String::new(), p.clone(), commune.clone()] {
            prop_assert_eq!(input::unit(&unit).unwrap(), unit);
        }
    }

    #[test]
    fn whole_amounts_round_trip_and_others_are_refused(n in 0u64..=1_000_000_000_000_000, frac in 1u32..100) {
        let s = n.to_string();
        prop_assert_eq!(input::money_or_zero(&s).unwrap().to_string(), s.clone());
        prop_assert_eq!(input::money(&s).is_ok(), n > 0);
        let fraction = format!("{n}.{frac}");
        let err = input::money(&fraction).unwrap_err();
        prop_assert_eq!(err.kind, Kind::Money);
        let negative = format!("-{n}");
        prop_assert!(input::money(&negative).is_err());
        let padded = format!("0{n}");
        prop_assert!(input::money(&padded).is_err());
        let above = (u128::from(n) + 1_000_000_000_000_001).to_string();
        prop_assert!(input::money(&above).is_err());
    }

    #[test]
    fn sequences_round_trip_up_to_the_last_a_chain_can_reach(n in 1u64..=input::SEQUENCE_MAX) {
        let s = n.to_string();
        prop_assert_eq!(input::sequence(&s).unwrap(), n);
        // Past it, doubled, a sequence would wrap around to another event's id.
        let past = (u128::from(n) + u128::from(input::SEQUENCE_MAX)).to_string();
        prop_assert_eq!(input::sequence(&past).unwrap_err().kind, Kind::Sequence);
        for refused in ["0".to_owned(), format!("0{n}"), format!("+{n}")] {
            prop_assert!(input::sequence(&refused).is_err(), "{}", refused);
        }
    }

    #[test]
    fn calendar_days_and_months_round_trip(days in 0i64..(100 * 365)) {
        let day = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap() + chrono::Duration::days(days);
        let s = day.format("%Y-%m-%d").to_string();
        prop_assert_eq!(input::date(&s).unwrap(), day);
        let m = day.format("%Y-%m").to_string();
        prop_assert_eq!(input::month(&m).unwrap().to_string(), m);
    }

    #[test]
    fn text_is_one_form_and_never_holds_a_control(name in "[a-zA-Zàáảãạăâđêôơư ]{1,60}") {
        prop_assume!(!name.trim().is_empty());
        let nfc = input::name(&name).unwrap();
        // The decomposed spelling is the same name.
        let nfd: String = unicode_normalization::UnicodeNormalization::nfd(name.as_str()).collect();
        prop_assert_eq!(input::name(&nfd).unwrap(), nfc.clone());
        for bad in ['\u{0}', '\u{1b}', '\u{7f}', '\u{85}', '\u{fdd0}', '\u{fffe}'] {
            let with = format!("{nfc}{bad}");
            prop_assert_eq!(input::name(&with).unwrap_err().kind, Kind::Name);
        }
    }

    #[test]
    fn reference_like_values_refuse_spaces_and_non_ascii(s in "[a-zA-Z0-9:._-]{1,40}", junk in "[ \\x{e0}\\x{0}]") {
        prop_assert_eq!(input::reference_of(&s).unwrap(), s.clone());
        let bad = format!("{s}{junk}");
        prop_assert!(input::reference_of(&bad).is_err());
        prop_assert!(input::idempotency_key(&bad).is_err());
        prop_assert!(input::actor(&bad).is_err());
        prop_assert!(input::key_id(&bad).is_err());
        prop_assert!(input::gateway(&bad).is_err());
    }

    /// A gateway id is what its NATS subjects and HTTP path can name, nothing more.
    #[test]
    fn gateway_ids_are_what_the_transports_can_name(s in "[a-z0-9][a-z0-9-]{0,31}", upper in "[A-Z]", other in "[._:A-Z]") {
        prop_assert_eq!(input::gateway(&s).unwrap().as_str().to_owned(), s.clone());
        let refused = [format!("{s}{upper}"), format!("{s}{other}"), format!("-{s}")];
        for bad in &refused {
            prop_assert!(input::gateway(bad).is_err(), "{:?}", bad);
        }
    }
}
