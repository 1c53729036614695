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
    Encoded::new(obj).bytes
}

/// An object serialized for storage ([`encode`]), with where its `metadata` fields begin: the JSON
/// a client gets back from the write is the stored bytes with the new `resourceVersion` spliced
/// in there, rather than the object encoded a second time.
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// Offset just past `metadata`'s opening brace.
    pub metadata: Option<usize>,
}

impl Encoded {
    pub fn new(obj: &Value) -> Encoded {
        let Some(map) = obj.as_object() else {
            return Encoded { bytes: serde_json::to_vec(obj).expect("json serializes"), metadata: None };
        };
        // The bytes `serde_json::to_vec` writes for a map, member by member.
        let mut bytes = Vec::with_capacity(1024);
        let mut metadata = None;
        bytes.push(b'{');
        for (i, (k, v)) in map.iter().enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            serde_json::to_writer(&mut bytes, k).expect("json serializes");
            bytes.push(b':');
            match (k.as_str(), v.as_object()) {
                ("metadata", Some(meta)) => {
                    metadata = Some(bytes.len() + 1);
                    serde_json::to_writer(&mut bytes, &MetadataWithoutResourceVersion(meta))
                }
                _ => serde_json::to_writer(&mut bytes, v),
            }
            .expect("json serializes");
        }
        bytes.push(b'}');
        Encoded { bytes, metadata }
    }
}

/// The JSON of a stored object (`stored`, [`Encoded`] bytes whose `metadata` fields begin at
/// `metadata`) with `metadata.resourceVersion` set to `revision`.
pub fn with_resource_version(stored: &[u8], metadata: usize, revision: i64) -> Vec<u8> {
    let (head, tail) = stored.split_at(metadata);
    let rv = format!("\"resourceVersion\":\"{revision}\"");
    let comma = !tail.starts_with(b"}");
    let mut out = Vec::with_capacity(stored.len() + rv.len() + 1);
    out.extend_from_slice(head);
    out.extend_from_slice(rv.as_bytes());
    if comma {
        out.push(b',');
    }
    out.extend_from_slice(tail);
    out
}

/// Appends to `out` the JSON of a stored object as an item of a list: what [`decode`] gives,
/// without `apiVersion` and `kind` (list items carry neither, as kube-apiserver's), written
/// straight from the stored bytes. Only the top level and `metadata` are parsed, into borrowed
/// raw members, instead of building the whole tree and encoding it again: a list of 10 000 Pods
/// no longer holds 10 000 trees at once.
pub fn write_list_item(kv: &KeyValue, out: &mut Vec<u8>) -> ApiResult<()> {
    write_stored(kv, false, out)
}

/// Appends to `out` the JSON of a stored object as [`decode`] gives it, written from the stored
/// bytes as [`write_list_item`] does, `apiVersion` and `kind` included (a watch event's object).
pub fn write_stored_object(kv: &KeyValue, out: &mut Vec<u8>) -> ApiResult<()> {
    write_stored(kv, true, out)
}

fn write_stored(kv: &KeyValue, with_type: bool, out: &mut Vec<u8>) -> ApiResult<()> {
    let corrupt = |e: serde_json::Error| ApiError::internal(format!("stored object {} is corrupt: {e}", kv.key));
    let Members(top) = serde_json::from_slice(&kv.value).map_err(corrupt)?;
    let revision = kv.mod_revision.to_string();
    let resource_version = |out: &mut Vec<u8>| {
        out.extend_from_slice(b"\"resourceVersion\":");
        serde_json::to_writer(&mut *out, &revision).expect("json serializes");
    };
    let mut first = true;
    let mut separate = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    out.push(b'{');
    let mut had_metadata = false;
    for (key, raw) in &top {
        if !with_type && (key == "apiVersion" || key == "kind") {
            continue;
        }
        separate(out);
        serde_json::to_writer(&mut *out, key).expect("json serializes");
        out.push(b':');
        // `decode` replaces a `metadata` that is not an object with one holding only the revision.
        if key == "metadata" {
            had_metadata = true;
            out.push(b'{');
            if let Ok(Members(meta)) = serde_json::from_str::<Members>(raw.get()) {
                for (k, v) in meta.iter().filter(|(k, _)| k != "resourceVersion") {
                    serde_json::to_writer(&mut *out, k).expect("json serializes");
                    out.push(b':');
                    out.extend_from_slice(v.get().as_bytes());
                    out.push(b',');
                }
            }
            resource_version(out);
            out.push(b'}');
        } else {
            out.extend_from_slice(raw.get().as_bytes());
        }
    }
    if !had_metadata {
        separate(out);
        out.extend_from_slice(b"\"metadata\":{");
        resource_version(out);
        out.push(b'}');
    }
    out.push(b'}');
    Ok(())
}

