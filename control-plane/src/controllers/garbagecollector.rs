//! The garbage collector: deletes objects whose owners are gone, and carries out the
//! `Foreground` and `Orphan` deletion policies (kube-controller-manager's `garbagecollector`).
//!
//! It follows every served resource but events through the shared informers and keeps an index
//! from owner uid to the objects whose `ownerReferences` name it. Work items are objects:
//! - an object whose owners are all gone (deleted, or replaced by one with another uid) is deleted,
//!   in the background, or in the foreground when an owner waits for it and it has dependents of
//!   its own; references to gone owners are dropped from objects that still have a live owner;
//! - an owner being deleted with the `foregroundDeletion` finalizer has its dependents deleted and
//!   keeps the finalizer until the ones with `blockOwnerDeletion` are gone;
//! - an owner being deleted with the `orphan` finalizer has its reference removed from each
//!   dependent, then the finalizer.
//!
//! (The REST layer turns a delete's propagation policy into those finalizers.) A namespaced owner
//! owns only dependents in its own namespace; a cluster-scoped dependent naming a namespaced owner
//! is never collected (a warning event says so). Owners are read from the caches and, when the
//! cache does not have them as referenced, from the store: a cache that lags behind a new owner
//! must not get its dependents deleted. A periodic rescan repairs what a lagging subscription
//! missed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tracing::{debug, info};

use super::{Action, Change, Controller, Ctx, Watch, WorkQueue, cache_key, key_of};
use crate::registry::{RESOURCES, Resource};
use crate::server::errors::ApiError;
use crate::server::internal::DeleteParams;

pub const NAME: &str = "garbagecollector";
/// Finalizer of an owner that waits for its dependents to be deleted first.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer of an owner whose dependents are to be kept without it.
pub const ORPHAN: &str = "orphan";
/// How often the index is rebuilt from the caches and dangling references looked for.
const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// How long an owner waiting for its dependents sleeps if nothing wakes it.
const FOREGROUND_RECHECK: Duration = Duration::from_secs(30);

/// The resources followed: every served one but events (as upstream, which ignores them).
static FOLLOWED: LazyLock<Vec<&'static Resource>> =
    LazyLock::new(|| RESOURCES.iter().copied().filter(|r| r.plural != "events").collect());

/// A followed object: its resource (index into [`FOLLOWED`]) and cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ObjRef {
    res: usize,
    key: String,
}

impl ObjRef {
    fn resource(&self) -> &'static Resource {
        FOLLOWED[self.res]
    }

    /// `pods|default/web-1`; keys of the first followed resource may come bare (the framework
    /// enqueues the primary resource's own keys at start).
    fn queue_key(&self) -> String {
        format!("{}|{}", self.resource().qualified(), self.key)
    }

    fn parse(key: &str) -> Option<ObjRef> {
        match key.split_once('|') {
            None => Some(ObjRef { res: 0, key: key.to_string() }),
            Some((q, k)) => {
                FOLLOWED.iter().position(|r| r.qualified() == q).map(|res| ObjRef { res, key: k.to_string() })
            }
        }
    }

    fn namespace_and_name(&self) -> (&str, &str) {
        self.key.split_once('/').unwrap_or(("", &self.key))
    }
}

/// One `metadata.ownerReferences` entry.
#[derive(Clone, Debug)]
struct OwnerRef {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
    block: bool,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn uid_of(obj: &Value) -> &str {
    str_at(obj, "/metadata/uid")
}

fn owner_refs(obj: &Value) -> Vec<OwnerRef> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| OwnerRef {
            api_version: str_at(r, "/apiVersion").to_string(),
            kind: str_at(r, "/kind").to_string(),
            name: str_at(r, "/name").to_string(),
            uid: str_at(r, "/uid").to_string(),
            block: r.get("blockOwnerDeletion").and_then(Value::as_bool).unwrap_or(false),
        })
        .collect()
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

fn has_finalizer(obj: &Value, f: &str) -> bool {
    obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == f))
}

