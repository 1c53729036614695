//! Small value checks shared by the core/v1 strategies (ports, IPs, CIDRs, config keys, env
//! names, resource names) and JSON access helpers. Messages are Kubernetes' own wording.

use std::fmt::Display;
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::validation::{self, ErrorKind, FieldErrors, Key};

use super::quantity::Quantity;

// ---- JSON access -------------------------------------------------------------------------------

/// The string at `key`, `""` when absent or not a string.
pub(crate) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The array at `key`, empty when absent.
pub(crate) fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The object at `key`, `None` when absent or not an object.
pub(crate) fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

/// True when `key` is absent, null, or an empty string (Go's zero value for strings).
pub(crate) fn is_unset(m: &Map<String, Value>, key: &str) -> bool {
    match m.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

/// Sets `key` to `value` when it is unset (absent, null or `""`).
pub(crate) fn default_field(m: &mut Map<String, Value>, key: &str, value: Value) {
    if is_unset(m, key) {
        m.insert(key.to_string(), value);
    }
}

/// The object at `key`, created as `{}` when absent or null. `None` when it holds something else.
pub(crate) fn child_obj<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let slot = m.entry(key.to_string()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// Mutable items of the array at `key` (nothing when absent).
pub(crate) fn items_mut<'a>(m: &'a mut Map<String, Value>, key: &str) -> impl Iterator<Item = &'a mut Value> {
    m.get_mut(key).and_then(Value::as_array_mut).into_iter().flat_map(|a| a.iter_mut())
}

/// A JSON integer field, `None` when absent or not an integer.
pub(crate) fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

// ---- error helpers -----------------------------------------------------------------------------

pub(crate) fn duplicate(errs: &mut FieldErrors, field: impl Display, value: Value) {
    errs.push(ErrorKind::Duplicate, field, Some(value), "");
}

/// Kubernetes reports `Not found: "x"` (FieldValueNotFound). `ErrorKind` has no such variant
/// yet, so this is an Invalid error saying the same thing.
pub(crate) fn not_found(errs: &mut FieldErrors, field: impl Display, value: Value) {
    errs.push(ErrorKind::Invalid, field, Some(value), "not found");
}

pub(crate) fn too_long(errs: &mut FieldErrors, field: impl Display, max: usize) {
    errs.push(ErrorKind::TooLong, field, None, format!("may not be more than {max} bytes"));
}

/// `must be between LO and HI, inclusive`.
pub(crate) fn range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

// ---- value checks ------------------------------------------------------------------------------

pub(crate) fn port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) { Vec::new() } else { vec![range_error(1, 65535)] }
}

/// An IANA service name as used for port names.
pub(crate) fn port_name(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push("must be no more than 15 characters".to_string());
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string());
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// Validates an int-or-string port (`targetPort`, probe ports) at `field`.
pub(crate) fn check_port_num_or_name(v: &Value, field: &dyn Display, errs: &mut FieldErrors) {
    match v {
        Value::Number(n) => {
            for msg in port_num(n.as_i64().unwrap_or(0)) {
                errs.invalid(field, v.clone(), msg);
            }
        }
        Value::String(name) => {
            for msg in port_name(name) {
                errs.invalid(field, v.clone(), msg);
            }
        }
        _ => errs.invalid(field, v.clone(), "must contain an int or string"),
    }
}

pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

pub(crate) fn check_ip(value: &str, field: &dyn Display, errs: &mut FieldErrors) {
    if parse_ip(value).is_none() {
        errs.invalid(
            field,
            Value::String(value.into()),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        );
    }
}

/// Parses `a.b.c.d/n` or `x::/n`.
pub(crate) fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) || (bits.len() > 1 && bits.starts_with('0')) {
        return None;
    }
    let bits: u8 = bits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

pub(crate) fn check_cidr(value: &str, field: &dyn Display, errs: &mut FieldErrors) {
    if parse_cidr(value).is_none() {
        errs.invalid(
            field,
            Value::String(value.into()),
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        );
    }
}

/// A ConfigMap or Secret data key.
pub(crate) fn config_key(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        errs.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_string());
    }
    if key == "." {
        errs.push("must not be '.'".to_string());
    } else if key == ".." {
        errs.push("must not be '..'".to_string());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// Environment variable names (relaxed rules, the default since Kubernetes 1.34).
pub(crate) fn env_var_name(name: &str) -> Vec<String> {
    if name.bytes().all(|b| (32..=126).contains(&b) && b != b'=') {
        Vec::new()
    } else {
        vec!["a valid environment variable name must consist only of printable ASCII characters other than '='".into()]
    }
}

/// Label maps (`nodeSelector`, service `selector`): keys are qualified names, values label values.
pub(crate) fn check_label_map(m: Option<&Map<String, Value>>, field: &dyn Display, errs: &mut FieldErrors) {
    let Some(m) = m else { return };
    for (k, v) in m {
        for msg in validation::qualified_name(k) {
            errs.invalid(field, Value::String(k.clone()), msg);
        }
        match v.as_str() {
            Some(s) => {
                for msg in validation::label_value(s) {
                    errs.invalid(field, v.clone(), msg);
                }
            }
            None => errs.invalid(field, v.clone(), "must be a string"),
        }
    }
}

const STANDARD_CONTAINER_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage"];

/// Resource names inside container `resources` (`cpu`, `memory`, `hugepages-2Mi`, `vendor/gpu`).
pub(crate) fn check_container_resource_name(name: &str, field: &dyn Display, errs: &mut FieldErrors) {
    let qn = validation::qualified_name(name);
    if !qn.is_empty() {
        for msg in qn {
            errs.invalid(field, Value::String(name.into()), msg);
        }
        return;
    }
    if !name.contains('/') && !STANDARD_CONTAINER_RESOURCES.contains(&name) && !name.starts_with("hugepages-") {
        errs.invalid(field, Value::String(name.into()), "must be a standard resource for containers");
    }
}

/// Validates a `ResourceList` of quantities: parseable and non-negative. Returns the parsed list.
pub(crate) fn check_resource_list(
    list: Option<&Value>,
    field: &dyn Display,
    errs: &mut FieldErrors,
) -> Vec<(String, Quantity)> {
    let mut out = Vec::new();
    let Some(m) = list.and_then(Value::as_object) else { return out };
    for (name, v) in m {
        let path = Key(field, name);
        match Quantity::from_json(v) {
            Ok(q) => {
                if q.is_negative() {
                    errs.invalid(&path, Value::String(q.to_string()), "must be greater than or equal to 0");
                }
                out.push((name.clone(), q));
            }
            Err(msg) => errs.invalid(&path, v.clone(), msg),
        }
    }
    out
}

/// True when the value is a JSON boolean `true`.
pub(crate) fn is_true(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool) == Some(true)
}

