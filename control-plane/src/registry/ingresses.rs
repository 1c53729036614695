//! Ingress (ingresses.networking.k8s.io/v1): strategy and discovery entry.
//!
//! networking/v1 has no Ingress defaults: every path needs a `pathType` (`Exact`, `Prefix` or
//! `ImplementationSpecific`) and a backend that names either a service and a port (by name or
//! number) or a resource.

use serde_json::{Value, json};

use super::apps_util as util;
use super::podspec::checks::{parse_ip, port_name, port_num};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, name_cell};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "networking.k8s.io",
    version: "v1",
    kind: "Ingress",
    plural: "ingresses",
    singular: "ingress",
    short_names: &["ing"],
    categories: &[],
    namespaced: true,
    subresources: &["status"],
    storage: "ingress",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    Column::new("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
    Column::new("Address", "string", "Address is a list containing ingress points for the load-balancer"),
    Column::new("Ports", "string", "Ports of TLS configurations that open"),
    AGE_COLUMN,
];

const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const INVALID_PATH_SEQUENCES: &[&str] = &["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: &[&str] = &["/..", "/."];
const WILDCARD_MSG: &str = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

impl super::Strategy for Strategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({"loadBalancer": {}});
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let rules = util::array_at(spec, "/rules");
        let default_backend = spec.get("defaultBackend").filter(|b| !b.is_null());
        if rules.is_empty() && default_backend.is_none() {
            errs.invalid("spec", json!(rules), "either `defaultBackend` or `rules` must be specified");
        }
        if let Some(backend) = default_backend {
            validate_backend(backend, "spec.defaultBackend", errs);
        }
        for (i, rule) in rules.iter().enumerate() {
            validate_rule(rule, &format!("spec.rules[{i}]"), errs);
        }
        for (i, tls) in util::array_at(spec, "/tls").iter().enumerate() {
            for (j, host) in util::array_at(tls, "/hosts").iter().enumerate() {
                let host = host.as_str().unwrap_or("");
                for msg in host_errors(host) {
                    errs.invalid(format!("spec.tls[{i}].hosts[{j}]"), json!(host), msg);
                }
            }
            let secret = tls.get("secretName").and_then(Value::as_str).unwrap_or("");
            if !secret.is_empty() {
                for msg in validation::dns1123_subdomain(secret) {
                    errs.invalid(format!("spec.tls[{i}].secretName"), json!(secret), msg);
                }
            }
        }
        let class = spec.get("ingressClassName").and_then(Value::as_str).unwrap_or("");
        if !class.is_empty() {
            for msg in validation::dns1123_subdomain(class) {
                errs.invalid("spec.ingressClassName", json!(class), msg);
            }
        }
        let annotation = obj.pointer("/metadata/annotations").and_then(|a| a.get(CLASS_ANNOTATION));
        if old.is_none()
            && spec.get("ingressClassName").is_some_and(|c| !c.is_null())
            && let Some(a) = annotation
        {
            errs.invalid(
                format!("annotations.{CLASS_ANNOTATION}"),
                a.clone(),
                "can not be set when the class field is also set",
            );
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let class = obj.pointer("/spec/ingressClassName").and_then(Value::as_str).unwrap_or("<none>");
        let ports = if util::array_at(obj, "/spec/tls").is_empty() { "80" } else { "80, 443" };
        vec![
            name_cell(obj),
            json!(class),
            json!(format_hosts(util::array_at(obj, "/spec/rules"))),
            json!(load_balancer_addresses(obj.pointer("/status/loadBalancer"))),
            json!(ports),
            age_cell(obj, now),
        ]
    }
}

/// Errors of a rule or TLS host: a wildcard or plain DNS subdomain.
fn host_errors(host: &str) -> Vec<String> {
    if !host.contains('*') {
        return validation::dns1123_subdomain(host);
    }
    let mut errs = Vec::new();
    if host.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let ok = host.strip_prefix("*.").is_some_and(|rest| validation::dns1123_subdomain(rest).is_empty());
    if !ok {
        errs.push(WILDCARD_MSG.to_string());
    }
    errs
}

