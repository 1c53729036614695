//! Job (jobs.batch/v1): strategy and discovery entry.
//!
//! Unless `manualSelector` is true, a new Job gets a generated selector on its uid and four
//! labels on its pod template (`batch.kubernetes.io/controller-uid`, `controller-uid`,
//! `batch.kubernetes.io/job-name`, `job-name`). Kubernetes defaults a Job's own labels from its
//! template's labels, also when reading it back, so a new Job without labels shows the generated
//! ones; [`Strategy::prepare_create`] stores them directly.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::apps_util::{self as util, CONTAINERS_COLUMN, IMAGES_COLUMN};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, human_duration, name_cell};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "batch",
    version: "v1",
    kind: "Job",
    plural: "jobs",
    singular: "job",
    short_names: &[],
    categories: &["all"],
    namespaced: true,
    subresources: &["status"],
    storage: "jobs",
    strategy: &Strategy,
};

pub struct Strategy;

pub(crate) const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
pub(crate) const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new("Status", "string", "Status of the job."),
    Column::new(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs.",
    ),
    Column::new("Duration", "string", "Time required to complete the job."),
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
    SELECTOR_COLUMN,
];

pub(crate) const SELECTOR_COLUMN: Column = Column::wide(
    "Selector",
    "string",
    "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
);

impl super::Strategy for Strategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = util::child(obj, "spec") else { return };
        if util::is_empty(spec.get("completions")) && util::is_empty(spec.get("parallelism")) {
            spec["completions"] = json!(1);
        }
        util::default_field(spec, "parallelism", json!(1));
        let backoff = if util::is_empty(spec.get("backoffLimitPerIndex")) { 6 } else { i64::from(i32::MAX) };
        util::default_field(spec, "backoffLimit", json!(backoff));
        util::default_str(spec, "completionMode", "NonIndexed");
        util::default_field(spec, "suspend", json!(false));
        let rules = spec.pointer_mut("/podFailurePolicy/rules").and_then(Value::as_array_mut);
        for rule in rules.into_iter().flatten() {
            let patterns = rule.get_mut("onPodConditions").and_then(Value::as_array_mut);
            for pattern in patterns.into_iter().flatten() {
                util::default_str(pattern, "status", "True");
            }
        }
        let replacement = if util::is_empty(spec.get("podFailurePolicy")) { "TerminatingOrFailed" } else { "Failed" };
        util::default_str(spec, "podReplacementPolicy", replacement);
        util::default_field(spec, "manualSelector", json!(false));
        util::default_template(obj);
        let template_labels =
            obj.pointer("/spec/template/metadata/labels").filter(|l| !util::is_empty(Some(l))).cloned();
        if let Some(labels) = template_labels
            && util::is_empty(obj.pointer("/metadata/labels"))
            && let Some(meta) = util::child(obj, "metadata")
        {
            meta["labels"] = labels;
        }
    }

    fn prepare_create(&self, obj: &mut Value) {
        if obj.pointer("/spec/manualSelector") != Some(&json!(true)) {
            generate_selector(obj);
        }
        obj["status"] = json!({});
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        if obj.pointer("/spec/manualSelector") != Some(&json!(true)) {
            validate_generated_selector(obj, errs);
        }
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        validate_job_spec(spec, "spec", errs);
        match spec.get("selector").filter(|s| !s.is_null()) {
            None => errs.required("spec.selector", ""),
            Some(s) => util::validate_label_selector(Some(s), "spec.selector", errs),
        }
        // Whether generated or manual, the selector must select the Job's own pods.
        if let Some(sel) = spec.get("selector").filter(|s| s.is_object())
            && util::selector_parses(sel)
        {
            let labels = spec.pointer("/template/metadata/labels");
            if !util::selector_matches(Some(sel), labels) {
                errs.invalid(
                    "spec.template.metadata.labels",
                    labels.cloned().unwrap_or_else(|| json!({})),
                    "`selector` does not match template `labels`",
                );
            }
        }
        if let Some(old) = old {
            validate_update(obj, old, errs);
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let succeeded = util::int_at(obj, "/status/succeeded");
        let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
            Some(c) => format!("{succeeded}/{c}"),
            None => match util::int_at(obj, "/spec/parallelism") {
                p if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            },
        };
        let time = |p: &str| obj.pointer(p).and_then(Value::as_str).and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        let duration = match (time("/status/startTime"), time("/status/completionTime")) {
            (None, _) => String::new(),
            (Some(start), None) => human_duration(now.0.signed_duration_since(start.with_timezone(&Utc))),
            (Some(start), Some(end)) => human_duration(end.signed_duration_since(start)),
        };
        let (names, images) = util::container_cells(obj.pointer("/spec/template"));
        vec![
            name_cell(obj),
            json!(status_word(obj)),
            json!(completions),
            json!(duration),
            age_cell(obj, now),
            names,
            images,
            json!(util::format_label_selector(obj.pointer("/spec/selector"))),
        ]
    }

    fn field(&self, obj: &Value, path: &str) -> Option<String> {
        (path == "status.successful").then(|| util::int_at(obj, "/status/succeeded").to_string())
    }
}

