//! Work upstream does in controllers. Each one is a pure decision (`reconcile`) and a
//! small driver that feeds it and carries out what it returns.
//!
//! Namespace deletion works on the store directly, because a namespace cannot be deleted
//! without it. The others are clients of the API over loopback, started by [`run`] on
//! the shared [`driver`]: [`replicaset`], [`deployment`] and the garbage collector
//! ([`gc`]), writing Events through [`events`].

pub mod deployment;
pub mod driver;
pub mod events;
pub mod gc;
pub mod namespace;
pub mod replicaset;

use std::sync::Arc;
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
///
/// One watch per kind feeds the shared [`driver::Caches`]; each controller registers its
/// hooks before the watches start, waits for the caches to be filled, then runs its
/// workers on its own queue.
pub async fn run(
    client: kube::Client,
    config: Config,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let _ = config;
    let caches = Arc::new(driver::Caches::new());
    let effects: Arc<dyn driver::Effects> = Arc::new(driver::KubeEffects::new(
        client.clone(),
        "kube-controller-manager",
    ));
    let clock: Arc<dyn driver::Clock> = Arc::new(driver::SystemClock);
    let recorder = |component: &str| {
        Arc::new(events::Recorder::new(
            effects.clone(),
            clock.clone(),
            component,
        ))
    };

    let rs_queue = driver::Queue::new();
    replicaset::ReplicaSetController::watch(&caches, &rs_queue);
    let rs = replicaset::ReplicaSetController::new(
        caches.clone(),
        effects.clone(),
        clock.clone(),
        recorder("replicaset-controller"),
    );
    let d_queue = driver::Queue::new();
    deployment::DeploymentController::watch(&caches, &d_queue);
    let deployments = deployment::DeploymentController::new(
        caches.clone(),
        effects.clone(),
        clock.clone(),
        recorder("deployment-controller"),
    );
    let gc_queue = driver::Queue::new();
    let gc = gc::GarbageCollector::new(caches.clone(), effects.clone());
    gc.watch(&gc_queue);

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(driver::reflect(
        client.clone(),
        caches.pods.clone(),
        cancel.clone(),
    ));
    tasks.spawn(driver::reflect(
        client.clone(),
        caches.replicasets.clone(),
        cancel.clone(),
    ));
    tasks.spawn(driver::reflect(
        client.clone(),
        caches.deployments.clone(),
        cancel.clone(),
    ));
    let ready = async {
        let _ = caches.pods.store().wait_until_ready().await;
        let _ = caches.replicasets.store().wait_until_ready().await;
        let _ = caches.deployments.store().wait_until_ready().await;
    };
    tokio::select! {
        () = cancel.cancelled() => return Ok(()),
        () = ready => {}
    }
    tracing::info!(
        pods = caches.pods.store().len(),
        replicasets = caches.replicasets.store().len(),
        deployments = caches.deployments.store().len(),
        "controller caches filled"
    );
    // Upstream's default worker counts.
    tasks.spawn(driver::run(rs, rs_queue, 5, cancel.clone()));
    tasks.spawn(driver::run(deployments, d_queue, 5, cancel.clone()));
    tasks.spawn(driver::run(gc, gc_queue, 20, cancel.clone()));
    cancel.cancelled().await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}
