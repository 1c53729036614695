//! `cargo xtask gen-proto`: generates `control-plane/src/protobuf/schema.rs` from the sources of
//! the `k8s-pb` and `k8s-openapi` crates.
//!
//! - k8s-pb (prost output) gives each message's fields: tag, wire kind, repeated or map, and the
//!   doc-comment markers `+patchStrategy`, `+patchMergeKey`, `+listType`, `+listMapKey`.
//! - k8s-openapi's serde impls give the exact JSON field names (`podIP`, `clusterIPs`), the exact
//!   type names (`HTTPIngressPath`, where prost says `HttpIngressPath`) and which fields are
//!   required (not `Option`: no `omitempty`, so Kubernetes' JSON prints them even when zero). A
//!   message field that the JSON type lacks but whose fields it has is a Go embedded struct
//!   (`json:",inline"`, e.g. `Volume.volumeSource`).
//! - [`POINTER_FIELDS`] says which scalar fields are Go pointers, so that a zero on the wire was set
//!   on purpose and must survive decoding (the protobuf schema cannot tell).
//!
//! Only the packages in [`ROOT_PACKAGES`] and whatever they reference are written out. The output
//! is deterministic and formatted with rustfmt. `PROTOGEN_VERBOSE=1` lists the JSON names guessed
//! by lowerCamelCase (types k8s-openapi lacks) and the pointer fields the protos do not have.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const OUTPUT: &str = "control-plane/src/protobuf/schema.rs";

/// Proto packages written out in full (plus every message they reference).
const ROOT_PACKAGES: &[&str] = &[
    "k8s.io.api.core.v1",
    "k8s.io.api.apps.v1",
    "k8s.io.api.batch.v1",
    "k8s.io.api.autoscaling.v1",
    "k8s.io.api.autoscaling.v2",
    "k8s.io.api.networking.v1",
    "k8s.io.api.discovery.v1",
    "k8s.io.api.storage.v1",
    "k8s.io.api.rbac.v1",
    "k8s.io.api.coordination.v1",
    "k8s.io.api.events.v1",
    "k8s.io.api.policy.v1",
    "k8s.io.api.scheduling.v1",
    "k8s.io.api.authentication.v1",
    "k8s.io.apimachinery.pkg.apis.meta.v1",
    "k8s.io.apimachinery.pkg.api.resource",
    "k8s.io.apimachinery.pkg.util.intstr",
    "k8s.io.apimachinery.pkg.runtime",
];

/// Messages the codec converts by hand, and the schema kind written in place of a reference.
const WELL_KNOWN: &[(&str, &str)] = &[
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Time", "Time"),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime", "MicroTime"),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Duration", "Duration"),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1", "FieldsV1"),
    ("k8s.io.apimachinery.pkg.api.resource.Quantity", "Quantity"),
    ("k8s.io.apimachinery.pkg.util.intstr.IntOrString", "IntOrString"),
    ("k8s.io.apimachinery.pkg.runtime.RawExtension", "RawExt"),
];

/// JSON names for fields of types k8s-openapi does not know, where lowerCamelCase of the prost name
/// gets an acronym wrong. Keyed by "<proto message>.<prost field>".
const JSON_RENAMES: &[(&str, &str)] =
    &[("k8s.io.api.core.v1.PodLogOptions.insecure_skip_tls_verify_backend", "insecureSkipTLSVerifyBackend")];

