//! Helpers for Table columns and cells, shared by the strategies.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// The current time, passed in so that tests can pin it.
#[derive(Clone, Copy, Debug)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(Utc::now())
    }
}

/// One Table column definition (`meta.k8s.io/v1` `TableColumnDefinition`).
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean`, `date`.
    pub kind: &'static str,
    /// OpenAPI format: `name` for the name column, otherwise usually empty.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 is always shown; 1 only with `-o wide`.
    pub priority: i32,
}

impl Column {
    pub const fn new(name: &'static str, kind: &'static str, description: &'static str) -> Self {
        Column { name, kind, format: "", description, priority: 0 }
    }
    pub const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Self {
        Column { name, kind, format: "", description, priority: 1 }
    }
    pub fn to_json(&self) -> Value {
        json!({"name": self.name, "type": self.kind, "format": self.format, "description": self.description, "priority": self.priority})
    }
}

pub const NAME_COLUMN: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    priority: 0,
};

pub const AGE_COLUMN: Column = Column::new(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
);

pub static DEFAULT_COLUMNS: &[Column] = &[NAME_COLUMN, AGE_COLUMN];

pub fn name_cell(obj: &Value) -> Value {
    obj.pointer("/metadata/name").cloned().unwrap_or_else(|| json!(""))
}

/// Age of the object as kubectl shows it (`5m`, `3h15m`, `<unknown>`).
pub fn age_cell(obj: &Value, now: Timestamp) -> Value {
    json!(age_since(obj.pointer("/metadata/creationTimestamp").and_then(Value::as_str), now))
}

/// `<unknown>` without a timestamp, otherwise the human duration since `ts`.
pub fn age_since(ts: Option<&str>, now: Timestamp) -> String {
    match ts.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => human_duration(now.0.signed_duration_since(t.with_timezone(&Utc))),
        None => "<unknown>".to_string(),
    }
}

/// Kubernetes' `HumanDuration`: coarse, two units at most.
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".to_string();
    }
    let secs = secs.max(0);
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        let days = hours / 24;
        return if h == 0 { format!("{days}d") } else { format!("{days}d{h}h") };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let years = hours / 24 / 365;
        let days = (hours / 24) % 365;
        return if days == 0 { format!("{years}y") } else { format!("{years}y{days}d") };
    }
    format!("{}y", hours / 24 / 365)
}

/// A label selector (`{matchLabels, matchExpressions}`) as kubectl prints it: `app=web,tier in (a,b)`.
pub fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else { return "<none>".to_string() };
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match op {
                "In" => parts.push(format!("{key} in ({})", values.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
                "Exists" => parts.push(key.to_string()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    if parts.is_empty() { "<none>".to_string() } else { parts.join(",") }
}

/// A `map[string]string` selector (Service, ReplicationController) as `k=v,k2=v2`.
pub fn map_selector_string(sel: Option<&Value>) -> String {
    match sel.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => {
            m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")
        }
        _ => "<none>".to_string(),
    }
}

/// Joins non-empty strings with `,`, `<none>` when there are none.
pub fn join_or_none<I: IntoIterator<Item = String>>(items: I) -> String {
    let v: Vec<String> = items.into_iter().filter(|s| !s.is_empty()).collect();
    if v.is_empty() { "<none>".to_string() } else { v.join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(5)), "5s");
        assert_eq!(human_duration(d(119)), "119s");
        assert_eq!(human_duration(d(200)), "3m20s");
        assert_eq!(human_duration(d(25 * 60)), "25m");
        assert_eq!(human_duration(d(3 * 3600 + 15 * 60)), "3h15m");
        assert_eq!(human_duration(d(30 * 3600)), "30h");
        assert_eq!(human_duration(d(3 * 86400 + 4 * 3600)), "3d4h");
        assert_eq!(human_duration(d(15 * 86400)), "15d");
    }

    #[test]
    fn selectors_print_like_kubectl() {
        let sel = serde_json::json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert_eq!(selector_string(Some(&sel)), "app=web,tier in (a,b)");
        assert_eq!(selector_string(None), "<none>");
    }
}
