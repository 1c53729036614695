//! Generic REST handlers: get, list, create, update, patch, delete, deletecollection and the
//! status, scale, binding and eviction subresources, for every resource in the registry.
//! Resource-specific behaviour comes from the resource's `Strategy`; nothing here matches on kinds.

use std::sync::Arc;

use base64::Engine as _;
use http::{Method, Response};
use serde_json::{Value, json};

use super::errors::{ApiError, ApiResult};
use super::event_cache::EventCache;
use super::negotiate::{self, Output};
use super::object::{self, meta_mut, meta_str};
use super::{Api, Body, Call, ResourceRequest, allocation, json_response, respond, table, watch};
use crate::registry::{self, Resource};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::storage::{KeyValue, RangeRequest, StoreError, prefix_end};
use crate::validation::{ErrorKind, FieldErrors, validate_labels_and_annotations};

/// How many times an update is retried when the object changes underneath it.
const UPDATE_RETRIES: usize = 32;

pub async fn serve(api: &Arc<Api>, rr: ResourceRequest, call: Call) -> ApiResult<Response<Body>> {
    let name = rr.name.clone();
    let sub = rr.subresource.as_deref();
    let is_watch = call.query.get("watch").is_some_and(|w| w == "true" || w == "1");
    if rr.resource.namespaced && rr.namespace.is_empty() && !(call.method == Method::GET && name.is_none()) {
        return Err(ApiError::not_found_path());
    }
    match (&call.method, name.as_deref(), sub) {
        (&Method::GET, None, None) if is_watch => watch::serve(api, &rr, &call).await,
        (&Method::GET, None, None) => list(api, &rr, &call).await,
        (&Method::GET, Some(n), None | Some("status")) => get(api, &rr, n, &call).await,
        (&Method::GET, Some(n), Some("scale")) => get_scale(api, &rr, n).await,
        (&Method::POST, None, None) => create(api, &rr, &call).await,
        (&Method::POST, Some(n), Some("binding")) => bind(api, &rr, n, &call).await,
        (&Method::POST, Some(n), Some("eviction")) => evict(api, &rr, n).await,
        (&Method::PUT, Some(n), sub) => update(api, &rr, n, sub, &call).await,
        (&Method::PATCH, Some(n), sub) => patch(api, &rr, n, sub, &call).await,
        (&Method::DELETE, Some(n), None) => delete(api, &rr, n, &call).await,
        (&Method::DELETE, None, None) => delete_collection(api, &rr, &call).await,
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn dry_run(call: &Call) -> ApiResult<bool> {
    match call.query.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => {
            Err(ApiError::bad_request(format!("unsupported dryRun value {other:?}; only \"All\" is supported")))
        }
    }
}

/// Writes one object in the response format the client asked for.
pub fn object_response(res: &Resource, status: u16, obj: &Value, call: &Call) -> ApiResult<Response<Body>> {
    match negotiate::output(call.accept.as_deref(), true)? {
        Output::Table => {
            let rv = meta_str(obj, "resourceVersion").unwrap_or("").to_string();
            Ok(json_response(
                status,
                &table::table(res, std::slice::from_ref(obj), json!({"resourceVersion": rv}), &call.query, true),
            ))
        }
        Output::PartialMetadata => Ok(json_response(status, &table::partial_object(obj))),
        Output::Yaml => Ok(respond(
            status,
            "application/yaml",
            serde_yaml::to_string(obj).map_err(|e| ApiError::internal(e.to_string()))?,
        )),
        Output::Protobuf => protobuf_response(status, obj),
        Output::Json => Ok(json_response(status, obj)),
    }
}

fn protobuf_response(status: u16, obj: &Value) -> ApiResult<Response<Body>> {
    let bytes = crate::protobuf::encode(obj)
        .map_err(|e| ApiError::not_acceptable(format!("cannot encode as protobuf: {e}")))?;
    Ok(respond(status, crate::protobuf::CONTENT_TYPE, bytes))
}

fn success_status(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

/// The current object and its revision. A value still in the event cache (a recent write) is
/// shared, not parsed again; an older one is parsed for this request without entering the cache.
pub(super) async fn read(api: &Api, res: &Resource, namespace: &str, name: &str) -> ApiResult<(Arc<Value>, i64)> {
    read_as(api, res, namespace, name, EventCache::read).await
}

/// As [`read`], for an object read again and again (a namespace, by every create in it): its
/// decoded value enters the event cache, so the next read shares it.
async fn read_hot(api: &Api, res: &Resource, namespace: &str, name: &str) -> ApiResult<(Arc<Value>, i64)> {
    read_as(api, res, namespace, name, EventCache::object).await
}

async fn read_as(
    api: &Api,
    res: &Resource,
    namespace: &str,
    name: &str,
    decode: fn(&EventCache, &KeyValue) -> Option<Arc<Value>>,
) -> ApiResult<(Arc<Value>, i64)> {
    let key = res.key(namespace, name);
    let kv = api.store.get(&key, 0).await.map_err(|e| ApiError::from_store(e, res, name))?;
    let kv = kv.ok_or_else(|| ApiError::not_found(res, name))?;
    match decode(&api.events, &kv) {
        Some(obj) => Ok((obj, kv.mod_revision)),
        // Not decodable: decode again for the error that says why.
        None => Err(object::decode(&kv).err().unwrap_or_else(|| ApiError::internal(format!("{key} is corrupt")))),
    }
}

async fn get(api: &Api, rr: &ResourceRequest, name: &str, call: &Call) -> ApiResult<Response<Body>> {
    let (obj, _) = read(api, rr.resource, &rr.namespace, name).await?;
    object_response(rr.resource, 200, &obj, call)
}

// ---------------------------------------------------------------- list

/// Position of a paginated list: the revision of its first page and the next key.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, start: String) -> String {
    let t = ContinueToken { v: "meta.k8s.io/v1".into(), rv, start };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&t).expect("json"))
}

