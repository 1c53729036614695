//! Pod spec defaulting and validation shared by Pods and every pod template (Deployments,
//! ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs).
//!
//! [`default_pod_spec`] and [`default_pod_template`] fill what Kubernetes' `SetDefaults_PodSpec`
//! and the generated object defaulters fill (container, probe and volume defaults, canonical
//! quantities). [`validate_pod_spec`] and [`validate_pod_template`] check what `ValidatePodSpec`
//! and `ValidatePodTemplateSpec` check, with the same paths and messages. Rules that only apply
//! to Pod objects (requests from limits, `enableServiceLinks`, admission defaults, update
//! immutability) live in `pods.rs`.
//!
//! The submodules [`checks`] (value checks, JSON helpers) and [`quantity`] (resource
//! quantities) are shared by every core/v1 strategy.

pub(crate) mod checks;
pub(crate) mod quantity;
mod validate;

pub(crate) use validate::{validate_pod_spec, validate_pod_template, validate_protocol, validate_resources};

use serde_json::{Map, Value, json};

use checks::{child_obj, default_field, is_unset, items_mut};
use quantity::Quantity;

// ---- defaulting --------------------------------------------------------------------------------

/// Defaults a pod template (`metadata` + `spec`), as stored in workload objects.
pub(crate) fn default_pod_template(tmpl: &mut Value) {
    let Some(m) = tmpl.as_object_mut() else { return };
    if let Some(meta) = child_obj(m, "metadata") {
        // Kubernetes ≥ 1.33 no longer serialises a zero creationTimestamp.
        if meta.get("creationTimestamp").is_some_and(Value::is_null) {
            meta.remove("creationTimestamp");
        }
    }
    if child_obj(m, "spec").is_some()
        && let Some(spec) = m.get_mut("spec")
    {
        default_pod_spec(spec);
    }
}

/// Defaults a pod spec (`SetDefaults_PodSpec` plus the per-field defaulters).
pub(crate) fn default_pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else { return };
    default_field(m, "dnsPolicy", json!("ClusterFirst"));
    default_field(m, "restartPolicy", json!("Always"));
    child_obj(m, "securityContext");
    default_field(m, "terminationGracePeriodSeconds", json!(30));
    default_field(m, "schedulerName", json!("default-scheduler"));
    // The deprecated `serviceAccount` mirrors `serviceAccountName` (v1 conversion).
    if is_unset(m, "serviceAccountName")
        && let Some(sa) = m.get("serviceAccount").and_then(Value::as_str).filter(|s| !s.is_empty())
    {
        let sa = sa.to_string();
        m.insert("serviceAccountName".into(), json!(sa));
    }
    match m.get("serviceAccountName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(sa) => {
            let sa = sa.to_string();
            m.insert("serviceAccount".into(), json!(sa));
        }
        None => {
            m.remove("serviceAccount");
        }
    }
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for c in items_mut(m, key) {
            default_container(c);
        }
    }
    for v in items_mut(m, "volumes") {
        default_volume(v);
    }
    if let Some(overhead) = m.get_mut("overhead") {
        quantity::canonicalize_list(Some(overhead), true);
    }
    if let Some(res) = m.get_mut("resources").and_then(Value::as_object_mut) {
        quantity::canonicalize_list(res.get_mut("limits"), true);
        quantity::canonicalize_list(res.get_mut("requests"), true);
    }
}

fn default_container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    if is_unset(m, "imagePullPolicy") {
        let policy = pull_policy_for(m.get("image").and_then(Value::as_str).unwrap_or(""));
        m.insert("imagePullPolicy".into(), json!(policy));
    }
    default_field(m, "terminationMessagePath", json!("/dev/termination-log"));
    default_field(m, "terminationMessagePolicy", json!("File"));
    if let Some(res) = child_obj(m, "resources") {
        quantity::canonicalize_list(res.get_mut("limits"), true);
        quantity::canonicalize_list(res.get_mut("requests"), true);
    }
    for p in items_mut(m, "ports") {
        if let Some(p) = p.as_object_mut() {
            default_field(p, "protocol", json!("TCP"));
        }
    }
    for e in items_mut(m, "env") {
        if let Some(fr) = e.pointer_mut("/valueFrom/fieldRef").and_then(Value::as_object_mut) {
            default_field(fr, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe).and_then(Value::as_object_mut) {
            default_probe(p);
        }
    }
    if let Some(lc) = m.get_mut("lifecycle").and_then(Value::as_object_mut) {
        for hook in ["postStart", "preStop"] {
            if let Some(get) = lc.get_mut(hook).and_then(|h| h.get_mut("httpGet")).and_then(Value::as_object_mut) {
                default_http_get(get);
            }
        }
    }
}

