//! CronJob (cronjobs.batch/v1): strategy and discovery entry.
//!
//! The schedule is checked as the controller parses it (robfig/cron's standard parser: five
//! fields, ranges, steps, month and weekday names, `@hourly`-style descriptors), with the
//! parser's own error text. `timeZone` must name a zone of the tz database.

use std::path::Path;

use serde_json::{Value, json};

use super::apps_util::{self as util, CONTAINERS_COLUMN, IMAGES_COLUMN};
use super::jobs::{SELECTOR_COLUMN, validate_job_spec};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, age_since, name_cell};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "batch",
    version: "v1",
    kind: "CronJob",
    plural: "cronjobs",
    singular: "cronjob",
    short_names: &["cj"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status"],
    storage: "cronjobs",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
    Column::new(
        "Timezone",
        "string",
        "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones",
    ),
    Column::new(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.",
    ),
    Column::new("Active", "integer", "A list of pointers to currently running jobs."),
    Column::new("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
    SELECTOR_COLUMN,
];

/// Jobs get an 11-character suffix and Job names are at most 63 characters.
const MAX_NAME_LEN: usize = 52;

impl super::Strategy for Strategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = util::child(obj, "spec") else { return };
        util::default_str(spec, "concurrencyPolicy", "Allow");
        util::default_field(spec, "suspend", json!(false));
        util::default_field(spec, "successfulJobsHistoryLimit", json!(3));
        util::default_field(spec, "failedJobsHistoryLimit", json!(1));
        // Only the pod template inside the job template is defaulted (no Job defaults).
        if let Some(tmpl) = util::descend(obj, &["spec", "jobTemplate", "spec", "template"]) {
            super::podspec::default_pod_template(tmpl);
        }
    }

    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({});
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let schedule = spec.get("schedule").and_then(Value::as_str).unwrap_or("");
        if schedule.is_empty() {
            errs.required("spec.schedule", "");
        } else {
            if let Err(msg) = parse_schedule(schedule) {
                errs.invalid("spec.schedule", json!(schedule), msg);
            }
            // A schedule that already carried a TZ prefix may keep it, without `timeZone`.
            let old_had_tz =
                old.and_then(|o| o.pointer("/spec/schedule")).and_then(Value::as_str).is_some_and(|s| s.contains("TZ"));
            let time_zone_set = spec.get("timeZone").is_some_and(|t| !t.is_null());
            if old_had_tz && schedule.contains("TZ") && time_zone_set {
                errs.invalid(
                    "spec.schedule",
                    json!(schedule),
                    "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                );
            } else if !old_had_tz && schedule.contains("TZ") {
                errs.invalid(
                    "spec.schedule",
                    json!(schedule),
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                );
            }
        }
        match spec.get("concurrencyPolicy").and_then(Value::as_str).unwrap_or("") {
            "" => errs.required("spec.concurrencyPolicy", ""),
            "Allow" | "Forbid" | "Replace" => {}
            other => errs.not_supported("spec.concurrencyPolicy", json!(other), &["Allow", "Forbid", "Replace"]),
        }
        validate_job_template(spec.get("jobTemplate").unwrap_or(&Value::Null), errs);
        for key in ["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
            util::nonnegative(spec, &format!("/{key}"), &format!("spec.{key}"), errs);
        }
        if let Some(tz) = spec.get("timeZone").filter(|t| !t.is_null()) {
            validate_time_zone(tz, errs);
        }
        let name = util::str_or_empty(obj, "/metadata/name");
        if old.is_none() && name.len() > MAX_NAME_LEN {
            errs.invalid("metadata.name", json!(name), "must be no more than 52 characters");
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let last = match obj.pointer("/status/lastScheduleTime").and_then(Value::as_str) {
            Some(t) => age_since(Some(t), now),
            None => "<none>".to_string(),
        };
        let suspend = match obj.pointer("/spec/suspend").and_then(Value::as_bool) {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        };
        let tz = obj.pointer("/spec/timeZone").and_then(Value::as_str).unwrap_or("<none>");
        let job_spec = obj.pointer("/spec/jobTemplate/spec");
        let (names, images) = util::container_cells(job_spec.and_then(|s| s.get("template")));
        vec![
            name_cell(obj),
            json!(util::str_or_empty(obj, "/spec/schedule")),
            json!(tz),
            json!(suspend),
            json!(util::array_at(obj, "/status/active").len()),
            json!(last),
            age_cell(obj, now),
            names,
            images,
            json!(util::format_label_selector(job_spec.and_then(|s| s.get("selector")))),
        ]
    }
}

