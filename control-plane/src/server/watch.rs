//! Watch: a chunked stream of `{"type": …, "object": …}` events, starting from a resource
//! version (or with the current objects as ADDED events), filtered by label and field selectors,
//! with bookmarks and a timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use http::{Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::errors::{ApiError, ApiResult};
use super::event_cache::{Decoded, EventType, Wire};
use super::negotiate::{self, Output};
use super::object;
use super::rest::{Filter, list_items};
use super::{Api, Body, Call, ResourceRequest, table};
use crate::registry::Resource;
use crate::storage::{Event, EventKind, KeyValue, StoreError};

/// How often a bookmark is sent when the client allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(20);
/// Queued events sent together stop being gathered at this size.
const CHUNK_BYTES: usize = 64 << 10;
/// Longest watch when the client gives no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Encoder {
    res: &'static Resource,
    output: Output,
    query: super::Query,
    first: bool,
}

impl Encoder {
    /// The watch line of one stored value as an event of type `kind`. JSON and protobuf lines
    /// are shared with every other watcher of the same event; Tables and metadata-only objects
    /// depend on this watcher's request and are made here.
    fn event(&mut self, kind: EventType, entry: &Decoded, kv: &KeyValue) -> Option<Bytes> {
        let wire = match self.output {
            Output::Table | Output::PartialMetadata => None,
            Output::Protobuf => Some(Wire::Protobuf),
            Output::Json | Output::Yaml => Some(Wire::Json),
        };
        match wire {
            // A JSON line is written from the stored bytes: no tree is decoded (or encoded) for
            // a watcher without selectors.
            Some(Wire::Json) => entry.line(Wire::Json, kind, || stored_json_line(kind.as_str(), kv)),
            Some(wire) => entry.line(wire, kind, || Some(self.frame(kind.as_str(), entry.object(kv)?))),
            None => {
                let obj = entry.object(kv)?;
                let object = if self.output == Output::Table {
                    let t = table::table(
                        self.res,
                        std::slice::from_ref(&**obj),
                        json!({"resourceVersion": object::meta_str(obj, "resourceVersion")}),
                        &self.query,
                        self.first,
                    );
                    self.first = false;
                    t
                } else {
                    table::partial_object(obj)
                };
                Some(self.frame(kind.as_str(), &object))
            }
        }
    }

    /// An initial ADDED event for an object read by the list.
    fn added(&mut self, obj: &Value) -> Bytes {
        let object = match self.output {
            Output::Table => {
                let t = table::table(
                    self.res,
                    std::slice::from_ref(obj),
                    json!({"resourceVersion": object::meta_str(obj, "resourceVersion")}),
                    &self.query,
                    self.first,
                );
                self.first = false;
                t
            }
            Output::PartialMetadata => table::partial_object(obj),
            _ => return self.frame("ADDED", obj),
        };
        self.frame("ADDED", &object)
    }

    /// One event on the wire: a JSON line, or a length-prefixed protobuf WatchEvent.
    fn frame(&self, kind: &str, object: &Value) -> Bytes {
        if self.output == Output::Protobuf
            && let Ok(f) = crate::protobuf::encode_watch_event(kind, object)
        {
            return Bytes::from(f);
        }
        json_line(kind, object)
    }

    fn bookmark(&mut self, rv: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (kind, av) = match self.output {
            Output::Table => ("Table".to_string(), "meta.k8s.io/v1".to_string()),
            _ => (self.res.kind.to_string(), self.res.api_version()),
        };
        self.frame("BOOKMARK", &json!({"kind": kind, "apiVersion": av, "metadata": meta}))
    }
}

fn error_event(e: &ApiError) -> Bytes {
    json_line("ERROR", &e.status())
}

/// One JSON watch event and its newline, serialized straight from `object` (building a
/// `{"type", "object"}` value first would copy the whole object).
fn json_line(kind: &str, object: &Value) -> Bytes {
    #[derive(serde::Serialize)]
    struct Event<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        object: &'a Value,
    }
    let mut line = Vec::with_capacity(1024);
    serde_json::to_writer(&mut line, &Event { kind, object }).expect("json serializes");
    line.push(b'\n');
    Bytes::from(line)
}

/// [`json_line`] for a stored object, written from its bytes ([`object::write_stored_object`]);
/// `None` when they do not parse (the event is skipped, as when decoding fails).
fn stored_json_line(kind: &str, kv: &KeyValue) -> Option<Bytes> {
    let mut line = Vec::with_capacity(kv.value.len() + 64);
    line.extend_from_slice(b"{\"type\":");
    serde_json::to_writer(&mut line, kind).expect("json serializes");
    line.extend_from_slice(b",\"object\":");
    object::write_stored_object(kv, &mut line).ok()?;
    line.extend_from_slice(b"}\n");
    Some(Bytes::from(line))
}

