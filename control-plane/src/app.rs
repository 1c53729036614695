//! Wiring of a running control plane: store, PKI, API server. `main.rs` and in-process tests
//! both start one with [`start`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::server::{self, Api, pki::Pki};
use crate::storage::sqlite::SqliteStore;

/// What a control plane needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Holds the database, the PKI and `admin.kubeconfig`.
    pub data_dir: PathBuf,
    /// Where the API listens; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How often history is compacted, and how many revisions are kept.
    pub compact_every: Duration,
    pub compact_keep: i64,
    /// Which controllers run (`*`, `name`, `-name`, comma-separated); empty runs none.
    pub controllers: String,
    /// Whether the scheduler runs.
    pub scheduler: bool,
    pub leader: crate::controllers::leader::LeaderConfig,
    pub settings: crate::controllers::Settings,
    /// etcd endpoints (`http://host:port`); empty uses the embedded store in the data directory.
    pub etcd_servers: Vec<String>,
}

impl Config {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        let identity = format!("{}_{}", hostname(), uuid::Uuid::new_v4());
        Config {
            data_dir,
            listen,
            compact_every: Duration::from_secs(300),
            compact_keep: 10_000,
            controllers: "*".into(),
            scheduler: true,
            leader: crate::controllers::leader::LeaderConfig::new("keelson-control-plane", &identity),
            settings: Default::default(),
            etcd_servers: Vec::new(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("create data directory {0}")]
    DataDir(PathBuf, #[source] std::io::Error),
    #[error("open store")]
    Store(#[from] crate::storage::StoreError),
    #[error("certificates")]
    Pki(#[from] server::pki::PkiError),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("listen on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("initial objects: {0}")]
    Bootstrap(String),
}

/// A started control plane.
pub struct Running {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub api: Arc<Api>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish briefly, and returns.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// Runs the controllers and the scheduler while this replica holds the leader lease.
fn start_leading_parts(api: &Arc<Api>, cfg: &Config, cancel: CancellationToken) {
    let controllers: Vec<_> = crate::controllers::registry()
        .into_iter()
        .filter(|c| crate::controllers::enabled(&cfg.controllers, c.name()))
        .collect();
    if controllers.is_empty() && !cfg.scheduler {
        return;
    }
    let client = crate::server::internal::Client::new(api.clone());
    let (api, settings, scheduler) = (api.clone(), Arc::new(cfg.settings.clone()), cfg.scheduler);
    let leader = cfg.leader.clone();
    tokio::spawn(crate::controllers::leader::run(client.clone(), leader, cancel, move |term| {
        let informers = crate::controllers::Informers::new(api.clone(), term.clone());
        let ctx = crate::controllers::Ctx {
            client: client.clone(),
            informers,
            events: crate::controllers::events::Recorder::new(client.clone(), "keelson-controller-manager"),
            cancel: term,
            settings: settings.clone(),
        };
        let controllers = controllers.clone();
        async move {
            let sched = scheduler.then(|| tokio::spawn(crate::scheduling::run(ctx.clone())));
            crate::controllers::run(ctx, controllers).await;
            if let Some(s) = sched {
                let _ = s.await;
            }
        }
    }));
}

/// Opens the store, loads or creates the PKI, binds the listener and serves in the background.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| StartError::DataDir(cfg.data_dir.clone(), e))?;
    let store: crate::storage::AnyStore = if cfg.etcd_servers.is_empty() {
        Arc::new(SqliteStore::open(&cfg.data_dir.join("state.db"))?)
    } else {
        Arc::new(crate::storage::etcd::EtcdStore::connect(&cfg.etcd_servers).await?)
    };
    crate::storage::sqlite::spawn_compactor(&store, cfg.compact_every, cfg.compact_keep);
    let pki = Pki::load_or_create(&cfg.data_dir)?;
    let tls = server::tls_config(&pki).map_err(|e| StartError::Tls(e.to_string()))?;
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| StartError::Listen(cfg.listen, e))?;
    let addr = listener.local_addr().map_err(|e| StartError::Listen(cfg.listen, e))?;
    let kubeconfig = pki.write_kubeconfig(&cfg.data_dir, addr)?;
    let api = Api::new(store, pki.admin_token.clone(), addr);
    server::namespaces::ensure_initial(&api).await.map_err(|e| StartError::Bootstrap(e.to_string()))?;
    let cancel = CancellationToken::new();
    start_leading_parts(&api, &cfg, cancel.clone());
    let task = {
        let (api, cancel) = (api.clone(), cancel.clone());
        tokio::spawn(async move {
            if let Err(error) = server::serve(api, listener, tls, cancel).await {
                tracing::error!(%error, "API server stopped");
            }
        })
    };
    info!(%addr, kubeconfig = %kubeconfig.display(), "control plane serving");
    Ok(Running { addr, kubeconfig, api, cancel, task })
}
