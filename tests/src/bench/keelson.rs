//! The API workloads: Pods created, replaced, read and listed by N concurrent clients (one
//! HTTP/2 connection each, requests back to back), and watchers that time event delivery.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::http::{Conn, Reply, Target, WatchStream};
use super::stats::{Phase, XorShift};

/// A Pod the benchmark created, with the resource version of its last write.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub resource_version: String,
    /// Value of the `gen` label, bumped by every update.
    pub generation: u64,
}

/// The JSON body of a Pod: one container with requests, a few labels and an env var, about the
/// shape of a small real workload. With `resource_version`, a replace conditional on it.
pub fn pod_body(namespace: &str, name: &str, generation: u64, resource_version: Option<&str>) -> Bytes {
    let rv = resource_version.map(|rv| format!(r#","resourceVersion":"{rv}""#)).unwrap_or_default();
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"{namespace}"{rv},"labels":{{"app":"bench","tier":"api","gen":"{generation}"}},"annotations":{{"bench.keelson.dev/purpose":"load"}}}},"spec":{{"containers":[{{"name":"app","image":"busybox:local","command":["sleep","3600"],"env":[{{"name":"MODE","value":"bench"}}],"ports":[{{"containerPort":8080,"protocol":"TCP"}}],"resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}},"limits":{{"memory":"32Mi"}}}}}}],"restartPolicy":"Always","terminationGracePeriodSeconds":5}}}}"#
    ))
}

#[derive(Deserialize)]
struct Object {
    metadata: ObjectMeta,
}

#[derive(Deserialize)]
struct ObjectMeta {
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
}

#[derive(Deserialize)]
struct ListPage {
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
    #[serde(rename = "continue", default)]
    continue_token: Option<String>,
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: Object,
}

/// Opens `n` connections, one per simulated client, each with one request answered: the server
/// has finished its side of the TLS and HTTP/2 handshakes before a timed phase starts, as etcd's
/// have (see `etcd::connect`).
pub async fn connect(target: &Target, n: usize) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = Conn::connect(target).await?;
        let reply = conn.call(Method::GET, "/version", None).await?;
        if reply.status != StatusCode::OK {
            bail!("GET /version on a new connection → {} {}", reply.status, reply.snippet());
        }
        conns.push(conn);
    }
    Ok(conns)
}

/// Runs `client(i, conn)` for every connection at once; merges the phases (wall time from the
/// first start to the last end) and returns each client's output in client order.
async fn run_clients<T, F, Fut>(conns: Vec<Conn>, client: F) -> anyhow::Result<(Phase, Vec<T>)>
where
    T: Send + 'static,
    F: Fn(usize, Conn) -> Fut,
    Fut: Future<Output = (Phase, T)> + Send + 'static,
{
    let n = conns.len();
    let start = Instant::now();
    let mut set = JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let work = client(i, conn);
        set.spawn(async move { (i, work.await) });
    }
    let mut phase = Phase::default();
    let mut outputs: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, (part, output)) = joined.context("a client task panicked")?;
        phase.absorb(part);
        outputs[i] = Some(output);
    }
    phase.wall = start.elapsed();
    Ok((phase, outputs.into_iter().map(|o| o.expect("every client reported")).collect()))
}

/// Times one request; a status other than `expect` is a failure.
async fn timed(
    conn: &mut Conn,
    phase: &mut Phase,
    method: Method,
    path: &str,
    body: Option<Bytes>,
    expect: StatusCode,
) -> Option<(Reply, Instant)> {
    let started = Instant::now();
    let what = format!("{method} {path}");
    match conn.call(method, path, body).await {
        Ok(reply) if reply.status == expect => {
            let done = Instant::now();
            phase.latencies.push((done - started).as_nanos() as u64);
            Some((reply, done))
        }
        Ok(reply) => {
            phase.fail(|| format!("{what} → {} {}", reply.status, reply.snippet()));
            None
        }
        Err(error) => {
            phase.fail(|| format!("{what} → {error:#}"));
            None
        }
    }
}

fn resource_version_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Object>(body).ok().map(|o| o.metadata.resource_version).filter(|rv| !rv.is_empty())
}