/// Go pointer fields of scalar type (`*int32`, `*bool`, `*string`, `*intstr.IntOrString`, string
/// enums...), by proto message and JSON name. gogo-protobuf writes non-pointer fields even when
/// they are zero, and Kubernetes' JSON omits those (`omitempty`), so the decoder drops zero scalars;
/// for these fields a zero on the wire means the client set it (`replicas: 0`,
/// `automountServiceAccountToken: false`, `storageClassName: ""`) and it is kept.
///
/// Compiled by reading the Go API types (`k8s.io/api/<group>/<version>/types.go` and
/// `k8s.io/apimachinery/pkg/apis/meta/v1/types.go`); entries the protos do not have are skipped.
const POINTER_FIELDS: &[(&str, &[&str])] = &[
    ("k8s.io.api.core.v1.PersistentVolumeSpec", &["volumeMode", "volumeAttributesClassName"]),
    ("k8s.io.api.core.v1.PersistentVolumeClaimSpec", &["storageClassName", "volumeMode", "volumeAttributesClassName"]),
    ("k8s.io.api.core.v1.TypedObjectReference", &["apiGroup", "namespace"]),
    ("k8s.io.api.core.v1.PersistentVolumeClaimStatus", &["currentVolumeAttributesClassName"]),
    ("k8s.io.api.core.v1.HostPathVolumeSource", &["type"]),
    ("k8s.io.api.core.v1.EmptyDirVolumeSource", &["mode"]),
    ("k8s.io.api.core.v1.GlusterfsPersistentVolumeSource", &["endpointsNamespace"]),
    ("k8s.io.api.core.v1.SecretVolumeSource", &["defaultMode", "optional", "defaultUser"]),
    ("k8s.io.api.core.v1.SecretProjection", &["optional"]),
    ("k8s.io.api.core.v1.ISCSIVolumeSource", &["initiatorName"]),
    ("k8s.io.api.core.v1.ISCSIPersistentVolumeSource", &["initiatorName"]),
    ("k8s.io.api.core.v1.FCVolumeSource", &["lun"]),
    ("k8s.io.api.core.v1.AzureFilePersistentVolumeSource", &["secretNamespace"]),
    ("k8s.io.api.core.v1.AzureDiskVolumeSource", &["cachingMode", "fsType", "readOnly", "kind"]),
    ("k8s.io.api.core.v1.ConfigMapVolumeSource", &["defaultMode", "optional", "defaultUser"]),
    ("k8s.io.api.core.v1.ConfigMapProjection", &["optional"]),
    ("k8s.io.api.core.v1.ServiceAccountTokenProjection", &["expirationSeconds", "user"]),
    ("k8s.io.api.core.v1.ClusterTrustBundleProjection", &["name", "signerName", "optional", "user"]),
    ("k8s.io.api.core.v1.PodCertificateProjection", &["maxExpirationSeconds", "user"]),
    ("k8s.io.api.core.v1.ProjectedVolumeSource", &["defaultMode", "defaultUser"]),
    ("k8s.io.api.core.v1.KeyToPath", &["mode", "user"]),
    ("k8s.io.api.core.v1.LocalVolumeSource", &["fsType"]),
    ("k8s.io.api.core.v1.CSIVolumeSource", &["readOnly", "fsType"]),
    ("k8s.io.api.core.v1.VolumeMount", &["recursiveReadOnly", "mountPropagation"]),
    ("k8s.io.api.core.v1.FileKeySelector", &["optional"]),
    ("k8s.io.api.core.v1.ConfigMapKeySelector", &["optional"]),
    ("k8s.io.api.core.v1.SecretKeySelector", &["optional"]),
    ("k8s.io.api.core.v1.ConfigMapEnvSource", &["optional"]),
    ("k8s.io.api.core.v1.SecretEnvSource", &["optional"]),
    ("k8s.io.api.core.v1.HTTPGetAction", &["protocol"]),
    ("k8s.io.api.core.v1.GRPCAction", &["service", "mode"]),
    ("k8s.io.api.core.v1.Probe", &["terminationGracePeriodSeconds"]),
    ("k8s.io.api.core.v1.Container", &["restartPolicy"]),
    ("k8s.io.api.core.v1.Lifecycle", &["stopSignal"]),
    ("k8s.io.api.core.v1.ContainerStatus", &["started", "stopSignal"]),
    ("k8s.io.api.core.v1.ResourceHealth", &["message"]),
    ("k8s.io.api.core.v1.VolumeMountStatus", &["recursiveReadOnly"]),
    ("k8s.io.api.core.v1.Toleration", &["tolerationSeconds"]),
    (
        "k8s.io.api.core.v1.PodSpec",
        &[
            "terminationGracePeriodSeconds",
            "activeDeadlineSeconds",
            "automountServiceAccountToken",
            "shareProcessNamespace",
            "priority",
            "runtimeClassName",
            "enableServiceLinks",
            "preemptionPolicy",
            "setHostnameAsFQDN",
            "hostUsers",
            "hostnameOverride",
        ],
    ),
    ("k8s.io.api.core.v1.PodResourceClaim", &["resourceClaimName", "resourceClaimTemplateName"]),
    ("k8s.io.api.core.v1.PodResourceClaimStatus", &["resourceClaimName"]),
    ("k8s.io.api.core.v1.PodSchedulingGroup", &["podGroupName"]),
    ("k8s.io.api.core.v1.TopologySpreadConstraint", &["minDomains", "nodeAffinityPolicy", "nodeTaintsPolicy"]),
    (
        "k8s.io.api.core.v1.PodSecurityContext",
        &[
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "supplementalGroupsPolicy",
            "fsGroup",
            "fsGroupChangePolicy",
            "seLinuxChangePolicy",
        ],
    ),
    ("k8s.io.api.core.v1.SeccompProfile", &["localhostProfile"]),
    ("k8s.io.api.core.v1.AppArmorProfile", &["localhostProfile"]),
    ("k8s.io.api.core.v1.PodDNSConfigOption", &["value"]),
    ("k8s.io.api.core.v1.EphemeralContainerCommon", &["restartPolicy"]),
    ("k8s.io.api.core.v1.EvictionResponder", &["priority"]),
    ("k8s.io.api.core.v1.ReplicationControllerSpec", &["replicas"]),
    ("k8s.io.api.core.v1.ClientIPConfig", &["timeoutSeconds"]),
    ("k8s.io.api.core.v1.LoadBalancerIngress", &["ipMode"]),
    (
        "k8s.io.api.core.v1.ServiceSpec",
        &[
            "ipFamilyPolicy",
            "allocateLoadBalancerNodePorts",
            "loadBalancerClass",
            "internalTrafficPolicy",
            "trafficDistribution",
        ],
    ),
    ("k8s.io.api.core.v1.ServicePort", &["appProtocol"]),
    ("k8s.io.api.core.v1.ServiceAccount", &["automountServiceAccountToken"]),
    ("k8s.io.api.core.v1.EndpointAddress", &["nodeName"]),
    ("k8s.io.api.core.v1.EndpointPort", &["appProtocol"]),
    ("k8s.io.api.core.v1.NodeRuntimeHandlerFeatures", &["recursiveReadOnlyMounts", "userNamespaces"]),
    ("k8s.io.api.core.v1.NodeFeatures", &["supplementalGroupsPolicy"]),
    ("k8s.io.api.core.v1.NodeSwapStatus", &["capacity"]),
    ("k8s.io.api.core.v1.Preconditions", &["uid"]),
    ("k8s.io.api.core.v1.PodLogOptions", &["sinceSeconds", "tailLines", "limitBytes", "stream"]),
    ("k8s.io.api.core.v1.TypedLocalObjectReference", &["apiGroup"]),
    ("k8s.io.api.core.v1.Secret", &["immutable"]),
    ("k8s.io.api.core.v1.ConfigMap", &["immutable"]),
    ("k8s.io.api.core.v1.DownwardAPIVolumeSource", &["defaultMode", "defaultUser"]),
    ("k8s.io.api.core.v1.DownwardAPIVolumeFile", &["mode", "user"]),
    (
        "k8s.io.api.core.v1.SecurityContext",
        &[
            "privileged",
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "readOnlyRootFilesystem",
            "allowPrivilegeEscalation",
            "procMount",
        ],
    ),
    (
        "k8s.io.api.core.v1.WindowsSecurityContextOptions",
        &["gmsaCredentialSpecName", "gmsaCredentialSpec", "runAsUserName", "hostProcess"],
    ),
    ("k8s.io.api.core.v1.PortStatus", &["error"]),
    ("k8s.io.api.apps.v1.RollingUpdateStatefulSetStrategy", &["partition", "maxUnavailable"]),
    ("k8s.io.api.apps.v1.StatefulSetSpec", &["replicas", "revisionHistoryLimit"]),
    ("k8s.io.api.apps.v1.StatefulSetStatus", &["collisionCount"]),
    ("k8s.io.api.apps.v1.DeploymentSpec", &["replicas", "revisionHistoryLimit", "progressDeadlineSeconds"]),
    ("k8s.io.api.apps.v1.RollingUpdateDeployment", &["maxUnavailable", "maxSurge"]),
    ("k8s.io.api.apps.v1.DeploymentStatus", &["terminatingReplicas", "collisionCount"]),
    ("k8s.io.api.apps.v1.RollingUpdateDaemonSet", &["maxUnavailable", "maxSurge"]),
    ("k8s.io.api.apps.v1.DaemonSetSpec", &["revisionHistoryLimit"]),
    ("k8s.io.api.apps.v1.DaemonSetStatus", &["collisionCount"]),
    ("k8s.io.api.apps.v1.ReplicaSetSpec", &["replicas"]),
    ("k8s.io.api.apps.v1.ReplicaSetStatus", &["terminatingReplicas"]),
    ("k8s.io.api.batch.v1.PodFailurePolicyOnExitCodesRequirement", &["containerName"]),
    ("k8s.io.api.batch.v1.SuccessPolicyRule", &["succeededIndexes", "succeededCount"]),
    (
        "k8s.io.api.batch.v1.JobSpec",
        &[
            "parallelism",
            "completions",
            "activeDeadlineSeconds",
            "backoffLimit",
            "backoffLimitPerIndex",
            "maxFailedIndexes",
            "manualSelector",
            "ttlSecondsAfterFinished",
            "completionMode",
            "suspend",
            "podReplacementPolicy",
            "managedBy",
        ],
    ),
    ("k8s.io.api.batch.v1.JobStatus", &["terminating", "failedIndexes", "ready"]),
    (
        "k8s.io.api.batch.v1.CronJobSpec",
        &["timeZone", "startingDeadlineSeconds", "suspend", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"],
    ),
    ("k8s.io.api.autoscaling.v1.HorizontalPodAutoscalerSpec", &["minReplicas", "targetCPUUtilizationPercentage"]),
    (
        "k8s.io.api.autoscaling.v1.HorizontalPodAutoscalerStatus",
        &["observedGeneration", "currentCPUUtilizationPercentage"],
    ),
    ("k8s.io.api.autoscaling.v1.ResourceMetricSource", &["targetAverageUtilization"]),
    ("k8s.io.api.autoscaling.v1.ContainerResourceMetricSource", &["targetAverageUtilization"]),
    ("k8s.io.api.autoscaling.v1.HorizontalPodAutoscalerCondition", &["observedGeneration"]),
    ("k8s.io.api.autoscaling.v1.ResourceMetricStatus", &["currentAverageUtilization"]),
    ("k8s.io.api.autoscaling.v1.ContainerResourceMetricStatus", &["currentAverageUtilization"]),
    ("k8s.io.api.autoscaling.v2.HorizontalPodAutoscalerSpec", &["minReplicas"]),
    ("k8s.io.api.autoscaling.v2.HPAScalingRules", &["stabilizationWindowSeconds", "selectPolicy"]),
    ("k8s.io.api.autoscaling.v2.MetricTarget", &["averageUtilization"]),
    ("k8s.io.api.autoscaling.v2.HorizontalPodAutoscalerStatus", &["observedGeneration"]),
    ("k8s.io.api.autoscaling.v2.HorizontalPodAutoscalerCondition", &["observedGeneration"]),
    ("k8s.io.api.autoscaling.v2.MetricValueStatus", &["averageUtilization"]),
    ("k8s.io.api.networking.v1.NetworkPolicyPort", &["protocol", "port", "endPort"]),
    ("k8s.io.api.networking.v1.IngressSpec", &["ingressClassName"]),
    ("k8s.io.api.networking.v1.IngressPortStatus", &["error"]),
    ("k8s.io.api.networking.v1.HTTPIngressPath", &["pathType"]),
    ("k8s.io.api.networking.v1.IngressClassParametersReference", &["apiGroup", "scope", "namespace"]),
    ("k8s.io.api.discovery.v1.Endpoint", &["hostname", "nodeName", "zone"]),
    ("k8s.io.api.discovery.v1.EndpointConditions", &["ready", "serving", "terminating"]),
    ("k8s.io.api.discovery.v1.EndpointPort", &["name", "protocol", "port", "appProtocol"]),
    ("k8s.io.api.storage.v1.StorageClass", &["reclaimPolicy", "allowVolumeExpansion", "volumeBindingMode"]),
    ("k8s.io.api.storage.v1.VolumeAttachmentSource", &["persistentVolumeName"]),
    ("k8s.io.api.storage.v1.VolumeError", &["errorCode"]),
    (
        "k8s.io.api.storage.v1.CSIDriverSpec",
        &[
            "attachRequired",
            "podInfoOnMount",
            "storageCapacity",
            "fsGroupPolicy",
            "requiresRepublish",
            "seLinuxMount",
            "nodeAllocatableUpdatePeriodSeconds",
            "serviceAccountTokenInSecrets",
            "preventPodSchedulingIfMissing",
        ],
    ),
    ("k8s.io.api.storage.v1.TokenRequest", &["expirationSeconds"]),
    ("k8s.io.api.storage.v1.VolumeNodeResources", &["count"]),
    ("k8s.io.api.storage.v1.StorageHealthCondition", &["accessMode", "volumeMode"]),
    (
        "k8s.io.api.coordination.v1.LeaseSpec",
        &["holderIdentity", "leaseDurationSeconds", "leaseTransitions", "strategy", "preferredHolder"],
    ),
    ("k8s.io.api.policy.v1.PodDisruptionBudgetSpec", &["minAvailable", "maxUnavailable", "unhealthyPodEvictionPolicy"]),
    ("k8s.io.api.scheduling.v1.PriorityClass", &["preemptionPolicy"]),
    ("k8s.io.api.authentication.v1.TokenRequestSpec", &["expirationSeconds"]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.ListMeta", &["remainingItemCount"]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta", &["deletionGracePeriodSeconds"]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.OwnerReference", &["controller", "blockOwnerDeletion"]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.ListOptions", &["timeoutSeconds", "sendInitialEvents"]),
    (
        "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        &[
            "gracePeriodSeconds",
            "orphanDependents",
            "propagationPolicy",
            "ignoreStoreReadErrorWithClusterBreakingPotential",
        ],
    ),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.PatchOptions", &["force"]),
    ("k8s.io.apimachinery.pkg.apis.meta.v1.Preconditions", &["uid", "resourceVersion"]),
];

