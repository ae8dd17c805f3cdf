//! The supply of E.164 numbers: choosing a fresh one for `RequestPhoneNumber`, and listing
//! them for `ListAvailablePhoneNumbers` ([`Listing`]).
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

/// Every way to place a preferred value into `template` (each value at each offset the
/// preference allows where the template has `X`s or the same digits), as the template's bytes
/// with the value's digits in place; the template alone when there is no preference.
fn placements(template: &str, preference: Option<&NumberPreference>) -> Vec<Vec<u8>> {
    let digits: Vec<u8> = template.bytes().collect();
    let Some(p) = preference else { return vec![digits] };
    let body = digits.len().saturating_sub(1); // after '+'
    let mut placed = Vec::new();
    for value in &p.values {
        // A `Contains` value with its `+` can only be at the start of the number.
        let anchored = value.starts_with('+');
        let value: Vec<u8> = value.bytes().filter(u8::is_ascii_digit).collect();
        if value.len() > body {
            continue;
        }
        let offsets: Vec<usize> = match p.kind {
            PreferenceType::StartsWith => vec![0],
            PreferenceType::EndsWith => vec![body - value.len()],
            PreferenceType::ExactMatch if value.len() == body => vec![0],
            PreferenceType::ExactMatch => vec![],
            PreferenceType::Contains if anchored => vec![0],
            PreferenceType::Contains => (0..=body - value.len()).collect(),
        };
        for off in offsets {
            let fits = value.iter().enumerate().all(|(i, d)| {
                let t = digits[1 + off + i];
                t == b'X' || t == *d
            });
            if fits {
                let mut with = digits.clone();
                with[1 + off..1 + off + value.len()].copy_from_slice(&value);
                if !placed.contains(&with) {
                    placed.push(with);
                }
            }
        }
    }
    placed
}

/// Fills a template's `X`s, placing a preferred value where the preference says.
fn fill(template: &str, preference: Option<&NumberPreference>, rng: &mut impl Rng) -> Option<String> {
    let mut placed = placements(template, preference);
    if placed.is_empty() {
        return None;
    }
    let chosen = rng.gen_range(0..placed.len());
    let mut digits = placed.swap_remove(chosen);
    for d in digits.iter_mut().filter(|d| **d == b'X') {
        *d = b'0' + rng.gen_range(0..10u8);
    }
    String::from_utf8(digits).ok()
}

/// Where a listing of the numbers a supply can make stands: it began at `start` of the
/// supply's order, has made (looked at) `index` numbers since, and listed `listed` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListingCursor {
    pub start: u128,
    pub index: u64,
    pub listed: u64,
}

impl ListingCursor {
    /// A listing from `start` (any number: it is taken modulo the supply's size).
    pub fn from_start(start: u128) -> Self {
        ListingCursor {
            start,
            ..Default::default()
        }
    }

    /// As a page token carries it.
    pub fn to_token(self) -> String {
        format!("{}:{}:{}", self.start, self.index, self.listed)
    }

    pub fn from_token(token: &str) -> Option<Self> {
        let mut parts = token.split(':');
        let cursor = ListingCursor {
            start: parts.next()?.parse().ok()?,
            index: parts.next()?.parse().ok()?,
            listed: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(cursor)
    }
}

/// Every number a supply can make that matches a preference, each once, from a cursor:
/// `ListAvailablePhoneNumbers`. The supply's numbers are in one fixed order, taken as a circle:
/// a listing begins anywhere on it (its cursor's `start`) and goes round once at most.
///
/// The patterns (a template with the preferred digits placed) take turns, one number each, so
/// that a page shows every area code of the supply. A pattern with `f` free digits makes, at
/// its `i`th turn, the number `i × STRIDE mod 10^f`: STRIDE is coprime with 10, so that is
/// every number of the pattern once, not in counting order (a listing of `+1206...` numbers
/// all beginning `+12060000` would be of little use). A number two patterns make (a
/// `Contains` value found at two offsets) is made by the first of them only.
pub struct Listing {
    patterns: Vec<Vec<u8>>,
    /// The turns times the patterns: the most numbers a pattern makes, for each pattern.
    size: u128,
    cursor: ListingCursor,
}

/// A multiplier coprime with 10 (so with every 10^f), large enough to scatter the digits.
const STRIDE: u128 = 7_368_787;
/// How far apart the patterns start, so that two area codes do not show the same digits.
const SHIFT: u128 = 1_234_567;

impl Listing {
    pub fn new(templates: &[String], preference: Option<&NumberPreference>, from: ListingCursor) -> Self {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for template in templates {
            for p in placements(template, preference) {
                // A pattern whose every number an earlier one makes adds nothing (`Contains`
                // of a digit the template has: the template itself comes first).
                if !patterns.iter().any(|earlier| Self::fits(earlier, &p)) {
                    patterns.push(p);
                }
            }
        }
        let most = patterns.iter().filter_map(|p| Self::count(p)).max().unwrap_or(0);
        let size = most.saturating_mul(patterns.len() as u128);
        Listing {
            patterns,
            size,
            cursor: from,
        }
    }

    /// Where the next number would come from.
    pub fn cursor(&self) -> ListingCursor {
        self.cursor
    }

    /// Whether every number has been made (the listing went round once).
    pub fn is_done(&self) -> bool {
        u128::from(self.cursor.index) >= self.size
    }

    /// How many numbers `pattern` makes (`None`: more than can be counted, so none are made).
    fn count(pattern: &[u8]) -> Option<u128> {
        10u128.checked_pow(pattern.iter().filter(|d| **d == b'X').count() as u32)
    }

