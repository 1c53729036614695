//! Field validation of request bodies (`fieldValidation=Strict|Warn|Ignore`): unknown fields are
//! an error with Strict (what kubectl sends by default) and ignored otherwise.

use serde_json::Value;

use super::Call;
use super::errors::{ApiError, ApiResult};
use crate::registry::Resource;

/// Rejects unknown fields when the client asked for strict field validation.
pub fn check_unknown(res: &Resource, obj: &Value, call: &Call) -> ApiResult<()> {
    match call.query.get("fieldValidation").map(String::as_str) {
        Some("Strict") => {}
        None | Some("") | Some("Ignore") | Some("Warn") => return Ok(()),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", got {other:?}"
            )));
        }
    }
    let unknown = crate::typeinfo::unknown_fields(&res.proto_message(), obj);
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    Err(ApiError::bad_request(format!("strict decoding error: {}", list.join(", "))))
}
