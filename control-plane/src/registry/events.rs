//! Event (events/v1): strategy and discovery entry.
//!
//! The Table follows kube-apiserver exactly: `Last Seen` comes first and `Name` is the last,
//! wide-only column (still the column with format `name`).

use serde_json::{Value, json};

use super::podspec::checks::{int, s};
use super::{Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "events",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    Column::new("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    Column::new("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    Column::new(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    Column::new("Object", "string", "The object that this event is about."),
    Column::wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.",
    ),
    Column::wide(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    ),
    Column::new("Message", "string", "A human-readable description of the status of this operation."),
    Column::wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    Column::wide("Count", "string", "The number of times this event has occurred."),
    Column { priority: 1, ..NAME_COLUMN },
];

impl super::Strategy for Strategy {
    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut FieldErrors) {
        let namespace = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
        let involved = obj.get("involvedObject").unwrap_or(&Value::Null);
        let obj_ns = s(involved, "namespace");
        let mismatch = |errs: &mut FieldErrors| {
            errs.invalid("involvedObject.namespace", json!(obj_ns), "does not match event.namespace");
        };
        let event_time = obj.get("eventTime").and_then(Value::as_str).unwrap_or("");
        if event_time.is_empty() {
            if obj_ns.is_empty() {
                if !namespace.is_empty() && namespace != "default" {
                    mismatch(errs);
                }
            } else if namespace != obj_ns {
                mismatch(errs);
            }
        } else {
            if obj_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
                mismatch(errs);
            }
            let controller = s(obj, "reportingComponent");
            if controller.is_empty() {
                errs.required("reportingController", "");
            }
            for msg in validation::qualified_name(controller) {
                errs.invalid("reportingController", json!(controller), msg);
            }
            let instance = s(obj, "reportingInstance");
            if instance.is_empty() {
                errs.required("reportingInstance", "");
            } else if instance.len() > 128 {
                errs.invalid("reportingInstance", json!(""), "can have at most 128 characters");
            }
            let action = s(obj, "action");
            if action.is_empty() {
                errs.required("action", "");
            } else if action.len() > 128 {
                errs.invalid("action", json!(""), "can have at most 128 characters");
            }
            let reason = s(obj, "reason");
            if reason.is_empty() {
                errs.required("reason", "");
            } else if reason.len() > 128 {
                errs.invalid("reason", json!(""), "can have at most 128 characters");
            }
            if s(obj, "message").len() > 1024 {
                errs.invalid("message", json!(""), "can have at most 1024 characters");
            }
        }
        if !namespace.is_empty() {
            for msg in validation::dns1123_subdomain(namespace) {
                errs.invalid("namespace", json!(namespace), msg);
            }
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let since = |ts: &str| super::age_since(Some(ts).filter(|t| !t.is_empty()), now);
        let first_ts = s(obj, "firstTimestamp");
        let first = if first_ts.is_empty() { since(s(obj, "eventTime")) } else { since(first_ts) };
        let last_ts = s(obj, "lastTimestamp");
        let mut last = if last_ts.is_empty() { first.clone() } else { since(last_ts) };
        let mut count = int(obj, "count").unwrap_or(0);
        if let Some(series) = obj.get("series").filter(|v| v.is_object()) {
            last = since(s(series, "lastObservedTime"));
            count = int(series, "count").unwrap_or(0);
        } else if count == 0 {
            count = 1;
        }
        let involved = obj.get("involvedObject").unwrap_or(&Value::Null);
        let kind = s(involved, "kind").to_lowercase();
        let name = s(involved, "name");
        let target = if name.is_empty() { kind } else { format!("{kind}/{name}") };
        let source = obj.get("source").unwrap_or(&Value::Null);
        let component = non_empty(s(source, "component"), s(obj, "reportingComponent"));
        let host = non_empty(s(source, "host"), s(obj, "reportingInstance"));
        let source_cell = if host.is_empty() { component.to_string() } else { format!("{component}, {host}") };
        vec![
            json!(last),
            json!(s(obj, "type")),
            json!(s(obj, "reason")),
            json!(target),
            json!(s(involved, "fieldPath")),
            json!(source_cell),
            json!(s(obj, "message").trim()),
            json!(first),
            json!(count),
            super::name_cell(obj),
        ]
    }

    fn field(&self, obj: &Value, path: &str) -> Option<String> {
        let involved = obj.get("involvedObject").unwrap_or(&Value::Null);
        let v = match path {
            "involvedObject.kind" => s(involved, "kind"),
            "involvedObject.namespace" => s(involved, "namespace"),
            "involvedObject.name" => s(involved, "name"),
            "involvedObject.uid" => s(involved, "uid"),
            "involvedObject.apiVersion" => s(involved, "apiVersion"),
            "involvedObject.resourceVersion" => s(involved, "resourceVersion"),
            "involvedObject.fieldPath" => s(involved, "fieldPath"),
            "reason" => s(obj, "reason"),
            "reportingComponent" => s(obj, "reportingComponent"),
            "source" => {
                non_empty(obj.get("source").map_or("", |src| s(src, "component")), s(obj, "reportingComponent"))
            }
            "type" => s(obj, "type"),
            _ => return None,
        };
        Some(v.to_string())
    }
}

fn non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    #[test]
    fn event_table_and_fields() {
        let now = Timestamp(chrono::DateTime::parse_from_rfc3339("2026-01-01T00:05:00Z").expect("time").to_utc());
        let ev = json!({
            "metadata": {"name": "web.1234", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "fieldPath": "spec.containers{web}"},
            "reason": "Pulled", "type": "Normal", "message": "Container image pulled\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:04:00Z", "count": 2
        });
        assert_eq!(
            Strategy.cells(&ev, now),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web"),
                json!("spec.containers{web}"),
                json!("kubelet, node-1"),
                json!("Container image pulled"),
                json!("5m"),
                json!(2),
                json!("web.1234")
            ]
        );
        assert_eq!(Strategy.columns().len(), 10);
        assert_eq!(Strategy.columns()[9].format, "name");
        assert_eq!(Strategy.field(&ev, "involvedObject.kind").as_deref(), Some("Pod"));
        assert_eq!(Strategy.field(&ev, "source").as_deref(), Some("kubelet"));
        let mut errs = FieldErrors::default();
        let mut wrong = ev.clone();
        wrong["metadata"]["namespace"] = json!("other");
        Strategy.validate(&wrong, None, &mut errs);
        assert_eq!(
            errs.0[0].to_string(),
            "involvedObject.namespace: Invalid value: \"default\": does not match event.namespace"
        );
    }
}
