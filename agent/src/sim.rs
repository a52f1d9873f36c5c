//! Simulated nodes: register nodes, keep their Leases fresh and move the pods bound to
//! them through their lifecycle without running anything. Not built yet: the seam.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the simulated nodes look like and do.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How many nodes.
    pub count: usize,
    /// Node names are `<prefix><index>`.
    pub name_prefix: String,
    /// CPU capacity of each node, as a quantity ("4").
    pub cpu: String,
    /// Memory capacity of each node, as a quantity ("8Gi").
    pub memory: String,
    /// Pod capacity of each node.
    pub pods: u32,
    /// Labels on every node.
    pub labels: Vec<(String, String)>,
    /// How long a pod owned by a Job runs before it succeeds.
    pub job_duration: Duration,
}

/// Errors that stop the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or could not be reached.
    #[error("kubernetes API")]
    Kube(#[from] kube::Error),
}

/// Runs the simulated nodes until `cancel` fires.
pub async fn run(
    client: kube::Client,
    config: SimConfig,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let _ = (client, config);
    cancel.cancelled().await;
    Ok(())
}
