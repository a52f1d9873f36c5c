//! Work upstream does in controllers. Each one is a pure decision (`reconcile`) and a
//! small driver that feeds it and carries out what it returns.
//!
//! Namespace deletion works on the store directly, because a namespace cannot be deleted
//! without it. The others are clients of the API over loopback, started by [`run`] on
//! the shared [`driver`] and writing Events through [`events`]: [`replicaset`],
//! [`deployment`], [`daemonset`], [`statefulset`], [`job`], [`cronjob`], the garbage
//! collector ([`gc`]), [`endpoints`], [`serviceaccount`], [`nodelifecycle`] (with pod
//! GC), [`nodeipam`] (each Node's `podCIDR`), [`disruption`], [`resourcequota`],
//! [`rootca`] (the `kube-root-ca.crt` ConfigMaps), [`tokens`] (legacy ServiceAccount
//! token Secrets) and [`servicelb`] (LoadBalancer Services' addresses on the nodes).

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod driver;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod replicaset;
pub mod resourcequota;
pub mod rootca;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod tokens;

use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings of the controller manager.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a node's Lease may go unrenewed before the node is `Ready=Unknown`.
    pub node_monitor_grace_period: Duration,
    /// The cluster CA (PEM) the `kube-root-ca.crt` ConfigMaps publish; filled in by the
    /// server from its PKI.
    pub root_ca_pem: String,
    /// What signs legacy ServiceAccount tokens (the server's issuer); without it the
    /// tokens controller does not run.
    pub service_account_tokens: Option<Arc<crate::auth::authn::ServiceAccountTokens>>,
    /// The pod network nodes get their ranges from; without it nodes get none.
    pub cluster_cidr: Option<ipnet::Ipv4Net>,
    /// The prefix length of each node's range (upstream's `--node-cidr-mask-size`).
    pub node_cidr_prefix: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_monitor_grace_period: Duration::from_secs(40),
            root_ca_pem: String::new(),
            service_account_tokens: None,
            cluster_cidr: None,
            node_cidr_prefix: 24,
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

/// What every controller is started with.
pub struct Context {
    /// The shared caches.
    pub caches: Arc<driver::Caches>,
    /// The API calls.
    pub effects: Arc<dyn driver::Effects>,
    /// The time decisions are made at.
    pub clock: Arc<dyn driver::Clock>,
    /// The controller manager's settings.
    pub config: Config,
    /// Fires when the controllers must stop.
    pub cancel: CancellationToken,
}

impl Context {
    /// An Event recorder reporting as `component` (e.g. `replicaset-controller`).
    pub fn recorder(&self, component: &str) -> Arc<events::Recorder> {
        Arc::new(events::Recorder::new(
            self.effects.clone(),
            self.clock.clone(),
            component,
        ))
    }

    /// Runs `reconciler`'s `workers` workers on `queue` until the context is cancelled.
    pub fn workers<R: driver::Reconciler>(
        &self,
        reconciler: Arc<R>,
        queue: Arc<driver::Queue<R::Key>>,
        workers: usize,
    ) -> Workers {
        Box::pin(driver::run(reconciler, queue, workers, self.cancel.clone()))
    }
}

/// A controller's workers: started once every cache holds its first list.
pub type Workers = BoxFuture<'static, ()>;

/// Runs every controller until `cancel` fires.
///
/// Each controller's `start` registers its cache hooks (before any watch starts, so no
/// change is missed) and returns its workers; then one watch per kind feeds the shared
/// [`driver::Caches`], and once they are filled the workers run.
pub async fn run(
    client: kube::Client,
    config: Config,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let ctx = Context {
        caches: Arc::new(driver::Caches::new()),
        effects: Arc::new(driver::KubeEffects::new(
            client.clone(),
            "kube-controller-manager",
        )),
        clock: Arc::new(driver::SystemClock),
        config,
        cancel: cancel.clone(),
    };
    let workers: Vec<Workers> = vec![
        replicaset::start(&ctx),
        deployment::start(&ctx),
        daemonset::start(&ctx),
        statefulset::start(&ctx),
        job::start(&ctx),
        cronjob::start(&ctx),
        gc::start(&ctx),
        endpoints::start(&ctx),
        serviceaccount::start(&ctx),
        servicelb::start(&ctx),
        nodelifecycle::start(&ctx),
        nodeipam::start(&ctx),
        disruption::start(&ctx),
        resourcequota::start(&ctx),
        rootca::start(&ctx),
        tokens::start(&ctx),
    ];

    let mut tasks = tokio::task::JoinSet::new();
    ctx.caches.feed_all(&client, &cancel, &mut tasks);
    tokio::select! {
        () = cancel.cancelled() => return Ok(()),
        () = ctx.caches.ready() => {}
    }
    tracing::info!(sizes = ?ctx.caches.sizes(), "controller caches filled");
    for w in workers {
        tasks.spawn(w);
    }
    cancel.cancelled().await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}