/// Creates a namespace (201, or 409 if it exists).
pub async fn create_namespace(target: &Target, name: &str) -> anyhow::Result<()> {
    let mut conn = Conn::connect(target).await?;
    let body = format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}"}}}}"#);
    let reply = conn.call(Method::POST, "/api/v1/namespaces", Some(Bytes::from(body))).await?;
    if !(reply.status == StatusCode::CREATED || reply.status == StatusCode::CONFLICT) {
        bail!("POST /api/v1/namespaces ({name}) → {} {}", reply.status, reply.snippet());
    }
    Ok(())
}

/// `clients` clients create the Pods `names` (client i takes every clients-th name).
pub async fn create(
    target: &Target,
    namespace: &str,
    clients: usize,
    names: Vec<String>,
    deadline: Instant,
) -> anyhow::Result<(Phase, Vec<Pod>)> {
    let conns = connect(target, clients).await?;
    let names = Arc::new(names);
    let path = Arc::new(format!("/api/v1/namespaces/{namespace}/pods"));
    let namespace = Arc::new(namespace.to_owned());
    let (phase, created) = run_clients(conns, |i, mut conn| {
        let (names, path, namespace) = (names.clone(), path.clone(), namespace.clone());
        async move {
            let mut phase = Phase::default();
            let mut pods = Vec::new();
            for name in names.iter().skip(i).step_by(clients) {
                if Instant::now() > deadline {
                    phase.capped = true;
                    break;
                }
                let body = pod_body(&namespace, name, 0, None);
                if let Some((reply, _)) =
                    timed(&mut conn, &mut phase, Method::POST, &path, Some(body), StatusCode::CREATED).await
                {
                    match resource_version_of(&reply.body) {
                        Some(rv) => pods.push(Pod { name: name.clone(), resource_version: rv, generation: 0 }),
                        None => phase
                            .fail(|| format!("POST {path}: 201 without metadata.resourceVersion: {}", reply.snippet())),
                    }
                }
            }
            (phase, pods)
        }
    })
    .await?;
    Ok((phase, created.into_iter().flatten().collect()))
}

/// `clients` clients delete the Pods `names` (unbound Pods go at once, without a grace period).
pub async fn delete(
    target: &Target,
    namespace: &str,
    clients: usize,
    names: Vec<String>,
    deadline: Instant,
) -> anyhow::Result<Phase> {
    let conns = connect(target, clients).await?;
    let names = Arc::new(names);
    let base = Arc::new(format!("/api/v1/namespaces/{namespace}/pods"));
    let (phase, _) = run_clients(conns, |i, mut conn| {
        let (names, base) = (names.clone(), base.clone());
        async move {
            let mut phase = Phase::default();
            for name in names.iter().skip(i).step_by(clients) {
                if Instant::now() > deadline {
                    phase.capped = true;
                    break;
                }
                let path = format!("{base}/{name}");
                timed(&mut conn, &mut phase, Method::DELETE, &path, None, StatusCode::OK).await;
            }
            (phase, ())
        }
    })
    .await?;
    Ok(phase)
}

/// What an update run returns: the Pods with their new resource versions and, for every
/// acknowledged write, its resource version and when the acknowledgement arrived.
pub struct Updated {
    pub pods: Vec<Pod>,
    pub acks: Vec<(i64, Instant)>,
}

