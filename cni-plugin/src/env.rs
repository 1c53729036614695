//! The invocation parameters the runtime passes in `CNI_*` environment variables, validated as the spec
//! describes (container ID and interface name syntax) and per command (which variables are required).

use std::path::PathBuf;

use crate::error::{CniError, ErrorCode};

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Version,
    Gc,
}

impl Command {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "VERSION" => Self::Version,
            "GC" => Self::Gc,
            _ => return None,
        })
    }
}

/// An invalid or missing environment variable; the message names the variable (spec code 4).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("CNI_COMMAND is not set")]
    MissingCommand,
    #[error("CNI_COMMAND={0:?} is not one of ADD, DEL, CHECK, STATUS, VERSION, GC")]
    UnknownCommand(String),
    #[error("{0} is required for this command but not set")]
    Missing(&'static str),
    #[error("CNI_CONTAINERID={0:?} must start with a letter or digit, followed by letters, digits, '_', '.' or '-'")]
    ContainerId(String),
    #[error("CNI_IFNAME={0:?} is not a valid interface name (1-15 bytes, not '.' or '..', no '/', ':' or whitespace)")]
    IfName(String),
    #[error("CNI_ARGS has an entry {0:?} that is not KEY=VALUE")]
    Args(String),
}

impl From<EnvError> for CniError {
    fn from(error: EnvError) -> Self {
        CniError::new(ErrorCode::InvalidEnvironment, "invalid environment variables", error.to_string())
    }
}

/// The attachment parameters of ADD, DEL and CHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// Required for ADD and CHECK, optional for DEL.
    pub netns: Option<PathBuf>,
    /// `CNI_ARGS` as key/value pairs, in order.
    pub args: Vec<(String, String)>,
}

impl Attachment {
    /// The value of a `CNI_ARGS` key such as `K8S_POD_NAME`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A validated invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub command: Command,
    /// Present for ADD, DEL and CHECK.
    pub attachment: Option<Attachment>,
}

impl Invocation {
    /// Reads and validates the variables through `var` (the process environment in the binary).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let var = |name: &str| var(name).filter(|value| !value.is_empty());
        let command_text = var("CNI_COMMAND").ok_or(EnvError::MissingCommand)?;
        let command = Command::parse(&command_text).ok_or(EnvError::UnknownCommand(command_text))?;
        let attachment = match command {
            Command::Add | Command::Check | Command::Del => {
                let container_id = var("CNI_CONTAINERID").ok_or(EnvError::Missing("CNI_CONTAINERID"))?;
                if !valid_container_id(&container_id) {
                    return Err(EnvError::ContainerId(container_id));
                }
                let ifname = var("CNI_IFNAME").ok_or(EnvError::Missing("CNI_IFNAME"))?;
                if !valid_ifname(&ifname) {
                    return Err(EnvError::IfName(ifname));
                }
                let netns = var("CNI_NETNS").map(PathBuf::from);
                if netns.is_none() && command != Command::Del {
                    return Err(EnvError::Missing("CNI_NETNS"));
                }
                let args = parse_args(var("CNI_ARGS").as_deref().unwrap_or(""))?;
                Some(Attachment { container_id, ifname, netns, args })
            }
            Command::Status | Command::Version | Command::Gc => None,
        };
        Ok(Self { command, attachment })
    }
}

/// The spec's container ID syntax: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Linux interface name rules as the spec states them.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;` (empty entries are ignored).
pub fn parse_args(text: &str) -> Result<Vec<(String, String)>, EnvError> {
    text.split(';')
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(EnvError::Args(entry.to_owned())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn invocation(vars: &[(&str, &str)]) -> Result<Invocation, EnvError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Invocation::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn add_requires_netns_but_del_does_not() {
        let base = [("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")];
        let add = invocation(&[base[0], base[1], ("CNI_COMMAND", "ADD")]).expect_err("ADD without CNI_NETNS fails");
        assert!(add.to_string().contains("CNI_NETNS"), "message names the variable: {add}");
        let del = invocation(&[base[0], base[1], ("CNI_COMMAND", "DEL")]).expect("DEL without CNI_NETNS is fine");
        assert_eq!(del.attachment.expect("DEL has an attachment").netns, None);
    }

    #[test]
    fn version_needs_nothing_but_the_command() {
        let version = invocation(&[("CNI_COMMAND", "VERSION")]).expect("VERSION alone is valid");
        assert_eq!(version.command, Command::Version);
        assert!(version.attachment.is_none());
    }

    #[test]
    fn bad_values_name_their_variable() {
        let error = invocation(&[("CNI_COMMAND", "FROB")]).expect_err("unknown command");
        assert!(error.to_string().contains("CNI_COMMAND"));
        let error = invocation(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/x"),
        ])
        .expect_err("container id must start alphanumeric");
        assert!(error.to_string().contains("CNI_CONTAINERID"));
        let error = invocation(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "a-name-that-is-too-long"),
            ("CNI_NETNS", "/run/netns/x"),
        ])
        .expect_err("ifname too long");
        assert!(error.to_string().contains("CNI_IFNAME"));
    }

    #[test]
    fn interface_names_follow_the_spec() {
        for good in ["eth0", "net1", "a", "x.y-z_0", "fifteen-chars-x"] {
            assert!(valid_ifname(good), "{good} is valid");
        }
        for bad in ["", ".", "..", "sixteen-chars-xx", "a/b", "a:b", "a b", "tab\t"] {
            assert!(!valid_ifname(bad), "{bad:?} is invalid");
        }
    }

    #[test]
    fn cni_args_are_pairs() {
        let args = parse_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;").expect("valid args");
        assert_eq!(args.len(), 3);
        assert_eq!(args[2], ("K8S_POD_NAME".to_owned(), "web-0".to_owned()));
        assert!(parse_args("novalue").is_err());
        assert!(parse_args("=x").is_err());
    }
}
