//! Schema definitions: generated from k8s-openapi, completed with list kinds, group-version-kind
//! extensions and patch metadata, then rendered for Swagger 2.0 or OpenAPI 3.0.
//!
//! The catalog is built in Swagger 2.0 form (`$ref: #/definitions/…`, descriptions beside `$ref`);
//! [`to_v3`] rewrites a definition for OpenAPI 3.0.

use std::collections::{BTreeMap, BTreeSet};

use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::kinds::{self, KindType};
use crate::protobuf::schema as proto;
use crate::registry::Resource;

pub(super) const REF_V2: &str = "#/definitions/";
pub(super) const REF_V3: &str = "#/components/schemas/";

pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(super) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(super) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// The subresources whose bodies are kinds of their own, and those kinds.
const SUBRESOURCE_KINDS: &[(&str, (&str, &str, &str))] = &[
    ("scale", ("autoscaling", "v1", "Scale")),
    ("eviction", ("policy", "v1", "Eviction")),
    ("binding", ("", "v1", "Binding")),
];

/// Every definition the served resources need, keyed by definition name, in Swagger 2.0 form.
pub(super) type Catalog = BTreeMap<String, Value>;

/// The kind type of a served resource, when the table has it.
pub(super) fn kind_of(resource: &Resource) -> Option<&'static KindType> {
    kinds::find(resource.group, resource.version, resource.kind)
}

/// The kind type of a subresource body (`scale` → autoscaling/v1 Scale).
pub(super) fn subresource_kind(subresource: &str) -> Option<&'static KindType> {
    SUBRESOURCE_KINDS
        .iter()
        .find(|(name, _)| *name == subresource)
        .and_then(|(_, (group, version, kind))| kinds::find(group, version, kind))
}

/// Definition name of a kind's list: `io.k8s.api.core.v1.PodList`.
pub(super) fn list_name(kind: &KindType) -> Option<String> {
    let list_kind = kind.list_kind?;
    let name = (kind.name)();
    let prefix = name.strip_suffix(kind.kind)?;
    Some(format!("{prefix}{list_kind}"))
}

/// Builds the catalog for `resources`.
pub(super) fn catalog(resources: &[&Resource]) -> Catalog {
    let settings = SchemaSettings::draft07().with(|s| {
        s.definitions_path = "/definitions".into();
        s.meta_schema = None;
        s.transforms.clear();
    });
    let mut generator = SchemaGenerator::new(settings);

    // Kinds that carry a group-version-kind: (definition name, gvk).
    let mut gvks: Vec<(String, Value)> = Vec::new();
    let mut lists: Vec<(&KindType, String)> = Vec::new();
    let mut add_kind = |generator: &mut SchemaGenerator, kind: &'static KindType, with_list: bool| {
        (kind.generate)(generator);
        let name = (kind.name)().into_owned();
        gvks.push((name, gvk(kind.group, kind.version, kind.kind)));
        if with_list && let (Some(list), Some(list_kind)) = (list_name(kind), kind.list_kind) {
            gvks.push((list.clone(), gvk(kind.group, kind.version, list_kind)));
            lists.push((kind, list));
        }
    };
    for resource in resources {
        let Some(kind) = kind_of(resource) else { continue };
        add_kind(&mut generator, kind, true);
        for subresource in resource.subresources {
            if let Some(kind) = subresource_kind(subresource) {
                add_kind(&mut generator, kind, false);
            }
        }
    }
    if let Some(status) = kinds::find("", "v1", "Status") {
        add_kind(&mut generator, status, false);
    }
    kinds::generate_meta(&mut generator);

    let mut catalog: Catalog = generator.take_definitions(false).into_iter().collect();
    for (kind, list) in lists {
        let item = (kind.name)().into_owned();
        let definition = list_definition(&catalog, kind, &item);
        catalog.insert(list, definition);
    }
    catalog.insert(
        PATCH.to_string(),
        json!({
            "description": "The body of a PATCH request. Its shape depends on the patch type named by the Content-Type header.",
            "type": "object",
        }),
    );

    for (name, gvk) in gvks {
        if let Some(Value::Object(definition)) = catalog.get_mut(&name) {
            set_gvks(definition, vec![gvk]);
            optional_metadata(definition);
        }
    }
    // DeleteOptions and WatchEvent are registered in every group-version.
    let mut group_versions: BTreeSet<(&str, &str)> = resources.iter().map(|r| (r.group, r.version)).collect();
    group_versions.insert(("", "v1"));
    for (name, kind) in [(DELETE_OPTIONS, "DeleteOptions"), (WATCH_EVENT, "WatchEvent")] {
        if let Some(Value::Object(definition)) = catalog.get_mut(name) {
            set_gvks(definition, group_versions.iter().map(|(g, v)| gvk(g, v, kind)).collect());
        }
    }

    for (name, definition) in &mut catalog {
        add_patch_metadata(name, definition);
    }
    catalog
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

fn set_gvks(definition: &mut Map<String, Value>, gvks: Vec<Value>) {
    definition.insert("x-kubernetes-group-version-kind".to_string(), Value::Array(gvks));
}

/// k8s-openapi requires `metadata` on kinds (its Rust field is not optional); the API does not,
/// and `kubectl explain` would print it as required.
fn optional_metadata(definition: &mut Map<String, Value>) {
    let Some(Value::Array(required)) = definition.get_mut("required") else { return };
    required.retain(|field| field != "metadata");
    if required.is_empty() {
        definition.remove("required");
    }
}

