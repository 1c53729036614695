//! Kubernetes strategic merge patch, as kube-apiserver applies it
//! (`k8s.io/apimachinery/pkg/util/strategicpatch`, server side).
//!
//! A strategic merge patch is a JSON merge patch whose lists know how to merge. Per field, the type's
//! patch strategy says what happens to a list (or map):
//!
//! * no strategy: maps merge key by key, lists are replaced whole;
//! * `merge` on a list of objects: elements are matched by the field's merge key and merged recursively,
//!   unmatched patch elements are added; on a list of primitives: the union of both lists;
//! * `replace`: the value is replaced whole;
//! * `retainKeys`: nothing by itself; the client sends a `$retainKeys` directive.
//!
//! Directives in the patch:
//!
//! * `"$patch": "replace"` in a map replaces the map with the rest of the patch map;
//!   `{"$patch": "replace"}` as a list element replaces the list with the other patch elements;
//! * `"$patch": "delete"` in a map empties it (the key stays, as `{}`, like upstream); as a list element
//!   `{"name": "x", "$patch": "delete"}` deletes every element whose merge key is `x`;
//! * `"$patch": "merge"` is the default, spelled out (upstream rejects it; we accept it);
//! * `"$retainKeys": [k…]` drops every key of the live map not listed (the patch may only set listed keys);
//! * `"$deleteFromPrimitiveList/<field>": [v…]` removes those values from the primitive list `field`;
//! * `"$setElementOrder/<field>": [...]` gives the order of the merged list `field`: listed elements come in
//!   that order, elements only the server has keep their place relative to the listed ones.
//!
//! Ordering without `$setElementOrder` follows upstream too: patch elements keep the patch's order, the
//! server's other elements keep theirs, and the two are interleaved using the server's order as a guide.
//! A consequence: a new element in a patch that names no existing element lands *first* in the list.
//!
//! Deliberate differences from upstream, for a server that stores JSON rather than Go structs:
//! * a field the [`Schema`] does not know (unknown type or field, e.g. custom resources) is patched like
//!   JSON merge patch (maps merge, lists are replaced), with directives still honoured, where upstream
//!   fails;
//! * values copied from the patch (new keys, replaced lists and maps) are cleaned of directives and
//!   `null` members instead of being copied verbatim for the Go decoder to drop;
//! * `null` or a missing list in `$deleteFromPrimitiveList/<field>` changes nothing.

use serde_json::{Map, Value};

use super::{PatchError, json_eq};

/// Key of the `$patch` directive.
const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

/// Describes the Kubernetes types for strategic merge patch.
pub trait Schema {
    /// Field `field` of the type named `type_name` (e.g. "io.k8s.api.core.v1.PodSpec" / "containers").
    fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo>;
}

/// Patch metadata of one field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldInfo {
    /// "merge", "replace", "retainKeys", "merge,retainKeys" or "" (no strategy: lists are replaced atomically, maps merged).
    pub patch_strategy: &'static str,
    /// The merge key of a list with strategy merge (e.g. "name", "containerPort", "mountPath"); "" if none.
    pub merge_key: &'static str,
    /// Type name of the field's value, or of the list's elements; None for scalars, strings, maps of scalars.
    pub value_type: Option<&'static str>,
}

/// Applies the strategic merge patch `patch` to `doc`, an object of the type named `type_name`.
///
/// The patch must be a JSON object (else [`PatchError::InvalidPatch`]); a `null` document counts as `{}`.
pub fn strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    schema: &dyn Schema,
    type_name: &str,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::invalid("a strategic merge patch must be a JSON object"));
    };
    let original = match doc {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => return Err(PatchError::unprocessable("the object to patch is not a JSON object")),
    };
    let merged = Patcher { schema }.merge_map(original, patch.clone(), Some(type_name))?;
    Ok(Value::Object(merged))
}

/// A field's patch metadata, parsed.
#[derive(Clone, Copy, Debug, Default)]
struct Meta {
    /// Lists merge (strategy `merge`).
    merge: bool,
    /// The value is replaced whole (strategy `replace`).
    replace: bool,
    /// Merge key of a list of objects; None for primitives or when unknown.
    merge_key: Option<&'static str>,
    /// Type of the value or of the list's elements.
    value_type: Option<&'static str>,
}

