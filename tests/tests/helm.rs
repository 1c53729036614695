//! helm 4 against an in-process control plane: install, list, upgrade, rollback, history and
//! uninstall of the `tests/charts/demo` chart. No `--wait`: no controllers make anything ready.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Cluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt as _};
use serde_json::Value;

/// Runs helm with this cluster's kubeconfig and every helm directory inside the cluster's temp dir.
fn helm(cluster: &Cluster, args: &[&str]) -> Output {
    let home = cluster.path("helm-home");
    let sub = |s: &str| home.join(s);
    Command::new(common::helm_path())
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", &home)
        .env("XDG_CACHE_HOME", sub(".cache"))
        .env("XDG_CONFIG_HOME", sub(".config"))
        .env("XDG_DATA_HOME", sub(".local/share"))
        .env("HELM_CACHE_HOME", sub(".cache/helm"))
        .env("HELM_CONFIG_HOME", sub(".config/helm"))
        .env("HELM_DATA_HOME", sub(".local/share/helm"))
        .env("HELM_NAMESPACE", "default")
        .env_remove("HELM_DRIVER")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("helm runs (is it installed? cargo xtask setup)")
}

/// Runs helm and returns stdout, failing the test with its output when it fails.
fn helm_ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = helm(cluster, args);
    assert!(
        out.status.success(),
        "helm {} failed ({}):\nstderr: {}\nstdout: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn helm_json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = helm_ok(cluster, &a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("helm {} prints JSON ({e}): {out}", args.join(" ")))
}

/// What the chart put in the cluster, read with kube-rs.
#[derive(Debug, PartialEq)]
struct Objects {
    replicas: Option<i32>,
    image: Option<String>,
    mode: Option<String>,
    password: Option<Vec<u8>>,
    service_port: Option<i32>,
}

struct Kube {
    deployments: Api<Deployment>,
    config_maps: Api<ConfigMap>,
    secrets: Api<Secret>,
    services: Api<Service>,
}

impl Kube {
    fn new(cluster: &Cluster) -> Kube {
        cluster.runtime().block_on(async {
            let kc = Kubeconfig::read_from(&cluster.kubeconfig).expect("kubeconfig parses");
            let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config");
            let client = Client::try_from(cfg).expect("client");
            Kube {
                deployments: Api::namespaced(client.clone(), "default"),
                config_maps: Api::namespaced(client.clone(), "default"),
                secrets: Api::namespaced(client.clone(), "default"),
                services: Api::namespaced(client, "default"),
            }
        })
    }

    fn objects(&self, cluster: &Cluster) -> Objects {
        cluster.runtime().block_on(async {
            let d = self.deployments.get_opt("demo-web").await.expect("get deployment");
            let cm = self.config_maps.get_opt("demo-config").await.expect("get configmap");
            let s = self.secrets.get_opt("demo-secret").await.expect("get secret");
            let svc = self.services.get_opt("demo-web").await.expect("get service");
            let spec = d.as_ref().and_then(|d| d.spec.as_ref());
            Objects {
                replicas: spec.and_then(|s| s.replicas),
                image: spec.and_then(|s| s.template.spec.as_ref()).and_then(|p| p.containers.first()?.image.clone()),
                mode: cm.and_then(|c| c.data?.get("mode").cloned()),
                password: s.and_then(|s| Some(s.data?.get("password")?.0.clone())),
                service_port: svc.and_then(|s| s.spec?.ports?.first().map(|p| p.port)),
            }
        })
    }

    /// Names of helm's release records (Secrets of type `helm.sh/release.v1`).
    fn release_secrets(&self, cluster: &Cluster) -> Vec<String> {
        cluster.runtime().block_on(async {
            let list =
                self.secrets.list(&ListParams::default().labels("owner=helm,name=demo")).await.expect("list secrets");
            let mut names: Vec<String> = list.items.iter().map(|s| s.name_any()).collect();
            names.sort();
            names
        })
    }
}

fn expected(replicas: i32, tag: &str, mode: &str) -> Objects {
    Objects {
        replicas: Some(replicas),
        image: Some(format!("busybox:{tag}")),
        mode: Some(mode.to_string()),
        password: Some(b"s3cret".to_vec()),
        service_port: Some(80),
    }
}

