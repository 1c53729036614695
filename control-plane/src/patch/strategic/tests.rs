//! Strategic merge patch tests against a small fake of the Kubernetes Deployment types.

use serde_json::{Value, json};

use super::*;

const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";

/// Deployment → DeploymentSpec → PodTemplateSpec → PodSpec → Container, and ObjectMeta, with the patch
/// metadata the real types carry.
struct FakeSchema;

impl Schema for FakeSchema {
    fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo> {
        let object = |t: &'static str| FieldInfo { value_type: Some(t), ..FieldInfo::default() };
        let merge = |key: &'static str, t: Option<&'static str>| FieldInfo {
            patch_strategy: "merge",
            merge_key: key,
            value_type: t,
        };
        let info = match (type_name.rsplit('.').next()?, field) {
            ("Deployment", "metadata") | ("PodTemplateSpec", "metadata") => object("ObjectMeta"),
            ("Deployment", "spec") => object("DeploymentSpec"),
            ("ObjectMeta", "labels" | "annotations" | "name" | "namespace") => FieldInfo::default(),
            ("ObjectMeta", "finalizers") => merge("", None),
            ("ObjectMeta", "ownerReferences") => merge("uid", Some("OwnerReference")),
            ("DeploymentSpec", "template") => object("PodTemplateSpec"),
            ("DeploymentSpec", "selector") => object("LabelSelector"),
            ("DeploymentSpec", "strategy") => {
                FieldInfo { patch_strategy: "retainKeys", ..object("DeploymentStrategy") }
            }
            ("DeploymentStrategy", "rollingUpdate") => object("RollingUpdateDeployment"),
            ("PodTemplateSpec", "spec") => object("PodSpec"),
            ("PodSpec", "containers" | "initContainers") => merge("name", Some("Container")),
            ("PodSpec", "volumes") => {
                FieldInfo { patch_strategy: "merge,retainKeys", merge_key: "name", value_type: Some("Volume") }
            }
            ("PodSpec", "tolerations") => object("Toleration"),
            ("Container", "ports") => merge("containerPort", Some("ContainerPort")),
            ("Container", "env") => merge("name", Some("EnvVar")),
            ("Container", "volumeMounts") => merge("mountPath", Some("VolumeMount")),
            ("Container", "args" | "command") => FieldInfo::default(),
            ("Container", "resources") => object("ResourceRequirements"),
            ("EnvVar", "valueFrom") => object("EnvVarSource"),
            ("Volume", "configMap") => object("ConfigMapVolumeSource"),
            ("Volume", "emptyDir") => object("EmptyDirVolumeSource"),
            ("ConfigMapVolumeSource", "items") => object("KeyToPath"),
            _ => return None,
        };
        Some(info)
    }
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "labels": {"app": "web", "tier": "front"},
            "finalizers": ["a.example/x", "b.example/y"]
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.24",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP"}],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "volumeMounts": [
                                {"name": "conf", "mountPath": "/etc/nginx"},
                                {"name": "cache", "mountPath": "/var/cache"}
                            ]
                        },
                        {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "3600"]}
                    ],
                    "volumes": [{"name": "conf", "configMap": {"name": "nginx-conf"}}, {"name": "cache", "emptyDir": {}}]
                }
            }
        }
    })
}

fn smp(doc: &Value, patch: Value) -> Value {
    strategic_merge_patch(doc, &patch, &FakeSchema, DEPLOYMENT).expect("patch applies")
}

fn smp_err(doc: &Value, patch: Value) -> PatchError {
    strategic_merge_patch(doc, &patch, &FakeSchema, DEPLOYMENT).expect_err("patch must fail")
}

/// Wraps a PodSpec patch into a Deployment patch.
fn pod_spec(patch: Value) -> Value {
    json!({"spec": {"template": {"spec": patch}}})
}

fn at<'a>(doc: &'a Value, pointer: &str) -> &'a Value {
    doc.pointer(pointer).unwrap_or_else(|| panic!("{pointer} missing in {doc}"))
}

/// The merge key values of a list, in order.
fn keys(list: &Value, key: &str) -> Vec<Value> {
    list.as_array().expect("a list").iter().map(|v| v[key].clone()).collect()
}

