//! The in-process client that controllers and the scheduler use: the same defaulting,
//! validation, admission and storage path as HTTP requests, without HTTP.

use std::sync::Arc;

use serde_json::Value;

use super::Api;
use super::errors::{ApiError, ApiResult};
use super::object;
use super::rest::{self, DeleteOptions, Part};
use crate::registry::Resource;
use crate::storage::RangeRequest;

/// How a patch document is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
        }
    }
}

/// Options of a delete.
#[derive(Clone, Debug, Default)]
pub struct DeleteParams {
    pub grace_period_seconds: Option<i64>,
    /// `Background`, `Foreground` or `Orphan`.
    pub propagation: Option<String>,
    /// Delete only if the object still has this uid.
    pub uid: Option<String>,
}

#[derive(Clone)]
pub struct Client {
    api: Arc<Api>,
}

impl Client {
    pub fn new(api: Arc<Api>) -> Client {
        Client { api }
    }

    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    pub async fn get(&self, res: &Resource, namespace: &str, name: &str) -> ApiResult<Value> {
        rest::read(&self.api, res, namespace, name).await.map(|(v, _)| Arc::unwrap_or_clone(v))
    }

    /// Every object of `res` in `namespace` (all namespaces when empty), and the list's revision.
    pub async fn list(&self, res: &Resource, namespace: &str) -> ApiResult<(Vec<Value>, i64)> {
        let resp = self
            .api
            .store
            .range(RangeRequest::prefix(&res.prefix(namespace)))
            .await
            .map_err(|e| ApiError::from_store(e, res, ""))?;
        let items = resp.kvs.iter().map(object::decode).collect::<ApiResult<Vec<_>>>()?;
        Ok((items, resp.revision))
    }

    pub async fn create(&self, res: &Resource, namespace: &str, obj: Value) -> ApiResult<Value> {
        rest::create_object(&self.api, res, namespace, obj, false).await.map(|stored| Arc::unwrap_or_clone(stored.obj))
    }

    /// Replaces the object (not its status). When `obj` carries a resourceVersion, the write
    /// fails with 409 if the object changed since.
    pub async fn update(&self, res: &Resource, namespace: &str, obj: Value) -> ApiResult<Value> {
        self.replace(res, namespace, obj, Part::Main).await
    }

    /// Replaces the object's status only.
    pub async fn update_status(&self, res: &Resource, namespace: &str, obj: Value) -> ApiResult<Value> {
        self.replace(res, namespace, obj, Part::Status).await
    }

    async fn replace(&self, res: &Resource, namespace: &str, obj: Value, part: Part) -> ApiResult<Value> {
        let name = object::name_of(&obj).to_string();
        let precondition = match object::meta_str(&obj, "resourceVersion") {
            None | Some("") => None,
            Some(rv) => {
                Some(rv.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?)
            }
        };
        rest::guaranteed_update(&self.api, res, namespace, &name, part, false, |_| Ok((obj.clone(), precondition)))
            .await
            .map(|stored| Arc::unwrap_or_clone(stored.obj))
    }

    /// Patches the object, or its status with `status`.
    pub async fn patch(
        &self,
        res: &Resource,
        namespace: &str,
        name: &str,
        kind: PatchType,
        patch: &Value,
        status: bool,
    ) -> ApiResult<Value> {
        let part = if status { Part::Status } else { Part::Main };
        rest::guaranteed_update(&self.api, res, namespace, name, part, false, |cur| {
            Ok((rest::apply_patch(res, kind.content_type(), cur, patch)?, None))
        })
        .await
        .map(|stored| Arc::unwrap_or_clone(stored.obj))
    }

    pub async fn delete(&self, res: &Resource, namespace: &str, name: &str, params: &DeleteParams) -> ApiResult<Value> {
        let opts = DeleteOptions {
            grace: params.grace_period_seconds,
            propagation: params.propagation.clone(),
            uid: params.uid.clone(),
            ..Default::default()
        };
        rest::delete_object(&self.api, res, namespace, name, &opts).await
    }

    /// Writes a namespace's `spec.finalizers` through the `finalize` subresource: `mutate` gets the
    /// current namespace and returns it with the finalizers it should have. A terminating namespace
    /// left without finalizers is deleted.
    pub async fn finalize_namespace(&self, name: &str, mut mutate: impl FnMut(&Value) -> Value) -> ApiResult<Value> {
        let res = &crate::registry::namespaces::RESOURCE;
        rest::finalize_namespace(&self.api, res, name, |cur| Ok((mutate(cur), None))).await
    }

    /// Binds a pod to a node (the `binding` subresource).
    pub async fn bind(&self, res: &Resource, namespace: &str, pod: &str, node: &str) -> ApiResult<Value> {
        rest::bind_pod(&self.api, res, namespace, pod, node, false).await
    }
}