fn decode_continue(s: &str, prefix: &str) -> ApiResult<ContinueToken> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE.decode(s).map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if t.v != "meta.k8s.io/v1" || t.rv <= 0 || !t.start.starts_with(prefix) {
        return Err(bad());
    }
    Ok(t)
}

/// Filters objects by label and field selectors.
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub fn from_query(call: &Call) -> ApiResult<Filter> {
        let labels = LabelSelector::parse(call.query.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(call.query.get("fieldSelector").map(String::as_str).unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Filter { labels, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, res: &Resource, obj: &Value) -> ApiResult<bool> {
        if !self.labels.matches(obj) {
            return Ok(false);
        }
        for (field, eq, want) in &self.fields.0 {
            let got = match field.as_str() {
                "metadata.name" => meta_str(obj, "name").unwrap_or("").to_string(),
                "metadata.namespace" => meta_str(obj, "namespace").unwrap_or("").to_string(),
                other => res
                    .strategy
                    .field(obj, other)
                    .ok_or_else(|| ApiError::bad_request(format!("field label not supported: {other}")))?,
            };
            if (got == *want) != *eq {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Checks every field is selectable for `res`, before anything is read.
    pub fn validate(&self, res: &Resource) -> ApiResult<()> {
        let probe = json!({"metadata": {}});
        for (field, _, _) in &self.fields.0 {
            if field != "metadata.name" && field != "metadata.namespace" && res.strategy.field(&probe, field).is_none()
            {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
        }
        Ok(())
    }
}

fn parse_rv(s: &str) -> ApiResult<i64> {
    s.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resource version {s:?}")))
}

/// Reads the items of a list request. Returns (items, list revision, continue).
pub async fn list_items(
    api: &Api,
    rr: &ResourceRequest,
    call: &Call,
    filter: &Filter,
) -> ApiResult<(Vec<Value>, i64, Option<String>)> {
    let res = rr.resource;
    list_with(api, rr, call, filter.is_empty(), |kv| {
        let obj = object::decode(kv)?;
        Ok(filter.matches(res, &obj)?.then_some(obj))
    })
    .await
}

/// The paging of a list request (`limit`, `continue`, `resourceVersion[Match]`), with each stored
/// object turned into an item by `item` (`None`: filtered out). `unfiltered`: every object is an
/// item, so a store page of `limit` + 1 finds the continue key. Returns (items, list revision,
/// continue).
async fn list_with<T>(
    api: &Api,
    rr: &ResourceRequest,
    call: &Call,
    unfiltered: bool,
    mut item: impl FnMut(&KeyValue) -> ApiResult<Option<T>>,
) -> ApiResult<(Vec<T>, i64, Option<String>)> {
    let res = rr.resource;
    let prefix = res.prefix(&rr.namespace);
    let limit: usize = match call.query.get("limit").map(String::as_str) {
        None | Some("") => 0,
        Some(l) => l.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?.max(0) as usize,
    };
    let rv_param = call.query.get("resourceVersion").map(String::as_str).unwrap_or("");
    let rv_match = call.query.get("resourceVersionMatch").map(String::as_str).unwrap_or("");
    let (mut start, mut revision) = (prefix.clone(), 0i64);
    if let Some(c) = call.query.get("continue").filter(|c| !c.is_empty()) {
        let t = decode_continue(c, &prefix)?;
        start = t.start;
        revision = t.rv;
    } else {
        match rv_match {
            "" | "NotOlderThan" => {
                if !rv_param.is_empty() && rv_param != "0" {
                    let want = parse_rv(rv_param)?;
                    let cur = api.store.current_revision().await.map_err(|e| ApiError::from_store(e, res, ""))?;
                    if want > cur {
                        return Err(ApiError::from_store(
                            StoreError::FutureRevision { requested: want, current: cur },
                            res,
                            "",
                        ));
                    }
                }
            }
            "Exact" => {
                if rv_param.is_empty() || rv_param == "0" {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch \"Exact\" requires a resourceVersion other than \"0\"",
                    ));
                }
                revision = parse_rv(rv_param)?;
            }
            other => return Err(ApiError::bad_request(format!("unsupported resourceVersionMatch {other:?}"))),
        }
    }
    let end = prefix_end(&prefix);
    let batch = if limit == 0 { 0 } else { limit.max(if unfiltered { limit } else { 500 }) + 1 };
    let mut items = Vec::new();
    let mut list_rev = revision;
    let mut next_key: Option<String> = None;
    loop {
        let resp = api
            .store
            .range(RangeRequest { start: start.clone(), end: end.clone(), revision: list_rev, limit: batch })
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                e => ApiError::from_store(e, res, ""),
            })?;
        list_rev = resp.revision;
        let n = resp.kvs.len();
        for kv in &resp.kvs {
            if limit > 0 && items.len() == limit {
                next_key = Some(kv.key.clone());
                break;
            }
            if let Some(made) = item(kv)? {
                items.push(made);
            }
        }
        if next_key.is_some() || !resp.more || n == 0 {
            if next_key.is_none() && resp.more {
                next_key = resp.kvs.last().map(|kv| format!("{}\0", kv.key));
            }
            break;
        }
        start = format!("{}\0", resp.kvs.last().expect("non-empty page").key);
    }
    let cont = next_key.map(|k| encode_continue(list_rev, k));
    Ok((items, list_rev, cont))
}

async fn list(api: &Api, rr: &ResourceRequest, call: &Call) -> ApiResult<Response<Body>> {
    let res = rr.resource;
    let filter = Filter::from_query(call)?;
    filter.validate(res)?;
    let output = negotiate::output(call.accept.as_deref(), true)?;
    if output == Output::Json && filter.is_empty() {
        return raw_list(api, rr, call).await;
    }
    let (mut items, rev, cont) = list_items(api, rr, call, &filter).await?;
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let body = match output {
        Output::Table => table::table(res, &items, meta, &call.query, true),
        Output::PartialMetadata => table::partial_list(&items, meta),
        _ => {
            for item in &mut items {
                if let Some(m) = item.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
            }
            json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": meta, "items": items})
        }
    };
    match output {
        Output::Yaml => Ok(respond(
            200,
            "application/yaml",
            serde_yaml::to_string(&body).map_err(|e| ApiError::internal(e.to_string()))?,
        )),
        Output::Protobuf => protobuf_response(200, &body),
        _ => Ok(json_response(200, &body)),
    }
}

/// A JSON list without selectors, written from the stored bytes ([`object::write_list_item`])
/// rather than through a tree per item; the same document [`list`]'s general path answers.
async fn raw_list(api: &Api, rr: &ResourceRequest, call: &Call) -> ApiResult<Response<Body>> {
    let res = rr.resource;
    let mut body = Vec::new();
    body.extend_from_slice(b"{\"kind\":");
    serde_json::to_writer(&mut body, &format!("{}List", res.kind)).expect("json serializes");
    body.extend_from_slice(b",\"apiVersion\":");
    serde_json::to_writer(&mut body, &res.api_version()).expect("json serializes");
    body.extend_from_slice(b",\"metadata\":");
    // The metadata goes before the items but is only known after them: items are written to a
    // buffer of their own first.
    let mut items = vec![b'['];
    // The items themselves are `()`: `list_with` counts them for `limit`.
    let (_, rev, cont) = list_with(api, rr, call, true, |kv| {
        if items.len() > 1 {
            items.push(b',');
        }
        object::write_list_item(kv, &mut items)?;
        Ok(Some(()))
    })
    .await?;
    items.push(b']');
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    serde_json::to_writer(&mut body, &meta).expect("json serializes");
    body.extend_from_slice(b",\"items\":");
    body.extend_from_slice(&items);
    body.push(b'}');
    Ok(respond(200, "application/json", body))
}

// ---------------------------------------------------------------- create

async fn namespace_must_accept(api: &Api, res: &Resource, namespace: &str, name: &str) -> ApiResult<()> {
    if !res.namespaced {
        return Ok(());
    }
    let ns_res = registry::find("", "v1", "namespaces").expect("namespaces are served");
    let (ns, _) = read_hot(api, ns_res, "", namespace).await?;
    if ns.pointer("/metadata/deletionTimestamp").is_some()
        || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
    {
        return Err(ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
            res.qualified(),
        )));
    }
    Ok(())
}

