//! The etcd backend against real etcd processes (Debian `etcd-server`, `/usr/bin/etcd` or `etcd`
//! on `PATH`).
//!
//! Every test starts its own etcd (one member, or three on loopback ports) in a temporary
//! directory; a guard kills those processes, by the PID they were started with, when it is
//! dropped, also when the test panics. Members keep etcd's durability (fsync on every commit);
//! only the raft timings are shortened so elections take well under a second.
//!
//! etcd starts at revision 1, so the first write of a fresh cluster is revision 2: the tests
//! count revisions from the store's revision at the start.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use control_plane::storage::etcd::EtcdStore;
use control_plane::storage::{Event, EventKind, KeyValue, RangeRequest, Revision, Store, StoreError, WatchReceiver};
use tokio::sync::Mutex;

/// Longest wait for a new cluster to elect a leader and serve linearizable reads.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Raft timings for loopback on a small VM (etcd wants the election timeout ≥ 5 heartbeats).
const HEARTBEAT_MS: &str = "100";
const ELECTION_MS: &str = "500";
/// 64 MiB: far above what a test writes, far below etcd's 2 GiB default.
const QUOTA_BYTES: &str = "67108864";

fn etcd_binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("etcd")).find(|p| p.is_file()))
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// Loopback ports that were free a moment ago, all different.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<_> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local address").port()).collect()
}

/// One etcd process; killed (SIGKILL, by its PID) and reaped when dropped.
struct Member {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Member {
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Only the process this guard started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An etcd cluster of its own. Field order matters: members stop before the directory goes.
struct Cluster {
    members: Vec<Option<Member>>,
    endpoints: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `size` members and waits until every one serves linearizable reads. A port taken
    /// between choosing and binding it makes a member exit: then it tries again on new ports.
    async fn start(size: usize) -> Cluster {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Cluster::try_start(size).await {
                Ok(cluster) => return cluster,
                Err(error) => last_error = error,
            }
        }
        panic!("etcd cluster of {size} did not start: {last_error}");
    }

