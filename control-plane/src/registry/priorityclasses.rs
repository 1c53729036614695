//! PriorityClass (priorityclasses.scheduling.k8s.io/v1): strategy and discovery entry.
//!
//! `preemptionPolicy` defaults to `PreemptLowerPriority`. Names starting with `system-` are
//! reserved for the two built-in classes; user classes stay at or below 1 000 000 000. Value and
//! preemption policy cannot change.

use serde_json::{Value, json};

use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, name_cell};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "scheduling.k8s.io",
    version: "v1",
    kind: "PriorityClass",
    plural: "priorityclasses",
    singular: "priorityclass",
    short_names: &["pc"],
    categories: &[],
    namespaced: false,
    subresources: &[],
    storage: "priorityclasses",
    strategy: &Strategy,
};

pub struct Strategy;

/// The highest value a user-defined class may have.
pub(crate) const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;
/// The built-in classes: name, value, globalDefault.
pub(crate) const SYSTEM_CLASSES: &[(&str, i64, bool)] =
    &[("system-node-critical", 2_000_001_000, false), ("system-cluster-critical", 2_000_000_000, false)];
const SYSTEM_PREFIX: &str = "system-";

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Value",
        "integer",
        "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec.",
    ),
    Column::new(
        "Global-Default",
        "boolean",
        "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority.",
    ),
    AGE_COLUMN,
    Column::new(
        "PreemptionPolicy",
        "string",
        "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset.",
    ),
];

impl super::Strategy for Strategy {
    fn default(&self, obj: &mut Value) {
        super::apps_util::default_field(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let value = match obj.get("value") {
            None | Some(Value::Null) => {
                errs.required("value", "");
                0
            }
            Some(v) => v.as_i64().unwrap_or_else(|| {
                errs.invalid("value", v.clone(), "must be an integer");
                0
            }),
        };
        let global_default = obj.get("globalDefault").and_then(Value::as_bool).unwrap_or(false);
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        if name.starts_with(SYSTEM_PREFIX) {
            if let Err(reason) = known_system_class(name, value, global_default) {
                errs.forbidden(
                    "metadata.name",
                    format!("priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only. error: {reason}"),
                );
            }
        } else if value > HIGHEST_USER_DEFINABLE_PRIORITY {
            errs.forbidden(
                "value",
                format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"),
            );
        }
        match obj.get("preemptionPolicy").filter(|p| !p.is_null()) {
            None => {}
            Some(p) if p.as_str() == Some("") => errs.required("preemptionPolicy", ""),
            Some(p) if !matches!(p.as_str(), Some("PreemptLowerPriority" | "Never")) => {
                errs.not_supported("preemptionPolicy", p.clone(), &["PreemptLowerPriority", "Never"]);
            }
            Some(_) => {}
        }
        if let Some(old) = old {
            if obj.get("value") != old.get("value") {
                errs.forbidden("value", "may not be changed in an update.");
            }
            errs.immutable("preemptionPolicy", obj.get("preemptionPolicy"), old.get("preemptionPolicy"));
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        vec![
            name_cell(obj),
            json!(obj.get("value").and_then(Value::as_i64).unwrap_or(0)),
            json!(obj.get("globalDefault").and_then(Value::as_bool).unwrap_or(false)),
            age_cell(obj, now),
            json!(obj.get("preemptionPolicy").and_then(Value::as_str).unwrap_or("")),
        ]
    }
}

/// `IsKnownSystemPriorityClass`.
fn known_system_class(name: &str, value: i64, global_default: bool) -> Result<(), String> {
    let Some((_, v, g)) = SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name) else {
        return Err(format!("{name} is not a known system priority class"));
    };
    if *v != value {
        return Err(format!("value of {name} PriorityClass must be {v}"));
    }
    if *g != global_default {
        return Err(format!("globalDefault of {name} PriorityClass must be {g}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_and_cells() {
        let mut pc = json!({"metadata": {"name": "high"}, "value": 1000, "description": "x"});
        Strategy.default(&mut pc);
        assert_eq!(pc["preemptionPolicy"], json!("PreemptLowerPriority"));
        assert_eq!(errors(&pc, None), Vec::<String>::new());
        let cells = Strategy.cells(&pc, Timestamp::now());
        assert_eq!([&cells[1], &cells[2], &cells[4]], [&json!(1000), &json!(false), &json!("PreemptLowerPriority")]);
    }

    #[test]
    fn system_names_and_limits() {
        let sys = json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000});
        assert_eq!(errors(&sys, None), Vec::<String>::new());
        let fake = json!({"metadata": {"name": "system-mine"}, "value": 5});
        assert_eq!(
            errors(&fake, None),
            [
                "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"
            ]
        );
        let big = json!({"metadata": {"name": "big"}, "value": 1_000_000_001});
        assert_eq!(
            errors(&big, None),
            ["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
        );
        assert_eq!(errors(&json!({"metadata": {"name": "v"}}), None), ["value: Required value"]);
    }

    #[test]
    fn value_is_immutable() {
        let old = json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"});
        let new = json!({"metadata": {"name": "high"}, "value": 2000, "preemptionPolicy": "Never"});
        assert_eq!(errors(&new, Some(&old)), ["value: Forbidden: may not be changed in an update."]);
    }
}