/// The JSON kind of a list's elements; all must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Number,
    String,
    Object,
}

struct Patcher<'a> {
    schema: &'a dyn Schema,
}

impl Patcher<'_> {
    fn meta(&self, type_name: Option<&str>, field: &str) -> Meta {
        let Some(info) = type_name.and_then(|t| self.schema.field(t, field)) else {
            return Meta::default();
        };
        let strategies = || info.patch_strategy.split(',').map(str::trim);
        Meta {
            merge: strategies().any(|s| s == "merge"),
            replace: strategies().any(|s| s == "replace"),
            merge_key: Some(info.merge_key).filter(|k| !k.is_empty()),
            value_type: info.value_type,
        }
    }

    /// Merges `patch` into `original`, both maps of type `type_name`.
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        type_name: Option<&str>,
    ) -> Result<Map<String, Value>, PatchError> {
        if let Some(directive) = patch.shift_remove(DIRECTIVE) {
            match directive.as_str() {
                Some("replace") => return self.merge_map(Map::new(), patch, type_name),
                Some("delete") => return Ok(Map::new()),
                Some("merge") => {}
                _ => return Err(PatchError::invalid(format!("unknown {DIRECTIVE} directive {directive}"))),
            }
        }
        apply_retain_keys(&mut original, &mut patch)?;
        self.apply_element_orders(&mut original, &mut patch, type_name)?;

        for (key, patch_value) in patch {
            let (key, delete_list) = match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
                Some(rest) => {
                    let field = rest.strip_prefix('/').ok_or_else(|| {
                        PatchError::invalid(format!("{key:?}: expected {DELETE_FROM_PRIMITIVE_LIST}/<field>"))
                    })?;
                    (field.to_owned(), true)
                }
                None => (key, false),
            };
            if delete_list {
                delete_from_list(&mut original, &key, patch_value)?;
                continue;
            }
            if patch_value.is_null() {
                original.shift_remove(&key);
                continue;
            }
            let meta = self.meta(type_name, &key);
            let current = match original.get_mut(&key) {
                Some(current) if same_kind(current, &patch_value) => current,
                _ => {
                    // New key, or a value of another JSON type: take the patch's value.
                    match self.materialize(patch_value, &meta)? {
                        Some(value) => original.insert(key, value),
                        None => original.shift_remove(&key),
                    };
                    continue;
                }
            };
            *current = match (current.take(), patch_value) {
                (Value::Object(_), Value::Object(p)) if meta.replace => {
                    Value::Object(self.merge_map(Map::new(), p, meta.value_type)?)
                }
                (Value::Object(o), Value::Object(p)) => Value::Object(self.merge_map(o, p, meta.value_type)?),
                (Value::Array(o), Value::Array(p)) if meta.merge => Value::Array(self.merge_list(o, p, &meta)?),
                (Value::Array(_), Value::Array(p)) => Value::Array(self.materialize_list(p, &meta)?),
                (_, scalar) => scalar,
            };
        }
        Ok(original)
    }

    /// The value to store for a patch value that has nothing to merge with: directives applied, nulls
    /// dropped. None when the value is a `$patch: delete` map.
    fn materialize(&self, value: Value, meta: &Meta) -> Result<Option<Value>, PatchError> {
        Ok(Some(match value {
            Value::Object(map) => {
                if map.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                    return Ok(None);
                }
                Value::Object(self.merge_map(Map::new(), map, meta.value_type)?)
            }
            Value::Array(items) if meta.merge => Value::Array(self.merge_list(Vec::new(), items, meta)?),
            Value::Array(items) => Value::Array(self.materialize_list(items, meta)?),
            other => other,
        }))
    }

    /// The elements of a list that replaces another: objects are cleaned of directives and nulls.
    fn materialize_list(&self, items: Vec<Value>, meta: &Meta) -> Result<Vec<Value>, PatchError> {
        items
            .into_iter()
            .map(|item| match item {
                Value::Object(map) => Ok(Value::Object(self.merge_map(Map::new(), map, meta.value_type)?)),
                other => Ok(other),
            })
            .collect()
    }

    /// Merges the patch list into the live list of a field with strategy `merge`.
    fn merge_list(&self, original: Vec<Value>, patch: Vec<Value>, meta: &Meta) -> Result<Vec<Value>, PatchError> {
        Ok(self.merge_list_traced(original, patch, meta)?.items)
    }

    /// [`Self::merge_list`], also returning the order `$setElementOrder` handling uses for server elements.
    fn merge_list_traced(&self, original: Vec<Value>, patch: Vec<Value>, meta: &Meta) -> Result<Merged, PatchError> {
        if original.is_empty() && patch.is_empty() {
            return Ok(Merged { items: original, natural: None });
        }
        if element_kind(&original, &patch, "list")? != Kind::Object {
            // Primitives: the union, without duplicates.
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for value in original.iter().chain(&patch) {
                if !merged.iter().any(|m| json_eq(m, value)) {
                    merged.push(value.clone());
                }
            }
            return Ok(Merged { items: order_list(merged, &patch, &original, None)?, natural: None });
        }
        let Some(key) = meta.merge_key else {
            return Err(PatchError::unprocessable("cannot merge a list of objects that has no merge key"));
        };
        let mut live = Vec::with_capacity(original.len());
        for value in original {
            match value {
                Value::Object(map) if map.contains_key(key) => live.push(map),
                other => {
                    return Err(PatchError::unprocessable(format!("list element {other} lacks its merge key {key:?}")));
                }
            }
        }

        let mut elements = Vec::with_capacity(patch.len());
        let mut replace = false;
        for element in patch {
            let Value::Object(mut element) = element else {
                return Err(PatchError::invalid(format!("merge list element {element} is not an object")));
            };
            let Some(directive) = element.get(DIRECTIVE) else {
                elements.push(element);
                continue;
            };
            match directive.as_str() {
                Some("delete") => {
                    let Some(value) = element.get(key) else {
                        return Err(PatchError::invalid(format!(
                            "{DIRECTIVE}: delete list element lacks its merge key {key:?}"
                        )));
                    };
                    live.retain(|v| !v.get(key).is_some_and(|v| json_eq(v, value)));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    element.shift_remove(DIRECTIVE);
                    if !element.is_empty() {
                        elements.push(element);
                    }
                }
                _ => return Err(PatchError::invalid(format!("unknown {DIRECTIVE} directive {directive}"))),
            }
        }
        if replace {
            let items = elements
                .into_iter()
                .map(|e| Ok(Value::Object(self.merge_map(Map::new(), e, meta.value_type)?)))
                .collect::<Result<_, PatchError>>()?;
            return Ok(Merged { items, natural: None });
        }

        // Elements are ordered by their merge key only: keep just that.
        let key_only = |value: Option<&Value>| {
            Value::Object(Map::from_iter([(key.to_owned(), value.cloned().unwrap_or(Value::Null))]))
        };
        let server_order: Vec<Value> = live.iter().map(|m| key_only(m.get(key))).collect();
        let mut patch_order = Vec::with_capacity(elements.len());
        for element in elements {
            let Some(value) = element.get(key) else {
                return Err(PatchError::invalid(format!(
                    "patch list element {} lacks its merge key {key:?}",
                    Value::Object(element)
                )));
            };
            patch_order.push(key_only(Some(value)));
            match live.iter().position(|v| v.get(key).is_some_and(|v| json_eq(v, value))) {
                Some(i) => {
                    let existing = std::mem::take(&mut live[i]);
                    live[i] = self.merge_map(existing, element, meta.value_type)?;
                }
                None => live.push(self.merge_map(Map::new(), element, meta.value_type)?),
            }
        }
        let natural = live.iter().map(|m| key_only(m.get(key))).collect();
        let items = live.into_iter().map(Value::Object).collect();
        Ok(Merged { items: order_list(items, &patch_order, &server_order, Some(key))?, natural: Some(natural) })
    }

    /// Handles every `$setElementOrder/<field>` of `patch`: merges `field` now and orders the result.
    fn apply_element_orders(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        type_name: Option<&str>,
    ) -> Result<(), PatchError> {
        let directives: Vec<String> = patch.keys().filter(|k| k.starts_with(SET_ELEMENT_ORDER)).cloned().collect();
        for directive in directives {
            let Some(order) = patch.shift_remove(&directive) else { continue };
            let field = directive
                .strip_prefix(SET_ELEMENT_ORDER)
                .and_then(|rest| rest.strip_prefix('/'))
                .ok_or_else(|| PatchError::invalid(format!("{directive:?}: expected {SET_ELEMENT_ORDER}/<field>")))?;
            let Value::Array(order) = order else {
                return Err(PatchError::invalid(format!("{directive} must be a list")));
            };
            let meta = self.meta(type_name, field);
            let live = match original.get(field) {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => Some(items.clone()),
                Some(other) => {
                    return Err(PatchError::unprocessable(format!("{directive}: {field} is not a list but {other}")));
                }
            };
            let patched = match patch.get(field) {
                None => None,
                // Deleting the list: the main loop removes it, there is nothing to order.
                Some(Value::Null) => continue,
                Some(Value::Array(items)) => Some(items.clone()),
                Some(_) => return Err(PatchError::invalid(format!("{directive}: {field} in the patch is not a list"))),
            };
            if let Some(key) = meta.merge_key
                && let Some(bad) = order.iter().find(|v| v.get(key).is_none())
            {
                return Err(PatchError::invalid(format!("{directive}: element {bad} lacks the merge key {key:?}")));
            }
            if let Some(patched) = &patched {
                check_order(patched, &order, meta.merge_key, &directive)?;
            }
            let (merged, natural) = match (&live, patched) {
                (Some(live), None) => (live.clone(), None),
                (None, Some(patched)) if meta.merge => (self.merge_list(Vec::new(), patched, &meta)?, None),
                (Some(live), Some(patched)) if meta.merge => {
                    let merged = self.merge_list_traced(live.clone(), patched, &meta)?;
                    (merged.items, merged.natural)
                }
                (_, Some(patched)) => (self.materialize_list(patched, &meta)?, None),
                (None, None) => continue,
            };
            let live = live.unwrap_or_default();
            // Upstream deletes and appends list elements in the storage of the live list it later orders
            // by, so the server order it uses is the live list with the deleted elements removed and the
            // first appended elements in the freed slots. Its tests (e.g. "add map and delete map from
            // merging list") pin down the resulting order; reproduce it.
            let server_order = match natural {
                Some(mut natural) => {
                    natural.truncate(live.len());
                    natural
                }
                None => live,
            };
            let ordered = order_list(merged, &order, &server_order, meta.merge_key)?;
            original.insert(field.to_owned(), Value::Array(ordered));
            patch.shift_remove(field);
        }
        Ok(())
    }
}

