//! Informers: an in-memory copy of every object of one resource, kept current from the store's
//! watch, with change notifications. Controllers and the scheduler read these caches by key and
//! never trust an event's payload alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};

use crate::registry::Resource;
use crate::server::Api;
use crate::server::internal::Client;
use crate::storage::{EventKind, RangeRequest, StoreError};

/// Changes buffered for subscribers; one that falls further behind resyncs from the cache. Every
/// slot is allocated and written up front, per informer, so this is resident memory: 16 384 slots
/// were about 0.8 MB for each of the process's informers.
const CHANGES_BUFFER: usize = 2048;

/// `namespace/name` (or `name` for cluster-scoped objects).
pub type CacheKey = String;

pub fn cache_key(namespace: &str, name: &str) -> CacheKey {
    if namespace.is_empty() { name.to_string() } else { format!("{namespace}/{name}") }
}

pub fn key_of(obj: &Value) -> CacheKey {
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    cache_key(ns, name)
}

/// One change to the cache.
#[derive(Clone, Debug)]
pub struct Change {
    pub old: Option<Arc<Value>>,
    pub new: Option<Arc<Value>>,
}

impl Change {
    /// The object after the change, or the deleted one.
    pub fn object(&self) -> &Arc<Value> {
        self.new.as_ref().or(self.old.as_ref()).expect("a change has an object")
    }
}

/// Cached objects of one resource.
pub struct Informer {
    pub resource: &'static Resource,
    cache: RwLock<HashMap<CacheKey, Arc<Value>>>,
    changes: broadcast::Sender<Change>,
    synced: watch::Sender<bool>,
}

impl Informer {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.cache.read().expect("cache lock").get(&cache_key(namespace, name)).cloned()
    }

    pub fn get_key(&self, key: &str) -> Option<Arc<Value>> {
        self.cache.read().expect("cache lock").get(key).cloned()
    }

    /// Objects in `namespace` (all when empty) that `keep` accepts.
    pub fn list(&self, namespace: &str, keep: impl Fn(&Value) -> bool) -> Vec<Arc<Value>> {
        let cache = self.cache.read().expect("cache lock");
        cache
            .values()
            .filter(|o| {
                namespace.is_empty() || o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(namespace)
            })
            .filter(|o| keep(o))
            .cloned()
            .collect()
    }

    pub fn keys(&self) -> Vec<CacheKey> {
        self.cache.read().expect("cache lock").keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.cache.read().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes from now on. A receiver that lags gets `RecvError::Lagged`: it should resync from
    /// [`Informer::keys`].
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Waits until the first full list is in the cache.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn apply(&self, key: CacheKey, new: Option<Arc<Value>>) {
        let old = {
            let mut cache = self.cache.write().expect("cache lock");
            match &new {
                Some(v) => cache.insert(key, v.clone()),
                None => cache.remove(&key),
            }
        };
        if old.is_some() || new.is_some() {
            let _ = self.changes.send(Change { old, new });
        }
    }

    /// Lists, then follows the store's watch; relists when the watch cannot resume.
    async fn run(self: Arc<Self>, api: Arc<Api>) {
        let prefix = self.resource.prefix("");
        loop {
            let list = match api.store.range(RangeRequest::prefix(&prefix)).await {
                Ok(l) => l,
                Err(error) => {
                    warn!(%error, resource = self.resource.plural, "informer list");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut fresh: HashMap<CacheKey, Arc<Value>> = HashMap::with_capacity(list.kvs.len());
            for kv in &list.kvs {
                if let Ok(v) = decode(kv) {
                    fresh.insert(key_of(&v), Arc::new(v));
                }
            }
            // Replace the cache, announcing what changed since the last list.
            let stale: Vec<CacheKey> =
                self.cache.read().expect("cache lock").keys().filter(|k| !fresh.contains_key(*k)).cloned().collect();
            for k in stale {
                self.apply(k, None);
            }
            for (k, v) in fresh {
                let same = self
                    .get_key(&k)
                    .is_some_and(|o| o.pointer("/metadata/resourceVersion") == v.pointer("/metadata/resourceVersion"));
                if !same {
                    self.apply(k, Some(v));
                }
            }
            self.synced.send_replace(true);
            let mut events = match api.store.watch(&prefix, list.revision).await {
                Ok(w) => w,
                Err(error) => {
                    warn!(%error, resource = self.resource.plural, "informer watch");
                    continue;
                }
            };
            loop {
                match events.recv().await {
                    Some(Ok(ev)) => {
                        // Shared with the HTTP watches of the same write.
                        let Some(obj) = api.events.object(&ev.kv) else { continue };
                        let key = key_of(&obj);
                        match ev.kind {
                            EventKind::Put => self.apply(key, Some(obj)),
                            EventKind::Delete => self.apply(key, None),
                        }
                    }
                    Some(Err(StoreError::Compacted { .. })) | None => {
                        debug!(resource = self.resource.plural, "informer relists");
                        break;
                    }
                    Some(Err(error)) => {
                        warn!(%error, resource = self.resource.plural, "informer watch");
                        break;
                    }
                }
            }
        }
    }
}

fn decode(kv: &crate::storage::KeyValue) -> Result<Value, serde_json::Error> {
    let mut v: Value = serde_json::from_slice(&kv.value)?;
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(kv.mod_revision.to_string()));
    }
    Ok(v)
}

/// The shared informers of one process, started on first use.
pub struct Informers {
    api: Arc<Api>,
    started: Mutex<HashMap<&'static str, Arc<Informer>>>,
    tasks: tokio_util::task::TaskTracker,
    cancel: tokio_util::sync::CancellationToken,
}

impl Informers {
    pub fn new(api: Arc<Api>, cancel: tokio_util::sync::CancellationToken) -> Arc<Informers> {
        Arc::new(Informers { api, started: Mutex::default(), tasks: Default::default(), cancel })
    }

    pub fn client(&self) -> Client {
        Client::new(self.api.clone())
    }

    /// The informer of `res`, started if it is not running yet.
    pub fn get(&self, res: &'static Resource) -> Arc<Informer> {
        let mut started = self.started.lock().expect("informers lock");
        let id = storage_id(res);
        if let Some(i) = started.get(id) {
            return i.clone();
        }
        let (changes, _) = broadcast::channel(CHANGES_BUFFER);
        let (synced, _) = watch::channel(false);
        let inf = Arc::new(Informer { resource: res, cache: RwLock::default(), changes, synced });
        let (run, api, cancel) = (inf.clone(), self.api.clone(), self.cancel.clone());
        self.tasks.spawn(async move {
            tokio::select! {
                () = run.run(api) => {}
                () = cancel.cancelled() => {}
            }
        });
        started.insert(id, inf.clone());
        inf
    }
}

fn storage_id(res: &'static Resource) -> &'static str {
    res.storage
}
