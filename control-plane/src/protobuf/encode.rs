//! Kubernetes JSON to protobuf message bytes, driven by [`schema`](super::schema).
//!
//! Fields are written in schema order; absent and `null` values are left out; map entries are
//! sorted by key and repeated scalars are unpacked, as gogo-protobuf writes them. JSON members the
//! schema does not know are ignored (as Go's JSON decoder ignores them).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use super::schema::{self, Field, Kind, Message};
use super::wire::{Path, put_bytes, put_int, put_key, put_varint};
use super::{MAX_DEPTH, ProtobufError, wkt};

/// Encodes a JSON object as `msg`, appending to `out`.
pub fn message(
    msg: &'static Message,
    object: &Map<String, Value>,
    path: &Path,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep { at: path.render(), limit: MAX_DEPTH });
    }
    for field in msg.fields {
        if field.inline {
            // A Go embedded struct: its fields live in this JSON object.
            let Kind::Msg(index) = field.kind else {
                return Err(path.invalid("embedded field is not a message"));
            };
            let mut body = Vec::new();
            message(schema::message_by_index(index), object, path, depth + 1, &mut body)?;
            put_bytes(out, field.tag, &body);
            continue;
        }
        let Some(value) = object.get(field.json).filter(|v| !v.is_null()) else {
            continue;
        };
        let path = path.field(field.json);
        if let Kind::Map(value_kind) = field.kind {
            map(field, *value_kind, value, &path, depth, out)?;
        } else if field.repeated {
            let items = value.as_array().ok_or_else(|| type_error(&path, "an array", value))?;
            for (i, item) in items.iter().enumerate() {
                let path = path.index(i);
                if item.is_null() && !is_scalar(field.kind) {
                    put_bytes(out, field.tag, &[]);
                } else {
                    single(field.kind, field.tag, item, &path, depth, out)?;
                }
            }
        } else {
            single(field.kind, field.tag, value, &path, depth, out)?;
        }
    }
    Ok(())
}

fn map(
    field: &Field,
    kind: Kind,
    value: &Value,
    path: &Path,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), ProtobufError> {
    let object = value.as_object().ok_or_else(|| type_error(path, "an object", value))?;
    let mut entries: Vec<(&String, &Value)> = object.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (key, value) in entries {
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, key.as_bytes());
        if !value.is_null() {
            single(kind, 2, value, &path.key(key), depth, &mut entry)?;
        }
        put_bytes(out, field.tag, &entry);
    }
    Ok(())
}

fn is_scalar(kind: Kind) -> bool {
    matches!(kind, Kind::Str | Kind::Bytes | Kind::Bool | Kind::I32 | Kind::I64 | Kind::F64)
}

fn type_error(path: &Path, expected: &'static str, found: &Value) -> ProtobufError {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ProtobufError::JsonType { at: path.render(), expected, found }
}

fn string<'v>(value: &'v Value, path: &Path) -> Result<&'v str, ProtobufError> {
    value.as_str().ok_or_else(|| type_error(path, "a string", value))
}

fn integer(value: &Value, path: &Path) -> Result<i64, ProtobufError> {
    if let Some(n) = value.as_i64() {
        return Ok(n);
    }
    match value.as_f64() {
        Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => Ok(f as i64),
        Some(_) => Err(path.invalid(format!("{value} is not a 64-bit integer"))),
        None => Err(type_error(path, "an integer", value)),
    }
}

/// One value of a field (a whole singular field, or one element of a repeated one).
fn single(
    kind: Kind,
    tag: u32,
    value: &Value,
    path: &Path,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), ProtobufError> {
    match kind {
        Kind::Str => put_bytes(out, tag, string(value, path)?.as_bytes()),
        Kind::Bytes => {
            let bytes = BASE64.decode(string(value, path)?).map_err(|e| path.invalid(format!("base64: {e}")))?;
            put_bytes(out, tag, &bytes);
        }
        Kind::Bool => {
            let b = value.as_bool().ok_or_else(|| type_error(path, "a boolean", value))?;
            put_key(out, tag, 0);
            put_varint(out, u64::from(b));
        }
        Kind::I32 => {
            let n = integer(value, path)?;
            let n = i32::try_from(n).map_err(|_| path.invalid(format!("{n} does not fit in 32 bits")))?;
            put_int(out, tag, n.into());
        }
        Kind::I64 => put_int(out, tag, integer(value, path)?),
        Kind::F64 => {
            let f = value.as_f64().ok_or_else(|| type_error(path, "a number", value))?;
            put_key(out, tag, 1);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        _ => {
            let mut body = Vec::new();
            message_body(kind, value, path, depth + 1, &mut body)?;
            put_bytes(out, tag, &body);
        }
    }
    Ok(())
}

/// The bytes of a message-valued kind.
fn message_body(kind: Kind, value: &Value, path: &Path, depth: usize, out: &mut Vec<u8>) -> Result<(), ProtobufError> {
    match kind {
        Kind::Msg(index) => {
            let object = value.as_object().ok_or_else(|| type_error(path, "an object", value))?;
            message(schema::message_by_index(index), object, path, depth, out)?;
        }
        Kind::Time | Kind::MicroTime => {
            let text = string(value, path)?;
            let (seconds, nanos) =
                wkt::parse_time(text).ok_or_else(|| path.invalid(format!("{text:?} is not RFC 3339")))?;
            // Time keeps whole seconds only (Kubernetes' JSON has no more); MicroTime microseconds.
            let nanos = if kind == Kind::MicroTime { nanos / 1000 * 1000 } else { 0 };
            put_int(out, 1, seconds);
            put_int(out, 2, nanos.into());
        }
        Kind::Duration => {
            let text = string(value, path)?;
            let nanos =
                wkt::parse_duration(text).ok_or_else(|| path.invalid(format!("{text:?} is not a Go duration")))?;
            put_int(out, 1, nanos);
        }
        Kind::Quantity => match value {
            Value::String(s) => put_bytes(out, 1, s.as_bytes()),
            Value::Number(n) => put_bytes(out, 1, n.to_string().as_bytes()),
            other => return Err(type_error(path, "a quantity string", other)),
        },
        Kind::IntOrString => match value {
            Value::String(s) => {
                put_int(out, 1, 1);
                put_int(out, 2, 0);
                put_bytes(out, 3, s.as_bytes());
            }
            Value::Number(_) => {
                let n = integer(value, path)?;
                let n = i32::try_from(n).map_err(|_| path.invalid(format!("{n} does not fit in 32 bits")))?;
                put_int(out, 1, 0);
                put_int(out, 2, n.into());
                put_bytes(out, 3, b"");
            }
            other => return Err(type_error(path, "a number or a string", other)),
        },
        Kind::RawExt | Kind::FieldsV1 => {
            let raw = serde_json::to_vec(value).map_err(|e| path.invalid(e.to_string()))?;
            put_bytes(out, 1, &raw);
        }
        Kind::StrList => {
            let items = value.as_array().ok_or_else(|| type_error(path, "an array", value))?;
            for (i, item) in items.iter().enumerate() {
                put_bytes(out, 1, string(item, &path.index(i))?.as_bytes());
            }
        }
        Kind::Str | Kind::Bytes | Kind::Bool | Kind::I32 | Kind::I64 | Kind::F64 | Kind::Map(_) => {
            return Err(path.invalid("internal: scalar kind encoded as a message"));
        }
    }
    Ok(())
}