/// The members of a JSON object in their order, values left as raw JSON.
struct Members<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Members<'a>, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<String, &'a serde_json::value::RawValue>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

struct MetadataWithoutResourceVersion<'a>(&'a Map<String, Value>);

impl serde::Serialize for MetadataWithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let fields = self.0.iter().filter(|(k, _)| k.as_str() != "resourceVersion");
        let mut out = serializer.serialize_map(None)?;
        for (k, v) in fields {
            out.serialize_entry(k, v)?;
        }
        out.end()
    }
}

/// Whether two objects are equal apart from `metadata.resourceVersion` (a no-op write).
pub fn same_but_resource_version(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return a == b };
    if a.len() != b.len() {
        return false;
    }
    a.iter().all(|(k, va)| {
        let Some(vb) = b.get(k) else { return false };
        match (k.as_str(), va.as_object(), vb.as_object()) {
            ("metadata", Some(ma), Some(mb)) => {
                let fields =
                    |m: &'_ Map<String, Value>| m.iter().filter(|(k, _)| k.as_str() != "resourceVersion").count();
                fields(ma) == fields(mb)
                    && ma.iter().filter(|(k, _)| k.as_str() != "resourceVersion").all(|(k, v)| mb.get(k) == Some(v))
            }
            _ => va == vb,
        }
    })
}