fn rv_of(obj: &Value) -> i64 {
    str_at(obj, "/metadata/resourceVersion").parse().unwrap_or(0)
}

/// The followed resource an ownerReference's `apiVersion` and `kind` name.
fn owner_resource(r: &OwnerRef) -> Option<usize> {
    let (group, version) = r.api_version.rsplit_once('/').unwrap_or(("", &r.api_version));
    FOLLOWED.iter().position(|res| res.group == group && res.version == version && res.kind == r.kind)
}

/// Where an owner referenced by `dependent` (of resource `dep_res`) lives. `Err(())` for a
/// namespaced owner of a cluster-scoped dependent, which cannot be; `Ok(None)` for a kind not served.
fn resolve_owner(dep_res: usize, dependent: &Value, r: &OwnerRef) -> Result<Option<ObjRef>, ()> {
    let Some(res) = owner_resource(r) else { return Ok(None) };
    if !FOLLOWED[res].namespaced {
        return Ok(Some(ObjRef { res, key: r.name.clone() }));
    }
    if !FOLLOWED[dep_res].namespaced {
        return Err(());
    }
    Ok(Some(ObjRef { res, key: cache_key(str_at(dependent, "/metadata/namespace"), &r.name) }))
}

/// Owner uid → the objects that reference it, and back.
#[derive(Default)]
struct Graph {
    dependents: HashMap<String, BTreeSet<ObjRef>>,
    /// Dependent → (resourceVersion the entry reflects, owner uids).
    owners: HashMap<ObjRef, (i64, Vec<String>)>,
}

impl Graph {
    /// Records the owners of `id` as of resourceVersion `rv`, unless a newer state is recorded.
    fn observe(&mut self, id: &ObjRef, rv: i64, uids: Vec<String>) {
        if self.owners.get(id).is_some_and(|(seen, _)| *seen > rv) {
            return;
        }
        self.forget(id);
        if uids.is_empty() {
            return;
        }
        for u in &uids {
            self.dependents.entry(u.clone()).or_default().insert(id.clone());
        }
        self.owners.insert(id.clone(), (rv, uids));
    }

    fn forget(&mut self, id: &ObjRef) {
        let Some((_, uids)) = self.owners.remove(id) else { return };
        for u in uids {
            if let Some(set) = self.dependents.get_mut(&u) {
                set.remove(id);
                if set.is_empty() {
                    self.dependents.remove(&u);
                }
            }
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<ObjRef> {
        self.dependents.get(uid).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

#[derive(Default)]
pub struct GarbageCollector {
    graph: Arc<Mutex<Graph>>,
}

impl Controller for GarbageCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<Watch> {
        (0..FOLLOWED.len())
            .map(|res| {
                let graph = self.graph.clone();
                Watch::mapped(FOLLOWED[res], move |ctx, change| keys_for_change(ctx, &graph, res, change))
            })
            .collect()
    }

    fn reconcile<'a>(&'a self, ctx: &'a Ctx, key: &'a str) -> BoxFuture<'a, Result<Action, ApiError>> {
        Box::pin(self.sync(ctx, key))
    }

    fn workers(&self) -> usize {
        4
    }

    fn background<'a>(&'a self, ctx: &'a Ctx, queue: &'a WorkQueue) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for res in FOLLOWED.iter() {
                ctx.informers.get(res).synced().await;
            }
            loop {
                self.rescan(ctx, queue);
                tokio::select! {
                    () = tokio::time::sleep(RESCAN_EVERY) => {}
                    () = ctx.cancel.cancelled() => return,
                }
            }
        })
    }
}