    async fn try_start(size: usize) -> Result<Cluster, String> {
        let dir = tempfile::Builder::new().prefix("keelson-etcd-test-").tempdir().expect("temporary directory");
        let ports = free_ports(2 * size);
        let names: Vec<String> = (0..size).map(|i| format!("m{i}")).collect();
        let endpoints: Vec<String> = (0..size).map(|i| format!("http://127.0.0.1:{}", ports[2 * i])).collect();
        let peers: Vec<String> = (0..size).map(|i| format!("http://127.0.0.1:{}", ports[2 * i + 1])).collect();
        let initial: Vec<String> = names.iter().zip(&peers).map(|(name, peer)| format!("{name}={peer}")).collect();
        let token = format!("keelson-test-{}", dir.path().file_name().expect("dir name").to_string_lossy());
        let mut members = Vec::new();
        for i in 0..size {
            let log = dir.path().join(format!("{}.log", names[i]));
            let out = File::create(&log).expect("create log");
            let err = out.try_clone().expect("duplicate log");
            let child = Command::new(etcd_binary())
                .args(["--name", &names[i], "--data-dir"])
                .arg(dir.path().join(&names[i]))
                .args(["--listen-client-urls", &endpoints[i], "--advertise-client-urls", &endpoints[i]])
                .args(["--listen-peer-urls", &peers[i], "--initial-advertise-peer-urls", &peers[i]])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(["--heartbeat-interval", HEARTBEAT_MS, "--election-timeout", ELECTION_MS])
                .args(["--quota-backend-bytes", QUOTA_BYTES])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start etcd (Debian etcd-server; `cargo xtask setup` installs it)");
            members.push(Some(Member { child, name: names[i].clone(), log }));
        }
        let mut cluster = Cluster { members, endpoints, _dir: dir };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..self.members.len() {
            let endpoint = self.endpoints[i].clone();
            loop {
                let probe = async {
                    let mut client = etcd_client::Client::connect([endpoint.as_str()], None).await?;
                    client.get("/probe", None).await
                };
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                    break;
                }
                let member = self.members[i].as_mut().expect("member running");
                if let Some(status) = member.child.try_wait().expect("wait") {
                    return Err(format!("{} exited ({status}):\n{}", member.name, member.log_tail()));
                }
                if Instant::now() > deadline {
                    return Err(format!("{} not ready:\n{}", member.name, member.log_tail()));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// SIGKILLs member `i` and reaps it.
    fn kill(&mut self, i: usize) {
        drop(self.members[i].take().expect("member running"));
    }

    /// The index of the member that is the raft leader.
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut ids = BTreeMap::new();
            let mut leaders = BTreeSet::new();
            for (i, endpoint) in self.endpoints.iter().enumerate() {
                let Ok(mut client) = etcd_client::Client::connect([endpoint.as_str()], None).await else { continue };
                if let Ok(status) = client.status().await {
                    ids.insert(status.header().expect("header").member_id(), i);
                    leaders.insert(status.leader());
                }
            }
            if let [leader] = leaders.into_iter().collect::<Vec<_>>()[..]
                && let Some(&i) = ids.get(&leader)
            {
                return i;
            }
            assert!(Instant::now() < deadline, "no agreed leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn single() -> (Cluster, EtcdStore) {
    let cluster = Cluster::start(1).await;
    let store = EtcdStore::connect(&cluster.endpoints).await.expect("connect the store");
    (cluster, store)
}

fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision) -> KeyValue {
    KeyValue { key: key.to_string(), value: value.as_bytes().to_vec(), create_revision, mod_revision }
}

async fn next(rx: &mut WatchReceiver) -> Result<Event, StoreError> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("watch event within 10 s")
        .expect("watch still open")
}

async fn keys(store: &EtcdStore, req: RangeRequest) -> Vec<String> {
    store.range(req).await.expect("range").kvs.into_iter().map(|kv| kv.key).collect()
}

#[tokio::test]
async fn create_update_delete_with_conditions() {
    let (_cluster, store) = single().await;
    let base = store.current_revision().await.expect("revision");
    let r = |n: Revision| base + n;
    let a = store.create("/a", b"1".to_vec()).await.expect("create");
    assert_eq!(a, kv("/a", "1", r(1), r(1)));
    assert_eq!(store.create("/a", b"x".to_vec()).await, Err(StoreError::AlreadyExists { key: "/a".into() }));

    let a2 = store.update("/a", b"2".to_vec(), r(1)).await.expect("update at the right revision");
    assert_eq!(a2, kv("/a", "2", r(1), r(2)));
    let stale = store.update("/a", b"3".to_vec(), r(1)).await;
    let expected = StoreError::Conflict { key: "/a".into(), expected: r(1), current: Some(Box::new(a2.clone())) };
    assert_eq!(stale, Err(expected), "the conflict carries the current value");
    assert_eq!(store.current_revision().await.expect("revision"), r(2), "a failed condition takes no revision");
    assert_eq!(store.update("/a", b"3".to_vec(), 0).await.expect("unconditional"), kv("/a", "3", r(1), r(3)));
    assert_eq!(store.update("/nope", b"".to_vec(), 0).await, Err(StoreError::NotFound { key: "/nope".into() }));
    assert_eq!(store.update("/nope", b"".to_vec(), r(1)).await, Err(StoreError::NotFound { key: "/nope".into() }));

    let conflict = store.delete("/a", r(2)).await;
    assert_eq!(
        conflict,
        Err(StoreError::Conflict {
            key: "/a".into(),
            expected: r(2),
            current: Some(Box::new(kv("/a", "3", r(1), r(3))))
        })
    );
    assert_eq!(store.delete("/a", r(3)).await.expect("delete"), kv("/a", "3", r(1), r(4)), "the last value");
    assert_eq!(store.get("/a", 0).await.expect("get"), None);
    assert_eq!(store.delete("/a", 0).await, Err(StoreError::NotFound { key: "/a".into() }));
    assert_eq!(store.delete("/a", r(4)).await, Err(StoreError::NotFound { key: "/a".into() }));
    assert_eq!(store.create("/a", b"new".to_vec()).await.expect("recreate"), kv("/a", "new", r(5), r(5)));
    assert_eq!(store.delete("/a", 0).await.expect("unconditional delete"), kv("/a", "new", r(5), r(6)));
    assert_eq!(store.current_revision().await.expect("revision"), r(6));
    assert_eq!(store.compacted_revision(), 0);
}

#[tokio::test]
async fn range_prefix_limit_more_count() {
    let (_cluster, store) = single().await;
    for key in ["/r/pods/b", "/r/pods/a", "/r/pods/a0", "/r/pods/c", "/r/podsx", "/r/q", "/r/pods/\u{e9}"] {
        store.create(key, key.as_bytes().to_vec()).await.expect("create");
    }
    let current = store.current_revision().await.expect("revision");
    let all = store.range(RangeRequest::prefix("/r/pods/")).await.expect("range");
    let names: Vec<_> = all.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(names, ["/r/pods/a", "/r/pods/a0", "/r/pods/b", "/r/pods/c", "/r/pods/\u{e9}"], "byte order");
    assert_eq!((all.count, all.more, all.revision), (5, false, current));
    assert_eq!(all.kvs[0].value, b"/r/pods/a");

    let page = store.range(RangeRequest { limit: 2, ..RangeRequest::prefix("/r/pods/") }).await.expect("page");
    assert_eq!(page.kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["/r/pods/a", "/r/pods/a0"]);
    assert_eq!((page.count, page.more), (5, true));
    let rest = RangeRequest { start: "/r/pods/a0\0".into(), limit: 10, ..RangeRequest::prefix("/r/pods/") };
    let rest = store.range(rest).await.expect("next page");
    assert_eq!((rest.kvs.len(), rest.count, rest.more), (3, 3, false));

    let one = store.range(RangeRequest { start: "/r/q".into(), ..Default::default() }).await.expect("one");
    assert_eq!((one.kvs.len(), one.count), (1, 1));
    let none = store.range(RangeRequest { start: "/r/zz".into(), ..Default::default() }).await.expect("none");
    assert_eq!((none.kvs.len(), none.count), (0, 0));
    let backwards = RangeRequest { start: "/r/z".into(), end: "/r/a".into(), ..Default::default() };
    assert!(store.range(backwards).await.expect("empty range").kvs.is_empty());
    assert_eq!(keys(&store, RangeRequest::prefix("")).await.len(), 7);
    assert_eq!(store.get("", 0).await.expect("the empty key"), None);
    let future = store.range(RangeRequest { revision: current + 1, ..RangeRequest::prefix("/") }).await;
    assert_eq!(future.expect_err("future"), StoreError::FutureRevision { requested: current + 1, current });
    let negative = store.range(RangeRequest { revision: -1, ..RangeRequest::prefix("/") }).await;
    assert!(matches!(negative, Err(StoreError::Backend(_))), "{negative:?}");
}

#[tokio::test]
async fn reads_at_an_older_revision() {
    let (_cluster, store) = single().await;
    let base = store.current_revision().await.expect("revision");
    let r = |n: Revision| base + n;
    for key in ["/k/a", "/k/b", "/k/c", "/k/e"] {
        store.create(key, b"v1".to_vec()).await.expect("create");
    }
    let then = store.current_revision().await.expect("revision");
    store.update("/k/a", b"v2".to_vec(), 0).await.expect("update");
    store.delete("/k/b", 0).await.expect("delete");
    store.create("/k/d", b"v1".to_vec()).await.expect("create");
    store.delete("/k/e", 0).await.expect("delete");
    store.create("/k/e", b"v2".to_vec()).await.expect("recreate");

    let old = store.range(RangeRequest { revision: then, ..RangeRequest::prefix("/k/") }).await.expect("old");
    assert_eq!(
        old.kvs,
        vec![
            kv("/k/a", "v1", r(1), r(1)),
            kv("/k/b", "v1", r(2), r(2)),
            kv("/k/c", "v1", r(3), r(3)),
            kv("/k/e", "v1", r(4), r(4))
        ]
    );
    assert_eq!((old.count, old.revision), (4, then), "the revision read at, not the current one");
    let page = store.range(RangeRequest { revision: then, limit: 2, ..RangeRequest::prefix("/k/") }).await;
    let page = page.expect("old page");
    assert_eq!(page.kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["/k/a", "/k/b"]);
    assert_eq!((page.count, page.more), (4, true));
    assert_eq!(store.get("/k/b", then).await.expect("get old"), Some(kv("/k/b", "v1", r(2), r(2))));
    assert_eq!(store.get("/k/d", then).await.expect("get old"), None);
    assert_eq!(store.get("/k/a", 0).await.expect("get"), Some(kv("/k/a", "v2", r(1), r(5))));
    let now = store.range(RangeRequest::prefix("/k/")).await.expect("now");
    assert_eq!(now.kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["/k/a", "/k/c", "/k/d", "/k/e"]);
    assert_eq!(now.kvs[3], kv("/k/e", "v2", r(9), r(9)));
}

#[tokio::test]
async fn compaction_keeps_reads_at_and_after_it() {
    let (cluster, store) = single().await;
    let base = store.current_revision().await.expect("revision");
    let r = |n: Revision| base + n;
    store.create("/c/a", b"1".to_vec()).await.expect("create"); // 1
    store.create("/c/b", b"1".to_vec()).await.expect("create"); // 2
    store.update("/c/a", b"2".to_vec(), 0).await.expect("update"); // 3
    store.delete("/c/b", 0).await.expect("delete"); // 4
    store.create("/c/z", b"1".to_vec()).await.expect("create"); // 5
    store.update("/c/a", b"3".to_vec(), 0).await.expect("update"); // 6
    store.delete("/c/z", 0).await.expect("delete"); // 7

    assert_eq!(store.compact(r(8)).await, Err(StoreError::FutureRevision { requested: r(8), current: r(7) }));
    store.compact(r(5)).await.expect("compact");
    assert_eq!(store.compacted_revision(), r(5));
    store.compact(r(3)).await.expect("compacting below the compacted revision is a no-op");
    assert_eq!(store.get("/c/a", r(4)).await, Err(StoreError::Compacted { requested: r(4), compacted: r(5) }));
    let at = store.range(RangeRequest { revision: r(5), ..RangeRequest::prefix("/c/") }).await.expect("at 5");
    assert_eq!(at.kvs, vec![kv("/c/a", "2", r(1), r(3)), kv("/c/z", "1", r(5), r(5))]);
    let at6 = store.range(RangeRequest { revision: r(6), ..RangeRequest::prefix("/c/") }).await.expect("at 6");
    assert_eq!(at6.kvs, vec![kv("/c/a", "3", r(1), r(6)), kv("/c/z", "1", r(5), r(5))]);
    assert_eq!(store.watch("/c/", r(4)).await.err(), Some(StoreError::Compacted { requested: r(4), compacted: r(5) }));
    let mut rx = store.watch("/c/", r(5)).await.expect("watch from the compacted revision");
    let event = next(&mut rx).await.expect("event");
    assert_eq!((event.kv.clone(), event.prev), (kv("/c/a", "3", r(1), r(6)), Some(kv("/c/a", "2", r(1), r(3)))));
    let event = next(&mut rx).await.expect("event");
    assert_eq!(
        (event.kind, event.kv, event.prev),
        (EventKind::Delete, kv("/c/z", "1", r(5), r(7)), Some(kv("/c/z", "1", r(5), r(5))))
    );

    // Another replica compacts further: this store learns it from etcd's errors, and a store
    // that connects later learns it at once.
    let other = EtcdStore::connect(&cluster.endpoints).await.expect("second store");
    assert_eq!(other.compacted_revision(), r(5), "learned when connecting");
    other.compact(r(7)).await.expect("compact everything");
    assert_eq!(store.compacted_revision(), r(5), "not told yet");
    assert_eq!(store.get("/c/a", r(6)).await, Err(StoreError::Compacted { requested: r(6), compacted: r(7) }));
    assert_eq!(store.compacted_revision(), r(7));
    assert_eq!(store.get("/c/a", r(7)).await.expect("get"), Some(kv("/c/a", "3", r(1), r(6))));
    store.compact(r(7)).await.expect("compacting to the compacted revision again is a no-op");
}

#[tokio::test]
async fn watch_replays_history_then_follows_live() {
    let (cluster, store) = single().await;
    let base = store.current_revision().await.expect("revision");
    let r = |n: Revision| base + n;
    store.create("/w/a", b"1".to_vec()).await.expect("create"); // 1
    store.create("/x/a", b"1".to_vec()).await.expect("create"); // 2
    store.update("/w/a", b"2".to_vec(), r(1)).await.expect("update"); // 3
    store.create("/w/b", b"1".to_vec()).await.expect("create"); // 4
    store.delete("/w/a", 0).await.expect("delete"); // 5

    let mut now = store.watch("/w/", 0).await.expect("watch from now");
    let mut rx = store.watch("/w/", r(1)).await.expect("watch");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut rx).await.expect("event"));
    }
    assert_eq!(
        seen[0],
        Event { kind: EventKind::Put, kv: kv("/w/a", "2", r(1), r(3)), prev: Some(kv("/w/a", "1", r(1), r(1))) }
    );
    assert_eq!(seen[1], Event { kind: EventKind::Put, kv: kv("/w/b", "1", r(4), r(4)), prev: None });
    let deleted =
        Event { kind: EventKind::Delete, kv: kv("/w/a", "2", r(1), r(5)), prev: Some(kv("/w/a", "2", r(1), r(3))) };
    assert_eq!(seen[2], deleted);

