//! Service (services/v1): strategy and discovery entry.
//!
//! Defaulting fills what `SetDefaults_Service` and the service REST allocator fill except the
//! allocations themselves (`clusterIP`, `nodePort`, `healthCheckNodePort` are left to the
//! allocation controller). [`prepare_update`] carries allocated values over from the stored
//! object on update, as kube-apiserver does before validating; the REST layer should call it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::podspec::checks::{self, arr, default_field, int, s};
use super::podspec::validate_protocol;
use super::{AGE_COLUMN, Column, NAME_COLUMN, Resource, Timestamp};
use crate::validation::{self, FieldErrors};

pub static RESOURCE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    short_names: &["svc"],
    categories: &["all"],
    namespaced: true,
    subresources: &["status"],
    storage: "services/specs",
    strategy: &Strategy,
};

pub struct Strategy;

/// The NodePort range of the cluster (`--service-node-port-range`).
pub(crate) const NODE_PORT_RANGE: std::ops::RangeInclusive<i64> = 30000..=32767;

static COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column::new(
        "Type",
        "string",
        "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types",
    ),
    Column::new(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
    ),
    Column::new(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.",
    ),
    Column::new(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
    ),
    AGE_COLUMN,
    Column::wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
    ),
];

impl super::Strategy for Strategy {
    fn prepare_update(&self, new: &mut Value, old: &Value) {
        prepare_update(new, old);
    }
    fn name_rule(&self) -> super::NameRule {
        super::NameRule::Dns1035
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            default_spec(spec);
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, errs: &mut FieldErrors) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        if let Some(old) = old {
            validate_cluster_ip_update(spec, old.get("spec").unwrap_or(&Value::Null), errs);
        }
        validate_spec(spec, errs);
    }

    fn columns(&self) -> &'static [Column] {
        COLUMNS
    }

    fn cells(&self, obj: &Value, now: Timestamp) -> Vec<Value> {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let cluster_ip =
            arr(spec, "clusterIPs").first().and_then(Value::as_str).unwrap_or_else(|| s(spec, "clusterIP"));
        let ports: Vec<String> = arr(spec, "ports")
            .iter()
            .map(|p| {
                let port = int(p, "port").unwrap_or(0);
                let proto = s(p, "protocol");
                match int(p, "nodePort").unwrap_or(0) {
                    0 => format!("{port}/{proto}"),
                    np => format!("{port}:{np}/{proto}"),
                }
            })
            .collect();
        vec![
            super::name_cell(obj),
            json!(s(spec, "type")),
            json!(if cluster_ip.is_empty() { "<none>" } else { cluster_ip }),
            json!(external_ip(obj)),
            json!(if ports.is_empty() { "<none>".to_string() } else { ports.join(",") }),
            super::age_cell(obj, now),
            json!(format_labels(checks::obj(spec, "selector"))),
        ]
    }

    fn field(&self, obj: &Value, path: &str) -> Option<String> {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        match path {
            "spec.clusterIP" => Some(s(spec, "clusterIP").into()),
            "spec.type" => Some(s(spec, "type").into()),
            _ => None,
        }
    }
}

/// `k=v,k2=v2` with sorted keys (`labels.FormatLabels`), `<none>` when empty.
pub(crate) fn format_labels(m: Option<&Map<String, Value>>) -> String {
    let sorted: BTreeMap<&String, &str> = m.into_iter().flatten().map(|(k, v)| (k, v.as_str().unwrap_or(""))).collect();
    if sorted.is_empty() {
        return "<none>".into();
    }
    sorted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn external_ip(obj: &Value) -> String {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let external: Vec<&str> = arr(spec, "externalIPs").iter().filter_map(Value::as_str).collect();
    match s(spec, "type") {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".into()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb: std::collections::BTreeSet<&str> = obj
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|i| if !s(i, "ip").is_empty() { s(i, "ip") } else { s(i, "hostname") })
                .filter(|v| !v.is_empty())
                .collect();
            let mut all: Vec<&str> = lb.into_iter().collect();
            all.extend(external);
            if all.is_empty() { "<pending>".into() } else { all.join(",") }
        }
        "ExternalName" => s(spec, "externalName").into(),
        _ => "<unknown>".into(),
    }
}

fn is_headless(spec: &Value) -> bool {
    s(spec, "clusterIP") == "None"
}

/// NodePort and LoadBalancer services, and any with external IPs.
fn externally_accessible(spec: &Value) -> bool {
    matches!(s(spec, "type"), "NodePort" | "LoadBalancer")
        || (s(spec, "type") == "ClusterIP" && !arr(spec, "externalIPs").is_empty())
}

