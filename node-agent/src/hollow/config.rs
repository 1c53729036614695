//! What a hollow cluster is asked to simulate, and the checks that run before anything connects.
//! The command line and in-process tests both build a [`HollowConfig`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::HollowError;

/// Largest node count: node addresses are `10.255.<i / 250>.<i % 250 + 1>`.
pub const MAX_NODES: usize = 250 * 256;

/// Everything a [`super::HollowCluster`] needs. Build with [`HollowConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct HollowConfig {
    /// Kubeconfig of the API server (bearer token or client certificate).
    pub kubeconfig: PathBuf,
    /// How many nodes to simulate; they are named `<name_prefix><i>` for `i` in `0..nodes`.
    pub nodes: usize,
    pub name_prefix: String,
    /// `spec.leaseDurationSeconds` of each node Lease.
    pub lease_seconds: i32,
    /// How often each Lease is renewed; renewals of all nodes are spread over this interval.
    pub renew_every: Duration,
    /// How often each node re-posts its conditions' `lastHeartbeatTime` (spread likewise).
    pub heartbeat_every: Duration,
    /// Node capacity (and allocatable), as Kubernetes quantities.
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub ephemeral_storage: String,
    /// Extra node labels, added to the standard ones (and overriding them on a clash).
    pub labels: BTreeMap<String, String>,
    /// Most API writes in flight at once (lease renewals, status posts, pod updates together).
    pub max_inflight: usize,
}

impl HollowConfig {
    /// The defaults of the command line: prefix `hollow-`, 40 s leases renewed every 10 s,
    /// heartbeat every 60 s, 4 CPUs, 16Gi memory, 110 pods, 100Gi ephemeral storage.
    pub fn new(kubeconfig: impl Into<PathBuf>, nodes: usize) -> Self {
        HollowConfig {
            kubeconfig: kubeconfig.into(),
            nodes,
            name_prefix: "hollow-".into(),
            lease_seconds: 40,
            renew_every: Duration::from_secs(10),
            heartbeat_every: Duration::from_secs(60),
            cpu: "4".into(),
            memory: "16Gi".into(),
            pods: 110,
            ephemeral_storage: "100Gi".into(),
            labels: BTreeMap::new(),
            max_inflight: 100,
        }
    }

    /// Name of node `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}{i}", self.name_prefix)
    }

    /// Rejects values the API server would refuse or that make no sense, before connecting.
    pub fn validate(&self) -> Result<(), HollowError> {
        let bad = |msg: String| Err(HollowError::Config(msg));
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return bad(format!("nodes must be between 1 and {MAX_NODES}, not {}", self.nodes));
        }
        let last = self.node_name(self.nodes - 1);
        if !is_dns_subdomain(&self.node_name(0)) || !is_dns_subdomain(&last) {
            return bad(format!("name prefix {:?} does not give valid node names (like {last:?})", self.name_prefix));
        }
        if !is_label_value(&last) {
            return bad(format!("node name {last:?} is too long for the kubernetes.io/hostname label"));
        }
        if self.lease_seconds <= 0 {
            return bad(format!("lease duration must be positive, not {}", self.lease_seconds));
        }
        if self.renew_every.is_zero() || self.heartbeat_every.is_zero() {
            return bad("renew and heartbeat intervals must be positive".into());
        }
        for (what, q) in [("cpu", &self.cpu), ("memory", &self.memory), ("ephemeral-storage", &self.ephemeral_storage)]
        {
            if !is_quantity(q) {
                return bad(format!("{what} {q:?} is not a quantity (like 4, 500m, 16Gi)"));
            }
        }
        for (k, v) in &self.labels {
            if !is_label_key(k) {
                return bad(format!("label key {k:?} is not a qualified name"));
            }
            if !is_label_value(v) {
                return bad(format!("label {k}: value {v:?} is not a valid label value"));
            }
        }
        if self.max_inflight == 0 {
            return bad("max in-flight writes must be at least 1".into());
        }
        Ok(())
    }
}

/// Parses `k=v,k2=v2` (an empty string gives no labels).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, HollowError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(HollowError::Config(format!("label {part:?} is not key=value")));
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// A Kubernetes quantity: a decimal number with an optional SI, binary or exponent suffix.
pub fn is_quantity(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = body.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(body.len());
    let (number, suffix) = body.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number != "."
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        e => {
            let exp = e.strip_prefix(['e', 'E']).unwrap_or("");
            let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit())
        }
    };
    number_ok && suffix_ok
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A label value: empty, or up to 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name_part(s)
}

fn is_qualified_name_part(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && alnum(s.chars().next())
        && alnum(s.chars().last())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A label key: `[prefix/]name` with a DNS-subdomain prefix.
pub fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["4", "500m", "16Gi", "1.5", "100Gi", "1e3", "2E+6", ".5", "+1k"] {
            assert!(is_quantity(ok), "{ok} is a quantity");
        }
        for bad in ["", "Gi", "4 cores", "1.2.3", "16GB", "1e", ".", "-"] {
            assert!(!is_quantity(bad), "{bad} is not a quantity");
        }
    }

    #[test]
    fn labels_parse_and_validate() {
        let l = parse_labels("a=b, example.com/zone = z1,empty=").expect("valid");
        assert_eq!(l.get("example.com/zone").map(String::as_str), Some("z1"));
        assert_eq!(l.get("empty").map(String::as_str), Some(""));
        assert!(parse_labels("novalue").is_err());
        assert!(is_label_key("node.kubernetes.io/instance-type"));
        assert!(!is_label_key("-bad"));
        assert!(!is_label_key("Bad_Prefix/x"));
        assert!(!is_label_value("has space"));
    }

    #[test]
    fn validation() {
        let ok = HollowConfig::new("/k", 3);
        ok.validate().expect("defaults are valid");
        let mut c = ok.clone();
        c.nodes = 0;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.name_prefix = "Hollow_".into();
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.memory = "lots".into();
        assert!(c.validate().is_err());
        let mut c = ok;
        c.labels.insert("k".into(), "v v".into());
        assert!(c.validate().is_err());
    }
}
