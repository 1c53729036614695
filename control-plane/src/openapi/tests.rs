use std::time::Instant;

use serde_json::Value;

use super::*;

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("documents are JSON")
}

fn v3(path: &str) -> Value {
    parse(v3_group_version(path).expect("group-version document exists"))
}

fn gv_path(resource: &Resource) -> String {
    group_version_path(resource.group, resource.version)
}

fn has_gvk(definition: &Value, group: &str, version: &str, kind: &str) -> bool {
    definition["x-kubernetes-group-version-kind"]
        .as_array()
        .is_some_and(|gvks| gvks.iter().any(|g| g["group"] == group && g["version"] == version && g["kind"] == kind))
}

/// Every `$ref` in `value`, in document order.
fn all_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(target)) => out.push(target),
                    _ => all_refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| all_refs(item, out)),
        _ => {}
    }
}

/// Resolves a schema to the definition it names, through `$ref` or a single-element `allOf`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let target = schema["$ref"].as_str().or_else(|| schema["allOf"][0]["$ref"].as_str());
    match target {
        Some(target) => doc.pointer(target.trim_start_matches('#')).expect("reference resolves"),
        None => schema,
    }
}

/// Walks a field path the way `kubectl explain` does: properties, through refs, arrays and maps.
fn explain<'a>(doc: &'a Value, group: &str, version: &str, kind: &str, fields: &[&str]) -> &'a Value {
    let schemas = doc["components"]["schemas"].as_object().expect("components.schemas");
    let mut schema =
        schemas.values().find(|s| has_gvk(s, group, version, kind)).unwrap_or_else(|| panic!("{kind} not found"));
    for field in fields {
        let mut resolved = resolve(doc, schema);
        if let Some(items) = resolved.get("items") {
            resolved = resolve(doc, items);
        }
        schema = resolved["properties"].get(*field).unwrap_or_else(|| panic!("{kind}: no field {field}"));
    }
    schema
}

#[test]
fn every_resource_has_a_kind_type_named_as_the_registry_names_it() {
    for resource in RESOURCES {
        let kind =
            definitions::kind_of(resource).unwrap_or_else(|| panic!("no k8s-openapi type for {}", resource.kind));
        assert_eq!((kind.name)(), resource.openapi_name(), "{}", resource.plural);
        assert!(kind.list_kind.is_some(), "{} is not listable", resource.kind);
    }
}

#[test]
fn every_kind_and_list_has_a_definition_with_its_gvk() {
    let v2 = parse(v2());
    assert_eq!(v2["swagger"], "2.0");
    assert_eq!(v2["info"]["title"], "Kubernetes");
    for resource in RESOURCES {
        let name = resource.openapi_name();
        let list = format!("{name}List");
        let list_kind = format!("{}List", resource.kind);
        let (group, version, kind) = (resource.group, resource.version, resource.kind);
        assert!(has_gvk(&v2["definitions"][&name], group, version, kind), "v2 {name}");
        assert!(has_gvk(&v2["definitions"][&list], group, version, &list_kind), "v2 {list}");
        let doc = v3(&gv_path(resource));
        let schemas = &doc["components"]["schemas"];
        assert!(has_gvk(&schemas[&name], group, version, kind), "v3 {name}");
        assert!(has_gvk(&schemas[&list], group, version, &list_kind), "v3 {list}");
        assert!(has_gvk(&schemas[DELETE_OPTIONS], group, version, "DeleteOptions"), "v3 DeleteOptions in {name}");
        assert!(has_gvk(&schemas[STATUS], "", "v1", "Status"));
        assert_eq!(schemas[&list]["properties"]["items"]["items"]["$ref"], format!("#/components/schemas/{name}"));
    }
}

#[test]
fn subresource_kinds_are_described() {
    let apps = v3("apis/apps/v1");
    let scale = &apps["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"];
    assert!(has_gvk(scale, "autoscaling", "v1", "Scale"));
    let patch = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Scale");
    let core = v3("api/v1");
    assert!(has_gvk(&core["components"]["schemas"]["io.k8s.api.policy.v1.Eviction"], "policy", "v1", "Eviction"));
    assert!(has_gvk(&core["components"]["schemas"]["io.k8s.api.core.v1.Binding"], "", "v1", "Binding"));
}

#[test]
fn pod_spec_containers_merge_by_name() {
    let v2 = parse(v2());
    let containers = &v2["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    for path in ["api/v1", "apis/apps/v1", "apis/batch/v1"] {
        let doc = v3(path);
        let containers = &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name", "{path}");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge", "{path}");
    }
}

#[test]
fn every_reference_resolves_within_its_document() {
    let check = |doc: &Value, prefix: &str, what: &str| {
        let mut refs = Vec::new();
        all_refs(doc, &mut refs);
        assert!(!refs.is_empty(), "{what} has references");
        for target in refs {
            assert!(target.starts_with(prefix), "{what}: {target} is not under {prefix}");
            assert!(doc.pointer(target.trim_start_matches('#')).is_some(), "{what}: {target} dangles");
        }
    };
    check(&parse(v2()), "#/definitions/", "v2");
    let index = parse(v3_index());
    for path in index["paths"].as_object().expect("index paths").keys() {
        check(&v3(path), "#/components/schemas/", path);
    }
}