    // Writes through a second store (another control-plane replica) reach this one's watchers.
    let other = EtcdStore::connect(&cluster.endpoints).await.expect("second store");
    other.create("/x/b", b"1".to_vec()).await.expect("create"); // 6, other prefix
    other.update("/w/b", b"2".to_vec(), r(4)).await.expect("update"); // 7
    let live = Event { kind: EventKind::Put, kv: kv("/w/b", "2", r(4), r(7)), prev: Some(kv("/w/b", "1", r(4), r(4))) };
    assert_eq!(next(&mut rx).await.expect("live event"), live);
    assert_eq!(next(&mut now).await.expect("only new events"), live);
    let stale = store.update("/w/b", b"3".to_vec(), r(4)).await;
    assert!(matches!(stale, Err(StoreError::Conflict { current: Some(ref kv), .. }) if kv.mod_revision == r(7)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.try_recv().is_err(), "nothing else");
    assert!(matches!(store.watch("/w/", -1).await, Err(StoreError::Backend(_))));

    // A watch from the future waits for it.
    let mut future = store.watch("/w/", r(8)).await.expect("watch from a future revision");
    store.create("/w/c", b"1".to_vec()).await.expect("create"); // 8: not after 8
    store.create("/w/d", b"1".to_vec()).await.expect("create"); // 9
    assert_eq!(next(&mut future).await.expect("event").kv, kv("/w/d", "1", r(9), r(9)));

    // Another etcd client writes two keys in one transaction, so in one revision: both arrive.
    let mut raw = etcd_client::Client::connect(&cluster.endpoints, None).await.expect("etcd client");
    let puts = [etcd_client::TxnOp::put("/w/t1", "1", None), etcd_client::TxnOp::put("/w/t2", "1", None)];
    raw.txn(etcd_client::Txn::new().and_then(puts)).await.expect("transaction");
    for key in ["/w/t1", "/w/t2"] {
        assert_eq!(next(&mut future).await.expect("event").kv, kv(key, "1", r(10), r(10)));
    }
}

/// Creates `count` keys under `prefix` from `writers` concurrent tasks; returns their revisions.
async fn write_many(store: &Arc<EtcdStore>, prefix: &str, count: usize, writers: usize) -> Vec<Revision> {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, prefix) = (Arc::clone(store), prefix.to_string());
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                for i in (w..count).step_by(writers) {
                    let kv = store.create(&format!("{prefix}{i:06}"), vec![b'v'; 64]).await.expect("create");
                    revisions.push(kv.mod_revision);
                }
                revisions
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.extend(task.await.expect("writer task"));
    }
    revisions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_get_unique_revisions_and_a_slow_watcher_sees_them_all() {
    let (_cluster, store) = single().await;
    let store = Arc::new(store);
    let base = store.current_revision().await.expect("revision");
    let mut rx = store.watch("/p/", 0).await.expect("watch");
    let count = 600;
    let mut revisions = write_many(&store, "/p/", count, 30).await;
    revisions.sort_unstable();
    assert_eq!(revisions, (base + 1..=base + count as Revision).collect::<Vec<_>>());
    let all = store.range(RangeRequest::prefix("/p/")).await.expect("range");
    assert_eq!((all.kvs.len(), all.count, all.revision), (count, count, base + count as Revision));
    // Nobody read the watch while the writes went on.
    for expected in revisions {
        let event = next(&mut rx).await.expect("no event lost");
        assert_eq!((event.kind, event.kv.mod_revision, event.prev), (EventKind::Put, expected, None), "in order");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.try_recv().is_err(), "no duplicates");
}