/// Validates metadata and the type-specific rules; a non-empty result is a 422.
fn validate(res: &Resource, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let mut errs = FieldErrors::default();
    let name = object::name_of(obj).to_string();
    if name.is_empty() {
        errs.push(ErrorKind::Required, "metadata.name", None, "name or generateName is required");
    } else {
        for e in res.strategy.name_rule().check(&name) {
            errs.invalid("metadata.name", json!(name), e);
        }
    }
    if let Some(meta) = obj.get("metadata") {
        validate_labels_and_annotations(meta, "metadata", &mut errs);
    }
    if let Some(old) = old {
        for f in ["uid", "creationTimestamp"] {
            errs.immutable(
                &format!("metadata.{f}"),
                obj.pointer(&format!("/metadata/{f}")),
                old.pointer(&format!("/metadata/{f}")),
            );
        }
    }
    res.strategy.validate(obj, old, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(ApiError::invalid(res, &name, &errs)) }
}

/// Fills the system fields of a new object and runs the create rules. Returns the prepared object.
fn prepare_new(res: &Resource, mut obj: Value, namespace: &str) -> ApiResult<Value> {
    object::check_type(res, &mut obj)?;
    let meta = meta_mut(&mut obj);
    if meta.get("name").and_then(Value::as_str).is_none_or(str::is_empty)
        && let Some(prefix) = meta.get("generateName").and_then(Value::as_str).filter(|p| !p.is_empty())
    {
        let name = format!("{prefix}{}", object::random_suffix());
        meta.insert("name".into(), json!(name));
    }
    if res.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(namespace));
            }
        }
    } else {
        meta.remove("namespace");
    }
    for f in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields"] {
        meta.remove(f);
    }
    meta.insert("uid".into(), json!(object::new_uid()));
    meta.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
    if res.strategy.tracks_generation() {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    res.strategy.default(&mut obj);
    res.strategy.prepare_create(&mut obj);
    validate(res, &obj, None)?;
    Ok(obj)
}