pub async fn serve(api: &Arc<Api>, rr: &ResourceRequest, call: &Call) -> ApiResult<Response<Body>> {
    let res = rr.resource;
    let filter = Filter::from_query(call)?;
    filter.validate(res)?;
    let output = negotiate::output(call.accept.as_deref(), true)?;
    let q = |k: &str| call.query.get(k).map(String::as_str).unwrap_or("");
    let bookmarks = q("allowWatchBookmarks") == "true";
    let rv = q("resourceVersion").to_string();
    let send_initial = match q("sendInitialEvents") {
        "true" => true,
        "false" => false,
        _ => rv.is_empty() || rv == "0",
    };
    let timeout = match q("timeoutSeconds") {
        "" => DEFAULT_TIMEOUT,
        t => Duration::from_secs(
            t.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
    };
    api.metrics.watches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    // Initial state, read at one revision; the watch continues right after it.
    let mut initial = Vec::new();
    let start_rev = if send_initial {
        let list_call = Call {
            method: http::Method::GET,
            query: Default::default(),
            accept: None,
            content_type: None,
            body: Bytes::new(),
        };
        let (items, rev, _) = list_items(api, rr, &list_call, &filter).await?;
        initial = items;
        rev
    } else if rv.is_empty() || rv == "0" {
        api.store.current_revision().await.map_err(|e| ApiError::from_store(e, res, ""))?
    } else {
        rv.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?
    };
    let prefix = res.prefix(&rr.namespace);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut enc = Encoder { res, output, query: call.query.clone(), first: true };
    let watch = api.store.watch(&prefix, start_rev).await;
    let shared = api.clone();
    tokio::spawn(async move {
        let mut events = match watch {
            Ok(w) => w,
            Err(e) => {
                let _ = tx.send(error_event(&ApiError::from_store(e, res, ""))).await;
                return;
            }
        };
        for obj in &initial {
            if tx.send(enc.added(obj)).await.is_err() {
                return;
            }
        }
        let mut last_rev = start_rev;
        if send_initial && bookmarks && tx.send(enc.bookmark(last_rev, true)).await.is_err() {
            return;
        }
        let deadline = Instant::now() + timeout;
        let mut ticker = tokio::time::interval_at(Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return };
                    // Under load events queue up: everything already waiting goes out as one
                    // chunk, one HTTP/2 frame and TLS record instead of one per event.
                    let mut chunk = BytesMut::new();
                    let mut failed = None;
                    let mut next = Some(ev);
                    while let Some(ev) = next.take() {
                        match ev {
                            Ok(ev) => {
                                last_rev = ev.kv.mod_revision;
                                if let Some(line) = translate(&mut enc, &filter, &shared, &ev) {
                                    chunk.extend_from_slice(&line);
                                }
                            }
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                        if chunk.len() < CHUNK_BYTES {
                            next = events.try_recv().ok();
                        }
                    }
                    if !chunk.is_empty() && tx.send(chunk.freeze()).await.is_err() {
                        return;
                    }
                    if let Some(e) = failed {
                        let e = match e {
                            StoreError::Compacted { .. } => ApiError::gone(format!("too old resource version: {last_rev}")),
                            e => ApiError::from_store(e, res, ""),
                        };
                        let _ = tx.send(error_event(&e)).await;
                        return;
                    }
                }
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(enc.bookmark(last_rev, false)).await.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return,
                () = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream_from(rx).map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    let body = BodyExt::boxed(StreamBody::new(stream));
    let ct = if output == Output::Protobuf {
        "application/vnd.kubernetes.protobuf;stream=watch"
    } else {
        "application/json"
    };
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, ct)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("valid response"))
}

/// Turns a store event into a watch event for this watcher, or nothing when neither the old nor
/// the new object is selected. Objects are decoded through the shared event cache, and not at
/// all to decide the event type when the watch has no selector.
fn translate(enc: &mut Encoder, filter: &Filter, api: &Api, ev: &Event) -> Option<Bytes> {
    let res = enc.res;
    let entry = api.events.get(&ev.kv);
    let selected = |entry: &Decoded, kv: &KeyValue| -> Option<bool> {
        if filter.is_empty() {
            return Some(true);
        }
        Some(filter.matches(res, entry.object(kv)?).unwrap_or(false))
    };
    match ev.kind {
        EventKind::Put => {
            let new_m = selected(&entry, &ev.kv)?;
            // Without a selector the old value was selected too: no cache entry for it (that
            // would evict a recent event's) and nothing decoded.
            let old_m = match &ev.prev {
                Some(_) if filter.is_empty() => true,
                Some(p) => selected(&api.events.get(p), p).unwrap_or(false),
                None => false,
            };
            let kind = match (ev.prev.is_some(), old_m, new_m) {
                (false, _, true) | (true, false, true) => EventType::Added,
                (true, true, true) => EventType::Modified,
                (true, true, false) => EventType::Deleted,
                _ => return None,
            };
            enc.event(kind, &entry, &ev.kv)
        }
        EventKind::Delete => {
            if !selected(&entry, &ev.kv)? {
                return None;
            }
            enc.event(EventType::Deleted, &entry, &ev.kv)
        }
    }
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_json_line_is_the_decoded_objects_line() {
        let value = object::encode(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {}}));
        let kv = KeyValue { key: "/registry/pods/d/a".into(), value, create_revision: 3, mod_revision: 9 };
        let line = stored_json_line("MODIFIED", &kv).expect("a line");
        assert_eq!(line.last(), Some(&b'\n'));
        let from_tree = json_line("MODIFIED", &object::decode(&kv).expect("decodes"));
        let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).expect("one JSON event");
        assert_eq!(parse(&line), parse(&from_tree));
        assert_eq!(parse(&line).pointer("/object/metadata/resourceVersion"), Some(&json!("9")));
        let corrupt = KeyValue { key: "/x".into(), value: b"{\"a\"".to_vec(), create_revision: 1, mod_revision: 1 };
        assert!(stored_json_line("ADDED", &corrupt).is_none(), "an unreadable value is skipped");
    }
}