fn validate_job_template(template: &Value, errs: &mut FieldErrors) {
    if let Some(meta) = template.get("metadata") {
        validation::validate_labels_and_annotations(meta, "spec.jobTemplate.metadata", errs);
    }
    let spec = template.get("spec").unwrap_or(&Value::Null);
    validate_job_spec(spec, "spec.jobTemplate.spec", errs);
    if let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) {
        errs.invalid("spec.jobTemplate.spec.selector", sel.clone(), "`selector` will be auto-generated");
    }
    if spec.get("manualSelector") == Some(&json!(true)) {
        errs.not_supported("spec.jobTemplate.spec.manualSelector", json!(true), &["nil", "false"]);
    }
}

fn validate_time_zone(tz: &Value, errs: &mut FieldErrors) {
    let name = tz.as_str().unwrap_or("");
    if name.is_empty() {
        errs.invalid("spec.timeZone", tz.clone(), "timeZone must be nil or non-empty string");
        return;
    }
    let part_ok = |p: &str| {
        (1..=14).contains(&p.len())
            && p != "."
            && p != ".."
            && !p.starts_with('-')
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'))
    };
    if !name.split('/').all(part_ok) {
        errs.invalid("spec.timeZone", tz.clone(), format!("unknown time zone {name}"));
        return;
    }
    if name.eq_ignore_ascii_case("Local") {
        errs.invalid(
            "spec.timeZone",
            tz.clone(),
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        );
    }
    if let Err(msg) = load_location(name) {
        errs.invalid("spec.timeZone", tz.clone(), msg);
    }
}

/// Go's `time.LoadLocation` against the system tz database. Without a database on this machine
/// every well-formed name is accepted (Kubernetes falls back to a bundled copy).
fn load_location(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "UTC" || name == "Local" {
        return Ok(());
    }
    if name.split('/').any(|p| p == "..") || name.starts_with(['/', '\\']) {
        return Err("time: invalid location name".to_string());
    }
    let db = Path::new("/usr/share/zoneinfo");
    if !db.is_dir() {
        return Ok(());
    }
    let is_tzif = std::fs::read(db.join(name)).is_ok_and(|b| b.starts_with(b"TZif"));
    if is_tzif { Ok(()) } else { Err(format!("unknown time zone {name}")) }
}

// ---- robfig/cron standard parser ---------------------------------------------------------------

struct Bounds {
    min: u64,
    max: u64,
    names: &'static [&'static str],
}

const MONTH_NAMES: &[&str] = &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DOW_NAMES: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELDS: [Bounds; 5] = [
    Bounds { min: 0, max: 59, names: &[] },
    Bounds { min: 0, max: 23, names: &[] },
    Bounds { min: 1, max: 31, names: &[] },
    Bounds { min: 1, max: 12, names: MONTH_NAMES },
    Bounds { min: 0, max: 6, names: DOW_NAMES },
];

/// Parses `spec` as `cron.ParseStandard` does; the error is the parser's message.
pub(crate) fn parse_schedule(spec: &str) -> Result<(), String> {
    if spec.is_empty() {
        return Err("empty spec string".to_string());
    }
    let mut spec = spec;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let eq = spec.find('=').unwrap_or(0);
        let end = spec.find(' ').unwrap_or(spec.len());
        let zone = &spec[eq + 1..end];
        load_location(zone).map_err(|e| format!("provided bad location {zone}: {e}"))?;
        spec = spec[end..].trim();
    }
    if spec.starts_with('@') {
        return parse_descriptor(spec);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return Err(format!("expected exactly 5 fields, found {}: [{}]", fields.len(), fields.join(" ")));
    }
    for (field, bounds) in fields.iter().zip(&FIELDS) {
        for expr in field.split(',') {
            parse_range(expr, bounds)?;
        }
    }
    Ok(())
}

