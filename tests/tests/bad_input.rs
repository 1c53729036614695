//! Bad requests, sent by hand through `kube::Client::send`: each must be answered with the
//! `Status` kube-apiserver would send (code, reason, details) and must write nothing.

mod common;

use common::Cluster;
use http::Request;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

/// A client with the cluster's kubeconfig; `token` replaces the bearer token (`Some("")`: none).
async fn client_with(cluster: &Cluster, token: Option<&str>) -> Client {
    let kc = Kubeconfig::read_from(&cluster.kubeconfig).expect("kubeconfig parses");
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config");
    match token {
        None => {}
        Some("") => cfg.auth_info = Default::default(),
        Some(t) => cfg.auth_info.token = Some(t.into()),
    }
    Client::try_from(cfg).expect("client builds")
}

/// An HTTP answer: status code and the body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug)]
struct Answer {
    code: u16,
    body: Value,
    text: String,
}

impl Answer {
    /// Checks a `Status` answer with this code and reason.
    #[track_caller]
    fn status(&self, code: u16, reason: &str) -> &Self {
        assert_eq!(self.code, code, "HTTP status; body: {}", self.text);
        assert_eq!(self.body["kind"], "Status", "a Status body: {}", self.text);
        assert_eq!(self.body["status"], "Failure", "{}", self.text);
        assert_eq!(self.body["code"], code, "Status.code: {}", self.text);
        assert_eq!(self.body["reason"], reason, "Status.reason: {}", self.text);
        self
    }

    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }

    /// `details.causes` as (field, reason) pairs.
    fn causes(&self) -> Vec<(String, String)> {
        self.body["details"]["causes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (c["field"].as_str().unwrap_or("").to_string(), c["reason"].as_str().unwrap_or("").to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn send(client: &Client, method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
    let mut req = Request::builder().method(method).uri(path).header("Accept", "application/json");
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let req = req.body(kube::client::Body::from(body)).expect("request builds");
    let resp = client.send(req).await.unwrap_or_else(|e| panic!("{method} {path}: transport error {e}"));
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect_bytes().await.expect("response body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer { code, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), text }
}

async fn send_json(client: &Client, method: &str, path: &str, body: &Value) -> Answer {
    send(client, method, path, Some("application/json"), serde_json::to_vec(body).expect("json")).await
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

/// What is stored, to compare before and after a bad request: the store's revision (it moves on
/// any write anywhere) and the names and resourceVersions of the objects under `paths`.
async fn snapshot(client: &Client, paths: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let ns = send(client, "GET", "/api/v1/namespaces", None, Vec::new()).await;
    assert_eq!(ns.code, 200, "list namespaces: {}", ns.text);
    out.push(format!("revision {}", ns.body["metadata"]["resourceVersion"]));
    for p in paths {
        let l = send(client, "GET", p, None, Vec::new()).await;
        assert_eq!(l.code, 200, "list {p}: {}", l.text);
        for item in l.body["items"].as_array().expect("items") {
            out.push(format!("{p} {} {}", item["metadata"]["name"], item["metadata"]["resourceVersion"]));
        }
    }
    out
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "busybox:local"}]},
            },
        },
    })
}