pub(super) async fn create_object(
    api: &Api,
    res: &Resource,
    namespace: &str,
    obj: Value,
    dry: bool,
) -> ApiResult<Stored> {
    let obj = prepare_new(res, obj, namespace)?;
    let name = object::name_of(&obj).to_string();
    namespace_must_accept(api, res, namespace, &name).await?;
    if dry {
        return Ok(Stored::unwritten(Arc::new(obj)));
    }
    let mut obj = obj;
    let taken =
        if allocation::applies(res) { Some(allocation::allocate(api, res, &mut obj, None).await?) } else { None };
    let key = res.key(namespace, &name);
    let encoded = object::Encoded::new(&obj);
    let kv = match api.store.create(&key, encoded.bytes).await {
        Ok(kv) => kv,
        Err(e) => {
            if let Some(t) = taken {
                t.release(api).await;
            }
            return Err(ApiError::from_store(e, res, &name));
        }
    };
    Ok(written(api, &key, kv, encoded.metadata, obj))
}

/// An object as a write left it: shared with the event cache, and (when it was stored) the stored
/// bytes, from which a JSON answer is made by splicing in the new `resourceVersion` rather than
/// encoding the object again. Only an HTTP answer splices; server-internal writes never do.
pub(super) struct Stored {
    pub obj: Arc<Value>,
    stored: Option<StoredBytes>,
}

/// A write's stored value, with where its `metadata` fields begin ([`object::Encoded`]).
struct StoredBytes {
    value: Vec<u8>,
    metadata: usize,
    revision: i64,
}

impl Stored {
    /// An object that was not written (a dry run, a no-op update).
    fn unwritten(obj: Arc<Value>) -> Stored {
        Stored { obj, stored: None }
    }
}

/// The object just written as `kv`, with its `resourceVersion`, shared with the event cache so
/// that the write's watchers and next readers do not parse the stored bytes again. `metadata`:
/// where the stored bytes' `metadata` fields begin ([`object::Encoded`]).
fn written(api: &Api, key: &str, kv: KeyValue, metadata: Option<usize>, mut obj: Value) -> Stored {
    meta_mut(&mut obj).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    let obj = Arc::new(obj);
    api.events.seed(key, kv.mod_revision, obj.clone());
    let stored = metadata.filter(|&at| at < kv.value.len()).map(|metadata| StoredBytes {
        value: kv.value,
        metadata,
        revision: kv.mod_revision,
    });
    Stored { obj, stored }
}

/// [`object_response`] for a write's result: JSON clients get the stored bytes with the new
/// `resourceVersion` spliced in.
fn stored_response(res: &Resource, status: u16, stored: &Stored, call: &Call) -> ApiResult<Response<Body>> {
    match (&stored.stored, negotiate::output(call.accept.as_deref(), true)?) {
        (Some(s), Output::Json) => {
            Ok(respond(status, "application/json", object::with_resource_version(&s.value, s.metadata, s.revision)))
        }
        _ => object_response(res, status, &stored.obj, call),
    }
}

async fn create(api: &Api, rr: &ResourceRequest, call: &Call) -> ApiResult<Response<Body>> {
    let mut obj = negotiate::decode_body(call.content_type.as_deref(), &call.body)?;
    super::fields::check_unknown(rr.resource, &mut obj, call)?;
    let stored = create_object(api, rr.resource, &rr.namespace, obj, dry_run(call)?).await?;
    stored_response(rr.resource, 201, &stored, call)
}

// ---------------------------------------------------------------- update

/// Which part of the object a write may change.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Main,
    Status,
    /// A namespace's `finalize` subresource: only `spec.finalizers`.
    Finalize,
    /// Everything (server-internal writes such as binding).
    Whole,
}

