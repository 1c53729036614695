//! Protobuf message bytes to Kubernetes JSON, driven by [`schema`](super::schema).
//!
//! Zero values: gogo-protobuf writes every non-pointer Go field, zero or not, while Kubernetes' JSON
//! leaves zero scalars out where the field is `omitempty`. So a zero scalar (`""`, `0`, `false`,
//! empty bytes, and an `IntOrString` of `0` or `""`) is dropped unless Go's JSON would print it:
//! - the field is a Go pointer ([`Field::pointer`]), so the zero was set on purpose
//!   (`replicas: 0`, `automountServiceAccountToken: false`, `storageClassName: ""`);
//! - the field is required ([`Field::required`], no `omitempty`), e.g. PodDisruptionBudget's
//!   `status.disruptionsAllowed: 0` or a container status's `ready: false`.
//!
//! Messages are kept even when empty (`"strategy": {}`, `"status": {}`), as Go's JSON keeps struct
//! fields; a zero `Time`/`MicroTime` (empty on the wire) and an empty `RawExtension`/`FieldsV1` are
//! `null` in Go's JSON and are dropped. Repeated elements and map entries are always kept. Unknown
//! field numbers are skipped, as gogo-protobuf skips them. With these rules the bodies kubectl
//! sends decode to exactly the JSON `kubectl create --dry-run=client -o json` prints.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Number, Value};

use super::schema::{self, Field, Kind, Message};
use super::wire::{Path, Reader, WireError, WireValue};
use super::{MAGIC, MAX_DEPTH, ProtobufError, wkt};

/// Decodes one message into a JSON object.
pub fn message(
    msg: &'static Message,
    buf: &[u8],
    path: &Path,
    depth: usize,
) -> Result<Map<String, Value>, ProtobufError> {
    let mut out = Map::new();
    message_into(msg, buf, path, depth, &mut out)?;
    Ok(out)
}

/// What has been read for one field so far.
enum Slot<'a> {
    Empty,
    /// A singular scalar: the last one read wins.
    Scalar(Value),
    /// A singular message: occurrences are merged, which for protobuf is decoding their concatenation.
    Chunks(Vec<&'a [u8]>),
    List(Vec<Value>),
    Map(Map<String, Value>),
}

fn message_into(
    msg: &'static Message,
    buf: &[u8],
    path: &Path,
    depth: usize,
    out: &mut Map<String, Value>,
) -> Result<(), ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep { at: path.render(), limit: MAX_DEPTH });
    }
    let mut slots: Vec<Slot> = msg.fields.iter().map(|_| Slot::Empty).collect();
    let mut reader = Reader::new(buf);
    while !reader.is_empty() {
        let (tag, value) = reader.field().map_err(|e| path.malformed(e))?;
        let Some(index) = msg.fields.iter().position(|f| f.tag == tag) else {
            continue;
        };
        let field = &msg.fields[index];
        let field_path = path.field(field.json);
        let slot = &mut slots[index];
        match field.kind {
            Kind::Map(value_kind) => {
                let entry = bytes_of(value, field, &field_path)?;
                let (key, value) = map_entry(value_kind, entry, &field_path, depth)?;
                match slot {
                    Slot::Map(map) => {
                        map.insert(key, value);
                    }
                    _ => *slot = Slot::Map(Map::from_iter([(key, value)])),
                }
            }
            kind if field.repeated => {
                if !matches!(slot, Slot::List(_)) {
                    *slot = Slot::List(Vec::new());
                }
                if let Slot::List(list) = slot {
                    push_repeated(kind, field, value, &field_path, depth, list)?;
                }
            }
            kind if is_scalar(kind) => *slot = Slot::Scalar(scalar(kind, value, &field_path)?),
            _ => {
                let bytes = bytes_of(value, field, &field_path)?;
                match slot {
                    Slot::Chunks(chunks) => chunks.push(bytes),
                    _ => *slot = Slot::Chunks(vec![bytes]),
                }
            }
        }
    }

    for (field, slot) in msg.fields.iter().zip(slots) {
        let field_path = path.field(field.json);
        match slot {
            Slot::Empty => {}
            Slot::Scalar(value) => {
                if keeps_zero(field) || !is_zero(&value) {
                    out.insert(field.json.into(), value);
                }
            }
            Slot::List(values) => {
                out.insert(field.json.into(), Value::Array(values));
            }
            Slot::Map(map) => {
                out.insert(field.json.into(), Value::Object(map));
            }
            Slot::Chunks(chunks) => {
                let joined;
                let bytes: &[u8] = if chunks.len() == 1 {
                    chunks[0]
                } else {
                    joined = chunks.concat();
                    &joined
                };
                if field.inline {
                    let Kind::Msg(index) = field.kind else {
                        return Err(field_path.invalid("embedded field is not a message"));
                    };
                    message_into(schema::message_by_index(index), bytes, path, depth + 1, out)?;
                    continue;
                }
                let Some(value) = message_value(field.kind, bytes, &field_path, depth + 1)? else {
                    continue;
                };
                if field.kind == Kind::IntOrString && !keeps_zero(field) && is_zero(&value) {
                    continue;
                }
                out.insert(field.json.into(), value);
            }
        }
    }
    Ok(())
}

