//! The plugin's side of the node-agent endpoint protocol (used when the configuration names `agentSocket`).
//!
//! One request per connection on the agent's Unix stream socket: the plugin writes one JSON object and a
//! newline, the agent answers with one JSON object and a newline, `{"ok":true}` or
//! `{"ok":false,"error":"…"}`. Requests (tagged by `op`):
//!
//! - `add`: a pod endpoint was wired; the agent must accept it before ADD succeeds. A refusal, no listener,
//!   or no answer within `agentTimeoutMs` fails the ADD, which then removes everything it created.
//! - `del`: the endpoint is gone (DEL, or GC of a stale allocation). Best effort: failures are ignored.
//! - `check`: CHECK asks whether the agent still knows the endpoint.
//! - `ping`: STATUS asks whether the agent is up.
//!
//! The node-agent may use these types directly (`cni_plugin::agent::{AgentRequest, AgentReply}`).

use std::io::{self, BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One pod endpoint as the plugin wired it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The CNI network name.
    pub network: String,
    pub container_id: String,
    /// `CNI_IFNAME`, the interface inside the pod.
    pub ifname: String,
    /// `CNI_NETNS`; absent on DEL when the runtime no longer has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Host side of the veth pair (`kl…`), where the agent attaches its TC programs.
    pub host_veth: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// MAC address of the pod interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// From `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID`) when the runtime passes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

/// A request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum AgentRequest {
    Add(Endpoint),
    Del(Endpoint),
    Check(Endpoint),
    Ping,
}

/// A reply line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("connect to node-agent at {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talk to node-agent at {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("node-agent at {} did not answer within {timeout:?}", path.display())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("node-agent at {} sent an unreadable reply {reply:?}", path.display())]
    BadReply { path: PathBuf, reply: String },
    #[error("node-agent at {} refused: {reason}", path.display())]
    Refused { path: PathBuf, reason: String },
}

impl From<AgentError> for crate::error::CniError {
    fn from(error: AgentError) -> Self {
        crate::error::CniError::new(
            crate::error::ErrorCode::AgentUnavailable,
            "node-agent unavailable",
            crate::error::chain(&error),
        )
    }
}

/// Sends `request` and waits at most `timeout` for an `ok` reply.
///
/// The exchange runs on its own thread so that even a connect blocked on a full listen backlog cannot hold
/// the plugin past `timeout` (the thread is abandoned; the process exits soon after).
pub fn send(socket: &Path, request: &AgentRequest, timeout: Duration) -> Result<(), AgentError> {
    let (done, outcome) = mpsc::channel();
    let path = socket.to_path_buf();
    let mut line = serde_json::to_string(request).expect("agent requests always serialize");
    line.push('\n');
    std::thread::spawn(move || {
        let _ = done.send(exchange(&path, &line, timeout));
    });
    match outcome.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(AgentError::Timeout { path: socket.to_path_buf(), timeout }),
    }
}

fn exchange(path: &Path, line: &str, timeout: Duration) -> Result<(), AgentError> {
    let io_error = |source| AgentError::Io { path: path.to_path_buf(), source };
    let mut stream =
        UnixStream::connect(path).map_err(|source| AgentError::Connect { path: path.to_path_buf(), source })?;
    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
    stream.write_all(line.as_bytes()).map_err(io_error)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(|source| match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            AgentError::Timeout { path: path.to_path_buf(), timeout }
        }
        _ => AgentError::Io { path: path.to_path_buf(), source },
    })?;
    let parsed: AgentReply = serde_json::from_str(reply.trim())
        .map_err(|_| AgentError::BadReply { path: path.to_path_buf(), reply: reply.trim().to_owned() })?;
    if parsed.ok {
        Ok(())
    } else {
        Err(AgentError::Refused {
            path: path.to_path_buf(),
            reason: parsed.error.unwrap_or_else(|| "no reason given".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint {
            network: "keelson".into(),
            container_id: "abc".into(),
            ifname: "eth0".into(),
            netns: Some("/run/netns/x".into()),
            host_veth: "kl0123456789abc".into(),
            ip: Some(Ipv4Addr::new(10, 244, 1, 2)),
            mac: Some("02:00:00:00:00:01".into()),
            pod_namespace: Some("default".into()),
            pod_name: Some("web".into()),
            pod_uid: None,
        }
    }

    #[test]
    fn request_wire_format() {
        let text = serde_json::to_string(&AgentRequest::Add(endpoint())).expect("serializes");
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(value["op"], "add");
        assert_eq!(value["containerId"], "abc");
        assert_eq!(value["hostVeth"], "kl0123456789abc");
        assert_eq!(value["ip"], "10.244.1.2");
        assert_eq!(value["podName"], "web");
        assert!(value.get("podUid").is_none());
        assert_eq!(serde_json::to_string(&AgentRequest::Ping).expect("serializes"), r#"{"op":"ping"}"#);
    }

    fn serve_once(reply: &'static str) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).expect("bind test socket");
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).expect("read request");
            if !reply.is_empty() {
                (&stream).write_all(reply.as_bytes()).expect("write reply");
            } else {
                std::thread::sleep(Duration::from_millis(500));
            }
            line
        });
        (dir, path, handle)
    }

    #[test]
    fn ok_reply_is_success_and_request_arrives_whole() {
        let (_dir, path, handle) = serve_once("{\"ok\":true}\n");
        send(&path, &AgentRequest::Add(endpoint()), Duration::from_secs(2)).expect("agent accepts");
        let line = handle.join().expect("server thread");
        let request: AgentRequest = serde_json::from_str(line.trim()).expect("request parses");
        assert_eq!(request, AgentRequest::Add(endpoint()));
    }

    #[test]
    fn refusal_silence_and_absence_are_errors() {
        let (_dir, path, handle) = serve_once("{\"ok\":false,\"error\":\"no such pod\"}\n");
        let error = send(&path, &AgentRequest::Ping, Duration::from_secs(2)).expect_err("refused");
        assert!(matches!(error, AgentError::Refused { ref reason, .. } if reason == "no such pod"), "{error}");
        handle.join().expect("server thread");

        let (_dir, path, handle) = serve_once("");
        let error = send(&path, &AgentRequest::Ping, Duration::from_millis(100)).expect_err("silent agent");
        assert!(matches!(error, AgentError::Timeout { .. }), "{error}");
        handle.join().expect("server thread");

        let dir = tempfile::tempdir().expect("temp dir");
        let error = send(&dir.path().join("none.sock"), &AgentRequest::Ping, Duration::from_secs(1))
            .expect_err("nobody listens");
        assert!(matches!(error, AgentError::Connect { .. }), "{error}");
    }
}
