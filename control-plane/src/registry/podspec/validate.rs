//! Pod spec validation (`ValidatePodSpec`, `ValidatePodTemplateSpec` and the container, volume,
//! port, probe, env and resource rules they use), with Kubernetes' paths and messages.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;

use serde_json::{Value, json};

use super::VOLUME_SOURCES;
use super::checks::{self, arr, int, s};
use super::quantity::Quantity;
use crate::validation::{self, Field, FieldErrors, Index, Key};

/// Validates a pod template (`ValidatePodTemplateSpec`); `path` is the template's path, e.g.
/// `spec.template`.
pub(crate) fn validate_pod_template(tmpl: &Value, path: &dyn Display, errs: &mut FieldErrors) {
    if let Some(meta) = tmpl.get("metadata") {
        // Kubernetes reports template labels at `<path>.labels` (not `.metadata.labels`).
        validation::validate_labels_and_annotations(meta, &path.to_string(), errs);
    }
    let spec = tmpl.get("spec").unwrap_or(&Value::Null);
    validate_pod_spec(spec, &Field(path, "spec"), errs);
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.forbidden(format!("{path}.spec.ephemeralContainers"), "ephemeral containers not allowed in pod template");
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ContainerKind {
    Regular,
    Init,
    Ephemeral,
}

/// Validates a pod spec (`ValidatePodSpec`); `path` is the spec's path, e.g. `spec` or
/// `spec.template.spec`.
pub(crate) fn validate_pod_spec(spec: &Value, path: &dyn Display, errs: &mut FieldErrors) {
    let volumes = validate_volumes(arr(spec, "volumes"), &Field(path, "volumes"), errs);
    let mut names = HashSet::new();
    let containers = arr(spec, "containers");
    if containers.is_empty() {
        errs.required(format!("{path}.containers"), "");
    }
    for (i, c) in containers.iter().enumerate() {
        validate_container(
            c,
            &Index(&Field(path, "containers"), i),
            ContainerKind::Regular,
            &volumes,
            &mut names,
            errs,
        );
    }
    for (i, c) in arr(spec, "initContainers").iter().enumerate() {
        validate_container(
            c,
            &Index(&Field(path, "initContainers"), i),
            ContainerKind::Init,
            &volumes,
            &mut names,
            errs,
        );
    }
    for (i, c) in arr(spec, "ephemeralContainers").iter().enumerate() {
        let p = format!("{path}.ephemeralContainers[{i}]");
        validate_container(c, &p, ContainerKind::Ephemeral, &volumes, &mut names, errs);
    }
    validate_restart_policy(spec.get("restartPolicy"), &Field(path, "restartPolicy"), errs);
    validate_dns_policy(spec, path, errs);
    checks::check_label_map(checks::obj(spec, "nodeSelector"), &Field(path, "nodeSelector"), errs);
    let sa = s(spec, "serviceAccountName");
    if !sa.is_empty() {
        for msg in validation::dns1123_subdomain(sa) {
            errs.invalid(format!("{path}.serviceAccountName"), json!(sa), msg);
        }
    }
    if let Some(ads) = int(spec, "activeDeadlineSeconds")
        && !(1..=i64::from(i32::MAX)).contains(&ads)
    {
        errs.invalid(format!("{path}.activeDeadlineSeconds"), json!(ads), checks::range_error(1, i64::from(i32::MAX)));
    }
    for key in ["hostname", "subdomain"] {
        let v = s(spec, key);
        if !v.is_empty() {
            for msg in validation::dns1123_label(v) {
                errs.invalid(format!("{path}.{key}"), json!(v), msg);
            }
        }
    }
    let node = s(spec, "nodeName");
    if !node.is_empty() {
        for msg in validation::dns1123_subdomain(node) {
            errs.invalid(format!("{path}.nodeName"), json!(node), msg);
        }
    }
    let pc = s(spec, "priorityClassName");
    if !pc.is_empty() {
        for msg in validation::dns1123_subdomain(pc) {
            errs.invalid(format!("{path}.priorityClassName"), json!(pc), msg);
        }
    }
    validate_tolerations(arr(spec, "tolerations"), &Field(path, "tolerations"), errs);
    if checks::is_true(spec, "hostNetwork") {
        validate_host_network_ports(spec, path, errs);
    }
    for (i, gate) in arr(spec, "readinessGates").iter().enumerate() {
        let ct = s(gate, "conditionType");
        for msg in validation::qualified_name(ct) {
            errs.invalid(format!("{path}.readinessGates[{i}].conditionType"), json!(ct), msg);
        }
    }
    let mut gates = HashSet::new();
    for (i, gate) in arr(spec, "schedulingGates").iter().enumerate() {
        let name = s(gate, "name");
        for msg in validation::qualified_name(name) {
            errs.invalid(format!("{path}.schedulingGates[{i}].name"), json!(name), msg);
        }
        if !gates.insert(name) {
            checks::duplicate(errs, format!("{path}.schedulingGates[{i}].name"), json!(name));
        }
    }
    for (i, secret) in arr(spec, "imagePullSecrets").iter().enumerate() {
        if s(secret, "name").is_empty() {
            errs.required(format!("{path}.imagePullSecrets[{i}].name"), "");
        }
    }
}

/// `restartPolicy` of a pod: Always, OnFailure or Never.
pub(crate) fn validate_restart_policy(v: Option<&Value>, field: &dyn Display, errs: &mut FieldErrors) {
    match v.and_then(Value::as_str).unwrap_or("") {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.required(field, ""),
        other => errs.not_supported(field, json!(other), &["Always", "OnFailure", "Never"]),
    }
}

fn validate_dns_policy(spec: &Value, path: &dyn Display, errs: &mut FieldErrors) {
    let policy = s(spec, "dnsPolicy");
    let field = Field(path, "dnsPolicy");
    match policy {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" => {}
        "None" => {
            if spec.get("dnsConfig").is_none_or(Value::is_null) {
                errs.required(format!("{path}.dnsConfig"), "must provide `dnsConfig` when `dnsPolicy` is None");
            }
        }
        "" => errs.required(field, ""),
        other => {
            errs.not_supported(field, json!(other), &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"])
        }
    }
    if let Some(cfg) = spec.get("dnsConfig") {
        for (i, ns) in arr(cfg, "nameservers").iter().enumerate() {
            checks::check_ip(ns.as_str().unwrap_or(""), &format!("{path}.dnsConfig.nameservers[{i}]"), errs);
        }
    }
}

fn validate_host_network_ports(spec: &Value, path: &dyn Display, errs: &mut FieldErrors) {
    for key in ["containers", "initContainers"] {
        for (i, c) in arr(spec, key).iter().enumerate() {
            for (j, p) in arr(c, "ports").iter().enumerate() {
                let host = int(p, "hostPort").unwrap_or(0);
                if host != 0 && host != int(p, "containerPort").unwrap_or(0) {
                    errs.invalid(
                        format!("{path}.{key}[{i}].ports[{j}].hostPort"),
                        json!(host),
                        "must match `containerPort` when `hostNetwork` is true",
                    );
                }
            }
        }
    }
}

/// Tolerations (`ValidateTolerations`).
pub(crate) fn validate_tolerations(tolerations: &[Value], path: &dyn Display, errs: &mut FieldErrors) {
    for (i, t) in tolerations.iter().enumerate() {
        let p = Index(path, i);
        let key = s(t, "key");
        let op = s(t, "operator");
        let effect = s(t, "effect");
        if !key.is_empty() {
            for msg in validation::qualified_name(key) {
                errs.invalid(format!("{p}.key"), json!(key), msg);
            }
        }
        if key.is_empty() && op != "Exists" {
            errs.invalid(
                format!("{p}.operator"),
                json!(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            );
        }
        if t.get("tolerationSeconds").is_some_and(|v| !v.is_null()) && effect != "NoExecute" {
            errs.invalid(
                format!("{p}.effect"),
                json!(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            );
        }
        match op {
            "Equal" | "" => {
                let value = s(t, "value");
                let msgs = validation::label_value(value);
                if !msgs.is_empty() {
                    errs.invalid(format!("{p}.operator"), json!(value), msgs.join(";"));
                }
            }
            "Exists" => {
                if !s(t, "value").is_empty() {
                    errs.invalid(format!("{p}.operator"), t.clone(), "value must be empty when `operator` is 'Exists'");
                }
            }
            other => errs.not_supported(format!("{p}.operator"), json!(other), &["Equal", "Exists"]),
        }
        if !effect.is_empty() && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            errs.not_supported(format!("{p}.effect"), json!(effect), &["NoSchedule", "PreferNoSchedule", "NoExecute"]);
        }
    }
}

fn validate_container(
    c: &Value,
    path: &dyn Display,
    kind: ContainerKind,
    volumes: &HashMap<String, &Value>,
    names: &mut HashSet<String>,
    errs: &mut FieldErrors,
) {
    let name = s(c, "name");
    if name.is_empty() {
        errs.required(format!("{path}.name"), "");
    } else {
        for msg in validation::dns1123_label(name) {
            errs.invalid(format!("{path}.name"), json!(name), msg);
        }
    }
    if !names.insert(name.to_string()) && !name.is_empty() {
        checks::duplicate(errs, format!("{path}.name"), json!(name));
    }
    if s(c, "image").is_empty() {
        errs.required(format!("{path}.image"), "");
    }
    let restart = c.get("restartPolicy").filter(|v| !v.is_null());
    match kind {
        ContainerKind::Init => {
            if let Some(r) = restart
                && r.as_str() != Some("Always")
            {
                errs.not_supported(format!("{path}.restartPolicy"), r.clone(), &["Always"]);
            }
            if restart.is_none() {
                for key in ["lifecycle", "livenessProbe", "readinessProbe", "startupProbe"] {
                    if c.get(key).is_some_and(|v| !v.is_null()) {
                        errs.forbidden(
                            format!("{path}.{key}"),
                            "may not be set for init containers without restartPolicy=Always",
                        );
                    }
                }
            }
        }
        ContainerKind::Regular => {
            if restart.is_some() {
                errs.forbidden(format!("{path}.restartPolicy"), "may not be set for non-init containers");
            }
        }
        ContainerKind::Ephemeral => {
            for key in ["ports", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "resources"] {
                let present = match c.get(key) {
                    Some(Value::Array(a)) => !a.is_empty(),
                    Some(Value::Object(o)) => !o.is_empty(),
                    Some(Value::Null) | None => false,
                    Some(_) => true,
                };
                if present {
                    errs.forbidden(format!("{path}.{key}"), "cannot be set for an Ephemeral Container");
                }
            }
        }
    }
    for (key, liveness_like) in [("livenessProbe", true), ("readinessProbe", false), ("startupProbe", true)] {
        if let Some(p) = c.get(key).filter(|v| v.is_object()) {
            validate_probe(p, &Field(path, key), liveness_like, errs);
        }
    }
    if kind != ContainerKind::Ephemeral {
        validate_container_ports(arr(c, "ports"), &Field(path, "ports"), errs);
    }
    validate_env(arr(c, "env"), &Field(path, "env"), errs);
    validate_env_from(arr(c, "envFrom"), &Field(path, "envFrom"), errs);
    validate_volume_mounts(arr(c, "volumeMounts"), &Field(path, "volumeMounts"), volumes, errs);
    if let Some(res) = c.get("resources") {
        validate_resources(res, &Field(path, "resources"), errs);
    }
    match s(c, "terminationMessagePolicy") {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.required(format!("{path}.terminationMessagePolicy"), ""),
        other => errs.not_supported(
            format!("{path}.terminationMessagePolicy"),
            json!(other),
            &["File", "FallbackToLogsOnError"],
        ),
    }
    match s(c, "imagePullPolicy") {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.required(format!("{path}.imagePullPolicy"), ""),
        other => {
            errs.not_supported(format!("{path}.imagePullPolicy"), json!(other), &["Always", "IfNotPresent", "Never"])
        }
    }
}

/// Container ports (`validateContainerPorts`): names unique per container, numbers in range.
fn validate_container_ports(ports: &[Value], path: &dyn Display, errs: &mut FieldErrors) {
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let ip = Index(path, i);
        let name = s(p, "name");
        if !name.is_empty() {
            let msgs = checks::port_name(name);
            if !msgs.is_empty() {
                for msg in msgs {
                    errs.invalid(format!("{ip}.name"), json!(name), msg);
                }
            } else if !names.insert(name) {
                checks::duplicate(errs, format!("{ip}.name"), json!(name));
            }
        }
        match int(p, "containerPort").unwrap_or(0) {
            0 => errs.required(format!("{ip}.containerPort"), ""),
            n => {
                for msg in checks::port_num(n) {
                    errs.invalid(format!("{ip}.containerPort"), json!(n), msg);
                }
            }
        }
        let host = int(p, "hostPort").unwrap_or(0);
        if host != 0 {
            for msg in checks::port_num(host) {
                errs.invalid(format!("{ip}.hostPort"), json!(host), msg);
            }
        }
        validate_protocol(p.get("protocol"), &Field(&ip, "protocol"), errs);
        let host_ip = s(p, "hostIP");
        if !host_ip.is_empty() {
            checks::check_ip(host_ip, &Field(&ip, "hostIP"), errs);
        }
    }
}

/// `TCP`, `UDP` or `SCTP`.
pub(crate) fn validate_protocol(v: Option<&Value>, field: &dyn Display, errs: &mut FieldErrors) {
    match v.and_then(Value::as_str).unwrap_or("") {
        "TCP" | "UDP" | "SCTP" => {}
        "" => errs.required(field, ""),
        other => errs.not_supported(field, json!(other), &["SCTP", "TCP", "UDP"]),
    }
}

fn validate_probe(p: &Value, path: &dyn Display, liveness_like: bool, errs: &mut FieldErrors) {
    let handlers: Vec<&str> = ["exec", "httpGet", "tcpSocket", "grpc"]
        .into_iter()
        .filter(|k| p.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    match handlers.as_slice() {
        [] => errs.required(path, "must specify a handler type"),
        [_] => {}
        [_, rest @ ..] => {
            for h in rest {
                errs.forbidden(format!("{path}.{h}"), "may not specify more than 1 handler type");
            }
        }
    }
    for key in ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"] {
        if let Some(v) = int(p, key)
            && v < 0
        {
            errs.invalid(format!("{path}.{key}"), json!(v), "must be greater than or equal to 0");
        }
    }
    if liveness_like && let Some(st) = int(p, "successThreshold").filter(|v| *v != 1) {
        errs.invalid(format!("{path}.successThreshold"), json!(st), "must be 1");
    }
    if let Some(tg) = int(p, "terminationGracePeriodSeconds")
        && tg <= 0
    {
        errs.invalid(format!("{path}.terminationGracePeriodSeconds"), json!(tg), "must be greater than 0");
    }
    for h in ["httpGet", "tcpSocket"] {
        if let Some(hv) = p.get(h).filter(|v| v.is_object()) {
            let port = hv.get("port").cloned().unwrap_or(json!(0));
            checks::check_port_num_or_name(&port, &format!("{path}.{h}.port"), errs);
        }
    }
    if let Some(get) = p.get("httpGet").filter(|v| v.is_object()) {
        match s(get, "scheme") {
            "HTTP" | "HTTPS" | "" => {}
            other => errs.not_supported(format!("{path}.httpGet.scheme"), json!(other), &["HTTP", "HTTPS"]),
        }
    }
    if let Some(grpc) = p.get("grpc").filter(|v| v.is_object()) {
        let port = int(grpc, "port").unwrap_or(0);
        for msg in checks::port_num(port) {
            errs.invalid(format!("{path}.grpc.port"), json!(port), msg);
        }
    }
}

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

fn validate_env(env: &[Value], path: &dyn Display, errs: &mut FieldErrors) {
    for (i, e) in env.iter().enumerate() {
        let ip = Index(path, i);
        let name = s(e, "name");
        if name.is_empty() {
            errs.required(format!("{ip}.name"), "");
        } else {
            for msg in checks::env_var_name(name) {
                errs.invalid(format!("{ip}.name"), json!(name), msg);
            }
        }
        let Some(from) = e.get("valueFrom").filter(|v| v.is_object()) else { continue };
        let fp = Field(&ip, "valueFrom");
        let sources: Vec<&str> = ["fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef", "fileKeyRef"]
            .into_iter()
            .filter(|k| from.get(*k).is_some_and(|v| !v.is_null()))
            .collect();
        if let Some(fr) = from.get("fieldRef").filter(|v| v.is_object()) {
            let field_path = s(fr, "fieldPath");
            if s(fr, "apiVersion").is_empty() {
                errs.required(format!("{fp}.fieldRef.apiVersion"), "");
            }
            if field_path.is_empty() {
                errs.required(format!("{fp}.fieldRef.fieldPath"), "");
            } else if !ENV_FIELD_PATHS.contains(&field_path)
                && !field_path.starts_with("metadata.labels[")
                && !field_path.starts_with("metadata.annotations[")
            {
                errs.not_supported(format!("{fp}.fieldRef.fieldPath"), json!(field_path), ENV_FIELD_PATHS);
            }
        }
        if let Some(rf) = from.get("resourceFieldRef").filter(|v| v.is_object())
            && s(rf, "resource").is_empty()
        {
            errs.required(format!("{fp}.resourceFieldRef.resource"), "");
        }
        for key in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(r) = from.get(key).filter(|v| v.is_object()) {
                if s(r, "name").is_empty() {
                    errs.required(format!("{fp}.{key}.name"), "");
                }
                let k = s(r, "key");
                if k.is_empty() {
                    errs.required(format!("{fp}.{key}.key"), "");
                } else {
                    for msg in checks::config_key(k) {
                        errs.invalid(format!("{fp}.{key}.key"), json!(k), msg);
                    }
                }
            }
        }
        if sources.is_empty() {
            errs.invalid(
                &fp,
                json!(""),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            );
        } else if !s(e, "value").is_empty() {
            errs.invalid(&fp, json!(""), "may not be specified when `value` is not empty");
        } else if sources.len() > 1 {
            errs.invalid(&fp, json!(""), "may not have more than one field specified at a time");
        }
    }
}

fn validate_env_from(env_from: &[Value], path: &dyn Display, errs: &mut FieldErrors) {
    for (i, e) in env_from.iter().enumerate() {
        let ip = Index(path, i);
        let prefix = s(e, "prefix");
        if !prefix.is_empty() {
            for msg in checks::env_var_name(prefix) {
                errs.invalid(format!("{ip}.prefix"), json!(prefix), msg);
            }
        }
        let mut count = 0;
        for key in ["configMapRef", "secretRef"] {
            if let Some(r) = e.get(key).filter(|v| !v.is_null()) {
                count += 1;
                let name = s(r, "name");
                if name.is_empty() {
                    errs.required(format!("{ip}.{key}.name"), "");
                } else {
                    for msg in validation::dns1123_subdomain(name) {
                        errs.invalid(format!("{ip}.{key}.name"), json!(name), msg);
                    }
                }
            }
        }
        match count {
            0 => errs.invalid(path, json!(""), "must specify one of: `configMapRef` or `secretRef`"),
            1 => {}
            _ => errs.invalid(path, json!(""), "may not have more than one field specified at a time"),
        }
    }
}

fn validate_volume_mounts(
    mounts: &[Value],
    path: &dyn Display,
    volumes: &HashMap<String, &Value>,
    errs: &mut FieldErrors,
) {
    let mut mount_points = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let ip = Index(path, i);
        let name = s(m, "name");
        if name.is_empty() {
            errs.required(format!("{ip}.name"), "");
        }
        if !volumes.contains_key(name) {
            checks::not_found(errs, format!("{ip}.name"), json!(name));
        }
        let mount_path = s(m, "mountPath");
        if mount_path.is_empty() {
            errs.required(format!("{ip}.mountPath"), "");
        }
        if !mount_points.insert(mount_path) {
            errs.invalid(format!("{ip}.mountPath"), json!(mount_path), "must be unique");
        }
        let sub_path = s(m, "subPath");
        if !sub_path.is_empty() {
            check_relative_path(sub_path, &Field(path, "subPath"), errs);
        }
    }
}

