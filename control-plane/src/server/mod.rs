//! The HTTPS API server: TLS, authentication, routing, and the response plumbing shared by the
//! handlers in `rest`, `watch` and `discovery`.

mod allocation;
mod discovery;
pub mod errors;
pub mod event_cache;
mod fields;
pub mod internal;
pub mod namespaces;
pub mod negotiate;
mod object;
pub mod pki;
mod rest;
mod table;
mod watch;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::registry::{self, Resource};
use crate::storage::AnyStore;
use errors::{ApiError, ApiResult};

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Kubernetes version the API reports (kubectl checks the skew).
pub const KUBE_VERSION: &str = "v1.35.2";

/// Shared state of every request.
pub struct Api {
    pub store: AnyStore,
    pub admin_token: String,
    pub metrics: Metrics,
    /// Address clients reach the server at (for discovery's serverAddressByClientCIDRs).
    pub advertise: SocketAddr,
    /// The `Arc` this state lives in, for background work started by a request.
    pub me: std::sync::OnceLock<std::sync::Weak<Api>>,
    /// Recent store events, decoded once for all watchers and informers.
    pub events: event_cache::EventCache,
}

impl Api {
    pub fn new(store: AnyStore, admin_token: String, advertise: SocketAddr) -> Arc<Api> {
        let api = Arc::new(Api {
            store,
            admin_token,
            metrics: Metrics::default(),
            advertise,
            me: Default::default(),
            events: Default::default(),
        });
        let _ = api.me.set(Arc::downgrade(&api));
        api
    }
}

#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub watches: AtomicU64,
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed()
}

pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(full(body))
        .expect("valid response")
}

pub fn json_response(status: u16, v: &Value) -> Response<Body> {
    respond(status, "application/json", serde_json::to_vec(v).expect("json serializes"))
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.status())
}

/// A request for a resource: `/api/v1/namespaces/ns/pods/name/status` and the like.
#[derive(Clone, Debug)]
pub struct ResourceRequest {
    pub resource: &'static Resource,
    pub namespace: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses the part of a path after `/api/v1/` or `/apis/<g>/<v>/`.
fn parse_resource_path(group: &str, version: &str, rest: &[&str]) -> ApiResult<ResourceRequest> {
    let lookup = |plural: &str| registry::find(group, version, plural).ok_or_else(ApiError::not_found_path);
    let (namespace, rest): (String, &[&str]) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() && lookup(tail[0]).is_ok_and(|r| r.namespaced) => {
            (ns.to_string(), tail)
        }
        _ => (String::new(), rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::not_found_path()),
    };
    let resource = lookup(plural)?;
    if let Some(s) = &sub
        && !resource.has_subresource(s)
    {
        return Err(ApiError::not_found_path());
    }
    Ok(ResourceRequest { resource, namespace, name, subresource: sub })
}

/// Query parameters, decoded.
pub type Query = HashMap<String, String>;

fn parse_query(q: Option<&str>) -> Query {
    q.map(|q| {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode_component(k), decode_component(v))
            })
            .collect()
    })
    .unwrap_or_default()
}

fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn authenticated<B>(api: &Api, req: &Request<B>) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), api.admin_token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bytes of an oversized body read and thrown away before answering 413, so that an HTTP/1 client
/// still sending it reads the answer instead of a reset connection (Go's server drains too).
const DRAIN_LIMIT: usize = 4 * negotiate::MAX_BODY;

