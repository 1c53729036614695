//! One `kube::Client` over a single multiplexed HTTP/2 connection (ALPN `h2`, falling back to
//! HTTP/1.1 when the server does not offer it). kube's stock client only speaks HTTP/1.1, which
//! would open one connection per concurrent request; thousands of hollow kubelets share this one.

use std::path::Path;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{ClientBuilder, ConfigExt as _};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::HollowError;

/// Pings keep an idle connection (only watches on it) known to be alive.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Builds the shared client from a kubeconfig file (its current context).
pub async fn connect(kubeconfig: &Path) -> Result<kube::Client, HollowError> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .map_err(|source| HollowError::Kubeconfig { path: kubeconfig.to_path_buf(), source })?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|source| HollowError::Kubeconfig { path: kubeconfig.to_path_buf(), source })?;
    client_for(config)
}

/// An HTTP/2-capable client for a kube `Config`.
pub fn client_for(config: kube::Config) -> Result<kube::Client, HollowError> {
    let tls = config.rustls_client_config().map_err(HollowError::Client)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(KEEPALIVE)
        .http2_keep_alive_while_idle(true)
        .http2_adaptive_window(true)
        .build(https);
    // kube's auth layer wants boxed errors below it.
    let hyper = tower::ServiceExt::map_err(hyper, tower::BoxError::from);
    let builder = ClientBuilder::new(hyper, config.default_namespace.clone())
        .with_layer(&config.base_uri_layer())
        .with_layer(&config.extra_headers_layer().map_err(HollowError::Client)?);
    Ok(match config.auth_layer().map_err(HollowError::Client)? {
        Some(auth) => builder.with_layer(&auth).build(),
        None => builder.build(),
    })
}
