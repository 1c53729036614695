//! Event (events.events.k8s.io/v1): strategy and discovery entry.
//!
//! Kubernetes serves these Events through the core Event's strategy: it converts them to the
//! internal (core-shaped) Event, so the table, the field selectors and the shared ("legacy")
//! validation are the core ones, and error paths use the core field names
//! (`involvedObject.namespace`, `message`). This strategy does that conversion and adds the
//! stricter rules that apply to events.k8s.io/v1 requests.

use serde_json::{Map, Value, json};

use super::{Column, Resource, Timestamp};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "events.k8s.io",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "events.k8s.io/events",
    strategy: &Strategy,
};

pub struct Strategy;

/// events.k8s.io/v1 field → core/v1 field (the rest have the same name in both).
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Fields an update may not change, by their internal (core) names.
const IMMUTABLE: &[&str] = &[
    "involvedObject",
    "reason",
    "message",
    "source",
    "firstTimestamp",
    "lastTimestamp",
    "count",
    "type",
    "eventTime",
    "action",
    "related",
    "reportingComponent",
    "reportingInstance",
];

fn core() -> &'static dyn super::Strategy {
    super::events::RESOURCE.strategy
}

/// The core/v1-shaped Event that Kubernetes' internal Event corresponds to.
fn to_core(obj: &Value) -> Value {
    let Some(map) = obj.as_object() else { return obj.clone() };
    let renamed: Map<String, Value> = map
        .iter()
        .map(|(k, v)| {
            let name = RENAMED.iter().find(|(from, _)| from == k).map_or(k.as_str(), |(_, to)| to);
            (name.to_string(), v.clone())
        })
        .collect();
    Value::Object(renamed)
}

/// Internal field names as Kubernetes prints them in errors.
fn error_path(core_name: &str) -> &str {
    if core_name == "reportingComponent" { "reportingController" } else { core_name }
}

fn is_set(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Number(n)) => n.as_i64() != Some(0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Object(o)) => o.values().any(|v| is_set(Some(v))),
        Some(_) => true,
    }
}

fn validate_series(obj: &Value, errs: &mut FieldErrors) {
    let Some(series) = obj.get("series").filter(|s| !s.is_null()) else { return };
    if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
        errs.invalid("series.count", json!(""), "should be at least 2");
    }
    if !is_set(series.get("lastObservedTime")) {
        errs.required("series.lastObservedTime", "");
    }
}

impl super::Strategy for Strategy {
    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let event = to_core(obj);
        // The rules every Event passes, whatever API it came through.
        core().validate(&event, None, errs);
        match old {
            None => {
                validate_series(obj, errs);
                if !is_set(obj.get("eventTime")) {
                    errs.required("eventTime", "");
                }
                let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
                if kind != "Normal" && kind != "Warning" {
                    errs.invalid("type", json!(""), format!("has invalid value: {kind}"));
                }
                for key in
                    ["deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount", "deprecatedSource"]
                {
                    if is_set(obj.get(key)) {
                        errs.invalid(key, json!(""), "needs to be unset");
                    }
                }
            }
            Some(old) => {
                if obj.get("series") != old.get("series") {
                    validate_series(obj, errs);
                }
                let old_event = to_core(old);
                for key in IMMUTABLE {
                    errs.immutable(error_path(key), event.get(*key), old_event.get(*key));
                }
            }
        }
    }

    fn columns(&self) -> &'static [Column] {
        core().columns()
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        core().cells(&to_core(obj), now)
    }

    fn field(&self, obj: &Value, path: &str) -> Option<String> {
        let core_path = match path {
            "reason" | "type" => path.to_string(),
            "reportingController" => "reportingComponent".to_string(),
            _ => format!("involvedObject.{}", path.strip_prefix("regarding.")?),
        };
        core().field(&to_core(obj), &core_path)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn event() -> Value {
        json!({
            "metadata": {"name": "web.17a", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "keelson.io/scheduler",
            "reportingInstance": "cp-1",
            "action": "Binding",
            "reason": "Scheduled",
            "type": "Normal",
            "note": "Successfully assigned default/web to node-1",
            "regarding": {"kind": "Pod", "namespace": "default", "name": "web"}
        })
    }

    fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn valid_event_and_strict_rules() {
        assert_eq!(errors(&event(), None), Vec::<String>::new());
        let mut e = event();
        e.as_object_mut().expect("object").remove("eventTime");
        e["type"] = json!("Info");
        e["deprecatedCount"] = json!(3);
        let errs = errors(&e, None);
        assert!(errs.contains(&"eventTime: Required value".to_string()), "{errs:?}");
        assert!(errs.contains(&"type: Invalid value: \"\": has invalid value: Info".to_string()), "{errs:?}");
        assert!(errs.contains(&"deprecatedCount: Invalid value: \"\": needs to be unset".to_string()), "{errs:?}");
    }

    #[test]
    fn legacy_rules_use_core_paths() {
        let mut e = event();
        e.as_object_mut().expect("object").remove("reportingController");
        e["regarding"]["namespace"] = json!("other");
        let errs = errors(&e, None);
        assert!(errs.contains(&"reportingController: Required value".to_string()), "{errs:?}");
    }

    #[test]
    fn updates_keep_the_note() {
        let old = event();
        let mut new = old.clone();
        new["note"] = json!("changed");
        let errs = errors(&new, Some(&old));
        assert_eq!(errs, ["message: Invalid value: \"changed\": field is immutable"]);
        let mut new = old.clone();
        new["series"] = json!({"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"});
        assert_eq!(errors(&new, Some(&old)), Vec::<String>::new());
    }

    #[test]
    fn table_and_fields_are_the_core_ones() {
        let e = event();
        let cells = Strategy.cells(&e, Timestamp::now());
        assert_eq!(cells.len(), Strategy.columns().len());
        assert_eq!(Strategy.columns()[0].name, "Last Seen");
        assert_eq!(cells[1..4], [json!("Normal"), json!("Scheduled"), json!("pod/web")]);
        assert_eq!(cells[6], json!("Successfully assigned default/web to node-1"));
        assert_eq!(Strategy.field(&e, "regarding.name").as_deref(), Some("web"));
        assert_eq!(Strategy.field(&e, "reportingController").as_deref(), Some("keelson.io/scheduler"));
        assert_eq!(Strategy.field(&e, "involvedObject.name"), None);
        assert_eq!(Strategy.field(&e, "note"), None);
    }
}