#[test]
fn malformed_bodies_are_bad_requests() {
    let cluster = Cluster::start_standalone();
    cluster.runtime().block_on(async {
        let c = client_with(&cluster, None).await;
        assert_eq!(send_json(&c, "POST", CMS, &config_map("keep")).await.code, 201, "seed object");
        let before = snapshot(&c, &[CMS]).await;

        let json_bodies: [&[u8]; 4] = [
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"broken""#,
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"broken"},}"#,
            b"not json at all",
            b"",
        ];
        for body in json_bodies {
            let a = send(&c, "POST", CMS, Some("application/json"), body.to_vec()).await;
            a.status(400, "BadRequest");
        }
        let a = send(&c, "POST", CMS, Some("application/json"), b"[1, 2]".to_vec()).await;
        a.status(400, "BadRequest");

        let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n  labels: {a: b\n".to_vec();
        send(&c, "POST", CMS, Some("application/yaml"), yaml).await.status(400, "BadRequest");
        let yaml_tabs = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: tabbed\n".to_vec();
        send(&c, "POST", CMS, Some("application/yaml"), yaml_tabs).await.status(400, "BadRequest");

        // Protobuf: no `k8s\0` magic at all.
        let garbage = b"\xff\xfe\x00\x01garbage\x80\x80\x80".to_vec();
        send(&c, "POST", CMS, Some("application/vnd.kubernetes.protobuf"), garbage).await.status(400, "BadRequest");
        // The magic, then a runtime.Unknown whose typeMeta claims 14 bytes but has 9.
        let mut truncated = b"k8s\0".to_vec();
        truncated.extend_from_slice(&[0x0a, 0x0e, 0x0a, 0x02, b'v', b'1', 0x12, 0x09, b'C', b'o', b'n']);
        send(&c, "POST", CMS, Some("application/vnd.kubernetes.protobuf"), truncated).await.status(400, "BadRequest");
        // The magic and a whole Unknown envelope (v1 ConfigMap) whose raw ConfigMap is cut short.
        let mut cut_raw = b"k8s\0".to_vec();
        let type_meta = [&[0x0a, 0x02][..], b"v1", &[0x12, 0x09], b"ConfigMap"].concat();
        let raw_cm = [&[0x0a, 0x20, 0x0a, 0x05][..], b"trunc"].concat(); // ObjectMeta claims 32 bytes
        cut_raw.extend_from_slice(&[0x0a, type_meta.len() as u8]);
        cut_raw.extend_from_slice(&type_meta);
        cut_raw.extend_from_slice(&[0x12, raw_cm.len() as u8]);
        cut_raw.extend_from_slice(&raw_cm);
        send(&c, "POST", CMS, Some("application/vnd.kubernetes.protobuf"), cut_raw).await.status(400, "BadRequest");
        // Only the magic.
        let a = send(&c, "POST", CMS, Some("application/vnd.kubernetes.protobuf"), b"k8s\0".to_vec()).await;
        a.status(400, "BadRequest");

        // Malformed bodies on update and patch.
        let put = format!("{CMS}/keep");
        send(&c, "PUT", &put, Some("application/json"), b"{\"metadata\":".to_vec()).await.status(400, "BadRequest");
        send(&c, "PATCH", &put, Some("application/merge-patch+json"), b"{\"data\":".to_vec())
            .await
            .status(400, "BadRequest");
        send(&c, "PATCH", &put, Some("application/strategic-merge-patch+json"), b"{oops}".to_vec())
            .await
            .status(400, "BadRequest");
        send(&c, "PATCH", &put, Some("application/json-patch+json"), b"[{\"op\":".to_vec())
            .await
            .status(400, "BadRequest");
        let not_ops = br#"{"op": "add", "path": "/data/x", "value": "1"}"#.to_vec();
        send(&c, "PATCH", &put, Some("application/json-patch+json"), not_ops).await.status(400, "BadRequest");

        assert_eq!(snapshot(&c, &[CMS]).await, before, "malformed requests wrote nothing");
    });
}