/// Updates the index with one change and names the objects to look at because of it.
fn keys_for_change(ctx: &Ctx, graph: &Mutex<Graph>, res: usize, change: &Change) -> Vec<String> {
    let obj = change.object();
    let id = ObjRef { res, key: key_of(obj) };
    let mut keys = Vec::new();
    match (&change.old, &change.new) {
        (old, Some(new)) => {
            let uids = owner_refs(new).into_iter().map(|r| r.uid).collect();
            graph.lock().expect("graph lock").observe(&id, rv_of(new), uids);
            let replaced = old.as_ref().filter(|o| uid_of(o) != uid_of(new));
            if let Some(o) = replaced {
                keys.extend(keys_for_gone(ctx, graph, res, o));
            }
            let old = old.as_ref().filter(|_| replaced.is_none());
            let refs_changed =
                old.is_none_or(|o| o.pointer("/metadata/ownerReferences") != new.pointer("/metadata/ownerReferences"));
            if refs_changed && !owner_refs(new).is_empty() {
                keys.push(id.queue_key());
            }
            if let Some(o) = old {
                // A reference dropped may be what a waiting owner waits for.
                let kept: HashSet<String> = owner_refs(new).into_iter().map(|r| r.uid).collect();
                for r in owner_refs(o).into_iter().filter(|r| !kept.contains(&r.uid)) {
                    keys.extend(waiting_owner_key(ctx, res, o, &r));
                }
            }
            let special = deleting(new) && (has_finalizer(new, FOREGROUND) || has_finalizer(new, ORPHAN));
            let transition = old.is_none_or(|o| {
                !deleting(o) || o.pointer("/metadata/finalizers") != new.pointer("/metadata/finalizers")
            });
            if special && transition {
                keys.push(id.queue_key());
            }
        }
        (Some(old), None) => {
            graph.lock().expect("graph lock").forget(&id);
            keys.extend(keys_for_gone(ctx, graph, res, old));
        }
        (None, None) => {}
    }
    keys
}

/// An object went away: its dependents may be garbage now, and an owner waiting for it may be done.
fn keys_for_gone(ctx: &Ctx, graph: &Mutex<Graph>, res: usize, old: &Value) -> Vec<String> {
    let deps = graph.lock().expect("graph lock").dependents_of(uid_of(old));
    let mut keys: Vec<String> = deps.iter().map(ObjRef::queue_key).collect();
    for r in owner_refs(old) {
        keys.extend(waiting_owner_key(ctx, res, old, &r));
    }
    keys
}

/// The key of the owner `r` of `dependent` if that owner is deleting its dependents first.
fn waiting_owner_key(ctx: &Ctx, dep_res: usize, dependent: &Value, r: &OwnerRef) -> Option<String> {
    let owner = resolve_owner(dep_res, dependent, r).ok().flatten()?;
    let o = ctx.informers.get(owner.resource()).get_key(&owner.key)?;
    (uid_of(&o) == r.uid && deleting(&o) && has_finalizer(&o, FOREGROUND)).then(|| owner.queue_key())
}

/// What became of an owner.
enum OwnerState {
    Absent,
    Present(Arc<Value>),
}

impl GarbageCollector {
    async fn sync(&self, ctx: &Ctx, key: &str) -> Result<Action, ApiError> {
        let Some(id) = ObjRef::parse(key) else { return Ok(Action::Done) };
        let Some(obj) = ctx.informers.get(id.resource()).get_key(&id.key) else { return Ok(Action::Done) };
        if deleting(&obj) {
            if has_finalizer(&obj, ORPHAN) {
                return self.orphan_dependents(ctx, &id, &obj).await;
            }
            if has_finalizer(&obj, FOREGROUND) {
                return self.delete_dependents_first(ctx, &id, &obj).await;
            }
            return Ok(Action::Done);
        }
        self.collect_if_garbage(ctx, &id, &obj).await?;
        Ok(Action::Done)
    }

    /// The live dependents of the object with `uid`, from the index checked against the caches.
    fn dependents(&self, ctx: &Ctx, uid: &str) -> Vec<(ObjRef, Arc<Value>)> {
        let ids = self.graph.lock().expect("graph lock").dependents_of(uid);
        ids.into_iter()
            .filter_map(|d| {
                let obj = ctx.informers.get(d.resource()).get_key(&d.key)?;
                owner_refs(&obj).iter().any(|r| r.uid == uid).then_some((d, obj))
            })
            .collect()
    }

