"""Smoke test of the official Python `kubernetes` client against a Keelson control plane.

Usage: python3 client_smoke.py KUBECONFIG

Creates, reads, lists, watches, patches and deletes ConfigMaps and apps/v1 Deployments in the
`default` namespace and checks every answer. Prints each failed check (and the traceback of any
failed call, which ends its group of steps), exits 1 if anything failed, and prints
"client_smoke: OK" when everything passed.
"""

import sys
import threading
import time
import traceback

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NS = "default"
FAILURES = []
STEP = ["start"]


def check(ok, what):
    """Records a failed expectation and carries on, so one run reports every difference."""
    if not ok:
        FAILURES.append(f"[{STEP[0]}] {what}")
        print(f"FAIL {FAILURES[-1]}", flush=True)


def step(msg):
    STEP[0] = msg
    print(f"-- {msg}", flush=True)


def expect_status(code, fn, *args, **kwargs):
    """Calls fn and checks it fails with HTTP `code`; returns the exception."""
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        check(e.status == code, f"expected HTTP {code}, got {e.status}: {e.body}")
        return e
    raise AssertionError(f"expected HTTP {code}, the call succeeded")


def config_map(name, labels=None, data=None):
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
        data=data or {},
    )


def deployment(name, image, replicas=1):
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(name="main", image=image),
                        client.V1Container(name="sidecar", image="busybox:sidecar"),
                    ]
                ),
            ),
        ),
    )


def config_maps(v1):
    step("configmap create/get")
    created = v1.create_namespaced_config_map(NS, config_map("py-one", {"suite": "py"}, {"k": "v"}))
    check(created.metadata.name == "py-one", f"name {created.metadata.name}")
    check(created.metadata.uid, "uid is set")
    check(created.metadata.resource_version, "resourceVersion is set")
    check(created.metadata.creation_timestamp is not None, "creationTimestamp is set")
    got = v1.read_namespaced_config_map("py-one", NS)
    check(got.data == {"k": "v"}, got.data)
    check(got.metadata.uid == created.metadata.uid, "get returns the created uid")

    step("configmap duplicate create")
    e = expect_status(409, v1.create_namespaced_config_map, NS, config_map("py-one"))
    check("AlreadyExists" in e.body, e.body)

    step("configmap list with selector and pagination")
    for i in range(4):
        v1.create_namespaced_config_map(NS, config_map(f"py-page-{i}", {"suite": "py"}))
    v1.create_namespaced_config_map(NS, config_map("py-other", {"suite": "other"}))
    names, token, pages = [], None, 0
    while True:
        kwargs = {"label_selector": "suite=py", "limit": 2}
        if token:
            kwargs["_continue"] = token
        page = v1.list_namespaced_config_map(NS, **kwargs)
        pages += 1
        check(len(page.items) <= 2, f"page of {len(page.items)} items with limit 2")
        names += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
        check(pages < 10, "pagination does not end")
    check(sorted(names) == ["py-one", "py-page-0", "py-page-1", "py-page-2", "py-page-3"], names)
    check(pages == 3, f"5 items in pages of 2 is 3 pages, got {pages}")

    step("configmap patch (strategic merge, JSON patch)")
    patched = v1.patch_namespaced_config_map("py-one", NS, {"data": {"added": "1"}, "metadata": {"labels": {"x": "y"}}})
    check(patched.data == {"k": "v", "added": "1"}, patched.data)
    check(patched.metadata.labels == {"suite": "py", "x": "y"}, patched.metadata.labels)
    check(patched.metadata.resource_version != created.metadata.resource_version, "a patch bumps resourceVersion")
    # A list body makes the client send application/json-patch+json.
    patched = v1.patch_namespaced_config_map(
        "py-one", NS, [{"op": "replace", "path": "/data/k", "value": "v2"}, {"op": "remove", "path": "/data/added"}]
    )
    check(patched.data == {"k": "v2"}, patched.data)

    step("configmap replace with stale resourceVersion")
    stale = created
    stale.data = {"stale": "write"}
    e = expect_status(409, v1.replace_namespaced_config_map, "py-one", NS, stale)
    check("Conflict" in e.body, e.body)
    data = v1.read_namespaced_config_map("py-one", NS).data
    check(data == {"k": "v2"}, f"the stale replace wrote nothing: {data}")

    step("configmap delete")
    v1.delete_namespaced_config_map("py-one", NS)
    expect_status(404, v1.read_namespaced_config_map, "py-one", NS)
    v1.delete_collection_namespaced_config_map(NS, label_selector="suite=py")
    left = v1.list_namespaced_config_map(NS, label_selector="suite=py").items
    check(left == [], f"delete collection by label left {[i.metadata.name for i in left]}")
    others = [i.metadata.name for i in v1.list_namespaced_config_map(NS, label_selector="suite=other").items]
    check(others == ["py-other"], f"objects outside the selector survive: {others}")