/// Carries the fields a write to `part` may not change over from `old` to `new`.
fn merge_part(res: &Resource, part: Part, old: &Value, new: Value) -> Value {
    let mut out = match part {
        Part::Whole => new,
        Part::Main => {
            let mut n = new;
            if res.has_subresource("status") {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            n
        }
        Part::Finalize => {
            let mut o = old.clone();
            o["spec"]["finalizers"] = new.pointer("/spec/finalizers").cloned().unwrap_or_else(|| json!([]));
            o
        }
        Part::Status => {
            let mut o = old.clone();
            match new.get("status") {
                Some(s) => o["status"] = s.clone(),
                None => {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            o
        }
    };
    // System-owned metadata never changes through an update.
    let old_meta = old.get("metadata");
    let meta = meta_mut(&mut out);
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        match old_meta.and_then(|m| m.get(f)) {
            Some(v) => {
                meta.insert(f.into(), v.clone());
            }
            None => {
                meta.remove(f);
            }
        }
    }
    out
}

/// The result of an update attempt on the current object.
enum Outcome {
    Write(Value),
    /// Nothing to write; answer with the current object.
    Unchanged,
}

/// Applies `mutate` to the current object and writes the result with compare-and-swap, retrying
/// when another writer got there first. `precondition`: a resourceVersion the caller requires.
pub(super) async fn guaranteed_update<F>(
    api: &Api,
    res: &Resource,
    namespace: &str,
    name: &str,
    part: Part,
    dry: bool,
    mut mutate: F,
) -> ApiResult<Stored>
where
    F: FnMut(&Value) -> ApiResult<(Value, Option<i64>)>,
{
    let key = res.key(namespace, name);
    for _ in 0..UPDATE_RETRIES {
        let (cur, rev) = read(api, res, namespace, name).await?;
        let (new, precondition) = mutate(&cur)?;
        if let Some(p) = precondition
            && p != rev
        {
            return Err(ApiError::conflict(res, name));
        }
        let mut new = match finish_update(res, part, &cur, new)? {
            Outcome::Unchanged => return Ok(Stored::unwritten(cur)),
            Outcome::Write(v) => v,
        };
        if dry {
            return Ok(Stored::unwritten(Arc::new(new)));
        }
        let taken = if allocation::applies(res) {
            Some(allocation::allocate(api, res, &mut new, Some(&cur)).await?)
        } else {
            None
        };
        // An object being deleted whose last finalizer was removed goes away now.
        let gone = new.pointer("/metadata/deletionTimestamp").is_some()
            && object::finalizers(&new).is_empty()
            && !res.strategy.holds_deletion(&new)
            && new.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) == 0;
        let (result, metadata) = if gone {
            (api.store.delete(&key, rev).await, None)
        } else {
            let encoded = object::Encoded::new(&new);
            (api.store.update(&key, encoded.bytes, rev).await, encoded.metadata)
        };
        if result.is_err()
            && let Some(t) = taken
        {
            t.release(api).await;
        } else if result.is_ok() && allocation::applies(res) {
            allocation::release_unused(api, &cur, (!gone).then_some(&new)).await;
        }
        match result {
            Ok(kv) if gone => {
                meta_mut(&mut new).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                return Ok(Stored::unwritten(Arc::new(new)));
            }
            Ok(kv) => return Ok(written(api, &key, kv, metadata, new)),
            // Another writer got there first: the next round re-reads and re-checks any precondition.
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Err(ApiError::not_found(res, name)),
            Err(e) => return Err(ApiError::from_store(e, res, name)),
        }
    }
    Err(ApiError::conflict(res, name))
}

/// Defaulting, generation, validation and the no-op check of an update.
fn finish_update(res: &Resource, part: Part, cur: &Value, new: Value) -> ApiResult<Outcome> {
    let mut new = new;
    object::check_type(res, &mut new)?;
    let mut new = merge_part(res, part, cur, new);
    if part == Part::Main {
        res.strategy.prepare_update(&mut new, cur);
    }
    res.strategy.default(&mut new);
    if part == Part::Main && res.strategy.tracks_generation() && object::spec_differs(&new, cur) {
        let g = cur.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
        meta_mut(&mut new).insert("generation".into(), json!(g));
    }
    // A no-op write does not bump the resourceVersion.
    if object::same_but_resource_version(&new, cur) {
        return Ok(Outcome::Unchanged);
    }
    // Server-internal writes (binding) change what clients may not, by design.
    if part != Part::Whole {
        validate(res, &new, Some(cur))?;
    }
    Ok(Outcome::Write(new))
}

fn body_precondition(obj: &Value) -> ApiResult<Option<i64>> {
    match meta_str(obj, "resourceVersion") {
        None | Some("") => Ok(None),
        Some(rv) => rv
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?} in the object"))),
    }
}