/// Sets an integer that Go treats as unset when zero.
fn default_nonzero(m: &mut Map<String, Value>, key: &str, value: i64) {
    if m.get(key).and_then(Value::as_i64).unwrap_or(0) == 0 {
        m.insert(key.into(), json!(value));
    }
}

fn default_probe(p: &mut Map<String, Value>) {
    default_nonzero(p, "timeoutSeconds", 1);
    default_nonzero(p, "periodSeconds", 10);
    default_nonzero(p, "successThreshold", 1);
    default_nonzero(p, "failureThreshold", 3);
    if let Some(get) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
        default_http_get(get);
    }
    if let Some(grpc) = p.get_mut("grpc").and_then(Value::as_object_mut)
        && grpc.get("service").is_none_or(Value::is_null)
    {
        grpc.insert("service".into(), json!(""));
    }
}

fn default_http_get(get: &mut Map<String, Value>) {
    default_field(get, "path", json!("/"));
    default_field(get, "scheme", json!("HTTP"));
}

/// Every volume source field of `VolumeSource`.
pub(crate) const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn set_if_missing(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.into(), value);
    }
}

fn default_volume(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    if !VOLUME_SOURCES.iter().any(|k| m.get(*k).is_some_and(|x| !x.is_null())) {
        m.insert("emptyDir".into(), json!({}));
    }
    if let Some(hp) = m.get_mut("hostPath").and_then(Value::as_object_mut) {
        set_if_missing(hp, "type", json!(""));
    }
    if let Some(ed) = m.get_mut("emptyDir").and_then(Value::as_object_mut)
        && let Some(limit) = ed.get("sizeLimit").and_then(|l| Quantity::from_json(l).ok())
    {
        ed.insert("sizeLimit".into(), json!(limit.to_string()));
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(src) = m.get_mut(key).and_then(Value::as_object_mut) {
            set_if_missing(src, "defaultMode", json!(420));
        }
    }
    if let Some(items) = m.get_mut("downwardAPI").and_then(|d| d.get_mut("items")).and_then(Value::as_array_mut) {
        default_field_refs(items);
    }
    if let Some(sources) = m.get_mut("projected").and_then(|p| p.get_mut("sources")).and_then(Value::as_array_mut) {
        for src in sources {
            if let Some(items) =
                src.get_mut("downwardAPI").and_then(|d| d.get_mut("items")).and_then(Value::as_array_mut)
            {
                default_field_refs(items);
            }
            if let Some(tok) = src.get_mut("serviceAccountToken").and_then(Value::as_object_mut) {
                set_if_missing(tok, "expirationSeconds", json!(3600));
            }
        }
    }
    if let Some(iscsi) = m.get_mut("iscsi").and_then(Value::as_object_mut) {
        default_field(iscsi, "iscsiInterface", json!("default"));
    }
    if let Some(rbd) = m.get_mut("rbd").and_then(Value::as_object_mut) {
        default_field(rbd, "pool", json!("rbd"));
        default_field(rbd, "user", json!("admin"));
        default_field(rbd, "keyring", json!("/etc/ceph/keyring"));
    }
    if let Some(ad) = m.get_mut("azureDisk").and_then(Value::as_object_mut) {
        set_if_missing(ad, "cachingMode", json!("ReadWrite"));
        set_if_missing(ad, "kind", json!("Shared"));
        set_if_missing(ad, "fsType", json!("ext4"));
        set_if_missing(ad, "readOnly", json!(false));
    }
    if let Some(sio) = m.get_mut("scaleIO").and_then(Value::as_object_mut) {
        default_field(sio, "storageMode", json!("ThinProvisioned"));
        default_field(sio, "fsType", json!("xfs"));
    }
    if let Some(spec) = m.get_mut("ephemeral").and_then(|e| e.pointer_mut("/volumeClaimTemplate/spec")) {
        default_pvc_spec(spec);
    }
    if let Some(img) = m.get_mut("image").and_then(Value::as_object_mut)
        && is_unset(img, "pullPolicy")
    {
        let policy = pull_policy_for(img.get("reference").and_then(Value::as_str).unwrap_or(""));
        img.insert("pullPolicy".into(), json!(policy));
    }
}

