//! The real kubectl against an in-process control plane: the tutorial's storage objects
//! (PersistentVolumes, claims, the default StorageClass, the NFS provisioner with its RBAC
//! objects), its Ingress, and every manifest of the tutorial applied at once. No controllers run,
//! so claims stay unbound; nothing here asserts binding.

mod common;
mod kubectl_support;

use common::Cluster;
use kubectl_support::{Table, describe_field, fixture_dir, tutorial_arg};
use serde_json::json;

#[test]
fn persistent_volumes_claims_and_default_storage_class() {
    let c = Cluster::start();

    // PV and PVC.
    assert_eq!(c.ok(&["apply", "-f", &tutorial_arg("nfs-pv.yaml")]), "persistentvolume/nfs-pv created\n");
    assert_eq!(c.ok(&["apply", "-f", &tutorial_arg("nfs-pvc.yaml")]), "persistentvolumeclaim/nfs-pvc created\n");
    assert_eq!(
        c.ok(&["apply", "-f", &tutorial_arg("pv-pool.yaml")]),
        "persistentvolume/pv01-10m created\npersistentvolume/pv02-1gi created\npersistentvolume/pv03-3gi created\n"
    );
    assert_eq!(c.ok(&["apply", "-f", &tutorial_arg("nginx-pvc.yaml")]), "persistentvolumeclaim/nginx-pvc created\n");

    let pv = c.json(&["get", "pv", "nfs-pv"]);
    assert_eq!(pv["spec"]["capacity"], json!({"storage": "1Gi"}));
    assert_eq!(pv["spec"]["accessModes"], json!(["ReadWriteMany"]));
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["storageClassName"], "nfs");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pv["spec"]["nfs"], json!({"path": "/nfs/data", "server": "192.168.11.101"}));
    assert!(pv["metadata"].get("namespace").is_none(), "PersistentVolumes are cluster-scoped: {pv}");
    let pvc = c.json(&["get", "pvc", "nginx-pvc"]);
    assert_eq!(pvc["spec"]["resources"], json!({"requests": {"storage": "200Mi"}}));
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["metadata"]["namespace"], "default");

    // `kubectl get pv,pvc`
    let tables = Table::all(&c.ok(&["get", "pv,pvc"]));
    assert_eq!(tables.len(), 2, "one table for PVs, one for PVCs");
    let pvs = &tables[0];
    assert_eq!(
        pvs.headers,
        [
            "NAME",
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE"
        ]
    );
    assert_eq!(
        pvs.names(),
        [
            "persistentvolume/nfs-pv",
            "persistentvolume/pv01-10m",
            "persistentvolume/pv02-1gi",
            "persistentvolume/pv03-3gi"
        ]
    );
    for (name, capacity) in [("nfs-pv", "1Gi"), ("pv01-10m", "10M"), ("pv02-1gi", "1Gi"), ("pv03-3gi", "3Gi")] {
        let row = format!("persistentvolume/{name}");
        assert_eq!(pvs.cell(&row, "CAPACITY"), capacity, "{name}");
        assert_eq!(pvs.cell(&row, "ACCESS MODES"), "RWX", "{name}");
        assert_eq!(pvs.cell(&row, "RECLAIM POLICY"), "Retain", "{name}");
        assert_eq!(pvs.cell(&row, "STORAGECLASS"), "nfs", "{name}");
        assert_eq!(pvs.cell(&row, "VOLUMEATTRIBUTESCLASS"), "<unset>", "{name}");
    }
    let pvcs = &tables[1];
    assert_eq!(
        pvcs.headers,
        ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"]
    );
    assert_eq!(pvcs.names(), ["persistentvolumeclaim/nfs-pvc", "persistentvolumeclaim/nginx-pvc"]);
    assert_eq!(pvcs.cell("persistentvolumeclaim/nginx-pvc", "STORAGECLASS"), "nfs");
    let wide = Table::parse(&c.ok(&["get", "pv", "-o", "wide"]));
    assert_eq!(wide.cell("nfs-pv", "VOLUMEMODE"), "Filesystem");

    // A Deployment mounting the claim.
    assert_eq!(
        c.ok(&["apply", "-f", &tutorial_arg("nginx-deploy-pvc.yaml")]),
        "deployment.apps/nginx-deploy-pvc created\n"
    );
    let vols = c.json(&["get", "deploy", "nginx-deploy-pvc"])["spec"]["template"]["spec"]["volumes"].clone();
    assert_eq!(vols, json!([{"name": "html", "persistentVolumeClaim": {"claimName": "nginx-pvc"}}]));
    assert_eq!(c.ok(&["apply", "-f", &tutorial_arg("nginx-pv-demo.yaml")]), "deployment.apps/nginx-pv-demo created\n");

    // The default StorageClass and the provisioner with its RBAC objects.
    assert_eq!(
        c.ok(&["apply", "-f", &tutorial_arg("nfs-storage-provisioner.yaml")]),
        [
            "storageclass.storage.k8s.io/nfs-storage created",
            "deployment.apps/nfs-client-provisioner created",
            "serviceaccount/nfs-client-provisioner created",
            "clusterrole.rbac.authorization.k8s.io/nfs-client-provisioner-runner created",
            "clusterrolebinding.rbac.authorization.k8s.io/run-nfs-client-provisioner created",
            "role.rbac.authorization.k8s.io/leader-locking-nfs-client-provisioner created",
            "rolebinding.rbac.authorization.k8s.io/leader-locking-nfs-client-provisioner created",
            "",
        ]
        .join("\n")
    );
    let t = Table::parse(&c.ok(&["get", "sc"]));
    assert_eq!(t.headers, ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"]);
    assert_eq!(t.names(), ["nfs-storage (default)"]);
    let sc = "nfs-storage (default)";
    assert_eq!(t.cell(sc, "PROVISIONER"), "k8s-sigs.io/nfs-subdir-external-provisioner");
    assert_eq!(t.cell(sc, "RECLAIMPOLICY"), "Delete");
    assert_eq!(t.cell(sc, "VOLUMEBINDINGMODE"), "Immediate");
    assert_eq!(t.cell(sc, "ALLOWVOLUMEEXPANSION"), "false");
    let d = c.ok(&["describe", "sc", "nfs-storage"]);
    assert_eq!(describe_field(&d, "IsDefaultClass").as_deref(), Some("Yes"), "{d}");
    assert_eq!(describe_field(&d, "Parameters").as_deref(), Some("archiveOnDelete=true"), "{d}");

    let deploy = c.json(&["get", "deploy", "nfs-client-provisioner"]);
    assert_eq!(deploy["spec"]["strategy"], json!({"type": "Recreate"}));
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "nfs-client-provisioner");
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([{"name": "nfs-client-root", "mountPath": "/persistentvolumes"}])
    );
    assert_eq!(
        pod["containers"][0]["env"][0],
        json!({"name": "PROVISIONER_NAME", "value": "k8s-sigs.io/nfs-subdir-external-provisioner"})
    );
    assert_eq!(pod["volumes"][0]["nfs"], json!({"server": "192.168.11.101", "path": "/nfs/data"}));

    let t = Table::parse(&c.ok(&["get", "serviceaccount", "nfs-client-provisioner"]));
    assert_eq!(t.headers, ["NAME", "SECRETS", "AGE"]);
    assert_eq!(t.cell("nfs-client-provisioner", "SECRETS"), "0");
    let role = c.json(&["get", "clusterrole", "nfs-client-provisioner-runner"]);
    assert_eq!(role["rules"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        role["rules"][1],
        json!({"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get", "list", "watch", "create", "delete"]})
    );
    let t = Table::parse(&c.ok(&["get", "clusterrole", "nfs-client-provisioner-runner"]));
    assert_eq!(t.headers, ["NAME", "CREATED AT"]);
    let t = Table::parse(&c.ok(&["get", "clusterrolebinding", "run-nfs-client-provisioner", "-o", "wide"]));
    assert_eq!(t.headers, ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]);
    assert_eq!(t.cell("run-nfs-client-provisioner", "ROLE"), "ClusterRole/nfs-client-provisioner-runner");
    assert_eq!(t.cell("run-nfs-client-provisioner", "SERVICEACCOUNTS"), "default/nfs-client-provisioner");
    let t = Table::parse(&c.ok(&["get", "rolebinding", "-o", "wide"]));
    assert_eq!(t.cell("leader-locking-nfs-client-provisioner", "ROLE"), "Role/leader-locking-nfs-client-provisioner");
    assert_eq!(t.cell("leader-locking-nfs-client-provisioner", "SERVICEACCOUNTS"), "default/nfs-client-provisioner");
    assert_eq!(Table::parse(&c.ok(&["get", "role"])).names(), ["leader-locking-nfs-client-provisioner"]);

    // `kubectl delete -f` removes what the file names, and nothing else.
    assert_eq!(
        c.ok(&["delete", "-f", &tutorial_arg("pv-pool.yaml")]),
        "persistentvolume \"pv01-10m\" deleted\npersistentvolume \"pv02-1gi\" deleted\npersistentvolume \"pv03-3gi\" deleted\n"
    );
    assert_eq!(Table::parse(&c.ok(&["get", "pv"])).names(), ["nfs-pv"], "the pool's PVs are gone, the other stays");
}