    /// `orphan`: drop the owner from each dependent's references, then the finalizer.
    async fn orphan_dependents(&self, ctx: &Ctx, id: &ObjRef, owner: &Value) -> Result<Action, ApiError> {
        let uid = uid_of(owner).to_string();
        for (dep, obj) in self.dependents(ctx, &uid) {
            let (ns, name) = dep.namespace_and_name();
            update_object(ctx, dep.resource(), ns, name, uid_of(&obj), |o| remove_owner_refs(o, &[uid.as_str()]))
                .await?;
            debug!(owner = %id.key, dependent = %dep.key, "orphaned dependent");
        }
        remove_finalizer(ctx, id, owner, ORPHAN).await?;
        info!(object = %id.queue_key(), "dependents orphaned");
        Ok(Action::Done)
    }

    /// `foregroundDeletion`: delete the dependents; once none that blocks is left, drop the
    /// finalizer (which deletes the owner if it was the last).
    async fn delete_dependents_first(&self, ctx: &Ctx, id: &ObjRef, owner: &Value) -> Result<Action, ApiError> {
        let uid = uid_of(owner).to_string();
        let deps = self.dependents(ctx, &uid);
        let blocking = deps.iter().filter(|(_, d)| owner_refs(d).iter().any(|r| r.uid == uid && r.block)).count();
        if blocking == 0 {
            remove_finalizer(ctx, id, owner, FOREGROUND).await?;
            info!(object = %id.queue_key(), "dependents deleted; foreground deletion finished");
            return Ok(Action::Done);
        }
        for (dep, obj) in &deps {
            if !deleting(obj) {
                self.collect_if_garbage(ctx, dep, obj).await?;
            }
        }
        debug!(object = %id.queue_key(), blocking, "waiting for dependents");
        Ok(Action::RequeueAfter(FOREGROUND_RECHECK))
    }

    /// Where the owner named by `r` stands: the cache if it has it as referenced, else the store.
    async fn owner_state(&self, ctx: &Ctx, owner: &ObjRef, r: &OwnerRef) -> Result<OwnerState, ApiError> {
        if let Some(o) = ctx.informers.get(owner.resource()).get_key(&owner.key)
            && uid_of(&o) == r.uid
        {
            return Ok(OwnerState::Present(o));
        }
        let (ns, name) = owner.namespace_and_name();
        match ctx.client.get(owner.resource(), ns, name).await {
            Ok(o) if uid_of(&o) == r.uid => Ok(OwnerState::Present(Arc::new(o))),
            Ok(_) => Ok(OwnerState::Absent),
            Err(e) if e.code == 404 => Ok(OwnerState::Absent),
            Err(e) => Err(e),
        }
    }

