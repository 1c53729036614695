//! The real kubectl against an in-process control plane: ConfigMaps and Secrets (the tutorial's
//! section 2.7) made from literals, files, folders and env files, from YAML, and the
//! docker-registry Secret a Pod's `imagePullSecrets` names.

mod common;
mod kubectl_support;

use common::Cluster;
use kubectl_support::{Table, arg, assert_line, describe_field, stderr, stdout, tutorial_arg, yaml};
use serde_json::json;

/// Writes the tutorial's `username`/`password` files, a folder of two config files and an env file.
fn write_inputs(c: &Cluster) {
    c.write("username", "admin");
    c.write("password", "123456");
    c.write("config-files/app.properties", "color=blue\n");
    c.write("config-files/ui.conf", "theme=dark\n");
    c.write("app.env", "# settings\nLOG_LEVEL=debug\nWORKERS=4\n\nEMPTY=\n");
    c.write("redis.conf", "daemonize yes\nrequirepass root\n");
}

#[test]
fn configmaps_from_literals_files_folders_and_env_files() {
    let c = Cluster::start();
    write_inputs(&c);
    let p = |name: &str| c.path(name).to_str().expect("UTF-8 path").to_string();

    // `kubectl create configmap my-config --from-literal=key1=value1 --from-literal=key2=value2`
    assert_eq!(
        c.ok(&["create", "configmap", "my-config", "--from-literal=key1=value1", "--from-literal=key2=value2"]),
        "configmap/my-config created\n"
    );
    let cm = c.json(&["get", "configmap", "my-config"]);
    assert_eq!(cm["data"], json!({"key1": "value1", "key2": "value2"}));

    // From files, with the file names as keys (or a key given before `=`).
    assert_eq!(
        c.ok(&[
            "create",
            "configmap",
            "myconfigmap",
            &format!("--from-file={}", p("username")),
            &format!("--from-file={}", p("password")),
            &format!("--from-file=pw={}", p("password")),
        ]),
        "configmap/myconfigmap created\n"
    );
    assert_eq!(
        c.json(&["get", "cm", "myconfigmap"])["data"],
        json!({"username": "admin", "password": "123456", "pw": "123456"})
    );

    // From a folder: one key per file.
    let folder = format!("{}/", p("config-files"));
    c.ok(&["create", "configmap", "folder-config", &format!("--from-file={folder}")]);
    assert_eq!(
        c.json(&["get", "cm", "folder-config"])["data"],
        json!({"app.properties": "color=blue\n", "ui.conf": "theme=dark\n"})
    );

    // From an env file: comments and blank lines are skipped.
    c.ok(&["create", "configmap", "env-config", &format!("--from-env-file={}", p("app.env"))]);
    assert_eq!(
        c.json(&["get", "cm", "env-config"])["data"],
        json!({"LOG_LEVEL": "debug", "WORKERS": "4", "EMPTY": ""})
    );

    // Bytes that are not UTF-8 go to binaryData.
    std::fs::write(c.path("blob.bin"), [0xff, 0x00, 0xfe]).expect("write blob");
    c.ok(&["create", "configmap", "binary", &format!("--from-file={}", p("blob.bin"))]);
    let cm = c.json(&["get", "cm", "binary"]);
    assert_eq!(cm["binaryData"], json!({"blob.bin": "/wD+"}));

    // The redis example: `kubectl create cm redis-conf --from-file=redis.conf`, `get cm redis-conf -oyaml`.
    assert_eq!(
        c.ok(&["create", "cm", "redis-conf", &format!("--from-file={}", p("redis.conf"))]),
        "configmap/redis-conf created\n"
    );
    let cm = yaml(&c.ok(&["get", "cm", "redis-conf", "-oyaml"]));
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "redis-conf");
    assert_eq!(cm["metadata"]["namespace"], "default");
    assert_eq!(cm["data"], json!({"redis.conf": "daemonize yes\nrequirepass root\n"}));

    // `kubectl get configmap` / `kubectl get cm`
    let t = Table::parse(&c.ok(&["get", "configmap"]));
    assert_eq!(t.headers, ["NAME", "DATA", "AGE"]);
    for (name, data) in [
        ("my-config", "2"),
        ("myconfigmap", "3"),
        ("folder-config", "2"),
        ("env-config", "3"),
        ("binary", "1"),
        ("redis-conf", "1"),
    ] {
        assert_eq!(t.cell(name, "DATA"), data, "DATA of {name}");
    }
    assert_eq!(Table::parse(&c.ok(&["get", "cm", "my-config"])).names(), ["my-config"]);

    // `kubectl describe configmap my-config`
    let d = c.ok(&["describe", "configmap", "my-config"]);
    assert_eq!(describe_field(&d, "Name").as_deref(), Some("my-config"), "{d}");
    assert_eq!(describe_field(&d, "Namespace").as_deref(), Some("default"), "{d}");
    assert!(d.contains("Data\n====\n"), "{d}");
    assert!(d.contains("key1:\n----\nvalue1\n"), "{d}");
    assert!(d.contains("key2:\n----\nvalue2\n"), "{d}");
    assert!(d.lines().any(|l| l.starts_with("Events:")), "{d}");

    // `kubectl delete cm my-config`
    assert_eq!(c.ok(&["delete", "cm", "my-config"]), "configmap \"my-config\" deleted from default namespace\n");
    let err = c.fails(&["get", "cm", "my-config"]);
    assert!(err.contains(r#"Error from server (NotFound): configmaps "my-config" not found"#), "{err}");

    // The tutorial's YAML: two ConfigMaps in one file, and redis-conf applied over the one made
    // from a file (kubectl warns that it lacks the last-applied annotation, then patches it).
    assert_eq!(
        c.ok(&["apply", "-f", &tutorial_arg("my-config.yaml")]),
        "configmap/my-config created\nconfigmap/app-config created\n"
    );
    assert_eq!(c.json(&["get", "cm", "app-config"])["data"], json!({"application.yml": "name: fox\n"}));
    let out = c.kubectl(&["apply", "-f", &tutorial_arg("redis-conf.yaml")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "configmap/redis-conf configured\n");
    assert!(
        stderr(&out).contains("missing the kubectl.kubernetes.io/last-applied-configuration annotation"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        c.json(&["get", "cm", "redis-conf"])["data"],
        json!({"redis.conf": "maxmemory-policy allkeys-lru\nrequirepass root\n"})
    );

    // The redis Pod mounting it, with volume defaults.
    assert_eq!(c.ok(&["apply", "-f", &tutorial_arg("redis-pod.yaml")]), "pod/redis created\n");
    let pod = c.json(&["get", "pod", "redis"]);
    let volumes = &pod["spec"]["volumes"];
    assert_eq!(volumes[0], json!({"name": "data", "emptyDir": {}}));
    assert_eq!(
        volumes[1],
        json!({"name": "config", "configMap": {"name": "redis-conf", "items": [{"key": "redis.conf", "path": "redis.conf"}], "defaultMode": 420}})
    );
    assert_eq!(pod["spec"]["containers"][0]["command"], json!(["redis-server", "/redis-master/redis.conf"]));
    assert_eq!(pod["spec"]["containers"][0]["ports"], json!([{"containerPort": 6379, "protocol": "TCP"}]));
}

#[test]
fn secrets_generic_yaml_and_docker_registry() {
    let c = Cluster::start();
    write_inputs(&c);
    let p = |name: &str| c.path(name).to_str().expect("UTF-8 path").to_string();
    let decoded = |secret: &str, key: &str| {
        c.ok(&["get", "secret", secret, "-o", &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}")])
    };

    // `kubectl create secret generic my-secret --from-literal=username=admin --from-literal=password=admin123`
    assert_eq!(
        c.ok(&[
            "create",
            "secret",
            "generic",
            "my-secret",
            "--from-literal=username=admin",
            "--from-literal=password=admin123"
        ]),
        "secret/my-secret created\n"
    );
    let s = c.json(&["get", "secret", "my-secret"]);
    assert_eq!(s["type"], "Opaque");
    assert_eq!(s["data"], json!({"username": "YWRtaW4=", "password": "YWRtaW4xMjM="}));
    assert_eq!(decoded("my-secret", "password"), "admin123");
    let t = Table::parse(&c.ok(&["get", "secret"]));
    assert_eq!(t.headers, ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(t.cell("my-secret", "TYPE"), "Opaque");
    assert_eq!(t.cell("my-secret", "DATA"), "2");
    let d = c.ok(&["describe", "secret", "my-secret"]);
    assert_eq!(describe_field(&d, "Type").as_deref(), Some("Opaque"), "{d}");
    assert_line(&d, &["password:", "8", "bytes"]);
    assert_line(&d, &["username:", "5", "bytes"]);
    assert!(!d.contains("admin123"), "describe does not print secret values: {d}");

    // From files and from an env file.
    c.ok(&[
        "create",
        "secret",
        "generic",
        "mysecret",
        &format!("--from-file={}", p("username")),
        &format!("--from-file={}", p("password")),
    ]);
    assert_eq!(c.json(&["get", "secret", "mysecret"])["data"], json!({"username": "YWRtaW4=", "password": "MTIzNDU2"}));
    c.ok(&["create", "secret", "generic", "my-env-secret", &format!("--from-env-file={}", p("app.env"))]);
    assert_eq!(decoded("my-env-secret", "LOG_LEVEL"), "debug");
    assert_eq!(decoded("my-env-secret", "WORKERS"), "4");
    assert_eq!(Table::parse(&c.ok(&["get", "secret", "my-env-secret"])).cell("my-env-secret", "DATA"), "3");

    // The tutorial's YAML Secret with base64 `data`.
    c.ok(&["delete", "secret", "my-secret"]);
    assert_eq!(c.ok(&["apply", "-f", &tutorial_arg("my-secret.yaml")]), "secret/my-secret created\n");
    assert_eq!(decoded("my-secret", "username"), "admin");
    assert_eq!(decoded("my-secret", "password"), "1f2d1e2e67df");
    let bad = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bad\ndata:\n  key: \"not base64!\"\n";
    let bad_file = c.write("bad-secret.yaml", bad);
    let out = c.kubectl(&["apply", "-f", arg(&bad_file)]);
    assert!(!out.status.success(), "a Secret whose data is not base64 is refused");
    assert!(stderr(&out).contains("illegal base64 data"), "{}", stderr(&out));

    // `kubectl create secret docker-registry myregistrykey …`
    assert_eq!(
        c.ok(&[
            "create",
            "secret",
            "docker-registry",
            "myregistrykey",
            "--docker-server=registry.cn-hangzhou.aliyuncs.com",
            "--docker-username=fox666",
            "--docker-password=xxx",
            "--docker-email=fox@example.com",
        ]),
        "secret/myregistrykey created\n"
    );
    let s = c.json(&["get", "secret", "myregistrykey"]);
    assert_eq!(s["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(
        s["data"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()),
        Some(vec![".dockerconfigjson".to_string()])
    );
    let config: serde_json::Value =
        serde_json::from_str(&decoded("myregistrykey", ".dockerconfigjson")).expect(".dockerconfigjson is JSON");
    assert_eq!(
        config,
        json!({"auths": {"registry.cn-hangzhou.aliyuncs.com": {
            "username": "fox666", "password": "xxx", "email": "fox@example.com", "auth": "Zm94NjY2Onh4eA=="
        }}})
    );
    let t = Table::parse(&c.ok(&["get", "secret", "myregistrykey"]));
    assert_eq!(t.cell("myregistrykey", "TYPE"), "kubernetes.io/dockerconfigjson");
    assert_eq!(t.cell("myregistrykey", "DATA"), "1");
    // A Secret's type cannot change.
    let err = c.fails(&["patch", "secret", "myregistrykey", "--type=merge", "-p", r#"{"type":"Opaque"}"#]);
    assert!(err.contains(r#"The Secret "myregistrykey" is invalid"#) && err.contains("field is immutable"), "{err}");

    // A Pod naming it in imagePullSecrets.
    assert_eq!(
        c.ok(&["apply", "-f", &tutorial_arg("tulingmall-product-pod.yaml")]),
        "pod/tulingmall-product created\n"
    );
    assert_eq!(
        c.ok(&["get", "pod", "tulingmall-product", "-o", "jsonpath={.spec.imagePullSecrets[*].name}"]),
        "myregistrykey"
    );

    // `kubectl delete secret`
    assert_eq!(c.ok(&["delete", "secret", "mysecret"]), "secret \"mysecret\" deleted from default namespace\n");
    assert!(c.fails(&["get", "secret", "mysecret"]).contains(r#"secrets "mysecret" not found"#));
}
