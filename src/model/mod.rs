//! The official service model (the subset this service implements): input validation and the
//! projection of outputs onto their shapes.
//!
//! `pinpoint-sms-voice-v2.subset.json` (beside this file) holds the shapes of the operations this service
//! implements, copied verbatim (minus documentation) from the official
//! `pinpoint-sms-voice-v2.service-2.json`; a test checks the copy still matches the original
//! when `../shared/spec` is present. Every rule the model states about an input is enforced
//! from it: required members, types, enums, string lengths (in characters), list sizes, integer
//! ranges and patterns. Patterns are applied to the whole value (anchored), which is how the
//! service treats them: `[A-Za-z0-9_:/-]+` must not accept `phone-1 OR 1=1`.

use std::collections::HashMap;
use std::sync::OnceLock;

// Some of the model's patterns use look-ahead (`(?!\s*$)[\s\S]+`: not blank), which the
// `regex` crate does not offer; `fancy-regex` runs those and hands the rest to `regex`.
use fancy_regex::Regex;
use serde_json::Value;

/// The embedded model.
const MODEL_JSON: &str = include_str!("pinpoint-sms-voice-v2.subset.json");

/// The most failed members one answer names.
pub const MAX_FIELD_ERRORS: usize = 20;

/// One member that failed validation (`ValidationExceptionField`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the member, e.g. `Filters[0].Values[1]`.
    pub name: String,
    pub message: String,
    pub kind: FieldErrorKind,
}

/// What kind of rule a member broke (chooses the `ValidationException` reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Missing,
    WrongType,
    Constraint,
}

/// The parsed model with its patterns compiled once.
pub struct Model {
    raw: Value,
    patterns: HashMap<String, Regex>,
}

/// The process-wide model.
pub fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        // The model is compiled into the binary and checked by tests: failing to parse it is a
        // build defect, not something input can cause.
        let raw: Value = serde_json::from_str(MODEL_JSON).expect("embedded service model is valid JSON");
        let mut patterns = HashMap::new();
        if let Some(shapes) = raw["shapes"].as_object() {
            for (name, shape) in shapes {
                if let Some(p) = shape["pattern"].as_str() {
                    let re = Regex::new(&format!("^(?:{p})$")).expect("model patterns are valid regular expressions");
                    patterns.insert(name.clone(), re);
                }
            }
        }
        Model { raw, patterns }
    })
}

