//! The household registry of one partition: who lives where, and which citizens
//! (by blind index) belong to which household.
//!
//! Registry facts carry no derived values, so a command *is* the event it proposes:
//! `decide` checks it against the registry and returns it unchanged (or the event it
//! implies, for a death), `apply` records it. Personal data arrive already sealed;
//! this module sees only ciphertext and blind indexes (keyed hashes of citizen ids).

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::domain::Rejection;
use crate::domain::eligibility::Area;
use crate::domain::ids::HouseholdId;

/// Keyed BLAKE3 hash of a citizen id (see `personal::Vault::blind_index`).
pub type BlindIndex = [u8; 32];

/// Blind indexes as serde bytes rather than 32 numbers: a book snapshot holds one or two
/// per citizen, and reading 32 numbers one by one was most of a snapshot's decoding.
/// (JSON still shows an array of numbers.)
pub(crate) mod blind_bytes {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt;

    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde::ser::{SerializeMap, SerializeSeq, Serializer};

    use super::BlindIndex;

    struct Out<'a>(&'a BlindIndex);

    impl serde::Serialize for Out<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    struct In(BlindIndex);

    impl<'de> serde::Deserialize<'de> for In {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = In;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("32 bytes")
                }
                fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<In, E> {
                    v.try_into()
                        .map(In)
                        .map_err(|_| E::invalid_length(v.len(), &self))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<In, A::Error> {
                    let mut out = [0u8; 32];
                    for (i, byte) in out.iter_mut().enumerate() {
                        *byte = seq
                            .next_element()?
                            .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                    }
                    if seq.next_element::<u8>()?.is_some() {
                        return Err(de::Error::invalid_length(33, &self));
                    }
                    Ok(In(out))
                }
            }
            d.deserialize_bytes(V)
        }
    }

    pub mod set {
        use super::*;

        pub fn serialize<S: Serializer>(
            set: &BTreeSet<BlindIndex>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            let mut out = s.serialize_seq(Some(set.len()))?;
            for index in set {
                out.serialize_element(&Out(index))?;
            }
            out.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<BTreeSet<BlindIndex>, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = BTreeSet<BlindIndex>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a list of blind indexes")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                    let mut out = BTreeSet::new();
                    while let Some(In(index)) = seq.next_element()? {
                        out.insert(index);
                    }
                    Ok(out)
                }
            }
            d.deserialize_seq(V)
        }
    }

    pub mod map {
        use super::*;

        pub fn serialize<S: Serializer, V: serde::Serialize>(
            map: &BTreeMap<BlindIndex, V>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            let mut out = s.serialize_map(Some(map.len()))?;
            for (index, value) in map {
                out.serialize_entry(&Out(index), value)?;
            }
            out.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>, V: serde::Deserialize<'de>>(
            d: D,
        ) -> Result<BTreeMap<BlindIndex, V>, D::Error> {
            struct Visit<V>(std::marker::PhantomData<V>);
            impl<'de, V: serde::Deserialize<'de>> Visitor<'de> for Visit<V> {
                type Value = BTreeMap<BlindIndex, V>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a map keyed by blind indexes")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut out = BTreeMap::new();
                    while let Some((In(index), value)) = map.next_entry()? {
                        out.insert(index, value);
                    }
                    Ok(out)
                }
            }
            d.deserialize_map(Visit(std::marker::PhantomData))
        }
    }

    /// One blind index or none (a member without a citizen id).
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            index: &Option<BlindIndex>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match index {
                Some(index) => s.serialize_some(&Out(index)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<BlindIndex>, D::Error> {
            Ok(<Option<In> as serde::Deserialize>::deserialize(d)?.map(|In(index)| index))
        }
    }
}

