//! Field validation of request bodies (`fieldValidation=Strict|Warn|Ignore`): unknown fields are
//! dropped, as kube-apiserver's decoder drops them, and are an error with Strict (what kubectl
//! sends by default).

use serde_json::Value;

use super::Call;
use super::errors::{ApiError, ApiResult};
use crate::registry::Resource;

/// Drops unknown fields from `obj`; with strict field validation they are a 400 instead.
pub fn check_unknown(res: &Resource, obj: &mut Value, call: &Call) -> ApiResult<()> {
    let strict = match call.query.get("fieldValidation").map(String::as_str) {
        Some("Strict") => true,
        None | Some("") | Some("Ignore") | Some("Warn") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", got {other:?}"
            )));
        }
    };
    let unknown = crate::typeinfo::prune_unknown(&res.proto_message(), obj);
    if unknown.is_empty() || !strict {
        return Ok(());
    }
    let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    Err(ApiError::bad_request(format!("strict decoding error: {}", list.join(", "))))
}
