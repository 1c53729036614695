//! The ADD success result (and `prevResult`, which has the same shape), written for the request's spec
//! version: 0.3.x/0.4.0 carry `version` on each IP; 1.1.0 adds interface `mtu` and route `scope`.

use serde::{Deserialize, Serialize};

use crate::config::{Dns, SpecVersion};

/// One interface created by the attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for container interfaces; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One address assigned by the attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6"; only in results of versions before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address in CIDR notation ("10.244.1.2/32").
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route created by the attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    /// 0 global, 253 link, 254 host; only written for 1.1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

/// The result of ADD, and the `prevResult` of CHECK, DEL and chained ADDs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a `prevResult` (any supported version; unknown keys are dropped).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value.clone())
    }

    /// Rewrites the fields whose presence depends on the spec version.
    pub fn for_version(mut self, cni_version: &str, version: SpecVersion) -> Self {
        self.cni_version = cni_version.to_owned();
        let legacy = version < SpecVersion::V1_0_0;
        for ip in &mut self.ips {
            ip.version = legacy.then(|| if ip.address.contains(':') { "6" } else { "4" }.to_owned());
        }
        if version < SpecVersion::V1_1_0 {
            for interface in &mut self.interfaces {
                interface.mtu = None;
            }
            for route in &mut self.routes {
                route.scope = None;
            }
        }
        self
    }

    /// Appends `other` after the entries already here, shifting its interface indices.
    pub fn merge(mut self, other: CniResult) -> Self {
        let offset = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(other.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|index| index + offset);
            ip
        }));
        self.routes.extend(other.routes);
        if self.dns.is_empty() {
            self.dns = other.dns;
        }
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("result types always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            cni_version: String::new(),
            interfaces: vec![
                Interface {
                    name: "klabc".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(1500),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                    mtu: Some(1500),
                    sandbox: Some("/run/netns/x".into()),
                },
            ],
            ips: vec![IpConfig {
                version: None,
                address: "10.244.1.2/32".into(),
                gateway: Some("10.244.1.1".into()),
                interface: Some(1),
            }],
            routes: vec![Route { dst: "0.0.0.0/0".into(), gw: Some("10.244.1.1".into()), scope: Some(0) }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn legacy_versions_carry_ip_version_and_no_mtu() {
        let json: serde_json::Value =
            serde_json::from_str(&sample().for_version("0.4.0", "0.4.0".parse().expect("version")).to_json())
                .expect("result is JSON");
        assert_eq!(json["cniVersion"], "0.4.0");
        assert_eq!(json["ips"][0]["version"], "4");
        assert!(json["interfaces"][0].get("mtu").is_none());
        assert!(json.get("dns").is_none(), "empty dns is omitted");
    }

    #[test]
    fn v1_1_carries_mtu_and_scope() {
        let json: serde_json::Value =
            serde_json::from_str(&sample().for_version("1.1.0", SpecVersion::V1_1_0).to_json()).expect("JSON");
        assert!(json["ips"][0].get("version").is_none());
        assert_eq!(json["interfaces"][1]["mtu"], 1500);
        assert_eq!(json["routes"][0]["scope"], 0);
        let v1: serde_json::Value =
            serde_json::from_str(&sample().for_version("1.0.0", SpecVersion::V1_0_0).to_json()).expect("JSON");
        assert!(v1["interfaces"][1].get("mtu").is_none());
        assert!(v1["routes"][0].get("scope").is_none());
    }

    #[test]
    fn merge_shifts_interface_indices() {
        let previous = CniResult {
            interfaces: vec![Interface { name: "other0".into(), ..Interface::default() }],
            ..CniResult::default()
        };
        let merged = previous.merge(sample());
        assert_eq!(merged.interfaces.len(), 3);
        assert_eq!(merged.ips[0].interface, Some(2));
    }

    #[test]
    fn prev_result_round_trips() {
        let text = sample().for_version("0.4.0", "0.4.0".parse().expect("version")).to_json();
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let parsed = CniResult::from_value(&value).expect("prevResult parses");
        assert_eq!(parsed.ips[0].address, "10.244.1.2/32");
        assert_eq!(parsed.interfaces[1].sandbox.as_deref(), Some("/run/netns/x"));
    }
}