fn validate_rule(rule: &Value, path: &str, errs: &mut FieldErrors) {
    let host = rule.get("host").and_then(Value::as_str).unwrap_or("");
    if !host.is_empty() {
        if parse_ip(host).is_some() {
            errs.invalid(format!("{path}.host"), json!(host), "must be a DNS name, not an IP address");
        }
        for msg in host_errors(host) {
            errs.invalid(format!("{path}.host"), json!(host), msg);
        }
    }
    let Some(http) = rule.get("http").filter(|h| !h.is_null()) else { return };
    let paths = util::array_at(http, "/paths");
    if paths.is_empty() {
        errs.required(format!("{path}.http.paths"), "");
    }
    for (i, p) in paths.iter().enumerate() {
        validate_path(p, &format!("{path}.http.paths[{i}]"), errs);
    }
}

fn validate_path(p: &Value, path: &str, errs: &mut FieldErrors) {
    let Some(path_type) = p.get("pathType").filter(|t| !t.is_null()) else {
        errs.required(format!("{path}.pathType"), "pathType must be specified");
        return;
    };
    let value = p.get("path").and_then(Value::as_str).unwrap_or("");
    let field = format!("{path}.path");
    match path_type.as_str().unwrap_or("") {
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                errs.invalid(&field, json!(value), "must be an absolute path");
            }
            if !value.is_empty() {
                for seq in INVALID_PATH_SEQUENCES.iter().filter(|s| value.contains(*s)) {
                    errs.invalid(&field, json!(value), format!("must not contain '{seq}'"));
                }
                for suffix in INVALID_PATH_SUFFIXES.iter().filter(|s| value.ends_with(*s)) {
                    errs.invalid(&field, json!(value), format!("cannot end with '{suffix}'"));
                }
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                errs.invalid(&field, json!(value), "must be an absolute path");
            }
        }
        _ => errs.not_supported(
            format!("{path}.pathType"),
            path_type.clone(),
            &["Exact", "ImplementationSpecific", "Prefix"],
        ),
    }
    validate_backend(p.get("backend").unwrap_or(&Value::Null), &format!("{path}.backend"), errs);
}

fn validate_backend(backend: &Value, path: &str, errs: &mut FieldErrors) {
    let resource = backend.get("resource").filter(|r| !r.is_null());
    let service = backend.get("service").filter(|s| !s.is_null());
    match (resource, service) {
        (Some(_), Some(_)) => errs.invalid(path, json!(""), "cannot set both resource and service backends"),
        (Some(r), None) => validate_typed_reference(r, &format!("{path}.resource"), errs),
        (None, Some(s)) => {
            let name = s.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                errs.required(format!("{path}.service.name"), "");
            } else {
                for msg in validation::dns1035_label(name) {
                    errs.invalid(format!("{path}.service.name"), json!(name), msg);
                }
            }
            let port_name_value = s.pointer("/port/name").and_then(Value::as_str).unwrap_or("");
            let number = s.pointer("/port/number").and_then(Value::as_i64).unwrap_or(0);
            match (port_name_value.is_empty(), number == 0) {
                (false, false) => errs.invalid(path, json!(""), "cannot set both port name & port number"),
                (false, true) => {
                    for msg in port_name(port_name_value) {
                        errs.invalid(format!("{path}.service.port.name"), json!(port_name_value), msg);
                    }
                }
                (true, false) => {
                    for msg in port_num(number) {
                        errs.invalid(format!("{path}.service.port.number"), json!(number), msg);
                    }
                }
                (true, true) => errs.required(path, "port name or number is required"),
            }
        }
        (None, None) => errs.invalid(path, json!(""), "resource or service backend is required"),
    }
}

/// A `TypedLocalObjectReference` (resource backends, IngressClass parameters).
pub(super) fn validate_typed_reference(r: &Value, path: &str, errs: &mut FieldErrors) {
    if let Some(group) = r.get("apiGroup").and_then(Value::as_str) {
        for msg in validation::dns1123_subdomain(group) {
            errs.invalid(format!("{path}.apiGroup"), json!(group), msg);
        }
    }
    for key in ["kind", "name"] {
        let v = r.get(key).and_then(Value::as_str).unwrap_or("");
        if v.is_empty() {
            errs.required(format!("{path}.{key}"), format!("{key} is required"));
        }
        for msg in validation::path_segment_name(v) {
            errs.invalid(format!("{path}.{key}"), json!(v), msg);
        }
    }
}