pub fn run(root: &Path) -> anyhow::Result<()> {
    let sources = locate_sources(root)?;
    let messages = parse_k8s_pb(&sources.pb_src)?;
    let openapi = parse_openapi(&sources.openapi_src)?;
    let schema = build_schema(&messages, &openapi)?;
    let text = render(&schema, &sources);
    let out = root.join(OUTPUT);
    std::fs::write(&out, text).with_context(|| format!("write {}", out.display()))?;
    let status = Command::new("rustfmt")
        .args(["--edition", "2024", "--config-path"])
        .arg(root.join("rustfmt.toml"))
        .arg(&out)
        .status()
        .context("run rustfmt")?;
    if !status.success() {
        bail!("rustfmt failed on {}", out.display());
    }
    let size = std::fs::metadata(&out)?.len();
    let fields: usize = schema.messages.iter().map(|m| m.fields.len()).sum();
    println!("wrote {} ({} messages, {fields} fields, {size} bytes)", out.display(), schema.messages.len());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Locating the crates

struct Sources {
    pb_src: PathBuf,
    pb_version: String,
    openapi_src: PathBuf,
    openapi_version: String,
    openapi_k8s: String,
}

fn locate_sources(root: &Path) -> anyhow::Result<Sources> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .output()
        .context("run cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).context("parse cargo metadata")?;
    let packages = meta["packages"].as_array().context("cargo metadata: no packages")?;
    let find = |name: &str| {
        packages.iter().find(|p| p["name"] == name).and_then(|p| {
            let manifest = PathBuf::from(p["manifest_path"].as_str()?);
            Some((manifest.parent()?.join("src"), p["version"].as_str()?.to_string(), p["id"].as_str()?.to_string()))
        })
    };
    let (pb_src, pb_version) = match find("k8s-pb") {
        Some((src, version, _)) => (src, version),
        None => {
            let home = std::env::var("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
                .context("neither CARGO_HOME nor HOME is set")?;
            let mut found = None;
            for entry in std::fs::read_dir(home.join("registry/src")).context("read cargo registry")? {
                let dir = entry?.path().join("k8s-pb-0.9.0");
                if dir.is_dir() {
                    found = Some(dir.join("src"));
                }
            }
            (found.context("k8s-pb 0.9.0 is neither a dependency nor in the cargo registry")?, "0.9.0".to_string())
        }
    };
    let (openapi_root, openapi_version, openapi_id) =
        find("k8s-openapi").context("k8s-openapi is not a dependency of the workspace")?;
    // The Kubernetes version is the `v1_*` feature enabled in the resolved graph.
    let features = meta["resolve"]["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"] == openapi_id.as_str()))
        .and_then(|n| n["features"].as_array())
        .context("k8s-openapi: no resolved features")?;
    let openapi_k8s = features
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.starts_with("v1_"))
        .context("k8s-openapi: no v1_* feature enabled")?
        .to_string();
    Ok(Sources { openapi_src: openapi_root.join(&openapi_k8s), pb_src, pb_version, openapi_version, openapi_k8s })
}

fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// k8s-pb

#[derive(Clone, Debug)]
enum PbType {
    Str,
    Bytes,
    Bool,
    I32,
    I64,
    F64,
    /// (proto package, prost type name)
    Message(String, String),
    Map(Box<PbType>),
}

struct PbField {
    name: String,
    tag: u32,
    ty: PbType,
    repeated: bool,
    docs: Vec<String>,
}

struct PbMessage {
    package: String,
    name: String,
    /// `+protobuf.nullable=true`: a Go slice type, {repeated string items = 1} on the wire.
    string_list: bool,
    fields: Vec<PbField>,
}

fn parse_k8s_pb(src: &Path) -> anyhow::Result<Vec<PbMessage>> {
    let mut messages = Vec::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src)?;
        if rel.file_name().is_none_or(|n| n != "mod.rs") {
            continue;
        }
        let module: Vec<String> =
            rel.parent().into_iter().flat_map(|p| p.iter()).map(|c| c.to_string_lossy().into()).collect();
        let text = std::fs::read_to_string(&file)?;
        parse_pb_module(&text, &module, &mut messages).with_context(|| format!("parse {}", file.display()))?;
    }
    Ok(messages)
}

fn proto_package(module: &[String]) -> String {
    format!("k8s.io.{}", module.join("."))
}

