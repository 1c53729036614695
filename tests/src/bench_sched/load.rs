//! The load: plain Pods created by concurrent clients (one HTTP/2 connection each, requests back
//! to back), and one watch on their namespace that notes when each Pod is first seen with a
//! `spec.nodeName` — scheduler_perf counts scheduled pods the same way, from a pod informer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::bench::http::{Conn, Target, WatchStream};

/// A Pod as scheduler_perf's SchedulingBasic makes them: one container with small requests, no
/// affinity, no spread constraints.
pub fn pod_body(namespace: &str, name: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"{namespace}","labels":{{"app":"sched-bench"}}}},"spec":{{"containers":[{{"name":"pause","image":"registry.k8s.io/pause:3.10","resources":{{"requests":{{"cpu":"100m","memory":"128Mi"}}}}}}]}}}}"#
    ))
}

/// What creating the Pods took.
#[derive(Debug, Clone)]
pub struct Created {
    pub started: Instant,
    pub finished: Instant,
    pub created: usize,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// `clients` clients create the Pods `<prefix>0` … `<prefix>{count-1}` (client i takes every
/// clients-th one). Failed creates are counted, not retried.
pub async fn create_pods(
    target: &Target,
    namespace: &str,
    prefix: &str,
    count: usize,
    clients: usize,
) -> anyhow::Result<Created> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::connect(target).await?);
    }
    let path = Arc::new(format!("/api/v1/namespaces/{namespace}/pods"));
    let (namespace, prefix) = (Arc::new(namespace.to_owned()), Arc::new(prefix.to_owned()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let (path, namespace, prefix) = (path.clone(), namespace.clone(), prefix.clone());
        tasks.spawn(async move {
            let (mut created, mut errors, mut first_error) = (0usize, 0usize, None);
            for n in (i..count).step_by(clients) {
                let body = pod_body(&namespace, &format!("{prefix}{n}"));
                match conn.call(Method::POST, &path, Some(body)).await {
                    Ok(reply) if reply.status == StatusCode::CREATED => created += 1,
                    Ok(reply) => {
                        errors += 1;
                        first_error
                            .get_or_insert_with(|| format!("POST {path} → {} {}", reply.status, reply.snippet()));
                    }
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("POST {path}: {error:#}"));
                    }
                }
            }
            (created, errors, first_error)
        });
    }
    let mut out = Created { started, finished: started, created: 0, errors: 0, first_error: None };
    while let Some(joined) = tasks.join_next().await {
        let (created, errors, first_error) = joined.context("create task")?;
        out.created += created;
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
    }
    out.finished = Instant::now();
    Ok(out)
}

#[derive(Deserialize)]
struct List {
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
}

/// How many objects a (cluster-wide or namespaced) collection holds, and its resource version.
pub async fn count(target: &Target, path: &str) -> anyhow::Result<(usize, String)> {
    let mut conn = Conn::connect(target).await?;
    let reply = conn.call(Method::GET, path, None).await?;
    if reply.status != StatusCode::OK {
        bail!("GET {path} → {} {}", reply.status, reply.snippet());
    }
    let list: List = serde_json::from_slice(&reply.body).with_context(|| format!("decode GET {path}"))?;
    Ok((list.items.len(), list.metadata.resource_version))
}

/// Creates a namespace (an existing one is fine).
pub async fn create_namespace(target: &Target, name: &str) -> anyhow::Result<()> {
    let mut conn = Conn::connect(target).await?;
    let body = format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}"}}}}"#);
    let reply = conn.call(Method::POST, "/api/v1/namespaces", Some(Bytes::from(body))).await?;
    if !(reply.status == StatusCode::CREATED || reply.status == StatusCode::CONFLICT) {
        bail!("POST /api/v1/namespaces ({name}) → {} {}", reply.status, reply.snippet());
    }
    Ok(())
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    object: Object<'a>,
}

#[derive(Deserialize)]
struct Object<'a> {
    #[serde(borrow)]
    metadata: Meta<'a>,
    #[serde(default, borrow)]
    spec: Option<Spec<'a>>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(default, borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Spec<'a> {
    #[serde(rename = "nodeName", default, borrow)]
    node_name: Option<std::borrow::Cow<'a, str>>,
}

/// When each Pod was first seen bound, in arrival order.
#[derive(Debug, Default)]
pub struct Bindings {
    pub times: Vec<Instant>,
    /// How many distinct nodes got at least one Pod.
    pub nodes_used: usize,
    /// Why the watch stopped before seeing every Pod bound, if it did.
    pub error: Option<String>,
}