    /// Deletes `obj` if none of its owners is left (upstream's `attemptToDeleteItem`).
    async fn collect_if_garbage(&self, ctx: &Ctx, id: &ObjRef, obj: &Value) -> Result<(), ApiError> {
        let refs = owner_refs(obj);
        if refs.is_empty() {
            return Ok(());
        }
        let (mut solid, mut dangling, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
        for r in &refs {
            let owner = match resolve_owner(id.res, obj, r) {
                Ok(Some(o)) => o,
                // A kind this server does not serve: never collect on its account.
                Ok(None) => {
                    debug!(object = %id.queue_key(), kind = %r.kind, "owner kind not served");
                    solid.push(r.clone());
                    continue;
                }
                Err(()) => {
                    let msg = format!(
                        "ownerRef [{}/{}, namespace: , name: {}, uid: {}] does not exist in namespace \"\"",
                        r.api_version, r.kind, r.name, r.uid
                    );
                    let res = id.resource();
                    ctx.events
                        .record(obj, res.kind, &res.api_version(), "Warning", "OwnerRefInvalidNamespace", &msg)
                        .await;
                    return Ok(());
                }
            };
            match self.owner_state(ctx, &owner, r).await? {
                OwnerState::Absent => dangling.push(r.clone()),
                OwnerState::Present(o) if deleting(&o) && has_finalizer(&o, FOREGROUND) => waiting.push(r.clone()),
                OwnerState::Present(_) => solid.push(r.clone()),
            }
        }
        let res = id.resource();
        let (ns, name) = id.namespace_and_name();
        let uid = uid_of(obj).to_string();
        if !solid.is_empty() {
            // It stays; references to owners that are gone or going are dropped so that those
            // owners are not held.
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            let drop: Vec<String> = dangling.iter().chain(&waiting).map(|r| r.uid.clone()).collect();
            let drop: Vec<&str> = drop.iter().map(String::as_str).collect();
            debug!(object = %id.queue_key(), ?drop, "removing references to absent owners");
            return update_object(ctx, res, ns, name, &uid, |o| remove_owner_refs(o, &drop)).await;
        }
        let own_dependents = self.dependents(ctx, &uid);
        let policy = if !waiting.is_empty() && !own_dependents.is_empty() {
            // Its owner waits and it has dependents of its own: delete those first too. If one of
            // them already waits for its own dependents, stop blocking owners to avoid a cycle.
            if own_dependents.iter().any(|(_, d)| deleting(d) && has_finalizer(d, FOREGROUND)) {
                update_object(ctx, res, ns, name, &uid, unblock_owner_refs).await?;
            }
            "Foreground"
        } else if has_finalizer(obj, ORPHAN) {
            "Orphan"
        } else if has_finalizer(obj, FOREGROUND) {
            "Foreground"
        } else {
            "Background"
        };
        info!(object = %id.queue_key(), policy, "deleting object whose owners are gone");
        let params = DeleteParams { propagation: Some(policy.into()), uid: Some(uid), ..Default::default() };
        match ctx.client.delete(res, ns, name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or replaced by a new object of the same name.
            Err(e) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Refreshes the index from the caches, drops entries of objects that are gone, and queues
    /// objects that look like garbage or are being deleted with a policy to carry out.
    fn rescan(&self, ctx: &Ctx, queue: &WorkQueue) {
        for (res, resource) in FOLLOWED.iter().enumerate() {
            for obj in ctx.informers.get(resource).list("", |_| true) {
                let id = ObjRef { res, key: key_of(&obj) };
                let refs = owner_refs(&obj);
                if !refs.is_empty() {
                    let uids = refs.iter().map(|r| r.uid.clone()).collect();
                    self.graph.lock().expect("graph lock").observe(&id, rv_of(&obj), uids);
                }
                let candidate = if deleting(&obj) {
                    has_finalizer(&obj, FOREGROUND) || has_finalizer(&obj, ORPHAN)
                } else {
                    refs.iter().any(|r| match resolve_owner(res, &obj, r) {
                        Ok(Some(o)) => {
                            ctx.informers.get(o.resource()).get_key(&o.key).is_none_or(|owner| uid_of(&owner) != r.uid)
                        }
                        _ => false,
                    })
                };
                if candidate {
                    queue.add(id.queue_key());
                }
            }
        }
        let mut graph = self.graph.lock().expect("graph lock");
        let known: Vec<ObjRef> = graph.owners.keys().cloned().collect();
        for id in known {
            if ctx.informers.get(id.resource()).get_key(&id.key).is_none() {
                graph.forget(&id);
            }
        }
    }
}

/// Removes the references to the given owner uids; returns whether anything changed.
fn remove_owner_refs(obj: &mut Value, uids: &[&str]) -> bool {
    let Some(list) = obj.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) else { return false };
    let before = list.len();
    list.retain(|r| !uids.contains(&str_at(r, "/uid")));
    let changed = list.len() != before;
    if list.is_empty()
        && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.remove("ownerReferences");
    }
    changed
}

/// Sets `blockOwnerDeletion: false` on every reference that blocks.
fn unblock_owner_refs(obj: &mut Value) -> bool {
    let mut changed = false;
    for r in obj.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut).into_iter().flatten() {
        if r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
            r["blockOwnerDeletion"] = json!(false);
            changed = true;
        }
    }
    changed
}

