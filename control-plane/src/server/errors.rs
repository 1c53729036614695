//! API errors and their `Status` form, worded as kube-apiserver words them.

use serde_json::{Value, json};

use crate::registry::Resource;
use crate::storage::StoreError;
use crate::validation::FieldErrors;

/// An error answered to the client as a `meta.k8s.io/v1` `Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

fn details(res: &Resource, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": res.plural});
    if !res.group.is_empty() {
        d["group"] = json!(res.group);
    }
    d
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }
    pub fn not_found_path() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }
    pub fn not_found(res: &Resource, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", res.qualified()),
            details: Some(details(res, name)),
        }
    }
    pub fn already_exists(res: &Resource, name: &str) -> Self {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{name}\" already exists", res.qualified()),
            details: Some(details(res, name)),
        }
    }
    pub fn conflict(res: &Resource, name: &str) -> Self {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                res.qualified()
            ),
            details: Some(details(res, name)),
        }
    }
    pub fn invalid(res: &Resource, name: &str, errs: &FieldErrors) -> Self {
        let list: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        let joined = if list.len() == 1 { list[0].clone() } else { format!("[{}]", list.join(", ")) };
        let causes: Vec<Value> = errs
            .0
            .iter()
            .map(|e| {
                let msg = e.to_string();
                let msg = msg.strip_prefix(&format!("{}: ", e.field)).unwrap_or(&msg).to_string();
                json!({"reason": e.kind.reason(), "message": msg, "field": e.field})
            })
            .collect();
        let mut d = json!({"name": name, "kind": res.kind, "causes": causes});
        if !res.group.is_empty() {
            d["group"] = json!(res.group);
        }
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{name}\" is invalid: {joined}", res.qualified_kind()),
            details: Some(d),
        }
    }
    pub fn method_not_allowed() -> Self {
        Self::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    }
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct:?})"
            ),
        )
    }
    pub fn too_large() -> Self {
        Self::new(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
    }
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// Maps a storage error for an object of `res` named `name`.
    pub fn from_store(err: StoreError, res: &Resource, name: &str) -> Self {
        match err {
            StoreError::AlreadyExists { .. } => Self::already_exists(res, name),
            StoreError::NotFound { .. } => Self::not_found(res, name),
            StoreError::Conflict { .. } => Self::conflict(res, name),
            StoreError::Compacted { requested, compacted } => {
                Self::gone(format!("too old resource version: {requested} ({compacted})"))
            }
            StoreError::FutureRevision { requested, current } => {
                ApiError::new(504, "Timeout", format!("Too large resource version: {requested}, current: {current}"))
            }
            StoreError::Backend(e) => Self::internal(e),
        }
    }

    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