/// A path that must stay inside its parent: relative and without `..` elements.
fn check_relative_path(p: &str, field: &dyn Display, errs: &mut FieldErrors) {
    if p.starts_with('/') {
        errs.invalid(field, json!(p), "must be a relative path");
    }
    if p.split('/').any(|part| part == "..") {
        errs.invalid(field, json!(p), "must not contain '..'");
    }
}

/// Whether requests may be lower than limits (not for hugepages and extended resources).
fn overcommit_allowed(name: &str) -> bool {
    let native = !name.contains('/') || name.contains("kubernetes.io/");
    native && !name.starts_with("hugepages-")
}

/// Container (or pod-level) `resources`: names, quantities and requests ≤ limits.
pub(crate) fn validate_resources(res: &Value, path: &dyn Display, errs: &mut FieldErrors) {
    let lim_path = Field(path, "limits");
    let req_path = Field(path, "requests");
    for key in ["limits", "requests"] {
        if let Some(m) = checks::obj(res, key) {
            for name in m.keys() {
                checks::check_container_resource_name(name, &Key(&Field(path, key), name), errs);
            }
        }
    }
    let limits: HashMap<String, Quantity> =
        checks::check_resource_list(res.get("limits"), &lim_path, errs).into_iter().collect();
    let requests = checks::check_resource_list(res.get("requests"), &req_path, errs);
    for (name, q) in &requests {
        match limits.get(name) {
            Some(lim) if q != lim && !overcommit_allowed(name) => {
                errs.invalid(&req_path, json!(q.to_string()), format!("must be equal to {name} limit of {lim}"));
            }
            Some(lim) if q > lim => {
                errs.invalid(
                    &req_path,
                    json!(q.to_string()),
                    format!("must be less than or equal to {name} limit of {lim}"),
                );
            }
            None if !overcommit_allowed(name) => {
                errs.required(&lim_path, "Limit must be set for non overcommitable resources");
            }
            _ => {}
        }
    }
}

