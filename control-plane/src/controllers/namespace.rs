//! The namespace controller (not written yet).

use futures::future::BoxFuture;

use super::{Action, Controller, Ctx, Watch};
use crate::server::errors::ApiError;

pub const NAME: &str = "namespace";

pub struct NamespaceController;

impl Controller for NamespaceController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<Watch> {
        Vec::new()
    }

    fn reconcile<'a>(&'a self, _ctx: &'a Ctx, _key: &'a str) -> BoxFuture<'a, Result<Action, ApiError>> {
        Box::pin(async { Ok(Action::Done) })
    }
}
