//! Helpers shared by the workload, networking, policy and RBAC strategies: defaulting of JSON
//! objects, label selectors, int-or-percent values, non-negative fields and the table cells of
//! pod templates. Only strategies inside `registry` call these.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::Column;
use crate::validation::{self, FieldErrors};

// ---------------------------------------------------------------------------------------------
// Defaulting

/// The object under `key` of `obj`, created when absent or null. `None` when `obj` is not an
/// object or the slot holds something other than an object (validation reports that).
pub(crate) fn child<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let slot = obj.as_object_mut()?.entry(key.to_string()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    if slot.is_object() { Some(slot) } else { None }
}

/// Follows `keys` from `obj`, creating the objects on the way (see [`child`]).
pub(crate) fn descend<'a>(obj: &'a mut Value, keys: &[&str]) -> Option<&'a mut Value> {
    keys.iter().try_fold(obj, |v, k| child(v, k))
}

/// Sets `key` to `value` when it is absent or null, as Go defaulting does for nil pointers.
pub(crate) fn default_field(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        let slot = map.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// Sets a string field when it is absent, null or empty (Go's `if x == ""` defaults).
pub(crate) fn default_str(obj: &mut Value, key: &str, value: &str) {
    if let Some(map) = obj.as_object_mut() {
        let slot = map.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() || slot.as_str() == Some("") {
            *slot = Value::String(value.to_string());
        }
    }
}

/// Whether `obj[key]` is absent, null, or an empty array/object/string.
pub(crate) fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// The integer at `pointer`, 0 when absent (Go's zero value).
pub(crate) fn int_at(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The string at `pointer`, `""` when absent.
pub(crate) fn str_or_empty<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The array at `pointer`, empty when absent.
pub(crate) fn array_at<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// Kubernetes' `ValidateNonnegativeField` for an optional integer at `pointer`.
pub(crate) fn nonnegative(obj: &Value, pointer: &str, field: &str, errs: &mut FieldErrors) {
    match obj.pointer(pointer) {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_i64() {
            Some(n) if n < 0 => errs.invalid(field, v.clone(), "must be greater than or equal to 0"),
            Some(_) => {}
            None => errs.invalid(field, v.clone(), "must be an integer"),
        },
    }
}

/// An optional integer at `pointer` that must be greater than 0 when set.
pub(crate) fn positive(obj: &Value, pointer: &str, field: &str, errs: &mut FieldErrors) {
    match obj.pointer(pointer) {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_i64() {
            Some(n) if n <= 0 => errs.invalid(field, v.clone(), "must be greater than 0"),
            Some(_) => {}
            None => errs.invalid(field, v.clone(), "must be an integer"),
        },
    }
}

const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";

fn percent(s: &str) -> Option<i64> {
    let digits = s.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(i64::MAX))
}

/// `ValidatePositiveIntOrPercent`: a non-negative integer or a `N%` string.
pub(crate) fn validate_int_or_percent(v: &Value, field: &str, errs: &mut FieldErrors) {
    match v {
        Value::String(s) if percent(s).is_none() => errs.invalid(field, v.clone(), PERCENT_MSG),
        Value::String(_) => {}
        Value::Number(n) => match n.as_i64() {
            Some(i) if i < 0 => errs.invalid(field, v.clone(), "must be greater than or equal to 0"),
            Some(_) => {}
            None => errs.invalid(field, v.clone(), "must be an integer or percentage (e.g '5%')"),
        },
        _ => errs.invalid(field, v.clone(), "must be an integer or percentage (e.g '5%')"),
    }
}

/// `getIntOrPercentValue`: the number, or the percentage without its `%`.
pub(crate) fn int_or_percent_value(v: &Value) -> i64 {
    match v {
        Value::String(s) => percent(s).or_else(|| s.parse().ok()).unwrap_or(0),
        other => other.as_i64().unwrap_or(0),
    }
}

/// `IsNotMoreThan100Percent`.
pub(crate) fn not_more_than_100_percent(v: &Value, field: &str, errs: &mut FieldErrors) {
    if let Some(p) = v.as_str().and_then(percent)
        && p > 100
    {
        errs.invalid(field, v.clone(), "must not be greater than 100%");
    }
}

/// An int-or-string as Go's `IntOrString.String()` prints it.
pub(crate) fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Label selectors (`metav1.LabelSelector`)

/// `ValidateLabelSelector`: label keys and values, operators, values per operator.
pub(crate) fn validate_label_selector(sel: Option<&Value>, field: &str, errs: &mut FieldErrors) {
    let Some(sel) = sel.filter(|s| !s.is_null()) else { return };
    if !sel.is_object() {
        errs.invalid(field, sel.clone(), "must be a label selector object");
        return;
    }
    validate_labels(sel.get("matchLabels"), &format!("{field}.matchLabels"), errs);
    for (i, expr) in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let path = format!("{field}.matchExpressions[{i}]");
        let values = expr.get("values").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        match expr.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" | "NotIn" if values.is_empty() => {
                errs.required(format!("{path}.values"), "must be specified when `operator` is 'In' or 'NotIn'")
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => errs.forbidden(
                format!("{path}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => errs.invalid(format!("{path}.operator"), json!(op), "not a valid selector operator"),
        }
        let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
        for msg in validation::qualified_name(key) {
            errs.invalid(format!("{path}.key"), json!(key), msg);
        }
        for (j, v) in values.iter().enumerate() {
            for msg in validation::label_value(v.as_str().unwrap_or("")) {
                errs.invalid(format!("{path}.values[{j}]"), v.clone(), msg);
            }
        }
    }
}

/// `ValidateLabels` for a `map[string]string` at `field`.
pub(crate) fn validate_labels(labels: Option<&Value>, field: &str, errs: &mut FieldErrors) {
    for (k, v) in labels.and_then(Value::as_object).into_iter().flatten() {
        for msg in validation::qualified_name(k) {
            errs.invalid(field, json!(k), msg);
        }
        for msg in validation::label_value(v.as_str().unwrap_or("")) {
            errs.invalid(field, v.clone(), msg);
        }
    }
}

/// A selector with neither `matchLabels` nor `matchExpressions`.
pub(crate) fn selector_is_empty(sel: &Value) -> bool {
    is_empty(sel.get("matchLabels")) && is_empty(sel.get("matchExpressions"))
}

/// Whether `LabelSelectorAsSelector` accepts `sel` (it rejects what validation rejects).
pub(crate) fn selector_parses(sel: &Value) -> bool {
    let mut errs = FieldErrors::default();
    validate_label_selector(Some(sel), "s", &mut errs);
    errs.is_empty()
}

/// Whether `sel` selects an object with `labels`. A missing selector selects nothing.
pub(crate) fn selector_matches(sel: Option<&Value>, labels: Option<&Value>) -> bool {
    let Some(sel) = sel.filter(|s| s.is_object()) else { return false };
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let by_labels = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k).is_some() && get(k) == v.as_str());
    let by_exprs = sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let mut values = e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
        match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => get(key).is_some_and(|v| values.any(|x| x == v)),
            "NotIn" => get(key).is_none_or(|v| !values.any(|x| x == v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        }
    });
    by_labels && by_exprs
}