#[tokio::test]
async fn connect_skips_a_dead_endpoint() {
    let cluster = Cluster::start(1).await;
    let dead = format!("http://127.0.0.1:{}", free_ports(1)[0]);
    let store = EtcdStore::connect(&[dead.clone(), cluster.endpoints[0].clone()]).await.expect("connect");
    assert_eq!(store.active_endpoint(), cluster.endpoints[0]);
    store.create("/dead/a", vec![]).await.expect("write through the live member");
    assert!(matches!(EtcdStore::connect(&[]).await, Err(StoreError::Backend(_))));
}

/// Writes `/kill/<writer>/<n>` until `stop`; returns the acknowledged keys and revisions and how
/// many writes failed.
async fn write_until(
    store: Arc<EtcdStore>,
    writer: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> (Vec<(String, Revision)>, usize) {
    let (mut ok, mut failed) = (Vec::new(), 0);
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let key = format!("/kill/{writer}/{n:05}");
        match store.create(&key, format!("{writer}:{n}").into_bytes()).await {
            Ok(kv) => {
                ok.push((key, kv.mod_revision));
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(StoreError::Backend(error)) => {
                eprintln!("writer {writer}: {key}: {error}");
                failed += 1;
            }
            Err(error) => panic!("{key}: {error:?}"),
        }
    }
    (ok, failed)
}

/// Three members; the store connects to the leader first; a watch is open and writers keep
/// writing while the leader (the member the store talks to) is SIGKILLed. Afterwards every
/// acknowledged write is readable, and the watch delivered every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_killing_the_connected_one() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let mut endpoints = cluster.endpoints.clone();
    endpoints.rotate_left(leader);
    let store = Arc::new(EtcdStore::connect(&endpoints).await.expect("connect"));
    assert_eq!(store.active_endpoint(), cluster.endpoints[leader], "connected to the leader");
    let from = store.current_revision().await.expect("revision");
    let mut rx = store.watch("/kill/", from).await.expect("watch");

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(write_until(Arc::clone(&store), w, Arc::clone(&stop), Arc::clone(&acked))))
        .collect();
    // Read the watch as it goes, so the kill lands with a live stream.
    let events = Arc::new(Mutex::new(Vec::<Event>::new()));
    let reader = {
        let events = Arc::clone(&events);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                events.lock().await.push(event.expect("no watch error"));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.load(Ordering::SeqCst) < 50 || events.lock().await.is_empty() {
        assert!(Instant::now() < deadline, "writes and the watch work before the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = events.lock().await.len();
    cluster.kill(leader);
    let killed_at = (Instant::now(), acked.load(Ordering::SeqCst));
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.load(Ordering::SeqCst) < killed_at.1 + 100 {
        assert!(Instant::now() < deadline, "writes did not resume after the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resumed = killed_at.0.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    for writer in writers {
        let (ok, bad) = writer.await.expect("writer");
        acknowledged.extend(ok);
        failed += bad;
    }
    assert_ne!(store.active_endpoint(), cluster.endpoints[leader], "failed over");

    // Every acknowledged write is there, at its revision.
    let now = store.range(RangeRequest::prefix("/kill/")).await.expect("range after the kill");
    let stored: BTreeMap<_, _> = now.kvs.iter().map(|kv| (kv.key.clone(), kv.mod_revision)).collect();
    for (key, revision) in &acknowledged {
        assert_eq!(stored.get(key), Some(revision), "acknowledged {key} at {revision}");
    }
    // The watch delivers exactly what is stored (writes that failed with an unknown outcome
    // may be there too), once each, in revision order.
    let expected: Vec<(String, Revision)> = {
        let mut by_revision: Vec<_> = stored.iter().map(|(key, revision)| (key.clone(), *revision)).collect();
        by_revision.sort_by_key(|(_, revision)| *revision);
        by_revision
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.lock().await.len() < expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let delivered: Vec<(String, Revision)> =
        events.lock().await.iter().map(|event| (event.kv.key.clone(), event.kv.mod_revision)).collect();
    assert_eq!(delivered.len(), expected.len(), "one event per stored write");
    assert_eq!(delivered, expected, "every event once, in order");
    assert!(events.lock().await.iter().all(|event| event.kind == EventKind::Put && event.prev.is_none()));

    // A new watch from the same revision, on the surviving members, replays the same history.
    let mut replay = store.watch("/kill/", from).await.expect("watch again");
    for (key, revision) in &expected {
        let event = next(&mut replay).await.expect("replayed event");
        assert_eq!((&event.kv.key, event.kv.mod_revision), (key, *revision));
    }
    reader.abort();
    eprintln!(
        "killed the leader after {before} events; writes resumed after {resumed:?}; {} acknowledged, {} failed, \
         {} stored; {:?} in all",
        acknowledged.len(),
        failed,
        expected.len(),
        started.elapsed()
    );
}

#[test]
fn etcd_is_installed() {
    let binary = etcd_binary();
    assert!(Path::new(&binary).is_file(), "{} missing: `cargo xtask setup` installs etcd-server", binary.display());
}