/// A watch counting bindings in the background.
pub struct BindWatch {
    task: tokio::task::JoinHandle<Bindings>,
}

impl BindWatch {
    /// Opens a watch on the namespace's Pods from `from_rv` and returns once the server has
    /// answered (so every later change is seen). The watch ends after `expected` bindings, or
    /// when nothing was bound for `stall`, or at `deadline`.
    pub async fn start(
        target: &Target,
        namespace: &str,
        from_rv: &str,
        expected: usize,
        stall: Duration,
        deadline: Instant,
    ) -> anyhow::Result<BindWatch> {
        let path = format!("/api/v1/namespaces/{namespace}/pods?watch=true&resourceVersion={from_rv}");
        let mut stream = WatchStream::open(target, &path).await?;
        let task = tokio::spawn(async move {
            let mut out = Bindings::default();
            let mut bound: HashSet<String> = HashSet::with_capacity(expected);
            let mut nodes: HashSet<String> = HashSet::new();
            let mut last_progress = Instant::now();
            while bound.len() < expected {
                let wait = stall
                    .saturating_sub(last_progress.elapsed())
                    .min(deadline.saturating_duration_since(Instant::now()));
                let received = match tokio::time::timeout(wait, stream.read()).await {
                    Ok(Ok(received)) => received,
                    Ok(Err(why)) => {
                        out.error = Some(format!("{why} with {} of {expected} bound", bound.len()));
                        break;
                    }
                    Err(_) => {
                        out.error = Some(if Instant::now() >= deadline {
                            format!("time cap reached with {} of {expected} Pods bound", bound.len())
                        } else {
                            format!("no Pod bound for {stall:?}; {} of {expected} bound", bound.len())
                        });
                        break;
                    }
                };
                while let Some(line) = stream.next_line() {
                    match serde_json::from_slice::<Event<'_>>(line) {
                        Ok(event) if event.kind == "ADDED" || event.kind == "MODIFIED" => {
                            let node = event.object.spec.and_then(|s| s.node_name).unwrap_or_default();
                            let name = event.object.metadata.name.unwrap_or_default();
                            if !node.is_empty() && !bound.contains(name.as_ref()) {
                                bound.insert(name.into_owned());
                                if !nodes.contains(node.as_ref()) {
                                    nodes.insert(node.into_owned());
                                }
                                out.times.push(received);
                                last_progress = received;
                            }
                        }
                        Ok(event) if event.kind == "ERROR" => {
                            out.error.get_or_insert_with(|| {
                                format!("watch ERROR event: {}", String::from_utf8_lossy(&line[..line.len().min(300)]))
                            });
                        }
                        Ok(_) => {}
                        Err(error) => {
                            out.error.get_or_insert_with(|| {
                                format!(
                                    "undecodable watch event ({error}): {}",
                                    String::from_utf8_lossy(&line[..line.len().min(200)])
                                )
                            });
                        }
                    }
                }
            }
            out.nodes_used = nodes.len();
            out
        });
        Ok(BindWatch { task })
    }

    /// Waits for the watch to end (every Pod bound, a stall, or the deadline).
    pub async fn finish(self) -> anyhow::Result<Bindings> {
        self.task.await.context("binding watch task")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_body_is_a_pod_with_requests() {
        let body = pod_body("ns", "p-1");
        let pod: serde_json::Value = serde_json::from_slice(&body).expect("pod body is JSON");
        assert_eq!(pod["metadata"]["name"], "p-1");
        assert_eq!(pod["spec"]["containers"][0]["resources"]["requests"]["cpu"], "100m");
        assert_eq!(pod["spec"]["containers"][0]["resources"]["requests"]["memory"], "128Mi");
        assert!(pod["spec"].get("affinity").is_none());
    }

    #[test]
    fn watch_events_decode_with_and_without_node() {
        let bound =
            br#"{"type":"MODIFIED","object":{"metadata":{"name":"p"},"spec":{"nodeName":"n1","containers":[]}}}"#;
        let e: Event<'_> = serde_json::from_slice(bound).expect("bound event");
        assert_eq!(e.object.spec.and_then(|s| s.node_name).as_deref(), Some("n1"));
        let pending = br#"{"type":"ADDED","object":{"metadata":{"name":"p\"q"},"spec":{"containers":[]}}}"#;
        let e: Event<'_> = serde_json::from_slice(pending).expect("pending event, escaped name");
        assert_eq!(e.object.metadata.name.as_deref(), Some("p\"q"));
        assert!(e.object.spec.and_then(|s| s.node_name).is_none());
    }
}
