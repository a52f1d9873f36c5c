//! The scheduler: places unbound pods on nodes through `pods/binding`.
//!
//! Not built yet: this is the seam. It runs inside `skiff server` as a client of the API
//! over loopback, with its own identity (`system:kube-scheduler`).

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How the scheduler scores nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Prefer the node with the most room left (spreads load).
    #[default]
    LeastAllocated,
    /// Prefer the fullest node that fits (packs small fleets).
    BinPack,
}

/// Scheduler settings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The scoring strategy.
    pub strategy: Strategy,
}

/// Errors that stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API could not be reached or refused a request the scheduler cannot do without.
    #[error("kubernetes API")]
    Kube(#[from] kube::Error),
}

/// Runs the scheduler until `cancel` fires.
pub async fn run(
    client: kube::Client,
    config: Config,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let _ = (client, config);
    cancel.cancelled().await;
    tokio::time::sleep(Duration::ZERO).await;
    Ok(())
}