fn parse_descriptor(spec: &str) -> Result<(), String> {
    match spec {
        "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly" => Ok(()),
        _ => match spec.strip_prefix("@every ") {
            Some(d) => parse_go_duration(d).map_err(|e| format!("failed to parse duration {spec}: {e}")),
            None => Err(format!("unrecognized descriptor: {spec}")),
        },
    }
}

/// One `a`, `a-b`, `*`, `?` with an optional `/step`, as robfig/cron's `getRange` reads it.
fn parse_range(expr: &str, b: &Bounds) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (b.min, b.max)
    } else {
        let start = parse_int_or_name(low_and_high[0], b.names)?;
        match low_and_high.len() {
            1 => (start, start),
            2 => (start, parse_int_or_name(low_and_high[1], b.names)?),
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = parse_uint(range_and_step[1])?;
            // `N/step` means `N-max/step`.
            if low_and_high.len() == 1 {
                end = b.max;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!("beginning of range ({start}) below minimum ({}): {expr}", b.min));
    }
    if end > b.max {
        return Err(format!("end of range ({end}) above maximum ({}): {expr}", b.max));
    }
    if start > end {
        return Err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

fn parse_int_or_name(expr: &str, names: &[&str]) -> Result<u64, String> {
    let lower = expr.to_ascii_lowercase();
    match names.iter().position(|n| *n == lower) {
        // Months count from 1, weekdays from 0.
        Some(i) => Ok(i as u64 + u64::from(names.len() == 12)),
        None => parse_uint(expr),
    }
}

/// `mustParseInt`: Go's `strconv.Atoi` and a sign check, with their messages.
fn parse_uint(expr: &str) -> Result<u64, String> {
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": invalid syntax"));
    }
    let n: i64 = expr.parse().map_err(|_| {
        format!("failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": value out of range")
    })?;
    u64::try_from(n).map_err(|_| format!("negative number ({n}) not allowed: {expr}"))
}

