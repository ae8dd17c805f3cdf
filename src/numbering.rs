//! Choosing a fresh E.164 number for `RequestPhoneNumber`.
//!
//! The configuration lists, per country and number type, templates such as `+1206XXXXXXX`. A
//! candidate fills the `X`s with random digits (honouring a `NumberPreference` if one is given)
//! and is kept only if libphonenumber (the `phonenumber` crate) says it is a valid number of
//! that country and of the right kind. Uniqueness across all accounts is enforced by the event
//! store (a unique claim on the number), not here.

use std::collections::BTreeMap;

use phonenumber::country::Id;
use rand::Rng;

use crate::config::NumberSupply;
use crate::domain::types::NumberType;

/// How a `NumberPreference` filter value must appear in the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreferenceType {
    StartsWith,
    EndsWith,
    Contains,
    ExactMatch,
}

impl PreferenceType {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "StartsWith" => PreferenceType::StartsWith,
            "EndsWith" => PreferenceType::EndsWith,
            "Contains" => PreferenceType::Contains,
            "ExactMatch" => PreferenceType::ExactMatch,
            _ => return None,
        })
    }
}

/// A caller's wish for the digits of the number: any of `values`, placed as `kind` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberPreference {
    pub kind: PreferenceType,
    pub values: Vec<String>,
}

/// The configured supply of numbers.
#[derive(Debug, Clone)]
pub struct NumberPicker {
    supply: BTreeMap<String, BTreeMap<NumberType, NumberSupply>>,
}

/// How many candidates to try before telling the caller no number fits.
const ATTEMPTS: usize = 256;

impl NumberPicker {
    pub fn new(supply: BTreeMap<String, BTreeMap<NumberType, NumberSupply>>) -> Self {
        NumberPicker { supply }
    }

    /// The supply of a country and type, if the service offers it.
    pub fn supply(&self, iso_country_code: &str, number_type: NumberType) -> Option<&NumberSupply> {
        self.supply.get(iso_country_code)?.get(&number_type)
    }

    /// A valid number of that country and type, matching the preference, or `None` when no
    /// candidate fits after a bounded number of tries.
    pub fn candidate(
        &self,
        iso_country_code: &str,
        number_type: NumberType,
        preference: Option<&NumberPreference>,
        rng: &mut impl Rng,
    ) -> Option<String> {
        let supply = self.supply(iso_country_code, number_type)?;
        for _ in 0..ATTEMPTS {
            let template = &supply.templates[rng.gen_range(0..supply.templates.len())];
            let Some(candidate) = fill(template, preference, rng) else {
                continue;
            };
            if is_valid_for(&candidate, iso_country_code, number_type) {
                return Some(candidate);
            }
        }
        None
    }
}

/// Fills a template's `X`s, placing a preferred value where the preference says.
fn fill(template: &str, preference: Option<&NumberPreference>, rng: &mut impl Rng) -> Option<String> {
    let mut digits: Vec<u8> = template.bytes().collect();
    if let Some(p) = preference {
        let value = &p.values[rng.gen_range(0..p.values.len())];
        let value: Vec<u8> = value.bytes().filter(u8::is_ascii_digit).collect();
        let body = digits.len() - 1; // after '+'
        if value.len() > body {
            return None;
        }
        let offsets: Vec<usize> = match p.kind {
            PreferenceType::StartsWith => vec![0],
            PreferenceType::EndsWith => vec![body - value.len()],
            PreferenceType::ExactMatch if value.len() == body => vec![0],
            PreferenceType::ExactMatch => vec![],
            PreferenceType::Contains => (0..=body - value.len()).collect(),
        };
        let fits = |off: usize| {
            value.iter().enumerate().all(|(i, d)| {
                let t = digits[1 + off + i];
                t == b'X' || t == *d
            })
        };
        let usable: Vec<usize> = offsets.into_iter().filter(|o| fits(*o)).collect();
        if usable.is_empty() {
            return None;
        }
        let off = usable[rng.gen_range(0..usable.len())];
        for (i, d) in value.iter().enumerate() {
            digits[1 + off + i] = *d;
        }
    }
    for d in digits.iter_mut().filter(|d| **d == b'X') {
        *d = b'0' + rng.gen_range(0..10u8);
    }
    String::from_utf8(digits).ok()
}

/// The ISO 3166-1 country of an E.164 number, if libphonenumber knows it.
pub fn country_of(e164: &str) -> Option<String> {
    let parsed = phonenumber::parse(None, e164).ok()?;
    parsed.country().id().map(|id: Id| id.as_ref().to_string())
}

/// Whether libphonenumber accepts `e164` as a number of that country and kind.
pub fn is_valid_for(e164: &str, iso_country_code: &str, number_type: NumberType) -> bool {
    let Ok(parsed) = phonenumber::parse(None, e164) else { return false };
    let country_ok = parsed.country().id().is_some_and(|id: Id| id.as_ref() == iso_country_code);
    if !country_ok || !parsed.is_valid() {
        return false;
    }
    let kind = parsed.number_type(&phonenumber::metadata::DATABASE);
    match number_type {
        NumberType::TollFree => kind == phonenumber::Type::TollFree,
        _ => matches!(
            kind,
            phonenumber::Type::FixedLine | phonenumber::Type::Mobile | phonenumber::Type::FixedLineOrMobile
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numbers_country_is_known() {
        assert_eq!(country_of("+447400123456").as_deref(), Some("GB"));
        assert_eq!(country_of("+12065550100").as_deref(), Some("US"));
        assert_eq!(country_of("not a number"), None);
    }
    use crate::config::Config;
    use rand::SeedableRng;

    fn picker() -> NumberPicker {
        NumberPicker::new(Config::defaults_with_data_dir("/tmp/unused").expect("config").numbering)
    }

    #[test]
    fn every_configured_supply_yields_valid_numbers() {
        let p = picker();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (country, types) in &p.supply {
            for number_type in types.keys() {
                for _ in 0..20 {
                    let n = p
                        .candidate(country, *number_type, None, &mut rng)
                        .unwrap_or_else(|| panic!("{country} {number_type}"));
                    assert!(is_valid_for(&n, country, *number_type), "{n}");
                }
            }
        }
    }

    #[test]
    fn preferences_place_the_digits() {
        let p = picker();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let pref = |kind, v: &str| NumberPreference {
            kind,
            values: vec![v.to_string()],
        };
        let n = p
            .candidate(
                "US",
                NumberType::LongCode,
                Some(&pref(PreferenceType::StartsWith, "+1415")),
                &mut rng,
            )
            .expect("starts");
        assert!(n.starts_with("+1415"), "{n}");
        let n = p
            .candidate("US", NumberType::LongCode, Some(&pref(PreferenceType::EndsWith, "4242")), &mut rng)
            .expect("ends");
        assert!(n.ends_with("4242"), "{n}");
        let n = p
            .candidate("US", NumberType::LongCode, Some(&pref(PreferenceType::Contains, "777")), &mut rng)
            .expect("contains");
        assert!(n.contains("777"), "{n}");
        let n = p.candidate(
            "US",
            NumberType::LongCode,
            Some(&pref(PreferenceType::ExactMatch, "+14155550123")),
            &mut rng,
        );
        assert!(n.is_none() || n.as_deref() == Some("+14155550123"));
        assert_eq!(
            p.candidate("US", NumberType::LongCode, Some(&pref(PreferenceType::StartsWith, "+44")), &mut rng),
            None
        );
        assert_eq!(p.candidate("ZZ", NumberType::LongCode, None, &mut rng), None);
    }
}