/// A `<Kind>List` definition (k8s-openapi has a generic `List<T>` without a schema).
fn list_definition(catalog: &Catalog, kind: &KindType, item: &str) -> Value {
    // apiVersion and kind read as in the item's own definition.
    let property = |field: &str| {
        catalog
            .get(item)
            .and_then(|d| d.pointer(&format!("/properties/{field}")))
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}))
    };
    let list_kind = kind.list_kind.unwrap_or_default();
    json!({
        "description": format!("{list_kind} is a list of {} objects.", kind.kind),
        "type": "object",
        "properties": {
            "apiVersion": property("apiVersion"),
            "items": {
                "description": format!("The {} objects in the list.", kind.kind),
                "type": "array",
                "items": {"$ref": format!("{REF_V2}{item}")},
            },
            "kind": property("kind"),
            "metadata": {
                "$ref": format!("{REF_V2}{LIST_META}"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            },
        },
        "required": ["items"],
    })
}

/// Protobuf message name of a definition: `io.k8s.api.core.v1.PodSpec` → `k8s.io.api.core.v1.PodSpec`.
fn proto_name(definition: &str) -> Option<String> {
    definition.strip_prefix("io.k8s.").map(|rest| format!("k8s.io.{rest}"))
}

/// Adds `x-kubernetes-patch-*` and `x-kubernetes-list-*` to the properties that have them.
fn add_patch_metadata(name: &str, definition: &mut Value) {
    let Some(message) = proto_name(name).and_then(|p| proto::message(&p)) else { return };
    let Some(Value::Object(properties)) = definition.get_mut("properties") else { return };
    add_field_metadata(message, properties);
}

fn add_field_metadata(message: &proto::Message, properties: &mut Map<String, Value>) {
    for field in message.fields {
        if field.inline {
            // An embedded Go struct: its fields are properties of this object.
            if let proto::Kind::Msg(index) = field.kind {
                add_field_metadata(proto::message_by_index(index), properties);
            }
            continue;
        }
        let Some(Value::Object(property)) = properties.get_mut(field.json) else { continue };
        if !field.list_map_keys.is_empty() {
            let keys = field.list_map_keys.iter().map(|k| Value::from(*k)).collect();
            property.insert("x-kubernetes-list-map-keys".to_string(), Value::Array(keys));
        }
        let extensions = [
            ("x-kubernetes-list-type", field.list_type),
            ("x-kubernetes-patch-merge-key", field.patch_merge_key),
            ("x-kubernetes-patch-strategy", field.patch_strategy),
        ];
        for (extension, value) in extensions {
            if !value.is_empty() {
                property.insert(extension.to_string(), value.into());
            }
        }
    }
}

/// Names of every definition `roots` reference, directly or not, `roots` included.
pub(super) fn closure<'a>(catalog: &'a Catalog, roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = roots.into_iter().collect();
    while let Some(name) = stack.pop() {
        let Some((name, definition)) = catalog.get_key_value(name) else { continue };
        if seen.insert(name.as_str()) {
            refs(definition, &mut |target| stack.push(target));
        }
    }
    seen
}

/// Calls `found` with the definition name of every `$ref` inside `value`.
fn refs<'a>(value: &'a Value, found: &mut impl FnMut(&'a str)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(target)) => {
                        if let Some(name) = target.strip_prefix(REF_V2) {
                            found(name);
                        }
                    }
                    _ => refs(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

/// A definition in Swagger 2.0 form.
pub(super) fn to_v2(name: &str, definition: &Value) -> Value {
    let description = definition.get("description").cloned().unwrap_or_default();
    match name {
        INT_OR_STRING => json!({"description": description, "type": "string", "format": "int-or-string"}),
        QUANTITY => json!({"description": description, "type": "string"}),
        _ => definition.clone(),
    }
}

/// A definition in OpenAPI 3.0 form: `$ref`s point into `components/schemas`, and a `$ref` with
/// siblings (a description) becomes `allOf: [{$ref}]` beside them, since 3.0 ignores `$ref` siblings.
pub(super) fn to_v3(name: &str, definition: &Value) -> Value {
    let description = definition.get("description").cloned().unwrap_or_default();
    match name {
        INT_OR_STRING => json!({
            "description": description,
            "format": "int-or-string",
            "oneOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": true,
        }),
        QUANTITY => json!({"description": description, "oneOf": [{"type": "string"}, {"type": "number"}]}),
        _ => v3_refs(definition),
    }
}

fn v3_refs(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            let mut reference = None;
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(target)) => {
                        let name = target.strip_prefix(REF_V2).unwrap_or(target);
                        reference = Some(json!({"$ref": format!("{REF_V3}{name}")}));
                    }
                    _ => {
                        out.insert(key.clone(), v3_refs(child));
                    }
                }
            }
            match reference {
                Some(Value::Object(only)) if out.is_empty() => Value::Object(only),
                Some(reference) => {
                    let mut wrapped = Map::with_capacity(out.len() + 1);
                    wrapped.insert("allOf".to_string(), Value::Array(vec![reference]));
                    wrapped.extend(out);
                    Value::Object(wrapped)
                }
                None => Value::Object(out),
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(v3_refs).collect()),
        other => other.clone(),
    }
}