/// Adds the uid selector and the four pod labels, keeping what the user already set (a
/// conflicting value then fails validation).
fn generate_selector(obj: &mut Value) {
    let name = util::str_or_empty(obj, "/metadata/name").to_string();
    let uid = util::str_or_empty(obj, "/metadata/uid").to_string();
    let user_template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    let Some(labels) = util::descend(obj, &["spec", "template", "metadata", "labels"]) else { return };
    for key in [LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL] {
        util::default_field(labels, key, json!(name));
    }
    for key in [LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL] {
        util::default_field(labels, key, json!(uid));
    }
    let labels = labels.clone();
    if let Some(match_labels) = util::descend(obj, &["spec", "selector", "matchLabels"]) {
        util::default_field(match_labels, CONTROLLER_UID_LABEL, json!(uid));
    }
    // Kubernetes shares one map between the Job's labels (defaulted from the template) and the
    // template's labels, so the Job's labels get the generated ones too.
    let own = obj.pointer("/metadata/labels");
    if (util::is_empty(own) || own == user_template_labels.as_ref())
        && let Some(meta) = util::child(obj, "metadata")
    {
        meta["labels"] = labels;
    }
}

/// With a generated selector, the selector must be exactly `controller-uid: <uid>`.
fn validate_generated_selector(obj: &Value, errs: &mut FieldErrors) {
    let Some(sel) = obj.pointer("/spec/selector").filter(|s| s.is_object()) else { return };
    if obj.pointer("/spec/template/metadata/labels").is_none() || sel.get("matchLabels").is_none() {
        return;
    }
    let uid = util::str_or_empty(obj, "/metadata/uid");
    if uid.is_empty() {
        errs.required("metadata.uid", "");
    }
    let expected = json!({"matchLabels": {CONTROLLER_UID_LABEL: uid}});
    let mut actual = sel.clone();
    if let Some(m) = actual.as_object_mut() {
        m.retain(|_, v| !util::is_empty(Some(v)));
    }
    if actual != expected {
        errs.invalid("spec.selector", sel.clone(), "`selector` not auto-generated");
    }
}

/// Rules of a JobSpec, shared with CronJob's `jobTemplate.spec` (`path` is the spec's path).
pub(crate) fn validate_job_spec(spec: &Value, path: &str, errs: &mut FieldErrors) {
    for key in ["parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished"] {
        util::nonnegative(spec, &format!("/{key}"), &format!("{path}.{key}"), errs);
    }
    let mode = spec.get("completionMode").and_then(Value::as_str).unwrap_or("NonIndexed");
    match mode {
        "NonIndexed" => {}
        "Indexed" => {
            if util::is_empty(spec.get("completions")) {
                errs.required(format!("{path}.completions"), "when completion mode is Indexed");
            }
        }
        other => errs.not_supported(format!("{path}.completionMode"), json!(other), &["Indexed", "NonIndexed"]),
    }
    if let Some(policy) = spec.get("podReplacementPolicy").filter(|p| !p.is_null()) {
        let field = format!("{path}.podReplacementPolicy");
        if !util::is_empty(spec.get("podFailurePolicy")) {
            if policy.as_str() != Some("Failed") {
                errs.not_supported(field, policy.clone(), &["Failed"]);
            }
        } else if !matches!(policy.as_str(), Some("Failed" | "TerminatingOrFailed")) {
            errs.not_supported(field, policy.clone(), &["Failed", "TerminatingOrFailed"]);
        }
    }
    if spec.get("manualSelector").is_some_and(|m| !m.is_null() && !m.is_boolean()) {
        errs.invalid(format!("{path}.manualSelector"), spec["manualSelector"].clone(), "must be a boolean");
    }
    let template = spec.get("template").unwrap_or(&Value::Null);
    super::podspec::validate_pod_template(template, &format!("{path}.template"), errs);
    let restart = template.pointer("/spec/restartPolicy").cloned().unwrap_or_else(|| json!(""));
    if !matches!(restart.as_str(), Some("OnFailure" | "Never")) {
        errs.not_supported(format!("{path}.template.spec.restartPolicy"), restart, &["OnFailure", "Never"]);
    }
}

