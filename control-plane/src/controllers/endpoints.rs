//! The endpoints controller (not written yet).

use futures::future::BoxFuture;

use super::{Action, Controller, Ctx, Watch};
use crate::server::errors::ApiError;

pub const NAME: &str = "endpoints";

pub struct EndpointsController;

impl Controller for EndpointsController {
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