/// Most members one household may list; larger is a keying error.
pub const MEMBERS_MAX: u32 = 60;
/// Largest sealed personal-data blob accepted in an event, in bytes.
pub const SEALED_BYTES_MAX: usize = 16 * 1024 + 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Residence {
    Active,
    /// Left for `to` (which may be in another partition) on `on`.
    MovedOut {
        to: HouseholdId,
        on: NaiveDate,
    },
    /// Its last member died.
    Dissolved {
        on: NaiveDate,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Household {
    pub id: HouseholdId,
    pub area: Area,
    pub members: u32,
    #[serde(with = "blind_bytes::set")]
    pub citizens: BTreeSet<BlindIndex>,
    pub residence: Residence,
    pub since: NaiveDate,
    /// The data key was destroyed: the sealed data can no longer be read.
    pub erased: bool,
    /// Citizens who died as its members (`MemberDied`), who leave `citizens`: still its
    /// own to a payment run, which pays them through the month of death, where a citizen
    /// who left it alive is paid no more (`RegistryFacts::is_member`).
    #[serde(with = "blind_bytes::set")]
    pub died: BTreeSet<BlindIndex>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub households: BTreeMap<HouseholdId, Household>,
    /// Citizens of active households only: a citizen may belong to one at a time.
    #[serde(with = "blind_bytes::map")]
    pub citizens: BTreeMap<BlindIndex, HouseholdId>,
    /// The day each citizen died whose death was recorded here (`MemberDied`), kept after
    /// the household's record forgets them: a payment run pays an allowance through the
    /// month of its beneficiary's death, and no later (Decree 20/2021).
    #[serde(with = "blind_bytes::map")]
    pub deaths: BTreeMap<BlindIndex, NaiveDate>,
}

/// A registry change, proposed by a command and recorded as an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Registered {
        household: HouseholdId,
        area: Area,
        members: u32,
        citizens: Vec<BlindIndex>,
        sealed: Vec<u8>,
        on: NaiveDate,
    },
    MembersChanged {
        household: HouseholdId,
        members: u32,
        citizens: Vec<BlindIndex>,
        sealed: Vec<u8>,
        on: NaiveDate,
        reason: String,
    },
    MemberDied {
        household: HouseholdId,
        citizen: BlindIndex,
        /// Members after the death (decided: one fewer).
        members: u32,
        citizens: Vec<BlindIndex>,
        sealed: Vec<u8>,
        on: NaiveDate,
    },
    MovedOut {
        household: HouseholdId,
        to: HouseholdId,
        on: NaiveDate,
    },
    MovedIn {
        household: HouseholdId,
        from: HouseholdId,
        area: Area,
        members: u32,
        citizens: Vec<BlindIndex>,
        sealed: Vec<u8>,
        on: NaiveDate,
    },
    Erased {
        household: HouseholdId,
        on: NaiveDate,
        reference: String,
    },
}

impl Change {
    pub fn household(&self) -> &HouseholdId {
        match self {
            Change::Registered { household, .. }
            | Change::MembersChanged { household, .. }
            | Change::MemberDied { household, .. }
            | Change::MovedOut { household, .. }
            | Change::MovedIn { household, .. }
            | Change::Erased { household, .. } => household,
        }
    }
}

impl Registry {
    /// The household if it is registered and still lives here.
    pub fn active(&self, id: &HouseholdId) -> Result<&Household, Rejection> {
        let h = self
            .households
            .get(id)
            .ok_or_else(|| Rejection::HouseholdNotRegistered {
                household: id.to_string(),
            })?;
        match h.residence {
            Residence::Active => Ok(h),
            _ => Err(Rejection::HouseholdInactive {
                household: id.to_string(),
            }),
        }
    }

    /// The household if it is active and its personal data are not erased: only then
    /// may its members change or it move (its data could not be opened, and an erased
    /// household's citizens are free).
    fn changeable(&self, id: &HouseholdId) -> Result<&Household, Rejection> {
        let h = self.active(id)?;
        if h.erased {
            return Err(Rejection::AlreadyErased {
                household: id.to_string(),
            });
        }
        Ok(h)
    }

