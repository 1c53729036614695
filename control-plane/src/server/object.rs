//! Object helpers shared by the handlers: storage encoding, metadata access, timestamps.

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::errors::{ApiError, ApiResult};
use crate::registry::Resource;
use crate::storage::KeyValue;

/// RFC 3339 with second precision, as Kubernetes' `metav1.Time`.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn rfc3339_in(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The object's `metadata`, created if missing.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata is an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Serializes an object for storage: without `resourceVersion`, which is the store's mod revision.
pub fn encode(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).expect("json serializes")
}

/// Parses a stored object and stamps its `resourceVersion`.
pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
    meta_mut(&mut v).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    Ok(v)
}

/// Sets `apiVersion` and `kind`, rejecting a body that names another type.
pub fn check_type(res: &Resource, obj: &mut Value) -> ApiResult<()> {
    let want_av = res.api_version();
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && !av.is_empty()
        && av != want_av
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want_av})"
        )));
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != res.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            res.kind
        )));
    }
    let Some(map) = obj.as_object_mut() else { return Err(ApiError::bad_request("the body must be an object")) };
    // apiVersion and kind first, as kube-apiserver prints them.
    let rest = std::mem::take(map);
    map.insert("apiVersion".into(), json!(want_av));
    map.insert("kind".into(), json!(res.kind));
    for (k, v) in rest {
        if k != "apiVersion" && k != "kind" {
            map.insert(k, v);
        }
    }
    Ok(())
}

/// Random suffix for `generateName`, from the same alphabet as Kubernetes (no vowels, no 0/1/3).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}

/// Everything but `metadata` and `status`: what a generation bump looks at.
pub fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}
