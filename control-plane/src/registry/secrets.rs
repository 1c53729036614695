//! Secret (secrets/v1): strategy and discovery entry.
//!
//! Defaulting sets `type: Opaque` and folds `stringData` into `data` (base64), as the v1
//! conversion does, so `stringData` is never stored.

use serde_json::{Value, json};

use super::configmaps::{MAX_DATA_SIZE, check_immutable};
use super::podspec::checks::{self, child_obj, obj, s};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "secrets",
    strategy: &Strategy,
};

pub struct Strategy;

const REDACTED: &str = "<secret contents redacted>";

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
    ),
    Column::new(
        "Data",
        "string",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
    ),
    AGE_COLUMN,
];

impl super::Strategy for Strategy {
    fn default(&self, o: &mut Value) {
        let Some(m) = o.as_object_mut() else { return };
        checks::default_field(m, "type", json!("Opaque"));
        if let Some(Value::Object(string_data)) = m.remove("stringData")
            && !string_data.is_empty()
            && let Some(data) = child_obj(m, "data")
        {
            for (k, v) in string_data {
                let text = v.as_str().unwrap_or("");
                data.insert(k, json!(checks::base64_encode(text.as_bytes())));
            }
        }
    }

    fn validate(&self, o: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        if let Some(old) = old {
            let (t, ot) = (s(o, "type"), s(old, "type"));
            if t != ot {
                errs.invalid("type", json!(t), "field is immutable");
            }
            check_immutable(o, old, &["data"], errs);
        }
        let mut decoded = std::collections::BTreeMap::new();
        let mut total = 0;
        for (key, value) in obj(o, "data").into_iter().flatten() {
            for msg in checks::config_key(key) {
                errs.invalid(format!("data[{key}]"), json!(key), msg);
            }
            match checks::base64_decode(value.as_str().unwrap_or("")) {
                Ok(bytes) => {
                    total += bytes.len();
                    decoded.insert(key.as_str(), bytes);
                }
                Err(msg) => errs.invalid(format!("data[{key}]"), json!(REDACTED), msg),
            }
        }
        if total > MAX_DATA_SIZE {
            checks::too_long(errs, "data", MAX_DATA_SIZE);
        }
        let has = |k: &str| obj(o, "data").is_some_and(|d| d.contains_key(k));
        let json_key = |errs: &mut FieldErrors, key: &str| {
            if !has(key) {
                errs.required(format!("data[{key}]"), "");
            } else if let Some(bytes) = decoded.get(key)
                && let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(bytes)
            {
                errs.invalid(format!("data[{key}]"), json!(REDACTED), e.to_string());
            }
        };
        match s(o, "type") {
            "kubernetes.io/service-account-token" => {
                let annotated = o
                    .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                    .and_then(Value::as_str)
                    .is_some_and(|v| !v.is_empty());
                if !annotated {
                    errs.required("metadata.annotations[kubernetes.io/service-account.name]", "");
                }
            }
            "kubernetes.io/dockercfg" => json_key(errs, ".dockercfg"),
            "kubernetes.io/dockerconfigjson" => json_key(errs, ".dockerconfigjson"),
            "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
                errs.required("data[username]", "");
                errs.required("data[password]", "");
            }
            "kubernetes.io/ssh-auth" if decoded.get("ssh-privatekey").is_none_or(Vec::is_empty) => {
                errs.required("data[ssh-privatekey]", "");
            }
            "kubernetes.io/tls" => {
                for key in ["tls.crt", "tls.key"] {
                    if !has(key) {
                        errs.required(format!("data[{key}]"), "");
                    }
                }
            }
            _ => {}
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, o: &Value, now: Timestamp) -> Vec<Value> {
        let count = obj(o, "data").map_or(0, |m| m.len());
        vec![super::name_cell(o), json!(s(o, "type")), json!(count), super::age_cell(o, now)]
    }

    fn field(&self, o: &Value, path: &str) -> Option<String> {
        (path == "type").then(|| s(o, "type").to_string())
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
    fn string_data_is_folded_into_data() {
        let mut secret =
            json!({"metadata": {"name": "s"}, "data": {"a": "YQ=="}, "stringData": {"password": "hunter2"}});
        Strategy.default(&mut secret);
        assert_eq!(
            secret,
            json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "YQ==", "password": "aHVudGVyMg=="}})
        );
        assert!(errors(&secret, None).is_empty());
        assert_eq!(Strategy.field(&secret, "type").as_deref(), Some("Opaque"));
        assert_eq!(Strategy.cells(&secret, Timestamp::now())[1..3], [json!("Opaque"), json!(2)]);
    }

    #[test]
    fn type_rules() {
        assert_eq!(
            errors(&json!({"type": "Opaque", "data": {"k": "not base64!"}}), None),
            vec!["data[k]: Invalid value: \"<secret contents redacted>\": illegal base64 data at input byte 3"]
        );
        assert_eq!(
            errors(&json!({"type": "kubernetes.io/dockerconfigjson", "data": {}}), None),
            vec!["data[.dockerconfigjson]: Required value"]
        );
        let bad_json = json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": checks::base64_encode(b"{nope")}});
        let e = errors(&bad_json, None);
        assert!(e[0].starts_with("data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": "), "{e:?}");
        let good = json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": checks::base64_encode(b"{\"auths\":{}}")}});
        assert!(errors(&good, None).is_empty());
        let old = json!({"type": "Opaque"});
        assert_eq!(
            errors(&json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}), Some(&old)),
            vec!["type: Invalid value: \"kubernetes.io/tls\": field is immutable"]
        );
    }
}