fn default_spec(spec: &mut Map<String, Value>) {
    default_field(spec, "sessionAffinity", json!("None"));
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            spec.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let timeout = spec.get("sessionAffinityConfig").and_then(|c| c.pointer("/clientIP/timeoutSeconds"));
            if timeout.is_none_or(Value::is_null) {
                spec.insert("sessionAffinityConfig".into(), json!({"clientIP": {"timeoutSeconds": 10800}}));
            }
        }
        _ => {}
    }
    default_field(spec, "type", json!("ClusterIP"));
    for p in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
        let Some(p) = p.as_object_mut() else { continue };
        default_field(p, "protocol", json!("TCP"));
        let target_unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if target_unset && let Some(port) = p.get("port").cloned() {
            p.insert("targetPort".into(), port);
        }
    }
    let view = Value::Object(spec.clone());
    let svc_type = s(&view, "type").to_string();
    if externally_accessible(&view) {
        default_field(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(svc_type.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        default_field(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if svc_type == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts").is_none_or(Value::is_null) {
        spec.insert("allocateLoadBalancerNodePorts".into(), json!(true));
    }
    // Singular-only clients: clusterIPs follows clusterIP.
    let cluster_ip = s(&view, "clusterIP").to_string();
    if !cluster_ip.is_empty() && arr(&view, "clusterIPs").is_empty() {
        spec.insert("clusterIPs".into(), json!([cluster_ip]));
    }
    // IP family fields (set by the allocator in kube-apiserver; this cluster is IPv4 single-stack).
    if svc_type != "ExternalName" {
        let selectorless = checks::obj(&view, "selector").is_none_or(Map::is_empty);
        if cluster_ip == "None" && selectorless {
            default_field(spec, "ipFamilyPolicy", json!("RequireDualStack"));
            if arr(&view, "ipFamilies").is_empty() {
                spec.insert("ipFamilies".into(), json!(["IPv4", "IPv6"]));
            }
        } else {
            default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
            if arr(&view, "ipFamilies").is_empty() {
                let family = match checks::parse_ip(&cluster_ip) {
                    Some(ip) if ip.is_ipv6() => "IPv6",
                    _ => "IPv4",
                };
                spec.insert("ipFamilies".into(), json!([family]));
            }
        }
    }
}

/// Carries values the allocator assigned over from the stored service into an update that left
/// them out (`patchAllocatedValues`), and drops fields that no longer apply after a type change.
pub(crate) fn prepare_update(new: &mut Value, old: &Value) {
    let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let new_type = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    let old_type = s(&old_spec, "type");
    let needs_cluster_ip = |t: &str| t != "ExternalName";
    let needs_node_port = |t: &str| t == "NodePort" || t == "LoadBalancer";
    if needs_cluster_ip(old_type) && needs_cluster_ip(&new_type) {
        if spec.get("clusterIP").and_then(Value::as_str).unwrap_or("").is_empty() {
            if let Some(ip) = old_spec.get("clusterIP") {
                spec.insert("clusterIP".into(), ip.clone());
            }
            if arr(&Value::Object(spec.clone()), "clusterIPs").is_empty()
                && let Some(ips) = old_spec.get("clusterIPs")
            {
                spec.insert("clusterIPs".into(), ips.clone());
            }
        }
    } else if new_type == "ExternalName" && old_type != "ExternalName" {
        for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"] {
            if spec.get(key) == old_spec.get(key) {
                spec.remove(key);
            }
        }
    }
    if needs_node_port(old_type) && needs_node_port(&new_type) {
        let old_ports: HashMap<&str, i64> =
            arr(&old_spec, "ports").iter().map(|p| (s(p, "name"), int(p, "nodePort").unwrap_or(0))).collect();
        let used: HashSet<i64> =
            arr(&Value::Object(spec.clone()), "ports").iter().filter_map(|p| int(p, "nodePort")).collect();
        for p in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
            let Some(p) = p.as_object_mut() else { continue };
            if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                if let Some(&np) = old_ports.get(name).filter(|np| **np != 0 && !used.contains(np)) {
                    p.insert("nodePort".into(), json!(np));
                }
            }
        }
    } else if !needs_node_port(&new_type) && needs_node_port(old_type) {
        // Leaving NodePort/LoadBalancer: drop node ports the allocator had assigned.
        let old_node_ports: HashSet<i64> = arr(&old_spec, "ports").iter().filter_map(|p| int(p, "nodePort")).collect();
        for p in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(p) = p.as_object_mut()
                && p.get("nodePort").and_then(Value::as_i64).is_some_and(|np| old_node_ports.contains(&np))
            {
                p.remove("nodePort");
            }
        }
    }
    let hc = |t: &str, sp: &Value| t == "LoadBalancer" && s(sp, "externalTrafficPolicy") == "Local";
    if hc(old_type, &old_spec)
        && hc(&new_type, &Value::Object(spec.clone()))
        && spec.get("healthCheckNodePort").and_then(Value::as_i64).unwrap_or(0) == 0
        && let Some(v) = old_spec.get("healthCheckNodePort")
    {
        spec.insert("healthCheckNodePort".into(), v.clone());
    }
    if new_type != "LoadBalancer" && old_type == "LoadBalancer" {
        for key in ["allocateLoadBalancerNodePorts", "loadBalancerClass", "healthCheckNodePort"] {
            if spec.get(key) == old_spec.get(key) {
                spec.remove(key);
            }
        }
    }
    let view = Value::Object(spec.clone());
    if !externally_accessible(&view) && spec.get("externalTrafficPolicy") == old_spec.get("externalTrafficPolicy") {
        spec.remove("externalTrafficPolicy");
    }
    // The user changed only the singular clusterIP: the plural follows it.
    let ip = s(&view, "clusterIP");
    if ip != s(&old_spec, "clusterIP") && view.get("clusterIPs") == old_spec.get("clusterIPs") {
        if ip.is_empty() {
            spec.remove("clusterIPs");
        } else {
            spec.insert("clusterIPs".into(), json!([ip]));
        }
    }
}

