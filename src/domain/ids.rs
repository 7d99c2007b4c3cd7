//! Identifiers: the household head's citizen identity number (CCCD), the
//! commune code of the 2025 administrative map, and partitions (provinces).
//!
//! Only *shape* is validated here. Whether a province or commune code exists
//! is reference data that changes with administrative reorganisations; it
//! belongs in a map data file, not in these types.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::Rejection;

/// Number of digits in a CCCD.
pub const CITIZEN_ID_LEN: usize = 12;
/// Digits of the province-of-registration code at the start of a CCCD.
pub const CITIZEN_ID_PROVINCE_LEN: usize = 3;
/// Digits in a province code of the 2025 administrative map (also a partition).
pub const PROVINCE_CODE_LEN: usize = 2;
/// Digits in a commune code within a province (2025 map).
pub const COMMUNE_LOCAL_LEN: usize = 5;
/// Full commune code length: province + commune.
pub const COMMUNE_CODE_LEN: usize = PROVINCE_CODE_LEN + COMMUNE_LOCAL_LEN;

fn all_ascii_digits(s: &str) -> Result<(), usize> {
    match s.bytes().position(|b| !b.is_ascii_digit()) {
        Some(p) => Err(p),
        None => Ok(()),
    }
}

/// Household head's citizen identity number: 3-digit province of
/// registration, 1 century/sex digit, 2-digit birth year, 6-digit serial.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CitizenId(String);

impl CitizenId {
    /// Parse a CCCD. Length is checked on characters (not bytes) so that a
    /// stray non-ASCII character reports as a non-digit, not a length error.
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        let found = s.chars().count();
        if found != CITIZEN_ID_LEN {
            return Err(Rejection::CitizenIdLength { found });
        }
        all_ascii_digits(s).map_err(|position| Rejection::CitizenIdNonDigit { position })?;
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// 3-digit province-of-registration code (the pre-2025 63-province list).
    pub fn registration_province(&self) -> &str {
        &self.0[..CITIZEN_ID_PROVINCE_LEN]
    }
    /// Century/sex digit (0 = male 20th c., 1 = female 20th c., 2/3 = 21st …).
    pub fn century_sex_digit(&self) -> u8 {
        self.0.as_bytes()[3] - b'0'
    }
    /// Last two digits of the birth year.
    pub fn birth_year_2(&self) -> u8 {
        (self.0.as_bytes()[4] - b'0') * 10 + (self.0.as_bytes()[5] - b'0')
    }
    /// The 6-digit serial.
    pub fn serial(&self) -> &str {
        &self.0[6..]
    }
}

impl TryFrom<String> for CitizenId {
    type Error = Rejection;
    fn try_from(s: String) -> Result<Self, Rejection> {
        Self::parse(&s)
    }
}
impl From<CitizenId> for String {
    fn from(c: CitizenId) -> String {
        c.0
    }
}
impl fmt::Display for CitizenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A province code of the 2025 map (2 digits). Data is partitioned by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProvinceCode([u8; PROVINCE_CODE_LEN]);

/// A partition of the ledger is one province.
pub type Partition = ProvinceCode;

impl ProvinceCode {
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        let b = s.as_bytes();
        if b.len() != PROVINCE_CODE_LEN || !b.iter().all(u8::is_ascii_digit) {
            return Err(Rejection::ProvinceCodeMalformed);
        }
        Ok(Self([b[0], b[1]]))
    }
    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII digits.
        std::str::from_utf8(&self.0).expect("ASCII digits")
    }
}
impl TryFrom<String> for ProvinceCode {
    type Error = Rejection;
    fn try_from(s: String) -> Result<Self, Rejection> {
        Self::parse(&s)
    }
}
impl From<ProvinceCode> for String {
    fn from(p: ProvinceCode) -> String {
        p.as_str().to_owned()
    }
}

/// Commune code of the 2025 administrative map: 2-digit province + 5-digit
/// commune, 7 digits in all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommuneCode(String);

impl CommuneCode {
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        let found = s.chars().count();
        if found != COMMUNE_CODE_LEN {
            return Err(Rejection::CommuneCodeLength { found });
        }
        all_ascii_digits(s).map_err(|position| Rejection::CommuneCodeNonDigit { position })?;
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The province (partition) the commune belongs to.
    pub fn province(&self) -> ProvinceCode {
        ProvinceCode::parse(&self.0[..PROVINCE_CODE_LEN]).expect("validated at parse")
    }
    /// The 5-digit commune part.
    pub fn local(&self) -> &str {
        &self.0[PROVINCE_CODE_LEN..]
    }
}
impl TryFrom<String> for CommuneCode {
    type Error = Rejection;
    fn try_from(s: String) -> Result<Self, Rejection> {
        Self::parse(&s)
    }
}
impl From<CommuneCode> for String {
    fn from(c: CommuneCode) -> String {
        c.0
    }
}

