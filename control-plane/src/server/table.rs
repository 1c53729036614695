//! Table and PartialObjectMetadata renderings of objects and lists.

use serde_json::{Map, Value, json};

use super::Query;
use crate::registry::{Resource, Timestamp};

/// `includeObject` of a Table request.
fn include_object(query: &Query) -> &str {
    query.get("includeObject").map(String::as_str).unwrap_or("Metadata")
}

fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn row(res: &Resource, obj: &Value, query: &Query, now: Timestamp) -> Value {
    let object = match include_object(query) {
        "None" => Value::Null,
        "Object" => obj.clone(),
        _ => partial(obj),
    };
    let mut r = json!({"cells": res.strategy.cells(obj, now)});
    if !object.is_null() {
        r["object"] = object;
    }
    r
}

/// A Table of `objects`; `list_meta` is the list's metadata (resourceVersion, continue).
pub fn table(res: &Resource, objects: &[Value], list_meta: Value, query: &Query, with_columns: bool) -> Value {
    let now = Timestamp::now();
    let rows: Vec<Value> = objects.iter().map(|o| row(res, o, query, now)).collect();
    let mut t = Map::new();
    t.insert("kind".into(), json!("Table"));
    t.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
    t.insert("metadata".into(), list_meta);
    if with_columns {
        t.insert(
            "columnDefinitions".into(),
            Value::Array(res.strategy.columns().iter().map(|c| c.to_json()).collect()),
        );
    }
    t.insert("rows".into(), Value::Array(rows));
    Value::Object(t)
}

/// PartialObjectMetadataList of `objects`.
pub fn partial_list(objects: &[Value], list_meta: Value) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "items": objects.iter().map(partial).collect::<Vec<_>>(),
    })
}

pub fn partial_object(obj: &Value) -> Value {
    partial(obj)
}