// ---- base64 (Go's `encoding/base64.StdEncoding`, used for `[]byte` fields) --------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard padded base64 (CR and LF are skipped, as Go does). The error is Go's
/// message, `illegal base64 data at input byte N`.
pub(crate) fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let err = |i: usize| format!("illegal base64 data at input byte {i}");
    let input: Vec<(usize, u8)> = s.bytes().enumerate().filter(|(_, b)| *b != b'\r' && *b != b'\n').collect();
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    for (q, quad) in input.chunks(4).enumerate() {
        let last = q == input.len().div_ceil(4) - 1;
        let mut vals = [0u32; 4];
        let mut pad = 0;
        for (j, &(pos, b)) in quad.iter().enumerate() {
            vals[j] = match b {
                b'A'..=b'Z' => u32::from(b - b'A'),
                b'a'..=b'z' => u32::from(b - b'a') + 26,
                b'0'..=b'9' => u32::from(b - b'0') + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if j >= 2 && last => {
                    pad += 1;
                    0
                }
                _ => return Err(err(pos)),
            };
            if pad > 0 && b != b'=' {
                return Err(err(pos));
            }
        }
        if quad.len() < 4 {
            return Err(err(quad[0].0));
        }
        if pad == 1 && quad[2].1 == b'=' {
            return Err(err(quad[3].0));
        }
        let n = (vals[0] << 18) | (vals[1] << 12) | (vals[2] << 6) | vals[3];
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

/// Resources whose quantities must be whole numbers (object counts, extended resources).
pub(crate) fn is_integer_resource(name: &str) -> bool {
    const INTEGER: &[&str] = &[
        "pods",
        "services",
        "replicationcontrollers",
        "resourcequotas",
        "secrets",
        "configmaps",
        "persistentvolumeclaims",
        "services.nodeports",
        "services.loadbalancers",
    ];
    INTEGER.contains(&name)
        || (name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests."))
}

/// `ValidateResourceQuantityValue`: non-negative, and whole for integer resources.
pub(crate) fn check_quantity_value(
    name: &str,
    v: &Value,
    field: &dyn Display,
    errs: &mut FieldErrors,
) -> Option<Quantity> {
    match Quantity::from_json(v) {
        Ok(q) => {
            if q.is_negative() {
                errs.invalid(field, Value::String(q.to_string()), "must be greater than or equal to 0");
            }
            if is_integer_resource(name) && q.milli_value() % 1000 != 0 {
                errs.invalid(field, Value::String(q.to_string()), "must be an integer");
            }
            Some(q)
        }
        Err(msg) => {
            errs.invalid(field, v.clone(), msg);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_and_numbers() {
        assert!(port_name("http").is_empty());
        assert!(port_name("web-8080").is_empty());
        assert!(!port_name("HTTP").is_empty());
        assert!(!port_name("8080").is_empty());
        assert!(!port_name("a--b").is_empty());
        assert!(!port_name("this-name-is-too-long").is_empty());
        assert!(port_num(80).is_empty());
        assert_eq!(port_num(70000), vec!["must be between 1 and 65535, inclusive".to_string()]);
    }

    #[test]
    fn ips_cidrs_and_keys() {
        assert!(parse_cidr("10.244.1.0/24").is_some());
        assert!(parse_cidr("2001:db8::/64").is_some());
        assert!(parse_cidr("10.244.1.0/33").is_none());
        assert!(parse_cidr("10.244.1.0").is_none());
        assert!(parse_ip("10.0.0.1").is_some());
        assert!(parse_ip("10.0.0.256").is_none());
        assert!(config_key("app.properties").is_empty());
        assert!(!config_key("bad key").is_empty());
        assert!(!config_key("..data").is_empty());
        assert!(env_var_name("MY_VAR").is_empty());
        assert!(!env_var_name("A=B").is_empty());
    }

    #[test]
    fn base64_round_trip_and_errors() {
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(base64_encode(b"hi!"), "aGkh");
        assert_eq!(base64_decode("aGVsbG8=").expect("valid"), b"hello");
        assert_eq!(base64_decode("aGkh").expect("valid"), b"hi!");
        assert_eq!(base64_decode("").expect("valid"), b"");
        assert_eq!(base64_decode("aGV*").unwrap_err(), "illegal base64 data at input byte 3");
        assert_eq!(base64_decode("aGVsbG8").unwrap_err(), "illegal base64 data at input byte 4");
    }
}