/// Digits of a household's serial number within its commune.
pub const HOUSEHOLD_SERIAL_LEN: usize = 6;

/// A household in the registry: its commune code and a serial within the commune,
/// "CCCCCCC-NNNNNN". Opaque in the log (unlike a citizen id it carries no personal
/// data), so it may stand in clear in subjects and projections. A household that
/// moves to another commune is registered there under a new id linked to the old one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HouseholdId(String);

impl HouseholdId {
    pub fn parse(s: &str) -> Result<Self, Rejection> {
        let malformed = || Rejection::HouseholdIdMalformed {
            found: s.chars().take(32).collect(),
        };
        let (commune, serial) = s.split_once('-').ok_or_else(malformed)?;
        CommuneCode::parse(commune).map_err(|_| malformed())?;
        if serial.len() != HOUSEHOLD_SERIAL_LEN || all_ascii_digits(serial).is_err() {
            return Err(malformed());
        }
        Ok(Self(s.to_owned()))
    }
    pub fn new(commune: &CommuneCode, serial: u32) -> Result<Self, Rejection> {
        Self::parse(&format!("{}-{serial:06}", commune.as_str()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn commune(&self) -> CommuneCode {
        CommuneCode::parse(&self.0[..COMMUNE_CODE_LEN]).expect("validated at parse")
    }
    pub fn province(&self) -> ProvinceCode {
        self.commune().province()
    }
}
impl TryFrom<String> for HouseholdId {
    type Error = Rejection;
    fn try_from(s: String) -> Result<Self, Rejection> {
        Self::parse(&s)
    }
}
impl From<HouseholdId> for String {
    fn from(h: HouseholdId) -> String {
        h.0
    }
}
impl fmt::Display for HouseholdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for CommuneCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cccd_parts() {
        let c = CitizenId::parse("001203012345").unwrap();
        assert_eq!(c.registration_province(), "001");
        assert_eq!(c.century_sex_digit(), 2);
        assert_eq!(c.birth_year_2(), 3);
        assert_eq!(c.serial(), "012345");
    }

    #[test]
    fn cccd_shapes_rejected() {
        assert_eq!(
            CitizenId::parse("00120301234"),
            Err(Rejection::CitizenIdLength { found: 11 })
        );
        assert_eq!(
            CitizenId::parse("0012030123456"),
            Err(Rejection::CitizenIdLength { found: 13 })
        );
        assert_eq!(
            CitizenId::parse("00120301234a"),
            Err(Rejection::CitizenIdNonDigit { position: 11 })
        );
        // A full-width digit is one char but not an ASCII digit.
        assert_eq!(
            CitizenId::parse("00120301234１"),
            Err(Rejection::CitizenIdNonDigit { position: 11 })
        );
        assert_eq!(
            CitizenId::parse(" 01203012345"),
            Err(Rejection::CitizenIdNonDigit { position: 0 })
        );
    }

    #[test]
    fn commune_code() {
        let c = CommuneCode::parse("0100001").unwrap();
        assert_eq!(c.province().as_str(), "01");
        assert_eq!(c.local(), "00001");
        assert_eq!(
            CommuneCode::parse("010001"),
            Err(Rejection::CommuneCodeLength { found: 6 })
        );
        assert_eq!(
            CommuneCode::parse("01-0001"),
            Err(Rejection::CommuneCodeNonDigit { position: 2 })
        );
        assert_eq!(
            ProvinceCode::parse("1"),
            Err(Rejection::ProvinceCodeMalformed)
        );
        assert_eq!(
            ProvinceCode::parse("0a"),
            Err(Rejection::ProvinceCodeMalformed)
        );
    }

    #[test]
    fn household_id() {
        let h = HouseholdId::parse("0100101-000042").unwrap();
        assert_eq!(h.commune().as_str(), "0100101");
        assert_eq!(h.province().as_str(), "01");
        for bad in [
            "0100101000042",
            "0100101-42",
            "010010-000042",
            "0100101-00004a",
            "",
        ] {
            assert!(HouseholdId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_validates() {
        let ok: CitizenId = serde_json::from_str("\"001203012345\"").unwrap();
        assert_eq!(ok.as_str(), "001203012345");
        assert!(serde_json::from_str::<CitizenId>("\"12\"").is_err());
    }
}
