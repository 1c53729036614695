//! JSON patch (RFC 6902) with JSON pointers (RFC 6901).
//!
//! The patch is applied to a copy of the document, so a failing operation leaves nothing half done.

use serde_json::{Map, Value};

use super::{PatchError, json_eq};

/// Most operations one JSON patch may hold; kube-apiserver refuses longer patches with 413.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Applies the JSON patch `patch` (an array of operations) to `doc` and returns the result.
///
/// All six operations are supported (`add`, `remove`, `replace`, `move`, `copy`, `test`), with `-` as the
/// index past the end of an array and the `~0`/`~1` escapes. Members other than `op`, `path`, `from` and
/// `value` are ignored. Either every operation applies or the error of the first failing one is returned.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::invalid("a JSON patch must be an array of operations"));
    };
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations { count: ops.len(), max: MAX_JSON_PATCH_OPERATIONS });
    }
    if let Some(index) = ops.iter().position(|op| !op.is_object()) {
        return Err(PatchError::invalid(format!("JSON patch operation {index} is not an object")));
    }
    let mut out = doc.clone();
    for (index, op) in ops.iter().enumerate() {
        apply_operation(&mut out, op, index)?;
    }
    Ok(out)
}

fn apply_operation(doc: &mut Value, op: &Value, index: usize) -> Result<(), PatchError> {
    let bad = |reason: String| PatchError::InvalidOperation { index, reason };
    let member = |name: &str| -> Result<&Value, PatchError> {
        op.get(name).ok_or_else(|| bad(format!("missing member {name:?}")))
    };
    let pointer = |name: &str| -> Result<(String, Vec<String>), PatchError> {
        let raw = member(name)?.as_str().ok_or_else(|| bad(format!("member {name:?} must be a string")))?;
        let tokens = parse_pointer(raw).map_err(|reason| bad(format!("{name} {raw:?}: {reason}")))?;
        Ok((raw.to_owned(), tokens))
    };
    let kind = member("op")?.as_str().ok_or_else(|| bad("member \"op\" must be a string".into()))?;
    let (path, tokens) = pointer("path")?;
    let located = |result: Result<(), Fault>| {
        result.map_err(|fault| match fault {
            Fault::Missing => PatchError::PathNotFound { index, path: path.clone() },
            Fault::Invalid(reason) => bad(format!("path {path:?}: {reason}")),
        })
    };
    match kind {
        "add" => {
            let value = member("value")?.clone();
            located(add(doc, &tokens, value))
        }
        "remove" => located(remove(doc, &tokens).map(drop)),
        "replace" => {
            let value = member("value")?.clone();
            located(replace(doc, &tokens, value))
        }
        "test" => {
            let expected = member("value")?;
            match get(doc, &tokens) {
                Some(actual) if json_eq(actual, expected) => Ok(()),
                Some(_) => Err(PatchError::TestFailed { index, path }),
                None => Err(PatchError::PathNotFound { index, path }),
            }
        }
        "move" => {
            let (from, from_tokens) = pointer("from")?;
            if from_tokens == tokens {
                // Moving a value onto itself changes nothing, but the value must exist.
                return get(doc, &tokens).map(drop).ok_or(PatchError::PathNotFound { index, path });
            }
            if tokens.starts_with(&from_tokens) {
                return Err(bad(format!("cannot move {from:?} into its own child {path:?}")));
            }
            let value = remove(doc, &from_tokens).map_err(|fault| match fault {
                Fault::Missing => PatchError::PathNotFound { index, path: from.clone() },
                Fault::Invalid(reason) => bad(format!("from {from:?}: {reason}")),
            })?;
            located(add(doc, &tokens, value))
        }
        "copy" => {
            let (from, from_tokens) = pointer("from")?;
            let value = get(doc, &from_tokens).cloned().ok_or(PatchError::PathNotFound { index, path: from })?;
            located(add(doc, &tokens, value))
        }
        other => Err(bad(format!("unknown op {other:?}"))),
    }
}

/// Why a location could not be used.
enum Fault {
    /// It does not exist (or its parent does not).
    Missing,
    /// The pointer cannot name anything here, e.g. the array index `01`.
    Invalid(String),
}

/// Splits a JSON pointer into its unescaped reference tokens.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("a JSON pointer must be empty or start with '/'".into());
    };
    rest.split('/').map(unescape_token).collect()
}