fn validate_spec(spec: &Value, errs: &mut FieldErrors) {
    let svc_type = s(spec, "type");
    let ports = arr(spec, "ports");
    let headless = is_headless(spec);
    let cluster_ips = arr(spec, "clusterIPs");
    if ports.is_empty() && !headless && svc_type != "ExternalName" {
        errs.required("spec.ports", "");
    }
    match svc_type {
        "LoadBalancer" | "NodePort" if headless => {
            errs.invalid(
                "spec.clusterIPs[0]",
                cluster_ips.first().cloned().unwrap_or(json!("None")),
                format!("may not be set to 'None' for {svc_type} services"),
            );
        }
        "ExternalName" => {
            for key in ["clusterIPs", "ipFamilies"] {
                if !arr(spec, key).is_empty() {
                    errs.forbidden(format!("spec.{key}"), "may not be set for ExternalName services");
                }
            }
            if spec.get("ipFamilyPolicy").is_some_and(|v| !v.is_null()) {
                errs.forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services");
            }
            let name = s(spec, "externalName");
            let cname = name.strip_suffix('.').unwrap_or(name);
            if cname.is_empty() {
                errs.required("spec.externalName", "");
            } else {
                for msg in validation::dns1123_subdomain(cname) {
                    errs.invalid("spec.externalName", json!(cname), msg);
                }
            }
        }
        _ => {}
    }
    if svc_type == "LoadBalancer" {
        for (i, p) in ports.iter().enumerate() {
            if int(p, "port") == Some(10250) {
                errs.invalid(
                    format!("spec.ports[{i}]"),
                    json!(10250),
                    "may not expose port 10250 externally since it is used by kubelet",
                );
            }
        }
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = s(p, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.required(format!("{pp}.name"), "");
        } else if !name.is_empty() {
            for msg in validation::dns1123_label(name) {
                errs.invalid(format!("{pp}.name"), json!(name), msg);
            }
            if !names.insert(name) {
                checks::duplicate(errs, format!("{pp}.name"), json!(name));
            }
        }
        let port = int(p, "port").unwrap_or(0);
        for msg in checks::port_num(port) {
            errs.invalid(format!("{pp}.port"), json!(port), msg);
        }
        validate_protocol(p.get("protocol"), &format!("{pp}.protocol"), errs);
        let target = p.get("targetPort").cloned().unwrap_or(json!(0));
        checks::check_port_num_or_name(&target, &format!("{pp}.targetPort"), errs);
        let app = s(p, "appProtocol");
        if p.get("appProtocol").is_some_and(Value::is_string) {
            for msg in validation::qualified_name(app) {
                errs.invalid(format!("{pp}.appProtocol"), json!(app), msg);
            }
        }
        // Kubernetes' allocator rejects out-of-range node ports; allocation happens later here.
        if let Some(np) = int(p, "nodePort").filter(|np| *np != 0)
            && matches!(svc_type, "NodePort" | "LoadBalancer")
            && !NODE_PORT_RANGE.contains(&np)
        {
            errs.invalid(
                format!("{pp}.nodePort"),
                json!(np),
                format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    NODE_PORT_RANGE.start(),
                    NODE_PORT_RANGE.end()
                ),
            );
        }
    }
    if let Some(sel) = checks::obj(spec, "selector") {
        checks::check_label_map(Some(sel), &"spec.selector", errs);
    }
    match s(spec, "sessionAffinity") {
        "" => errs.required("spec.sessionAffinity", ""),
        "ClientIP" => {
            let timeout = spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds").and_then(Value::as_i64);
            match timeout {
                None => errs.required("spec.sessionAffinityConfig.clientIP.timeoutSeconds", ""),
                Some(t) if !(1..=86400).contains(&t) => {
                    errs.invalid(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        json!(t),
                        checks::range_error(1, 86400),
                    );
                }
                _ => {}
            }
        }
        "None" => {
            if spec.get("sessionAffinityConfig").is_some_and(|v| !v.is_null()) {
                errs.forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None");
            }
        }
        other => errs.not_supported("spec.sessionAffinity", json!(other), &["ClientIP", "None"]),
    }
    validate_cluster_ips(spec, errs);
    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        checks::check_ip(ip.as_str().unwrap_or(""), &format!("spec.externalIPs[{i}]"), errs);
    }
    match svc_type {
        "" => errs.required("spec.type", ""),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName" => {}
        other => {
            errs.not_supported("spec.type", json!(other), &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"])
        }
    }
    if svc_type == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            if int(p, "nodePort").unwrap_or(0) != 0 {
                errs.forbidden(format!("spec.ports[{i}].nodePort"), "may not be used when `type` is 'ClusterIP'");
            }
        }
    }
    let mut node_ports = HashSet::new();
    let mut port_keys = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let proto = s(p, "protocol");
        if let Some(np) = int(p, "nodePort").filter(|np| *np != 0)
            && !node_ports.insert((proto, np))
        {
            checks::duplicate(errs, format!("spec.ports[{i}].nodePort"), json!(np));
        }
        let port = int(p, "port").unwrap_or(0);
        if !port_keys.insert((proto, port)) {
            checks::duplicate(errs, format!("spec.ports[{i}]"), json!({"port": port, "protocol": proto}));
        }
    }
    let ranges = arr(spec, "loadBalancerSourceRanges");
    if !ranges.is_empty() {
        if svc_type != "LoadBalancer" {
            errs.forbidden("spec.LoadBalancerSourceRanges", "may only be used when `type` is 'LoadBalancer'");
        }
        for (i, r) in ranges.iter().enumerate() {
            checks::check_cidr(r.as_str().unwrap_or("").trim(), &format!("spec.LoadBalancerSourceRanges[{i}]"), errs);
        }
    }
    let alloc_lb = spec.get("allocateLoadBalancerNodePorts").is_some_and(|v| !v.is_null());
    if alloc_lb && svc_type != "LoadBalancer" {
        errs.forbidden("spec.allocateLoadBalancerNodePorts", "may only be used when `type` is 'LoadBalancer'");
    }
    if svc_type == "LoadBalancer" && !alloc_lb {
        errs.required("allocateLoadBalancerNodePorts", "");
    }
    let etp = s(spec, "externalTrafficPolicy");
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.invalid(
                "spec.externalTrafficPolicy",
                json!(etp),
                "may only be set for externally-accessible services",
            );
        }
    } else if etp.is_empty() {
        errs.required("spec.externalTrafficPolicy", "");
    } else if !matches!(etp, "Cluster" | "Local") {
        errs.not_supported("spec.externalTrafficPolicy", json!(etp), &["Cluster", "Local"]);
    }
    let hc = int(spec, "healthCheckNodePort").unwrap_or(0);
    if !(svc_type == "LoadBalancer" && etp == "Local") && hc != 0 {
        errs.invalid(
            "spec.healthCheckNodePort",
            json!(hc),
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        );
    }
    match spec.get("internalTrafficPolicy").and_then(Value::as_str) {
        None if matches!(svc_type, "ClusterIP" | "NodePort" | "LoadBalancer") => {
            errs.required("spec.internalTrafficPolicy", "");
        }
        Some(itp) if !matches!(itp, "Cluster" | "Local") => {
            errs.not_supported("spec.internalTrafficPolicy", json!(itp), &["Cluster", "Local"]);
        }
        _ => {}
    }
    if let Some(td) = spec.get("trafficDistribution").and_then(Value::as_str)
        && !matches!(td, "PreferClose" | "PreferSameZone" | "PreferSameNode")
    {
        errs.not_supported("spec.trafficDistribution", json!(td), &["PreferClose", "PreferSameZone", "PreferSameNode"]);
    }
}

