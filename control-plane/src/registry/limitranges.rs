//! LimitRange (limitranges/v1): strategy and discovery entry.
//!
//! LimitRanges have no printer in kube-apiserver, so their Table is the generic one: `Name` and
//! `Created At` (an RFC 3339 timestamp).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::podspec::checks::{self, obj, s};
use super::podspec::quantity::{self, Quantity};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "LimitRange",
    plural: "limitranges",
    singular: "limitrange",
    short_names: &["limits"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "limitranges",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[NAME_COLUMN, Column::new("Created At", "date", AGE_COLUMN.description)];

const QUANTITY_MAPS: &[&str] = &["max", "min", "default", "defaultRequest", "maxLimitRequestRatio"];

impl super::Strategy for Strategy {
    fn default(&self, o: &mut Value) {
        for item in o.pointer_mut("/spec/limits").and_then(Value::as_array_mut).into_iter().flatten() {
            let Some(m) = item.as_object_mut() else { continue };
            for key in QUANTITY_MAPS {
                quantity::canonicalize_list(m.get_mut(*key), true);
            }
            if m.get("type").and_then(Value::as_str) != Some("Container") {
                continue;
            }
            let max = m.get("max").and_then(Value::as_object).cloned().unwrap_or_default();
            let min = m.get("min").and_then(Value::as_object).cloned().unwrap_or_default();
            let default = fill(m, "default", &max);
            fill(m, "defaultRequest", &default);
            fill(m, "defaultRequest", &min);
        }
    }

    fn validate(&self, o: &Value, _old: Option<&Value>, errs: &mut FieldErrors) {
        let mut types = HashSet::new();
        for (i, item) in
            o.pointer("/spec/limits").and_then(Value::as_array).map_or(&[][..], Vec::as_slice).iter().enumerate()
        {
            let p = format!("spec.limits[{i}]");
            let kind = s(item, "type");
            let msgs = validation::qualified_name(kind);
            let qualified_ok = msgs.is_empty();
            for msg in msgs {
                errs.invalid(format!("{p}.type"), json!(kind), msg);
            }
            if qualified_ok && !kind.contains('/') && !matches!(kind, "Pod" | "Container" | "PersistentVolumeClaim") {
                errs.invalid(format!("{p}.type"), json!(kind), "must be a standard limit type or fully qualified");
            }
            if !types.insert(kind) {
                checks::duplicate(errs, format!("{p}.type"), json!(kind));
            }
            if kind == "Pod" {
                for key in ["default", "defaultRequest"] {
                    if obj(item, key).is_some_and(|m| !m.is_empty()) {
                        errs.forbidden(format!("{p}.{key}"), "may not be specified when `type` is 'Pod'");
                    }
                }
            }
            let mut maps: HashMap<&str, HashMap<&str, Quantity>> = HashMap::new();
            let mut keys = BTreeSet::new();
            for key in QUANTITY_MAPS {
                if kind == "Pod" && matches!(*key, "default" | "defaultRequest") {
                    continue;
                }
                for (name, v) in obj(item, key).into_iter().flatten() {
                    let field = format!("{p}.{key}[{name}]");
                    if matches!(kind, "Pod" | "Container") {
                        checks::check_container_resource_name(name, &field, errs);
                    } else {
                        for msg in validation::qualified_name(name) {
                            errs.invalid(&field, json!(name), msg);
                        }
                    }
                    keys.insert(name.as_str());
                    match Quantity::from_json(v) {
                        Ok(q) => {
                            maps.entry(key).or_default().insert(name, q);
                        }
                        Err(msg) => errs.invalid(&field, v.clone(), msg),
                    }
                }
            }
            if kind == "PersistentVolumeClaim"
                && obj(item, "min").is_none_or(|m| !m.contains_key("storage"))
                && obj(item, "max").is_none_or(|m| !m.contains_key("storage"))
            {
                errs.required(
                    format!("{p}.limits"),
                    "either minimum or maximum storage value is required, but neither was provided",
                );
            }
            let get = |map: &str, k: &str| maps.get(map).and_then(|m| m.get(k)).copied();
            for k in keys {
                let (min, max, def, req, ratio) = (
                    get("min", k),
                    get("max", k),
                    get("default", k),
                    get("defaultRequest", k),
                    get("maxLimitRequestRatio", k),
                );
                if let (Some(min), Some(max)) = (min, max)
                    && min > max
                {
                    errs.invalid(
                        format!("{p}.min[{k}]"),
                        json!(min.to_string()),
                        format!("min value {min} is greater than max value {max}"),
                    );
                }
                if let (Some(min), Some(req)) = (min, req)
                    && min > req
                {
                    errs.invalid(
                        format!("{p}.defaultRequest[{k}]"),
                        json!(req.to_string()),
                        format!("min value {min} is greater than default request value {req}"),
                    );
                }
                if let (Some(req), Some(max)) = (req, max)
                    && req > max
                {
                    errs.invalid(
                        format!("{p}.defaultRequest[{k}]"),
                        json!(req.to_string()),
                        format!("default request value {req} is greater than max value {max}"),
                    );
                }
                if let (Some(req), Some(def)) = (req, def)
                    && req > def
                {
                    errs.invalid(
                        format!("{p}.defaultRequest[{k}]"),
                        json!(req.to_string()),
                        format!("default request value {req} is greater than default limit value {def}"),
                    );
                }
                if let (Some(def), Some(min)) = (def, min)
                    && min > def
                {
                    errs.invalid(
                        format!("{p}.default[{k}]"),
                        json!(min.to_string()),
                        format!("min value {min} is greater than default value {def}"),
                    );
                }
                if let (Some(def), Some(max)) = (def, max)
                    && def > max
                {
                    errs.invalid(
                        format!("{p}.default[{k}]"),
                        json!(max.to_string()),
                        format!("default value {def} is greater than max value {max}"),
                    );
                }
                if let Some(ratio) = ratio
                    && ratio < Quantity::parse("1").unwrap_or_else(|_| Quantity::zero())
                {
                    errs.invalid(
                        format!("{p}.maxLimitRequestRatio[{k}]"),
                        json!(ratio.to_string()),
                        format!("ratio {ratio} is less than 1"),
                    );
                }
            }
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, o: &Value, _now: Timestamp) -> Vec<Value> {
        let created =
            o.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or("0001-01-01T00:00:00Z");
        vec![super::name_cell(o), json!(created)]
    }
}

/// Adds every entry of `from` missing in the map at `key`; returns the resulting map.
fn fill(m: &mut Map<String, Value>, key: &str, from: &Map<String, Value>) -> Map<String, Value> {
    let Some(target) = checks::child_obj(m, key) else { return Map::new() };
    for (k, v) in from {
        target.entry(k.clone()).or_insert_with(|| v.clone());
    }
    target.clone()
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    #[test]
    fn container_limits_are_defaulted() {
        let mut lr = json!({"metadata": {"name": "lr", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]}});
        Strategy.default(&mut lr);
        assert_eq!(
            lr["spec"]["limits"][0],
            json!({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"},
                "default": {"cpu": "2"}, "defaultRequest": {"cpu": "2", "memory": "64Mi"}})
        );
        let mut errs = FieldErrors::default();
        Strategy.validate(&lr, None, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(Strategy.cells(&lr, Timestamp::now()), vec![json!("lr"), json!("2026-01-01T00:00:00Z")]);
        let mut errs = FieldErrors::default();
        Strategy.validate(&json!({"spec": {"limits": [{"type": "Pod", "default": {"cpu": "1"}}]}}), None, &mut errs);
        assert_eq!(
            errs.0[0].to_string(),
            "spec.limits[0].default: Forbidden: may not be specified when `type` is 'Pod'"
        );
    }
}