async fn update(
    api: &Api,
    rr: &ResourceRequest,
    name: &str,
    sub: Option<&str>,
    call: &Call,
) -> ApiResult<Response<Body>> {
    let res = rr.resource;
    if sub == Some("scale") {
        let body = negotiate::decode_body(call.content_type.as_deref(), &call.body)?;
        return scale_write(api, rr, name, call, ScaleWrite::Replace(body)).await;
    }
    let part = match sub {
        None => Part::Main,
        Some("finalize") => Part::Finalize,
        Some("status") => Part::Status,
        _ => return Err(ApiError::method_not_allowed()),
    };
    let body = replacement(res, name, call)?;
    let precondition = body_precondition(&body)?;
    let dry = dry_run(call)?;
    // The decoded body goes to the first attempt as it is; a retry after a lost race decodes the
    // request again rather than every attempt copying it.
    let mut first = Some(body);
    let stored = guaranteed_update(api, res, &rr.namespace, name, part, dry, |_cur| {
        let body = match first.take() {
            Some(body) => body,
            None => replacement(res, name, call)?,
        };
        Ok((body, precondition))
    })
    .await?;
    stored_response(res, 200, &stored, call)
}

/// The object a PUT sends, with unknown fields dropped and the name from the URL.
fn replacement(res: &Resource, name: &str, call: &Call) -> ApiResult<Value> {
    let mut body = negotiate::decode_body(call.content_type.as_deref(), &call.body)?;
    super::fields::check_unknown(res, &mut body, call)?;
    let body_name = object::name_of(&body);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    meta_mut(&mut body).insert("name".into(), json!(name));
    Ok(body)
}

// ---------------------------------------------------------------- patch

pub(super) fn apply_patch(res: &Resource, content_type: &str, cur: &Value, patch: &Value) -> ApiResult<Value> {
    let bad = |e: crate::patch::PatchError| match e.status_code() {
        400 => ApiError::bad_request(e.to_string()),
        413 => ApiError::new(413, "RequestEntityTooLarge", e.to_string()),
        _ => ApiError::new(422, "Invalid", e.to_string()),
    };
    match content_type {
        "application/json-patch+json" => crate::patch::json_patch(cur, patch).map_err(bad),
        "application/merge-patch+json" => Ok(crate::patch::merge_patch(cur, patch)),
        "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
            crate::patch::strategic_merge_patch(cur, patch, &crate::typeinfo::PATCH_SCHEMA, &res.proto_message())
                .map_err(bad)
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn decode_patch(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let v: Value = if content_type == "application/apply-patch+yaml" {
        negotiate::decode_yaml(body)?
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
    };
    match content_type {
        "application/json-patch+json" if !v.is_array() => {
            Err(ApiError::bad_request("json patch must be a JSON array of operations"))
        }
        "application/json-patch+json" => Ok(v),
        _ if !v.is_object() => Err(ApiError::bad_request("patch must be a JSON object")),
        _ => Ok(v),
    }
}

async fn patch(
    api: &Api,
    rr: &ResourceRequest,
    name: &str,
    sub: Option<&str>,
    call: &Call,
) -> ApiResult<Response<Body>> {
    let res = rr.resource;
    let ct = negotiate::essence(call.content_type.as_deref()).to_string();
    if !matches!(
        ct.as_str(),
        "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/apply-patch+yaml"
    ) {
        return Err(ApiError::unsupported_media_type(&ct));
    }
    let patch_doc = decode_patch(&ct, &call.body)?;
    if sub == Some("scale") {
        return scale_write(api, rr, name, call, ScaleWrite::Patch(ct, patch_doc)).await;
    }
    let part = match sub {
        None => Part::Main,
        Some("status") => Part::Status,
        _ => return Err(ApiError::method_not_allowed()),
    };
    let dry = dry_run(call)?;
    // Server-side apply on an object that does not exist creates it.
    if ct == "application/apply-patch+yaml" {
        let key = res.key(&rr.namespace, name);
        let exists = api.store.get(&key, 0).await.map_err(|e| ApiError::from_store(e, res, name))?.is_some();
        if !exists {
            let mut obj = patch_doc.clone();
            meta_mut(&mut obj).insert("name".into(), json!(name));
            super::fields::check_unknown(res, &mut obj, call)?;
            let stored = create_object(api, res, &rr.namespace, obj, dry).await?;
            return stored_response(res, 201, &stored, call);
        }
    }
    let precondition = body_precondition(&patch_doc)?;
    let stored = guaranteed_update(api, res, &rr.namespace, name, part, dry, |cur| {
        let mut patched = apply_patch(res, &ct, cur, &patch_doc)?;
        super::fields::check_unknown(res, &mut patched, call)?;
        Ok((patched, precondition))
    })
    .await?;
    stored_response(res, 200, &stored, call)
}

// ---------------------------------------------------------------- delete

#[derive(Default)]
pub(super) struct DeleteOptions {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry: bool,
}

fn delete_options(call: &Call) -> ApiResult<DeleteOptions> {
    let mut o = DeleteOptions { dry: dry_run(call)?, ..Default::default() };
    if !call.body.is_empty() {
        let body = negotiate::decode_body(call.content_type.as_deref(), &call.body)?;
        o.grace = body.get("gracePeriodSeconds").and_then(Value::as_i64);
        o.propagation = body.get("propagationPolicy").and_then(Value::as_str).map(str::to_string);
        o.uid = body.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
        o.resource_version = body.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
        if body.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All")) {
            o.dry = true;
        }
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) && o.propagation.is_none() {
            o.propagation = Some("Orphan".into());
        }
    }
    if let Some(g) = call.query.get("gracePeriodSeconds") {
        o.grace = Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?);
    }
    if let Some(p) = call.query.get("propagationPolicy") {
        o.propagation = Some(p.clone());
    }
    if let Some(p) = &o.propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
            ),
        ));
    }
    Ok(o)
}

