//! Events about objects (`Scheduled`, `FailedScheduling`, `ScalingReplicaSet`…), as
//! core/v1 Events with Kubernetes' aggregation: a repeat of the same reason and message for the
//! same object bumps `count` and `lastTimestamp` instead of creating another Event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tracing::debug;

use crate::registry;
use crate::server::internal::{Client, PatchType};

/// (object uid, type, reason, message) of an event.
type EventKey = (String, String, String, String);
/// Where that event is stored, and its count.
type EventRef = (String, String, i64);

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
    /// (object uid, type, reason, message) → (event namespace, event name, count).
    seen: Arc<Mutex<HashMap<EventKey, EventRef>>>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Recorder {
    pub fn new(client: Client, component: &'static str) -> Recorder {
        Recorder { client, component, seen: Arc::default() }
    }

    /// Records an event about `obj` (`kind`/`apiVersion` from the object). Failures are logged
    /// and otherwise ignored: events are best effort.
    pub async fn record(
        &self,
        obj: &Value,
        kind: &str,
        api_version: &str,
        event_type: &str,
        reason: &str,
        message: &str,
    ) {
        let res = registry::find("", "v1", "events").expect("events are served");
        let meta = |f: &str| obj.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or("").to_string();
        let (ns, name, uid) = (meta("namespace"), meta("name"), meta("uid"));
        let ev_ns = if ns.is_empty() { "default".to_string() } else { ns.clone() };
        let key = (uid.clone(), event_type.to_string(), reason.to_string(), message.to_string());
        let existing = self.seen.lock().expect("events lock").get(&key).cloned();
        if let Some((ev_ns, ev_name, count)) = existing {
            let patch = json!({"count": count + 1, "lastTimestamp": now()});
            if self.client.patch(res, &ev_ns, &ev_name, PatchType::Merge, &patch, false).await.is_ok() {
                self.seen.lock().expect("events lock").insert(key, (ev_ns, ev_name, count + 1));
                return;
            }
        }
        let ev_name = format!("{name}.{:016x}", rand::random::<u64>());
        let ts = now();
        let event = json!({
            "metadata": {"name": ev_name, "namespace": ev_ns},
            "involvedObject": {"kind": kind, "namespace": ns, "name": name, "uid": uid, "apiVersion": api_version, "resourceVersion": meta("resourceVersion")},
            "reason": reason,
            "message": message,
            "type": event_type,
            "source": {"component": self.component},
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": "",
        });
        match self.client.create(res, &ev_ns, event).await {
            Ok(_) => {
                let mut seen = self.seen.lock().expect("events lock");
                if seen.len() > 4096 {
                    seen.clear();
                }
                seen.insert(key, (ev_ns, ev_name, 1));
            }
            Err(error) => debug!(%error, reason, "event not recorded"),
        }
    }
}
