//! The kubelet: registers the node, keeps its Lease, and runs the pods bound to it as
//! real containers through [`skiff_embedded`]'s image store and runtime.
//!
//! Start at [`run`]. Then `node.rs` (the Node object and its heartbeat), `pods.rs` (the
//! watch and one worker per pod), `worker.rs` (a pod's lifecycle), `container.rs` (a pod's
//! container as the runtime runs it), `seccomp.rs` (its seccomp filter), `volumes.rs`
//! (volumes and `/etc` files), `ownership.rs` (fsGroup on volumes) and `status.rs` (the
//! pod's status as upstream writes it).

pub mod api;
pub mod container;
pub mod gc;
pub mod node;
pub mod ownership;
pub mod pods;
pub mod portforward;
pub mod probe;
pub mod seccomp;
pub mod spdy;
pub mod static_pods;
pub mod stats;
pub mod status;
pub mod stream;
pub mod tokens;
pub mod volumes;
pub mod worker;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_embedded::container::Containers;
use skiff_embedded::image::ImageStore;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Errors that stop the kubelet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API failed for good.
    #[error("{what}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The image store could not be opened.
    #[error("opening the image store")]
    Images(#[source] skiff_embedded::image::store::Error),
    /// The runtime's folders could not be read.
    #[error("container runtime: {0}")]
    Runtime(String),
    /// The node's API could not listen.
    #[error("listening for the node's API on port {port}")]
    Listen {
        /// The port.
        port: u16,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The node's API TLS configuration could not be built.
    #[error("the node's API TLS configuration")]
    Tls(#[from] skiff_core::tls::Error),
}

/// Everything the kubelet is told.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's name.
    pub node_name: String,
    /// The node's address.
    pub node_ip: IpAddr,
    /// skiff's data folder (`agent/` below it is the node's).
    pub data_dir: PathBuf,
    /// Where container logs go (`/var/log/pods`).
    pub pod_log_dir: PathBuf,
    /// Labels of the node.
    pub labels: BTreeMap<String, String>,
    /// Taints of the node.
    pub taints: Vec<Taint>,
    /// The node runs the control plane too.
    pub control_plane: bool,
    /// Resources kept from pods (kube-reserved plus system-reserved).
    pub reserved: BTreeMap<String, Quantity>,
    /// The binary whose `shim` subcommand runs a container.
    pub shim_exe: PathBuf,
    /// The port of the node's API (0: any free port, published in the Node).
    pub kubelet_port: u16,
    /// Mirrors, credentials and TLS of registries (K3s's registries.yaml format).
    pub registries: skiff_embedded::image::registries::Registries,
    /// Containers without a seccompProfile get RuntimeDefault (upstream's
    /// `--seccomp-default`).
    pub seccomp_default: bool,
    /// The node's network.
    pub network: crate::network::Config,
}

/// What every part of the kubelet shares.
pub struct Kubelet {
    /// The API client (the node's identity).
    pub client: kube::Client,
    /// The configuration.
    pub config: Config,
    /// The node's name.
    pub node_name: String,
    /// The node's address.
    pub node_ip: IpAddr,
    /// The host's facts.
    pub host: node::Host,
    /// The image store (its methods block: call them on a blocking thread).
    pub images: Arc<Mutex<ImageStore>>,
    /// The runtime the pods' containers run in (containers now; the WebAssembly
    /// runtime will sit beside it, chosen by runtimeClassName).
    pub containers: Arc<dyn skiff_embedded::runtime::Runtime>,
    /// The port the node's API listens on.
    pub api_port: u16,
    /// When each image was last used, for the image GC.
    pub last_used: gc::LastUsed,
    /// The pods' ServiceAccount tokens (projected `serviceAccountToken` sources).
    pub tokens: tokens::Tokens,
    /// The pod network pods are attached to.
    pub network: Arc<crate::network::Network>,
}

impl Kubelet {
    fn agent_dir(&self) -> PathBuf {
        self.config.data_dir.join("agent")
    }

    /// Where each pod's folder is.
    pub fn pods_dir(&self) -> PathBuf {
        self.agent_dir().join("pods")
    }

    /// Where Localhost seccomp profiles are (upstream's `--seccomp-profile-root`).
    pub fn seccomp_dir(&self) -> PathBuf {
        self.agent_dir().join("seccomp")
    }
}

/// Runs the kubelet until `cancel` fires. Containers keep running after it returns.
pub async fn run(
    creds: skiff_core::client::NodeCredentials,
    config: Config,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let tls = skiff_core::tls::server_config(
        &creds.ca_pem,
        &creds.serving,
        skiff_core::tls::ClientAuth::Required,
    )?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.kubelet_port))
        .await
        .map_err(|source| Error::Listen {
            port: config.kubelet_port,
            source,
        })?;
    let api_port = listener
        .local_addr()
        .map_err(|source| Error::Listen {
            port: config.kubelet_port,
            source,
        })?
        .port();
    let client = creds.client;
    let agent = config.data_dir.join("agent");
    let store_dir = agent.join("image-store");
    let import_dir = agent.join("images");
    let images = tokio::task::spawn_blocking(move || {
        let mut store = ImageStore::open(&store_dir)?;
        if import_dir.is_dir() {
            let names = store.import_dir(&import_dir)?;
            if !names.is_empty() {
                tracing::info!(images = ?names, "imported image tarballs");
            }
        }
        Ok::<_, skiff_embedded::image::store::Error>(store)
    })
    .await
    .map_err(|e| Error::Runtime(e.to_string()))?
    .map_err(Error::Images)?;
    let host = node::Host::read(&config.data_dir);
    if !host.seccomp {
        tracing::warn!(
            "this kernel has no seccomp (no Seccomp: line in /proc/self/status): containers run without a seccomp filter, whatever their seccompProfile"
        );
    }
    let k = Arc::new(Kubelet {
        client,
        node_name: config.node_name.clone(),
        node_ip: config.node_ip,
        host,
        images: Arc::new(Mutex::new(images)),
        containers: Arc::new(Containers::new(
            agent.join("containers"),
            config.shim_exe.clone(),
        )),
        api_port,
        last_used: gc::LastUsed::default(),
        tokens: tokens::Tokens::default(),
        network: crate::network::Network::new(config.network.clone()),
        config,
    });
    let api = tokio::spawn(api::serve(k.clone(), listener, tls, cancel.clone()));
    // Registration waits out an API that is not there yet (a server still starting, or
    // gone for a while), and gives up quietly when the node is told to stop.
    let mut pause = std::time::Duration::from_millis(200);
    let uid = loop {
        match node::register(&k).await {
            Ok(uid) => break uid,
            Err(_) if cancel.is_cancelled() => {
                api.abort();
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = ?e, retry_in = ?pause, "registering the node failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancel.cancelled() => {
                        api.abort();
                        return Ok(());
                    }
                }
                pause = (pause * 2).min(std::time::Duration::from_secs(10));
            }
        }
    };
    let beat = tokio::spawn(node::heartbeat(k.clone(), uid.clone(), cancel.clone()));
    let network = tokio::spawn({
        let (net, client, pods, cancel) = (
            k.network.clone(),
            k.client.clone(),
            k.pods_dir(),
            cancel.clone(),
        );
        async move {
            if let Err(e) = net.run(client, pods, cancel).await {
                tracing::error!(error = %worker::chain(&e), "the pod network failed; pods get no address");
            }
        }
    });
    let statics = tokio::spawn(static_pods::run(k.clone(), uid, cancel.clone()));
    let image_gc = tokio::spawn(gc::run(k.clone(), cancel.clone()));
    let result = pods::run(k, cancel).await;
    beat.abort();
    network.abort();
    statics.abort();
    image_gc.abort();
    api.abort();
    result
}