/// `ValidateServiceClusterIPsRelatedFields`.
fn validate_cluster_ips(spec: &Value, errs: &mut FieldErrors) {
    let cluster_ip = s(spec, "clusterIP");
    let ips = arr(spec, "clusterIPs");
    if !cluster_ip.is_empty() {
        match ips.first().and_then(Value::as_str) {
            None => errs.required("spec.clusterIPs", ""),
            Some(first) if first != cluster_ip => {
                errs.invalid("spec.clusterIPs", json!(ips), "first value must match `clusterIP`");
            }
            _ => {}
        }
    } else if !ips.is_empty() {
        errs.invalid("spec.clusterIPs", json!(ips), "must be empty when `clusterIP` is not specified");
    }
    let mut seen = HashSet::new();
    for (i, f) in arr(spec, "ipFamilies").iter().enumerate() {
        let f = f.as_str().unwrap_or("");
        if !matches!(f, "IPv4" | "IPv6") {
            errs.not_supported(format!("spec.ipFamilies[{i}]"), json!(f), &["IPv4", "IPv6"]);
        }
        if !seen.insert(f) {
            checks::duplicate(errs, format!("spec.ipFamilies[{i}]"), json!(f));
        }
    }
    if let Some(policy) = spec.get("ipFamilyPolicy").and_then(Value::as_str)
        && !matches!(policy, "SingleStack" | "PreferDualStack" | "RequireDualStack")
    {
        errs.not_supported(
            "spec.ipFamilyPolicy",
            json!(policy),
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
        );
    }
    let mut invalid = false;
    for (i, ip) in ips.iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                invalid = true;
                errs.invalid("spec.clusterIPs", json!(ips), "'None' must be the first and only value");
            }
            continue;
        }
        if checks::parse_ip(ip).is_none() {
            invalid = true;
            checks::check_ip(ip, &format!("spec.clusterIPs[{i}]"), errs);
        }
    }
    if ips.len() > 2 {
        errs.invalid("spec.clusterIPs", json!(ips), "may only hold up to 2 values");
    }
    if invalid {
        return;
    }
    if ips.len() == 2 {
        let v6: Vec<bool> = ips.iter().filter_map(|ip| checks::parse_ip(ip.as_str()?)).map(|ip| ip.is_ipv6()).collect();
        if v6.len() == 2 && v6[0] == v6[1] {
            errs.invalid("spec.clusterIPs", json!(ips), "may specify no more than one IP for each IP family");
        }
    }
    if !is_headless(spec) {
        for (i, (ip, family)) in ips.iter().zip(arr(spec, "ipFamilies")).enumerate() {
            let Some(addr) = ip.as_str().and_then(checks::parse_ip) else { continue };
            match family.as_str() {
                Some("IPv4") if addr.is_ipv6() => errs.invalid(
                    format!("spec.clusterIPs[{i}]"),
                    ip.clone(),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ),
                Some("IPv6") if !addr.is_ipv6() => errs.invalid(
                    format!("spec.clusterIPs[{i}]"),
                    ip.clone(),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ),
                _ => {}
            }
        }
    }
}