    /// The number the `which`th pattern makes at its `turn`, if it makes that many.
    fn number(pattern: &[u8], which: usize, turn: u128) -> Option<Vec<u8>> {
        let count = Self::count(pattern)?;
        if turn >= count {
            return None;
        }
        let mut n = (turn * STRIDE + which as u128 * SHIFT) % count;
        let mut digits = pattern.to_vec();
        for d in digits.iter_mut().rev().filter(|d| **d == b'X') {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        Some(digits)
    }

    /// Whether `number` fits `pattern` (the pattern's fixed digits are the number's; of two
    /// patterns: whether every number of the second is one of the first).
    fn fits(pattern: &[u8], number: &[u8]) -> bool {
        pattern.len() == number.len() && pattern.iter().zip(number).all(|(p, n)| *p == b'X' || p == n)
    }
}

impl Iterator for Listing {
    /// The next number, valid or not (the caller checks it against the numbering plan and the
    /// numbers already held); `None` inside when this turn makes none (the pattern has made
    /// all its numbers, or an earlier pattern makes this one), so that a caller bounding its
    /// work counts it too.
    type Item = Option<String>;

    fn next(&mut self) -> Option<Option<String>> {
        if self.is_done() {
            return None;
        }
        let at = (self.cursor.start % self.size + u128::from(self.cursor.index)) % self.size;
        self.cursor.index += 1;
        let patterns = self.patterns.len() as u128;
        let (turn, which) = (at / patterns, (at % patterns) as usize);
        let made = Self::number(&self.patterns[which], which, turn)
            .filter(|number| !self.patterns[..which].iter().any(|p| Self::fits(p, number)))
            .and_then(|number| String::from_utf8(number).ok());
        Some(made)
    }
}

/// The ISO 3166-1 country of an E.164 number, if libphonenumber knows it.
pub fn country_of(e164: &str) -> Option<String> {
    let parsed = phonenumber::parse(None, e164).ok()?;
    parsed.country().id().map(|id: Id| id.as_ref().to_string())
}

/// Whether libphonenumber accepts `e164` as a valid number of some country.
pub fn is_valid_number(e164: &str) -> bool {
    phonenumber::parse(None, e164).is_ok_and(|parsed| parsed.is_valid())
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

    /// The numbers a listing makes from `templates` and `preference`, from `from` on: each
    /// turn's number, if it makes one.
    fn listed(templates: &[&str], preference: Option<&NumberPreference>, from: ListingCursor) -> Listing {
        let templates: Vec<String> = templates.iter().map(|t| t.to_string()).collect();
        Listing::new(&templates, preference, from)
    }

    /// A listing makes every number of its templates once, each fitting its template, and
    /// then ends; a page resumed from its cursor goes on with the same numbers.
    #[test]
    fn a_listing_makes_every_number_once_and_resumes_where_it_stood() {
        let templates = ["+1206555XXXX", "+1425555XXX1"];
        let all: Vec<String> = listed(&templates, None, ListingCursor::default()).flatten().collect();
        assert_eq!(all.len(), 10_000 + 1_000);
        let unique: std::collections::BTreeSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "a number made twice");
        assert!(all
            .iter()
            .all(|n| n.starts_with("+1206555") || (n.starts_with("+1425555") && n.ends_with('1'))));
        assert_ne!(
            all[..10].iter().filter(|n| n.starts_with("+1206")).count(),
            10,
            "the area codes take turns"
        );

        let mut first = listed(&templates, None, ListingCursor::default());
        let page: Vec<Option<String>> = first.by_ref().take(20).collect();
        let resumed = ListingCursor::from_token(&first.cursor().to_token()).expect("a token reads back");
        let rest: Vec<Option<String>> = listed(&templates, None, resumed).take(30).collect();
        let whole: Vec<Option<String>> = listed(&templates, None, ListingCursor::default()).take(50).collect();
        assert_eq!([page, rest].concat(), whole);
        let elsewhere: Vec<String> = listed(&templates, None, ListingCursor::from_start(u128::MAX - 3))
            .flatten()
            .collect();
        assert_eq!(elsewhere.len(), all.len(), "a listing begun elsewhere goes round once");
        assert_ne!(elsewhere[..10], all[..10]);
        assert_eq!(elsewhere.iter().collect::<std::collections::BTreeSet<_>>().len(), all.len());
        assert_eq!(ListingCursor::from_token("7:1"), None);
        assert_eq!(ListingCursor::from_token("a:1:2"), None);
        assert_eq!(ListingCursor::from_token("1:2:3:4"), None);
    }

    /// With a preference, only numbers that have the digits where it says are made; a number
    /// with the digits at two places is made once; an exact number is made once, or not at all.
    #[test]
    fn a_listing_honours_the_preference() {
        let pref = |kind, v: &str| NumberPreference {
            kind,
            values: vec![v.to_string()],
        };
        let contains = pref(PreferenceType::Contains, "77");
        let all: Vec<String> = listed(&["+1206555XXXX"], Some(&contains), ListingCursor::default())
            .flatten()
            .collect();
        let expected = (0..10_000).filter(|n| format!("+1206555{n:04}").contains("77")).count();
        assert_eq!(all.len(), expected);
        assert_eq!(all.iter().collect::<std::collections::BTreeSet<_>>().len(), expected);
        let exact = pref(PreferenceType::ExactMatch, "+12065550123");
        let made: Vec<String> = listed(&["+1206555XXXX", "+1206XXXXXXX"], Some(&exact), ListingCursor::default())
            .flatten()
            .collect();
        assert_eq!(made, ["+12065550123"]);
        let elsewhere = pref(PreferenceType::StartsWith, "+44");
        assert_eq!(listed(&["+1206555XXXX"], Some(&elsewhere), ListingCursor::default()).count(), 0);
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