impl Model {
    /// Names of the operations the model (and so this service) knows.
    pub fn operations(&self) -> impl Iterator<Item = &str> {
        self.raw["operations"]
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys().map(String::as_str))
    }

    /// Whether `operation` is one this service implements.
    pub fn has_operation(&self, operation: &str) -> bool {
        self.raw["operations"].get(operation).is_some()
    }

    /// The output shape of an operation.
    pub fn output_shape(&self, operation: &str) -> Option<&str> {
        self.raw["operations"][operation]["output"]["shape"].as_str()
    }

    /// Whether `operation`'s input shape has the member `member`.
    pub fn has_input_member(&self, operation: &str, member: &str) -> bool {
        self.raw["operations"][operation]["input"]["shape"]
            .as_str()
            .is_some_and(|shape| self.shape(shape)["members"].get(member).is_some())
    }

    /// An operation's input with only the members its shape has: a member the operation does
    /// not have is ignored, as AWS JSON services do, even where another operation's input of the
    /// same form has it (one parsed form serves several operations).
    pub fn known_input(&self, operation: &str, input: Value) -> Value {
        match (self.raw["operations"][operation]["input"]["shape"].as_str(), input) {
            (Some(shape), Value::Object(object)) => self.project(shape, object),
            (_, input) => input,
        }
    }

    /// Keeps only the members `shape` has: renderers build a superset, the model decides.
    pub fn project(&self, shape: &str, mut object: serde_json::Map<String, Value>) -> Value {
        match self.shape(shape)["members"].as_object() {
            Some(members) => object.retain(|k, _| members.contains_key(k)),
            None => object.clear(),
        }
        Value::Object(object)
    }

    /// The model as JSON (for the drift test).
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// Checks an operation's input document; returns every broken rule.
    ///
    /// At most [`MAX_FIELD_ERRORS`] + 1 errors are collected (one more tells that there are more
    /// than are reported): a body of 80,000 bad list items is refused as fast as one, without an
    /// answer 150 times its size.
    pub fn validate_input(&self, operation: &str, input: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(shape) = self.raw["operations"][operation]["input"]["shape"].as_str() {
            self.check_structure(shape, input, "", &mut errors);
        }
        errors.truncate(MAX_FIELD_ERRORS + 1);
        errors
    }

    fn shape(&self, name: &str) -> &Value {
        &self.raw["shapes"][name]
    }

    fn check_structure(&self, shape_name: &str, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
        let shape = self.shape(shape_name);
        let Some(obj) = value.as_object() else {
            errors.push(wrong_type(path, "a structure"));
            return;
        };
        let members = shape["members"].as_object();
        for req in shape["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if obj.get(req).is_none_or(Value::is_null) {
                errors.push(FieldError {
                    name: join(path, req),
                    message: "Member must not be null".into(),
                    kind: FieldErrorKind::Missing,
                });
            }
        }
        for (name, member) in members.into_iter().flatten() {
            let Some(v) = obj.get(name).filter(|v| !v.is_null()) else {
                continue;
            };
            if let Some(target) = member["shape"].as_str() {
                self.check(target, v, &join(path, name), errors);
            }
        }
        // Unknown members are ignored, as AWS JSON services do for forward compatibility.
    }

    fn check(&self, shape_name: &str, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
        if errors.len() > MAX_FIELD_ERRORS {
            return;
        }
        let shape = self.shape(shape_name);
        let constraint = |message: String| FieldError {
            name: path.to_string(),
            message,
            kind: FieldErrorKind::Constraint,
        };
        match shape["type"].as_str().unwrap_or_default() {
            "structure" => self.check_structure(shape_name, value, path, errors),
            "string" => {
                let Some(s) = value.as_str() else {
                    errors.push(wrong_type(path, "a string"));
                    return;
                };
                let len = s.chars().count() as u64;
                if let Some(min) = shape["min"].as_u64().filter(|m| len < *m) {
                    errors.push(constraint(format!("Member must have length greater than or equal to {min}")));
                }
                if let Some(max) = shape["max"].as_u64().filter(|m| len > *m) {
                    errors.push(constraint(format!("Member must have length less than or equal to {max}")));
                }
                if let Some(values) = shape["enum"].as_array() {
                    if !values.iter().any(|v| v.as_str() == Some(s)) {
                        let allowed: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
                        errors.push(constraint(format!("Member must satisfy enum value set: [{}]", allowed.join(", "))));
                    }
                }
                if let Some(re) = self.patterns.get(shape_name) {
                    // A pattern that gives up (its backtracking limit, on hostile input) is a
                    // value that does not match.
                    if !re.is_match(s).unwrap_or(false) {
                        errors.push(constraint(format!(
                            "Member must satisfy regular expression pattern: {}",
                            shape["pattern"].as_str().unwrap_or_default()
                        )));
                    }
                }
            }
            "boolean" if !value.is_boolean() => errors.push(wrong_type(path, "a boolean")),
            "integer" | "long" => {
                let Some(n) = value.as_i64() else {
                    errors.push(wrong_type(path, "an integer"));
                    return;
                };
                if let Some(min) = shape["min"].as_i64().filter(|m| n < *m) {
                    errors.push(constraint(format!("Member must have value greater than or equal to {min}")));
                }
                if let Some(max) = shape["max"].as_i64().filter(|m| n > *m) {
                    errors.push(constraint(format!("Member must have value less than or equal to {max}")));
                }
            }
            "list" => {
                let Some(items) = value.as_array() else {
                    errors.push(wrong_type(path, "a list"));
                    return;
                };
                let len = items.len() as u64;
                if let Some(min) = shape["min"].as_u64().filter(|m| len < *m) {
                    errors.push(constraint(format!("Member must have length greater than or equal to {min}")));
                }
                if let Some(max) = shape["max"].as_u64().filter(|m| len > *m) {
                    errors.push(constraint(format!("Member must have length less than or equal to {max}")));
                }
                if let Some(member) = shape["member"]["shape"].as_str() {
                    for (i, item) in items.iter().enumerate() {
                        if errors.len() > MAX_FIELD_ERRORS {
                            break;
                        }
                        self.check(member, item, &format!("{path}[{i}]"), errors);
                    }
                }
            }
            "map" => {
                let Some(entries) = value.as_object() else {
                    errors.push(wrong_type(path, "a map"));
                    return;
                };
                let len = entries.len() as u64;
                if let Some(min) = shape["min"].as_u64().filter(|m| len < *m) {
                    errors.push(constraint(format!("Member must have length greater than or equal to {min}")));
                }
                if let Some(max) = shape["max"].as_u64().filter(|m| len > *m) {
                    errors.push(constraint(format!("Member must have length less than or equal to {max}")));
                }
                let (key_shape, value_shape) = (shape["key"]["shape"].as_str(), shape["value"]["shape"].as_str());
                for (k, v) in entries {
                    if errors.len() > MAX_FIELD_ERRORS {
                        break;
                    }
                    if let Some(ks) = key_shape {
                        self.check(ks, &Value::String(k.clone()), &format!("{path}.{k}"), errors);
                    }
                    if let Some(vs) = value_shape {
                        self.check(vs, v, &format!("{path}.{k}"), errors);
                    }
                }
            }
            "timestamp" if !value.is_number() => errors.push(wrong_type(path, "a timestamp in epoch seconds")),
            _ => {}
        }
    }
}