#[test]
fn ingress_applies_and_lists() {
    let c = Cluster::start();
    assert_eq!(
        c.ok(&["apply", "-f", &tutorial_arg("ingress-tomcat.yaml")]),
        "ingress.networking.k8s.io/web-ingress created\n"
    );
    let t = Table::parse(&c.ok(&["get", "ing"]));
    assert_eq!(t.headers, ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]);
    assert_eq!(t.names(), ["web-ingress"]);
    assert_eq!(t.cell("web-ingress", "CLASS"), "<none>");
    assert_eq!(t.cell("web-ingress", "HOSTS"), "tomcat.tuling.com");
    assert_eq!(t.cell("web-ingress", "ADDRESS"), "");
    assert_eq!(t.cell("web-ingress", "PORTS"), "80");
    let ing = c.json(&["get", "ingress", "web-ingress"]);
    let path = &ing["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(path["pathType"], "Prefix");
    assert_eq!(path["path"], "/");
    assert_eq!(path["backend"], json!({"service": {"name": "my-tomcat", "port": {"number": 8080}}}));

    // Validation: pathType is required, and an Exact path must be absolute.
    let bad = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: bad\nspec:\n  rules:\n  - host: a.example.com\n    http:\n      paths:\n      - path: relative\n        pathType: Exact\n        backend:\n          service:\n            name: x\n            port:\n              number: 80\n";
    let out = c.kubectl_in(&["apply", "-f", "-"], Some(bad), &[]);
    assert!(!out.status.success(), "a relative Exact path is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"The Ingress "bad" is invalid"#) && err.contains("must be an absolute path"), "{err}");
}

#[test]
fn every_tutorial_manifest_applies_cleanly() {
    let c = Cluster::start();
    let dir = fixture_dir();
    let out = c.ok(&["apply", "-f", &dir]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 27, "one line per object:\n{out}");
    assert!(lines.iter().all(|l| l.ends_with(" created")), "{out}");
    for expected in [
        "namespace/test created",
        "pod/mynginx created",
        "pod/myapp created",
        "deployment.apps/my-tomcat created",
        "service/my-tomcat created",
        "persistentvolume/nfs-pv created",
        "persistentvolumeclaim/nginx-pvc created",
        "storageclass.storage.k8s.io/nfs-storage created",
        "configmap/redis-conf created",
        "pod/redis created",
        "secret/my-secret created",
        "pod/tulingmall-product created",
        "ingress.networking.k8s.io/web-ingress created",
    ] {
        assert!(lines.contains(&expected), "no {expected:?} in:\n{out}");
    }

    // Applying the same files again changes nothing: defaulting and apply agree.
    let again = c.ok(&["apply", "-f", &dir]);
    assert!(again.lines().count() == 27 && again.lines().all(|l| l.ends_with(" unchanged")), "{again}");
    let diff = c.kubectl(&["diff", "-f", &dir]);
    assert_eq!(diff.status.code(), Some(0), "{}", String::from_utf8_lossy(&diff.stdout));

    // And `kubectl delete -f` removes them all.
    let gone = c.ok(&["delete", "-f", &dir]);
    assert_eq!(gone.lines().count(), 27, "{gone}");
    // (`service/kubernetes` and `configmap/kube-root-ca.crt` belong to the cluster, not the tutorial.)
    let left = c.ok(&["get", "pods,deploy,svc,cm,secret,pvc,pv,sc,ing", "-o", "name"]);
    let left: Vec<&str> =
        left.lines().filter(|l| *l != "service/kubernetes" && *l != "configmap/kube-root-ca.crt").collect();
    assert!(left.is_empty(), "left after delete -f: {left:?}");
}