fn validate_update(obj: &Value, old: &Value, errs: &mut FieldErrors) {
    let new_spec = obj.get("spec").unwrap_or(&Value::Null);
    let old_spec = old.get("spec").unwrap_or(&Value::Null);
    // Indexed Jobs may scale when completions and parallelism move together (elastic Jobs).
    let elastic =
        |s: &Value| s.get("completionMode") == Some(&json!("Indexed")) && s.get("completions") == s.get("parallelism");
    if !(elastic(new_spec) && elastic(old_spec)) {
        errs.immutable("spec.completions", new_spec.get("completions"), old_spec.get("completions"));
    }
    for key in ["selector", "completionMode", "podFailurePolicy", "backoffLimitPerIndex", "managedBy", "successPolicy"]
    {
        errs.immutable(&format!("spec.{key}"), new_spec.get(key), old_spec.get(key));
    }
    // A suspended Job that never started may change its scheduling directives and pod labels.
    let mut old_template = old_spec.get("template").cloned().unwrap_or(Value::Null);
    let new_template = new_spec.get("template").cloned().unwrap_or(Value::Null);
    let never_started = old.pointer("/status/startTime").is_none_or(Value::is_null);
    if old_spec.get("suspend") == Some(&json!(true)) && never_started {
        for pointer in ["/metadata/labels", "/metadata/annotations"] {
            copy_at(&mut old_template, &new_template, pointer);
        }
        for key in ["nodeSelector", "tolerations", "schedulingGates"] {
            copy_at(&mut old_template, &new_template, &format!("/spec/{key}"));
        }
        copy_at(&mut old_template, &new_template, "/spec/affinity/nodeAffinity");
        if let Some(aff) = old_template.pointer_mut("/spec/affinity")
            && util::is_empty(Some(aff))
            && new_template.pointer("/spec/affinity").is_none()
            && let Some(spec) = old_template.get_mut("spec").and_then(Value::as_object_mut)
        {
            spec.remove("affinity");
        }
    }
    if new_template != old_template {
        errs.immutable("spec.template", Some(&new_template), Some(&old_template));
    }
}

/// Makes `target` hold `source`'s value at `pointer` (absent when `source` has none).
fn copy_at(target: &mut Value, source: &Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointers start with /");
    let keys: Vec<&str> = parent.split('/').filter(|k| !k.is_empty()).collect();
    match source.pointer(pointer) {
        Some(v) => {
            if let Some(p) = util::descend(target, &keys) {
                p[key] = v.clone();
            }
        }
        None => {
            if let Some(p) = target.pointer_mut(parent).and_then(Value::as_object_mut) {
                p.remove(key);
            }
        }
    }
}