/// The cgroup folder of pod `uid`; its containers' are below it.
pub fn pod_cgroup(uid: &str) -> String {
    format!("/skiff/pod{uid}")
}

/// Stops everything the node runs, as K3s's killall script does: every container and
/// shim is killed, roots, namespaces and memory volumes are unmounted, cgroups removed.
/// The node's data stays; a restarted node restarts the pods' containers. Returns how
/// many containers were running.
pub fn killall(data_dir: &std::path::Path) -> Result<usize, Error> {
    let agent = data_dir.join("agent");
    let containers = Containers::new(agent.join("containers"), "/proc/self/exe");
    let killed = containers
        .kill_all()
        .map_err(|e| Error::Runtime(worker::chain(&e)))?;
    let pods = agent.join("pods");
    for entry in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
        let dir = entry.path();
        let uid = entry.file_name().to_string_lossy().into_owned();
        if let Err(e) = skiff_embedded::container::sandbox::remove(&dir) {
            tracing::warn!(pod = %uid, error = %worker::chain(&e), "unbinding the pod's namespaces");
        }
        if let Err(e) = volumes::remove(&dir) {
            tracing::warn!(pod = %uid, error = %e, "unmounting the pod's volumes");
        }
        skiff_embedded::container::cgroups::remove(&pod_cgroup(&uid));
    }
    Ok(killed)
}