/// `clients` clients replace (PUT, conditional on the last resource version) `count` times in
/// all, each cycling through its own share of `pods` so that no two clients write one object.
pub async fn update(
    target: &Target,
    namespace: &str,
    clients: usize,
    pods: Vec<Pod>,
    count: usize,
    deadline: Instant,
) -> anyhow::Result<(Phase, Updated)> {
    if pods.len() < clients {
        bail!("{} pods cannot be shared by {clients} clients", pods.len());
    }
    let conns = connect(target, clients).await?;
    let chunk = pods.len().div_ceil(clients);
    let mut shares: Vec<Vec<Pod>> = pods.chunks(chunk).map(<[Pod]>::to_vec).collect();
    shares.resize_with(clients, Vec::new);
    let shares: Vec<std::sync::Mutex<Option<Vec<Pod>>>> =
        shares.into_iter().map(|s| std::sync::Mutex::new(Some(s))).collect();
    let shares = Arc::new(shares);
    let namespace = Arc::new(namespace.to_owned());
    let (phase, outputs) = run_clients(conns, |i, mut conn| {
        let share = shares[i].lock().expect("share lock").take().unwrap_or_default();
        let namespace = namespace.clone();
        let quota = count / clients + usize::from(i < count % clients);
        async move {
            let mut phase = Phase::default();
            let mut share = share;
            let mut acks = Vec::with_capacity(quota);
            for n in 0..quota {
                if share.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    phase.capped = true;
                    break;
                }
                let slot = n % share.len();
                let pod = &mut share[slot];
                let path = format!("/api/v1/namespaces/{namespace}/pods/{}", pod.name);
                let body = pod_body(&namespace, &pod.name, pod.generation + 1, Some(&pod.resource_version));
                if let Some((reply, acked)) =
                    timed(&mut conn, &mut phase, Method::PUT, &path, Some(body), StatusCode::OK).await
                {
                    match resource_version_of(&reply.body) {
                        Some(rv) => {
                            if let Ok(number) = rv.parse::<i64>() {
                                acks.push((number, acked));
                            }
                            pod.resource_version = rv;
                            pod.generation += 1;
                        }
                        None => phase
                            .fail(|| format!("PUT {path}: 200 without metadata.resourceVersion: {}", reply.snippet())),
                    }
                }
            }
            (phase, (share, acks))
        }
    })
    .await?;
    let mut updated = Updated { pods: Vec::with_capacity(pods.len()), acks: Vec::with_capacity(count) };
    for (share, acks) in outputs {
        updated.pods.extend(share);
        updated.acks.extend(acks);
    }
    Ok((phase, updated))
}

/// `clients` clients GET `count` Pods in all, picked at random from `names`.
pub async fn get(
    target: &Target,
    namespace: &str,
    clients: usize,
    names: Arc<Vec<String>>,
    count: usize,
    deadline: Instant,
) -> anyhow::Result<Phase> {
    let conns = connect(target, clients).await?;
    let namespace = Arc::new(namespace.to_owned());
    let (phase, _) = run_clients(conns, |i, mut conn| {
        let (names, namespace) = (names.clone(), namespace.clone());
        let quota = count / clients + usize::from(i < count % clients);
        async move {
            let mut phase = Phase::default();
            let mut rng = XorShift::new(i as u64 + 1);
            for _ in 0..quota {
                if Instant::now() > deadline {
                    phase.capped = true;
                    break;
                }
                let name = &names[rng.below(names.len())];
                let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
                timed(&mut conn, &mut phase, Method::GET, &path, None, StatusCode::OK).await;
            }
            (phase, ())
        }
    })
    .await?;
    Ok(phase)
}

/// Time limit of one full list: with 100 clients at once on 2 CPUs, one takes tens of seconds.
const FULL_LIST_TIMEOUT: Duration = Duration::from_secs(180);

/// `clients` clients list all the namespace's Pods in one request, `per_client` times each.
/// Client 0 checks that its first list holds `expect_items` Pods (decoding every list would take
/// CPU from the server).
pub async fn list_full(
    target: &Target,
    namespace: &str,
    clients: usize,
    per_client: usize,
    expect_items: usize,
    deadline: Instant,
) -> anyhow::Result<Phase> {
    let conns = connect(target, clients).await?;
    let path = Arc::new(format!("/api/v1/namespaces/{namespace}/pods"));
    let (phase, _) = run_clients(conns, |i, mut conn| {
        let path = path.clone();
        conn.set_timeout(FULL_LIST_TIMEOUT);
        async move {
            let mut phase = Phase::default();
            for n in 0..per_client {
                if Instant::now() > deadline {
                    phase.capped = true;
                    break;
                }
                let Some((reply, _)) = timed(&mut conn, &mut phase, Method::GET, &path, None, StatusCode::OK).await
                else {
                    continue;
                };
                if (i, n) == (0, 0) {
                    match serde_json::from_slice::<ListPage>(&reply.body) {
                        Ok(list) if list.items.len() == expect_items => {}
                        Ok(list) => {
                            phase.fail(|| format!("GET {path}: {} items, expected {expect_items}", list.items.len()))
                        }
                        Err(error) => phase.fail(|| format!("GET {path}: undecodable list: {error}")),
                    }
                }
            }
            (phase, ())
        }
    })
    .await?;
    Ok(phase)
}

/// Results of a paged list run.
pub struct Paged {
    /// One latency per page request.
    pub pages: Phase,
    /// One latency per complete walk over all pages.
    pub walks: Phase,
}