fn parse_pb_module(text: &str, module: &[String], out: &mut Vec<PbMessage>) -> anyhow::Result<()> {
    let mut docs: Vec<String> = Vec::new();
    let mut attr: Option<String> = None;
    let mut current: Option<PbMessage> = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if let Some(doc) = trimmed.strip_prefix("///") {
            docs.push(doc.trim().to_string());
        } else if let Some(rest) = trimmed.strip_prefix("#[prost(") {
            attr = Some(rest.strip_suffix(")]").context("multi-line prost attribute")?.to_string());
        } else if let Some(rest) = line.strip_prefix("pub struct ") {
            let name = rest.trim_end_matches(['{', ' ']).to_string();
            let string_list = docs.iter().any(|d| d == "+protobuf.nullable=true");
            current = Some(PbMessage { package: proto_package(module), name, string_list, fields: Vec::new() });
            docs.clear();
        } else if line == "}" {
            if let Some(message) = current.take() {
                out.push(message);
            }
            docs.clear();
        } else if let (Some(message), Some(rest)) = (current.as_mut(), trimmed.strip_prefix("pub ")) {
            let (name, ty) = rest.split_once(':').context("field without type")?;
            let mut ty = ty.to_string();
            while !ty.trim_end().ends_with(',') || ty.matches('<').count() != ty.matches('>').count() {
                ty.push_str(lines.next().context("unterminated field")?.trim());
            }
            let attr = attr.take().with_context(|| format!("field {name} has no prost attribute"))?;
            message.fields.push(parse_pb_field(
                name.trim_start_matches("r#"),
                &attr,
                &ty,
                module,
                std::mem::take(&mut docs),
            )?);
        } else if !trimmed.starts_with("#[") {
            docs.clear();
        }
    }
    Ok(())
}