/// `$deleteFromPrimitiveList/<key>`: removes the listed values from the primitive list `key`.
fn delete_from_list(original: &mut Map<String, Value>, key: &str, values: Value) -> Result<(), PatchError> {
    let values = match values {
        Value::Array(values) => values,
        Value::Null => return Ok(()),
        _ => return Err(PatchError::invalid(format!("{DELETE_FROM_PRIMITIVE_LIST}/{key} must be a list"))),
    };
    let Some(Value::Array(list)) = original.get_mut(key) else {
        return Ok(());
    };
    if list.is_empty() && values.is_empty() {
        return Ok(());
    }
    if element_kind(list, &values, key)? == Kind::Object {
        return Err(PatchError::invalid(format!(
            "{DELETE_FROM_PRIMITIVE_LIST}/{key}: {key} is not a list of primitives"
        )));
    }
    list.retain(|v| !values.iter().any(|d| json_eq(d, v)));
    Ok(())
}

/// `$retainKeys`: drops the keys of `original` that are not listed; the patch may only set listed keys.
fn apply_retain_keys(original: &mut Map<String, Value>, patch: &mut Map<String, Value>) -> Result<(), PatchError> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::invalid(format!("{RETAIN_KEYS} must be a list")));
    };
    let listed = |key: &str| retain.iter().any(|r| r.as_str() == Some(key));
    for (key, value) in patch.iter() {
        let directive = key.starts_with(DELETE_FROM_PRIMITIVE_LIST) || key.starts_with(SET_ELEMENT_ORDER);
        if !value.is_null() && !directive && !listed(key) {
            return Err(PatchError::invalid(format!("the patch sets {key:?}, which {RETAIN_KEYS} does not list")));
        }
    }
    original.retain(|key, _| listed(key));
    Ok(())
}