/// `clients` clients make `pages_per_client` requests each for pages of `limit` Pods, following
/// `continue` and starting over after the last page. Every complete walk must hold
/// `expect_items` Pods; a walk the budget cuts short is not timed.
pub async fn list_pages(
    target: &Target,
    namespace: &str,
    clients: usize,
    pages_per_client: usize,
    limit: usize,
    expect_items: usize,
    deadline: Instant,
) -> anyhow::Result<Paged> {
    let conns = connect(target, clients).await?;
    let base = Arc::new(format!("/api/v1/namespaces/{namespace}/pods?limit={limit}"));
    let (pages, walks) = run_clients(conns, |_, mut conn| {
        let base = base.clone();
        async move {
            let mut pages = Phase::default();
            let mut walks = Phase::default();
            // The walk in progress: when it started, items so far, the next continue token.
            let mut walk: Option<(Instant, usize, String)> = None;
            for _ in 0..pages_per_client {
                if Instant::now() > deadline {
                    pages.capped = true;
                    break;
                }
                let (started, items, path) = match walk.take() {
                    Some((started, items, token)) => (started, items, format!("{base}&continue={token}")),
                    None => (Instant::now(), 0, base.to_string()),
                };
                let Some((reply, done)) = timed(&mut conn, &mut pages, Method::GET, &path, None, StatusCode::OK).await
                else {
                    continue;
                };
                let page = match serde_json::from_slice::<ListPage>(&reply.body) {
                    Ok(page) => page,
                    Err(error) => {
                        pages.fail(|| format!("GET {path}: undecodable list: {error}"));
                        continue;
                    }
                };
                let items = items + page.items.len();
                match page.metadata.continue_token.filter(|t| !t.is_empty()) {
                    Some(token) if items < expect_items => walk = Some((started, items, token)),
                    Some(_) => pages.fail(|| format!("GET {path}: a continue token after {items} items")),
                    None if items == expect_items => walks.latencies.push((done - started).as_nanos() as u64),
                    None => pages.fail(|| format!("GET {base}…: a walk of {items} items, expected {expect_items}")),
                }
            }
            (pages, walks)
        }
    })
    .await?;
    let mut all_walks = Phase { wall: pages.wall, ..Phase::default() };
    for w in walks {
        all_walks.absorb(w);
    }
    Ok(Paged { pages, walks: all_walks })
}

/// The current resource version of the namespace's Pod list.
pub async fn list_resource_version(target: &Target, namespace: &str) -> anyhow::Result<String> {
    let mut conn = Conn::connect(target).await?;
    let path = format!("/api/v1/namespaces/{namespace}/pods?limit=1");
    let reply = conn.call(Method::GET, &path, None).await?;
    if reply.status != StatusCode::OK {
        bail!("GET {path} → {} {}", reply.status, reply.snippet());
    }
    let page: ListPage = serde_json::from_slice(&reply.body).with_context(|| format!("decode GET {path}"))?;
    Ok(page.metadata.resource_version)
}

/// What one watcher saw: the resource version of every event and when it arrived.
#[derive(Debug, Default)]
pub struct WatchLog {
    pub events: Vec<(i64, Instant)>,
    pub error: Option<String>,
}

/// Open watches, reading in the background.
pub struct Watchers {
    last: watch::Sender<Option<i64>>,
    tasks: Vec<tokio::task::JoinHandle<WatchLog>>,
}

