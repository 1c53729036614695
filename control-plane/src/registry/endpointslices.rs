//! EndpointSlice (endpointslices.discovery.k8s.io/v1): strategy and discovery entry.
//!
//! Ports default to TCP with an empty name. `addressType` is required and immutable; addresses
//! must be of that type and not loopback, link-local or unspecified.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::apps_util as util;
use super::podspec::checks::{duplicate, parse_ip};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, name_cell};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    short_names: &[],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "endpointslices",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name.",
    ),
    Column::new(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. When ports is empty, it indicates that there are no defined ports. When a port is defined with a nil port value, it indicates \"all ports\". Each slice may include a maximum of 100 ports.",
    ),
    Column::new(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.",
    ),
    AGE_COLUMN,
];

const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 20000;

impl super::Strategy for Strategy {
    fn default(&self, obj: &mut Value) {
        for port in obj.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
            util::default_field(port, "name", json!(""));
            util::default_field(port, "protocol", json!("TCP"));
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let address_type = obj.get("addressType").and_then(Value::as_str).unwrap_or("");
        match address_type {
            "" => errs.required("addressType", ""),
            "IPv4" | "IPv6" | "FQDN" => {}
            other => errs.not_supported("addressType", json!(other), &["FQDN", "IPv4", "IPv6"]),
        }
        validate_endpoints(util::array_at(obj, "/endpoints"), address_type, errs);
        validate_ports(util::array_at(obj, "/ports"), errs);
        if let Some(old) = old {
            errs.immutable("addressType", obj.get("addressType"), old.get("addressType"));
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let ports = util::array_at(obj, "/ports").iter().map(|p| {
            match (p.get("port").and_then(Value::as_i64), p.get("name").and_then(Value::as_str)) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".to_string(),
            }
        });
        let addresses = util::array_at(obj, "/endpoints")
            .iter()
            .flat_map(|e| util::array_at(e, "/addresses"))
            .map(|a| a.as_str().unwrap_or("").to_string());
        vec![
            name_cell(obj),
            json!(util::str_or_empty(obj, "/addressType")),
            json!(list_with_more(ports)),
            json!(list_with_more(addresses)),
            age_cell(obj, now),
        ]
    }
}

/// The first three items joined by `,` and `+ N more...`; `<unset>` for none.
fn list_with_more(items: impl Iterator<Item = String>) -> String {
    const MAX: usize = 3;
    let all: Vec<String> = items.collect();
    if all.len() > MAX {
        return format!("{} + {} more...", all[..MAX].join(","), all.len() - MAX);
    }
    if all.is_empty() { "<unset>".to_string() } else { all.join(",") }
}

fn too_many(errs: &mut FieldErrors, field: String, count: usize, max: usize) {
    errs.invalid(field, json!(count), format!("must have at most {max} items"));
}

fn validate_endpoints(endpoints: &[Value], address_type: &str, errs: &mut FieldErrors) {
    if endpoints.len() > MAX_ENDPOINTS {
        too_many(errs, "endpoints".to_string(), endpoints.len(), MAX_ENDPOINTS);
        return;
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        let path = format!("endpoints[{i}]");
        let addresses = util::array_at(endpoint, "/addresses");
        if addresses.is_empty() {
            errs.required(format!("{path}.addresses"), "must contain at least 1 address");
        } else if addresses.len() > MAX_ADDRESSES {
            too_many(errs, format!("{path}.addresses"), addresses.len(), MAX_ADDRESSES);
        }
        for (j, address) in addresses.iter().enumerate() {
            let field = format!("{path}.addresses[{j}]");
            let text = address.as_str().unwrap_or("");
            match address_type {
                "IPv4" => validate_ip(text, true, &field, errs),
                "IPv6" => validate_ip(text, false, &field, errs),
                "FQDN" => validate_fqdn(text, &field, errs),
                _ => {}
            }
        }
        if let Some(node) = endpoint.get("nodeName").and_then(Value::as_str) {
            for msg in validation::dns1123_subdomain(node) {
                errs.invalid(format!("{path}.nodeName"), json!(node), msg);
            }
        }
        if let Some(host) = endpoint.get("hostname").and_then(Value::as_str) {
            for msg in validation::dns1123_label(host) {
                errs.invalid(format!("{path}.hostname"), json!(host), msg);
            }
        }
    }
}

