//! The CNI error result: the spec's well-known codes, keelson's plugin-specific codes (100 and up, as
//! the spec reserves 0–99) and the JSON object printed on stdout when a command fails.
//!
//! Every module has its own `thiserror` enum; this module maps each of them onto a code, so the entry
//! point only ever deals with [`CniError`].

use serde::Serialize;

/// Error codes. 1–11 and 50–51 are the spec's; 100 and up are keelson's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the configuration's `cniVersion` is not supported, or the command needs a newer version.
    IncompatibleVersion,
    /// 2: a configuration field keelson does not support (message names key and value).
    UnsupportedField,
    /// 3: the container (its network namespace) does not exist.
    UnknownContainer,
    /// 4: a required `CNI_*` environment variable is missing or malformed (message names it).
    InvalidEnvironment,
    /// 5: I/O failure, e.g. reading stdin or the allocation directory.
    Io,
    /// 6: the configuration is not valid JSON of the expected shape.
    Decode,
    /// 7: the configuration decodes but is invalid (e.g. a bad `podCIDR`).
    InvalidConfig,
    /// 11: a transient condition; the runtime should retry later.
    TryAgainLater,
    /// 50 (STATUS): the plugin cannot service ADD requests (range exhausted, state not writable, agent down).
    NotAvailable,
    /// 100: every address of the podCIDR is allocated.
    AddressRangeExhausted,
    /// 101: `agentSocket` is configured but the node-agent did not accept the endpoint.
    AgentUnavailable,
    /// 102: the kernel refused a netlink request or a sysctl write.
    Kernel,
    /// 103: CHECK found the attachment differs from its `prevResult` (missing interface, address, route…).
    Drift,
    /// 104: `CNI_IFNAME` already exists in the container.
    InterfaceExists,
}

impl ErrorCode {
    /// The numeric code written in the error JSON.
    pub fn value(self) -> u32 {
        match self {
            Self::IncompatibleVersion => 1,
            Self::UnsupportedField => 2,
            Self::UnknownContainer => 3,
            Self::InvalidEnvironment => 4,
            Self::Io => 5,
            Self::Decode => 6,
            Self::InvalidConfig => 7,
            Self::TryAgainLater => 11,
            Self::NotAvailable => 50,
            Self::AddressRangeExhausted => 100,
            Self::AgentUnavailable => 101,
            Self::Kernel => 102,
            Self::Drift => 103,
            Self::InterfaceExists => 104,
        }
    }
}

/// A failed command, as the runtime sees it.
#[derive(Debug, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    pub code: ErrorCode,
    /// Short characterisation ("address range exhausted").
    pub msg: String,
    /// The longer explanation, including the underlying cause.
    pub details: String,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    details: &'a str,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: details.into() }
    }

    /// The error result object for `cni_version` (the version of the request, or the newest one when
    /// the request could not be read).
    pub fn to_json(&self, cni_version: &str) -> String {
        let body = ErrorJson { cni_version, code: self.code.value(), msg: &self.msg, details: &self.details };
        serde_json::to_string(&body).unwrap_or_else(|_| {
            format!(r#"{{"cniVersion":"1.1.0","code":{},"msg":"error","details":""}}"#, self.code.value())
        })
    }
}

/// Full `source()` chain of an error, joined with ": ", for the `details` field.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_four_spec_keys() {
        let error = CniError::new(ErrorCode::InvalidConfig, "invalid podCIDR", "10.0.0.0/31 is too small");
        let value: serde_json::Value = serde_json::from_str(&error.to_json("1.0.0")).expect("error JSON parses");
        assert_eq!(value["cniVersion"], "1.0.0");
        assert_eq!(value["code"], 7);
        assert_eq!(value["msg"], "invalid podCIDR");
        assert_eq!(value["details"], "10.0.0.0/31 is too small");
    }

    #[test]
    fn plugin_specific_codes_are_outside_the_reserved_range() {
        for code in [
            ErrorCode::AddressRangeExhausted,
            ErrorCode::AgentUnavailable,
            ErrorCode::Kernel,
            ErrorCode::Drift,
            ErrorCode::InterfaceExists,
        ] {
            assert!(code.value() >= 100, "{code:?} must not use a reserved code");
        }
    }
}
