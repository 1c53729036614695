//! Field errors and the name/label rules of Kubernetes' validation, shared by every strategy.
//!
//! A [`FieldErrors`] collects errors with their JSON path; the REST layer turns a non-empty list
//! into a 422 `Status` with one cause per error, worded as kube-apiserver words them.

use std::fmt::{self, Display};

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
}

impl ErrorKind {
    /// The `reason` of the Status cause.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Invalid => "FieldValueInvalid",
            ErrorKind::NotSupported => "FieldValueNotSupported",
            ErrorKind::Duplicate => "FieldValueDuplicate",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::TooLong => "FieldValueTooLong",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub kind: ErrorKind,
    /// JSON path as Kubernetes prints it, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
    /// The offending value, when there is one to show.
    pub value: Option<Value>,
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field)?;
        match self.kind {
            ErrorKind::Required => write!(f, "Required value")?,
            ErrorKind::Forbidden => write!(f, "Forbidden")?,
            ErrorKind::TooLong => write!(f, "Too long")?,
            ErrorKind::Invalid | ErrorKind::NotSupported | ErrorKind::Duplicate => {
                let label = match self.kind {
                    ErrorKind::Invalid => "Invalid value",
                    ErrorKind::NotSupported => "Unsupported value",
                    _ => "Duplicate value",
                };
                match &self.value {
                    Some(Value::String(s)) => write!(f, "{label}: \"{s}\"")?,
                    Some(v) => write!(f, "{label}: {v}")?,
                    None => write!(f, "{label}")?,
                }
            }
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Paths of fields, spelled out only when an error names them: validation visits every field of
/// every write, and formatting each child's path on the way (`spec.containers[0].ports`) cost
/// more than the checks themselves. `Field(&"spec", "containers")` is `spec.containers`.
pub struct Field<'a>(pub &'a dyn Display, pub &'a str);

/// `{parent}[{index}]`.
pub struct Index<'a>(pub &'a dyn Display, pub usize);

/// `{parent}[{key}]`, a map entry.
pub struct Key<'a>(pub &'a dyn Display, pub &'a str);

impl Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl Display for Index<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.0, self.1)
    }
}

impl Display for Key<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.0, self.1)
    }
}

/// Errors found while validating one object.
#[derive(Clone, Debug, Default)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn push(&mut self, kind: ErrorKind, field: impl Display, value: Option<Value>, detail: impl Into<String>) {
        self.0.push(FieldError { kind, field: field.to_string(), value, detail: detail.into() });
    }
    pub fn required(&mut self, field: impl Display, detail: impl Into<String>) {
        self.push(ErrorKind::Required, field, None, detail);
    }
    pub fn invalid(&mut self, field: impl Display, value: Value, detail: impl Into<String>) {
        self.push(ErrorKind::Invalid, field, Some(value), detail);
    }
    pub fn not_supported(&mut self, field: impl Display, value: Value, supported: &[&str]) {
        let list = supported.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
        self.push(ErrorKind::NotSupported, field, Some(value), format!("supported values: {list}"));
    }
    pub fn forbidden(&mut self, field: impl Display, detail: impl Into<String>) {
        self.push(ErrorKind::Forbidden, field, None, detail);
    }
    /// `field is immutable` when `new` differs from `old` at the same path.
    pub fn immutable(&mut self, field: &str, new: Option<&Value>, old: Option<&Value>) {
        if new != old {
            self.push(ErrorKind::Invalid, field, Some(new.cloned().unwrap_or(Value::Null)), "field is immutable");
        }
    }
}

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, ≤ 63.
pub fn dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        errs.push(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    let b = value.as_bytes();
    let ok = !b.is_empty() && is_alnum(b[0]) && is_alnum(b[b.len() - 1]) && b.iter().all(|&c| is_alnum(c) || c == b'-');
    if !ok {
        errs.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_string(),
        );
    }
    errs
}