fn parse_pb_field(name: &str, attr: &str, ty: &str, module: &[String], docs: Vec<String>) -> anyhow::Result<PbField> {
    // Split `btree_map = "string, message", tag = "10"` on commas outside quotes.
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in attr.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(attr[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(attr[start..].trim());
    let value = |key: &str| {
        parts.iter().find_map(|p| {
            p.strip_prefix(key)?.trim_start().strip_prefix('=')?.trim().strip_prefix('"')?.strip_suffix('"')
        })
    };
    let tag: u32 = value("tag").context("no tag")?.parse().context("bad tag")?;
    let repeated = parts.contains(&"repeated");
    let scalar = |s: &str| -> anyhow::Result<PbType> {
        Ok(match s {
            "string" => PbType::Str,
            "bytes" => PbType::Bytes,
            "bool" => PbType::Bool,
            "int32" => PbType::I32,
            "int64" => PbType::I64,
            "double" => PbType::F64,
            "message" => {
                let (package, name) = resolve_type(ty, module)?;
                PbType::Message(package, name)
            }
            other => bail!("unsupported prost type {other:?} for field {name}"),
        })
    };
    let ty = if let Some(map) = value("btree_map") {
        let (key, val) = map.split_once(',').context("bad btree_map")?;
        if key.trim() != "string" {
            bail!("map key {key:?} of field {name} is not a string");
        }
        PbType::Map(Box::new(scalar(val.trim())?))
    } else if value("bytes").is_some() {
        PbType::Bytes
    } else {
        scalar(parts[0])?
    };
    Ok(PbField { name: name.to_string(), tag, ty, repeated, docs })
}

/// The innermost type of `Option<Box<super::super::x::Y>>`, `Vec<Y>` or `BTreeMap<String, Y>`,
/// resolved against the module it is used in.
fn resolve_type(ty: &str, module: &[String]) -> anyhow::Result<(String, String)> {
    let ty: String = ty.chars().filter(|c| !c.is_whitespace()).collect();
    let ty = ty.trim_end_matches([',', '>']);
    let inner = ty.rsplit(['<', ',']).next().context("empty type")?;
    let mut path: Vec<String> = module.to_vec();
    let segments: Vec<&str> = inner.split("::").filter(|s| !s.is_empty()).collect();
    let (name, prefix) = segments.split_last().context("empty path")?;
    for segment in prefix {
        match *segment {
            "super" => {
                path.pop().context("super past the crate root")?;
            }
            "crate" => path.clear(),
            other => path.push(other.to_string()),
        }
    }
    Ok((proto_package(&path), name.to_string()))
}

// ---------------------------------------------------------------------------------------------
// k8s-openapi

struct OpenApiType {
    name: String,
    /// JSON field names, by normalized form (lowercase, alphanumerics only).
    json: HashMap<String, String>,
    /// JSON names of the fields that are not `Option`s: required in the OpenAPI schema, so
    /// Kubernetes' JSON always has them, zero or not.
    required: BTreeSet<String>,
}

fn normalize(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

/// Types by (proto package, lowercase name).
fn parse_openapi(src: &Path) -> anyhow::Result<HashMap<(String, String), OpenApiType>> {
    let mut out = HashMap::new();
    for file in rust_files(src)? {
        let text = std::fs::read_to_string(&file)?;
        let Some(def) = text.lines().next().and_then(|l| l.strip_prefix("// Generated from definition io.k8s.")) else {
            continue;
        };
        let def = def.trim().replace('-', "_");
        let Some((package, name)) = def.rsplit_once('.') else {
            continue; // `io.k8s.List`, k8s-openapi's generic list
        };
        let mut json = HashMap::new();
        let mut by_rust_name = HashMap::new();
        for line in text.lines() {
            let Some((key, rust)) = line.trim().strip_prefix('"').and_then(|l| l.split_once("\" => Field::Key_"))
            else {
                continue;
            };
            if let Some(previous) = json.insert(normalize(key), key.to_string())
                && previous != key
            {
                bail!("{def}: JSON names {previous} and {key} collide");
            }
            by_rust_name.insert(rust.trim_end_matches(',').to_string(), key.to_string());
        }
        let struct_body = text
            .split_once(&format!("pub struct {name} {{\n"))
            .and_then(|(_, rest)| rest.split_once("\n}"))
            .map_or("", |(body, _)| body);
        let required = struct_body
            .lines()
            .filter_map(|l| l.strip_prefix("    pub ")?.split_once(": "))
            .filter(|(_, ty)| !ty.starts_with("Option<"))
            .filter_map(|(rust, _)| by_rust_name.get(rust).cloned())
            .collect();
        let package = format!("k8s.io.{package}");
        out.insert((package, name.to_ascii_lowercase()), OpenApiType { name: name.to_string(), json, required });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The schema

struct Schema {
    messages: Vec<OutMessage>,
}

struct OutMessage {
    name: String,
    fields: Vec<OutField>,
}

struct OutField {
    tag: u32,
    json: String,
    kind: String,
    repeated: bool,
    inline: bool,
    pointer: bool,
    required: bool,
    patch_strategy: String,
    patch_merge_key: String,
    list_type: String,
    list_map_keys: Vec<String>,
}

fn lower_camel(name: &str) -> String {
    let mut out = String::new();
    for (i, part) in name.split('_').enumerate() {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            if i == 0 {
                out.push(first);
            } else {
                out.push(first.to_ascii_uppercase());
            }
            out.extend(chars);
        }
    }
    out
}

fn build_schema(messages: &[PbMessage], openapi: &HashMap<(String, String), OpenApiType>) -> anyhow::Result<Schema> {
    let by_key: HashMap<(&str, &str), &PbMessage> =
        messages.iter().map(|m| ((m.package.as_str(), m.name.as_str()), m)).collect();
    let openapi_type = |m: &PbMessage| openapi.get(&(m.package.clone(), m.name.to_ascii_lowercase()));
    // k8s-openapi has Go's spelling of names prost changed (`HTTPIngressPath`, not `HttpIngressPath`).
    let proto_name =
        |m: &PbMessage| format!("{}.{}", m.package, openapi_type(m).map_or(m.name.as_str(), |t| t.name.as_str()));
    let well_known = |package: &str, name: &str| {
        let full = format!("{package}.{name}");
        WELL_KNOWN.iter().find(|(n, _)| *n == full).map(|(_, kind)| *kind)
    };

    // Every message of the root packages, then what they reference.
    let mut included: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut queue: VecDeque<&PbMessage> = messages
        .iter()
        .filter(|m| ROOT_PACKAGES.contains(&m.package.as_str()) && well_known(&m.package, &m.name).is_none())
        .filter(|m| !m.string_list)
        .collect();
    while let Some(message) = queue.pop_front() {
        if !included.insert((&message.package, &message.name)) {
            continue;
        }
        for field in &message.fields {
            let ty = match &field.ty {
                PbType::Map(value) => value.as_ref(),
                ty => ty,
            };
            if let PbType::Message(package, name) = ty {
                let target = by_key
                    .get(&(package.as_str(), name.as_str()))
                    .with_context(|| format!("{}.{}: unknown type {package}.{name}", message.package, message.name))?;
                if well_known(package, name).is_none() && !target.string_list {
                    queue.push_back(target);
                }
            }
        }
    }

    let mut order: Vec<(String, &PbMessage)> =
        included.iter().map(|key| (proto_name(by_key[key]), by_key[key])).collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let index: HashMap<(&str, &str), usize> =
        order.iter().enumerate().map(|(i, (_, m))| ((m.package.as_str(), m.name.as_str()), i)).collect();

    let pointers: HashMap<&str, &[&str]> = POINTER_FIELDS.iter().copied().collect();
    let mut used_pointers = BTreeSet::new();
    let kind_of = |ty: &PbType| -> String {
        match ty {
            PbType::Str => "Str".into(),
            PbType::Bytes => "Bytes".into(),
            PbType::Bool => "Bool".into(),
            PbType::I32 => "I32".into(),
            PbType::I64 => "I64".into(),
            PbType::F64 => "F64".into(),
            PbType::Message(package, name) => match well_known(package, name) {
                Some(kind) => kind.into(),
                None if by_key[&(package.as_str(), name.as_str())].string_list => "StrList".into(),
                None => format!("Msg({})", index[&(package.as_str(), name.as_str())]),
            },
            PbType::Map(_) => unreachable!("maps are handled by the caller"),
        }
    };

    // Go embedded structs (`json:",inline"`) are message fields on the wire whose fields sit in
    // the outer JSON object: a message field the outer JSON type lacks, whose own fields it has.
    // An embedded type k8s-openapi lacks (`VolumeSource`) takes its JSON names from the outer type.
    let mut inline: BTreeSet<(&str, &str, &str)> = BTreeSet::new();
    let mut borrowed: HashMap<(&str, &str), &OpenApiType> = HashMap::new();
    for (name, message) in &order {
        let Some(api) = openapi_type(message) else { continue };
        for field in &message.fields {
            let PbType::Message(package, child) = &field.ty else { continue };
            if field.repeated || api.json.contains_key(&normalize(&field.name)) || well_known(package, child).is_some()
            {
                continue;
            }
            let child = by_key[&(package.as_str(), child.as_str())];
            let missing: Vec<&str> = child
                .fields
                .iter()
                .filter(|f| !api.json.contains_key(&normalize(&f.name)))
                .map(|f| f.name.as_str())
                .collect();
            if missing.len() == child.fields.len() {
                bail!("{name}.{}: neither a JSON field nor an embedded struct", field.name);
            }
            if !missing.is_empty() {
                eprintln!("warning: {name} embeds {} but has no JSON names for {missing:?}", child.name);
            }
            inline.insert((&message.package, &message.name, &field.name));
            if openapi_type(child).is_none() {
                borrowed.insert((&child.package, &child.name), api);
            }
        }
    }

    let mut out = Vec::new();
    let mut fallbacks = Vec::new();
    for (name, message) in &order {
        let api_type =
            openapi_type(message).or_else(|| borrowed.get(&(message.package.as_str(), message.name.as_str())).copied());
        let mut fields = Vec::new();
        for field in &message.fields {
            let inline = inline.contains(&(message.package.as_str(), message.name.as_str(), field.name.as_str()));
            let json = match api_type.and_then(|t| t.json.get(&normalize(&field.name))) {
                _ if inline => String::new(),
                Some(json) => json.clone(),
                None => {
                    let key = format!("{name}.{}", field.name);
                    let json = JSON_RENAMES
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map_or_else(|| lower_camel(&field.name), |(_, v)| (*v).to_string());
                    fallbacks.push(format!(
                        "{name}.{json}{}",
                        if api_type.is_some() { " (type has no such field)" } else { "" }
                    ));
                    json
                }
            };
            let kind = match &field.ty {
                PbType::Map(value) => format!("Map(&{})", kind_of(value)),
                ty => kind_of(ty),
            };
            let required = api_type.is_some_and(|t| t.required.contains(&json));
            let pointer = pointers.get(name.as_str()).is_some_and(|p| p.contains(&json.as_str()));
            if pointer {
                used_pointers.insert(format!("{name}.{json}"));
                let scalar = matches!(kind.as_str(), "Str" | "Bytes" | "Bool" | "I32" | "I64" | "F64" | "IntOrString");
                if !scalar || field.repeated {
                    bail!("pointer field {name}.{json} is not a singular scalar ({kind})");
                }
            }
            let marker = |key: &str| {
                field.docs.iter().filter_map(|d| d.strip_prefix(key)).map(|v| v.trim().to_string()).collect::<Vec<_>>()
            };
            let one = |key: &str| marker(key).into_iter().next().unwrap_or_default();
            fields.push(OutField {
                tag: field.tag,
                json,
                kind,
                repeated: field.repeated,
                inline,
                pointer,
                required,
                patch_strategy: one("+patchStrategy="),
                patch_merge_key: one("+patchMergeKey="),
                list_type: one("+listType="),
                list_map_keys: marker("+listMapKey="),
            });
        }
        out.push(OutMessage { name: name.clone(), fields });
    }

    let skipped: Vec<String> = POINTER_FIELDS
        .iter()
        .flat_map(|(m, fields)| fields.iter().map(move |f| format!("{m}.{f}")))
        .filter(|f| !used_pointers.contains(f))
        .collect();
    if std::env::var_os("PROTOGEN_VERBOSE").is_some() {
        eprintln!("JSON names not found in k8s-openapi (lowerCamelCase used):\n  {}", fallbacks.join("\n  "));
        eprintln!("pointer fields the protos do not have:\n  {}", skipped.join("\n  "));
    }
    Ok(Schema { messages: out })
}

// ---------------------------------------------------------------------------------------------
// Output

const PRELUDE: &str = r#"
//! Tables of the Kubernetes protobuf messages the codec knows: each field's tag, JSON name and
//! kind, whether a zero value belongs in the JSON (Go pointer or required field), and the
//! list/patch markers of the Go API types.
//!
//! Message names are the proto names (`k8s.io.api.apps.v1.Deployment`), sorted, so [`message`]
//! can binary-search; fields are in declaration order, which is the JSON order.

/// What a field holds on the wire and how it maps to JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `string`.
    Str,
    /// `bytes`: base64 in JSON.
    Bytes,
    /// `bool`.
    Bool,
    /// `int32` (varint).
    I32,
    /// `int64` (varint): a JSON number.
    I64,
    /// `double` (fixed64).
    F64,
    /// A message: index into [`MESSAGES`].
    Msg(usize),
    /// `meta.v1.Time` {seconds, nanos}: RFC 3339, whole seconds.
    Time,
    /// `meta.v1.MicroTime` {seconds, nanos}: RFC 3339 with microseconds.
    MicroTime,
    /// `meta.v1.Duration` {duration (ns)}: a Go duration string such as "1h0m0s".
    Duration,
    /// `meta.v1.FieldsV1` {Raw}: the embedded JSON.
    FieldsV1,
    /// `api.resource.Quantity` {string}: the string.
    Quantity,
    /// `util.intstr.IntOrString` {type, intVal, strVal}: a number or a string.
    IntOrString,
    /// `runtime.RawExtension` {raw}: the embedded JSON, or an embedded protobuf object.
    RawExt,
    /// A Go string-slice type sent as a message {repeated string items = 1}: a JSON array.
    StrList,
    /// `map<string, V>`: a JSON object.
    Map(&'static Kind),
}

/// One field of a message.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub tag: u32,
    /// The JSON name.
    pub json: &'static str,
    pub kind: Kind,
    pub repeated: bool,
    /// A Go embedded struct (`json:",inline"`): a message on the wire whose fields sit in the
    /// enclosing JSON object; `json` is empty.
    pub inline: bool,
    /// The Go field is a pointer: a zero value on the wire was set on purpose.
    pub pointer: bool,
    /// Required in the OpenAPI schema (no `omitempty`): Kubernetes' JSON has it even when zero.
    pub required: bool,
    /// `+patchStrategy`: "merge", "retainKeys", "merge,retainKeys" or "".
    pub patch_strategy: &'static str,
    /// `+patchMergeKey` or "".
    pub patch_merge_key: &'static str,
    /// `+listType`: "atomic", "set", "map" or "".
    pub list_type: &'static str,
    /// `+listMapKey`s, in order.
    pub list_map_keys: &'static [&'static str],
}

/// A message: its proto name and fields.
#[derive(Debug)]
pub struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
}

impl Message {
    /// The field with this tag.
    pub fn field_by_tag(&self, tag: u32) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.tag == tag)
    }
}