/// The `Status` cell: `Complete`, `Failed`, `Terminating`, `Suspended`, `FailureTarget` or `Running`.
fn status_word(obj: &Value) -> &'static str {
    let conditions = util::array_at(obj, "/status/conditions");
    let has = |t: &str| {
        conditions
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
            .is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if obj.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null()) {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    /// What `kubectl create job pi --image=busybox` (1.35) sends, with the uid the REST layer sets.
    fn kubectl_create() -> Value {
        json!({
            "kind": "Job", "apiVersion": "batch/v1",
            "metadata": {"name": "pi", "namespace": "default", "uid": "8d1f-uid"},
            "spec": {"template": {"metadata": {},
                "spec": {"containers": [{"name": "pi", "image": "busybox", "resources": {}}], "restartPolicy": "Never"}}},
            "status": {}
        })
    }

    fn created() -> Value {
        let mut j = kubectl_create();
        Strategy.default(&mut j);
        Strategy.prepare_create(&mut j);
        j
    }

    fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn generated_selector_and_labels() {
        let j = created();
        let generated = json!({
            "batch.kubernetes.io/controller-uid": "8d1f-uid",
            "batch.kubernetes.io/job-name": "pi",
            "controller-uid": "8d1f-uid",
            "job-name": "pi"
        });
        assert_eq!(j["spec"]["selector"], json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "8d1f-uid"}}));
        assert_eq!(j["spec"]["template"]["metadata"]["labels"], generated);
        assert_eq!(j["metadata"]["labels"], generated);
        assert_eq!(errors(&j, None), Vec::<String>::new());
    }

    #[test]
    fn defaults_match_kubectl_get_o_yaml() {
        let j = created();
        let spec = &j["spec"];
        for (key, value) in [
            ("backoffLimit", json!(6)),
            ("completionMode", json!("NonIndexed")),
            ("completions", json!(1)),
            ("manualSelector", json!(false)),
            ("parallelism", json!(1)),
            ("podReplacementPolicy", json!("TerminatingOrFailed")),
            ("suspend", json!(false)),
        ] {
            assert_eq!(spec[key], value, "{key}");
        }
        assert_eq!(spec["template"]["spec"]["restartPolicy"], json!("Never"));
        assert_eq!(j["status"], json!({}));
    }

    #[test]
    fn user_selector_without_manual_selector_is_rejected() {
        let mut j = kubectl_create();
        j["spec"]["selector"] = json!({"matchLabels": {"app": "pi"}});
        j["spec"]["template"]["metadata"]["labels"] = json!({"app": "pi"});
        Strategy.default(&mut j);
        Strategy.prepare_create(&mut j);
        let errs = errors(&j, None);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.selector: Invalid value: ") && errs[0].ends_with("`selector` not auto-generated")
        );
    }

    #[test]
    fn manual_selector_is_kept() {
        let mut j = kubectl_create();
        j["spec"]["manualSelector"] = json!(true);
        j["spec"]["selector"] = json!({"matchLabels": {"app": "pi"}});
        j["spec"]["template"]["metadata"]["labels"] = json!({"app": "pi"});
        Strategy.default(&mut j);
        Strategy.prepare_create(&mut j);
        assert_eq!(j["spec"]["template"]["metadata"]["labels"], json!({"app": "pi"}));
        assert_eq!(j["metadata"]["labels"], json!({"app": "pi"}));
        assert_eq!(errors(&j, None), Vec::<String>::new());
    }

    #[test]
    fn restart_policy_must_be_never_or_on_failure() {
        let mut j = kubectl_create();
        j["spec"]["template"]["spec"].as_object_mut().expect("spec").remove("restartPolicy");
        Strategy.default(&mut j);
        Strategy.prepare_create(&mut j);
        assert_eq!(
            errors(&j, None),
            [
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
            ]
        );
    }

    #[test]
    fn selector_and_template_are_immutable() {
        let old = created();
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2");
        let errs = errors(&new, Some(&old));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("spec.template: Invalid value") && errs[0].ends_with("field is immutable"));
        let mut new = old.clone();
        new["spec"]["selector"]["matchLabels"]["x"] = json!("y");
        assert!(
            errors(&new, Some(&old))
                .iter()
                .any(|e| e.starts_with("spec.selector: Invalid value") && e.ends_with("field is immutable"))
        );
        let mut new = old.clone();
        new["spec"]["suspend"] = json!(true);
        new["spec"]["backoffLimit"] = json!(3);
        assert_eq!(errors(&new, Some(&old)), Vec::<String>::new());
    }

    #[test]
    fn suspended_jobs_may_change_scheduling() {
        let mut old = kubectl_create();
        old["spec"]["suspend"] = json!(true);
        Strategy.default(&mut old);
        Strategy.prepare_create(&mut old);
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
        assert_eq!(errors(&new, Some(&old)), Vec::<String>::new());
    }

    #[test]
    fn cells_and_field_selector() {
        let mut j = created();
        j["status"] = json!({"succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:07Z",
            "conditions": [{"type": "Complete", "status": "True"}]});
        let cells = Strategy.cells(&j, Timestamp::now());
        assert_eq!(cells[1..4], [json!("Complete"), json!("1/1"), json!("7s")]);
        assert_eq!(cells[7], json!("batch.kubernetes.io/controller-uid=8d1f-uid"));
        assert_eq!(Strategy.field(&j, "status.successful").as_deref(), Some("1"));
        j["spec"].as_object_mut().expect("spec").remove("completions");
        j["spec"]["parallelism"] = json!(3);
        j["status"] = json!({});
        assert_eq!(Strategy.cells(&j, Timestamp::now())[1..4], [json!("Running"), json!("0/1 of 3"), json!("")]);
    }
}