fn push_repeated(
    kind: Kind,
    field: &Field,
    value: WireValue,
    path: &Path,
    depth: usize,
    list: &mut Vec<Value>,
) -> Result<(), ProtobufError> {
    match (kind, value) {
        // Packed scalars: one length-delimited run of values.
        (Kind::Bool | Kind::I32 | Kind::I64 | Kind::F64, WireValue::Bytes(run)) => {
            let mut reader = Reader::new(run);
            while !reader.is_empty() {
                let value = if kind == Kind::F64 {
                    WireValue::Fixed64(reader.fixed64().map_err(|e| path.malformed(e))?)
                } else {
                    WireValue::Varint(reader.varint().map_err(|e| path.malformed(e))?)
                };
                list.push(scalar(kind, value, &path.index(list.len()))?);
            }
        }
        (kind, value) if is_scalar(kind) => list.push(scalar(kind, value, &path.index(list.len()))?),
        (kind, value) => {
            let bytes = bytes_of(value, field, path)?;
            let element = message_value(kind, bytes, &path.index(list.len()), depth + 1)?;
            list.push(element.unwrap_or(Value::Null));
        }
    }
    Ok(())
}

/// Whether Go's JSON would print this field when it is zero: a pointer that is set, or a field
/// without `omitempty` (required in the OpenAPI schema).
fn keeps_zero(field: &Field) -> bool {
    field.pointer || field.required
}

fn is_scalar(kind: Kind) -> bool {
    matches!(kind, Kind::Str | Kind::Bytes | Kind::Bool | Kind::I32 | Kind::I64 | Kind::F64)
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "string",
        Kind::Bytes => "bytes",
        Kind::Bool => "bool",
        Kind::I32 => "int32",
        Kind::I64 => "int64",
        Kind::F64 => "double",
        Kind::Map(_) => "map",
        _ => "message",
    }
}

fn wrong_wire_type(kind: Kind, value: WireValue, path: &Path) -> ProtobufError {
    ProtobufError::WireType { at: path.render(), wire_type: value.wire_type(), expected: kind_name(kind) }
}

fn bytes_of<'a>(value: WireValue<'a>, field: &Field, path: &Path) -> Result<&'a [u8], ProtobufError> {
    match value {
        WireValue::Bytes(bytes) => Ok(bytes),
        other => Err(wrong_wire_type(field.kind, other, path)),
    }
}

fn scalar(kind: Kind, value: WireValue, path: &Path) -> Result<Value, ProtobufError> {
    Ok(match (kind, value) {
        (Kind::Str, WireValue::Bytes(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
        (Kind::Bytes, WireValue::Bytes(b)) => Value::String(BASE64.encode(b)),
        (Kind::Bool, WireValue::Varint(v)) => Value::Bool(v != 0),
        // Go's int32 fields take the low 32 bits of the (sign-extended) varint.
        (Kind::I32, WireValue::Varint(v)) => Value::from(v as i32),
        (Kind::I64, WireValue::Varint(v)) => Value::from(v as i64),
        (Kind::F64, WireValue::Fixed64(v)) => {
            Value::Number(Number::from_f64(f64::from_bits(v)).ok_or_else(|| path.invalid("not a finite number"))?)
        }
        (_, value) => return Err(wrong_wire_type(kind, value, path)),
    })
}

/// One `map<string, V>` entry: {key = 1, value = 2}; a missing value is V's zero value.
fn map_entry(kind: &'static Kind, entry: &[u8], path: &Path, depth: usize) -> Result<(String, Value), ProtobufError> {
    let (mut key, mut value) = (String::new(), None);
    let mut reader = Reader::new(entry);
    while !reader.is_empty() {
        match reader.field().map_err(|e| path.malformed(e))? {
            (1, WireValue::Bytes(b)) => key = String::from_utf8_lossy(b).into_owned(),
            (1, other) => return Err(wrong_wire_type(Kind::Str, other, path)),
            (2, wire) => value = Some(wire),
            _ => {}
        }
    }
    let entry_path = path.key(&key);
    let kind = *kind;
    let value = match value {
        Some(wire) if is_scalar(kind) => scalar(kind, wire, &entry_path)?,
        Some(WireValue::Bytes(bytes)) => message_value(kind, bytes, &entry_path, depth + 1)?.unwrap_or(Value::Null),
        Some(other) => return Err(wrong_wire_type(kind, other, &entry_path)),
        None if is_scalar(kind) => match kind {
            Kind::Bool => Value::Bool(false),
            Kind::I32 | Kind::I64 => Value::from(0),
            Kind::F64 => Value::from(0.0),
            _ => Value::String(String::new()),
        },
        None => message_value(kind, &[], &entry_path, depth + 1)?.unwrap_or(Value::Null),
    };
    Ok((key, value))
}

/// Reads the fields of a small well-known message.
fn small_message<'a>(bytes: &'a [u8], path: &Path) -> Result<Vec<(u32, WireValue<'a>)>, ProtobufError> {
    let mut reader = Reader::new(bytes);
    let mut fields = Vec::new();
    while !reader.is_empty() {
        fields.push(reader.field().map_err(|e| path.malformed(e))?);
    }
    Ok(fields)
}

fn varint_field(fields: &[(u32, WireValue)], tag: u32, path: &Path) -> Result<u64, ProtobufError> {
    let mut out = 0;
    for (_, value) in fields.iter().filter(|(t, _)| *t == tag) {
        match value {
            WireValue::Varint(v) => out = *v,
            other => {
                return Err(ProtobufError::WireType {
                    at: path.render(),
                    wire_type: other.wire_type(),
                    expected: "varint",
                });
            }
        }
    }
    Ok(out)
}

fn bytes_field<'a>(fields: &[(u32, WireValue<'a>)], tag: u32, path: &Path) -> Result<Option<&'a [u8]>, ProtobufError> {
    let mut out = None;
    for (_, value) in fields.iter().filter(|(t, _)| *t == tag) {
        match value {
            WireValue::Bytes(b) => out = Some(*b),
            other => {
                return Err(ProtobufError::WireType {
                    at: path.render(),
                    wire_type: other.wire_type(),
                    expected: "bytes",
                });
            }
        }
    }
    Ok(out)
}