fn containers(doc: &Value) -> &Value {
    at(doc, "/spec/template/spec/containers")
}

// Maps.

#[test]
fn labels_merge_and_null_deletes() {
    let doc = deployment();
    let out = smp(&doc, json!({"metadata": {"labels": {"tier": null, "env": "prod"}}}));
    assert_eq!(at(&out, "/metadata/labels"), &json!({"app": "web", "env": "prod"}));
    assert_eq!(at(&out, "/spec"), at(&doc, "/spec"), "untouched subtrees stay");
    assert_eq!(doc, deployment(), "the input is not modified");
}

#[test]
fn patch_directive_replace_in_a_map() {
    let out = smp(&deployment(), json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}));
    assert_eq!(at(&out, "/metadata/labels"), &json!({"only": "this"}));
}

#[test]
fn patch_directive_delete_in_a_map_empties_it() {
    let out = smp(&deployment(), json!({"spec": {"strategy": {"$patch": "delete"}}}));
    assert_eq!(at(&out, "/spec/strategy"), &json!({}));
    // A `$patch: delete` map for a key the object lacks adds nothing.
    let out = smp(&deployment(), json!({"metadata": {"annotations": {"$patch": "delete"}}}));
    assert!(out["metadata"].get("annotations").is_none(), "{out}");
}

#[test]
fn patch_directive_merge_is_the_default() {
    let out = smp(&deployment(), json!({"metadata": {"labels": {"$patch": "merge", "env": "prod"}}}));
    assert_eq!(at(&out, "/metadata/labels"), &json!({"app": "web", "tier": "front", "env": "prod"}));
    let out = smp(&deployment(), pod_spec(json!({"containers": [{"$patch": "merge"}, {"name": "web", "image": "x"}]})));
    assert_eq!(keys(containers(&out), "image"), [json!("x"), json!("busybox:1.36")]);
}

#[test]
fn unknown_patch_directive_is_rejected() {
    let err = smp_err(&deployment(), json!({"metadata": {"labels": {"$patch": "frob"}}}));
    assert!(err.is_invalid_input(), "{err:?}");
    let err = smp_err(&deployment(), pod_spec(json!({"containers": [{"name": "web", "$patch": "frob"}]})));
    assert!(err.is_invalid_input(), "{err:?}");
}

#[test]
fn retain_keys_switches_deployment_strategy() {
    // What `kubectl apply` sends when the strategy changes from RollingUpdate to Recreate.
    let out = smp(
        &deployment(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}}),
    );
    assert_eq!(at(&out, "/spec/strategy"), &json!({"type": "Recreate"}));
    // The directive alone clears unlisted keys.
    let out = smp(&deployment(), json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}));
    assert_eq!(at(&out, "/spec/strategy"), &json!({"type": "Recreate"}));
    // Without the directive a retainKeys field merges like any map.
    let out = smp(&deployment(), json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}}}}));
    assert_eq!(at(&out, "/spec/strategy/rollingUpdate"), &json!({"maxSurge": 1, "maxUnavailable": "25%"}));
}

#[test]
fn retain_keys_must_list_every_patched_key() {
    let err = smp_err(&deployment(), json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}));
    assert!(matches!(err, PatchError::InvalidPatch { .. }), "{err:?}");
    let err = smp_err(&deployment(), json!({"spec": {"strategy": {"$retainKeys": "type"}}}));
    assert!(err.is_invalid_input(), "{err:?}");
}

#[test]
fn retain_keys_in_merged_volumes() {
    // A volume changes source from configMap to emptyDir, as `kubectl apply` sends it.
    let out = smp(
        &deployment(),
        pod_spec(
            json!({"volumes": [{"$retainKeys": ["emptyDir", "name"], "configMap": null, "emptyDir": {}, "name": "conf"}]}),
        ),
    );
    let volumes = at(&out, "/spec/template/spec/volumes");
    assert_eq!(volumes, &json!([{"name": "conf", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}]));
}

#[test]
fn value_of_another_type_replaces() {
    let out = smp(&deployment(), json!({"spec": {"strategy": "odd", "replicas": {"weird": true}}}));
    assert_eq!(at(&out, "/spec/strategy"), &json!("odd"));
    assert_eq!(at(&out, "/spec/replicas"), &json!({"weird": true}));
}