/// Reads the whole body, at most [`negotiate::MAX_BODY`] bytes; a larger one is a 413, read to
/// its end first when it is not much larger.
async fn read_body(body: Incoming) -> ApiResult<Bytes> {
    let mut body = body;
    let mut kept = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len();
        if seen <= negotiate::MAX_BODY {
            kept.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > negotiate::MAX_BODY { Err(ApiError::too_large()) } else { Ok(kept.freeze()) }
}

/// Everything a handler needs about one request.
pub struct Call {
    pub method: Method,
    pub query: Query,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Serves one HTTP request.
pub async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    api.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let version = req.version();
    let mut resp = match route(&api, req).await {
        Ok(r) => r,
        Err(e) => {
            api.metrics.errors.fetch_add(1, Ordering::Relaxed);
            error_response(&e)
        }
    };
    // A body refused for its size was not read to the end, so this HTTP/1 connection cannot carry
    // another request: say so, or the client may reuse it and fail.
    if resp.status() == http::StatusCode::PAYLOAD_TOO_LARGE && version < http::Version::HTTP_2 {
        resp.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    debug!(%method, %path, status = resp.status().as_u16(), "request");
    Ok(resp)
}

async fn route(api: &Arc<Api>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let path = if path.is_empty() { "/".to_string() } else { path };
    // Health and version are open to anonymous clients, as kube-apiserver's default RBAC allows.
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => return Ok(respond(200, "text/plain; charset=utf-8", "ok")),
        "/version" => return Ok(json_response(200, &discovery::version())),
        _ => {}
    }
    if path.starts_with("/healthz/") || path.starts_with("/livez/") || path.starts_with("/readyz/") {
        return Ok(respond(200, "text/plain; charset=utf-8", "ok"));
    }
    if !authenticated(api, &req) {
        return Err(ApiError::unauthorized());
    }
    let (parts, body) = req.into_parts();
    let header_str = |h: header::HeaderName| parts.headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
    let accept = header_str(header::ACCEPT);
    let content_type = header_str(header::CONTENT_TYPE);
    let query = parse_query(parts.uri.query());
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = parts.method.clone();

    match segments.as_slice() {
        [] => return Ok(json_response(200, &discovery::root_paths())),
        ["metrics"] => return Ok(respond(200, "text/plain; version=0.0.4", metrics_text(api))),
        ["openapi", "v2"] => return Ok(respond(200, "application/json", crate::openapi::v2())),
        ["openapi", "v3"] => return Ok(respond(200, "application/json", crate::openapi::v3_index())),
        ["openapi", "v3", rest @ ..] => {
            let doc = crate::openapi::v3_group_version(&rest.join("/")).ok_or_else(ApiError::not_found_path)?;
            return Ok(respond(200, "application/json", doc));
        }
        ["api"] => return discovery::api(api, accept.as_deref()),
        ["apis"] => return discovery::apis(accept.as_deref()),
        ["api", "v1"] => return discovery::resource_list("", "v1"),
        ["apis", group] => return discovery::group(group),
        ["apis", group, version] => return discovery::resource_list(group, version),
        _ => {}
    }
    let rr = match segments.as_slice() {
        ["api", "v1", rest @ ..] => parse_resource_path("", "v1", rest)?,
        ["apis", group, version, rest @ ..] => parse_resource_path(group, version, rest)?,
        _ => return Err(ApiError::not_found_path()),
    };
    let body = if matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        read_body(body).await?
    } else {
        Bytes::new()
    };
    let call = Call { method, query, accept, content_type, body };
    rest::serve(api, rr, call).await
}

fn metrics_text(api: &Api) -> String {
    let m = &api.metrics;
    format!(
        "# HELP apiserver_request_total Requests served.\n# TYPE apiserver_request_total counter\napiserver_request_total {}\n# HELP apiserver_request_errors_total Requests answered with an error status.\n# TYPE apiserver_request_errors_total counter\napiserver_request_errors_total {}\n# HELP apiserver_watches_total Watches started.\n# TYPE apiserver_watches_total counter\napiserver_watches_total {}\n",
        m.requests.load(Ordering::Relaxed),
        m.errors.load(Ordering::Relaxed),
        m.watches.load(Ordering::Relaxed)
    )
}

/// TLS configuration for the serving certificate.
pub fn tls_config(pki: &pki::Pki) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context as _;
    let certs = rustls_pemfile::certs(&mut pki.server_cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key =
        rustls_pemfile::private_key(&mut pki.server_key_pem.as_bytes())?.context("no private key in apiserver.key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts TLS connections on `listener` until `cancel` fires.
pub async fn serve(
    api: Arc<Api>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => { warn!(%error, "accept"); continue; }
            },
            () = cancel.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(t) => t,
                Err(error) => {
                    debug!(%error, %peer, "tls handshake");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| handle(api.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc);
            if let Err(error) = watcher.watch(conn.into_owned()).await {
                debug!(%error, %peer, "connection");
            }
        });
    }
    // Watches never end by themselves: give in-flight requests a moment, then stop.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resource_paths() {
        let r = parse_resource_path("", "v1", &["namespaces", "default", "pods", "web", "status"]).expect("pod status");
        assert_eq!(
            (r.resource.plural, r.namespace.as_str(), r.name.as_deref(), r.subresource.as_deref()),
            ("pods", "default", Some("web"), Some("status"))
        );
        let r = parse_resource_path("", "v1", &["namespaces", "default"]).expect("namespace");
        assert_eq!((r.resource.plural, r.name.as_deref()), ("namespaces", Some("default")));
        let r = parse_resource_path("", "v1", &["namespaces"]).expect("namespace list");
        assert_eq!(r.resource.plural, "namespaces");
        let r = parse_resource_path("", "v1", &["pods"]).expect("all pods");
        assert_eq!(r.namespace, "");
        let r = parse_resource_path("apps", "v1", &["namespaces", "x", "deployments", "d", "scale"]).expect("scale");
        assert_eq!(r.subresource.as_deref(), Some("scale"));
        assert_eq!(parse_resource_path("", "v1", &["nothings"]).expect_err("unknown").code, 404);
        assert_eq!(
            parse_resource_path("", "v1", &["namespaces", "d", "pods", "p", "nope"]).expect_err("bad sub").code,
            404
        );
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&limit=5&watch"));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["limit"], "5");
        assert_eq!(q["watch"], "");
    }
}