/// Checks that the patch list names its elements in the order `$setElementOrder` gives (a subsequence of
/// it, `$patch` elements aside).
fn check_order(patch: &[Value], order: &[Value], key: Option<&str>, directive: &str) -> Result<(), PatchError> {
    let named: Vec<&Value> = patch.iter().filter(|v| v.get(DIRECTIVE).is_none()).collect();
    let same = |a: &Value, b: &Value| match key {
        Some(key) => matches!((a.get(key), b.get(key)), (Some(x), Some(y)) if json_eq(x, y)),
        None => json_eq(a, b),
    };
    let mut next = 0;
    for wanted in order {
        if next < named.len() && same(named[next], wanted) {
            next += 1;
        }
    }
    if next < named.len() {
        return Err(PatchError::invalid(format!("the order of the patch list does not match {directive}")));
    }
    Ok(())
}

/// Orders a merged list as upstream does: the elements named in `patch_order` in that order, the others in
/// their `server_order` order, interleaved by walking both and preferring a server element only when the
/// server had it before the next patch element.
fn order_list(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    if let Some(key) = key
        && let Some(bad) = merged.iter().chain(server_order).find(|v| v.get(key).is_none())
    {
        return Err(PatchError::unprocessable(format!("list element {bad} lacks its merge key {key:?}")));
    }
    // Identity of an element: its merge key's value, or the element itself for primitives.
    let identity = |v: &Value| -> Value {
        match key {
            Some(key) => v.get(key).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let patch_ids: Vec<Value> = patch_order.iter().map(identity).collect();
    let server_ids: Vec<Value> = server_order.iter().map(identity).collect();
    let position = |ids: &[Value], id: &Value| ids.iter().position(|v| json_eq(v, id));

    let (mut from_patch, mut server_only): (Vec<Ranked>, Vec<Ranked>) = merged
        .into_iter()
        .map(|value| {
            let id = identity(&value);
            Ranked { in_patch: position(&patch_ids, &id), in_server: position(&server_ids, &id), value }
        })
        .partition(|r| r.in_patch.is_some());
    from_patch.sort_by_key(|r| r.in_patch);
    server_only.sort_by_key(|r| r.in_server.unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut patch_items = from_patch.into_iter().peekable();
    let mut server_items = server_only.into_iter().peekable();
    loop {
        let take_server = match (server_items.peek(), patch_items.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            // A server-only element goes first only if the server had it before the next patch element;
            // a patch element the server never had goes first.
            (Some(server), Some(patch)) => matches!((server.in_server, patch.in_server), (Some(s), Some(p)) if s < p),
        };
        let next = if take_server { server_items.next() } else { patch_items.next() };
        out.extend(next.map(|r| r.value));
    }
    Ok(out)
}

/// A merged list, and for lists of objects merged by key its elements' merge keys in "natural" order: the
/// live elements left after deletions, then the appended ones.
struct Merged {
    items: Vec<Value>,
    natural: Option<Vec<Value>>,
}

/// A merged list element with its positions in the patch's and the server's order.
struct Ranked {
    in_patch: Option<usize>,
    in_server: Option<usize>,
    value: Value,
}

/// Whether two values are of the same JSON type (numbers are one type, as for Go's decoder).
fn same_kind(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// The common kind of the elements of two lists.
fn element_kind(a: &[Value], b: &[Value], field: &str) -> Result<Kind, PatchError> {
    let mut kind = None;
    for value in a.iter().chain(b) {
        let this = match value {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Object(_) => Kind::Object,
            Value::Array(_) => {
                return Err(PatchError::unprocessable(format!("{field}: lists of lists are not supported")));
            }
        };
        match kind {
            None => kind = Some(this),
            Some(k) if k != this => {
                return Err(PatchError::unprocessable(format!("{field}: list elements are not all of the same type")));
            }
            Some(_) => {}
        }
    }
    Ok(kind.unwrap_or(Kind::Null))
}

#[cfg(test)]
mod tests;
