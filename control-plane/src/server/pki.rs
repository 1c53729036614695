//! The cluster's certificate authority, the API server's serving certificate, the admin
//! credentials and `admin.kubeconfig`. Created on first start under `DATA_DIR/pki/`, loaded after.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("generate certificate")]
    Generate(#[from] rcgen::Error),
}

fn read(path: PathBuf) -> Result<String, PkiError> {
    fs::read_to_string(&path).map_err(|source| PkiError::Io { path, source })
}

/// Writes `contents` atomically (temp file, fsync, rename) with mode 0600.
fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io_err = |source| PkiError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("tmp");
    let mut f =
        fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(io_err)?;
    f.write_all(contents.as_bytes()).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}

/// Key material of one cluster.
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    /// Bearer token of the cluster admin.
    pub admin_token: String,
}

impl Pki {
    /// Loads the PKI from `data_dir/pki`, creating it on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Pki, PkiError> {
        let dir = data_dir.join("pki");
        let files = ["ca.crt", "apiserver.crt", "apiserver.key", "admin.token"];
        if files.iter().all(|f| dir.join(f).exists()) {
            return Ok(Pki {
                ca_pem: read(dir.join("ca.crt"))?,
                server_cert_pem: read(dir.join("apiserver.crt"))?,
                server_key_pem: read(dir.join("apiserver.key"))?,
                admin_token: read(dir.join("admin.token"))?.trim().to_string(),
            });
        }
        fs::create_dir_all(&dir).map_err(|source| PkiError::Io { path: dir.clone(), source })?;

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "keelson-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        ca_params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let names = vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
            "127.0.0.1".to_string(),
            "10.96.0.1".to_string(),
            "::1".to_string(),
        ];
        let mut server_params = CertificateParams::new(names)?;
        server_params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        server_params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let mut token = [0u8; 32];
        rand::fill(&mut token);
        let pki = Pki {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            admin_token: hex(&token),
        };
        // The CA key is not kept: nothing signs with it after start-up yet.
        write_private(&dir.join("ca.crt"), &pki.ca_pem)?;
        write_private(&dir.join("apiserver.crt"), &pki.server_cert_pem)?;
        write_private(&dir.join("apiserver.key"), &pki.server_key_pem)?;
        write_private(&dir.join("admin.token"), &pki.admin_token)?;
        Ok(pki)
    }

    /// Writes `data_dir/admin.kubeconfig` for a server at `addr`.
    pub fn write_kubeconfig(&self, data_dir: &Path, addr: SocketAddr) -> Result<PathBuf, PkiError> {
        let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let contents = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: keelson\n  cluster:\n    server: https://{host}:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: keelson\n  context:\n    cluster: keelson\n    user: admin\n    namespace: default\ncurrent-context: keelson\npreferences: {{}}\n",
            port = addr.port(),
            token = self.admin_token,
        );
        let path = data_dir.join("admin.kubeconfig");
        write_private(&path, &contents)?;
        Ok(path)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