/// Deletes one object: immediately, or by marking it (finalizers, graceful pod deletion).
/// Returns the object as it stands afterwards.
pub(super) async fn delete_object(
    api: &Api,
    res: &Resource,
    namespace: &str,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<Value> {
    let key = res.key(namespace, name);
    for _ in 0..UPDATE_RETRIES {
        let (cur, rev) = read(api, res, namespace, name).await?;
        if let Some(uid) = &opts.uid
            && meta_str(&cur, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&cur, "uid").unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && meta_str(&cur, "resourceVersion") != Some(rv.as_str())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&cur, "resourceVersion").unwrap_or("")
                ),
            ));
        }
        if let Some(why) = res.strategy.forbid_delete(&cur) {
            return Err(ApiError::forbidden(format!("{} \"{name}\" is forbidden: {why}", res.qualified())));
        }
        let mut new = (*cur).clone();
        let mut fins = object::finalizers(&cur);
        match opts.propagation.as_deref() {
            Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                fins.push("foregroundDeletion".into())
            }
            Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
            _ => {}
        }
        let grace = res.strategy.graceful_delete_seconds(&cur, opts.grace);
        let already = cur.pointer("/metadata/deletionTimestamp").is_some();
        let delete_now = fins.is_empty() && grace == 0 && !res.strategy.holds_deletion(&cur);
        if delete_now {
            if opts.dry {
                return Ok(Arc::unwrap_or_clone(cur));
            }
            match api.store.delete(&key, rev).await {
                Ok(_) => {
                    if allocation::applies(res) {
                        allocation::release_unused(api, &cur, None).await;
                    }
                    return Ok(Arc::unwrap_or_clone(cur));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => return Err(ApiError::not_found(res, name)),
                Err(e) => return Err(ApiError::from_store(e, res, name)),
            }
        }
        // Mark for deletion: finalizers pending or a grace period running.
        let meta = meta_mut(&mut new);
        if !already {
            meta.insert("deletionTimestamp".into(), json!(object::rfc3339_in(grace)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        } else if let Some(cur_grace) = meta.get("deletionGracePeriodSeconds").and_then(Value::as_i64)
            && grace < cur_grace
        {
            meta.insert("deletionTimestamp".into(), json!(object::rfc3339_in(grace)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        if !fins.is_empty() {
            meta.insert("finalizers".into(), json!(fins));
        }
        res.strategy.prepare_delete(&mut new);
        if new == *cur {
            return Ok(Arc::unwrap_or_clone(cur));
        }
        if opts.dry {
            return Ok(new);
        }
        match api.store.update(&key, object::encode(&new), rev).await {
            Ok(kv) => {
                meta_mut(&mut new).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                return Ok(new);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, res, name)),
        }
    }
    Err(ApiError::conflict(res, name))
}

async fn delete(api: &Api, rr: &ResourceRequest, name: &str, call: &Call) -> ApiResult<Response<Body>> {
    let opts = delete_options(call)?;
    let obj = delete_object(api, rr.resource, &rr.namespace, name, &opts).await?;
    object_response(rr.resource, 200, &obj, call)
}

async fn delete_collection(api: &Api, rr: &ResourceRequest, call: &Call) -> ApiResult<Response<Body>> {
    let res = rr.resource;
    let filter = Filter::from_query(call)?;
    filter.validate(res)?;
    let opts = delete_options(call)?;
    let list_call = Call {
        method: Method::GET,
        query: Default::default(),
        accept: None,
        content_type: None,
        body: Default::default(),
    };
    let (items, rev, _) = list_items(api, rr, &list_call, &filter).await?;
    let mut deleted = Vec::new();
    for item in items {
        let ns = meta_str(&item, "namespace").unwrap_or("").to_string();
        let name = object::name_of(&item).to_string();
        match delete_object(api, res, &ns, &name, &opts).await {
            Ok(o) => deleted.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        200,
        &json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": {"resourceVersion": rev.to_string()}, "items": deleted}),
    ))
}

// ---------------------------------------------------------------- subresources

fn scale_of(res: &Resource, obj: &Value) -> ApiResult<Value> {
    let paths = res.strategy.scale().ok_or_else(ApiError::not_found_path)?;
    let selector = obj.pointer(paths.selector).map(|s| crate::registry::selector_string(Some(s))).unwrap_or_default();
    let selector = if selector == "<none>" { String::new() } else { selector };
    let mut meta = json!({
        "name": meta_str(obj, "name"),
        "namespace": meta_str(obj, "namespace"),
        "uid": meta_str(obj, "uid"),
        "resourceVersion": meta_str(obj, "resourceVersion"),
        "creationTimestamp": meta_str(obj, "creationTimestamp"),
    });
    if !res.namespaced {
        meta.as_object_mut().expect("object").remove("namespace");
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": obj.pointer(paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": obj.pointer(paths.status_replicas).and_then(Value::as_i64).unwrap_or(0), "selector": selector},
    }))
}