/// `validateUpgradeDowngradeClusterIPs`: allocated cluster IPs may not change. An update that
/// leaves the IPs out keeps the stored ones (see [`prepare_update`]).
fn validate_cluster_ip_update(new: &Value, old: &Value, errs: &mut FieldErrors) {
    if s(new, "type") == "ExternalName" || s(old, "type") == "ExternalName" {
        return;
    }
    if is_headless(new) && is_headless(old) {
        return;
    }
    let old_ips: Vec<&str> = arr(old, "clusterIPs").iter().filter_map(Value::as_str).collect();
    let mut new_ips: Vec<&str> = arr(new, "clusterIPs").iter().filter_map(Value::as_str).collect();
    let new_ip = s(new, "clusterIP");
    if new_ip.is_empty() && new_ips.is_empty() {
        new_ips.clone_from(&old_ips);
    } else if new_ip != s(old, "clusterIP") && new_ips == old_ips {
        new_ips = if new_ip.is_empty() { Vec::new() } else { vec![new_ip] };
    }
    let field0 = "spec.clusterIPs[0]";
    if old_ips.len() == new_ips.len() {
        for (i, ip) in old_ips.iter().enumerate() {
            if *ip != new_ips[i] {
                errs.invalid(format!("spec.clusterIPs[{i}]"), json!(new_ips), "may not change once set");
            }
        }
    } else if old_ips.len() > new_ips.len() {
        if new_ips.is_empty() {
            errs.invalid(field0, json!(new_ips), "primary clusterIP can not be unset");
        } else if new_ips[0] != old_ips[0] {
            errs.invalid(field0, json!(new_ips), "may not change once set");
        }
        if new_ips.len() == 1 && s(new, "ipFamilyPolicy") != "SingleStack" {
            errs.invalid(
                field0,
                json!(new_ips),
                "`ipFamilyPolicy` must be set to 'SingleStack' when releasing the secondary clusterIP",
            );
        }
    } else if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
        errs.invalid(field0, json!(new_ips), "may not change once set");
    }
}