/// Whether two objects differ outside `metadata`, `status`, `apiVersion` and `kind`: what a
/// generation bump looks at.
pub fn spec_differs(a: &Value, b: &Value) -> bool {
    const OUTSIDE: [&str; 4] = ["metadata", "status", "apiVersion", "kind"];
    let empty = Map::new();
    let (a, b) = (a.as_object().unwrap_or(&empty), b.as_object().unwrap_or(&empty));
    let spec = |m: &'_ Map<String, Value>| m.iter().filter(|(k, _)| !OUTSIDE.contains(&k.as_str())).count();
    spec(a) != spec(b) || a.iter().filter(|(k, _)| !OUTSIDE.contains(&k.as_str())).any(|(k, v)| b.get(k) != Some(v))
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
/// A new object's `metadata.uid`: a random (version 4) UUID from the thread's CSPRNG, which the
/// OS seeds and reseeds, rather than a `getrandom` system call for every object.
pub fn new_uid() -> String {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string()
}

pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the general list path makes of a stored object: decoded, without apiVersion/kind.
    fn tree_item(kv: &KeyValue) -> Value {
        let mut v = decode(kv).expect("decodes");
        if let Some(m) = v.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
        }
        v
    }

    #[test]
    fn list_items_from_stored_bytes_equal_the_decoded_ones() {
        let stored = [
            encode(
                &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"containers": [{"name": "c"}]}, "status": {}}),
            ),
            encode(&json!({"kind": "ConfigMap", "data": {"k\"ey": "v\u{e9}\n", "metadata": "not it"}, "metadata": {}})),
            // Bytes an older build stored, with a stale resourceVersion and odd metadata.
            br#"{"metadata":{"resourceVersion":"3","name":"b"},"apiVersion":"v1"}"#.to_vec(),
            br#"{"metadata":null,"spec":1}"#.to_vec(),
            br#"{"spec":{"metadata":{"name":"inner"}}}"#.to_vec(),
            br#"{}"#.to_vec(),
        ];
        for (i, value) in stored.into_iter().enumerate() {
            let kv = KeyValue { key: format!("/k/{i}"), value, create_revision: 2, mod_revision: 17 };
            let mut out = Vec::new();
            write_list_item(&kv, &mut out).expect("writes");
            let raw: Value = serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(raw, tree_item(&kv), "{}", String::from_utf8_lossy(&kv.value));
            assert_eq!(raw.pointer("/metadata/resourceVersion"), Some(&json!("17")));
            let mut whole = Vec::new();
            write_stored_object(&kv, &mut whole).expect("writes");
            let whole: Value = serde_json::from_slice(&whole).expect("valid JSON");
            assert_eq!(whole, decode(&kv).expect("decodes"), "{}", String::from_utf8_lossy(&kv.value));
        }
        let corrupt =
            KeyValue { key: "/k/bad".into(), value: b"{\"a\":".to_vec(), create_revision: 1, mod_revision: 1 };
        let error = write_list_item(&corrupt, &mut Vec::new()).expect_err("corrupt");
        assert_eq!(error.code, 500);
        assert!(error.message.contains("/k/bad"), "{}", error.message);
    }

    #[test]
    fn uids_are_distinct_version_4_uuids() {
        let a = uuid::Uuid::parse_str(&new_uid()).expect("a UUID");
        let b = uuid::Uuid::parse_str(&new_uid()).expect("a UUID");
        assert_eq!(a.get_version(), Some(uuid::Version::Random));
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(a, b);
    }

    #[test]
    fn stored_bytes_leave_out_the_resource_version_only() {
        let obj =
            json!({"kind": "Pod", "metadata": {"name": "a", "resourceVersion": "7", "uid": "u"}, "spec": {"x": 1}});
        let stored: Value = serde_json::from_slice(&encode(&obj)).expect("json");
        assert_eq!(stored, json!({"kind": "Pod", "metadata": {"name": "a", "uid": "u"}, "spec": {"x": 1}}));
        let order: Vec<&String> = stored.as_object().expect("object").keys().collect();
        assert_eq!(order, ["kind", "metadata", "spec"], "field order is kept");
    }

    #[test]
    fn stored_bytes_are_serde_json_bytes_and_take_the_new_resource_version() {
        let cases = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a\"}", "resourceVersion": "7"}, "spec": {"metadata": {"x": "}"}}}),
            json!({"spec": {"metadata": {"name": "inner"}}, "metadata": {"labels": {"a": "b"}}}),
            json!({"kind": "Pod", "metadata": {}}),
            json!({"kind": "Pod", "metadata": {"resourceVersion": "3"}}),
        ];
        for obj in cases {
            let mut without = obj.clone();
            without["metadata"].as_object_mut().expect("metadata").remove("resourceVersion");
            let encoded = Encoded::new(&obj);
            assert_eq!(encoded.bytes, serde_json::to_vec(&without).expect("json"), "{obj}");
            let at = encoded.metadata.expect("metadata is an object");
            let answered: Value =
                serde_json::from_slice(&with_resource_version(&encoded.bytes, at, 42)).expect("valid JSON");
            let mut expected = without;
            expected["metadata"]["resourceVersion"] = json!("42");
            assert_eq!(answered, expected, "{obj}");
        }
        let bare = json!({"kind": "Status", "metadata": "not an object"});
        assert_eq!(Encoded::new(&bare).metadata, None);
        assert_eq!(Encoded::new(&bare).bytes, serde_json::to_vec(&bare).expect("json"));
        assert_eq!(Encoded::new(&json!({})).bytes, b"{}");
    }

    #[test]
    fn a_write_that_changes_only_the_resource_version_is_a_no_op() {
        let a = json!({"metadata": {"name": "a", "resourceVersion": "1"}, "spec": {"x": 1}});
        let b = json!({"metadata": {"resourceVersion": "2", "name": "a"}, "spec": {"x": 1}});
        assert!(same_but_resource_version(&a, &b));
        let c = json!({"metadata": {"name": "a"}, "spec": {"x": 1}});
        assert!(same_but_resource_version(&a, &c), "a missing resourceVersion is no change either");
        let d = json!({"metadata": {"name": "a", "labels": {"l": "v"}}, "spec": {"x": 1}});
        assert!(!same_but_resource_version(&a, &d));
        let e = json!({"metadata": {"name": "a"}, "spec": {"x": 2}});
        assert!(!same_but_resource_version(&a, &e));
        let f = json!({"metadata": {"name": "a"}, "spec": {"x": 1}, "status": {}});
        assert!(!same_but_resource_version(&a, &f), "an added field is a change");
    }

    #[test]
    fn generation_looks_at_everything_but_metadata_and_status() {
        let a = json!({"kind": "Deployment", "metadata": {"generation": 1}, "spec": {"replicas": 1}, "status": {}});
        let b = json!({"metadata": {"generation": 2, "labels": {}}, "spec": {"replicas": 1}, "status": {"x": 1}});
        assert!(!spec_differs(&a, &b));
        let c = json!({"metadata": {}, "spec": {"replicas": 2}});
        assert!(spec_differs(&a, &c));
        let d = json!({"metadata": {}, "spec": {"replicas": 1}, "data": {}});
        assert!(spec_differs(&a, &d), "a new top-level field counts");
    }
}
