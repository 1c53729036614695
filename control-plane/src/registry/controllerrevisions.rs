//! ControllerRevision (controllerrevisions.apps/v1): strategy and discovery entry.
//!
//! A snapshot of a StatefulSet's or DaemonSet's template: `data` is required and immutable,
//! `revision` is non-negative. The table shows the owning controller as `kind.group/name`.

use serde_json::{Value, json};

use super::apps_util as util;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, name_cell};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "apps",
    version: "v1",
    kind: "ControllerRevision",
    plural: "controllerrevisions",
    singular: "controllerrevision",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "controllerrevisions",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new("Controller", "string", "Controller of the object"),
    Column::new("Revision", "string", "revision indicates the revision of the state represented by Data."),
    AGE_COLUMN,
];

impl super::Strategy for Strategy {
    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        if obj.get("data").is_none_or(Value::is_null) {
            errs.required("data", "data is mandatory");
        }
        util::nonnegative(obj, "/revision", "revision", errs);
        if let Some(old) = old {
            errs.immutable("data", obj.get("data"), old.get("data"));
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        vec![name_cell(obj), json!(controller_name(obj)), json!(util::int_at(obj, "/revision")), age_cell(obj, now)]
    }
}

/// `statefulset.apps/web` for the controlling owner, `<none>` without one.
fn controller_name(obj: &Value) -> String {
    let Some(owner) = util::controller_ref(obj) else { return "<none>".to_string() };
    let field = |k: &str| owner.get(k).and_then(Value::as_str).unwrap_or("");
    let group = field("apiVersion").rsplit_once('/').map_or("", |(g, _)| g);
    let kind = field("kind");
    let name = field("name");
    match (kind.is_empty(), group.is_empty()) {
        (true, true) => name.to_string(),
        (_, true) => format!("{}/{name}", kind.to_lowercase()),
        _ => format!("{}.{group}/{name}", kind.to_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    #[test]
    fn data_is_required_and_immutable() {
        let old = json!({"metadata": {"name": "web-6c9f"}, "data": {"spec": {}}, "revision": 1});
        let mut errs = FieldErrors::default();
        Strategy.validate(&old, None, &mut errs);
        assert!(errs.is_empty());
        let new = json!({"metadata": {"name": "web-6c9f"}, "data": {"spec": {"x": 1}}, "revision": -1});
        Strategy.validate(&new, Some(&old), &mut errs);
        let text: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "revision: Invalid value: -1: must be greater than or equal to 0",
                "data: Invalid value: {\"spec\":{\"x\":1}}: field is immutable",
            ]
        );
        let mut errs = FieldErrors::default();
        Strategy.validate(&json!({"metadata": {"name": "x"}}), None, &mut errs);
        assert_eq!(errs.0[0].to_string(), "data: Required value: data is mandatory");
    }

    #[test]
    fn controller_column() {
        let obj = json!({"metadata": {"name": "web-6c9f", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "p"},
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]},
            "revision": 2});
        let cells = Strategy.cells(&obj, Timestamp::now());
        assert_eq!(cells[1..3], [json!("statefulset.apps/web"), json!(2)]);
        assert_eq!(Strategy.cells(&json!({}), Timestamp::now())[1], json!("<none>"));
    }
}