// Lists of objects merged by key.

#[test]
fn kubectl_set_image_merges_container_by_name() {
    let doc = deployment();
    let out = smp(&doc, pod_spec(json!({"containers": [{"name": "sidecar", "image": "busybox:1.37"}]})));
    assert_eq!(keys(containers(&out), "name"), [json!("web"), json!("sidecar")]);
    assert_eq!(
        at(&out, "/spec/template/spec/containers/1"),
        &json!({"name": "sidecar", "image": "busybox:1.37", "args": ["sleep", "3600"]})
    );
    assert_eq!(at(&out, "/spec/template/spec/containers/0"), at(&doc, "/spec/template/spec/containers/0"));
}

#[test]
fn new_element_without_anchor_goes_first_like_upstream() {
    let out = smp(&deployment(), pod_spec(json!({"containers": [{"name": "log", "image": "fluent-bit"}]})));
    assert_eq!(keys(containers(&out), "name"), [json!("log"), json!("web"), json!("sidecar")]);
}

#[test]
fn delete_container_with_patch_directive() {
    let out = smp(&deployment(), pod_spec(json!({"containers": [{"name": "sidecar", "$patch": "delete"}]})));
    assert_eq!(keys(containers(&out), "name"), [json!("web")]);
    // Deleting an element that does not exist is fine.
    let out = smp(&deployment(), pod_spec(json!({"containers": [{"name": "nope", "$patch": "delete"}]})));
    assert_eq!(keys(containers(&out), "name"), [json!("web"), json!("sidecar")]);
}