/// The `Hosts` cell: up to three hosts, `*` when no rule has one.
fn format_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        // Like Kubernetes, "more" means any rule (with a host or not) after the third host.
        if hosts.len() == MAX {
            more = true;
            break;
        }
        match rule.get("host").and_then(Value::as_str) {
            Some(h) if !h.is_empty() => hosts.push(h),
            _ => {}
        }
    }
    match (hosts.is_empty(), more) {
        (true, _) => "*".to_string(),
        (false, true) => format!("{} + {} more...", hosts.join(","), rules.len() - MAX),
        (false, false) => hosts.join(","),
    }
}

/// IPs or hostnames of a load balancer status, sorted and de-duplicated, joined by `,`.
pub(super) fn load_balancer_addresses(lb: Option<&Value>) -> String {
    let mut addrs: Vec<&str> = lb
        .map(|l| util::array_at(l, "/ingress"))
        .unwrap_or(&[])
        .iter()
        .filter_map(|i| {
            let ip = i.get("ip").and_then(Value::as_str).unwrap_or("");
            let host = i.get("hostname").and_then(Value::as_str).unwrap_or("");
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs.join(",")
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    /// What `kubectl create ingress web --rule="example.com/=web:80"` sends.
    fn ingress() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"rules": [{"host": "example.com", "http": {"paths": [
                {"path": "/", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
        })
    }

    fn errors(obj: &Value) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, None, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn valid_ingress_and_status() {
        let mut i = ingress();
        Strategy.prepare_create(&mut i);
        assert_eq!(i["status"], json!({"loadBalancer": {}}));
        assert_eq!(errors(&i), Vec::<String>::new());
    }

    #[test]
    fn path_type_is_required_and_checked() {
        let mut i = ingress();
        i["spec"]["rules"][0]["http"]["paths"][0].as_object_mut().expect("path").remove("pathType");
        assert_eq!(errors(&i), ["spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"]);
        i["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = json!("Regex");
        assert_eq!(
            errors(&i),
            [
                "spec.rules[0].http.paths[0].pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\""
            ]
        );
        i["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = json!("Prefix");
        i["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("/a/../b");
        assert_eq!(
            errors(&i),
            ["spec.rules[0].http.paths[0].path: Invalid value: \"/a/../b\": must not contain '/../'"]
        );
    }

    #[test]
    fn backends_and_hosts() {
        let mut i = ingress();
        i["spec"]["rules"][0]["host"] = json!("*.example.com");
        i["spec"]["rules"][0]["http"]["paths"][0]["backend"] = json!({"service": {"name": "web", "port": {}}});
        assert_eq!(
            errors(&i),
            ["spec.rules[0].http.paths[0].backend: Required value: port name or number is required"]
        );
        i["spec"]["rules"][0]["host"] = json!("10.0.0.1");
        i["spec"]["rules"][0]["http"]["paths"][0]["backend"] = json!({});
        let errs = errors(&i);
        assert_eq!(errs[0], "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address");
        assert_eq!(
            errs[1],
            "spec.rules[0].http.paths[0].backend: Invalid value: \"\": resource or service backend is required"
        );
        assert_eq!(
            errors(&json!({"spec": {}})),
            ["spec: Invalid value: []: either `defaultBackend` or `rules` must be specified"]
        );
    }

    #[test]
    fn class_annotation_conflicts_with_class_name() {
        let mut i = ingress();
        i["spec"]["ingressClassName"] = json!("nginx");
        i["metadata"]["annotations"] = json!({"kubernetes.io/ingress.class": "nginx"});
        assert_eq!(
            errors(&i),
            [
                "annotations.kubernetes.io/ingress.class: Invalid value: \"nginx\": can not be set when the class field is also set"
            ]
        );
    }

    #[test]
    fn cells() {
        let mut i = ingress();
        i["spec"]["tls"] = json!([{"hosts": ["example.com"]}]);
        i["status"] = json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.9"}, {"hostname": "lb.example.com"}, {"ip": "10.0.0.9"}]}});
        let cells = Strategy.cells(&i, Timestamp::now());
        assert_eq!(
            cells[1..5],
            [json!("<none>"), json!("example.com"), json!("10.0.0.9,lb.example.com"), json!("80, 443")]
        );
        let rules: Vec<Value> = (0..5).map(|n| json!({"host": format!("h{n}.io")})).collect();
        assert_eq!(format_hosts(&rules), "h0.io,h1.io,h2.io + 2 more...");
        assert_eq!(format_hosts(&[json!({})]), "*");
    }
}