#[test]
fn v3_references_have_no_siblings() {
    // OpenAPI 3.0 ignores the siblings of `$ref`; descriptions go beside an `allOf` instead.
    fn walk(value: &Value, path: &str) {
        match value {
            Value::Object(map) => {
                assert!(!map.contains_key("$ref") || map.len() == 1, "{path} has $ref siblings");
                map.iter().for_each(|(k, v)| walk(v, &format!("{path}/{k}")));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, path)),
            _ => {}
        }
    }
    walk(&v3("apis/apps/v1"), "");
}

#[test]
fn v3_index_hashes_match_the_documents() {
    let index = parse(v3_index());
    for path in ["api/v1", "apis/apps/v1", "apis/rbac.authorization.k8s.io/v1"] {
        let url = index["paths"][path]["serverRelativeURL"].as_str().unwrap_or_else(|| panic!("{path} listed"));
        let (location, hash) = url.split_once("?hash=").expect("url has a hash");
        assert_eq!(location, format!("/openapi/v3/{path}"));
        let bytes = v3_group_version(path).expect("document exists");
        assert_eq!(hash, hex_digest(bytes));
        assert_eq!(hash.len(), 128);
        assert_eq!(v3_group_version(url), Some(bytes), "full URL is accepted too");
    }
    assert!(v3_group_version("apis/nothing/v1").is_none());
}

#[test]
fn every_patch_operation_suits_kubectl_apply() {
    // kubectl looks for the PATCH operation of the kind, needs strategic merge patch among its body
    // types and `fieldValidation` among its query parameters, or it falls back to OpenAPI v2.
    for resource in RESOURCES {
        let doc = v3(&gv_path(resource));
        let paths = doc["paths"].as_object().expect("paths");
        let patches: Vec<&Value> = paths
            .values()
            .filter_map(|p| p.get("patch"))
            .filter(|op| {
                op["x-kubernetes-group-version-kind"]
                    == serde_json::json!({"group": resource.group, "kind": resource.kind, "version": resource.version})
            })
            .collect();
        assert!(!patches.is_empty(), "{} has a PATCH operation", resource.kind);
        for patch in patches {
            assert!(patch["requestBody"]["content"].get("application/strategic-merge-patch+json").is_some());
            let params = patch["parameters"].as_array().expect("parameters");
            assert!(params.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
            assert_eq!(patch["x-kubernetes-action"], "patch");
        }
    }
}

#[test]
fn explain_paths_resolve() {
    let apps = v3("apis/apps/v1");
    let paths = &apps["paths"];
    let list = &paths["/apis/apps/v1/namespaces/{namespace}/deployments"]["get"];
    assert_eq!(list["x-kubernetes-action"], "list");
    assert_eq!(list["x-kubernetes-group-version-kind"]["kind"], "Deployment");
    let containers = explain(&apps, "apps", "v1", "Deployment", &["spec", "template", "spec", "containers"]);
    assert_eq!(containers["type"], "array");
    let container = resolve(&apps, &containers["items"]);
    assert!(container["required"].as_array().expect("required").contains(&"name".into()));
    assert!(container["properties"]["image"]["description"].is_string());

    let core = v3("api/v1");
    let ports = explain(&core, "", "v1", "Service", &["spec", "ports"]);
    assert_eq!(ports["x-kubernetes-list-type"], "map");
    let target_port = explain(&core, "", "v1", "Service", &["spec", "ports", "targetPort"]);
    let int_or_string = resolve(&core, target_port);
    assert_eq!(int_or_string["format"], "int-or-string");
    assert!(target_port["description"].is_string());
    let pod = explain(&core, "", "v1", "Pod", &[]);
    assert!(pod["description"].is_string());
    assert!(pod.get("required").is_none(), "metadata is optional as in the API");
    assert!(core["paths"]["/api/v1/pods"]["get"].is_object());
    assert!(core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"].is_object());
}

#[test]
fn special_types_read_as_upstream() {
    let v2 = parse(v2());
    let defs = &v2["definitions"];
    assert_eq!(defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"], "int-or-string");
    assert_eq!(defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"], "string");
    assert_eq!(defs["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"], "string");
    assert_eq!(defs["io.k8s.apimachinery.pkg.apis.meta.v1.Time"]["format"], "date-time");
    let core = v3("api/v1");
    let schemas = &core["components"]["schemas"];
    let int_or_string = &schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
    assert_eq!(int_or_string["x-kubernetes-int-or-string"], true);
    assert_eq!(int_or_string["oneOf"][0]["type"], "integer");
    assert!(schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]["oneOf"].is_array());
    assert_eq!(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Time"]["type"], "string");
}

#[test]
fn build_time_and_sizes() {
    let start = Instant::now();
    let v2 = build_v2(RESOURCES).to_string();
    let v2_time = start.elapsed();
    let start = Instant::now();
    let v3 = build_v3(RESOURCES);
    let v3_time = start.elapsed();
    let total: usize = v3.documents.values().map(Vec::len).sum();
    println!("v2: {} bytes in {v2_time:?}", v2.len());
    println!("v3: {} documents, {total} bytes in {v3_time:?}, index {} bytes", v3.documents.len(), v3.index.len());
    for (path, doc) in &v3.documents {
        println!("  {path}: {} bytes", doc.len());
    }
    assert_eq!(v3.documents.len(), RESOURCES.iter().map(|r| (r.group, r.version)).collect::<BTreeSet<_>>().len());
}