fn wrong_type(path: &str, what: &str) -> FieldError {
    FieldError {
        name: if path.is_empty() { "(body)".into() } else { path.to_string() },
        message: format!("Member must be {what}"),
        kind: FieldErrorKind::WrongType,
    }
}

fn join(path: &str, member: &str) -> String {
    if path.is_empty() {
        member.to_string()
    } else {
        format!("{path}.{member}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn the_implemented_operations_are_modelled() {
        let ops: Vec<&str> = model().operations().collect();
        assert_eq!(ops.len(), 34, "{ops:?}");
        assert!(model().has_operation("DeleteOptOutList"));
        assert!(model().has_operation("ReleasePhoneNumber"));
        assert!(!model().has_operation("CreateConfigurationSet"));
    }

    #[test]
    fn release_requires_a_well_formed_id() {
        let m = model();
        assert!(m
            .validate_input("ReleasePhoneNumber", &json!({"PhoneNumberId": "phone-abc"}))
            .is_empty());
        let e = m.validate_input("ReleasePhoneNumber", &json!({}));
        assert_eq!(names(&e), ["PhoneNumberId"]);
        assert_eq!(e[0].kind, FieldErrorKind::Missing);
        let e = m.validate_input("ReleasePhoneNumber", &json!({"PhoneNumberId": "bad id!"}));
        assert_eq!(e[0].kind, FieldErrorKind::Constraint);
        let e = m.validate_input("ReleasePhoneNumber", &json!({"PhoneNumberId": "a".repeat(257)}));
        assert!(e[0].message.contains("less than or equal to 256"), "{e:?}");
        let e = m.validate_input("ReleasePhoneNumber", &json!({"PhoneNumberId": 5}));
        assert_eq!(e[0].kind, FieldErrorKind::WrongType);
    }

    #[test]
    fn every_bad_member_is_named() {
        let e = model().validate_input(
            "RequestPhoneNumber",
            &json!({"IsoCountryCode": "usa", "MessageType": "LOUD", "NumberCapabilities": [], "Tags": [{"Key": ""}]}),
        );
        let mut n = names(&e);
        n.sort();
        assert_eq!(
            n,
            [
                "IsoCountryCode",
                "IsoCountryCode",
                "MessageType",
                "NumberCapabilities",
                "NumberType",
                "Tags[0].Key",
                "Tags[0].Key",
                "Tags[0].Value"
            ]
        );
    }

    #[test]
    fn nested_filters_and_ranges() {
        let e = model().validate_input(
            "DescribePhoneNumbers",
            &json!({"MaxResults": 0, "Filters": [{"Name": "colour", "Values": ["a b"]}], "PhoneNumberIds": ["1","2","3","4","5","6"]}),
        );
        let mut n = names(&e);
        n.sort();
        assert_eq!(n, ["Filters[0].Name", "Filters[0].Values[0]", "MaxResults", "PhoneNumberIds"]);
    }

    /// The embedded subset must be exactly what the official model says for these shapes.
    #[test]
    fn embedded_model_matches_the_official_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/spec/pinpoint-sms-voice-v2.service-2.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            // The official file lives beside the repository, not in it: a clone alone has only
            // the embedded copy, which the other tests here check rule by rule.
            eprintln!(
                "SKIPPED: {} is not here; the embedded model is not compared with it",
                path.display()
            );
            return;
        };
        let official: Value = serde_json::from_str(&text).expect("official model parses");
        for (name, shape) in model().raw()["shapes"].as_object().expect("shapes") {
            let mut theirs = official["shapes"][name].clone();
            strip_docs(&mut theirs);
            assert_eq!(&theirs, shape, "shape {name} differs from the official model");
        }
    }

    fn strip_docs(v: &mut Value) {
        if let Some(o) = v.as_object_mut() {
            o.remove("documentation");
            for (_, child) in o.iter_mut() {
                strip_docs(child);
            }
        }
    }
}