#[test]
fn delete_directive_removes_every_duplicate() {
    let doc = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "X", "value": "2"}, {"name": "Y"}]}
    ]}}}});
    let out = smp(&doc, pod_spec(json!({"containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}]}]})));
    assert_eq!(at(&out, "/spec/template/spec/containers/0/env"), &json!([{"name": "Y"}]));
}

#[test]
fn ports_merge_by_container_port() {
    let out = smp(
        &deployment(),
        pod_spec(json!({"containers": [{"name": "web", "ports": [
            {"containerPort": 8080, "protocol": "TCP"},
            {"containerPort": 443.0, "name": "https"}
        ]}]})),
    );
    let ports = at(&out, "/spec/template/spec/containers/0/ports");
    // 8080 is new and comes before the first element it precedes in the patch; 80 keeps its place before 443.
    assert_eq!(keys(ports, "containerPort"), [json!(8080), json!(80), json!(443.0)]);
    assert_eq!(ports[2], json!({"containerPort": 443.0, "protocol": "TCP", "name": "https"}));
}

#[test]
fn env_merges_by_name() {
    let out = smp(
        &deployment(),
        pod_spec(json!({"containers": [{"name": "web", "env": [
            {"name": "B", "value": "20"},
            {"name": "A", "$patch": "delete"},
            {"name": "C", "value": "3"}
        ]}]})),
    );
    assert_eq!(
        at(&out, "/spec/template/spec/containers/0/env"),
        &json!([{"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
    );
}

#[test]
fn env_value_from_replaces_value_with_null() {
    let out = smp(
        &deployment(),
        pod_spec(json!({"containers": [{"name": "web", "env": [
            {"name": "A", "value": null, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ]}]})),
    );
    assert_eq!(
        at(&out, "/spec/template/spec/containers/0/env/0"),
        &json!({"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    );
}

#[test]
fn volume_mounts_merge_by_mount_path() {
    let out = smp(
        &deployment(),
        pod_spec(
            json!({"containers": [{"name": "web", "volumeMounts": [{"mountPath": "/var/cache", "readOnly": true}]}]}),
        ),
    );
    assert_eq!(
        at(&out, "/spec/template/spec/containers/0/volumeMounts"),
        &json!([
            {"name": "conf", "mountPath": "/etc/nginx"},
            {"name": "cache", "mountPath": "/var/cache", "readOnly": true}
        ])
    );
}

#[test]
fn patch_order_is_kept_and_server_elements_interleave() {
    let doc = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "c", "env": [{"name": "1"}, {"name": "2", "value": "b"}, {"name": "3"}]}
    ]}}}});
    let out = smp(
        &doc,
        pod_spec(
            json!({"containers": [{"name": "c", "env": [{"name": "3", "value": "c"}, {"name": "1", "value": "a"}]}]}),
        ),
    );
    assert_eq!(
        at(&out, "/spec/template/spec/containers/0/env"),
        &json!([{"name": "2", "value": "b"}, {"name": "3", "value": "c"}, {"name": "1", "value": "a"}])
    );
}

#[test]
fn replace_directive_in_a_list() {
    let out = smp(
        &deployment(),
        pod_spec(json!({"containers": [{"$patch": "replace"}, {"name": "only", "image": "x", "ports": null}]})),
    );
    assert_eq!(containers(&out), &json!([{"name": "only", "image": "x"}]));
    let out = smp(&deployment(), pod_spec(json!({"containers": [{"$patch": "replace"}]})));
    assert_eq!(containers(&out), &json!([]));
}

#[test]
fn list_without_merge_strategy_is_replaced() {
    let out = smp(
        &deployment(),
        pod_spec(json!({
            "containers": [{"name": "sidecar", "args": ["sleep", "10"]}],
            "tolerations": [{"key": "k", "operator": "Exists", "value": null}]
        })),
    );
    assert_eq!(at(&out, "/spec/template/spec/containers/1/args"), &json!(["sleep", "10"]));
    assert_eq!(at(&out, "/spec/template/spec/tolerations"), &json!([{"key": "k", "operator": "Exists"}]));
    let out = smp(&out, pod_spec(json!({"tolerations": [{"key": "j", "operator": "Exists"}]})));
    assert_eq!(at(&out, "/spec/template/spec/tolerations"), &json!([{"key": "j", "operator": "Exists"}]));
}

#[test]
fn patch_list_element_without_merge_key_is_rejected() {
    let err = smp_err(&deployment(), pod_spec(json!({"containers": [{"image": "x"}]})));
    assert!(matches!(err, PatchError::InvalidPatch { .. }), "{err:?}");
    let err = smp_err(&deployment(), pod_spec(json!({"containers": [{"$patch": "delete"}]})));
    assert!(err.is_invalid_input(), "{err:?}");
}

#[test]
fn stored_element_without_merge_key_is_unprocessable() {
    let doc = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
    let err = smp_err(&doc, pod_spec(json!({"containers": [{"name": "a", "image": "y"}]})));
    assert!(matches!(err, PatchError::Unprocessable { .. }), "{err:?}");
    assert_eq!(err.status_code(), 422);
}

// Lists of primitives with strategy merge.

#[test]
fn finalizers_union_keeps_anchored_order() {
    let doc = deployment();
    let out = smp(&doc, json!({"metadata": {"finalizers": ["a.example/x", "c.example/z"]}}));
    assert_eq!(at(&out, "/metadata/finalizers"), &json!(["a.example/x", "c.example/z", "b.example/y"]));
    let out = smp(&doc, json!({"metadata": {"finalizers": ["b.example/y", "c.example/z"]}}));
    assert_eq!(at(&out, "/metadata/finalizers"), &json!(["a.example/x", "b.example/y", "c.example/z"]));
    // Nothing to anchor to: upstream puts the new value first.
    let out = smp(&doc, json!({"metadata": {"finalizers": ["c.example/z"]}}));
    assert_eq!(at(&out, "/metadata/finalizers"), &json!(["c.example/z", "a.example/x", "b.example/y"]));
}

#[test]
fn delete_from_primitive_list() {
    let out = smp(&deployment(), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b.example/y", "zzz"]}}));
    assert_eq!(at(&out, "/metadata/finalizers"), &json!(["a.example/x"]));
    // Works on lists without merge strategy too, and never creates the list.
    let out = smp(
        &deployment(),
        pod_spec(json!({"containers": [{"name": "sidecar", "$deleteFromPrimitiveList/args": ["sleep"]}]})),
    );
    assert_eq!(at(&out, "/spec/template/spec/containers/1/args"), &json!(["3600"]));
    let out =
        smp(&deployment(), json!({"spec": {"template": {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}}}));
    assert_eq!(at(&out, "/spec/template/metadata"), &json!({"labels": {"app": "web"}}));
    let err = smp_err(&deployment(), json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["x"]}}));
    assert!(err.is_invalid_input(), "{err:?}");
}

#[test]
fn mixed_or_nested_list_elements_are_unprocessable() {
    let err = smp_err(&deployment(), json!({"metadata": {"finalizers": [1]}}));
    assert!(matches!(err, PatchError::Unprocessable { .. }), "{err:?}");
    let err = smp_err(&deployment(), json!({"metadata": {"finalizers": [["x"]]}}));
    assert!(matches!(err, PatchError::Unprocessable { .. }), "{err:?}");
}

// $setElementOrder.

#[test]
fn kubectl_apply_adds_container_in_order_and_changes_image() {
    let out = smp(
        &deployment(),
        pod_spec(json!({
            "$setElementOrder/containers": [{"name": "web"}, {"name": "log"}, {"name": "sidecar"}],
            "containers": [{"image": "nginx:1.25", "name": "web"}, {"image": "fluent-bit", "name": "log"}]
        })),
    );
    assert_eq!(keys(containers(&out), "name"), [json!("web"), json!("log"), json!("sidecar")]);
    assert_eq!(keys(containers(&out), "image"), [json!("nginx:1.25"), json!("fluent-bit"), json!("busybox:1.36")]);
    assert_eq!(at(&out, "/spec/template/spec/containers/0/ports/1/containerPort"), &json!(443));
}

#[test]
fn set_element_order_alone_reorders_and_keeps_server_only_elements_in_place() {
    let doc = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "env": [
        {"name": "1", "value": "a"}, {"name": "2"}, {"name": "9"}, {"name": "3"}, {"name": "4"}
    ]}]}}}});
    let out = smp(
        &doc,
        pod_spec(json!({"containers": [{"name": "c", "$setElementOrder/env": [
            {"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}
        ]}]})),
    );
    let env = at(&out, "/spec/template/spec/containers/0/env");
    assert_eq!(keys(env, "name"), [json!("2"), json!("1"), json!("9"), json!("4"), json!("3")]);
    assert_eq!(env[1], json!({"name": "1", "value": "a"}));
}