fn validate_ip(text: &str, v4: bool, field: &str, errs: &mut FieldErrors) {
    let ip = parse_ip(text).filter(|ip| ip.is_ipv4() == v4);
    let Some(ip) = ip else {
        let family = if v4 { "IPv4" } else { "IPv6" };
        errs.invalid(field, json!(text), format!("must be a valid {family} address"));
        return;
    };
    let (unspecified, loopback, link_local, link_local_multicast) = match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            (a.is_unspecified(), a.is_loopback(), a.is_link_local(), o[0] == 224 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            (a.is_unspecified(), a.is_loopback(), s[0] & 0xffc0 == 0xfe80, s[0] & 0xff0f == 0xff02)
        }
    };
    if unspecified {
        errs.invalid(field, json!(text), format!("may not be unspecified ({text})"));
    }
    if loopback {
        errs.invalid(field, json!(text), "may not be in the loopback range (127.0.0.0/8, ::1/128)");
    }
    if link_local {
        errs.invalid(field, json!(text), "may not be in the link-local range (169.254.0.0/16, fe80::/10)");
    }
    if link_local_multicast {
        errs.invalid(field, json!(text), "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)");
    }
}

/// `IsFullyQualifiedDomainName`.
fn validate_fqdn(name: &str, field: &str, errs: &mut FieldErrors) {
    if name.is_empty() {
        errs.required(field, "");
        return;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let sub = validation::dns1123_subdomain(name);
    if !sub.is_empty() {
        errs.invalid(field, json!(name), sub.join(","));
        return;
    }
    if !name.contains('.') {
        errs.invalid(field, json!(name), "should be a domain with at least two segments separated by dots");
        return;
    }
    if let Some((label, msgs)) = name.split('.').map(|l| (l, validation::dns1123_label(l))).find(|(_, m)| !m.is_empty())
    {
        errs.invalid(field, json!(label), msgs.join(","));
    }
}

fn validate_ports(ports: &[Value], errs: &mut FieldErrors) {
    if ports.len() > MAX_PORTS {
        too_many(errs, "ports".to_string(), ports.len(), MAX_PORTS);
        return;
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("ports[{i}]");
        let name = port.get("name").and_then(Value::as_str).unwrap_or("");
        if !name.is_empty() {
            for msg in validation::dns1123_label(name) {
                errs.invalid(format!("{path}.name"), json!(name), msg);
            }
        }
        if names.contains(&name) {
            duplicate(errs, format!("{path}.name"), json!(name));
        } else {
            names.push(name);
        }
        match port.get("protocol").filter(|p| !p.is_null()) {
            None => errs.required(format!("{path}.protocol"), ""),
            Some(p) if !matches!(p.as_str(), Some("TCP" | "UDP" | "SCTP")) => {
                errs.not_supported(format!("{path}.protocol"), p.clone(), &["SCTP", "TCP", "UDP"]);
            }
            Some(_) => {}
        }
        if let Some(app) = port.get("appProtocol").and_then(Value::as_str) {
            for msg in validation::qualified_name(app) {
                errs.invalid(format!("{path}.appProtocol"), json!(app), msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn slice() -> Value {
        json!({"metadata": {"name": "web-abc12", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.2.7"], "conditions": {"ready": true}}],
            "ports": [{"port": 8080}]})
    }

    fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn port_defaults_and_cells() {
        let mut s = slice();
        Strategy.default(&mut s);
        assert_eq!(s["ports"][0], json!({"port": 8080, "name": "", "protocol": "TCP"}));
        assert_eq!(errors(&s, None), Vec::<String>::new());
        let cells = Strategy.cells(&s, Timestamp::now());
        assert_eq!(cells[1..4], [json!("IPv4"), json!("8080"), json!("10.244.1.5,10.244.2.7")]);
        assert_eq!(Strategy.cells(&json!({}), Timestamp::now())[2], json!("<unset>"));
    }

    #[test]
    fn address_rules() {
        let mut s = slice();
        s["endpoints"] = json!([{"addresses": ["127.0.0.1", "fe80::1"]}, {"addresses": []}]);
        Strategy.default(&mut s);
        assert_eq!(
            errors(&s, None),
            [
                "endpoints[0].addresses[0]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
                "endpoints[0].addresses[1]: Invalid value: \"fe80::1\": must be a valid IPv4 address",
                "endpoints[1].addresses: Required value: must contain at least 1 address",
            ]
        );
    }

    #[test]
    fn address_type_required_and_immutable() {
        let mut s = slice();
        Strategy.default(&mut s);
        let old = s.clone();
        s["addressType"] = json!("IPv6");
        s["endpoints"] = json!([]);
        assert_eq!(errors(&s, Some(&old)), ["addressType: Invalid value: \"IPv6\": field is immutable"]);
        s.as_object_mut().expect("object").remove("addressType");
        assert_eq!(errors(&s, None), ["addressType: Required value"]);
    }
}
