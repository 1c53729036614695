//! The scheduler's loop: unbound pods from the informer, decisions from `scheduler`, bindings and
//! events through the in-process client. Runs on the leader only.

use crate::controllers::Ctx;

/// Schedules pods until `ctx.cancel` fires.
pub async fn run(ctx: Ctx) {
    ctx.cancel.cancelled().await;
}
