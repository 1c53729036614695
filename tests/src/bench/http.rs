//! A minimal HTTPS client for the API server: one HTTP/2 connection per simulated client (as
//! client-go negotiates h2 through ALPN), the bearer token and CA from `admin.kubeconfig`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

/// Longest a single request may take before it counts as failed, unless the connection is given
/// another limit with [`Conn::set_timeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how to reach one API server.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    authorization: HeaderValue,
    tls: Arc<rustls::ClientConfig>,
}

impl Target {
    /// Reads the server address, CA and bearer token from a kubeconfig the control plane wrote.
    pub fn from_kubeconfig(path: &Path) -> anyhow::Result<Target> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let cluster = &doc["clusters"][0]["cluster"];
        let server = cluster["server"].as_str().context("kubeconfig has no clusters[0].cluster.server")?;
        let host_port = server.strip_prefix("https://").context("server is not https://")?.trim_end_matches('/');
        let addr: SocketAddr = host_port.parse().with_context(|| format!("server address {host_port:?}"))?;
        if !addr.ip().is_loopback() {
            bail!("the benchmark only talks to loopback, and the kubeconfig names {addr}");
        }
        let ca_b64 = cluster["certificate-authority-data"].as_str().context("no certificate-authority-data")?;
        let ca_pem = base64::engine::general_purpose::STANDARD.decode(ca_b64).context("decode CA data")?;
        let token = doc["users"][0]["user"]["token"].as_str().context("kubeconfig has no users[0].user.token")?;

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca_pem) {
            roots.add(cert.context("parse CA certificate")?).context("add CA certificate")?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Target {
            addr,
            authorization: HeaderValue::from_str(&format!("Bearer {token}")).context("token is not a header value")?,
            tls: Arc::new(tls),
        })
    }
}

/// A response read to the end.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    /// The start of the body, for error messages.
    pub fn snippet(&self) -> String {
        let end = self.body.len().min(400);
        String::from_utf8_lossy(&self.body[..end]).into_owned()
    }
}

/// One client's HTTP/2 connection.
pub struct Conn {
    send: SendRequest<Full<Bytes>>,
    authorization: HeaderValue,
    base: String,
    timeout: Duration,
}

impl Conn {
    /// Opens a TLS connection and completes the HTTP/2 handshake.
    pub async fn connect(target: &Target) -> anyhow::Result<Conn> {
        let tcp =
            tokio::net::TcpStream::connect(target.addr).await.with_context(|| format!("connect {}", target.addr))?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let connector = tokio_rustls::TlsConnector::from(target.tls.clone());
        let tls =
            connector.connect(ServerName::IpAddress(target.addr.ip().into()), tcp).await.context("TLS handshake")?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            bail!("the server did not negotiate HTTP/2");
        }
        // Go's HTTP/2 transport (client-go) opens streams with a 4 MiB window; do the same so that
        // large lists are not throttled by the 64 KiB default.
        let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(TokioIo::new(tls))
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            // The connection ends when the last `SendRequest` is dropped or the server goes away;
            // requests on it then fail and are counted there.
            let _ = connection.await;
        });
        Ok(Conn {
            send,
            authorization: target.authorization.clone(),
            base: format!("https://{}", target.addr),
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// Sends a request and returns the response head with the body still streaming.
    pub async fn open(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<http::Response<Incoming>> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body.unwrap_or_default())).context("build request")?;
        self.send.ready().await.context("connection closed")?;
        self.send.send_request(request).await.context("send request")
    }

    /// Sets the longest time [`Conn::call`] waits for a whole response.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a request and reads the whole response within the connection's time limit.
    pub async fn call(&mut self, method: Method, path: &str, body: Option<Bytes>) -> anyhow::Result<Reply> {
        let timeout = self.timeout;
        let exchange = async {
            let response = self.open(method, path, body).await?;
            let status = response.status();
            let body = response.into_body().collect().await.context("read response body")?.to_bytes();
            Ok(Reply { status, body })
        };
        tokio::time::timeout(timeout, exchange).await.context("request timed out")?
    }
}

/// A watch response read line by line (one JSON event per line).
pub struct WatchStream {
    /// Keeps the connection's sender alive while the stream is read.
    _conn: Conn,
    body: Incoming,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already handed out as lines.
    consumed: usize,
}

impl WatchStream {
    /// GETs `path` (a `watch=true` URL) on a connection of its own and returns once the server
    /// has answered 200, so that every later change reaches this stream.
    pub async fn open(target: &Target, path: &str) -> anyhow::Result<WatchStream> {
        let mut conn = Conn::connect(target).await?;
        let response = conn.open(Method::GET, path, None).await?;
        if response.status() != StatusCode::OK {
            let status = response.status();
            let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            bail!("GET {path} → {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(WatchStream { _conn: conn, body: response.into_body(), buffer: Vec::new(), consumed: 0 })
    }

    /// Waits for more of the stream: when it arrived, or why the stream stopped.
    pub async fn read(&mut self) -> Result<std::time::Instant, String> {
        self.buffer.drain(..self.consumed);
        self.consumed = 0;
        loop {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                        return Ok(std::time::Instant::now());
                    }
                }
                Some(Err(error)) => return Err(format!("watch stream: {error}")),
                None => return Err("watch stream ended".into()),
            }
        }
    }

    /// The next complete line read so far, without its newline.
    pub fn next_line(&mut self) -> Option<&[u8]> {
        let start = self.consumed;
        let end = start + self.buffer[start..].iter().position(|b| *b == b'\n')?;
        self.consumed = end + 1;
        Some(&self.buffer[start..end])
    }
}
