//! PodDisruptionBudget (poddisruptionbudgets.policy/v1): strategy and discovery entry.
//!
//! No defaults. At most one of `minAvailable` and `maxUnavailable`, each a non-negative integer
//! or a percentage up to 100%; the selector must be valid.

use serde_json::{Value, json};

use super::apps_util as util;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, name_cell};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "policy",
    version: "v1",
    kind: "PodDisruptionBudget",
    plural: "poddisruptionbudgets",
    singular: "poddisruptionbudget",
    short_names: &["pdb"],
    categories: &[],
    namespaced: true,
    subresources: &["status"],
    storage: "poddisruptionbudgets",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new("Min Available", "string", "The minimum number of pods that must be available."),
    Column::new("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
    Column::new("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
    AGE_COLUMN,
];

impl super::Strategy for Strategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_create(&self, obj: &mut Value) {
        // These four counters are not omitempty in `PodDisruptionBudgetStatus`.
        obj["status"] = json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0});
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut FieldErrors) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let min = spec.get("minAvailable").filter(|v| !v.is_null());
        let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
        if min.is_some() && max.is_some() {
            errs.invalid("spec", spec.clone(), "minAvailable and maxUnavailable cannot be both set");
        }
        for (key, value) in [("minAvailable", min), ("maxUnavailable", max)] {
            if let Some(v) = value {
                let field = format!("spec.{key}");
                util::validate_int_or_percent(v, &field, errs);
                util::not_more_than_100_percent(v, &field, errs);
            }
        }
        util::validate_label_selector(spec.get("selector"), "spec.selector", errs);
        if let Some(policy) = spec.get("unhealthyPodEvictionPolicy").filter(|p| !p.is_null())
            && !matches!(policy.as_str(), Some("AlwaysAllow" | "IfHealthyBudget"))
        {
            errs.not_supported("spec.unhealthyPodEvictionPolicy", policy.clone(), &["AlwaysAllow", "IfHealthyBudget"]);
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let show =
            |p: &str| obj.pointer(p).filter(|v| !v.is_null()).map_or_else(|| "N/A".to_string(), util::int_or_string);
        vec![
            name_cell(obj),
            json!(show("/spec/minAvailable")),
            json!(show("/spec/maxUnavailable")),
            json!(util::int_at(obj, "/status/disruptionsAllowed")),
            age_cell(obj, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    /// What `kubectl create pdb web --selector=app=web --min-available=1` sends.
    fn pdb() -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})
    }

    #[test]
    fn status_and_cells() {
        let mut p = pdb();
        Strategy.prepare_create(&mut p);
        assert_eq!(p["status"]["disruptionsAllowed"], json!(0));
        let cells = Strategy.cells(&p, Timestamp::now());
        assert_eq!(cells[1..4], [json!("1"), json!("N/A"), json!(0)]);
    }

    #[test]
    fn validation() {
        let mut p = pdb();
        p["spec"]["maxUnavailable"] = json!("150%");
        let mut errs = FieldErrors::default();
        Strategy.validate(&p, None, &mut errs);
        let text: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("spec: Invalid value:")
                && text[0].ends_with("minAvailable and maxUnavailable cannot be both set")
        );
        assert_eq!(text[1], "spec.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%");
    }
}
