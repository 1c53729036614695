//! NetworkPolicy (networkpolicies.networking.k8s.io/v1): strategy and discovery entry.
//!
//! `policyTypes` defaults to `[Ingress]`, plus `Egress` when egress rules are given; ports
//! default to TCP. Peers, ports and IP blocks are checked as Kubernetes checks them.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::apps_util as util;
use super::podspec::checks::{check_cidr, parse_cidr, port_name, port_num};
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp, age_cell, name_cell};
use crate::validation::FieldErrors;

pub static RESOURCE: Resource = Resource {
    group: "networking.k8s.io",
    version: "v1",
    kind: "NetworkPolicy",
    plural: "networkpolicies",
    singular: "networkpolicy",
    short_names: &["netpol"],
    categories: &[],
    namespaced: true,
    subresources: &[],
    storage: "networkpolicies",
    strategy: &Strategy,
};

pub struct Strategy;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Pod-Selector",
        "string",
        "Selects the pods to which this NetworkPolicy object applies.  The array of ingress rules is applied to any pods selected by this field. Multiple network policies can select the same set of pods.  In this case, the ingress rules for each are combined additively. This field is NOT optional and follows standard label selector semantics. An empty podSelector matches all pods in this namespace.",
    ),
    AGE_COLUMN,
];

impl super::Strategy for Strategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = util::child(obj, "spec") else { return };
        for direction in ["ingress", "egress"] {
            let rules = spec.get_mut(direction).and_then(Value::as_array_mut);
            for rule in rules.into_iter().flatten() {
                let ports = rule.get_mut("ports").and_then(Value::as_array_mut);
                for port in ports.into_iter().flatten() {
                    util::default_field(port, "protocol", json!("TCP"));
                }
            }
        }
        if util::is_empty(spec.get("policyTypes")) {
            let mut types = vec![json!("Ingress")];
            if !util::is_empty(spec.get("egress")) {
                types.push(json!("Egress"));
            }
            spec["policyTypes"] = Value::Array(types);
        }
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, errs: &mut FieldErrors) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        util::validate_label_selector(Some(spec.get("podSelector").unwrap_or(&json!({}))), "spec.podSelector", errs);
        for (i, rule) in util::array_at(spec, "/ingress").iter().enumerate() {
            for (j, port) in util::array_at(rule, "/ports").iter().enumerate() {
                validate_port(port, &format!("spec.ingress[{i}].ports[{j}]"), errs);
            }
            for (j, peer) in util::array_at(rule, "/from").iter().enumerate() {
                validate_peer(peer, &format!("spec.ingress[{i}].from[{j}]"), errs);
            }
        }
        for (i, rule) in util::array_at(spec, "/egress").iter().enumerate() {
            for (j, peer) in util::array_at(rule, "/to").iter().enumerate() {
                validate_peer(peer, &format!("spec.egress[{i}].to[{j}]"), errs);
            }
            for (j, port) in util::array_at(rule, "/ports").iter().enumerate() {
                validate_port(port, &format!("spec.egress[{i}].ports[{j}]"), errs);
            }
        }
        let types = util::array_at(spec, "/policyTypes");
        if types.len() > 2 {
            errs.invalid("spec.policyTypes", json!(types), "may not specify more than two policyTypes");
            return;
        }
        for (i, t) in types.iter().enumerate() {
            if !matches!(t.as_str(), Some("Ingress" | "Egress")) {
                errs.not_supported(format!("spec.policyTypes[{i}]"), t.clone(), &["Ingress", "Egress"]);
            }
        }
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let selector = obj.pointer("/spec/podSelector").cloned().unwrap_or_else(|| json!({}));
        vec![name_cell(obj), json!(util::format_label_selector(Some(&selector))), age_cell(obj, now)]
    }
}

fn validate_port(port: &Value, path: &str, errs: &mut FieldErrors) {
    if let Some(p) = port.get("protocol").filter(|p| !p.is_null())
        && !matches!(p.as_str(), Some("TCP" | "UDP" | "SCTP"))
    {
        errs.not_supported(format!("{path}.protocol"), p.clone(), &["TCP", "UDP", "SCTP"]);
    }
    let end = port.get("endPort").filter(|e| !e.is_null());
    match port.get("port").filter(|p| !p.is_null()) {
        Some(Value::String(name)) => {
            if let Some(e) = end {
                errs.invalid(format!("{path}.endPort"), e.clone(), "may not be specified when `port` is non-numeric");
            }
            for msg in port_name(name) {
                errs.invalid(format!("{path}.port"), json!(name), msg);
            }
        }
        Some(p) => {
            let number = p.as_i64().unwrap_or(0);
            for msg in port_num(number) {
                errs.invalid(format!("{path}.port"), json!(number), msg);
            }
            if let Some(e) = end {
                let end_number = e.as_i64().unwrap_or(0);
                if end_number < number {
                    // Kubernetes reports the start port as the value here.
                    errs.invalid(format!("{path}.endPort"), json!(number), "must be greater than or equal to `port`");
                }
                for msg in port_num(end_number) {
                    errs.invalid(format!("{path}.endPort"), json!(end_number), msg);
                }
            }
        }
        None => {
            if let Some(e) = end {
                errs.invalid(format!("{path}.endPort"), e.clone(), "may not be specified when `port` is not specified");
            }
        }
    }
}

