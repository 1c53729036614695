//! IngressClass (ingressclasses.networking.k8s.io/v1): strategy and discovery entry.
//!
//! `spec.controller` is a required, immutable domain-prefixed path (`example.com/ingress`);
//! parameter references default to the `Cluster` scope.

use serde_json::{Value, json};

use super::apps_util as util;
use super::ingresses::validate_typed_reference;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, name_cell};
use crate::validation::{self, ErrorKind, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "networking.k8s.io",
    version: "v1",
    kind: "IngressClass",
    plural: "ingressclasses",
    singular: "ingressclass",
    short_names: &[],
    categories: &[],
    namespaced: false,
    subresources: &[],
    storage: "ingressclasses",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new("Controller", "string", "Controller that is responsible for handling this class"),
    Column::new("Parameters", "string", "A reference to a resource with additional parameters"),
    AGE_COLUMN,
];

const MAX_CONTROLLER_LEN: usize = 250;

impl super::Strategy for Strategy {
    fn default(&self, obj: &mut Value) {
        if let Some(params) = obj.pointer_mut("/spec/parameters").filter(|p| p.is_object()) {
            util::default_field(params, "scope", json!("Cluster"));
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let controller = util::str_or_empty(obj, "/spec/controller");
        if controller.len() > MAX_CONTROLLER_LEN {
            errs.push(
                ErrorKind::TooLong,
                "spec.controller",
                None,
                format!("may not be more than {MAX_CONTROLLER_LEN} bytes"),
            );
        }
        validate_domain_prefixed_path(controller, "spec.controller", errs);
        if let Some(params) = obj.pointer("/spec/parameters").filter(|p| !p.is_null()) {
            validate_parameters(params, errs);
        }
        if let Some(old) = old {
            errs.immutable("spec.controller", obj.pointer("/spec/controller"), old.pointer("/spec/controller"));
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let parameters = match obj.pointer("/spec/parameters").filter(|p| p.is_object()) {
            None => "<none>".to_string(),
            Some(p) => {
                let kind = p.get("kind").and_then(Value::as_str).unwrap_or("");
                let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                match p.get("apiGroup").and_then(Value::as_str) {
                    Some(group) => format!("{kind}.{group}/{name}"),
                    None => format!("{kind}/{name}"),
                }
            }
        };
        vec![name_cell(obj), json!(util::str_or_empty(obj, "/spec/controller")), json!(parameters), age_cell(obj, now)]
    }
}

/// `IsDomainPrefixedPath`: `<DNS subdomain>/<HTTP path characters>`.
fn validate_domain_prefixed_path(value: &str, field: &str, errs: &mut FieldErrors) {
    if value.is_empty() {
        errs.required(field, "");
        return;
    }
    let Some((host, path)) = value.split_once('/').filter(|(h, p)| !h.is_empty() && !p.is_empty()) else {
        errs.invalid(field, json!(value), "must be a domain-prefixed path (such as \"acme.io/foo\")");
        return;
    };
    for msg in validation::dns1123_subdomain(host) {
        errs.invalid(field, json!(host), msg);
    }
    let path_ok = path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:".contains(&b));
    if !path_ok {
        errs.invalid(
            field,
            json!(path),
            "Invalid path (regex used for validation is '[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')",
        );
    }
}

fn validate_parameters(params: &Value, errs: &mut FieldErrors) {
    let path = "spec.parameters";
    validate_typed_reference(params, path, errs);
    let Some(scope) = params.get("scope").and_then(Value::as_str) else {
        errs.required(format!("{path}.scope"), "");
        return;
    };
    let namespace = params.get("namespace").filter(|n| !n.is_null());
    match scope {
        "Namespace" => match namespace {
            None => errs.required(format!("{path}.namespace"), "`parameters.scope` is set to 'Namespace'"),
            Some(ns) => {
                let ns_str = ns.as_str().unwrap_or("");
                for msg in validation::dns1123_label(ns_str) {
                    errs.invalid(format!("{path}.namespace"), ns.clone(), msg);
                }
            }
        },
        "Cluster" => {
            if namespace.is_some() {
                errs.forbidden(format!("{path}.namespace"), "`parameters.scope` is set to 'Cluster'");
            }
        }
        other => errs.not_supported(format!("{path}.scope"), json!(other), &["Cluster", "Namespace"]),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn class() -> Value {
        json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}})
    }

    fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_scope_and_prints_parameters() {
        let mut c = class();
        Strategy.default(&mut c);
        assert_eq!(c["spec"]["parameters"]["scope"], json!("Cluster"));
        assert_eq!(errors(&c, None), Vec::<String>::new());
        let cells = Strategy.cells(&c, Timestamp::now());
        assert_eq!(
            cells[1..3],
            [json!("k8s.io/ingress-nginx"), json!("IngressParameters.k8s.example.com/external-lb")]
        );
    }

    #[test]
    fn controller_rules() {
        let mut c = class();
        Strategy.default(&mut c);
        c["spec"]["controller"] = json!("nginx");
        assert_eq!(
            errors(&c, None),
            ["spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")"]
        );
        let old = {
            let mut o = class();
            Strategy.default(&mut o);
            o
        };
        c["spec"]["controller"] = json!("example.com/other");
        assert_eq!(
            errors(&c, Some(&old)),
            ["spec.controller: Invalid value: \"example.com/other\": field is immutable"]
        );
        c["spec"]["parameters"]["scope"] = json!("Namespace");
        assert!(errors(&c, None).contains(
            &"spec.parameters.namespace: Required value: `parameters.scope` is set to 'Namespace'".to_string()
        ));
    }
}