#[cfg(test)]
mod tests {
    use super::super::Strategy as _;
    use super::*;

    fn defaulted(spec: Value) -> Value {
        let mut svc = json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": spec});
        Strategy.default(&mut svc);
        svc
    }

    fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errs = FieldErrors::default();
        Strategy.validate(obj, old, &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn cluster_ip_defaults_match_kubectl_output() {
        let svc = defaulted(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        assert_eq!(
            svc["spec"],
            json!({
                "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                "sessionAffinity": "None",
                "type": "ClusterIP",
                "internalTrafficPolicy": "Cluster",
                "ipFamilyPolicy": "SingleStack",
                "ipFamilies": ["IPv4"]
            })
        );
        assert!(errors(&svc, None).is_empty(), "{:?}", errors(&svc, None));
        let np = defaulted(json!({"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]}));
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(np["spec"]["ports"][0]["targetPort"], "http");
        let ext = defaulted(json!({"type": "ExternalName", "externalName": "example.com"}));
        assert!(ext["spec"].get("ipFamilies").is_none());
        assert!(errors(&ext, None).is_empty(), "{:?}", errors(&ext, None));
    }

    #[test]
    fn node_port_rules() {
        let svc = defaulted(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}));
        assert_eq!(
            errors(&svc, None),
            vec![
                "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
            ]
        );
        let cip = defaulted(json!({"ports": [{"port": 80, "nodePort": 30080}]}));
        assert_eq!(
            errors(&cip, None),
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
        let none = defaulted(json!({"ports": []}));
        assert_eq!(errors(&none, None), vec!["spec.ports: Required value"]);
        let port = defaulted(json!({"ports": [{"port": 0}], "type": "Bogus"}));
        let e = errors(&port, None);
        assert!(
            e.contains(&"spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive".into()),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.starts_with("spec.type: Unsupported value: \"Bogus\"")), "{e:?}");
    }

    #[test]
    fn cluster_ip_is_immutable() {
        let old = defaulted(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}));
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.96.0.11");
        assert_eq!(
            errors(&new, Some(&old))[0],
            "spec.clusterIPs[0]: Invalid value: [\"10.96.0.11\"]: may not change once set"
        );
        // Leaving the IP out of an update keeps the allocated one.
        let mut replace = defaulted(json!({"ports": [{"port": 53}]}));
        prepare_update(&mut replace, &old);
        assert_eq!(replace["spec"]["clusterIP"], "10.96.0.10");
        assert!(errors(&replace, Some(&old)).is_empty(), "{:?}", errors(&replace, Some(&old)));
    }

    #[test]
    fn node_port_service_prints_like_kubectl() {
        let now = Timestamp(chrono::DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z").expect("time").to_utc());
        let svc = defaulted(json!({
            "type": "NodePort", "clusterIP": "10.96.12.7", "selector": {"tier": "fe", "app": "web"},
            "ports": [{"name": "http", "port": 80, "nodePort": 30001}, {"name": "https", "port": 443}]
        }));
        assert_eq!(
            Strategy.cells(&svc, now),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.12.7"),
                json!("<none>"),
                json!("80:30001/TCP,443/TCP"),
                json!("10m"),
                json!("app=web,tier=fe")
            ]
        );
        let lb = defaulted(json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
        assert_eq!(Strategy.cells(&lb, now)[3], json!("<pending>"));
        assert_eq!(Strategy.field(&lb, "spec.type").as_deref(), Some("LoadBalancer"));
    }
}
