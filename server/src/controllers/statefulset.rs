//! Not yet built.

use super::{Context, Workers};

/// Registers this controller's hooks and returns its workers.
pub fn start(ctx: &Context) -> Workers {
    let _ = ctx;
    Box::pin(async {})
}