#[test]
fn set_element_order_of_primitives_with_deletion() {
    // `kubectl apply` removing b and adding c at the end of the finalizers.
    let out = smp(
        &deployment(),
        json!({"metadata": {
            "$setElementOrder/finalizers": ["a.example/x", "c.example/z"],
            "$deleteFromPrimitiveList/finalizers": ["b.example/y"],
            "finalizers": ["c.example/z"]
        }}),
    );
    assert_eq!(at(&out, "/metadata/finalizers"), &json!(["a.example/x", "c.example/z"]));
}

#[test]
fn set_element_order_must_agree_with_the_patch_list() {
    let err = smp_err(
        &deployment(),
        pod_spec(json!({
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
            "containers": [{"name": "web", "image": "a"}, {"name": "sidecar", "image": "b"}]
        })),
    );
    assert!(matches!(err, PatchError::InvalidPatch { .. }), "{err:?}");
    let err = smp_err(&deployment(), pod_spec(json!({"$setElementOrder/containers": {"name": "web"}})));
    assert!(err.is_invalid_input(), "{err:?}");
}

#[test]
fn kubectl_edit_deletes_a_port() {
    let out = smp(
        &deployment(),
        pod_spec(json!({
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{
                "$setElementOrder/ports": [{"containerPort": 443}],
                "name": "web",
                "ports": [{"$patch": "delete", "containerPort": 80}]
            }]
        })),
    );
    assert_eq!(at(&out, "/spec/template/spec/containers/0/ports"), &json!([{"containerPort": 443, "protocol": "TCP"}]));
    assert_eq!(keys(containers(&out), "name"), [json!("web"), json!("sidecar")]);
}

