//! What the server knows about the shape of built-in types, from the generated protobuf tables:
//! strategic-merge-patch metadata and the set of known fields (for strict field validation).

use serde_json::Value;

use crate::patch::{FieldInfo, Schema};
use crate::protobuf::schema::{self, Kind, Message};

/// Patch metadata of every built-in type, keyed by proto message name
/// (`k8s.io.api.apps.v1.Deployment`).
pub struct PatchSchema;

pub static PATCH_SCHEMA: PatchSchema = PatchSchema;

fn message_of(kind: &Kind) -> Option<&'static Message> {
    match kind {
        Kind::Msg(i) => Some(schema::message_by_index(*i)),
        _ => None,
    }
}

impl Schema for PatchSchema {
    fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo> {
        let m = schema::message(type_name)?;
        let f = m.fields.iter().find(|f| f.json == field)?;
        Some(FieldInfo {
            patch_strategy: f.patch_strategy,
            merge_key: f.patch_merge_key,
            value_type: message_of(&f.kind).map(|m| m.name),
        })
    }
}

/// Paths of fields in `obj` that the type `message` does not have, as `spec.foo` and
/// `spec.containers[0].bar`. Top-level `apiVersion` and `kind` are always known.
pub fn unknown_fields(message: &str, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(m), Some(map)) = (schema::message(message), obj.as_object()) {
        for (k, v) in map {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            walk_field(m, k, v, k.to_string(), &mut out);
        }
    }
    out
}

fn walk_field(m: &Message, key: &str, v: &Value, path: String, out: &mut Vec<String>) {
    let Some(f) = m.fields.iter().find(|f| f.json == key) else {
        out.push(path);
        return;
    };
    match (&f.kind, v) {
        (Kind::Msg(_), Value::Array(items)) if f.repeated => {
            let sub = message_of(&f.kind).expect("message kind");
            for (i, item) in items.iter().enumerate() {
                walk_object(sub, item, &format!("{path}[{i}]"), out);
            }
        }
        (Kind::Msg(_), Value::Object(_)) => walk_object(message_of(&f.kind).expect("message kind"), v, &path, out),
        (Kind::Map(inner), Value::Object(entries)) => {
            if let Some(sub) = message_of(inner) {
                for (k, item) in entries {
                    walk_object(sub, item, &format!("{path}[{k}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn walk_object(m: &Message, v: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(map) = v.as_object() {
        for (k, item) in map {
            walk_field(m, k, item, format!("{path}.{k}"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_at_any_depth() {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Always", "nope": true}]}}}
        });
        let mut u = unknown_fields("k8s.io.api.apps.v1.Deployment", &d);
        u.sort();
        assert_eq!(u, vec!["metadata.bogus".to_string(), "spec.template.spec.containers[0].nope".to_string()]);
    }

    #[test]
    fn patch_metadata_of_containers() {
        let f = PATCH_SCHEMA.field("k8s.io.api.core.v1.PodSpec", "containers").expect("containers");
        assert_eq!(
            (f.patch_strategy, f.merge_key, f.value_type),
            ("merge", "name", Some("k8s.io.api.core.v1.Container"))
        );
    }
}
