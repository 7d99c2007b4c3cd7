//! Opaque string references: programmes, communes, gateways, households,
//! members, categories and gateway transaction ids.
//!
//! Only *shape* is checked here (non-empty, bounded, printable ASCII without
//! spaces). Whether a commune or gateway exists is reference data owned by
//! other modules of ansinh; these types only keep junk out of the log.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::payments::Rejection;

/// Longest accepted reference, in characters. Gateways send some of these
/// (transaction ids, instruction refs), and refused posts are recorded in the
/// log, so the bound also caps what a gateway can make us store per post.
pub const REF_CHARS_MAX: usize = 64;

/// Check the shape of a reference. Printable ASCII only, so that ids compare
/// byte-for-byte and never hide look-alike Unicode or control characters.
pub fn check_ref(field: &'static str, s: &str) -> Result<(), Rejection> {
    if s.is_empty() {
        return Err(Rejection::RefMissing { field });
    }
    if s.len() > REF_CHARS_MAX || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Rejection::RefMalformed {
            field,
            max_chars: REF_CHARS_MAX,
        });
    }
    Ok(())
}

macro_rules! string_ref {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, Rejection> {
                check_ref($field, s)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Rejection;
            fn try_from(s: String) -> Result<Self, Rejection> {
                check_ref($field, &s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_ref!(
    /// A budget programme, e.g. "SOCIAL_ASSISTANCE_MONTHLY".
    ProgrammeId,
    "programme"
);
string_ref!(
    /// A commune code (the registry's 7-digit code in practice).
    CommuneId,
    "commune"
);
string_ref!(
    /// A payment gateway (bank, mobile-money provider, post office). It is
    /// also the gateway's authenticated identity when it posts results.
    GatewayId,
    "gateway"
);
string_ref!(
    /// The registry's household id, opaque here.
    HouseholdRef,
    "household"
);
string_ref!(
    /// A member of the household (opaque: a registry member ref, never a
    /// name, so the log holds no personal data in clear).
    MemberRef,
    "member"
);
string_ref!(
    /// A beneficiary category id of `categories.json`.
    CategoryId,
    "category"
);
string_ref!(
    /// The gateway's own transaction id for a result it posts.
    GatewayTxnId,
    "gateway transaction id"
);
string_ref!(
    /// An instruction id as a gateway quotes it back; parsed against the
    /// book, and kept verbatim when the post is refused.
    InstructionRef,
    "instruction"
);
string_ref!(
    /// The signed-in officer (or commune committee) who issues a command.
    OfficerId,
    "officer"
);

/// The number of a member reference in its one spelling: "m" and the member's position
/// in the household record, from 1 (the head), lower case, without leading zeros. None
/// for any other spelling ("M1", "m01", "m0", "1"), each of which would be a second key
/// for the same person.
pub fn member_number(member: &MemberRef) -> Option<u32> {
    let digits = member.as_str().strip_prefix('m')?;
    let n: u32 = digits.parse().ok()?;
    (n >= 1 && n.to_string() == digits).then_some(n)
}

/// Who a beneficiary is, as the registry knows them: the blind index (a keyed hash) of
/// their citizen id. Opaque here: this book only compares it with the deaths the registry
/// recorded (`RegistryFacts::died_on`), since a member reference is a position that shifts.
pub type CitizenIndex = [u8; 32];

/// Who receives the money: a member of a household.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BeneficiaryRef {
    pub household: HouseholdRef,
    pub member: MemberRef,
}

impl fmt::Display for BeneficiaryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.household, self.member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_checked() {
        assert!(GatewayId::parse("VNPOST").is_ok());
        assert_eq!(
            GatewayId::parse(""),
            Err(Rejection::RefMissing { field: "gateway" })
        );
        for bad in ["VN POST", "VNPÖST", "a\nb", &"x".repeat(REF_CHARS_MAX + 1)] {
            assert_eq!(
                GatewayId::parse(bad),
                Err(Rejection::RefMalformed {
                    field: "gateway",
                    max_chars: REF_CHARS_MAX
                }),
                "{bad:?}"
            );
        }
        assert!(GatewayId::parse(&"x".repeat(REF_CHARS_MAX)).is_ok());
    }

    #[test]
    fn a_member_reference_has_one_spelling() {
        let number = |s: &str| member_number(&MemberRef::parse(s).unwrap());
        assert_eq!((number("m1"), number("m12")), (Some(1), Some(12)));
        for other in ["M1", "m01", "m0", "m+1", "1", "m", "m1a", "mm1", "m-1"] {
            assert_eq!(number(other), None, "{other}");
        }
    }

    #[test]
    fn deserialising_checks_shape_too() {
        assert!(serde_json::from_str::<CommuneId>("\"0100101\"").is_ok());
        assert!(serde_json::from_str::<CommuneId>("\"\"").is_err());
    }
}