/// RFC 1123 subdomain: dot-separated labels, ≤ 253.
pub fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    let ok = !value.is_empty()
        && value.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty() && is_alnum(b[0]) && is_alnum(b[b.len() - 1]) && b.iter().all(|&c| is_alnum(c) || c == b'-')
        });
    if !ok {
        errs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    errs
}

/// RFC 1035 label (Service names): like a 1123 label but must start with a letter.
pub fn dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        errs.push(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    let b = value.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_lowercase()
        && is_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_alnum(c) || c == b'-');
    if !ok {
        errs.push("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string());
    }
    errs
}

/// Names usable as a path segment (RBAC objects and a few others): anything but `.`, `..`, `/`, `%`.
pub fn path_segment_name(value: &str) -> Vec<String> {
    if value == "." || value == ".." {
        return vec![format!("may not be '{value}'")];
    }
    let mut errs = Vec::new();
    for bad in ["/", "%"] {
        if value.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

/// A qualified name (label and annotation keys): optional DNS subdomain prefix, '/', and a name of
/// alphanumerics, '-', '_' and '.', ≤ 63, starting and ending alphanumeric.
pub fn qualified_name(value: &str) -> Vec<String> {
    let (prefix, name) = match value.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, value),
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(dns1123_subdomain(p).into_iter().map(|e| format!("prefix part {e}")));
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            errs.push("name part must be no more than 63 characters".to_string());
        }
        if !label_value_chars_ok(name) {
            errs.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string());
        }
    }
    errs
}

fn label_value_chars_ok(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// A label value: empty, or ≤ 63 characters of alphanumerics, '-', '_', '.', alphanumeric at both ends.
pub fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.is_empty() {
        return errs;
    }
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !label_value_chars_ok(value) {
        errs.push("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_string());
    }
    errs
}

/// Validates `metadata.labels` and `metadata.annotations` keys and values.
pub fn validate_labels_and_annotations(meta: &Value, path: &str, errs: &mut FieldErrors) {
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            for e in qualified_name(k) {
                errs.invalid(format!("{path}.labels"), Value::String(k.clone()), e);
            }
            match v.as_str() {
                Some(s) => {
                    for e in label_value(s) {
                        errs.invalid(format!("{path}.labels"), v.clone(), e);
                    }
                }
                None => errs.invalid(format!("{path}.labels"), v.clone(), "must be a string"),
            }
        }
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            total += k.len() + v.as_str().map_or(0, str::len);
            for e in qualified_name(&k.to_ascii_lowercase()) {
                errs.invalid(format!("{path}.annotations"), Value::String(k.clone()), e);
            }
        }
        if total > 256 * 1024 {
            errs.push(ErrorKind::TooLong, format!("{path}.annotations"), None, "may not be more than 262144 bytes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(dns1123_label("web-1").is_empty());
        assert!(!dns1123_label("Web").is_empty());
        assert!(!dns1123_label("-web").is_empty());
        assert!(!dns1123_label(&"a".repeat(64)).is_empty());
        assert!(dns1123_subdomain("a.b-c.d").is_empty());
        assert!(!dns1123_subdomain("a..b").is_empty());
        assert!(!dns1035_label("1abc").is_empty());
        assert!(dns1035_label("abc1").is_empty());
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(!qualified_name("/name").is_empty());
        assert!(label_value("").is_empty());
        assert!(!label_value("-x").is_empty());
        assert!(!path_segment_name("a/b").is_empty());
    }

    #[test]
    fn error_text_matches_kubernetes() {
        let e = FieldError {
            kind: ErrorKind::Invalid,
            field: "metadata.name".into(),
            value: Some(Value::String("Bad".into())),
            detail: "x".into(),
        };
        assert_eq!(e.to_string(), "metadata.name: Invalid value: \"Bad\": x");
        let r =
            FieldError { kind: ErrorKind::Required, field: "spec.selector".into(), value: None, detail: String::new() };
        assert_eq!(r.to_string(), "spec.selector: Required value");
    }
}