/// Opens `n` watches on the namespace's Pods from `from_rv`; returns once every one has its
/// response head (so events after `from_rv` are theirs). Each stops once it has seen the
/// resource version given to [`Watchers::finish`], or at `deadline`.
pub async fn start_watchers(
    target: &Target,
    namespace: &str,
    from_rv: &str,
    n: usize,
    deadline: Instant,
) -> anyhow::Result<Watchers> {
    let (last, _) = watch::channel(None);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let path = format!("/api/v1/namespaces/{namespace}/pods?watch=true&resourceVersion={from_rv}");
        let mut stream = WatchStream::open(target, &path).await?;
        let mut stop = last.subscribe();
        tasks.push(tokio::spawn(async move {
            let mut log = WatchLog::default();
            let mut newest = 0i64;
            loop {
                if let Some(target) = *stop.borrow_and_update()
                    && newest >= target
                {
                    break;
                }
                let read = tokio::select! {
                    read = stream.read() => read,
                    changed = stop.changed() => { if changed.is_err() { break; } continue; }
                    () = tokio::time::sleep_until(deadline.into()) => {
                        log.error.get_or_insert_with(|| "watch stopped at its deadline".into());
                        break;
                    }
                };
                let received = match read {
                    Ok(received) => received,
                    Err(why) => {
                        log.error = Some(why);
                        break;
                    }
                };
                while let Some(line) = stream.next_line() {
                    match serde_json::from_slice::<WatchEvent>(line) {
                        Ok(event) if event.kind == "ADDED" || event.kind == "MODIFIED" => {
                            if let Ok(rv) = event.object.metadata.resource_version.parse::<i64>() {
                                newest = newest.max(rv);
                                log.events.push((rv, received));
                            }
                        }
                        Ok(event) if event.kind == "ERROR" => {
                            log.error
                                .get_or_insert_with(|| format!("watch ERROR event: {}", String::from_utf8_lossy(line)));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            log.error.get_or_insert_with(|| {
                                format!(
                                    "undecodable watch event ({error}): {}",
                                    String::from_utf8_lossy(&line[..line.len().min(200)])
                                )
                            });
                        }
                    }
                }
            }
            log
        }));
    }
    Ok(Watchers { last, tasks })
}

impl Watchers {
    /// Tells the watchers the last acknowledged resource version and collects their logs, waiting
    /// at most `grace` for them to catch up.
    pub async fn finish(self, last_rv: i64, grace: Duration) -> Vec<WatchLog> {
        let _ = self.last.send(Some(last_rv));
        let mut logs = Vec::with_capacity(self.tasks.len());
        let give_up = tokio::time::Instant::now() + grace;
        for task in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(give_up, task).await {
                Ok(Ok(log)) => logs.push(log),
                Ok(Err(error)) => {
                    logs.push(WatchLog { error: Some(format!("watcher task: {error}")), ..WatchLog::default() })
                }
                Err(_) => {
                    abort.abort();
                    logs.push(WatchLog {
                        error: Some(format!("watcher had not caught up after {grace:?}")),
                        ..WatchLog::default()
                    });
                }
            }
        }
        logs
    }
}

/// Delivery latency of acknowledged writes to watchers.
#[derive(Debug, Default)]
pub struct Delivery {
    /// One latency per (write, watcher): event arrival minus acknowledgement, 0 when the event
    /// arrived first.
    pub phase: Phase,
    /// Events that arrived before the writer had its acknowledgement.
    pub before_ack: usize,
    /// (write, watcher) pairs with no event.
    pub missed: usize,
    /// Why watchers stopped early, if they did.
    pub notes: Vec<String>,
}

pub fn delivery(acks: &[(i64, Instant)], logs: &[WatchLog]) -> Delivery {
    let acked: HashMap<i64, Instant> = acks.iter().copied().collect();
    let mut out = Delivery::default();
    for log in logs {
        let mut matched = 0;
        for (rv, received) in &log.events {
            if let Some(ack) = acked.get(rv) {
                matched += 1;
                if received < ack {
                    out.before_ack += 1;
                }
                out.phase.latencies.push(received.saturating_duration_since(*ack).as_nanos() as u64);
            }
        }
        out.missed += acked.len().saturating_sub(matched);
        out.notes.extend(log.error.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_body_is_json_with_the_resource_version() {
        let body = pod_body("bench", "p-1", 3, Some("42"));
        let value: serde_json::Value = serde_json::from_slice(&body).expect("pod body is JSON");
        assert_eq!(value["metadata"]["resourceVersion"], "42");
        assert_eq!(value["metadata"]["labels"]["gen"], "3");
        let value: serde_json::Value = serde_json::from_slice(&pod_body("bench", "p-1", 0, None)).expect("JSON");
        assert!(value["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn delivery_pairs_events_with_acks() {
        let t0 = Instant::now();
        let acks = vec![(10, t0), (11, t0 + Duration::from_millis(1))];
        let logs = vec![WatchLog { events: vec![(10, t0 + Duration::from_millis(2)), (11, t0)], error: None }];
        let d = delivery(&acks, &logs);
        assert_eq!(d.phase.latencies, vec![2_000_000, 0]);
        assert_eq!((d.before_ack, d.missed), (1, 0));
        let d = delivery(&acks, &[WatchLog::default()]);
        assert_eq!(d.missed, 2);
    }
}