async fn remove_finalizer(ctx: &Ctx, id: &ObjRef, obj: &Value, finalizer: &str) -> Result<(), ApiError> {
    let (ns, name) = id.namespace_and_name();
    update_object(ctx, id.resource(), ns, name, uid_of(obj), |o| {
        let Some(list) = o.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) else { return false };
        let before = list.len();
        list.retain(|f| f != finalizer);
        let changed = list.len() != before;
        if list.is_empty()
            && let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("finalizers");
        }
        changed
    })
    .await
}

/// Reads the object fresh, applies `change` and writes it back with compare-and-swap, retrying on
/// conflicts. An object that is gone or has another uid is left alone.
async fn update_object(
    ctx: &Ctx,
    res: &'static Resource,
    ns: &str,
    name: &str,
    uid: &str,
    mut change: impl FnMut(&mut Value) -> bool,
) -> Result<(), ApiError> {
    for _ in 0..5 {
        let mut cur = match ctx.client.get(res, ns, name).await {
            Ok(o) => o,
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        };
        if uid_of(&cur) != uid || !change(&mut cur) {
            return Ok(());
        }
        match ctx.client.update(res, ns, cur).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(res, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(res: &str, key: &str) -> ObjRef {
        ObjRef { res: FOLLOWED.iter().position(|r| r.plural == res).expect("followed"), key: key.into() }
    }

    #[test]
    fn keys_round_trip_and_events_are_not_followed() {
        let pod = id("pods", "default/web-1");
        assert_eq!(pod.queue_key(), "pods|default/web-1");
        assert_eq!(ObjRef::parse(&pod.queue_key()), Some(pod));
        let rs = id("replicasets", "default/web");
        assert_eq!(ObjRef::parse("replicasets.apps|default/web"), Some(rs));
        assert!(FOLLOWED.iter().all(|r| r.plural != "events"));
    }

    #[test]
    fn owners_resolve_by_scope() {
        let dep = json!({"metadata": {"namespace": "ns1"}});
        let rs = OwnerRef {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web".into(),
            uid: "u".into(),
            block: true,
        };
        assert_eq!(resolve_owner(id("pods", "").res, &dep, &rs), Ok(Some(id("replicasets", "ns1/web"))));
        let node = OwnerRef {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: "n1".into(),
            uid: "u".into(),
            block: false,
        };
        assert_eq!(resolve_owner(id("pods", "").res, &dep, &node), Ok(Some(id("nodes", "n1"))));
        assert_eq!(resolve_owner(id("nodes", "").res, &dep, &rs), Err(()));
        let crd = OwnerRef {
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            name: "w".into(),
            uid: "u".into(),
            block: false,
        };
        assert_eq!(resolve_owner(id("pods", "").res, &dep, &crd), Ok(None));
    }

    #[test]
    fn index_follows_reference_changes_and_ignores_older_states() {
        let mut g = Graph::default();
        let a = id("configmaps", "default/a");
        g.observe(&a, 5, vec!["owner-1".into()]);
        assert_eq!(g.dependents_of("owner-1"), std::slice::from_ref(&a));
        g.observe(&a, 7, vec!["owner-2".into()]);
        assert!(g.dependents_of("owner-1").is_empty());
        g.observe(&a, 6, vec!["owner-1".into()]);
        assert_eq!(g.dependents_of("owner-2"), std::slice::from_ref(&a), "an older state does not win");
        g.forget(&a);
        assert!(g.dependents.is_empty() && g.owners.is_empty());
    }

    #[test]
    fn reference_edits() {
        let mut o = json!({"metadata": {"ownerReferences": [{"uid": "a", "blockOwnerDeletion": true}, {"uid": "b"}]}});
        assert!(unblock_owner_refs(&mut o));
        assert_eq!(o["metadata"]["ownerReferences"][0]["blockOwnerDeletion"], false);
        assert!(remove_owner_refs(&mut o, &["a"]));
        assert!(!remove_owner_refs(&mut o, &["a"]));
        assert!(remove_owner_refs(&mut o, &["b"]));
        assert!(o["metadata"].get("ownerReferences").is_none());
    }
}