/// Validates volumes; returns the names of the valid ones (mounts may only refer to those).
fn validate_volumes<'a>(
    volumes: &'a [Value],
    path: &dyn Display,
    errs: &mut FieldErrors,
) -> HashMap<String, &'a Value> {
    let mut valid = HashMap::new();
    let mut seen = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let ip = Index(path, i);
        let mut own = FieldErrors::default();
        validate_volume_source(v, &ip, &mut own);
        let name = s(v, "name");
        if name.is_empty() {
            own.required(format!("{ip}.name"), "");
        } else {
            for msg in validation::dns1123_label(name) {
                own.invalid(format!("{ip}.name"), json!(name), msg);
            }
        }
        if seen.contains(name) {
            checks::duplicate(&mut own, format!("{ip}.name"), json!(name));
        }
        seen.insert(name);
        if own.is_empty() {
            valid.insert(name.to_string(), v);
        } else {
            errs.0.extend(own.0);
        }
    }
    valid
}

fn validate_volume_source(v: &Value, path: &dyn Display, errs: &mut FieldErrors) {
    let present: Vec<&str> =
        VOLUME_SOURCES.iter().copied().filter(|k| v.get(*k).is_some_and(|x| !x.is_null())).collect();
    match present.as_slice() {
        [] => {
            errs.required(path, "must specify a volume type");
            return;
        }
        [_] => {}
        [_, rest @ ..] => {
            for k in rest {
                errs.forbidden(format!("{path}.{k}"), "may not specify more than 1 volume type");
            }
        }
    }
    let src = |k: &str| v.get(k).filter(|x| x.is_object());
    if let Some(hp) = src("hostPath") {
        if s(hp, "path").is_empty() {
            errs.required(format!("{path}.hostPath.path"), "");
        }
        let t = s(hp, "type");
        const TYPES: &[&str] =
            &["", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", "Socket"];
        if !TYPES.contains(&t) {
            errs.not_supported(format!("{path}.hostPath.type"), json!(t), TYPES);
        }
    }
    if let Some(ed) = src("emptyDir") {
        let medium = s(ed, "medium");
        if !matches!(medium, "" | "Memory" | "HugePages") && !medium.starts_with("HugePages-") {
            errs.not_supported(format!("{path}.emptyDir.medium"), json!(medium), &["", "Memory", "HugePages"]);
        }
        if let Some(limit) = ed.get("sizeLimit").filter(|l| !l.is_null()) {
            match Quantity::from_json(limit) {
                Ok(q) if q.is_negative() => errs.invalid(
                    format!("{path}.emptyDir.sizeLimit"),
                    json!(q.to_string()),
                    "must be greater than or equal to 0",
                ),
                Ok(_) => {}
                Err(msg) => errs.invalid(format!("{path}.emptyDir.sizeLimit"), limit.clone(), msg),
            }
        }
    }
    for (key, name_key) in [("secret", "secretName"), ("configMap", "name")] {
        if let Some(sv) = src(key) {
            if s(sv, name_key).is_empty() {
                errs.required(format!("{path}.{key}.{name_key}"), "");
            }
            validate_key_to_path_items(sv, &Field(path, key), errs);
        }
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(mode) = src(key).and_then(|sv| int(sv, "defaultMode"))
            && !(0..=0o777).contains(&mode)
        {
            errs.invalid(
                format!("{path}.{key}.defaultMode"),
                json!(mode),
                "must be a number between 0 and 0777 (octal), both inclusive",
            );
        }
    }
    if let Some(pvc) = src("persistentVolumeClaim")
        && s(pvc, "claimName").is_empty()
    {
        errs.required(format!("{path}.persistentVolumeClaim.claimName"), "");
    }
    if let Some(nfs) = src("nfs") {
        if s(nfs, "server").is_empty() {
            errs.required(format!("{path}.nfs.server"), "");
        }
        let p = s(nfs, "path");
        if p.is_empty() {
            errs.required(format!("{path}.nfs.path"), "");
        } else if !p.starts_with('/') {
            errs.invalid(format!("{path}.nfs.path"), json!(p), "must be an absolute path");
        }
    }
    if let Some(csi) = src("csi")
        && s(csi, "driver").is_empty()
    {
        errs.required(format!("{path}.csi.driver"), "");
    }
    if let Some(img) = src("image")
        && s(img, "reference").is_empty()
    {
        errs.required(format!("{path}.image.reference"), "");
    }
    if let Some(eph) = src("ephemeral")
        && eph.get("volumeClaimTemplate").is_none_or(Value::is_null)
    {
        errs.required(format!("{path}.ephemeral.volumeClaimTemplate"), "");
    }
    if let Some(proj) = src("projected") {
        for (i, source) in arr(proj, "sources").iter().enumerate() {
            let sp = Index(&Field(&Field(path, "projected"), "sources"), i);
            if let Some(tok) = source.get("serviceAccountToken").filter(|t| t.is_object()) {
                if s(tok, "path").is_empty() {
                    errs.required(format!("{sp}.serviceAccountToken.path"), "");
                }
                if let Some(exp) = int(tok, "expirationSeconds") {
                    if exp < 600 {
                        errs.invalid(
                            format!("{sp}.serviceAccountToken.expirationSeconds"),
                            json!(exp),
                            "may not specify a duration less than 10 minutes",
                        );
                    } else if exp > 1 << 32 {
                        errs.invalid(
                            format!("{sp}.serviceAccountToken.expirationSeconds"),
                            json!(exp),
                            "may not specify a duration larger than 2^32 seconds",
                        );
                    }
                }
            }
        }
    }
}

fn validate_key_to_path_items(src: &Value, path: &dyn Display, errs: &mut FieldErrors) {
    for (i, item) in arr(src, "items").iter().enumerate() {
        let ip = Index(&Field(path, "items"), i);
        if s(item, "key").is_empty() {
            errs.required(format!("{ip}.key"), "");
        }
        let p = s(item, "path");
        if p.is_empty() {
            errs.required(format!("{ip}.path"), "");
        } else {
            check_relative_path(p, &Field(&ip, "path"), errs);
        }
        if let Some(mode) = int(item, "mode")
            && !(0..=0o777).contains(&mode)
        {
            errs.invalid(
                format!("{ip}.mode"),
                json!(mode),
                "must be a number between 0 and 0777 (octal), both inclusive",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{default_pod_spec, default_pod_template};
    use super::*;

    fn errors(spec: &Value) -> Vec<String> {
        let mut errs = FieldErrors::default();
        validate_pod_spec(spec, &"spec", &mut errs);
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn missing_containers_and_image() {
        assert_eq!(
            errors(&json!({"restartPolicy": "Always", "dnsPolicy": "ClusterFirst"})),
            vec!["spec.containers: Required value"]
        );
        let mut spec = json!({"containers": [{"name": "web"}]});
        default_pod_spec(&mut spec);
        assert_eq!(errors(&spec), vec!["spec.containers[0].image: Required value"]);
    }

    #[test]
    fn bad_and_duplicate_container_names() {
        let mut spec = json!({"containers": [{"name": "Web_1", "image": "nginx"}, {"name": "db", "image": "pg"}],
            "initContainers": [{"name": "db", "image": "busybox"}]});
        default_pod_spec(&mut spec);
        let errs = errors(&spec);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with(
            "spec.containers[0].name: Invalid value: \"Web_1\": a lowercase RFC 1123 label must consist of"
        ));
        assert_eq!(errs[1], "spec.initContainers[0].name: Duplicate value: \"db\"");
    }

    #[test]
    fn port_rules() {
        let mut spec = json!({"containers": [{"name": "web", "image": "nginx", "ports": [
            {"name": "http", "containerPort": 80},
            {"name": "http", "containerPort": 8080},
            {"containerPort": 70000, "protocol": "ICMP"}
        ]}]});
        default_pod_spec(&mut spec);
        assert_eq!(
            errors(&spec),
            vec![
                "spec.containers[0].ports[1].name: Duplicate value: \"http\"",
                "spec.containers[0].ports[2].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ]
        );
    }

    #[test]
    fn volumes_mounts_restart_policy_and_resources() {
        let mut spec = json!({
            "restartPolicy": "Sometimes",
            "containers": [{"name": "web", "image": "nginx",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "cache", "mountPath": "/data"}],
                "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}}]
        });
        default_pod_spec(&mut spec);
        assert_eq!(
            errors(&spec),
            vec![
                "spec.volumes[1].name: Duplicate value: \"data\"",
                "spec.containers[0].volumeMounts[1].name: Invalid value: \"cache\": not found",
                "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/data\": must be unique",
                "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ]
        );
    }

    #[test]
    fn defaulted_deployment_template_is_valid() {
        let mut tmpl = json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}});
        default_pod_template(&mut tmpl);
        let mut errs = FieldErrors::default();
        validate_pod_template(&tmpl, &"spec.template", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn template_labels_are_validated() {
        let mut tmpl =
            json!({"metadata": {"labels": {"app": "-bad"}}, "spec": {"containers": [{"name": "a", "image": "b"}]}});
        default_pod_template(&mut tmpl);
        let mut errs = FieldErrors::default();
        validate_pod_template(&tmpl, &"spec.template", &mut errs);
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].field, "spec.template.labels");
    }
}
