//! What the server knows about the shape of built-in types, from the generated protobuf tables:
//! strategic-merge-patch metadata and the set of known fields (for strict field validation).

use std::fmt::Display;

use serde_json::Value;

use crate::patch::{FieldInfo, Schema};
use crate::protobuf::schema::{self, Field, Kind, Message};
use crate::validation;

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

/// The field of `m` with JSON name `key`, looking through Go embedded structs (`json:",inline"`),
/// whose fields sit in the parent's JSON object.
pub fn find_field(m: &'static Message, key: &str) -> Option<&'static Field> {
    m.fields.iter().find(|f| !f.inline && f.json == key).or_else(|| {
        m.fields.iter().filter(|f| f.inline).find_map(|f| message_of(&f.kind).and_then(|sub| find_field(sub, key)))
    })
}

impl Schema for PatchSchema {
    fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo> {
        let f = find_field(schema::message(type_name)?, field)?;
        Some(FieldInfo {
            patch_strategy: f.patch_strategy,
            merge_key: f.patch_merge_key,
            value_type: message_of(&f.kind).map(|m| m.name),
        })
    }
}

/// Removes the fields of `obj` that the type `message` does not have, as kube-apiserver's decoder
/// drops them, and returns their paths (`spec.foo`, `spec.containers[0].bar`). Top-level
/// `apiVersion` and `kind` are always known. Types without a schema are left alone.
pub fn prune_unknown(message: &str, obj: &mut Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = schema::message(message) {
        prune_object(m, obj, None, &mut out);
    }
    out
}

/// `path`: the object's path, `None` at the top; spelled out only for an unknown field.
fn prune_object(m: &'static Message, v: &mut Value, path: Option<&dyn Display>, out: &mut Vec<String>) {
    let Some(map) = v.as_object_mut() else { return };
    let mut unknown = Vec::new();
    for (k, item) in map.iter_mut() {
        if path.is_none() && (k == "apiVersion" || k == "kind") {
            continue;
        }
        let field;
        let p: &dyn Display = match path {
            Some(parent) => {
                field = validation::Field(parent, k);
                &field
            }
            None => k,
        };
        match find_field(m, k) {
            None => {
                unknown.push(k.clone());
                out.push(p.to_string());
            }
            Some(f) => prune_field(f, item, p, out),
        }
    }
    for k in unknown {
        map.remove(&k);
    }
}

fn prune_field(f: &'static Field, v: &mut Value, path: &dyn Display, out: &mut Vec<String>) {
    match (&f.kind, v) {
        (Kind::Msg(_), Value::Array(items)) if f.repeated => {
            let sub = message_of(&f.kind).expect("message kind");
            for (i, item) in items.iter_mut().enumerate() {
                prune_object(sub, item, Some(&validation::Index(path, i)), out);
            }
        }
        (Kind::Msg(_), v @ Value::Object(_)) => {
            prune_object(message_of(&f.kind).expect("message kind"), v, Some(path), out)
        }
        (Kind::Map(inner), Value::Object(entries)) => {
            if let Some(sub) = message_of(inner) {
                for (k, item) in entries.iter_mut() {
                    prune_object(sub, item, Some(&validation::Key(path, k)), out);
                }
            }
        }
        _ => {}
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
        let mut d = d;
        let mut u = prune_unknown("k8s.io.api.apps.v1.Deployment", &mut d);
        u.sort();
        assert_eq!(u, vec!["metadata.bogus".to_string(), "spec.template.spec.containers[0].nope".to_string()]);
        assert!(d.pointer("/metadata/bogus").is_none(), "unknown fields are dropped");
        assert_eq!(d.pointer("/spec/template/spec/containers/0/imagePullPolicy"), Some(&json!("Always")));
    }

    #[test]
    fn fields_of_embedded_structs_are_known() {
        let mut p = json!({"spec": {
            "containers": [{"name": "c", "image": "i",
                "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "s"}}]}],
            "volumes": [{"name": "v", "configMap": {"name": "cm"}}]}});
        assert_eq!(prune_unknown("k8s.io.api.core.v1.Pod", &mut p), Vec::<String>::new());
        let f = PATCH_SCHEMA.field("k8s.io.api.core.v1.Volume", "configMap").expect("inline field of Volume");
        assert_eq!(f.value_type, Some("k8s.io.api.core.v1.ConfigMapVolumeSource"));
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