/// The message with this proto name.
pub fn message(name: &str) -> Option<&'static Message> {
    MESSAGES.binary_search_by(|m| m.name.cmp(name)).ok().map(|i| &MESSAGES[i])
}

/// The message at this index of [`MESSAGES`], as in [`Kind::Msg`].
pub fn message_by_index(index: usize) -> &'static Message {
    &MESSAGES[index]
}

const fn f(tag: u32, json: &'static str, kind: Kind) -> Field {
    Field {
        tag,
        json,
        kind,
        repeated: false,
        inline: false,
        pointer: false,
        required: false,
        patch_strategy: "",
        patch_merge_key: "",
        list_type: "",
        list_map_keys: &[],
    }
}

const fn r(tag: u32, json: &'static str, kind: Kind) -> Field {
    Field { repeated: true, ..f(tag, json, kind) }
}

const fn inline(tag: u32, kind: Kind) -> Field {
    Field { inline: true, ..f(tag, "", kind) }
}

impl Field {
    const fn ptr(self) -> Self {
        Field { pointer: true, ..self }
    }

    const fn req(self) -> Self {
        Field { required: true, ..self }
    }

    const fn patch(self, patch_strategy: &'static str, patch_merge_key: &'static str) -> Self {
        Field { patch_strategy, patch_merge_key, ..self }
    }