fn unescape_token(token: &str) -> Result<String, String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => return Err(format!("invalid escape in {token:?}: '~' must be followed by '0' or '1'")),
        }
    }
    Ok(out)
}

/// Parses an array index token: decimal digits without leading zeros, or `-` (one past the end) when
/// `allow_end`. The index must be at most `len` (`allow_end`) or below it.
fn array_index(token: &str, len: usize, allow_end: bool) -> Result<usize, Fault> {
    if token == "-" {
        return if allow_end { Ok(len) } else { Err(Fault::Missing) };
    }
    let well_formed =
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) && (token == "0" || !token.starts_with('0'));
    if !well_formed {
        return Err(Fault::Invalid(format!("{token:?} is not an array index")));
    }
    match token.parse::<usize>() {
        Ok(i) if i < len || (allow_end && i == len) => Ok(i),
        _ => Err(Fault::Missing),
    }
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(doc, |value, token| match value {
        Value::Object(map) => map.get(token),
        Value::Array(items) => array_index(token, items.len(), false).ok().map(|i| &items[i]),
        _ => None,
    })
}

fn get_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(doc, |value, token| match value {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => array_index(token, items.len(), false).ok().map(|i| &mut items[i]),
        _ => None,
    })
}

/// The container holding the last token of a non-empty pointer.
fn parent<'a>(doc: &'a mut Value, tokens: &'a [String]) -> Result<(&'a mut Value, &'a str), Fault> {
    let Some((last, init)) = tokens.split_last() else {
        return Err(Fault::Invalid("the whole document has no parent".into()));
    };
    let container = get_mut(doc, init).ok_or(Fault::Missing)?;
    Ok((container, last))
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), Fault> {
    if tokens.is_empty() {
        *doc = value;
        return Ok(());
    }
    match parent(doc, tokens)? {
        (Value::Object(map), key) => {
            map.insert(key.to_owned(), value);
            Ok(())
        }
        (Value::Array(items), token) => {
            let i = array_index(token, items.len(), true)?;
            items.insert(i, value);
            Ok(())
        }
        _ => Err(Fault::Missing),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, Fault> {
    if tokens.is_empty() {
        return Err(Fault::Invalid("cannot remove the whole document".into()));
    }
    match parent(doc, tokens)? {
        (Value::Object(map), key) => remove_member(map, key).ok_or(Fault::Missing),
        (Value::Array(items), token) => {
            let i = array_index(token, items.len(), false)?;
            Ok(items.remove(i))
        }
        _ => Err(Fault::Missing),
    }
}

fn remove_member(map: &mut Map<String, Value>, key: &str) -> Option<Value> {
    // Keep the order of the remaining members: object order is what clients see back.
    map.shift_remove(key)
}

fn replace(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), Fault> {
    if tokens.is_empty() {
        *doc = value;
        return Ok(());
    }
    let target = match parent(doc, tokens)? {
        (Value::Object(map), key) => map.get_mut(key).ok_or(Fault::Missing)?,
        (Value::Array(items), token) => {
            let i = array_index(token, items.len(), false)?;
            &mut items[i]
        }
        _ => return Err(Fault::Missing),
    };
    *target = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(doc: Value, patch: Value) -> Value {
        json_patch(&doc, &patch).expect("patch applies")
    }

    fn fail(doc: Value, patch: Value) -> PatchError {
        json_patch(&doc, &patch).expect_err("patch must fail")
    }

    // RFC 6902 appendix A, one test per example.

    #[test]
    fn a1_add_object_member() {
        let out = apply(json!({"foo": "bar"}), json!([{"op": "add", "path": "/baz", "value": "qux"}]));
        assert_eq!(out, json!({"foo": "bar", "baz": "qux"}));
    }

    #[test]
    fn a2_add_array_element() {
        let out = apply(json!({"foo": ["bar", "baz"]}), json!([{"op": "add", "path": "/foo/1", "value": "qux"}]));
        assert_eq!(out, json!({"foo": ["bar", "qux", "baz"]}));
    }

    #[test]
    fn a3_remove_object_member() {
        let out = apply(json!({"baz": "qux", "foo": "bar"}), json!([{"op": "remove", "path": "/baz"}]));
        assert_eq!(out, json!({"foo": "bar"}));
    }

    #[test]
    fn a4_remove_array_element() {
        let out = apply(json!({"foo": ["bar", "qux", "baz"]}), json!([{"op": "remove", "path": "/foo/1"}]));
        assert_eq!(out, json!({"foo": ["bar", "baz"]}));
    }

    #[test]
    fn a5_replace_value() {
        let out =
            apply(json!({"baz": "qux", "foo": "bar"}), json!([{"op": "replace", "path": "/baz", "value": "boo"}]));
        assert_eq!(out, json!({"baz": "boo", "foo": "bar"}));
    }

    #[test]
    fn a6_move_value() {
        let out = apply(
            json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
            json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]),
        );
        assert_eq!(out, json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}));
    }

    #[test]
    fn a7_move_array_element() {
        let out = apply(
            json!({"foo": ["all", "grass", "cows", "eat"]}),
            json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}]),
        );
        assert_eq!(out, json!({"foo": ["all", "cows", "eat", "grass"]}));
    }

    #[test]
    fn a8_test_success() {
        let doc = json!({"baz": "qux", "foo": ["a", 2, "c"]});
        let out = apply(
            doc.clone(),
            json!([
                {"op": "test", "path": "/baz", "value": "qux"},
                {"op": "test", "path": "/foo/1", "value": 2}
            ]),
        );
        assert_eq!(out, doc);
    }

    #[test]
    fn a9_test_error() {
        let err = fail(json!({"baz": "qux"}), json!([{"op": "test", "path": "/baz", "value": "bar"}]));
        assert_eq!(err, PatchError::TestFailed { index: 0, path: "/baz".into() });
        assert_eq!(err.status_code(), 422);
    }

    #[test]
    fn a10_add_nested_member_object() {
        let out = apply(json!({"foo": "bar"}), json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}]));
        assert_eq!(out, json!({"foo": "bar", "child": {"grandchild": {}}}));
    }

    #[test]
    fn a11_unrecognized_members_are_ignored() {
        let out = apply(json!({"foo": "bar"}), json!([{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}]));
        assert_eq!(out, json!({"foo": "bar", "baz": "qux"}));
    }

    #[test]
    fn a12_add_to_nonexistent_target_fails() {
        let err = fail(json!({"foo": "bar"}), json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]));
        assert_eq!(err, PatchError::PathNotFound { index: 0, path: "/baz/bat".into() });
    }

    #[test]
    fn a14_escape_ordering() {
        let out = apply(
            json!({"/": 9, "~1": 10}),
            json!([{"op": "test", "path": "/~01", "value": 10}, {"op": "add", "path": "/~1", "value": 1}]),
        );
        assert_eq!(out, json!({"/": 1, "~1": 10}));
    }

    #[test]
    fn a15_string_is_not_number() {
        let err = fail(json!({"/": 9, "~1": 10}), json!([{"op": "test", "path": "/~01", "value": "10"}]));
        assert!(matches!(err, PatchError::TestFailed { .. }), "{err:?}");
    }

    #[test]
    fn a16_add_array_value() {
        let out = apply(json!({"foo": ["bar"]}), json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]));
        assert_eq!(out, json!({"foo": ["bar", ["abc", "def"]]}));
    }

    // Beyond the appendix.

    #[test]
    fn failing_operation_applies_nothing() {
        let doc = json!({"metadata": {"labels": {"app": "web"}}});
        let err = fail(
            doc.clone(),
            json!([
                {"op": "add", "path": "/metadata/labels/tier", "value": "front"},
                {"op": "test", "path": "/metadata/labels/app", "value": "db"}
            ]),
        );
        assert_eq!(err, PatchError::TestFailed { index: 1, path: "/metadata/labels/app".into() });
        assert_eq!(doc, json!({"metadata": {"labels": {"app": "web"}}}));
    }

    #[test]
    fn root_pointer_replaces_the_document() {
        assert_eq!(apply(json!({"a": 1}), json!([{"op": "add", "path": "", "value": [1]}])), json!([1]));
        assert_eq!(apply(json!({"a": 1}), json!([{"op": "replace", "path": "", "value": {"b": 2}}])), json!({"b": 2}));
        assert!(matches!(fail(json!({}), json!([{"op": "remove", "path": ""}])), PatchError::InvalidOperation { .. }));
    }

    #[test]
    fn array_indices_are_strict() {
        let doc = json!({"a": [1, 2]});
        let leading_zero = fail(doc.clone(), json!([{"op": "replace", "path": "/a/01", "value": 0}]));
        assert!(matches!(leading_zero, PatchError::InvalidOperation { index: 0, .. }), "{leading_zero:?}");
        let past_end = fail(doc.clone(), json!([{"op": "add", "path": "/a/3", "value": 0}]));
        assert!(matches!(past_end, PatchError::PathNotFound { .. }), "{past_end:?}");
        let dash_remove = fail(doc.clone(), json!([{"op": "remove", "path": "/a/-"}]));
        assert!(matches!(dash_remove, PatchError::PathNotFound { .. }), "{dash_remove:?}");
        assert_eq!(apply(doc, json!([{"op": "add", "path": "/a/2", "value": 3}])), json!({"a": [1, 2, 3]}));
    }

    #[test]
    fn replace_and_remove_need_an_existing_target() {
        let doc = json!({"a": {"b": 1}});
        assert!(matches!(
            fail(doc.clone(), json!([{"op": "replace", "path": "/a/c", "value": 1}])),
            PatchError::PathNotFound { .. }
        ));
        assert!(matches!(fail(doc, json!([{"op": "remove", "path": "/a/c"}])), PatchError::PathNotFound { .. }));
    }

    #[test]
    fn copy_and_move() {
        let out = apply(
            json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}),
            json!([
                {"op": "copy", "from": "/spec/containers/0", "path": "/spec/containers/-"},
                {"op": "replace", "path": "/spec/containers/1/name", "value": "b"},
                {"op": "move", "from": "/spec/containers/0/image", "path": "/spec/image"}
            ]),
        );
        assert_eq!(out, json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "image": "x"}], "image": "x"}}));
        let into_child = fail(json!({"a": {"b": {}}}), json!([{"op": "move", "from": "/a", "path": "/a/b/c"}]));
        assert!(matches!(into_child, PatchError::InvalidOperation { .. }), "{into_child:?}");
        assert_eq!(apply(json!({"a": 1}), json!([{"op": "move", "from": "/a", "path": "/a"}])), json!({"a": 1}));
    }

    #[test]
    fn test_compares_numbers_by_value() {
        let doc = json!({"replicas": 3, "ports": [{"port": 80}]});
        apply(doc.clone(), json!([{"op": "test", "path": "/replicas", "value": 3.0}]));
        apply(doc, json!([{"op": "test", "path": "/ports", "value": [{"port": 80.0}]}]));
    }

    #[test]
    fn malformed_documents_and_operations() {
        let not_array = fail(json!({}), json!({"op": "add"}));
        assert!(not_array.is_invalid_input(), "{not_array:?}");
        let not_object = fail(json!({}), json!(["add"]));
        assert!(not_object.is_invalid_input(), "{not_object:?}");
        for op in [
            json!({"op": "frobnicate", "path": "/a"}),
            json!({"path": "/a", "value": 1}),
            json!({"op": "add", "value": 1}),
            json!({"op": "add", "path": "/a"}),
            json!({"op": "add", "path": "a", "value": 1}),
            json!({"op": "add", "path": "/a~2", "value": 1}),
            json!({"op": "copy", "path": "/a"}),
        ] {
            let err = fail(json!({}), json!([op]));
            assert!(matches!(err, PatchError::InvalidOperation { index: 0, .. }), "{op}: {err:?}");
            assert_eq!(err.status_code(), 422);
        }
    }

    #[test]
    fn add_null_value_and_member_order() {
        let out = apply(
            json!({"b": 1, "a": 2, "c": 3}),
            json!([{"op": "remove", "path": "/b"}, {"op": "add", "path": "/d", "value": null}]),
        );
        let keys: Vec<&String> = out.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["a", "c", "d"]);
        assert_eq!(out["d"], Value::Null);
    }

    #[test]
    fn too_many_operations() {
        let ops = vec![json!({"op": "test", "path": "", "value": {}}); MAX_JSON_PATCH_OPERATIONS + 1];
        let err = fail(json!({}), Value::Array(ops));
        assert_eq!(err.status_code(), 413);
    }
}