#[test]
fn strict_field_validation_names_unknown_fields() {
    let cluster = Cluster::start_standalone();
    cluster.runtime().block_on(async {
        let c = client_with(&cluster, None).await;
        let before = snapshot(&c, &[DEPLOYS]).await;
        let strict = format!("{DEPLOYS}?fieldValidation=Strict");

        let mut d = deployment("strict");
        d["spec"]["bogus"] = json!(1);
        let a = send_json(&c, "POST", &strict, &d).await;
        a.status(400, "BadRequest");
        assert!(a.message().contains(r#"unknown field "spec.bogus""#), "message names the field: {}", a.message());

        let mut d = deployment("strict");
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always");
        let a = send_json(&c, "POST", &strict, &d).await;
        a.status(400, "BadRequest");
        let field = r#"unknown field "spec.template.spec.containers[0].imagePullPolicyy""#;
        assert!(a.message().contains(field), "message names the nested field: {}", a.message());

        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: strict\n  bogusMeta: x\nspec:\n  selector:\n    matchLabels: {app: s}\n  template:\n    metadata:\n      labels: {app: s}\n    spec:\n      containers: [{name: c, image: busybox:local}]\n";
        let a = send(&c, "POST", &strict, Some("application/yaml"), yaml.as_bytes().to_vec()).await;
        a.status(400, "BadRequest");
        assert!(a.message().contains(r#"unknown field "metadata.bogusMeta""#), "YAML body: {}", a.message());
        assert_eq!(snapshot(&c, &[DEPLOYS]).await, before, "strict rejections wrote nothing");

        // Updates and patches are checked too.
        assert_eq!(send_json(&c, "POST", DEPLOYS, &deployment("strict")).await.code, 201, "valid create");
        let before = snapshot(&c, &[DEPLOYS]).await;
        let one = format!("{DEPLOYS}/strict?fieldValidation=Strict");
        let mut d = deployment("strict");
        d["spec"]["bogus"] = json!(true);
        let a = send_json(&c, "PUT", &one, &d).await;
        a.status(400, "BadRequest");
        assert!(a.message().contains(r#"unknown field "spec.bogus""#), "PUT: {}", a.message());
        let patch = serde_json::to_vec(&json!({"spec": {"bogus": 1}})).expect("json");
        let a = send(&c, "PATCH", &one, Some("application/merge-patch+json"), patch).await;
        a.status(400, "BadRequest");
        assert!(a.message().contains(r#"unknown field "spec.bogus""#), "PATCH: {}", a.message());
        assert_eq!(snapshot(&c, &[DEPLOYS]).await, before, "strict rejections of writes wrote nothing");

        // With Ignore the write succeeds and the unknown field is dropped, as decoding into the type does.
        let mut d = deployment("ignored");
        d["spec"]["bogus"] = json!(1);
        let a = send_json(&c, "POST", &format!("{DEPLOYS}?fieldValidation=Ignore"), &d).await;
        assert_eq!(a.code, 201, "Ignore accepts unknown fields: {}", a.text);
        let got = send(&c, "GET", &format!("{DEPLOYS}/ignored"), None, Vec::new()).await;
        assert_eq!(got.code, 200);
        assert!(got.body["spec"].get("bogus").is_none(), "unknown fields are not stored: {}", got.text);
        let a = send_json(&c, "POST", &format!("{DEPLOYS}?fieldValidation=Sloppy"), &deployment("sloppy")).await;
        a.status(400, "BadRequest");
    });
}

#[test]
fn invalid_objects_are_unprocessable() {
    let cluster = Cluster::start_standalone();
    cluster.runtime().block_on(async {
        let c = client_with(&cluster, None).await;
        let before = snapshot(&c, &[CMS, PODS, DEPLOYS]).await;

        let a = send_json(&c, "POST", CMS, &config_map("Bad_Name")).await;
        a.status(422, "Invalid");
        assert_eq!(a.body["details"]["name"], "Bad_Name", "{}", a.text);
        assert_eq!(a.body["details"]["kind"], "ConfigMap", "{}", a.text);
        let causes = a.causes();
        assert_eq!(causes.first().map(|(f, _)| f.as_str()), Some("metadata.name"), "causes: {}", a.text);
        assert_eq!(causes[0].1, "FieldValueInvalid");
        assert!(a.message().starts_with(r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name""#), "{}", a.message());

        let mut no_name = config_map("x");
        no_name["metadata"] = json!({});
        let a = send_json(&c, "POST", CMS, &no_name).await;
        a.status(422, "Invalid");
        assert!(a.causes().iter().any(|(f, r)| f == "metadata.name" && r == "FieldValueRequired"), "{}", a.text);

        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "empty"}, "spec": {"containers": []}});
        let a = send_json(&c, "POST", PODS, &pod).await;
        a.status(422, "Invalid");
        assert_eq!(a.body["details"]["kind"], "Pod");
        assert!(a.causes().iter().any(|(f, r)| f == "spec.containers" && r == "FieldValueRequired"), "pod without containers: {}", a.text);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nospec"}});
        send_json(&c, "POST", PODS, &pod).await.status(422, "Invalid");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "noimage"}, "spec": {"containers": [{"name": "c"}]}});
        let a = send_json(&c, "POST", PODS, &pod).await;
        a.status(422, "Invalid");
        assert!(a.causes().iter().any(|(f, _)| f == "spec.containers[0].image"), "container without image: {}", a.text);

        let mut d = deployment("nosel");
        d["spec"].as_object_mut().expect("spec").remove("selector");
        let a = send_json(&c, "POST", DEPLOYS, &d).await;
        a.status(422, "Invalid");
        assert_eq!(a.body["details"]["group"], "apps", "{}", a.text);
        assert!(a.causes().iter().any(|(f, r)| f == "spec.selector" && r == "FieldValueRequired"), "deployment without selector: {}", a.text);
        let mut d = deployment("mismatch");
        d["spec"]["selector"]["matchLabels"] = json!({"app": "other"});
        let a = send_json(&c, "POST", DEPLOYS, &d).await;
        a.status(422, "Invalid");
        assert!(a.causes().iter().any(|(f, _)| f == "spec.template.metadata.labels"), "selector must match template labels: {}", a.text);

        assert_eq!(snapshot(&c, &[CMS, PODS, DEPLOYS]).await, before, "invalid objects were not stored");

        // An invalid update leaves the stored object as it was.
        assert_eq!(send_json(&c, "POST", DEPLOYS, &deployment("good")).await.code, 201);
        let before = snapshot(&c, &[DEPLOYS]).await;
        let patch = serde_json::to_vec(&json!({"spec": {"replicas": -2}})).expect("json");
        let a = send(&c, "PATCH", &format!("{DEPLOYS}/good"), Some("application/merge-patch+json"), patch).await;
        a.status(422, "Invalid");
        assert!(a.causes().iter().any(|(f, _)| f == "spec.replicas"), "{}", a.text);
        assert_eq!(snapshot(&c, &[DEPLOYS]).await, before, "invalid patch wrote nothing");
    });
}

#[test]
fn conflicts_and_duplicates() {
    let cluster = Cluster::start_standalone();
    cluster.runtime().block_on(async {
        let c = client_with(&cluster, None).await;
        let created = send_json(&c, "POST", CMS, &config_map("cm")).await;
        assert_eq!(created.code, 201, "{}", created.text);
        let stale_rv = created.body["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
        let mut update = created.body.clone();
        update["data"] = json!({"k": "v2"});
        let a = send_json(&c, "PUT", &format!("{CMS}/cm"), &update).await;
        assert_eq!(a.code, 200, "update with the current resourceVersion: {}", a.text);
        assert_ne!(a.body["metadata"]["resourceVersion"].as_str(), Some(stale_rv.as_str()));

        let before = snapshot(&c, &[CMS]).await;
        let mut stale = created.body.clone();
        stale["data"] = json!({"k": "stale"});
        let a = send_json(&c, "PUT", &format!("{CMS}/cm"), &stale).await;
        a.status(409, "Conflict");
        assert_eq!(
            (&a.body["details"]["name"], &a.body["details"]["kind"]),
            (&json!("cm"), &json!("configmaps")),
            "{}",
            a.text
        );
        assert!(a.message().contains("the object has been modified"), "{}", a.message());
        // A patch carrying a stale resourceVersion is a conflict too.
        let patch =
            serde_json::to_vec(&json!({"metadata": {"resourceVersion": stale_rv}, "data": {"k": "p"}})).expect("json");
        let a = send(&c, "PATCH", &format!("{CMS}/cm"), Some("application/merge-patch+json"), patch).await;
        a.status(409, "Conflict");

        let a = send_json(&c, "POST", CMS, &config_map("cm")).await;
        a.status(409, "AlreadyExists");
        assert_eq!(
            (&a.body["details"]["name"], &a.body["details"]["kind"]),
            (&json!("cm"), &json!("configmaps")),
            "{}",
            a.text
        );
        assert_eq!(a.message(), r#"configmaps "cm" already exists"#);
        assert_eq!(snapshot(&c, &[CMS]).await, before, "conflicts wrote nothing");
        let got = send(&c, "GET", &format!("{CMS}/cm"), None, Vec::new()).await;
        assert_eq!(got.body["data"], json!({"k": "v2"}));
    });
}

#[test]
fn missing_things_are_not_found() {
    let cluster = Cluster::start_standalone();
    cluster.runtime().block_on(async {
        let c = client_with(&cluster, None).await;
        let before = snapshot(&c, &[CMS]).await;

        for path in [
            "/api/v1/namespaces/default/bogusthings",
            "/api/v1/bogusthings",
            "/apis/nope.example.com/v1/widgets",
            "/apis/apps/v9/deployments",
            "/api/v1/namespaces/default/configmaps/x/bogussub",
            "/nothing/here",
        ] {
            send(&c, "GET", path, None, Vec::new()).await.status(404, "NotFound");
        }
        let a = send_json(&c, "POST", "/api/v1/namespaces/default/bogusthings", &config_map("x")).await;
        a.status(404, "NotFound");

        let a = send(&c, "GET", &format!("{CMS}/nope"), None, Vec::new()).await;
        a.status(404, "NotFound");
        assert_eq!(
            (&a.body["details"]["name"], &a.body["details"]["kind"]),
            (&json!("nope"), &json!("configmaps")),
            "{}",
            a.text
        );
        assert_eq!(a.message(), r#"configmaps "nope" not found"#);
        let a = send(&c, "GET", &format!("{DEPLOYS}/nope"), None, Vec::new()).await;
        a.status(404, "NotFound");
        assert_eq!(a.body["details"]["group"], "apps", "{}", a.text);
        assert_eq!(a.message(), r#"deployments.apps "nope" not found"#);
        send(&c, "DELETE", &format!("{CMS}/nope"), None, Vec::new()).await.status(404, "NotFound");
        send_json(&c, "PUT", &format!("{CMS}/nope"), &config_map("nope")).await.status(404, "NotFound");
        let patch = b"{\"data\":{\"a\":\"b\"}}".to_vec();
        send(&c, "PATCH", &format!("{CMS}/nope"), Some("application/merge-patch+json"), patch)
            .await
            .status(404, "NotFound");

        let a = send_json(&c, "POST", "/api/v1/namespaces/no-such-ns/configmaps", &config_map("orphan")).await;
        a.status(404, "NotFound");
        assert_eq!(
            (&a.body["details"]["name"], &a.body["details"]["kind"]),
            (&json!("no-such-ns"), &json!("namespaces")),
            "{}",
            a.text
        );
        assert_eq!(a.message(), r#"namespaces "no-such-ns" not found"#);
        let a = send(&c, "GET", "/api/v1/namespaces/no-such-ns/configmaps/orphan", None, Vec::new()).await;
        a.status(404, "NotFound");

        assert_eq!(snapshot(&c, &[CMS]).await, before, "not-found requests wrote nothing");
    });
}

#[test]
fn unsupported_media_type_and_oversized_bodies() {
    let cluster = Cluster::start_standalone();
    cluster.runtime().block_on(async {
        let c = client_with(&cluster, None).await;
        assert_eq!(send_json(&c, "POST", CMS, &config_map("keep")).await.code, 201, "seed object");
        let before = snapshot(&c, &[CMS]).await;
        let body = serde_json::to_vec(&config_map("texty")).expect("json");

        send(&c, "POST", CMS, Some("text/plain"), body.clone()).await.status(415, "UnsupportedMediaType");
        send(&c, "PUT", &format!("{CMS}/keep"), Some("text/plain"), body.clone())
            .await
            .status(415, "UnsupportedMediaType");
        let patch = b"{\"data\":{\"a\":\"b\"}}".to_vec();
        let one = format!("{CMS}/keep");
        send(&c, "PATCH", &one, Some("text/plain"), patch.clone()).await.status(415, "UnsupportedMediaType");
        // application/json is not a patch type.
        send(&c, "PATCH", &one, Some("application/json"), patch).await.status(415, "UnsupportedMediaType");

        // 3 MiB is the limit for a whole request body.
        let mut big = config_map("huge");
        big["data"] = json!({"blob": "x".repeat(3 * 1024 * 1024 + 1024)});
        let a = send_json(&c, "POST", CMS, &big).await;
        a.status(413, "RequestEntityTooLarge");
        let mut big_update = config_map("keep");
        big_update["data"] = json!({"blob": "y".repeat(4 * 1024 * 1024)});
        send_json(&c, "PUT", &one, &big_update).await.status(413, "RequestEntityTooLarge");

        assert_eq!(snapshot(&c, &[CMS]).await, before, "rejected bodies wrote nothing");
        let a = send_json(&c, "POST", CMS, &config_map("after")).await;
        assert_eq!(a.code, 201, "the server still serves after a too-large body: {}", a.text);
    });
}

#[test]
fn requests_without_a_valid_token_are_unauthorized() {
    let cluster = Cluster::start_standalone();
    cluster.runtime().block_on(async {
        let admin = client_with(&cluster, None).await;
        let before = snapshot(&admin, &[CMS]).await;
        for (what, token) in [("no token", ""), ("wrong token", "not-the-token"), ("prefix of the token", "a")] {
            let c = client_with(&cluster, Some(token)).await;
            for (method, path) in
                [("GET", CMS), ("GET", "/api/v1/namespaces"), ("GET", "/api"), ("GET", "/apis/apps/v1")]
            {
                let a = send(&c, method, path, None, Vec::new()).await;
                assert_eq!(a.code, 401, "{what}: {method} {path}: {}", a.text);
                assert_eq!(a.body["reason"], "Unauthorized", "{what}: {}", a.text);
            }
            let a = send_json(&c, "POST", CMS, &config_map("intruder")).await;
            a.status(401, "Unauthorized");
            let a = send(&c, "DELETE", "/api/v1/namespaces/default", None, Vec::new()).await;
            a.status(401, "Unauthorized");
        }
        let token = cluster.token();
        let prefix = &token[..token.len() / 2];
        let c = client_with(&cluster, Some(prefix)).await;
        send(&c, "GET", CMS, None, Vec::new()).await.status(401, "Unauthorized");
        let c = client_with(&cluster, Some(&format!("{token}x"))).await;
        send(&c, "GET", CMS, None, Vec::new()).await.status(401, "Unauthorized");

        assert_eq!(snapshot(&admin, &[CMS]).await, before, "unauthenticated requests wrote nothing");
        let ns = send(&admin, "GET", "/api/v1/namespaces/default", None, Vec::new()).await;
        assert_eq!(ns.code, 200, "default namespace survives: {}", ns.text);
        assert!(ns.body["metadata"].get("deletionTimestamp").is_none(), "{}", ns.text);
    });
}