fn embedded_json(raw: &[u8], path: &Path) -> Result<Value, ProtobufError> {
    serde_json::from_slice(raw).map_err(|e| path.invalid(format!("embedded JSON: {e}")))
}

/// A message-valued kind as JSON; `None` where Go's JSON would write `null`.
fn message_value(kind: Kind, bytes: &[u8], path: &Path, depth: usize) -> Result<Option<Value>, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep { at: path.render(), limit: MAX_DEPTH });
    }
    Ok(Some(match kind {
        Kind::Msg(index) => Value::Object(message(schema::message_by_index(index), bytes, path, depth)?),
        Kind::Time | Kind::MicroTime => {
            if bytes.is_empty() {
                return Ok(None); // Go's zero time
            }
            let fields = small_message(bytes, path)?;
            let seconds = varint_field(&fields, 1, path)? as i64;
            let nanos = varint_field(&fields, 2, path)? as i32;
            let text = wkt::format_time(seconds, nanos, kind == Kind::MicroTime)
                .ok_or_else(|| path.invalid(format!("time out of range ({seconds}s {nanos}ns)")))?;
            Value::String(text)
        }
        Kind::Duration => {
            let fields = small_message(bytes, path)?;
            Value::String(wkt::format_duration(varint_field(&fields, 1, path)? as i64))
        }
        Kind::Quantity => {
            let fields = small_message(bytes, path)?;
            match bytes_field(&fields, 1, path)? {
                Some(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
                None => Value::String("0".into()),
            }
        }
        Kind::IntOrString => {
            let fields = small_message(bytes, path)?;
            if varint_field(&fields, 1, path)? == 1 {
                let text = bytes_field(&fields, 3, path)?.unwrap_or_default();
                Value::String(String::from_utf8_lossy(text).into_owned())
            } else {
                Value::from(varint_field(&fields, 2, path)? as i32)
            }
        }
        Kind::FieldsV1 => {
            let fields = small_message(bytes, path)?;
            match bytes_field(&fields, 1, path)? {
                Some(raw) if !raw.is_empty() => embedded_json(raw, path)?,
                _ => return Ok(None),
            }
        }
        Kind::RawExt => {
            let fields = small_message(bytes, path)?;
            match bytes_field(&fields, 1, path)? {
                Some(raw) if raw.starts_with(MAGIC) => super::decode_at(raw, depth + 1)?.object,
                Some(raw) if !raw.is_empty() => embedded_json(raw, path)?,
                _ => return Ok(None),
            }
        }
        Kind::StrList => {
            let mut items = Vec::new();
            for (tag, value) in small_message(bytes, path)? {
                match (tag, value) {
                    (1, WireValue::Bytes(b)) => items.push(Value::String(String::from_utf8_lossy(b).into_owned())),
                    (1, other) => return Err(wrong_wire_type(Kind::Str, other, path)),
                    _ => {}
                }
            }
            Value::Array(items)
        }
        Kind::Str | Kind::Bytes | Kind::Bool | Kind::I32 | Kind::I64 | Kind::F64 | Kind::Map(_) => {
            return Err(path.malformed(WireError::WireType(2)));
        }
    }))
}