async fn get_scale(api: &Api, rr: &ResourceRequest, name: &str) -> ApiResult<Response<Body>> {
    let (obj, _) = read(api, rr.resource, &rr.namespace, name).await?;
    Ok(json_response(200, &scale_of(rr.resource, &obj)?))
}

enum ScaleWrite {
    Replace(Value),
    Patch(String, Value),
}

async fn scale_write(
    api: &Api,
    rr: &ResourceRequest,
    name: &str,
    call: &Call,
    w: ScaleWrite,
) -> ApiResult<Response<Body>> {
    let res = rr.resource;
    let paths = res.strategy.scale().ok_or_else(ApiError::not_found_path)?;
    let dry = dry_run(call)?;
    let obj = guaranteed_update(api, res, &rr.namespace, name, Part::Main, dry, |cur| {
        let scale = scale_of(res, cur)?;
        let (new_scale, precondition) = match &w {
            ScaleWrite::Replace(b) => (b.clone(), body_precondition(b)?),
            ScaleWrite::Patch(ct, p) => {
                let patched = match ct.as_str() {
                    "application/json-patch+json" => {
                        crate::patch::json_patch(&scale, p).map_err(|e| ApiError::bad_request(e.to_string()))?
                    }
                    _ => crate::patch::merge_patch(&scale, p),
                };
                (patched, None)
            }
        };
        let replicas = new_scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
        if replicas < 0 {
            let mut errs = FieldErrors::default();
            errs.invalid("spec.replicas", json!(replicas), "must be greater than or equal to 0");
            return Err(ApiError::invalid(res, name, &errs));
        }
        let mut new = cur.clone();
        if let Some(slot) = new.pointer_mut(paths.spec_replicas) {
            *slot = json!(replicas);
        } else {
            new["spec"]["replicas"] = json!(replicas);
        }
        Ok((new, precondition))
    })
    .await?;
    Ok(json_response(200, &scale_of(res, &obj.obj)?))
}

pub(super) async fn bind(api: &Api, rr: &ResourceRequest, name: &str, call: &Call) -> ApiResult<Response<Body>> {
    let binding = negotiate::decode_body(call.content_type.as_deref(), &call.body)?;
    let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or("").to_string();
    if node.is_empty() {
        let mut errs = FieldErrors::default();
        errs.required("target.name", "");
        return Err(ApiError::invalid(rr.resource, name, &errs));
    }
    bind_pod(api, rr.resource, &rr.namespace, name, &node, dry_run(call)?).await?;
    Ok(json_response(201, &success_status(201)))
}

/// Assigns a pod to a node: `spec.nodeName` and the PodScheduled condition, in one write.
pub(super) async fn bind_pod(
    api: &Api,
    res: &Resource,
    namespace: &str,
    name: &str,
    node: &str,
    dry: bool,
) -> ApiResult<Value> {
    let pod = guaranteed_update(api, res, namespace, name, Part::Whole, dry, |cur| {
        if let Some(existing) = cur.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{existing}\""),
            ));
        }
        if cur.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let mut new = cur.clone();
        new["spec"]["nodeName"] = json!(node);
        let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": object::now_rfc3339()});
        let conds = new["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conds: Vec<Value> =
            conds.into_iter().filter(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled")).collect();
        conds.push(cond);
        new["status"]["conditions"] = json!(conds);
        Ok((new, None))
    })
    .await?;
    Ok(Arc::unwrap_or_clone(pod.obj))
}

async fn evict(api: &Api, rr: &ResourceRequest, name: &str) -> ApiResult<Response<Body>> {
    let opts = DeleteOptions::default();
    delete_object(api, rr.resource, &rr.namespace, name, &opts).await?;
    Ok(json_response(201, &success_status(201)))
}

/// Creates an object on behalf of the server itself (initial namespaces and the like).
pub async fn create_system_object(api: &Api, res: &Resource, namespace: &str, obj: Value) -> ApiResult<Value> {
    create_object(api, res, namespace, obj, false).await.map(|stored| Arc::unwrap_or_clone(stored.obj))
}

/// Sets a namespace's `spec.finalizers` on behalf of the server itself (the `finalize` subresource).
pub async fn finalize_namespace<F>(api: &Api, res: &Resource, name: &str, mutate: F) -> ApiResult<Value>
where
    F: FnMut(&Value) -> ApiResult<(Value, Option<i64>)>,
{
    guaranteed_update(api, res, "", name, Part::Finalize, false, mutate)
        .await
        .map(|stored| Arc::unwrap_or_clone(stored.obj))
}
