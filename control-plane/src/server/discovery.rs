//! Discovery: `/api`, `/apis`, group and resource lists, in the legacy form and as aggregated
//! discovery v2, and `/version`.

use http::Response;
use serde_json::{Value, json};

use super::errors::{ApiError, ApiResult};
use super::{Api, Body, KUBE_VERSION, json_response, respond};
use crate::registry::{RESOURCES, Resource};

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "35",
        "emulationMajor": "1",
        "emulationMinor": "35",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "34",
        "gitVersion": KUBE_VERSION,
        "gitCommit": "keelson",
        "gitTreeState": "clean",
        "buildDate": "2026-11-26T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": "linux/amd64"
    })
}

pub fn root_paths() -> Value {
    let mut paths = vec!["/api".to_string(), "/api/v1".to_string(), "/apis".to_string()];
    for (g, vs) in groups() {
        paths.push(format!("/apis/{g}"));
        for v in vs {
            paths.push(format!("/apis/{g}/{v}"));
        }
    }
    paths.extend(
        ["/healthz", "/livez", "/metrics", "/openapi/v2", "/openapi/v3", "/readyz", "/version"].map(String::from),
    );
    json!({"paths": paths})
}

/// Named groups in discovery order, each with its versions.
fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) if !vs.contains(&r.version) => vs.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

fn wants_aggregated(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').next().is_some_and(|first| {
            first.contains("g=apidiscovery.k8s.io")
                && first.contains("v=v2")
                && first.contains("as=APIGroupDiscoveryList")
        })
    })
}

fn verbs(r: &Resource) -> Vec<&'static str> {
    vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        .into_iter()
        .filter(|v| !(r.kind == "Namespace" && *v == "deletecollection"))
        .collect()
}

/// Verbs and response kind of a subresource.
fn subresource_info(r: &Resource, sub: &str) -> (Vec<&'static str>, (&'static str, &'static str, &'static str)) {
    match sub {
        "scale" => (vec!["get", "patch", "update"], ("autoscaling", "v1", "Scale")),
        "binding" => (vec!["create"], ("", "v1", "Binding")),
        "eviction" => (vec!["create"], ("policy", "v1", "Eviction")),
        "finalize" => (vec!["update"], (r.group, r.version, r.kind)),
        _ => (vec!["get", "patch", "update"], (r.group, r.version, r.kind)),
    }
}

fn storage_version_hash(r: &Resource) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{}/{}/{}", r.group, r.version, r.kind));
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

/// Legacy `APIResourceList` for one group-version.
pub fn resource_list(group: &str, version: &str) -> ApiResult<Response<Body>> {
    let rs: Vec<&Resource> = RESOURCES.iter().copied().filter(|r| r.group == group && r.version == version).collect();
    if rs.is_empty() {
        return Err(ApiError::not_found_path());
    }
    let mut resources = Vec::new();
    for r in &rs {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs(r),
            "storageVersionHash": storage_version_hash(r),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        resources.push(e);
        for sub in r.subresources {
            let (verbs, (g, v, k)) = subresource_info(r, sub);
            let mut s = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": k, "verbs": verbs});
            if g != group || v != version {
                s["group"] = json!(g);
                s["version"] = json!(v);
            }
            resources.push(s);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Ok(json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    ))
}

fn group_json(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs[0]})
}

pub fn group(group: &str) -> ApiResult<Response<Body>> {
    let (_, versions) = groups().into_iter().find(|(g, _)| *g == group).ok_or_else(ApiError::not_found_path)?;
    let mut g = group_json(group, &versions);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Ok(json_response(200, &g))
}

fn aggregated_group(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|version| {
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == *version)
                .map(|r| {
                    let mut e = json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular,
                        "verbs": verbs(r),
                    });
                    if !r.short_names.is_empty() {
                        e["shortNames"] = json!(r.short_names);
                    }
                    if !r.categories.is_empty() {
                        e["categories"] = json!(r.categories);
                    }
                    let subs: Vec<Value> = r
                        .subresources
                        .iter()
                        .map(|sub| {
                            let (verbs, (g, v, k)) = subresource_info(r, sub);
                            json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": verbs})
                        })
                        .collect();
                    if !subs.is_empty() {
                        e["subresources"] = json!(subs);
                    }
                    e
                })
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": vs})
}

fn aggregated(items: Vec<Value>) -> Response<Body> {
    let list = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
    let mut resp = respond(200, AGGREGATED_V2, serde_json::to_vec(&list).expect("json"));
    resp.headers_mut().insert("Vary", http::HeaderValue::from_static("Accept"));
    resp
}

pub fn api(api: &Api, accept: Option<&str>) -> ApiResult<Response<Body>> {
    if wants_aggregated(accept) {
        return Ok(aggregated(vec![aggregated_group("", &["v1"])]));
    }
    Ok(json_response(
        200,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": api.advertise.to_string()}]
        }),
    ))
}

pub fn apis(accept: Option<&str>) -> ApiResult<Response<Body>> {
    let gs = groups();
    if wants_aggregated(accept) {
        return Ok(aggregated(gs.iter().map(|(g, vs)| aggregated_group(g, vs)).collect()));
    }
    let list: Vec<Value> = gs.iter().map(|(g, vs)| group_json(g, vs)).collect();
    Ok(json_response(200, &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})))
}
