//! Patches: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes' strategic merge patch.
//!
//! This module owns the three PATCH body formats kube-apiserver accepts besides server-side apply:
//!
//! | content type                              | function                   |
//! |-------------------------------------------|----------------------------|
//! | `application/json-patch+json`             | [`json_patch`]             |
//! | `application/merge-patch+json`            | [`merge_patch`]            |
//! | `application/strategic-merge-patch+json`  | [`strategic_merge_patch`]  |
//!
//! Everything here is a pure function over [`serde_json::Value`]: no I/O, no API types. The PATCH handler
//! decodes the stored object to JSON, calls one of these, then decodes, defaults and validates the result.
//! Strategic merge patch needs to know each field's patch strategy and merge key; callers describe the
//! Kubernetes types through the [`Schema`] trait (fed from the OpenAPI `x-kubernetes-patch-strategy` and
//! `x-kubernetes-patch-merge-key` extensions).
//!
//! Errors map to API status codes with [`PatchError::status_code`]: a malformed patch document is
//! 400 BadRequest, a patch that is well formed but cannot be applied to this object (a failed `test`, a
//! missing path, a list whose elements lack their merge key) is 422 Unprocessable Entity, as in
//! kube-apiserver.

mod rfc6902;
mod rfc7386;
mod strategic;

use serde_json::Value;

pub use rfc6902::{MAX_JSON_PATCH_OPERATIONS, json_patch};
pub use rfc7386::merge_patch;
pub use strategic::{FieldInfo, Schema, strategic_merge_patch};

/// Why a patch could not be applied.
///
/// Which HTTP status each variant means is given by [`PatchError::status_code`]; the variants that are the
/// client's malformed input (400) answer `true` to [`PatchError::is_invalid_input`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not of the required shape: a JSON patch that is not an array of objects, a
    /// strategic merge patch that is not an object, a malformed directive. 400 BadRequest.
    #[error("invalid patch: {reason}")]
    InvalidPatch {
        /// What is wrong with the document.
        reason: String,
    },
    /// A JSON patch has more operations than kube-apiserver accepts. 413 RequestEntityTooLarge.
    #[error("the JSON patch has {count} operations, more than the {max} allowed")]
    TooManyOperations {
        /// Number of operations in the patch.
        count: usize,
        /// The limit, [`MAX_JSON_PATCH_OPERATIONS`].
        max: usize,
    },
    /// JSON patch operation number `index` (from 0) is malformed: unknown `op`, a missing member, a JSON
    /// pointer with bad syntax, a `move` into its own child. kube-apiserver finds these while applying the
    /// patch and answers 422.
    #[error("JSON patch operation {index}: {reason}")]
    InvalidOperation {
        /// Index of the operation in the patch.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// JSON patch operation number `index` names a location that does not exist in the document. 422.
    #[error("JSON patch operation {index}: path {path:?} does not exist")]
    PathNotFound {
        /// Index of the operation in the patch.
        index: usize,
        /// The JSON pointer that was not found.
        path: String,
    },
    /// JSON patch `test` operation number `index` did not match. 422.
    #[error("JSON patch operation {index}: test failed: the value at {path:?} is not the expected one")]
    TestFailed {
        /// Index of the operation in the patch.
        index: usize,
        /// The JSON pointer that was tested.
        path: String,
    },
    /// A well-formed strategic merge patch cannot be applied to this document (lists of lists, list
    /// elements of differing types, stored list elements without their merge key). 422.
    #[error("cannot apply the patch: {reason}")]
    Unprocessable {
        /// Why.
        reason: String,
    },
}

impl PatchError {
    /// The HTTP status kube-apiserver answers with for this error.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::InvalidPatch { .. } => 400,
            PatchError::TooManyOperations { .. } => 413,
            PatchError::InvalidOperation { .. }
            | PatchError::PathNotFound { .. }
            | PatchError::TestFailed { .. }
            | PatchError::Unprocessable { .. } => 422,
        }
    }

    /// True when the patch document itself is malformed (400 BadRequest); false when it is well formed
    /// but does not apply to this object (422) or is too large (413).
    pub fn is_invalid_input(&self) -> bool {
        self.status_code() == 400
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        PatchError::InvalidPatch { reason: reason.into() }
    }

    pub(crate) fn unprocessable(reason: impl Into<String>) -> Self {
        PatchError::Unprocessable { reason: reason.into() }
    }
}

/// JSON equality as RFC 6902 section 4.6 defines it: numbers compare by value (`1` equals `1.0`),
/// objects regardless of member order, arrays element by element.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_eq_compares_numbers_by_value_and_objects_without_order() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(!json_eq(&json!(1), &json!("1")));
        assert!(json_eq(&json!({"a": 1, "b": [1, 2]}), &json!({"b": [1.0, 2], "a": 1})));
        assert!(!json_eq(&json!([1, 2]), &json!([2, 1])));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": null})));
    }

    #[test]
    fn status_codes_follow_kube_apiserver() {
        assert_eq!(PatchError::invalid("x").status_code(), 400);
        assert!(PatchError::invalid("x").is_invalid_input());
        assert_eq!(PatchError::TestFailed { index: 0, path: "/a".into() }.status_code(), 422);
        assert_eq!(PatchError::PathNotFound { index: 0, path: "/a".into() }.status_code(), 422);
        assert!(!PatchError::unprocessable("x").is_invalid_input());
        assert_eq!(PatchError::TooManyOperations { count: 2, max: 1 }.status_code(), 413);
    }
}
