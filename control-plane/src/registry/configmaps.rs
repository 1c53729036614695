//! ConfigMap (configmaps/v1): strategy and discovery entry.

use serde_json::{Value, json};

use super::podspec::checks::{self, obj};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    short_names: &["cm"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "configmaps",
    strategy: &Strategy,
};

pub struct Strategy;

/// The most data a ConfigMap or Secret may hold (`core.MaxSecretSize`).
pub(crate) const MAX_DATA_SIZE: usize = 1024 * 1024;

/// The message for changes to an object marked `immutable: true`.
pub(crate) const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Data",
        "string",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
    ),
    AGE_COLUMN,
];

impl super::Strategy for Strategy {
    fn validate(&self, o: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        if let Some(old) = old {
            check_immutable(o, old, &["data", "binaryData"], errs);
        }
        let data = obj(o, "data");
        let binary = obj(o, "binaryData");
        let mut total = 0;
        for (key, value) in data.into_iter().flatten() {
            for msg in checks::config_key(key) {
                errs.invalid(format!("data[{key}]"), json!(key), msg);
            }
            if binary.is_some_and(|b| b.contains_key(key)) {
                errs.invalid(format!("data[{key}]"), json!(key), "duplicate of key present in binaryData");
            }
            total += value.as_str().map_or(0, str::len);
        }
        for (key, value) in binary.into_iter().flatten() {
            for msg in checks::config_key(key) {
                errs.invalid(format!("binaryData[{key}]"), json!(key), msg);
            }
            match checks::base64_decode(value.as_str().unwrap_or("")) {
                Ok(bytes) => total += bytes.len(),
                Err(msg) => errs.invalid(format!("binaryData[{key}]"), json!("<binary data>"), msg),
            }
        }
        if total > MAX_DATA_SIZE {
            checks::too_long(errs, "", MAX_DATA_SIZE);
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, o: &Value, now: Timestamp) -> Vec<Value> {
        let count = obj(o, "data").map_or(0, |m| m.len()) + obj(o, "binaryData").map_or(0, |m| m.len());
        vec![super::name_cell(o), json!(count), super::age_cell(o, now)]
    }
}

/// The update rules of `immutable: true` ConfigMaps and Secrets: the flag stays set and the
/// listed data fields stay as they are.
pub(crate) fn check_immutable(new: &Value, old: &Value, fields: &[&str], errs: &mut FieldErrors) {
    if !checks::is_true(old, "immutable") {
        return;
    }
    if !checks::is_true(new, "immutable") {
        errs.forbidden("immutable", IMMUTABLE_SET);
    }
    for field in fields {
        let empty = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_object().is_some_and(|m| m.is_empty()));
        let (n, o) = (new.get(*field), old.get(*field));
        if n != o && !(empty(n) && empty(o)) {
            errs.forbidden(*field, IMMUTABLE_SET);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn errors(o: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(o, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn keys_size_and_immutability() {
        assert!(errors(&json!({"data": {"app.properties": "a=b", "KEY_1": "x"}}), None).is_empty());
        assert_eq!(
            errors(&json!({"data": {"bad key": "x"}}), None),
            vec![
                "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
            ]
        );
        let big = json!({"data": {"a": "x".repeat(MAX_DATA_SIZE + 1)}});
        assert_eq!(errors(&big, None), vec![": Too long: may not be more than 1048576 bytes"]);
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let new = json!({"immutable": true, "data": {"a": "2"}});
        assert_eq!(errors(&new, Some(&old)), vec!["data: Forbidden: field is immutable when `immutable` is set"]);
        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1"}, "binaryData": {"b": "AAE="}});
        let now = Timestamp::now();
        assert_eq!(Strategy.cells(&cm, now)[1], json!(2));
    }
}
