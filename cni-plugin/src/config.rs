//! The network configuration read from stdin: spec versions, keelson's keys and their validation.
//!
//! `{"cniVersion":"1.0.0","name":"keelson","type":"keelson","podCIDR":"10.244.1.0/24"}` is complete.
//! Optional keys: `mtu` (default 1500), `agentSocket` (node-agent Unix socket), `agentTimeoutMs`
//! (default 3000), `dataDir` (default `/var/lib/cni/keelson/<name>`), `dns` (copied into the result).
//! Runtime-inserted keys used: `prevResult` (CHECK, DEL, chained ADD) and `cni.dev/valid-attachments` (GC).
//! Unknown keys are ignored, as the runtime may add its own (`runtimeConfig`, `args`, `capabilities`).

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{CniError, ErrorCode};

/// Versions accepted in `cniVersion`, oldest first (the VERSION command lists them).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest supported version, used when the request's own version cannot be read.
pub const LATEST_VERSION: &str = "1.1.0";
/// Parent of the default `dataDir`.
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/cni/keelson";
pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(3);

/// A semantic version `major.minor.patch` of the CNI spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpecVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl SpecVersion {
    pub const V0_4_0: Self = Self { major: 0, minor: 4, patch: 0 };
    pub const V1_0_0: Self = Self { major: 1, minor: 0, patch: 0 };
    pub const V1_1_0: Self = Self { major: 1, minor: 1, patch: 0 };
}

impl FromStr for SpecVersion {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let mut parts = text.split('.').map(|part| part.parse::<u32>().map_err(|_| ()));
        let version =
            Self { major: parts.next().ok_or(())??, minor: parts.next().ok_or(())??, patch: parts.next().ok_or(())?? };
        if parts.next().is_some() {
            return Err(());
        }
        Ok(version)
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// An IPv4 network in CIDR notation with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodCidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl PodCidr {
    /// Number of addresses in the network (2^(32-prefix)).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
        u32::from(ip) & mask == u32::from(self.network)
    }

    /// The pod gateway: the first host address (`10.244.1.1` for `10.244.1.0/24`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// First and last address a pod may get: gateway + 1 ..= broadcast - 1.
    pub fn pod_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let network = u32::from(self.network);
        let broadcast = network + (self.size() - 1) as u32;
        (Ipv4Addr::from(network + 2), Ipv4Addr::from(broadcast - 1))
    }
}

impl FromStr for PodCidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = text.split_once('/').ok_or_else(|| format!("{text:?} is not in CIDR notation"))?;
        let network: Ipv4Addr =
            address.parse().map_err(|_| format!("{address:?} is not an IPv4 address (only IPv4 is supported)"))?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("bad prefix in {text:?}"))?;
        if prefix > 30 {
            return Err(format!("{text} is too small: a pod network needs at least a /30"));
        }
        let cidr = Self { network, prefix };
        if !cidr.contains(network) || u32::from(network) & !(u32::MAX << (32 - u32::from(prefix))) != 0 {
            return Err(format!("{text} has host bits set"));
        }
        Ok(cidr)
    }
}

