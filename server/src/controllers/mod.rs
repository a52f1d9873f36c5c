//! Work upstream does in controllers. Each one is a pure decision (`reconcile`) and a
//! small driver that feeds it and carries out what it returns.
//!
//! Only namespace deletion lives here for now, on the store directly, because a
//! namespace cannot be deleted without it; the scheduler and the other controllers come
//! with their own issue, as clients of the API over loopback.

pub mod namespace;

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings of the controller manager.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a node's Lease may go unrenewed before the node is `Ready=Unknown`.
    pub node_monitor_grace_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_monitor_grace_period: Duration::from_secs(40),
        }
    }
}

/// Errors that stop the controller manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API could not be reached or refused a request a controller cannot do without.
    #[error("kubernetes API")]
    Kube(#[from] kube::Error),
}

/// Runs every controller until `cancel` fires.
pub async fn run(
    client: kube::Client,
    config: Config,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let _ = (client, config);
    cancel.cancelled().await;
    Ok(())
}