fn default_field_refs(items: &mut [Value]) {
    for item in items {
        if let Some(fr) = item.get_mut("fieldRef").and_then(Value::as_object_mut) {
            default_field(fr, "apiVersion", json!("v1"));
        }
    }
}

/// Defaults a `PersistentVolumeClaimSpec` (also used by ephemeral volumes and StatefulSet
/// `volumeClaimTemplates`): `volumeMode: Filesystem`, canonical resource quantities.
pub(crate) fn default_pvc_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else { return };
    default_field(m, "volumeMode", json!("Filesystem"));
    if let Some(res) = m.get_mut("resources").and_then(Value::as_object_mut) {
        quantity::canonicalize_list(res.get_mut("limits"), true);
        quantity::canonicalize_list(res.get_mut("requests"), true);
    }
}

/// `Always` for `:latest` or untagged images, otherwise `IfNotPresent` (also for references
/// that do not parse, as Kubernetes does).
pub(crate) fn pull_policy_for(image: &str) -> &'static str {
    if image_tag(image).as_deref() == Some("latest") { "Always" } else { "IfNotPresent" }
}

/// The tag of an image reference as the Docker reference grammar reads it: `latest` when neither
/// tag nor digest is given, `""` with only a digest, `None` when the reference does not parse.
fn image_tag(image: &str) -> Option<String> {
    if image.is_empty() {
        return None;
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let (remainder, tag) = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    };
    let path = match remainder.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first => {
            rest
        }
        _ => remainder,
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    if !path.split('/').all(component_ok) {
        return None;
    }
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        return ok.then(|| t.to_string());
    }
    match digest {
        Some(d) if d.contains(':') => Some(String::new()),
        Some(_) => None,
        None => Some("latest".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(pull_policy_for("nginx"), "Always");
        assert_eq!(pull_policy_for("nginx:latest"), "Always");
        assert_eq!(pull_policy_for("nginx:1.27"), "IfNotPresent");
        assert_eq!(pull_policy_for("busybox:local"), "IfNotPresent");
        assert_eq!(pull_policy_for("localhost:5000/web"), "Always");
        assert_eq!(pull_policy_for("localhost:5000/web:v2"), "IfNotPresent");
        assert_eq!(pull_policy_for("registry.k8s.io/pause@sha256:abcd"), "IfNotPresent");
        assert_eq!(pull_policy_for("Bad/Image"), "IfNotPresent");
    }

    #[test]
    fn deployment_template_defaults_match_kubectl_output() {
        // `kubectl create deployment web --image=nginx` as stored by Kubernetes 1.35.
        let mut tmpl = json!({
            "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}
        });
        default_pod_template(&mut tmpl);
        assert_eq!(
            tmpl,
            json!({
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "nginx",
                        "image": "nginx",
                        "imagePullPolicy": "Always",
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"
                    }],
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "schedulerName": "default-scheduler",
                    "securityContext": {},
                    "terminationGracePeriodSeconds": 30
                }
            })
        );
        // Defaulting is idempotent.
        let again = {
            let mut t = tmpl.clone();
            default_pod_template(&mut t);
            t
        };
        assert_eq!(again, tmpl);
    }

    #[test]
    fn nested_defaults_probes_volumes_ports_and_quantities() {
        let mut spec = json!({
            "serviceAccount": "builder",
            "containers": [{
                "name": "app", "image": "app:v1",
                "ports": [{"containerPort": 8080}],
                "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"limits": {"cpu": "1000m", "memory": "1024Mi"}, "requests": {"cpu": 0.5}},
                "livenessProbe": {"httpGet": {"port": 8080}},
                "readinessProbe": {"grpc": {"port": 9000}}
            }],
            "volumes": [
                {"name": "scratch"},
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "host", "hostPath": {"path": "/var/log"}}
            ]
        });
        default_pod_spec(&mut spec);
        let c = &spec["containers"][0];
        assert_eq!(spec["serviceAccountName"], "builder");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(c["resources"], json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}));
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["readinessProbe"]["grpc"]["service"], "");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        assert_eq!(spec["volumes"][2]["hostPath"]["type"], "");
    }
}