/// `metav1.FormatLabelSelector`: requirements sorted by key, `<none>` when it selects all or nothing.
pub(crate) fn format_label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|s| s.is_object()) else { return "<none>".to_string() };
    if !selector_parses(sel) {
        return "<error>".to_string();
    }
    let mut reqs: Vec<(String, String)> = Vec::new();
    for (k, v) in sel.get("matchLabels").and_then(Value::as_object).into_iter().flatten() {
        reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    for e in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("").to_string();
        let mut values: Vec<&str> =
            e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        values.sort_unstable();
        values.dedup();
        let text = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            _ => format!("!{key}"),
        };
        reqs.push((key, text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    if reqs.is_empty() { "<none>".to_string() } else { reqs.into_iter().map(|r| r.1).collect::<Vec<_>>().join(",") }
}

/// `labels.FormatLabels`: `k=v` sorted by key, `<none>` when empty.
pub(crate) fn format_labels(labels: Option<&Value>) -> String {
    let sorted: BTreeMap<&str, &str> = labels
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
        .collect();
    if sorted.is_empty() {
        return "<none>".to_string();
    }
    sorted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

// ---------------------------------------------------------------------------------------------
// Workloads with a selector and a pod template (Deployment, ReplicaSet, StatefulSet, DaemonSet)

/// `spec.selector` is required, valid and non-empty, and must select `spec.template`'s labels.
/// `kind` is the word of "empty selector is invalid for …". `parse_error` is the detail used
/// when the selector cannot be parsed (`None`: no such error, as for DaemonSets).
pub(crate) fn validate_workload_selector(obj: &Value, kind: &str, parse_error: Option<&str>, errs: &mut FieldErrors) {
    let sel = obj.pointer("/spec/selector").filter(|s| !s.is_null());
    match sel {
        None => errs.required("spec.selector", ""),
        Some(s) => {
            validate_label_selector(Some(s), "spec.selector", errs);
            if s.is_object() && selector_is_empty(s) {
                errs.invalid("spec.selector", s.clone(), format!("empty selector is invalid for {kind}"));
            }
        }
    }
    let Some(s) = sel else { return };
    if !selector_parses(s) {
        if let Some(detail) = parse_error {
            errs.invalid("spec.selector", s.clone(), detail);
        }
        return;
    }
    let labels = obj.pointer("/spec/template/metadata/labels");
    if !selector_is_empty(s) && !selector_matches(Some(s), labels) {
        errs.invalid(
            "spec.template.metadata.labels",
            labels.cloned().unwrap_or_else(|| json!({})),
            "`selector` does not match template `labels`",
        );
    }
}

/// Pods of long-running workloads restart `Always` and have no `activeDeadlineSeconds`.
/// `kind` is the word of "activeDeadlineSeconds in … is not Supported".
pub(crate) fn validate_long_running_template(obj: &Value, kind: &str, errs: &mut FieldErrors) {
    let policy = obj.pointer("/spec/template/spec/restartPolicy").cloned().unwrap_or_else(|| json!(""));
    if policy.as_str() != Some("Always") {
        errs.not_supported("spec.template.spec.restartPolicy", policy, &["Always"]);
    }
    if obj.pointer("/spec/template/spec/activeDeadlineSeconds").is_some_and(|v| !v.is_null()) {
        errs.forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            format!("activeDeadlineSeconds in {kind} is not Supported"),
        );
    }
}

/// Defaults `spec.template` (created when absent) with the shared pod template rules.
pub(crate) fn default_template(obj: &mut Value) {
    if let Some(tmpl) = descend(obj, &["spec", "template"]) {
        super::podspec::default_pod_template(tmpl);
    }
}

/// Validates `spec.template` with the shared pod template rules.
pub(crate) fn validate_template(obj: &Value, errs: &mut FieldErrors) {
    let tmpl = obj.pointer("/spec/template").unwrap_or(&Value::Null);
    super::podspec::validate_pod_template(tmpl, &"spec.template", errs);
}

/// apps/v1 makes `spec.selector` immutable.
pub(crate) fn selector_immutable(obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
    if let Some(old) = old {
        errs.immutable("spec.selector", obj.pointer("/spec/selector"), old.pointer("/spec/selector"));
    }
}

// ---------------------------------------------------------------------------------------------
// Table cells

pub(crate) const CONTAINERS_COLUMN: Column =
    Column::wide("Containers", "string", "Names of each container in the template.");
pub(crate) const IMAGES_COLUMN: Column =
    Column::wide("Images", "string", "Images referenced by each container in the template.");

/// The `Containers` and `Images` cells of a pod template: names and images joined by `,`.
pub(crate) fn container_cells(template: Option<&Value>) -> (Value, Value) {
    let containers = template.and_then(|t| t.pointer("/spec/containers")).and_then(Value::as_array);
    let field = |key: &str| {
        containers
            .into_iter()
            .flatten()
            .map(|c| c.get(key).and_then(Value::as_str).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(",")
    };
    (json!(field("name")), json!(field("image")))
}

/// The first owner reference with `controller: true`.
pub(crate) fn controller_ref(obj: &Value) -> Option<&Value> {
    array_at(obj, "/metadata/ownerReferences")
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_or_percent_rules() {
        let mut errs = FieldErrors::default();
        validate_int_or_percent(&json!("25%"), "a", &mut errs);
        validate_int_or_percent(&json!(3), "b", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        validate_int_or_percent(&json!("25"), "c", &mut errs);
        validate_int_or_percent(&json!(-1), "d", &mut errs);
        not_more_than_100_percent(&json!("150%"), "e", &mut errs);
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["c", "d", "e"]);
        assert_eq!(int_or_percent_value(&json!("0%")), 0);
        assert_eq!(int_or_percent_value(&json!(2)), 2);
    }

    #[test]
    fn selectors_match_and_print_like_kubernetes() {
        let sel = json!({"matchLabels": {"tier": "web", "app": "x"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod", "dev"]}]});
        assert!(selector_matches(Some(&sel), Some(&json!({"app": "x", "tier": "web"}))));
        assert!(!selector_matches(Some(&sel), Some(&json!({"app": "x", "tier": "web", "env": "dev"}))));
        assert!(!selector_matches(None, Some(&json!({"app": "x"}))));
        assert_eq!(format_label_selector(Some(&sel)), "app=x,env notin (dev,prod),tier=web");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
    }

    #[test]
    fn selector_validation_messages() {
        let mut errs = FieldErrors::default();
        let sel = json!({"matchExpressions": [{"key": "a", "operator": "In"}, {"key": "b", "operator": "Has"}]});
        validate_label_selector(Some(&sel), "spec.selector", &mut errs);
        let text: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                "spec.selector.matchExpressions[1].operator: Invalid value: \"Has\": not a valid selector operator",
            ]
        );
    }

    #[test]
    fn defaulting_creates_objects_but_keeps_values() {
        let mut v = json!({"spec": {"strategy": {}, "replicas": 3}});
        default_field(descend(&mut v, &["spec"]).expect("spec is an object"), "replicas", json!(1));
        default_str(descend(&mut v, &["spec", "strategy"]).expect("strategy is an object"), "type", "RollingUpdate");
        assert_eq!(v, json!({"spec": {"strategy": {"type": "RollingUpdate"}, "replicas": 3}}));
        let mut bad = json!({"spec": "x"});
        assert!(descend(&mut bad, &["spec", "template"]).is_none());
    }
}