    const fn list(self, list_type: &'static str, list_map_keys: &'static [&'static str]) -> Self {
        Field { list_type, list_map_keys, ..self }
    }
}

const fn m(name: &'static str, fields: &'static [Field]) -> Message {
    Message { name, fields }
}

use Kind::*;
"#;

fn render(schema: &Schema, sources: &Sources) -> String {
    let mut out = format!(
        "// @generated by `cargo xtask gen-proto` from k8s-pb {} and k8s-openapi {} ({}). Do not edit.\n",
        sources.pb_version, sources.openapi_version, sources.openapi_k8s
    );
    out.push_str(PRELUDE);
    out.push_str("\n/// Every known message, sorted by name.\npub static MESSAGES: &[Message] = &[\n");
    for (i, message) in schema.messages.iter().enumerate() {
        let _ = write!(out, "// {i}\nm(\"{}\", &[", message.name);
        for field in &message.fields {
            if field.inline {
                let _ = write!(out, "inline({}, {})", field.tag, field.kind);
            } else {
                let ctor = if field.repeated { "r" } else { "f" };
                let _ = write!(out, "{ctor}({}, \"{}\", {})", field.tag, field.json, field.kind);
            }
            if field.pointer {
                out.push_str(".ptr()");
            }
            if field.required {
                out.push_str(".req()");
            }
            if !field.patch_strategy.is_empty() || !field.patch_merge_key.is_empty() {
                let _ = write!(out, ".patch(\"{}\", \"{}\")", field.patch_strategy, field.patch_merge_key);
            }
            if !field.list_type.is_empty() || !field.list_map_keys.is_empty() {
                let keys: Vec<String> = field.list_map_keys.iter().map(|k| format!("\"{k}\"")).collect();
                let _ = write!(out, ".list(\"{}\", &[{}])", field.list_type, keys.join(", "));
            }
            out.push_str(", ");
        }
        out.push_str("]),\n");
    }
    out.push_str("];\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_paths() {
        let module: Vec<String> = ["api", "apps", "v1"].iter().map(|s| s.to_string()).collect();
        let ty = "::core::option::Option<super::super::super::apimachinery::pkg::apis::meta::v1::ObjectMeta>,";
        assert_eq!(
            resolve_type(ty, &module).expect("resolves"),
            ("k8s.io.apimachinery.pkg.apis.meta.v1".to_string(), "ObjectMeta".to_string())
        );
        let ty =
            "::prost::alloc::collections::BTreeMap<::prost::alloc::string::String, super::super::core::v1::Volume>,";
        assert_eq!(resolve_type(ty, &module).expect("resolves"), ("k8s.io.api.core.v1".into(), "Volume".into()));
        assert_eq!(
            resolve_type("Vec<DaemonSet>,", &module).expect("resolves"),
            ("k8s.io.api.apps.v1".into(), "DaemonSet".into())
        );
    }

    #[test]
    fn camel_cases_prost_names() {
        assert_eq!(lower_camel("pod_ip"), "podIp");
        assert_eq!(lower_camel("metadata"), "metadata");
        assert_eq!(normalize("podIPs"), normalize("pod_ips"));
    }
}