/// Accepts what Go's `time.ParseDuration` accepts (`1h30m`, `1.5s`, `300ms`).
fn parse_go_duration(s: &str) -> Result<(), String> {
    let invalid = || format!("time: invalid duration \"{s}\"");
    let mut rest = s.strip_prefix(['+', '-']).unwrap_or(s);
    if rest == "0" {
        return Ok(());
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration \"{s}\""));
        }
        if !["ns", "us", "µs", "μs", "ms", "s", "m", "h"].contains(&unit) {
            return Err(format!("time: unknown unit \"{unit}\" in duration \"{s}\""));
        }
        rest = &rest[unit_len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn cronjob(schedule: &str) -> Value {
        json!({
            "metadata": {"name": "tick", "namespace": "default"},
            "spec": {"schedule": schedule, "jobTemplate": {"metadata": {}, "spec": {"template": {"metadata": {},
                "spec": {"containers": [{"name": "tick", "image": "busybox", "resources": {}}], "restartPolicy": "OnFailure"}}}}}
        })
    }

    fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn valid_schedules() {
        for s in [
            "*/5 * * * *",
            "0 0 * * *",
            "0 9-17/2 * * MON-FRI",
            "15,45 * 1,15 jan,Jul ?",
            "@hourly",
            "@every 1h30m",
            "5/15 * * * *",
            "0 0 31 12 6",
        ] {
            assert_eq!(parse_schedule(s), Ok(()), "{s}");
        }
    }

    #[test]
    fn invalid_schedules_use_the_parser_messages() {
        let cases = [
            ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
            ("60 * * * *", "end of range (60) above maximum (59): 60"),
            ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
            ("* * * * 7", "end of range (7) above maximum (6): 7"),
            ("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1"),
            ("*/0 * * * *", "step of range should be a positive number: */0"),
            ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
            ("a * * * *", "failed to parse int from a: strconv.Atoi: parsing \"a\": invalid syntax"),
            ("@fortnightly", "unrecognized descriptor: @fortnightly"),
            ("@every 5", "failed to parse duration @every 5: time: missing unit in duration \"5\""),
            ("", "empty spec string"),
        ];
        for (s, msg) in cases {
            assert_eq!(parse_schedule(s), Err(msg.to_string()), "{s}");
        }
    }

    #[test]
    fn defaults_and_validation() {
        let mut c = cronjob("*/1 * * * *");
        Strategy.default(&mut c);
        Strategy.prepare_create(&mut c);
        let spec = &c["spec"];
        assert_eq!(spec["concurrencyPolicy"], json!("Allow"));
        assert_eq!(spec["suspend"], json!(false));
        assert_eq!(spec["successfulJobsHistoryLimit"], json!(3));
        assert_eq!(spec["failedJobsHistoryLimit"], json!(1));
        assert!(spec["jobTemplate"]["spec"].get("backoffLimit").is_none());
        assert_eq!(spec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"], json!("ClusterFirst"));
        assert_eq!(c["status"], json!({}));
        assert_eq!(errors(&c, None), Vec::<String>::new());
    }

    #[test]
    fn schedule_errors() {
        let mut c = cronjob("61 * * * *");
        Strategy.default(&mut c);
        assert_eq!(
            errors(&c, None),
            ["spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61"]
        );
        c["spec"]["schedule"] = json!("TZ=UTC 0 * * * *");
        assert_eq!(
            errors(&c, None),
            [
                "spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
            ]
        );
        c["spec"]["schedule"] = json!("");
        assert_eq!(errors(&c, None), ["spec.schedule: Required value"]);
    }

    #[test]
    fn time_zones() {
        let mut c = cronjob("0 * * * *");
        Strategy.default(&mut c);
        c["spec"]["timeZone"] = json!("Etc/UTC");
        assert_eq!(errors(&c, None), Vec::<String>::new());
        c["spec"]["timeZone"] = json!("Local");
        assert_eq!(
            errors(&c, None),
            [
                "spec.timeZone: Invalid value: \"Local\": timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
            ]
        );
        c["spec"]["timeZone"] = json!("../etc/passwd");
        assert_eq!(
            errors(&c, None),
            ["spec.timeZone: Invalid value: \"../etc/passwd\": unknown time zone ../etc/passwd"]
        );
        if Path::new("/usr/share/zoneinfo").is_dir() {
            c["spec"]["timeZone"] = json!("Mars/Olympus");
            assert_eq!(
                errors(&c, None),
                ["spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"]
            );
        }
    }

    #[test]
    fn job_template_rules_and_name_length() {
        let mut c = cronjob("@daily");
        c["metadata"]["name"] = json!("a".repeat(53));
        c["spec"]["jobTemplate"]["spec"]["selector"] = json!({"matchLabels": {"a": "b"}});
        c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        Strategy.default(&mut c);
        let errs = errors(&c, None);
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\"")
        );
        assert!(errs[1].ends_with("`selector` will be auto-generated"));
        assert!(
            errs[2].starts_with("metadata.name: Invalid value")
                && errs[2].ends_with("must be no more than 52 characters")
        );
        // The name limit only applies on create.
        c["spec"]["jobTemplate"]["spec"].as_object_mut().expect("spec").remove("selector");
        c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(errors(&c, Some(&c.clone())), Vec::<String>::new());
    }

    #[test]
    fn cells() {
        let mut c = cronjob("*/5 * * * *");
        Strategy.default(&mut c);
        c["status"] = json!({"active": [{"name": "tick-1"}]});
        let cells = Strategy.cells(&c, Timestamp::now());
        assert_eq!(cells[1..6], [json!("*/5 * * * *"), json!("<none>"), json!("False"), json!(1), json!("<none>")]);
        assert_eq!(cells[9], json!("<none>"));
        assert_eq!(cells.len(), COLUMNS.len());
    }
}
