//! Simulated nodes: they register, keep their Leases fresh and move the pods bound to
//! them through their lifecycle without running anything, so the control plane can be
//! exercised at the scale of a thousand nodes from one small process (what kwok does
//! for upstream clusters).
//!
//! Start at [`run`]. The pure parts: [`node`] (what a node looks like) and [`pod`]
//! (what happens to a pod). The drivers: `register` (registration, leases,
//! heartbeats) and `pods` (one watch of bound pods, bounded concurrent writes, one
//! timer heap).

pub mod node;
pub mod pod;
mod pods;
mod register;

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
    /// A node could not be registered.
    #[error("registering node {node}")]
    Register {
        /// The node's name.
        node: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The configuration cannot be laid out in the simulated address ranges.
    #[error("simulated node configuration")]
    Layout(#[from] node::LayoutError),
    /// A part of the simulator panicked.
    #[error("simulator task")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the simulated nodes until `cancel` fires: registers them all, then keeps their
/// Leases and statuses fresh and moves their pods along. On cancel it just stops: the
/// nodes stay, and go NotReady once their Leases expire.
pub async fn run(
    client: kube::Client,
    config: SimConfig,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let layout = node::Layout::new(config.count, config.pods)?;
    let nodes = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        nodes = register::register_all(&client, &config, layout) => nodes?,
    };
    // If either half stops (an error or a panic), the other stops too.
    let stop = cancel.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    {
        let client = client.clone();
        let nodes = nodes.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            register::keep_alive(client, &nodes, stop).await;
            Ok(())
        });
    }
    tasks.spawn(pods::run(client, nodes, config.job_duration, stop.clone()));
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        stop.cancel();
        if let Err(e) = done.map_err(Error::from).and_then(|r| r) {
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}