    /// Refuses citizens already in another active household (or twice in this list).
    fn check_citizens(
        &self,
        household: &HouseholdId,
        members: u32,
        citizens: &[BlindIndex],
    ) -> Result<(), Rejection> {
        if members == 0 || members > MEMBERS_MAX {
            return Err(Rejection::MembersOutOfRange {
                members,
                max: MEMBERS_MAX,
            });
        }
        if citizens.is_empty() || citizens.len() > members as usize {
            return Err(Rejection::CitizensDoNotFitMembers {
                citizens: citizens.len(),
                members,
            });
        }
        let mut seen = BTreeSet::new();
        for c in citizens {
            if !seen.insert(c) {
                return Err(Rejection::CitizenAlreadyRegistered {
                    household: household.to_string(),
                });
            }
            if let Some(other) = self.citizens.get(c) {
                if other != household {
                    return Err(Rejection::CitizenAlreadyRegistered {
                        household: other.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn check_sealed(sealed: &[u8]) -> Result<(), Rejection> {
    if sealed.is_empty() || sealed.len() > SEALED_BYTES_MAX {
        return Err(Rejection::SealedDataMalformed {
            bytes: sealed.len(),
        });
    }
    Ok(())
}

/// Checks a proposed change; returns the event to record.
pub fn decide(registry: &Registry, change: Change) -> Result<Change, Rejection> {
    match &change {
        Change::Registered {
            household,
            members,
            citizens,
            sealed,
            ..
        }
        | Change::MovedIn {
            household,
            members,
            citizens,
            sealed,
            ..
        } => {
            if registry.households.contains_key(household) {
                return Err(Rejection::HouseholdExists {
                    household: household.to_string(),
                });
            }
            check_sealed(sealed)?;
            registry.check_citizens(household, *members, citizens)?;
            if let Change::MovedIn { from, .. } = &change {
                if from == household {
                    return Err(Rejection::HouseholdExists {
                        household: household.to_string(),
                    });
                }
            }
            Ok(change)
        }
        Change::MembersChanged {
            household,
            members,
            citizens,
            sealed,
            reason,
            on,
        } => {
            let h = registry.changeable(household)?;
            check_not_before(h, *on)?;
            if reason.trim().is_empty() {
                return Err(Rejection::MissingReason);
            }
            check_sealed(sealed)?;
            registry.check_citizens(household, *members, citizens)?;
            Ok(change)
        }
        Change::MemberDied {
            household,
            citizen,
            citizens,
            sealed,
            on,
            ..
        } => {
            let h = registry.changeable(household)?;
            check_not_before(h, *on)?;
            if !h.citizens.contains(citizen) {
                return Err(Rejection::NotAMember {
                    household: household.to_string(),
                });
            }
            if citizens.contains(citizen) {
                return Err(Rejection::NotAMember {
                    household: household.to_string(),
                });
            }
            let members = h.members - 1;
            // The deceased was the only member with a citizen id (the head, leaving young
            // children): the record has no one to head it when sealed again
            // (`PersonalData::after_death`), so the death comes with no sealed data and no
            // citizens, and the household keeps its previous record (the projections keep
            // where its latest sealed data lie) until an officer records its members again
            // with a guardian. Recording the death is what stops the deceased's allowance
            // (a run pays through the month of death), so it is not held back for want of a
            // head; the household, children still living here, stays active.
            let unsealed =
                members > 0 && citizens.is_empty() && sealed.is_empty() && h.citizens.len() == 1;
            if members > 0 && !unsealed {
                check_sealed(sealed)?;
                registry.check_citizens(household, members, citizens)?;
            }
            Ok(Change::MemberDied {
                household: household.clone(),
                citizen: *citizen,
                members,
                citizens: citizens.clone(),
                sealed: sealed.clone(),
                on: *on,
            })
        }
        Change::MovedOut { household, to, on } => {
            let h = registry.changeable(household)?;
            check_not_before(h, *on)?;
            // Its arrival must list a citizen (as a registration does): a move of a
            // household left with none, after the death of its only member with an id,
            // would leave it living nowhere. Its members are recorded again first.
            if h.citizens.is_empty() {
                return Err(Rejection::NoMemberWithCitizenId {
                    household: household.to_string(),
                });
            }
            if to == household {
                return Err(Rejection::HouseholdExists {
                    household: to.to_string(),
                });
            }
            Ok(change)
        }
        Change::Erased {
            household,
            reference,
            ..
        } => {
            let h = registry.households.get(household).ok_or_else(|| {
                Rejection::HouseholdNotRegistered {
                    household: household.to_string(),
                }
            })?;
            if h.erased {
                return Err(Rejection::AlreadyErased {
                    household: household.to_string(),
                });
            }
            // A move seals the new household's data under this one's key: erasing it
            // here would destroy the data of the household it became, which lives on.
            if let Residence::MovedOut { to, .. } = &h.residence {
                return Err(Rejection::HouseholdMovedAway {
                    household: household.to_string(),
                    to: to.to_string(),
                });
            }
            if reference.trim().is_empty() {
                return Err(Rejection::MissingReason);
            }
            Ok(change)
        }
    }
}

fn check_not_before(h: &Household, on: NaiveDate) -> Result<(), Rejection> {
    if on < h.since {
        return Err(Rejection::RegistryBackDated {
            since: h.since,
            effective: on,
        });
    }
    Ok(())
}

/// Records a decided change. Never fails: a change that does not fit (only possible
/// in a log written by something other than `decide`) is ignored for the registry,
/// the same way by every replica, so replay stays deterministic.
pub fn apply(registry: &mut Registry, change: &Change) {
    match change {
        Change::Registered {
            household,
            area,
            members,
            citizens,
            on,
            ..
        }
        | Change::MovedIn {
            household,
            area,
            members,
            citizens,
            on,
            ..
        } => {
            if registry.households.contains_key(household) {
                return;
            }
            for c in citizens {
                registry.citizens.insert(*c, household.clone());
            }
            registry.households.insert(
                household.clone(),
                Household {
                    id: household.clone(),
                    area: *area,
                    members: *members,
                    citizens: citizens.iter().copied().collect(),
                    residence: Residence::Active,
                    since: *on,
                    erased: false,
                    died: BTreeSet::new(),
                },
            );
        }
        Change::MembersChanged {
            household,
            members,
            citizens,
            ..
        }
        | Change::MemberDied {
            household,
            members,
            citizens,
            ..
        } => {
            let Some(h) = registry.households.get_mut(household) else {
                return;
            };
            if h.erased {
                return;
            }
            for c in &h.citizens {
                registry.citizens.remove(c);
            }
            if let Change::MemberDied { citizen, on, .. } = change {
                registry.deaths.insert(*citizen, *on);
                h.died.insert(*citizen);
            }
            h.members = *members;
            h.citizens = citizens.iter().copied().collect();
            if h.members == 0 {
                if let Change::MemberDied { on, .. } = change {
                    h.residence = Residence::Dissolved { on: *on };
                }
                h.citizens.clear();
            }
            for c in &h.citizens {
                registry.citizens.insert(*c, household.clone());
            }
        }
        Change::MovedOut { household, to, on } => {
            let Some(h) = registry.households.get_mut(household) else {
                return;
            };
            if h.erased {
                return;
            }
            for c in &h.citizens {
                registry.citizens.remove(c);
            }
            h.residence = Residence::MovedOut {
                to: to.clone(),
                on: *on,
            };
        }
        Change::Erased { household, .. } => {
            // Its citizens are free, as the country-wide claims release them: the
            // province's book must not keep refusing them, naming the erased household.
            if let Some(h) = registry.households.get_mut(household) {
                h.erased = true;
                for c in std::mem::take(&mut h.citizens) {
                    if registry.citizens.get(&c) == Some(household) {
                        registry.citizens.remove(&c);
                    }
                }
            }
        }
    }
}