/// `helm history` as (revision, status, description) rows.
fn history(cluster: &Cluster) -> Vec<(i64, String, String)> {
    let h = helm_json(cluster, &["history", "demo"]);
    h.as_array()
        .expect("history is a JSON array")
        .iter()
        .map(|r| {
            (
                r["revision"].as_i64().expect("revision"),
                r["status"].as_str().expect("status").to_string(),
                r["description"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// `helm list` as (name, revision, status, chart) rows.
fn releases(cluster: &Cluster) -> Vec<(String, String, String, String)> {
    let l = helm_json(cluster, &["list"]);
    l.as_array()
        .expect("list is a JSON array")
        .iter()
        .map(|r| {
            let s = |k: &str| match &r[k] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (s("name"), s("revision"), s("status"), s("chart"))
        })
        .collect()
}

#[test]
fn install_upgrade_rollback_uninstall() {
    let cluster = Cluster::start();
    let kube = Kube::new(&cluster);
    let chart = common::fixture("charts/demo");
    let chart = chart.to_str().expect("utf-8 chart path");
    assert!(Path::new(chart).join("Chart.yaml").exists(), "chart fixture at {chart}");

    helm_ok(&cluster, &["install", "demo", chart]);
    let rel = releases(&cluster);
    assert_eq!(rel, [("demo".into(), "1".into(), "deployed".into(), "demo-0.1.0".into())], "helm list after install");
    assert_eq!(kube.objects(&cluster), expected(1, "1.36", "a"), "objects after install");
    assert_eq!(kube.release_secrets(&cluster), ["sh.helm.release.v1.demo.v1"]);
    let status = helm_json(&cluster, &["status", "demo"]);
    assert_eq!(status["info"]["status"], "deployed", "helm status: {status}");

    helm_ok(&cluster, &["upgrade", "demo", chart, "--set", "replicas=3,config=b", "--set", "image.tag=1.37"]);
    assert_eq!(kube.objects(&cluster), expected(3, "1.37", "b"), "objects after upgrade");
    let rel = releases(&cluster);
    assert_eq!(
        (rel.len(), rel[0].1.as_str(), rel[0].2.as_str()),
        (1, "2", "deployed"),
        "helm list after upgrade: {rel:?}"
    );
    let values = helm_json(&cluster, &["get", "values", "demo"]);
    assert_eq!((&values["replicas"], &values["config"]), (&Value::from(3), &Value::from("b")), "user values: {values}");

    helm_ok(&cluster, &["rollback", "demo", "1"]);
    assert_eq!(kube.objects(&cluster), expected(1, "1.36", "a"), "objects after rollback to 1");
    let h = history(&cluster);
    let rows: Vec<(i64, &str)> = h.iter().map(|(r, s, _)| (*r, s.as_str())).collect();
    assert_eq!(rows, [(1, "superseded"), (2, "superseded"), (3, "deployed")], "helm history: {h:?}");
    assert!(h[2].2.contains("Rollback to 1"), "revision 3 is the rollback: {h:?}");
    assert_eq!(
        kube.release_secrets(&cluster),
        ["sh.helm.release.v1.demo.v1", "sh.helm.release.v1.demo.v2", "sh.helm.release.v1.demo.v3"]
    );
    let table = helm_ok(&cluster, &["history", "demo"]);
    assert!(table.contains("REVISION") && table.contains("Rollback to 1"), "helm history table: {table}");

    helm_ok(&cluster, &["uninstall", "demo"]);
    let none = Objects { replicas: None, image: None, mode: None, password: None, service_port: None };
    assert_eq!(kube.objects(&cluster), none, "uninstall removes every object of the chart");
    assert_eq!(kube.release_secrets(&cluster), Vec::<String>::new(), "uninstall removes the release records");
    let left = releases(&cluster);
    assert!(left.is_empty(), "helm list after uninstall: {left:?}");
    let out = helm(&cluster, &["status", "demo"]);
    assert!(!out.status.success(), "helm status of an uninstalled release fails");
}
