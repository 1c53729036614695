//! JSON merge patch (RFC 7386): objects merge recursively, `null` deletes a member, anything else
//! (arrays included) replaces the target.

use serde_json::{Map, Value};

/// Applies the JSON merge patch `patch` to `doc` and returns the result. Cannot fail: every JSON value
/// is a valid merge patch.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    merge_into(doc.clone(), patch)
}

fn merge_into(target: Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut target = match target {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for (key, value) in patch {
        if value.is_null() {
            // Keep the order of the remaining members.
            target.shift_remove(key);
            continue;
        }
        let merged = merge_into(target.get_mut(key).map(Value::take).unwrap_or(Value::Null), value);
        target.insert(key.clone(), merged);
    }
    Value::Object(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_appendix_a() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}})),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
        ];
        for (doc, patch, want) in cases {
            assert_eq!(merge_patch(&doc, &patch), want, "doc {doc} patch {patch}");
        }
    }

    #[test]
    fn labels_are_set_and_removed_keeping_member_order() {
        let doc = json!({"metadata": {"name": "web", "labels": {"a": "1", "b": "2", "c": "3"}}, "spec": {}});
        let out = merge_patch(&doc, &json!({"metadata": {"labels": {"b": null, "d": "4", "a": "0"}}}));
        assert_eq!(out, json!({"metadata": {"name": "web", "labels": {"a": "0", "c": "3", "d": "4"}}, "spec": {}}));
        let labels: Vec<&String> = out["metadata"]["labels"].as_object().expect("labels").keys().collect();
        assert_eq!(labels, ["a", "c", "d"]);
    }
}