#[test]
fn kubectl_apply_three_way_patch() {
    // Roughly what `kubectl apply` sends after editing the manifest: new annotation, a changed and a
    // removed env var, a removed container, ordering directives for every touched merge list.
    let out = smp(
        &deployment(),
        json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}],
                "containers": [
                    {
                        "$setElementOrder/env": [{"name": "B"}, {"name": "D"}],
                        "env": [{"name": "B", "value": "22"}, {"name": "D", "value": "4"}, {"$patch": "delete", "name": "A"}],
                        "name": "web"
                    },
                    {"$patch": "delete", "name": "sidecar"}
                ]
            }}}
        }),
    );
    assert_eq!(at(&out, "/metadata/annotations"), &json!({"kubectl.kubernetes.io/last-applied-configuration": "{}"}));
    assert_eq!(keys(containers(&out), "name"), [json!("web")]);
    assert_eq!(
        at(&out, "/spec/template/spec/containers/0/env"),
        &json!([{"name": "B", "value": "22"}, {"name": "D", "value": "4"}])
    );
}

// Values with nothing to merge with.

#[test]
fn new_subtrees_are_cleaned_of_directives_and_nulls() {
    let out = smp(
        &deployment(),
        pod_spec(json!({"initContainers": [{
            "name": "init",
            "image": "busybox",
            "$setElementOrder/env": [{"name": "X"}],
            "env": [{"name": "X", "value": "1", "valueFrom": null}],
            "resources": {"$patch": "replace", "limits": {"cpu": "1"}}
        }]})),
    );
    assert_eq!(
        at(&out, "/spec/template/spec/initContainers"),
        &json!([{"name": "init", "image": "busybox", "env": [{"name": "X", "value": "1"}], "resources": {"limits": {"cpu": "1"}}}])
    );
}

#[test]
fn unknown_types_patch_like_json_merge_patch() {
    let doc = json!({"spec": {"size": 1, "items": ["a", "b"], "nested": {"x": 1, "y": 2}, "objs": [{"name": "a"}]}});
    let patch = json!({"spec": {"items": ["c"], "nested": {"x": null, "z": 3}, "objs": [{"name": "b"}], "size": null}});
    let out = strategic_merge_patch(&doc, &patch, &FakeSchema, "example.com.v1.Widget").expect("patch applies");
    assert_eq!(out, json!({"spec": {"items": ["c"], "nested": {"y": 2, "z": 3}, "objs": [{"name": "b"}]}}));
    assert_eq!(out, crate::patch::merge_patch(&doc, &patch));
    // Fields the schema does not know inside a known type behave the same way.
    let out = smp(
        &deployment(),
        json!({"spec": {"paused": true, "template": {"spec": {"hostAliases": [{"ip": "1.2.3.4"}]}}}}),
    );
    assert_eq!(at(&out, "/spec/paused"), &json!(true));
    assert_eq!(at(&out, "/spec/template/spec/hostAliases"), &json!([{"ip": "1.2.3.4"}]));
}

#[test]
fn the_patch_must_be_an_object() {
    for patch in [json!([]), json!("x"), json!(null), json!(1)] {
        let err = strategic_merge_patch(&deployment(), &patch, &FakeSchema, DEPLOYMENT).expect_err("must fail");
        assert!(err.is_invalid_input(), "{patch}: {err:?}");
        assert_eq!(err.status_code(), 400);
    }
}

#[test]
fn whole_object_directives_and_null_document() {
    assert_eq!(smp(&deployment(), json!({"$patch": "delete"})), json!({}));
    assert_eq!(smp(&deployment(), json!({"$patch": "replace", "kind": "Deployment"})), json!({"kind": "Deployment"}));
    assert_eq!(
        smp(&Value::Null, json!({"metadata": {"name": "x", "labels": null}})),
        json!({"metadata": {"name": "x"}})
    );
    let err = smp_err(&json!([1]), json!({}));
    assert_eq!(err.status_code(), 422);
}

#[test]
fn kubectl_apply_replacing_a_container_keeps_server_only_ones_in_place() {
    // The live object has a container `mesh` injected by someone else; the user's manifest replaces `old`
    // with `new`. Upstream puts `mesh` before `new` (it took the slot `old` freed).
    let doc = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web"}, {"name": "old"}, {"name": "mesh"}
    ]}}}});
    let out = smp(
        &doc,
        pod_spec(json!({
            "$setElementOrder/containers": [{"name": "web"}, {"name": "new"}],
            "containers": [{"name": "new", "image": "x"}, {"$patch": "delete", "name": "old"}]
        })),
    );
    assert_eq!(keys(containers(&out), "name"), [json!("web"), json!("mesh"), json!("new")]);
}