fn validate_peer(peer: &Value, path: &str, errs: &mut FieldErrors) {
    let mut count = 0;
    for key in ["podSelector", "namespaceSelector"] {
        if let Some(sel) = peer.get(key).filter(|s| !s.is_null()) {
            count += 1;
            util::validate_label_selector(Some(sel), &format!("{path}.{key}"), errs);
        }
    }
    let ip_block = peer.get("ipBlock").filter(|b| !b.is_null());
    if let Some(block) = ip_block {
        count += 1;
        validate_ip_block(block, &format!("{path}.ipBlock"), errs);
    }
    if count == 0 {
        errs.required(path, "must specify a peer");
    } else if count > 1 && ip_block.is_some() {
        errs.forbidden(path, "may not specify both ipBlock and another peer");
    }
}

fn validate_ip_block(block: &Value, path: &str, errs: &mut FieldErrors) {
    let cidr = block.get("cidr").and_then(Value::as_str).unwrap_or("");
    if cidr.is_empty() {
        errs.required(format!("{path}.cidr"), "");
        return;
    }
    check_cidr(cidr, &format!("{path}.cidr"), errs);
    let Some((net, bits)) = parse_cidr(cidr) else { return };
    for (i, except) in util::array_at(block, "/except").iter().enumerate() {
        let field = format!("{path}.except[{i}]");
        let text = except.as_str().unwrap_or("");
        check_cidr(text, &field, errs);
        let Some((ip, except_bits)) = parse_cidr(text) else { continue };
        if !contains(net, bits, ip) || bits >= except_bits {
            errs.invalid(field, json!(text), "must be a strict subset of `cidr`");
        }
    }
}

/// Whether `ip` lies in `net/bits` (same family only).
fn contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    let (a, b, width) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(u32::from(n)), u128::from(u32::from(i)), 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= 128 || (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn policy() -> Value {
        json!({"metadata": {"name": "db", "namespace": "default"}, "spec": {
            "podSelector": {"matchLabels": {"role": "db"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                {"namespaceSelector": {"matchLabels": {"project": "app"}}}], "ports": [{"port": 6379}]}]}})
    }

    fn errors(obj: &Value) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, None, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults() {
        let mut p = policy();
        Strategy.default(&mut p);
        assert_eq!(p["spec"]["policyTypes"], json!(["Ingress"]));
        assert_eq!(p["spec"]["ingress"][0]["ports"][0], json!({"port": 6379, "protocol": "TCP"}));
        assert_eq!(errors(&p), Vec::<String>::new());
        let mut e = policy();
        e["spec"]["egress"] = json!([{"to": [{"podSelector": {}}]}]);
        Strategy.default(&mut e);
        assert_eq!(e["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    }

    #[test]
    fn peers_ports_and_blocks() {
        let mut p = policy();
        p["spec"]["ingress"][0]["from"] =
            json!([{}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/24"]}, "podSelector": {}}]);
        p["spec"]["ingress"][0]["ports"] = json!([{"port": "http", "endPort": 90}]);
        Strategy.default(&mut p);
        assert_eq!(
            errors(&p),
            [
                "spec.ingress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
                "spec.ingress[0].from[0]: Required value: must specify a peer",
                "spec.ingress[0].from[1].ipBlock.except[0]: Invalid value: \"192.168.0.0/24\": must be a strict subset of `cidr`",
                "spec.ingress[0].from[1]: Forbidden: may not specify both ipBlock and another peer",
            ]
        );
    }

    #[test]
    fn pod_selector_cell() {
        let mut p = policy();
        assert_eq!(Strategy.cells(&p, Timestamp::now())[1], json!("role=db"));
        p["spec"]["podSelector"] = json!({});
        assert_eq!(Strategy.cells(&p, Timestamp::now())[1], json!("<none>"));
    }
}