def watch_config_maps(v1):
    step("configmap watch (changes made from a thread)")
    rv = v1.list_namespaced_config_map(NS).metadata.resource_version
    errors = []

    def writer():
        try:
            time.sleep(0.5)
            v1.create_namespaced_config_map(NS, config_map("py-watch", {"w": "1"}, {"n": "1"}))
            v1.patch_namespaced_config_map("py-watch", NS, {"data": {"n": "2"}})
            v1.delete_namespaced_config_map("py-watch", NS)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    w = watch.Watch()
    seen = []
    for ev in w.stream(v1.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=15):
        obj = ev["object"]
        seen.append((ev["type"], obj.metadata.name, (obj.data or {}).get("n")))
        if ev["type"] == "DELETED":
            w.stop()
    t.join()
    check(not errors, errors)
    check(seen == [("ADDED", "py-watch", "1"), ("MODIFIED", "py-watch", "2"), ("DELETED", "py-watch", "2")], seen)

    step("configmap watch with label selector from existing objects")
    v1.create_namespaced_config_map(NS, config_map("py-w-a", {"sel": "yes"}))
    v1.create_namespaced_config_map(NS, config_map("py-w-b", {"sel": "no"}))
    w = watch.Watch()
    seen = []
    for ev in w.stream(v1.list_namespaced_config_map, NS, label_selector="sel=yes", timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        w.stop()
    check(seen == [("ADDED", "py-w-a")], seen)


def deployments(apps):
    step("deployment create/get")
    created = apps.create_namespaced_deployment(NS, deployment("py-web", "busybox:1"))
    check(created.spec.replicas == 1, f"replicas {created.spec.replicas}")
    check(created.metadata.generation == 1, f"a new Deployment has generation 1, got {created.metadata.generation}")
    check(created.spec.strategy.type == "RollingUpdate", created.spec.strategy)
    got = apps.read_namespaced_deployment("py-web", NS)
    names = [c.name for c in got.spec.template.spec.containers]
    check(names == ["main", "sidecar"], f"containers {names}")

    step("deployment list")
    apps.create_namespaced_deployment(NS, deployment("py-api", "busybox:1"))
    names = sorted(d.metadata.name for d in apps.list_namespaced_deployment(NS).items)
    check(names == ["py-api", "py-web"], names)
    names = [d.metadata.name for d in apps.list_namespaced_deployment(NS, label_selector="app=py-api").items]
    check(names == ["py-api"], names)

    step("deployment watch (changes made before the watch, from its resourceVersion)")
    rv = apps.read_namespaced_deployment("py-api", NS).metadata.resource_version
    apps.patch_namespaced_deployment("py-api", NS, {"spec": {"replicas": 2}})
    w = watch.Watch()
    seen = []
    for ev in w.stream(apps.list_namespaced_deployment, NS, resource_version=rv, timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name, ev["object"].spec.replicas))
        w.stop()
    check(seen == [("MODIFIED", "py-api", 2)], seen)

    step("deployment strategic merge patch (containers merge by name)")
    patched = apps.patch_namespaced_deployment(
        "py-web", NS, {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}}}}
    )
    images = [(c.name, c.image) for c in patched.spec.template.spec.containers]
    check(images == [("main", "busybox:2"), ("sidecar", "busybox:sidecar")], images)
    check(patched.metadata.generation == 2, f"a spec change bumps generation to 2, got {patched.metadata.generation}")

    step("deployment scale subresource")
    scale = apps.read_namespaced_deployment_scale("py-web", NS)
    check(scale.spec.replicas == 1, f"scale {scale}")
    scale = apps.patch_namespaced_deployment_scale("py-web", NS, {"spec": {"replicas": 3}})
    check(scale.spec.replicas == 3, f"scale {scale}")
    replicas = apps.read_namespaced_deployment("py-web", NS).spec.replicas
    check(replicas == 3, f"scale writes spec.replicas: {replicas}")

    step("deployment status subresource")
    st = apps.patch_namespaced_deployment_status("py-web", NS, {"status": {"replicas": 3, "readyReplicas": 1}})
    check(st.status.ready_replicas == 1, f"status {st.status}")
    status = apps.read_namespaced_deployment_status("py-web", NS).status
    check(status.replicas == 3, f"status {status}")

    step("deployment invalid update")
    e = expect_status(422, apps.patch_namespaced_deployment, "py-web", NS, {"spec": {"replicas": -1}})
    check("spec.replicas" in e.body, e.body)

    step("deployment delete")
    apps.delete_namespaced_deployment("py-web", NS)
    apps.delete_namespaced_deployment("py-api", NS)
    expect_status(404, apps.read_namespaced_deployment, "py-web", NS)
    left = [d.metadata.name for d in apps.list_namespaced_deployment(NS).items]
    check(left == [], f"deployments left {left}")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    config.load_kube_config(config_file=sys.argv[1])
    v1 = client.CoreV1Api()
    apps = client.AppsV1Api()
    version = client.VersionApi().get_code()
    step(f"server version {version.git_version}")
    for group in (lambda: config_maps(v1), lambda: watch_config_maps(v1), lambda: deployments(apps)):
        try:
            group()
        except Exception:  # an API call failed: report it and go on with the next group
            FAILURES.append(traceback.format_exc())
            print(f"FAIL [{STEP[0]}] exception:\n{FAILURES[-1]}", flush=True)
    if FAILURES:
        print(f"client_smoke: {len(FAILURES)} failure(s)", flush=True)
        sys.exit(1)
    print("client_smoke: OK", flush=True)


if __name__ == "__main__":
    main()