impl fmt::Display for PodCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The well-known `dns` key, copied into the ADD result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_none() && self.search.is_empty() && self.options.is_empty()
    }
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Deserialize)]
struct RawConf {
    name: Option<String>,
    #[serde(rename = "podCIDR")]
    pod_cidr: Option<String>,
    mtu: Option<u32>,
    #[serde(rename = "agentSocket")]
    agent_socket: Option<PathBuf>,
    #[serde(rename = "agentTimeoutMs")]
    agent_timeout_ms: Option<u64>,
    #[serde(rename = "dataDir")]
    data_dir: Option<PathBuf>,
    dns: Option<Dns>,
    ipam: Option<serde_json::Value>,
    #[serde(rename = "ipMasq")]
    ip_masq: Option<bool>,
    #[serde(rename = "prevResult")]
    prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<ValidAttachment>>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// `cniVersion` as written (echoed in results).
    pub cni_version: String,
    pub version: SpecVersion,
    pub name: String,
    pub pod_cidr: PodCidr,
    pub mtu: u32,
    pub agent_socket: Option<PathBuf>,
    pub agent_timeout: Duration,
    pub data_dir: PathBuf,
    pub dns: Option<Dns>,
    pub prev_result: Option<serde_json::Value>,
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// Why a configuration was rejected; each variant maps to one spec code.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("network configuration is not valid JSON")]
    Syntax(#[source] serde_json::Error),
    #[error("network configuration does not have the expected shape")]
    Shape(#[source] serde_json::Error),
    #[error("cniVersion is missing or not a string")]
    MissingVersion,
    #[error("cniVersion {0:?} is not supported (supported: {supported})", supported = SUPPORTED_VERSIONS.join(", "))]
    UnsupportedVersion(String),
    #[error("unsupported field {key}={value}: {why}")]
    UnsupportedField { key: &'static str, value: String, why: &'static str },
    #[error("invalid network configuration: {0}")]
    Invalid(String),
}

impl From<ConfigError> for CniError {
    fn from(error: ConfigError) -> Self {
        let (code, msg) = match &error {
            ConfigError::Syntax(_) | ConfigError::Shape(_) => {
                (ErrorCode::Decode, "failed to decode network configuration")
            }
            ConfigError::UnsupportedVersion(_) => (ErrorCode::IncompatibleVersion, "incompatible CNI version"),
            ConfigError::UnsupportedField { .. } => (ErrorCode::UnsupportedField, "unsupported field"),
            ConfigError::MissingVersion | ConfigError::Invalid(_) => {
                (ErrorCode::InvalidConfig, "invalid network configuration")
            }
        };
        CniError::new(code, msg, crate::error::chain(&error))
    }
}

/// The `cniVersion` string of a request, if it can be read, for error results.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    value.get("cniVersion")?.as_str().map(str::to_owned)
}

/// Checks a `cniVersion` string against [`SUPPORTED_VERSIONS`].
pub fn supported_version(text: &str) -> Result<SpecVersion, ConfigError> {
    if !SUPPORTED_VERSIONS.contains(&text) {
        return Err(ConfigError::UnsupportedVersion(text.to_owned()));
    }
    text.parse().map_err(|()| ConfigError::UnsupportedVersion(text.to_owned()))
}

/// Network names as the spec allows them (they also name the default data directory).
pub fn valid_network_name(name: &str) -> bool {
    crate::env::valid_container_id(name)
}

impl NetConf {
    /// Decodes and validates a configuration.
    pub fn parse(stdin: &[u8]) -> Result<Self, ConfigError> {
        let value: serde_json::Value = serde_json::from_slice(stdin).map_err(ConfigError::Syntax)?;
        let cni_version =
            value.get("cniVersion").and_then(|v| v.as_str()).ok_or(ConfigError::MissingVersion)?.to_owned();
        let version = supported_version(&cni_version)?;
        let raw: RawConf = serde_json::from_value(value).map_err(ConfigError::Shape)?;

        let name = raw.name.ok_or_else(|| ConfigError::Invalid("name is required".into()))?;
        if !valid_network_name(&name) {
            return Err(ConfigError::Invalid(format!(
                "name {name:?} must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
            )));
        }
        let pod_cidr_text = raw.pod_cidr.ok_or_else(|| ConfigError::Invalid("podCIDR is required".into()))?;
        let pod_cidr: PodCidr =
            pod_cidr_text.parse().map_err(|why: String| ConfigError::Invalid(format!("podCIDR: {why}")))?;
        let mtu = raw.mtu.unwrap_or(DEFAULT_MTU);
        if !(68..=65535).contains(&mtu) {
            return Err(ConfigError::Invalid(format!("mtu {mtu} is outside 68..=65535")));
        }
        if let Some(ipam) = raw.ipam.filter(|ipam| ipam.as_object().is_none_or(|o| !o.is_empty())) {
            return Err(ConfigError::UnsupportedField {
                key: "ipam",
                value: ipam.to_string(),
                why: "keelson allocates from podCIDR itself and delegates to no IPAM plugin",
            });
        }
        if raw.ip_masq == Some(true) {
            return Err(ConfigError::UnsupportedField {
                key: "ipMasq",
                value: "true".into(),
                why: "pod traffic is routed, not masqueraded, by keelson",
            });
        }
        if let Some(socket) = &raw.agent_socket
            && !socket.is_absolute()
        {
            return Err(ConfigError::Invalid(format!("agentSocket {} must be an absolute path", socket.display())));
        }
        let data_dir = raw.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_ROOT).join(&name));
        if !data_dir.is_absolute() {
            return Err(ConfigError::Invalid(format!("dataDir {} must be an absolute path", data_dir.display())));
        }
        let agent_timeout = raw.agent_timeout_ms.map_or(DEFAULT_AGENT_TIMEOUT, Duration::from_millis);
        if agent_timeout.is_zero() {
            return Err(ConfigError::Invalid("agentTimeoutMs must be positive".into()));
        }
        Ok(Self {
            cni_version,
            version,
            name,
            pod_cidr,
            mtu,
            agent_socket: raw.agent_socket,
            agent_timeout,
            data_dir,
            dns: raw.dns.filter(|dns| !dns.is_empty()),
            prev_result: raw.prev_result.filter(|v| !v.is_null()),
            valid_attachments: raw.valid_attachments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(stdin: &str) -> u32 {
        let error = NetConf::parse(stdin.as_bytes()).expect_err("configuration must be rejected");
        CniError::from(error).code.value()
    }

    #[test]
    fn minimal_configuration_is_complete() {
        let conf =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"keelson","type":"keelson","podCIDR":"10.244.1.0/24"}"#)
                .expect("minimal configuration is valid");
        assert_eq!(conf.version, SpecVersion::V1_0_0);
        assert_eq!(conf.pod_cidr.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(conf.pod_cidr.pod_range(), (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 254)));
        assert_eq!(conf.mtu, 1500);
        assert_eq!(conf.data_dir, PathBuf::from("/var/lib/cni/keelson/keelson"));
        assert!(conf.agent_socket.is_none());
    }

    #[test]
    fn optional_keys_are_read() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"0.4.0","name":"n1","type":"keelson","podCIDR":"10.244.7.0/30","mtu":1400,
                "agentSocket":"/run/keelson/agent.sock","dataDir":"/tmp/x","dns":{"nameservers":["10.96.0.10"]},
                "runtimeConfig":{},"args":{}}"#,
        )
        .expect("configuration with optional keys is valid");
        assert_eq!(conf.mtu, 1400);
        assert_eq!(conf.pod_cidr.pod_range(), (Ipv4Addr::new(10, 244, 7, 2), Ipv4Addr::new(10, 244, 7, 2)));
        assert_eq!(conf.dns.expect("dns kept").nameservers, vec!["10.96.0.10".to_owned()]);
    }

    #[test]
    fn rejections_use_the_spec_codes() {
        assert_eq!(code("{not json"), 6);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"k","podCIDR":"10.244.1.0/24","mtu":"big"}"#), 6);
        assert_eq!(code(r#"{"cniVersion":"9.9.9","name":"k","podCIDR":"10.244.1.0/24"}"#), 1);
        assert_eq!(code(r#"{"cniVersion":"0.2.0","name":"k","podCIDR":"10.244.1.0/24"}"#), 1);
        assert_eq!(code(r#"{"name":"k","podCIDR":"10.244.1.0/24"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","podCIDR":"10.244.1.0/24"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"k"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"k","podCIDR":"10.244.1.0/31"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"k","podCIDR":"10.244.1.5/24"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"k","podCIDR":"fd00::/64"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"k","podCIDR":"10.244.1.0/24","mtu":20}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"../x","podCIDR":"10.244.1.0/24"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"k","podCIDR":"10.244.1.0/24","dataDir":"rel"}"#), 7);
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"k","podCIDR":"10.244.1.0/24","ipam":{"type":"host-local"}}"#),
            2
        );
    }

    #[test]
    fn unsupported_field_message_has_key_and_value() {
        let error = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"k","podCIDR":"10.244.1.0/24","ipMasq":true}"#)
            .expect_err("ipMasq is unsupported");
        let text = error.to_string();
        assert!(text.contains("ipMasq") && text.contains("true"), "{text}");
    }

    #[test]
    fn versions_order() {
        let v: SpecVersion = "0.4.0".parse().expect("valid version");
        assert!(v < SpecVersion::V1_0_0 && SpecVersion::V1_0_0 < SpecVersion::V1_1_0);
        assert!("1.0".parse::<SpecVersion>().is_err());
    }
}
