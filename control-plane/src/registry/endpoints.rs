//! Endpoints (endpoints/v1): strategy and discovery entry.

use serde_json::{Value, json};

use super::podspec::checks::{self, arr, int, s};
use super::podspec::validate_protocol;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    short_names: &["ep"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "services/endpoints",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
    ),
    AGE_COLUMN,
];

impl super::Strategy for Strategy {
    fn default(&self, obj: &mut Value) {
        for subset in obj.get_mut("subsets").and_then(Value::as_array_mut).into_iter().flatten() {
            for p in subset.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(p) = p.as_object_mut() {
                    checks::default_field(p, "protocol", json!("TCP"));
                }
            }
        }
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut FieldErrors) {
        for (i, subset) in arr(obj, "subsets").iter().enumerate() {
            let sp = format!("subsets[{i}]");
            if arr(subset, "addresses").is_empty() && arr(subset, "notReadyAddresses").is_empty() {
                errs.required(&sp, "must specify `addresses` or `notReadyAddresses`");
            }
            for key in ["addresses", "notReadyAddresses"] {
                for (j, a) in arr(subset, key).iter().enumerate() {
                    validate_address(a, &format!("{sp}.{key}[{j}]"), errs);
                }
            }
            let ports = arr(subset, "ports");
            for (j, p) in ports.iter().enumerate() {
                let pp = format!("{sp}.ports[{j}]");
                let name = s(p, "name");
                if ports.len() > 1 && name.is_empty() {
                    errs.required(format!("{pp}.name"), "");
                } else if !name.is_empty() {
                    for msg in validation::dns1123_label(name) {
                        errs.invalid(format!("{pp}.name"), json!(name), msg);
                    }
                }
                let port = int(p, "port").unwrap_or(0);
                for msg in checks::port_num(port) {
                    errs.invalid(format!("{pp}.port"), json!(port), msg);
                }
                validate_protocol(p.get("protocol"), &format!("{pp}.protocol"), errs);
            }
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        vec![super::name_cell(obj), json!(format_endpoints(obj)), super::age_cell(obj, now)]
    }
}

fn validate_address(a: &Value, path: &str, errs: &mut FieldErrors) {
    let ip = s(a, "ip");
    match checks::parse_ip(ip) {
        None => checks::check_ip(ip, &format!("{path}.ip"), errs),
        Some(addr) => {
            let field = format!("{path}.ip");
            if addr.is_unspecified() {
                errs.invalid(&field, json!(ip), format!("may not be unspecified ({ip})"));
            }
            if addr.is_loopback() {
                errs.invalid(&field, json!(ip), "may not be in the loopback range (127.0.0.0/8, ::1/128)");
            }
            let link_local = match addr {
                std::net::IpAddr::V4(v4) => v4.is_link_local(),
                std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
            };
            if link_local {
                errs.invalid(&field, json!(ip), "may not be in the link-local range (169.254.0.0/16, fe80::/10)");
            }
        }
    }
    let hostname = s(a, "hostname");
    if !hostname.is_empty() {
        for msg in validation::dns1123_label(hostname) {
            errs.invalid(format!("{path}.hostname"), json!(hostname), msg);
        }
    }
    if let Some(node) = a.get("nodeName").and_then(Value::as_str) {
        for msg in validation::dns1123_subdomain(node) {
            errs.invalid(format!("{path}.nodeName"), json!(node), msg);
        }
    }
}

/// `10.0.0.1:80,10.0.0.2:80 + 3 more...`, `<none>` without subsets (kubectl's `formatEndpoints`).
fn format_endpoints(obj: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr(obj, "subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut list = Vec::new();
    let mut count = 0;
    let mut more = false;
    for ss in subsets {
        let addresses = arr(ss, "addresses");
        let ports = arr(ss, "ports");
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(s(a, "ip").to_string());
            }
            continue;
        }
        for p in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                let ip = s(a, "ip");
                let port = int(p, "port").unwrap_or(0);
                list.push(if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") });
            }
        }
    }
    let joined = list.join(",");
    if more { format!("{joined} + {} more...", count - MAX) } else { joined }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    #[test]
    fn endpoints_print_like_kubectl() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.244.1.2"}, {"ip": "10.244.1.3"}, {"ip": "10.244.2.2"}, {"ip": "10.244.2.3"}],
            "ports": [{"port": 80}]
        }]});
        assert_eq!(format_endpoints(&ep), "10.244.1.2:80,10.244.1.3:80,10.244.2.2:80 + 1 more...");
        assert_eq!(format_endpoints(&json!({})), "<none>");
        let mut ep = ep;
        Strategy.default(&mut ep);
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        let mut errs = FieldErrors::default();
        Strategy.validate(&json!({"subsets": [{"addresses": [{"ip": "127.0.0.1"}]}]}), None, &mut errs);
        assert_eq!(
            errs.0[0].to_string(),
            "subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"
        );
    }
}
