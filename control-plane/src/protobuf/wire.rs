//! Protobuf wire format: reading fields off a buffer and writing them, plus the error path
//! (`Deployment.spec.template.spec.containers[0].image`) carried through decode and encode.

use std::fmt::Write as _;

use super::ProtobufError;

/// Why a buffer is not valid protobuf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated varint")]
    TruncatedVarint,
    #[error("varint longer than 10 bytes")]
    VarintOverflow,
    #[error("truncated fixed-width value")]
    TruncatedFixed,
    #[error("length {len} runs past the end ({left} bytes left)")]
    LengthPastEnd { len: u64, left: usize },
    #[error("invalid field number {0}")]
    FieldNumber(u64),
    #[error("unsupported wire type {0}")]
    WireType(u8),
}

/// One field as read off the wire.
#[derive(Debug, Clone, Copy)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    /// A 4-byte value; no Kubernetes field uses one, so only its presence is kept.
    Fixed32,
    Bytes(&'a [u8]),
}

impl WireValue<'_> {
    pub fn wire_type(&self) -> u8 {
        match self {
            WireValue::Varint(_) => 0,
            WireValue::Fixed64(_) => 1,
            WireValue::Bytes(_) => 2,
            WireValue::Fixed32 => 5,
        }
    }
}

/// Reads fields from one message's bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, byte) in self.buf.iter().enumerate() {
            if i == 10 {
                return Err(WireError::VarintOverflow);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        if self.buf.len() >= 10 { Err(WireError::VarintOverflow) } else { Err(WireError::TruncatedVarint) }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub fn fixed64(&mut self) -> Result<u64, WireError> {
        let bytes = self.take(8).ok_or(WireError::TruncatedFixed)?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| WireError::TruncatedFixed)?))
    }

    fn length_delimited(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        let left = self.buf.len();
        usize::try_from(len).ok().and_then(|n| self.take(n)).ok_or(WireError::LengthPastEnd { len, left })
    }

    /// The next field: its number and value. Groups (wire types 3 and 4) are refused.
    pub fn field(&mut self) -> Result<(u32, WireValue<'a>), WireError> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).ok().filter(|&t| t != 0).ok_or(WireError::FieldNumber(key >> 3))?;
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => WireValue::Fixed64(self.fixed64()?),
            2 => WireValue::Bytes(self.length_delimited()?),
            5 => {
                self.take(4).ok_or(WireError::TruncatedFixed)?;
                WireValue::Fixed32
            }
            other => return Err(WireError::WireType(other as u8)),
        };
        Ok((tag, value))
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub fn put_key(out: &mut Vec<u8>, tag: u32, wire_type: u8) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(wire_type));
}

pub fn put_bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_key(out, tag, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A signed integer as Go writes int32 and int64: two's complement, negative values in 10 bytes.
pub fn put_int(out: &mut Vec<u8>, tag: u32, value: i64) {
    put_key(out, tag, 0);
    put_varint(out, value as u64);
}

/// Where in the object a value sits, for error messages; rendered only when an error is built.
#[derive(Clone, Copy)]
pub struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: Segment<'a>,
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    Root(&'a str),
    Field(&'a str),
    Index(usize),
    Key(&'a str),
}

impl<'a> Path<'a> {
    pub fn root(name: &'a str) -> Self {
        Path { parent: None, segment: Segment::Root(name) }
    }

    pub fn field(&'a self, name: &'a str) -> Path<'a> {
        Path { parent: Some(self), segment: Segment::Field(name) }
    }

    pub fn index(&'a self, index: usize) -> Path<'a> {
        Path { parent: Some(self), segment: Segment::Index(index) }
    }

    pub fn key(&'a self, key: &'a str) -> Path<'a> {
        Path { parent: Some(self), segment: Segment::Key(key) }
    }

    pub fn render(&self) -> String {
        let mut segments = vec![self.segment];
        let mut next = self.parent;
        while let Some(path) = next {
            segments.push(path.segment);
            next = path.parent;
        }
        let mut out = String::new();
        for segment in segments.iter().rev() {
            let _ = match segment {
                Segment::Root(name) => write!(out, "{name}"),
                Segment::Field(name) => write!(out, ".{name}"),
                Segment::Index(i) => write!(out, "[{i}]"),
                Segment::Key(key) => write!(out, "[{key:?}]"),
            };
        }
        out
    }

    pub fn malformed(&self, problem: WireError) -> ProtobufError {
        ProtobufError::Malformed { at: self.render(), problem }
    }

    pub fn invalid(&self, reason: impl Into<String>) -> ProtobufError {
        ProtobufError::InvalidValue { at: self.render(), reason: reason.into() }
    }
}
